//! Deterministic generator of realistic device fleets: a Windows-heavy mix with servers,
//! macOS and Linux, ~10% stale devices, duplicates by name and by Entra device id, merged and
//! potential duplicates, `DoNotOffboard` tags and offline devices whose actions time out.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::model::{IpAddress, Machine, VmMetadata};

/// Tag that tells the product never to offboard a device.
pub const DO_NOT_OFFBOARD: &str = "DoNotOffboard";

/// Generated devices plus the ids of those that never come online again.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub machines: Vec<Machine>,
    pub offline: Vec<String>,
    pub summary: FleetSummary,
}

/// What a fleet holds, for logs and assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetSummary {
    pub total: usize,
    pub by_platform: BTreeMap<String, usize>,
    /// lastSeen more than 7 days before generation, healthStatus Inactive.
    pub stale: usize,
    /// Older records sharing a computerDnsName with a newer one.
    pub duplicates_by_name: usize,
    /// Older records sharing an aadDeviceId with a newer one (renamed devices).
    pub duplicates_by_aad_device_id: usize,
    pub merged: usize,
    pub potential_duplicates: usize,
    pub do_not_offboard: usize,
    pub excluded: usize,
    pub offline: usize,
    /// Linux and macOS devices (offboard answers 400 OsPlatformNotSupported).
    pub unsupported_platform: usize,
}

struct Profile {
    platform: &'static str,
    versions: &'static [(&'static str, i64)],
    prefixes: &'static [&'static str],
    agent: &'static str,
    managed_by: &'static str,
    server: bool,
}

const PROFILES: &[(u32, Profile)] = &[
    (
        44,
        Profile {
            platform: "Windows11",
            versions: &[("23H2", 22631), ("24H2", 26100)],
            prefixes: &["fin-lt", "hr-lt", "eng-lt", "sales-lt", "mkt-lt"],
            agent: "10.8760.26100.4061",
            managed_by: "Intune",
            server: false,
        },
    ),
    (
        24,
        Profile {
            platform: "Windows10",
            versions: &[("21H2", 19044), ("22H2", 19045)],
            prefixes: &["ops-ws", "lab-ws", "kiosk", "fin-ws"],
            agent: "10.8750.19041.5737",
            managed_by: "Intune",
            server: false,
        },
    ),
    (
        6,
        Profile {
            platform: "WindowsServer2022",
            versions: &[("21H2", 20348)],
            prefixes: &["app-sql", "web", "file"],
            agent: "10.8760.20348.3932",
            managed_by: "MDE",
            server: true,
        },
    ),
    (
        4,
        Profile {
            platform: "WindowsServer2019",
            versions: &[("1809", 17763)],
            prefixes: &["dc", "app", "print"],
            agent: "10.8760.17763.6893",
            managed_by: "MDE",
            server: true,
        },
    ),
    (
        2,
        Profile {
            platform: "WindowsServer2016",
            versions: &[("1607", 14393)],
            prefixes: &["legacy-app"],
            agent: "10.8760.14393.7969",
            managed_by: "MDE",
            server: true,
        },
    ),
    (
        10,
        Profile {
            platform: "macOS",
            versions: &[("14.6", 0), ("15.1", 0)],
            prefixes: &["mac-design", "mac-eng"],
            agent: "101.25012.0001",
            managed_by: "Intune",
            server: false,
        },
    ),
    (
        10,
        Profile {
            platform: "Linux",
            versions: &[("22.4", 0), ("24.4", 0), ("9.4", 0)],
            prefixes: &["build-agent", "k8s-node", "web-lx"],
            agent: "101.25092.0003",
            managed_by: "MDE",
            server: true,
        },
    ),
];

const GROUPS: &[(i64, &str)] = &[
    (410, "Operations-Workstations"),
    (412, "Finance-Laptops"),
    (413, "Engineering"),
    (415, "Tier1-Servers"),
    (0, ""),
];

fn hex_id(rng: &mut StdRng) -> String {
    (0..20)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

fn pick_profile(rng: &mut StdRng) -> &'static Profile {
    let total: u32 = PROFILES.iter().map(|(w, _)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (w, p) in PROFILES {
        if roll < *w {
            return p;
        }
        roll -= w;
    }
    &PROFILES[0].1
}

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    items.choose(rng).unwrap_or(&items[0])
}

fn base_machine(rng: &mut StdRng, p: &Profile, name: String, now: OffsetDateTime) -> Machine {
    let (version, build) = *pick(rng, p.versions);
    let ip = format!(
        "10.{}.{}.{}",
        rng.random_range(10..90),
        rng.random_range(0..255),
        rng.random_range(2..254)
    );
    let mac: String = (0..6)
        .map(|_| format!("{:02X}", rng.random::<u8>()))
        .collect();
    let (group_id, group_name) = *pick(rng, GROUPS);
    let aad = !p.server && p.platform.starts_with("Windows") && rng.random_bool(0.9);
    let last_seen = now - Duration::minutes(rng.random_range(5..48 * 60));
    let mut m = Machine::new(hex_id(rng), name, now);
    m.first_seen = last_seen - Duration::days(rng.random_range(30..900));
    m.last_seen = last_seen;
    m.os_platform = Some(p.platform.into());
    m.version = Some(version.into());
    m.os_build = (build > 0).then_some(build);
    m.last_ip_address = Some(ip.clone());
    m.last_external_ip_address = Some(format!("203.0.113.{}", rng.random_range(1..250)));
    m.agent_version = Some(p.agent.into());
    m.device_value = Some(if p.server { "High" } else { "Normal" }.into());
    m.rbac_group_id = Some(group_id);
    m.rbac_group_name = (group_id != 0).then(|| group_name.to_owned());
    m.risk_score = Some(
        pick(
            rng,
            &["None", "Informational", "Low", "Low", "Medium", "High"],
        )
        .to_string(),
    );
    m.exposure_level = Some(pick(rng, &["Low", "Medium", "Medium", "High"]).to_string());
    m.is_aad_joined = Some(aad);
    m.aad_device_id = aad.then(|| uuid::Uuid::from_u128(rng.random()).to_string());
    m.managed_by = Some(p.managed_by.into());
    m.managed_by_status = Some(pick(rng, &["Success", "Success", "Unknown"]).to_string());
    m.ip_addresses = vec![IpAddress {
        ip_address: ip,
        mac_address: Some(mac),
        kind: if p.server {
            "Ethernet"
        } else {
            *pick(rng, &["Ethernet", "Wireless80211"])
        }
        .into(),
        operational_status: "Up".into(),
    }];
    if p.server && rng.random_bool(0.5) {
        let sub = uuid::Uuid::from_u128(rng.random()).to_string();
        m.vm_metadata = Some(VmMetadata {
            vm_id: uuid::Uuid::from_u128(rng.random()).to_string(),
            cloud_provider: "Azure".into(),
            resource_id: format!(
                "/subscriptions/{sub}/resourceGroups/rg-prod/providers/Microsoft.Compute/virtualMachines/vm-{}",
                rng.random_range(1..999)
            ),
            subscription_id: sub,
        });
    }
    m
}

fn make_stale(rng: &mut StdRng, m: &mut Machine, now: OffsetDateTime) {
    m.last_seen = now
        - Duration::days(rng.random_range(8..150))
        - Duration::minutes(rng.random_range(0..1440));
    if m.first_seen > m.last_seen {
        m.first_seen = m.last_seen - Duration::days(rng.random_range(30..400));
    }
    m.health_status = "Inactive".into();
    m.defender_av_status = Some("NotUpdated".into());
    m.risk_score = Some("None".into());
}

/// `n` devices for `tenant`, the same for the same `seed` (apart from `now`).
#[must_use]
pub fn fleet(tenant: &str, n: usize, seed: u64, now: OffsetDateTime) -> Fleet {
    let tenant_salt = tenant
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut rng = StdRng::seed_from_u64(seed ^ tenant_salt);
    let mut machines: Vec<Machine> = Vec::with_capacity(n);
    let mut offline = Vec::new();
    let mut s = FleetSummary::default();
    let mut counter = 0usize;
    while machines.len() < n {
        counter += 1;
        let p = pick_profile(&mut rng);
        let name = format!(
            "{}-{:04}.corp.contoso.com",
            pick(&mut rng, p.prefixes),
            counter
        );
        let mut m = base_machine(&mut rng, p, name, now);
        if rng.random_bool(0.05) {
            m.machine_tags.push(DO_NOT_OFFBOARD.into());
        }
        if rng.random_bool(0.3) {
            m.machine_tags.push(
                pick(
                    &mut rng,
                    &["finance", "autopilot", "vip", "prod", "ci", "lab"],
                )
                .to_string(),
            );
        }
        let stale = rng.random_bool(0.10);
        if stale {
            make_stale(&mut rng, &mut m, now);
            offline.push(m.id.clone());
        } else if rng.random_bool(0.03) {
            // Online in the list, but never picks up actions again.
            offline.push(m.id.clone());
        }
        let room = n - machines.len();
        // An older record of the same device under the same name (reimaged device).
        if room >= 2 && !stale && rng.random_bool(0.04) {
            let mut old = base_machine(
                &mut rng,
                p,
                m.computer_dns_name.clone().unwrap_or_default(),
                now,
            );
            make_stale(&mut rng, &mut old, now);
            old.first_seen = m.first_seen - Duration::days(rng.random_range(100..600));
            old.is_potential_duplication = true;
            s.potential_duplicates += 1;
            if rng.random_bool(0.35) {
                old.merged_into_machine_id = Some(m.id.clone());
                s.merged += 1;
                if rng.random_bool(0.5) {
                    old.is_excluded = true;
                    old.exclusion_reason = Some("Duplicate".into());
                    s.excluded += 1;
                }
            }
            offline.push(old.id.clone());
            s.duplicates_by_name += 1;
            machines.push(old);
        } else if room >= 2 && !stale && m.aad_device_id.is_some() && rng.random_bool(0.03) {
            // A renamed device: the old name keeps the same Entra device id.
            let old_name = format!(
                "desktop-{:06x}.corp.contoso.com",
                rng.random_range(0..0xFF_FFFFu32)
            );
            let mut old = base_machine(&mut rng, p, old_name, now);
            make_stale(&mut rng, &mut old, now);
            old.aad_device_id = m.aad_device_id.clone();
            old.is_aad_joined = Some(true);
            offline.push(old.id.clone());
            s.duplicates_by_aad_device_id += 1;
            machines.push(old);
        }
        machines.push(m);
    }
    machines.truncate(n);
    let ids: std::collections::HashSet<&str> = machines.iter().map(|m| m.id.as_str()).collect();
    offline.retain(|id| ids.contains(id.as_str()));
    s.total = machines.len();
    for m in &machines {
        *s.by_platform
            .entry(m.os_platform.clone().unwrap_or_default())
            .or_default() += 1;
        if m.last_seen < now - Duration::days(7) {
            s.stale += 1;
        }
        if m.machine_tags.iter().any(|t| t == DO_NOT_OFFBOARD) {
            s.do_not_offboard += 1;
        }
        if m.offboard_unsupported() {
            s.unsupported_platform += 1;
        }
    }
    s.offline = offline.len();
    Fleet {
        machines,
        offline,
        summary: s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_has_the_realistic_mix_and_is_deterministic() {
        let now = OffsetDateTime::now_utc();
        let f = fleet("t1", 1000, 7, now);
        assert_eq!(f.machines.len(), 1000);
        let s = &f.summary;
        assert!((60..=160).contains(&s.stale), "{s:?}");
        assert!(
            s.duplicates_by_name > 5 && s.duplicates_by_aad_device_id > 3,
            "{s:?}"
        );
        assert!(
            s.merged > 0 && s.do_not_offboard > 10 && s.unsupported_platform > 50,
            "{s:?}"
        );
        assert!(s.by_platform.contains_key("macOS") && s.by_platform.contains_key("Windows11"));
        let again = fleet("t1", 1000, 7, now);
        assert_eq!(again.machines, f.machines);
        let ids: std::collections::HashSet<_> = f.machines.iter().map(|m| &m.id).collect();
        assert_eq!(ids.len(), 1000);
    }
}
