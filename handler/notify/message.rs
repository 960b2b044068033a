//! What a note says, channel-neutral: a title, a tone, a summary, facts, devices and one
//! link. Each channel renders this one view, so a Teams card, a mail and a webhook event
//! never disagree.

use crate::domain::MachineId;
use crate::domain::notification::{DeviceRef, Event, Note};

/// Longest value shown (a Defender message can be long; Teams cards stop at ~28 KB).
const MAX_VALUE_CHARS: usize = 600;

/// How alarming a note is; maps to Adaptive Card colours and the mail's accent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Needs action now (failures, high-severity incidents).
    Attention,
    /// Worth a look (stale devices, medium incidents, cancellations).
    Warning,
    /// Went well (offboarded, onboarded).
    Good,
    /// Information.
    Accent,
}

impl Tone {
    /// The lower-case name (`attention`...), also the Adaptive Card container style.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attention => "attention",
            Self::Warning => "warning",
            Self::Good => "good",
            Self::Accent => "accent",
        }
    }
}

/// A device line: its name (or id) and its page in the Defender portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceLine {
    pub label: String,
    pub machine_id: String,
    pub url: Option<String>,
}

/// A link to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub title: String,
    /// Always `https://`.
    pub url: String,
}

/// The rendered content of one note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub title: String,
    pub tone: Tone,
    pub summary: String,
    pub facts: Vec<(String, String)>,
    pub devices: Vec<DeviceLine>,
    /// Devices counted but not listed (the note caps its list).
    pub more_devices: u64,
    pub link: Option<Link>,
}

/// The device's page in the Defender portal, for a well-formed machine id only.
#[must_use]
pub fn device_url(machine_id: &str, tenant: &str) -> Option<String> {
    let id = MachineId::parse(machine_id).ok()?;
    Some(format!(
        "https://security.microsoft.com/machines/v2/{}/overview?tid={tenant}",
        id.as_str()
    ))
}

/// An https URL from a note, or nothing: a `javascript:` or `http:` link never reaches a card
/// or a mail.
fn safe_url(raw: Option<&str>) -> Option<String> {
    let url = url::Url::parse(raw?.trim()).ok()?;
    (url.scheme() == "https" && url.host_str().is_some()).then(|| url.to_string())
}

fn clip(text: &str) -> String {
    let text = text.trim();
    if text.chars().count() <= MAX_VALUE_CHARS {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(MAX_VALUE_CHARS).collect();
    s.push('…');
    s
}

fn severity_tone(severity: &str) -> Tone {
    match severity.to_ascii_lowercase().as_str() {
        "high" => Tone::Attention,
        "medium" => Tone::Warning,
        _ => Tone::Accent,
    }
}

fn status_tone(status: &str) -> Tone {
    match status.to_ascii_lowercase().as_str() {
        "succeeded" => Tone::Good,
        "failed" | "timeout" | "rejected" => Tone::Attention,
        "cancelled" | "awaitingapproval" | "denied" | "expired" => Tone::Warning,
        _ => Tone::Accent,
    }
}

fn device_lines(devices: &[DeviceRef], tenant: &str) -> Vec<DeviceLine> {
    devices
        .iter()
        .map(|d| DeviceLine {
            label: clip(d.name.as_deref().unwrap_or(&d.machine_id)),
            machine_id: clip(&d.machine_id),
            url: device_url(&d.machine_id, tenant),
        })
        .collect()
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Renders `note`; `tenant_name` is the tenant's display name when known.
#[must_use]
pub fn render(note: &Note, tenant_name: Option<&str>) -> Message {
    let tenant = note.tenant_id.as_str();
    let tenant_fact = match tenant_name.filter(|n| !n.trim().is_empty()) {
        Some(name) => format!("{} ({tenant})", clip(name)),
        None => tenant.to_owned(),
    };
    let mut facts = vec![("Tenant".to_owned(), tenant_fact)];
    let fact = |facts: &mut Vec<(String, String)>, k: &str, v: &str| {
        if !v.trim().is_empty() {
            facts.push((k.to_owned(), clip(v)));
        }
    };
    let device_link = |machine_id: &str| {
        device_url(machine_id, tenant).map(|url| Link {
            title: "Open the device in Microsoft Defender".into(),
            url,
        })
    };
    let incident_link = |url: Option<&str>| {
        safe_url(url).map(|url| Link {
            title: "Open the incident in Microsoft Defender".into(),
            url,
        })
    };
    match &note.event {
        Event::OffboardResult {
            request_id,
            machine_id,
            device_name,
            status,
            message,
            action_id,
            console_url,
        } => {
            let device = device_name.as_deref().unwrap_or(machine_id);
            fact(&mut facts, "Device", device);
            fact(&mut facts, "Machine id", machine_id);
            fact(&mut facts, "Request", request_id);
            fact(&mut facts, "Status", status);
            fact(
                &mut facts,
                "Action",
                action_id.as_deref().unwrap_or_default(),
            );
            fact(
                &mut facts,
                "Defender message",
                message.as_deref().unwrap_or_default(),
            );
            let (title, summary) = match status.as_str() {
                "AwaitingApproval" => (
                    format!("Offboarding awaits approval: {device}"),
                    format!(
                        "The offboard request {request_id} for {device} waits for a second person: an approver other than its requester approves or denies it in the console."
                    ),
                ),
                "Denied" => (
                    format!("Offboarding denied: {device}"),
                    format!(
                        "An approver denied the offboard request {request_id} for {device}; nothing was sent to Defender."
                    ),
                ),
                "Expired" => (
                    format!("Offboarding approval expired: {device}"),
                    format!(
                        "Nobody approved the offboard request {request_id} for {device} in time; it expired and nothing was sent to Defender."
                    ),
                ),
                _ => (
                    format!("Offboarding {status}: {device}"),
                    format!(
                        "The offboard request {request_id} for {device} ended with status {status}."
                    ),
                ),
            };
            let console_link = safe_url(console_url.as_deref()).map(|url| Link {
                title: "Open the request in the console".into(),
                url,
            });
            Message {
                title: clip(&title),
                tone: status_tone(status),
                summary: clip(&summary),
                facts,
                devices: Vec::new(),
                more_devices: 0,
                link: console_link.or_else(|| device_link(machine_id)),
            }
        }
        Event::IncidentNew {
            incident_id,
            title,
            severity,
            status,
            url,
            devices,
        } => {
            fact(&mut facts, "Incident", incident_id);
            fact(&mut facts, "Severity", severity);
            fact(&mut facts, "Status", status);
            Message {
                title: clip(&format!("New {severity} incident: {title}")),
                tone: severity_tone(severity),
                summary: clip(&format!(
                    "Microsoft Defender raised incident {incident_id} ({severity}), {}.",
                    plural(devices.len() as u64, "device involved", "devices involved")
                )),
                facts,
                devices: device_lines(devices, tenant),
                more_devices: 0,
                link: incident_link(url.as_deref()),
            }
        }
        Event::IncidentChanged {
            incident_id,
            title,
            severity,
            status,
            changes,
            url,
        } => {
            fact(&mut facts, "Incident", incident_id);
            fact(&mut facts, "Severity", severity);
            fact(&mut facts, "Status", status);
            fact(&mut facts, "Changes", &changes.join("; "));
            Message {
                title: clip(&format!("Incident {incident_id} changed: {title}")),
                tone: severity_tone(severity),
                summary: clip(&format!("{title}: {}.", changes.join("; "))),
                facts,
                devices: Vec::new(),
                more_devices: 0,
                link: incident_link(url.as_deref()),
            }
        }
        Event::DevicesOnboarded {
            run_id,
            count,
            devices,
        } => {
            fact(&mut facts, "Sync run", run_id);
            fact(&mut facts, "New devices", &count.to_string());
            Message {
                title: format!("{} onboarded", plural(*count, "new device", "new devices")),
                tone: Tone::Good,
                summary: clip(&format!(
                    "Device sync {run_id} found {} not seen before.",
                    plural(*count, "device", "devices")
                )),
                facts,
                devices: device_lines(devices, tenant),
                more_devices: count.saturating_sub(devices.len() as u64),
                link: None,
            }
        }
        Event::DevicesStale {
            run_id,
            count,
            stale_after_days,
            devices,
        } => {
            fact(&mut facts, "Sync run", run_id);
            fact(&mut facts, "Stale devices", &count.to_string());
            fact(
                &mut facts,
                "Stale after",
                &plural(u64::from(*stale_after_days), "day", "days"),
            );
            Message {
                title: format!("{} turned stale", plural(*count, "device", "devices")),
                tone: Tone::Warning,
                summary: clip(&format!(
                    "Device sync {run_id}: {} did not report for more than {}.",
                    plural(*count, "device", "devices"),
                    plural(u64::from(*stale_after_days), "day", "days")
                )),
                facts,
                devices: device_lines(devices, tenant),
                more_devices: count.saturating_sub(devices.len() as u64),
                link: None,
            }
        }
        Event::SyncFailed { run_id, message } => {
            fact(&mut facts, "Sync run", run_id);
            fact(&mut facts, "Error", message);
            Message {
                title: "Device sync failed".into(),
                tone: Tone::Attention,
                summary: clip(&format!(
                    "Device sync {run_id} could not run for this tenant: {message}"
                )),
                facts,
                devices: Vec::new(),
                more_devices: 0,
                link: None,
            }
        }
    }
}

/// The event's kind as on the queue (`offboardResult`...).
#[must_use]
pub fn kind(event: &Event) -> &'static str {
    match event {
        Event::OffboardResult { .. } => "offboardResult",
        Event::IncidentNew { .. } => "incidentNew",
        Event::IncidentChanged { .. } => "incidentChanged",
        Event::DevicesOnboarded { .. } => "devicesOnboarded",
        Event::DevicesStale { .. } => "devicesStale",
        Event::SyncFailed { .. } => "syncFailed",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::domain::TenantId;
    use time::macros::datetime;

    pub const TENANT: &str = "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c";

    pub fn note(event: Event) -> Note {
        Note {
            id: "n-1".into(),
            tenant_id: TenantId::parse(TENANT).unwrap(),
            at: datetime!(2026-11-06 04:00 UTC),
            event,
        }
    }

    /// One note of every kind, with text that needs escaping.
    pub fn every_kind() -> Vec<Note> {
        let dev = DeviceRef {
            machine_id: "ab".repeat(20),
            name: Some("pc-<01>&\"x\".contoso.com".into()),
        };
        vec![
            note(Event::OffboardResult {
                request_id: "r-1".into(),
                machine_id: "ab".repeat(20),
                device_name: Some("pc-01".into()),
                status: "Rejected".into(),
                message: Some("<script>alert('x')</script> & more".into()),
                action_id: None,
                console_url: None,
            }),
            note(Event::IncidentNew {
                incident_id: "48213".into(),
                title: "Suspicious <PowerShell>".into(),
                severity: "high".into(),
                status: "active".into(),
                url: Some("https://security.microsoft.com/incidents/48213?tid=x".into()),
                devices: vec![dev.clone()],
            }),
            note(Event::IncidentChanged {
                incident_id: "48213".into(),
                title: "Suspicious".into(),
                severity: "medium".into(),
                status: "resolved".into(),
                changes: vec!["status: active → resolved".into()],
                url: Some("javascript:alert(1)".into()),
            }),
            note(Event::DevicesOnboarded {
                run_id: "sync-1".into(),
                count: 3,
                devices: vec![dev.clone()],
            }),
            note(Event::DevicesStale {
                run_id: "sync-1".into(),
                count: 1,
                stale_after_days: 7,
                devices: vec![dev],
            }),
            note(Event::SyncFailed {
                run_id: "sync-1".into(),
                message: "403 missing Machine.Read.All".into(),
            }),
        ]
    }

    #[test]
    fn approval_notes_say_what_waits_and_link_the_console() {
        for (status, words) in [
            ("AwaitingApproval", "awaits approval"),
            ("Denied", "denied"),
            ("Expired", "expired"),
        ] {
            let m = render(
                &note(Event::OffboardResult {
                    request_id: "r-9".into(),
                    machine_id: "ab".repeat(20),
                    device_name: Some("pc-09".into()),
                    status: status.into(),
                    message: None,
                    action_id: None,
                    console_url: Some(format!(
                        "https://ops.example.com/api/console/requests/{TENANT}/r-9"
                    )),
                }),
                None,
            );
            assert!(m.title.contains(words), "{status}: {}", m.title);
            assert_eq!(m.tone, Tone::Warning);
            assert_eq!(
                m.link.unwrap().url,
                format!("https://ops.example.com/api/console/requests/{TENANT}/r-9")
            );
        }
        // An http link never reaches a card: the device's portal link stands in.
        let m = render(
            &note(Event::OffboardResult {
                request_id: "r-9".into(),
                machine_id: "ab".repeat(20),
                device_name: None,
                status: "Denied".into(),
                message: None,
                action_id: None,
                console_url: Some("http://ops.example.com/x".into()),
            }),
            None,
        );
        assert!(
            m.link
                .unwrap()
                .url
                .starts_with("https://security.microsoft.com/")
        );
    }

    #[test]
    fn links_are_https_only_and_devices_link_to_the_portal() {
        let all = every_kind();
        let m = render(&all[0], Some("Contoso"));
        assert_eq!(
            m.link.unwrap().url,
            format!(
                "https://security.microsoft.com/machines/v2/{}/overview?tid={TENANT}",
                "ab".repeat(20)
            )
        );
        assert_eq!(m.facts[0].1, format!("Contoso ({TENANT})"));
        assert_eq!(m.tone, Tone::Attention);
        let changed = render(&all[2], None);
        assert!(changed.link.is_none(), "javascript: links are dropped");
        let onboarded = render(&all[3], None);
        assert_eq!(onboarded.more_devices, 2);
        assert!(onboarded.devices[0].url.is_some());
        assert!(device_url("not-an-id", TENANT).is_none());
    }
}
