//! Duplicate devices: a reinstalled or renamed device gets a new machine id while the old one
//! lingers. Live devices sharing a `computerDnsName` (case-insensitive) or an `aadDeviceId`
//! form one group (transitively); its newest member is the primary and every other member is
//! a duplicate of it. Defender's own verdict (`mergedIntoMachineId`) wins over ours.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use time::OffsetDateTime;

use super::ids::{CompactMachineId, MachineId};

/// What duplicate detection needs of one live device; kept small (about 100 bytes) because a
/// sync holds one per device of the tenant (100,000 of them in the benchmark).
#[derive(Debug, Clone)]
pub struct DupKey {
    pub machine_id: CompactMachineId,
    name: Option<u64>,
    aad: Option<u128>,
    /// Unix milliseconds.
    last_seen: Option<i64>,
    first_seen: Option<i64>,
    merged_into: Option<CompactMachineId>,
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Names that many unrelated machines carry; grouping on them would invent duplicates.
const GENERIC_NAMES: &[&str] = &["localhost", "localhost.localdomain", "ubuntu", "debian"];

impl DupKey {
    #[must_use]
    pub fn new(
        machine_id: MachineId,
        computer_dns_name: Option<&str>,
        aad_device_id: Option<&str>,
        last_seen: Option<OffsetDateTime>,
        first_seen: Option<OffsetDateTime>,
        merged_into: Option<MachineId>,
    ) -> Self {
        let name = computer_dns_name
            .map(|n| n.trim().to_ascii_lowercase())
            .filter(|n| !n.is_empty() && !GENERIC_NAMES.contains(&n.as_str()))
            .map(|n| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                n.hash(&mut h);
                h.finish()
            });
        let aad = aad_device_id
            .and_then(|a| uuid::Uuid::try_parse(a.trim()).ok())
            .filter(|u| !u.is_nil())
            .map(|u| u.as_u128());
        Self {
            machine_id: CompactMachineId::from(&machine_id),
            name,
            aad,
            last_seen: last_seen.map(millis),
            first_seen: first_seen.map(millis),
            merged_into: merged_into.as_ref().map(CompactMachineId::from),
        }
    }

    /// Newest first: latest `lastSeen`, then latest `firstSeen`, then the larger id (so the
    /// choice is deterministic on every run).
    fn newer_than(&self, other: &Self) -> bool {
        // Byte order of the compact id is the order of its hex text.
        (self.last_seen, self.first_seen, self.machine_id)
            > (other.last_seen, other.first_seen, other.machine_id)
    }
}

/// The names and Entra ids of the devices seen so far in one listing: tells, as a device
/// arrives, whether it shares either with an earlier one (so it may be a duplicate).
#[derive(Debug, Default)]
pub struct SeenKeys {
    names: std::collections::HashSet<u64>,
    aads: std::collections::HashSet<u128>,
}

impl SeenKeys {
    /// Records `key`; returns whether its name or Entra id was recorded before.
    pub fn insert(&mut self, key: &DupKey) -> bool {
        let name_seen = key.name.is_some_and(|n| !self.names.insert(n));
        let aad_seen = key.aad.is_some_and(|a| !self.aads.insert(a));
        name_seen || aad_seen
    }
}

/// Returns, for each duplicate, the machine id of its primary. Primaries and devices without
/// a twin are absent from the map.
#[must_use]
pub fn resolve(devices: &[DupKey]) -> HashMap<CompactMachineId, CompactMachineId> {
    let mut parent: Vec<usize> = (0..devices.len()).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let union = |parent: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (find(parent, a), find(parent, b));
        if ra != rb {
            parent[ra] = rb;
        }
    };

    let mut by_name: HashMap<u64, usize> = HashMap::new();
    let mut by_aad: HashMap<u128, usize> = HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        if let Some(n) = d.name {
            match by_name.get(&n) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    by_name.insert(n, i);
                }
            }
        }
        if let Some(a) = d.aad {
            match by_aad.get(&a) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    by_aad.insert(a, i);
                }
            }
        }
    }

    // The newest member of each group.
    let mut newest: HashMap<usize, usize> = HashMap::new();
    for i in 0..devices.len() {
        let root = find(&mut parent, i);
        match newest.get(&root) {
            Some(&best) if !devices[i].newer_than(&devices[best]) => {}
            _ => {
                newest.insert(root, i);
            }
        }
    }

    let mut out = HashMap::new();
    for (i, d) in devices.iter().enumerate() {
        if let Some(target) = &d.merged_into
            && target != &d.machine_id
        {
            out.insert(d.machine_id, *target);
            continue;
        }
        let root = find(&mut parent, i);
        if let Some(&primary) = newest.get(&root)
            && primary != i
        {
            out.insert(d.machine_id, devices[primary].machine_id);
        }
    }
    out
}

#[cfg(test)]
mod seen_keys_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(id: u8, name: Option<&str>, aad: Option<&str>) -> DupKey {
        DupKey::new(
            MachineId::parse(&format!("{id:040x}")).unwrap(),
            name,
            aad,
            None,
            None,
            None,
        )
    }

    #[test]
    fn a_device_sharing_a_name_or_entra_id_with_an_earlier_one_is_reported() {
        let aad = "2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901";
        let mut seen = SeenKeys::default();
        assert!(!seen.insert(&key(1, Some("PC-1.contoso.com"), None)));
        assert!(!seen.insert(&key(2, Some("pc-2"), Some(aad))));
        assert!(seen.insert(&key(3, Some("pc-1.CONTOSO.com"), None)));
        assert!(seen.insert(&key(4, Some("pc-4"), Some(aad))));
        assert!(!seen.insert(&key(5, None, None)));
        assert!(!seen.insert(&key(6, Some("localhost"), None)));
        assert!(!seen.insert(&key(7, Some("localhost"), None)));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn mid(n: u8) -> MachineId {
        MachineId::parse(&format!("{n:02x}").repeat(20)).unwrap()
    }

    fn id(n: u8) -> CompactMachineId {
        CompactMachineId::from(&mid(n))
    }

    fn key(n: u8, name: Option<&str>, aad: Option<&str>, seen_day: u8) -> DupKey {
        let seen = datetime!(2026-11-01 0:00 UTC) + time::Duration::days(i64::from(seen_day));
        DupKey::new(mid(n), name, aad, Some(seen), Some(seen), None)
    }

    const AAD: &str = "80fe8ff8-2624-418e-9591-41f0491218f9";

    #[test]
    fn a_reinstalled_device_with_the_same_name_points_at_the_newest_id() {
        let d = [
            key(1, Some("PC-01.contoso.com"), None, 1),
            key(2, Some("pc-01.contoso.com"), None, 9),
        ];
        let r = resolve(&d);
        assert_eq!(r.get(&id(1)), Some(&id(2)));
        assert!(!r.contains_key(&id(2)), "the newest stays primary");
    }

    #[test]
    fn a_renamed_device_is_found_through_its_aad_device_id() {
        let d = [
            key(1, Some("old-name"), Some(AAD), 2),
            key(2, Some("new-name"), Some(AAD), 5),
        ];
        assert_eq!(resolve(&d).get(&id(1)), Some(&id(2)));
    }

    #[test]
    fn groups_join_transitively_and_keep_one_primary() {
        let other = "11111111-2222-4333-8444-555555555555";
        let d = [
            key(1, Some("a"), Some(AAD), 1),
            key(2, Some("a"), Some(other), 3),
            key(3, Some("b"), Some(other), 7),
            key(4, Some("unrelated"), None, 8),
        ];
        let r = resolve(&d);
        assert_eq!(r.get(&id(1)), Some(&id(3)));
        assert_eq!(r.get(&id(2)), Some(&id(3)));
        assert!(!r.contains_key(&id(3)));
        assert!(!r.contains_key(&id(4)));
    }

    #[test]
    fn defenders_merged_into_verdict_wins() {
        let mut d = key(1, Some("x"), None, 9);
        d.merged_into = Some(id(7));
        assert_eq!(resolve(&[d]).get(&id(1)), Some(&id(7)));
    }

    #[test]
    fn generic_names_and_nil_aad_ids_do_not_group_devices() {
        let nil = "00000000-0000-0000-0000-000000000000";
        let d = [
            key(1, Some("localhost"), Some(nil), 1),
            key(2, Some("LOCALHOST"), Some(nil), 2),
        ];
        assert!(resolve(&d).is_empty());
    }

    proptest! {
        #[test]
        fn every_duplicate_points_at_a_primary_that_is_not_itself_a_duplicate(
            specs in proptest::collection::vec((0u8..6, 0u8..4, 0u8..30), 0..40)
        ) {
            let names = ["a", "b", "c", "d", "e", "f"];
            let aads = [
                "10000000-0000-4000-8000-000000000001",
                "10000000-0000-4000-8000-000000000002",
                "10000000-0000-4000-8000-000000000003",
            ];
            let devices: Vec<DupKey> = specs
                .iter()
                .enumerate()
                .map(|(i, (n, a, day))| {
                    let aad = aads.get(usize::from(*a)).copied();
                    key(u8::try_from(i).unwrap_or(0), Some(names[usize::from(*n)]), aad, *day)
                })
                .collect();
            let r = resolve(&devices);
            for (dup, primary) in &r {
                prop_assert_ne!(dup, primary);
                prop_assert!(!r.contains_key(primary), "chains are flattened");
            }
            // Two devices with the same name always end with the same primary.
            let primary_of = |m: &CompactMachineId| r.get(m).copied().unwrap_or(*m);
            for a in &devices {
                for b in &devices {
                    if a.name == b.name {
                        prop_assert_eq!(primary_of(&a.machine_id), primary_of(&b.machine_id));
                    }
                }
            }
        }
    }
}
