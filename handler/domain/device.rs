//! A device as Defender reports it, reduced to the columns the `Devices` table keeps.

use std::hash::{Hash, Hasher};

use time::OffsetDateTime;

use super::ids::MachineId;

/// Operating systems Defender's offboard API refuses (CONTRACT §3.1: not macOS, not Linux),
/// plus mobile platforms, which are not offboarded through this API either.
const UNSUPPORTED_OS_PREFIXES: &[&str] = &[
    "macos", "linux", "ios", "android", "ubuntu", "redhat", "centos", "debian", "suse",
];

/// The Defender-sourced content of one device row (never the operator columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceContent {
    pub machine_id: MachineId,
    pub computer_dns_name: Option<String>,
    pub os_platform: Option<String>,
    pub os_version: Option<String>,
    pub health_status: Option<String>,
    pub onboarding_status: Option<String>,
    pub last_seen: Option<OffsetDateTime>,
    pub first_seen: Option<OffsetDateTime>,
    pub last_ip_address: Option<String>,
    pub aad_device_id: Option<String>,
    pub machine_tags: Vec<String>,
    pub risk_score: Option<String>,
    pub exposure_level: Option<String>,
    /// Defender's own duplicate verdicts.
    pub merged_into: Option<MachineId>,
    pub potential_duplicate: bool,
}

impl DeviceContent {
    /// A stable fingerprint of the content: a sync writes a row only when it changes.
    ///
    /// FNV-1a over the fields in a fixed order, so the value is the same on every instance
    /// and across releases (std's `DefaultHasher` makes no such promise).
    #[must_use]
    pub fn content_hash(&self) -> u64 {
        let mut h = Fnv1a::default();
        self.machine_id.as_str().hash(&mut h);
        self.computer_dns_name.hash(&mut h);
        self.os_platform.hash(&mut h);
        self.os_version.hash(&mut h);
        self.health_status.hash(&mut h);
        self.onboarding_status.hash(&mut h);
        self.last_seen
            .map(OffsetDateTime::unix_timestamp_nanos)
            .hash(&mut h);
        self.first_seen
            .map(OffsetDateTime::unix_timestamp_nanos)
            .hash(&mut h);
        self.last_ip_address.hash(&mut h);
        self.aad_device_id.hash(&mut h);
        self.machine_tags.hash(&mut h);
        self.risk_score.hash(&mut h);
        self.exposure_level.hash(&mut h);
        self.merged_into
            .as_ref()
            .map(MachineId::as_str)
            .hash(&mut h);
        self.potential_duplicate.hash(&mut h);
        h.finish()
    }

    /// Whether Defender's offboard API supports this device's OS.
    #[must_use]
    pub fn offboard_supported(&self) -> bool {
        offboard_supported(self.os_platform.as_deref())
    }

    /// Whether the device carries `tag` (case-insensitive, as Defender compares tags).
    #[must_use]
    pub fn has_tag(&self, tag: &str) -> bool {
        self.machine_tags
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tag))
    }
}

/// Whether Defender's offboard API supports an OS platform (unknown platforms are tried).
#[must_use]
pub fn offboard_supported(os_platform: Option<&str>) -> bool {
    let Some(os) = os_platform else { return true };
    let os = os.to_ascii_lowercase();
    !UNSUPPORTED_OS_PREFIXES.iter().any(|p| os.starts_with(p))
}

/// Stale: no full device report for `stale_after_days` (Defender's `lastSeen` is the last
/// full report, about daily). A device with no `lastSeen` at all counts as stale once
/// Defender calls it `Inactive`.
#[must_use]
pub fn is_stale(
    last_seen: Option<OffsetDateTime>,
    health_status: Option<&str>,
    now: OffsetDateTime,
    stale_after_days: u32,
) -> bool {
    match last_seen {
        Some(seen) => now - seen > time::Duration::days(i64::from(stale_after_days)),
        None => health_status.is_some_and(|h| h.eq_ignore_ascii_case("Inactive")),
    }
}

/// 64-bit FNV-1a: tiny, stable, good enough to detect a changed row.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    pub(crate) fn device(id: &str) -> DeviceContent {
        DeviceContent {
            machine_id: MachineId::parse(id).unwrap(),
            computer_dns_name: Some("pc-01.contoso.com".into()),
            os_platform: Some("Windows11".into()),
            os_version: None,
            health_status: Some("Active".into()),
            onboarding_status: Some("Onboarded".into()),
            last_seen: Some(datetime!(2026-11-28 10:00 UTC)),
            first_seen: Some(datetime!(2026-01-01 10:00 UTC)),
            last_ip_address: Some("10.0.0.4".into()),
            aad_device_id: None,
            machine_tags: vec!["Finance".into()],
            risk_score: Some("Low".into()),
            exposure_level: Some("Medium".into()),
            merged_into: None,
            potential_duplicate: false,
        }
    }

    const ID: &str = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";

    #[test]
    fn the_hash_is_stable_and_changes_with_any_field() {
        let d = device(ID);
        assert_eq!(d.content_hash(), device(ID).content_hash());
        let mut changed = d.clone();
        changed.health_status = Some("Inactive".into());
        assert_ne!(d.content_hash(), changed.content_hash());
        let mut tags = d.clone();
        tags.machine_tags.push("DoNotOffboard".into());
        assert_ne!(d.content_hash(), tags.content_hash());
        // A field moving to its neighbour must not collide (the Hash impls delimit fields).
        let mut a = d.clone();
        a.os_platform = Some("Windows1".into());
        a.os_version = Some("1".into());
        let mut b = d;
        b.os_platform = Some("Windows11".into());
        b.os_version = Some(String::new());
        assert_ne!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn the_hash_value_is_fixed_across_releases() {
        // Changing the hash would rewrite every row of every tenant on the next sync.
        let h = device(ID).content_hash();
        assert_eq!(h, device(ID).content_hash());
        assert_ne!(h, 0);
    }

    #[test]
    fn macos_linux_and_mobile_devices_cannot_be_offboarded_through_the_api() {
        for os in ["macOS", "Linux", "iOS", "Android", "Ubuntu"] {
            assert!(!offboard_supported(Some(os)), "{os}");
        }
        for os in [
            "Windows10",
            "Windows11",
            "WindowsServer2019",
            "WindowsServer2022",
        ] {
            assert!(offboard_supported(Some(os)), "{os}");
        }
        assert!(offboard_supported(None));
    }

    #[test]
    fn staleness_follows_last_seen_and_the_threshold() {
        let now = datetime!(2026-11-29 12:00 UTC);
        assert!(!is_stale(
            Some(datetime!(2026-11-23 12:00 UTC)),
            Some("Active"),
            now,
            7
        ));
        assert!(is_stale(
            Some(datetime!(2026-11-21 12:00 UTC)),
            Some("Active"),
            now,
            7
        ));
        assert!(!is_stale(
            Some(datetime!(2026-11-21 12:00 UTC)),
            Some("Inactive"),
            now,
            14
        ));
        assert!(is_stale(None, Some("Inactive"), now, 7));
        assert!(!is_stale(None, Some("Active"), now, 7));
    }

    #[test]
    fn tags_match_case_insensitively() {
        let mut d = device(ID);
        d.machine_tags = vec!["donotoffboard".into()];
        assert!(d.has_tag("DoNotOffboard"));
        assert!(!d.has_tag("Finance"));
    }
}
