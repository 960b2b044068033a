//! Wire shapes of the simulated entities (MDE machine and machine action, Graph incident and
//! alert), serialised exactly like the contract fixtures.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Timestamps as the services write them: ISO-8601 UTC with 7 fractional digits and `Z`.
pub mod ts {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;

    /// Formats `t` as `2026-11-05T22:41:07.1187342Z`.
    #[must_use]
    pub fn format(t: OffsetDateTime) -> String {
        let fmt = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
        );
        t.to_offset(time::UtcOffset::UTC)
            .format(&fmt)
            .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.0000000Z"))
    }

    /// Parses RFC 3339, or a bare date (`2018-08-01` / `2018-08-01Z`, midnight UTC).
    #[must_use]
    pub fn parse(s: &str) -> Option<OffsetDateTime> {
        if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
            return Some(t);
        }
        let date = s.strip_suffix('Z').unwrap_or(s);
        let fmt = format_description!("[year]-[month]-[day]");
        if let Ok(d) = time::Date::parse(date, &fmt) {
            return Some(d.midnight().assume_utc());
        }
        // `2026-11-05T00:00:00` without offset: UTC.
        let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
        time::PrimitiveDateTime::parse(date, &fmt)
            .ok()
            .map(time::PrimitiveDateTime::assume_utc)
    }

    /// Serde `with` for a required timestamp.
    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    /// Serde `with` for a required timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s}")))
    }

    /// Serde `with` for an optional timestamp.
    pub mod option {
        use super::{format, parse};
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        /// Serialises `None` as null.
        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&format(*t)),
                None => s.serialize_none(),
            }
        }

        /// Accepts null or a timestamp.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            let s = Option::<String>::deserialize(d)?;
            s.map(|s| {
                parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s}")))
            })
            .transpose()
        }
    }
}

/// One network interface of a machine (`ipAddresses[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpAddress {
    /// IPv4 or IPv6 address.
    pub ip_address: String,
    /// MAC address without separators, null for loopback.
    pub mac_address: Option<String>,
    /// `Ethernet`, `Wireless80211`, `SoftwareLoopback`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// `Up` or `Down`.
    pub operational_status: String,
}

/// `vmMetadata` of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmMetadata {
    /// VM id.
    pub vm_id: String,
    /// `Azure`, ...
    pub cloud_provider: String,
    /// ARM resource id.
    pub resource_id: String,
    /// Subscription id.
    pub subscription_id: String,
}

/// An MDE machine, every field of CONTRACT §2.5, in the order of `machines.page1.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    /// 40 lowercase hex characters.
    pub id: String,
    pub merged_into_machine_id: Option<String>,
    pub is_potential_duplication: bool,
    pub is_excluded: bool,
    pub exclusion_reason: Option<String>,
    pub computer_dns_name: Option<String>,
    #[serde(with = "ts")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "ts")]
    pub last_seen: OffsetDateTime,
    pub os_platform: Option<String>,
    pub os_version: Option<String>,
    pub os_processor: Option<String>,
    pub version: Option<String>,
    pub last_ip_address: Option<String>,
    pub last_external_ip_address: Option<String>,
    pub agent_version: Option<String>,
    pub os_build: Option<i64>,
    pub health_status: String,
    pub device_value: Option<String>,
    pub rbac_group_id: Option<i64>,
    pub rbac_group_name: Option<String>,
    pub risk_score: Option<String>,
    pub exposure_level: Option<String>,
    pub is_aad_joined: Option<bool>,
    pub aad_device_id: Option<String>,
    pub machine_tags: Vec<String>,
    pub defender_av_status: Option<String>,
    pub onboarding_status: Option<String>,
    pub os_architecture: Option<String>,
    pub managed_by: Option<String>,
    pub managed_by_status: Option<String>,
    pub ip_addresses: Vec<IpAddress>,
    pub vm_metadata: Option<VmMetadata>,
}

impl Machine {
    /// A healthy Windows 11 laptop named `dns_name`, last seen at `now`; tweak fields after.
    #[must_use]
    pub fn new(id: impl Into<String>, dns_name: impl Into<String>, now: OffsetDateTime) -> Self {
        Self {
            id: id.into(),
            merged_into_machine_id: None,
            is_potential_duplication: false,
            is_excluded: false,
            exclusion_reason: None,
            computer_dns_name: Some(dns_name.into()),
            first_seen: now - time::Duration::days(200),
            last_seen: now,
            os_platform: Some("Windows11".into()),
            os_version: None,
            os_processor: Some("x64".into()),
            version: Some("24H2".into()),
            last_ip_address: Some("10.20.0.10".into()),
            last_external_ip_address: Some("203.0.113.24".into()),
            agent_version: Some("10.8760.26100.4061".into()),
            os_build: Some(26100),
            health_status: "Active".into(),
            device_value: Some("Normal".into()),
            rbac_group_id: Some(0),
            rbac_group_name: None,
            risk_score: Some("Low".into()),
            exposure_level: Some("Medium".into()),
            is_aad_joined: Some(true),
            aad_device_id: Some(uuid::Uuid::new_v4().to_string()),
            machine_tags: Vec::new(),
            defender_av_status: Some("Updated".into()),
            onboarding_status: Some("Onboarded".into()),
            os_architecture: Some("64-bit".into()),
            managed_by: Some("Intune".into()),
            managed_by_status: Some("Success".into()),
            ip_addresses: vec![IpAddress {
                ip_address: "10.20.0.10".into(),
                mac_address: Some("00155D4A1C2E".into()),
                kind: "Ethernet".into(),
                operational_status: "Up".into(),
            }],
            vm_metadata: None,
        }
    }

    /// True for platforms the offboard API refuses (Linux, macOS).
    #[must_use]
    pub fn offboard_unsupported(&self) -> bool {
        matches!(
            self.os_platform
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("linux" | "macos" | "ios" | "android")
        )
    }
}

/// Status of a machine action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    TimeOut,
    Cancelled,
}

impl ActionStatus {
    /// Pending or InProgress.
    #[must_use]
    pub fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::InProgress)
    }

    /// The wire string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::TimeOut => "TimeOut",
            Self::Cancelled => "Cancelled",
        }
    }
}

/// An MDE machine action, the 20 fields of `machine-action.offboard.201.json` (without
/// `@odata.context`, which the handlers add to single-entity answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MachineAction {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: Option<String>,
    pub requestor: String,
    pub requestor_comment: String,
    pub status: ActionStatus,
    pub machine_id: Option<String>,
    pub computer_dns_name: Option<String>,
    #[serde(with = "ts")]
    pub creation_date_time_utc: OffsetDateTime,
    #[serde(with = "ts")]
    pub last_update_date_time_utc: OffsetDateTime,
    pub cancellation_requestor: Option<String>,
    pub cancellation_comment: Option<String>,
    #[serde(with = "ts::option")]
    pub cancellation_date_time_utc: Option<OffsetDateTime>,
    pub error_h_result: i64,
    pub scope: Option<String>,
    pub external_id: Option<String>,
    pub request_source: String,
    pub related_file_info: Option<serde_json::Value>,
    pub commands: Vec<serde_json::Value>,
    pub troubleshoot_info: Option<serde_json::Value>,
}

/// A comment on a Graph incident or alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    pub comment: String,
    pub created_by_display_name: Option<String>,
    #[serde(with = "ts")]
    pub created_date_time: OffsetDateTime,
}

/// A Graph security alert (`alerts[]` of an incident with `$expand=alerts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    #[serde(rename = "@odata.type", default = "alert_odata_type")]
    pub odata_type: String,
    pub id: String,
    pub provider_alert_id: String,
    pub incident_id: String,
    pub status: String,
    pub severity: String,
    pub classification: Option<String>,
    pub determination: Option<String>,
    pub service_source: String,
    pub detection_source: String,
    pub detector_id: Option<String>,
    pub tenant_id: String,
    pub title: String,
    pub description: Option<String>,
    pub recommended_actions: Option<String>,
    pub category: Option<String>,
    pub assigned_to: Option<String>,
    pub alert_web_url: Option<String>,
    pub incident_web_url: Option<String>,
    pub actor_display_name: Option<String>,
    pub threat_display_name: Option<String>,
    pub threat_family_name: Option<String>,
    pub mitre_techniques: Vec<String>,
    #[serde(with = "ts")]
    pub created_date_time: OffsetDateTime,
    #[serde(with = "ts")]
    pub last_update_date_time: OffsetDateTime,
    #[serde(with = "ts::option")]
    pub resolved_date_time: Option<OffsetDateTime>,
    #[serde(with = "ts::option")]
    pub first_activity_date_time: Option<OffsetDateTime>,
    #[serde(with = "ts::option")]
    pub last_activity_date_time: Option<OffsetDateTime>,
    pub comments: Vec<Comment>,
    /// Polymorphic evidence (`@odata.type`), e.g. [`device_evidence`].
    pub evidence: Vec<serde_json::Value>,
}

fn alert_odata_type() -> String {
    "#microsoft.graph.security.alert".into()
}

fn incident_odata_type() -> String {
    "#microsoft.graph.security.incident".into()
}

/// A Graph security incident, the field set of `incidents.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    #[serde(rename = "@odata.type", default = "incident_odata_type")]
    pub odata_type: String,
    pub id: String,
    pub tenant_id: String,
    pub status: String,
    pub incident_web_url: String,
    pub redirect_incident_id: Option<String>,
    pub display_name: String,
    #[serde(with = "ts")]
    pub created_date_time: OffsetDateTime,
    #[serde(with = "ts")]
    pub last_update_date_time: OffsetDateTime,
    pub assigned_to: Option<String>,
    pub classification: String,
    pub determination: String,
    pub severity: String,
    pub custom_tags: Vec<String>,
    pub system_tags: Vec<String>,
    pub description: Option<String>,
    pub last_modified_by: Option<String>,
    pub resolving_comment: Option<String>,
    pub summary: Option<String>,
    pub priority_score: Option<i64>,
    pub comments: Vec<Comment>,
    pub alerts: Vec<Alert>,
}

impl Incident {
    /// An active incident with one MDE alert whose evidence is `machine`.
    #[must_use]
    pub fn for_machine(
        tenant_id: &str,
        id: &str,
        title: &str,
        severity: &str,
        machine: &Machine,
        at: OffsetDateTime,
    ) -> Self {
        let alert_id = format!("da{}_{}", at.unix_timestamp_nanos() / 100, id);
        let incident_url = format!("https://security.microsoft.com/incidents/{id}?tid={tenant_id}");
        Self {
            odata_type: incident_odata_type(),
            id: id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            status: "active".into(),
            incident_web_url: incident_url.clone(),
            redirect_incident_id: None,
            display_name: format!("{title} on one endpoint"),
            created_date_time: at,
            last_update_date_time: at,
            assigned_to: None,
            classification: "unknown".into(),
            determination: "unknown".into(),
            severity: severity.to_owned(),
            custom_tags: Vec::new(),
            system_tags: Vec::new(),
            description: None,
            last_modified_by: Some("Automation".into()),
            resolving_comment: None,
            summary: None,
            priority_score: Some(50),
            comments: Vec::new(),
            alerts: vec![Alert {
                odata_type: alert_odata_type(),
                id: alert_id.clone(),
                provider_alert_id: alert_id.clone(),
                incident_id: id.to_owned(),
                status: "new".into(),
                severity: severity.to_owned(),
                classification: Some("unknown".into()),
                determination: Some("unknown".into()),
                service_source: "microsoftDefenderForEndpoint".into(),
                detection_source: "antivirus".into(),
                detector_id: Some(uuid::Uuid::new_v4().to_string()),
                tenant_id: tenant_id.to_owned(),
                title: title.to_owned(),
                description: Some(format!("{title} was detected.")),
                recommended_actions: Some("Review the device timeline.".into()),
                category: Some("Execution".into()),
                assigned_to: None,
                alert_web_url: Some(format!(
                    "https://security.microsoft.com/alerts/{alert_id}?tid={tenant_id}"
                )),
                incident_web_url: Some(incident_url),
                actor_display_name: None,
                threat_display_name: None,
                threat_family_name: None,
                mitre_techniques: vec!["T1059.001".into()],
                created_date_time: at,
                last_update_date_time: at,
                resolved_date_time: None,
                first_activity_date_time: Some(at - time::Duration::minutes(3)),
                last_activity_date_time: Some(at - time::Duration::minutes(2)),
                comments: Vec::new(),
                evidence: vec![device_evidence(machine, at)],
            }],
        }
    }
}

/// `#microsoft.graph.security.deviceEvidence` for `machine` (`mdeDeviceId` = its id).
#[must_use]
pub fn device_evidence(machine: &Machine, at: OffsetDateTime) -> serde_json::Value {
    let lower = |s: &Option<String>| s.as_deref().map(lower_first);
    serde_json::json!({
        "@odata.type": "#microsoft.graph.security.deviceEvidence",
        "createdDateTime": ts::format(at),
        "verdict": "suspicious",
        "remediationStatus": "none",
        "remediationStatusDetails": null,
        "firstSeenDateTime": ts::format(machine.first_seen),
        "mdeDeviceId": machine.id,
        "azureAdDeviceId": machine.aad_device_id,
        "deviceDnsName": machine.computer_dns_name,
        "osPlatform": machine.os_platform,
        "osBuild": machine.os_build,
        "version": machine.version,
        "healthStatus": lower_first(&machine.health_status),
        "riskScore": lower(&machine.risk_score),
        "rbacGroupId": machine.rbac_group_id,
        "rbacGroupName": machine.rbac_group_name,
        "onboardingStatus": lower(&machine.onboarding_status),
        "defenderAvStatus": lower(&machine.defender_av_status),
        "ipInterfaces": machine.ip_addresses.iter()
            .filter(|i| i.kind != "SoftwareLoopback")
            .map(|i| i.ip_address.clone()).collect::<Vec<_>>(),
        "loggedOnUsers": [],
        "roles": ["compromised"],
        "detailedRoles": ["Main device"],
        "tags": machine.machine_tags,
        "vmMetadata": machine.vm_metadata,
    })
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}
