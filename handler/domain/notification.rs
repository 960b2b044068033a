//! The notification model: what producers put on the `notifications` queue and `Notify`
//! renders for each channel. Every note carries a deterministic id, so a producer that runs
//! twice emits the same id and `Notify` sends it once.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ids::TenantId;

/// Device lists in a note are capped: a queue message holds ~48 KB and a Teams card ~28 KB.
pub const MAX_DEVICES_PER_NOTE: usize = 25;

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    /// Deterministic: the same event always gets the same id.
    pub id: String,
    pub tenant_id: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(flatten)]
    pub event: Event,
}

/// A device named in a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRef {
    pub machine_id: String,
    pub name: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    /// An offboard request reached a final state, or waits for an approver.
    OffboardResult {
        request_id: String,
        machine_id: String,
        device_name: Option<String>,
        status: String,
        message: Option<String>,
        action_id: Option<String>,
        /// The request's page in the console (approvals' notes, when the console's base URL
        /// is configured).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        console_url: Option<String>,
    },
    /// A new incident at or above the configured severity.
    IncidentNew {
        incident_id: String,
        title: String,
        severity: String,
        status: String,
        url: Option<String>,
        #[serde(default)]
        devices: Vec<DeviceRef>,
    },
    /// A known incident changed status, severity, classification or assignment.
    IncidentChanged {
        incident_id: String,
        title: String,
        severity: String,
        status: String,
        #[serde(default)]
        changes: Vec<String>,
        url: Option<String>,
    },
    /// Devices seen for the first time by a sync.
    DevicesOnboarded {
        run_id: String,
        count: u64,
        #[serde(default)]
        devices: Vec<DeviceRef>,
    },
    /// Devices that turned stale in a sync.
    DevicesStale {
        run_id: String,
        count: u64,
        stale_after_days: u32,
        #[serde(default)]
        devices: Vec<DeviceRef>,
    },
    /// A tenant's sync could not run.
    SyncFailed { run_id: String, message: String },
}

impl Note {
    /// Reads a `notifications` message leniently: `id` (what `Outbox` sends once),
    /// `tenantId`, `kind` and the event's own fields are its key; a missing `at` is
    /// `received` and a missing device or change list is empty.
    ///
    /// # Errors
    /// The text is not JSON, or a key field is missing or invalid.
    pub fn read(text: &str, received: OffsetDateTime) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            id: String,
            tenant_id: TenantId,
            #[serde(default, with = "time::serde::rfc3339::option")]
            at: Option<OffsetDateTime>,
            #[serde(flatten)]
            event: Event,
        }
        let w: Wire = serde_json::from_str(text)?;
        Ok(Self {
            id: w.id,
            tenant_id: w.tenant_id,
            at: w.at.unwrap_or(received),
            event: w.event,
        })
    }

    #[must_use]
    pub fn to_message(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_note_round_trips_through_its_queue_text() {
        let note = Note {
            id: "sync-x-onboarded".into(),
            tenant_id: TenantId::parse("8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c").unwrap(),
            at: datetime!(2026-11-29 07:00 UTC),
            event: Event::DevicesOnboarded {
                run_id: "sync-x".into(),
                count: 1,
                devices: vec![DeviceRef {
                    machine_id: "ab".repeat(20),
                    name: Some("pc-01".into()),
                }],
            },
        };
        let text = note.to_message();
        assert!(text.contains("\"kind\":\"devicesOnboarded\""));
        assert!(text.contains("\"runId\":\"sync-x\""));
        let back: Note = serde_json::from_str(&text).unwrap();
        assert_eq!(back, note);
        assert_eq!(
            Note::read(&text, datetime!(2030-01-01 0:00 UTC)).unwrap(),
            note
        );
    }

    #[test]
    fn a_note_with_only_its_key_fields_reads_with_defaults() {
        let received = datetime!(2026-12-08 05:00 UTC);
        let text = r#"{"id":"op-1","tenantId":"8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c","kind":"devicesStale","runId":"r","count":2,"staleAfterDays":30}"#;
        let note = Note::read(text, received).unwrap();
        assert_eq!(note.at, received);
        assert_eq!(
            note.event,
            Event::DevicesStale {
                run_id: "r".into(),
                count: 2,
                stale_after_days: 30,
                devices: vec![],
            }
        );
        for bad in [
            "{not json",
            r#"{"tenantId":"8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c","kind":"syncFailed","runId":"r","message":"m"}"#,
            r#"{"id":"x","tenantId":"8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c","kind":"nope"}"#,
            r#"{"id":"x","tenantId":"8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c","kind":"syncFailed"}"#,
        ] {
            assert!(Note::read(bad, received).is_err(), "{bad}");
        }
    }
}
