//! `Incidents` rows: the last notified state of each incident, so `IncidentWatch` tells
//! new incidents from changed ones and stays silent about updates that change nothing a
//! person acts on.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::clients::tables::{Entity, TableClient, TableError};
use crate::domain::{IncidentId, TenantId};

/// The fields a notification is about. Anything else Graph bumps `lastUpdateDateTime` for
/// (comments, alerts added, tags) is deliberately not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncidentState {
    pub status: String,
    pub severity: String,
    pub classification: String,
    pub assigned_to: String,
}

impl IncidentState {
    /// Builds the state with values normalised (Graph's enum casing varies between docs).
    #[must_use]
    pub fn new(status: &str, severity: &str, classification: &str, assigned_to: &str) -> Self {
        Self {
            status: status.trim().to_ascii_lowercase(),
            severity: severity.trim().to_ascii_lowercase(),
            classification: classification.trim().to_ascii_lowercase(),
            assigned_to: assigned_to.trim().to_ascii_lowercase(),
        }
    }

    /// 16 hex characters of SHA-256 over exactly status, severity, classification and
    /// assignment (length-prefixed, so no two states collide by concatenation). Stable across
    /// releases: it is part of deterministic note ids.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for field in [
            &self.status,
            &self.severity,
            &self.classification,
            &self.assigned_to,
        ] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// What changed from `before`, for people: `severity: medium → high`.
    #[must_use]
    pub fn changes_since(&self, before: &Self) -> Vec<String> {
        let shown = |v: &str| {
            if v.is_empty() {
                "(none)".to_owned()
            } else {
                v.to_owned()
            }
        };
        [
            ("status", &before.status, &self.status),
            ("severity", &before.severity, &self.severity),
            (
                "classification",
                &before.classification,
                &self.classification,
            ),
            ("assigned to", &before.assigned_to, &self.assigned_to),
        ]
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name}: {} → {}", shown(a), shown(b)))
        .collect()
    }
}

/// One `Incidents` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRow {
    pub title: String,
    pub state: IncidentState,
    pub last_update: Option<OffsetDateTime>,
    pub fingerprint: String,
}

mod col {
    pub const TITLE: &str = "Title";
    pub const SEVERITY: &str = "Severity";
    pub const STATUS: &str = "Status";
    pub const CLASSIFICATION: &str = "Classification";
    pub const ASSIGNED_TO: &str = "AssignedTo";
    pub const LAST_UPDATE: &str = "LastUpdate";
    pub const FINGERPRINT: &str = "Fingerprint";
    pub const SEEN_AT: &str = "SeenAt";
}

impl IncidentRow {
    fn from_entity(e: &Entity) -> Self {
        let s = |c: &str| e.get_str(c).unwrap_or_default().to_owned();
        let state = IncidentState::new(
            &s(col::STATUS),
            &s(col::SEVERITY),
            &s(col::CLASSIFICATION),
            &s(col::ASSIGNED_TO),
        );
        Self {
            title: s(col::TITLE),
            fingerprint: s(col::FINGERPRINT),
            last_update: e.get_datetime(col::LAST_UPDATE),
            state,
        }
    }
}

/// One incident's row.
///
/// # Errors
/// Storage failures.
pub async fn get(
    table: &TableClient,
    tenant: &TenantId,
    id: &IncidentId,
) -> Result<Option<IncidentRow>, TableError> {
    Ok(table
        .get(tenant.as_str(), id.as_str())
        .await?
        .map(|e| IncidentRow::from_entity(&e)))
}

/// Records an incident's notified state (idempotent).
///
/// # Errors
/// Storage failures.
pub async fn put(
    table: &TableClient,
    tenant: &TenantId,
    id: &IncidentId,
    row: &IncidentRow,
    now: OffsetDateTime,
) -> Result<(), TableError> {
    let e = Entity::new(tenant.as_str(), id.as_str())
        .with(col::TITLE, row.title.as_str())
        .with(col::SEVERITY, row.state.severity.as_str())
        .with(col::STATUS, row.state.status.as_str())
        .with(col::CLASSIFICATION, row.state.classification.as_str())
        .with(col::ASSIGNED_TO, row.state.assigned_to.as_str())
        .with_opt(col::LAST_UPDATE, row.last_update)
        .with(col::FINGERPRINT, row.fingerprint.as_str())
        .with(col::SEEN_AT, now);
    table.upsert_replace(&e).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_covers_exactly_status_severity_classification_and_assignment() {
        let base = IncidentState::new("active", "medium", "unknown", "");
        let fp = base.fingerprint();
        assert_eq!(fp.len(), 16);
        assert_eq!(
            fp,
            IncidentState::new("Active", "Medium", "Unknown", " ").fingerprint(),
            "casing and blanks don't count"
        );
        for changed in [
            IncidentState::new("resolved", "medium", "unknown", ""),
            IncidentState::new("active", "high", "unknown", ""),
            IncidentState::new("active", "medium", "truePositive", ""),
            IncidentState::new("active", "medium", "unknown", "analyst@contoso.com"),
        ] {
            assert_ne!(changed.fingerprint(), fp, "{changed:?}");
        }
        // Length prefixes: moving characters between fields changes the fingerprint.
        assert_ne!(
            IncidentState::new("ab", "c", "", "").fingerprint(),
            IncidentState::new("a", "bc", "", "").fingerprint()
        );
    }

    #[test]
    fn changes_name_each_field_with_before_and_after() {
        let before = IncidentState::new("active", "medium", "unknown", "");
        let after = IncidentState::new("active", "high", "unknown", "analyst@contoso.com");
        assert_eq!(
            after.changes_since(&before),
            vec![
                "severity: medium → high".to_owned(),
                "assigned to: (none) → analyst@contoso.com".to_owned()
            ]
        );
        assert!(before.changes_since(&before).is_empty());
    }
}
