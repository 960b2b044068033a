//! Identifiers, each built only by parsing, so an invalid one can't exist.

use std::fmt;

/// Why a raw identifier was refused; the message names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {expected}")]
pub struct IdError {
    pub what: &'static str,
    pub expected: &'static str,
}

macro_rules! id_common {
    ($t:ident) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<&str> for $t {
            type Error = IdError;
            fn try_from(raw: &str) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn guid(raw: &str, what: &'static str) -> Result<String, IdError> {
    // Only the hyphenated form: braces or URNs in a key would make two spellings of one tenant.
    let raw = raw.trim();
    if raw.len() != 36 {
        return Err(IdError {
            what,
            expected: "a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        });
    }
    uuid::Uuid::try_parse(raw)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| IdError {
            what,
            expected: "a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
        })
}

/// An Entra tenant id, lower-case hyphenated GUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);
id_common!(TenantId);

impl TenantId {
    /// # Errors
    /// When `raw` is not a hyphenated GUID.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        guid(raw, "tenantId").map(Self)
    }
}

/// A Defender machine id: 40 hexadecimal characters, stored lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MachineId(String);
id_common!(MachineId);

impl MachineId {
    /// # Errors
    /// When `raw` is not 40 hexadecimal characters.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let raw = raw.trim();
        if raw.len() == 40 && raw.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(IdError {
                what: "machineId",
                expected: "40 hexadecimal characters",
            })
        }
    }
}

/// A machine id in 20 bytes instead of a 40-character string: a sync of 100,000 devices keeps
/// a few per device in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CompactMachineId([u8; 20]);

impl From<&MachineId> for CompactMachineId {
    fn from(id: &MachineId) -> Self {
        let mut bytes = [0u8; 20];
        let hex = id.as_str().as_bytes();
        for (i, b) in bytes.iter_mut().enumerate() {
            // A MachineId is 40 lower-case hex characters by construction.
            let nibble = |c: u8| {
                if c.is_ascii_digit() {
                    c - b'0'
                } else {
                    c - b'a' + 10
                }
            };
            *b = (nibble(hex[2 * i]) << 4) | nibble(hex[2 * i + 1]);
        }
        Self(bytes)
    }
}

impl CompactMachineId {
    /// Parses a 40-hex machine id.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        MachineId::parse(raw).ok().map(|m| Self::from(&m))
    }

    /// The id as Defender writes it.
    #[must_use]
    pub fn to_machine_id(self) -> MachineId {
        MachineId(self.0.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// An offboard request id (a GUID we mint).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(String);
id_common!(RequestId);

impl RequestId {
    /// # Errors
    /// When `raw` is not a hyphenated GUID.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        guid(raw, "requestId").map(Self)
    }

    /// A new random id.
    #[must_use]
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// The id of the request a signed webhook call creates: the same signature always names
    /// the same request, so the request row itself refuses a replay (one write, not two).
    #[must_use]
    pub fn for_signature(tenant: &TenantId, signature: &str) -> Self {
        // Any fixed namespace works; this one is ours alone.
        const NAMESPACE: uuid::Uuid = uuid::uuid!("5b6f0f8e-3c1d-4c43-9a51-6f1f8f3b2a07");
        let name = format!("{}/{signature}", tenant.as_str());
        Self(
            uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes())
                .hyphenated()
                .to_string(),
        )
    }
}

/// A Defender XDR incident id (Graph returns it as a string of digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IncidentId(String);
id_common!(IncidentId);

impl IncidentId {
    /// # Errors
    /// When `raw` is empty, longer than 64 characters or not alphanumeric (with `-`).
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let raw = raw.trim();
        if !raw.is_empty()
            && raw.len() <= 64
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError {
                what: "incidentId",
                expected: "1-64 letters, digits or '-'",
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tenant_ids_are_normalised_to_lower_case() {
        let t = TenantId::parse("8F3C2A1B-5D4E-4F6A-9B7C-0D1E2F3A4B5C").unwrap();
        assert_eq!(t.as_str(), "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c");
        assert!(TenantId::parse("{8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c}").is_err());
        assert!(TenantId::parse("contoso.onmicrosoft.com").is_err());
    }

    #[test]
    fn machine_ids_are_forty_hex_characters() {
        assert!(MachineId::parse("1e5bc9d7e413ddd7902c2932e418702b84d0cc07").is_ok());
        assert!(MachineId::parse("1e5bc9d7e413ddd7902c2932e418702b84d0cc0").is_err());
        assert!(MachineId::parse("1e5bc9d7e413ddd7902c2932e418702b84d0cc0g").is_err());
        // A hostile input, not a path of this repository (tests/standalone.rs skips it).
        assert!(MachineId::parse("../../../etc/passwd/00000000000000000000").is_err());
    }

    #[test]
    fn ids_deserialize_only_when_valid() {
        let ok: Result<MachineId, _> =
            serde_json::from_str("\"1E5BC9D7E413DDD7902C2932E418702B84D0CC07\"");
        assert_eq!(
            ok.unwrap().as_str(),
            "1e5bc9d7e413ddd7902c2932e418702b84d0cc07"
        );
        let bad: Result<TenantId, _> = serde_json::from_str("\"nope\"");
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("tenantId must be a GUID")
        );
    }

    #[test]
    fn compact_machine_ids_round_trip() {
        let id = MachineId::parse("1E5BC9D7E413DDD7902C2932E418702B84D0CC07").unwrap();
        let compact = CompactMachineId::from(&id);
        assert_eq!(compact.to_machine_id(), id);
        assert_eq!(CompactMachineId::parse(id.as_str()), Some(compact));
        assert_eq!(CompactMachineId::parse("nope"), None);
    }

    proptest! {
        #[test]
        fn any_machine_id_survives_compaction(raw in "[0-9a-fA-F]{40}") {
            let id = MachineId::parse(&raw).unwrap();
            prop_assert_eq!(CompactMachineId::from(&id).to_machine_id(), id);
        }

        #[test]
        fn a_parsed_machine_id_is_always_a_safe_table_key(raw in ".{0,60}") {
            if let Ok(id) = MachineId::parse(&raw) {
                prop_assert_eq!(id.as_str().len(), 40);
                prop_assert!(id.as_str().chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            }
        }

        #[test]
        fn incident_ids_never_contain_key_breaking_characters(raw in ".{0,80}") {
            if let Ok(id) = IncidentId::parse(&raw) {
                prop_assert!(!id.as_str().contains(['/', '\\', '#', '?', '\'']));
            }
        }
    }
}
