//! Calling systems and what they may reach (design §9.1): each caller signs with its own key
//! (or the next one, during a rotation) and reaches only the tenants of its scope.

use std::collections::BTreeSet;

use super::actor::CallerId;
use super::ids::TenantId;
use super::signature::{self, SignatureError};

/// The tenants a caller reaches: all of them (`["*"]`) or the listed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    All,
    Only(BTreeSet<TenantId>),
}

impl TenantScope {
    /// From the `tenants` list of a caller PUT: `["*"]`, or one or more tenant GUIDs.
    ///
    /// # Errors
    /// A message for a 400 naming what is wrong (empty, `*` mixed with ids, a bad GUID).
    pub fn from_list<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        if items.is_empty() {
            return Err("tenants must list at least one tenant id, or be [\"*\"]".into());
        }
        if items.iter().any(|i| i.as_ref() == "*") {
            return if items.len() == 1 {
                Ok(Self::All)
            } else {
                Err("tenants is either [\"*\"] or a list of tenant ids, not both".into())
            };
        }
        if items.len() > 1000 {
            return Err("tenants lists at most 1000 tenant ids; use [\"*\"] for all".into());
        }
        items
            .iter()
            .map(|i| {
                TenantId::parse(i.as_ref())
                    .map_err(|_| format!("tenants: '{}' is not a tenant GUID", clip(i.as_ref())))
            })
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self::Only)
    }

    /// The stored form: `*` or the ids joined by commas.
    #[must_use]
    pub fn to_stored(&self) -> String {
        match self {
            Self::All => "*".into(),
            Self::Only(ids) => ids
                .iter()
                .map(TenantId::as_str)
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Reads the stored form back.
    ///
    /// # Errors
    /// When the column holds something else.
    pub fn parse_stored(raw: &str) -> Result<Self, String> {
        let items: Vec<&str> = raw.split(',').map(str::trim).collect();
        Self::from_list(&items)
    }

    /// Whether a call for `tenant` is within the scope.
    #[must_use]
    pub fn contains(&self, tenant: &TenantId) -> bool {
        match self {
            Self::All => true,
            Self::Only(ids) => ids.contains(tenant),
        }
    }

    /// The `tenants` list of the caller JSON.
    #[must_use]
    pub fn to_list(&self) -> Vec<String> {
        match self {
            Self::All => vec!["*".into()],
            Self::Only(ids) => ids.iter().map(|t| t.as_str().to_owned()).collect(),
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Who a call to `POST /api/offboard` says it is, from its headers, before any key is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// `X-Caller-Id` names a registered caller; the call must be signed with its key.
    Caller(CallerId),
    /// Signed, without `X-Caller-Id`: the built-in `default` caller (`WEBHOOK_HMAC_SECRET`).
    Default,
    /// Neither a caller id nor a signature: allowed only with `WEBHOOK_ALLOW_UNSIGNED=true`.
    Unsigned,
}

/// Why a call is refused before its signature is checked (answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("X-Caller-Id is not a registered caller")]
    UnknownCaller,
    #[error(
        "X-Caller-Id is set, but the request is not signed: X-Signature and X-Signature-Timestamp are required"
    )]
    CallerUnsigned,
    #[error("the request is not signed: X-Signature and X-Signature-Timestamp are required")]
    Unsigned,
    #[error(
        "the request is signed, but no key is configured for it: send X-Caller-Id with your caller id"
    )]
    NoDefaultKey,
}

/// Sorts a call into [`Claimed`] by its headers and the app's settings.
///
/// # Errors
/// [`ClaimError`] for a call that can't be accepted whatever its key.
pub fn claim(
    caller_header: Option<&str>,
    signed: bool,
    default_key_configured: bool,
    allow_unsigned: bool,
) -> Result<Claimed, ClaimError> {
    match (caller_header.map(str::trim), signed) {
        (Some(raw), true) => CallerId::parse(raw)
            .ok()
            // `default` is the built-in caller, reached without the header.
            .filter(|id| id.as_str() != CallerId::DEFAULT)
            .map(Claimed::Caller)
            .ok_or(ClaimError::UnknownCaller),
        (Some(_), false) => Err(ClaimError::CallerUnsigned),
        (None, true) if default_key_configured => Ok(Claimed::Default),
        (None, true) => Err(ClaimError::NoDefaultKey),
        (None, false) if allow_unsigned => Ok(Claimed::Unsigned),
        (None, false) => Err(ClaimError::Unsigned),
    }
}

/// Checks a signature under the caller's current key, then under its next key (rotation).
/// Returns the normalised signature.
///
/// # Errors
/// The current key's [`SignatureError`] when neither key verifies.
pub fn verify_either(
    current: &[u8],
    next: Option<&[u8]>,
    signature_header: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<String, SignatureError> {
    match signature::verify(current, signature_header, timestamp, body, now_unix) {
        Err(SignatureError::Mismatch) => match next {
            Some(next) => signature::verify(next, signature_header, timestamp, body, now_unix),
            None => Err(SignatureError::Mismatch),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const A: &str = "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c";
    const B: &str = "2b7e9c41-0a6d-4c3f-8e15-94d2f0a7b6c8";

    fn tid(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn a_scope_reaches_only_its_tenants() {
        let only_a = TenantScope::from_list(&[A]).unwrap();
        assert!(only_a.contains(&tid(A)));
        assert!(!only_a.contains(&tid(B)));
        let all = TenantScope::from_list(&["*"]).unwrap();
        assert!(all.contains(&tid(A)) && all.contains(&tid(B)));
        for stored in [only_a, all, TenantScope::from_list(&[B, A]).unwrap()] {
            assert_eq!(
                TenantScope::parse_stored(&stored.to_stored()).unwrap(),
                stored
            );
        }
    }

    #[test]
    fn malformed_scopes_are_refused() {
        let empty: [&str; 0] = [];
        assert!(TenantScope::from_list(&empty).is_err());
        assert!(TenantScope::from_list(&["*", A]).is_err());
        assert!(TenantScope::from_list(&["contoso"]).is_err());
        assert!(TenantScope::parse_stored("").is_err());
    }

    #[test]
    fn calls_are_sorted_by_their_headers() {
        let itsm = CallerId::parse("itsm").unwrap();
        assert_eq!(
            claim(Some("itsm"), true, false, false),
            Ok(Claimed::Caller(itsm))
        );
        assert_eq!(
            claim(Some("ITSM!"), true, true, true),
            Err(ClaimError::UnknownCaller)
        );
        assert_eq!(
            claim(Some("default"), true, true, true),
            Err(ClaimError::UnknownCaller)
        );
        assert_eq!(
            claim(Some("itsm"), false, true, true),
            Err(ClaimError::CallerUnsigned)
        );
        assert_eq!(claim(None, true, true, false), Ok(Claimed::Default));
        assert_eq!(
            claim(None, true, false, true),
            Err(ClaimError::NoDefaultKey)
        );
        assert_eq!(claim(None, false, true, true), Ok(Claimed::Unsigned));
        assert_eq!(claim(None, false, true, false), Err(ClaimError::Unsigned));
        assert_eq!(claim(None, false, false, false), Err(ClaimError::Unsigned));
    }

    #[test]
    fn either_the_current_or_the_next_key_verifies() {
        let (cur, next, other) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let body = b"{}";
        for (key, ok) in [(cur, true), (next, true), (other, false)] {
            let sig = signature::sign(&key, 1000, body);
            let r = verify_either(&cur, Some(&next), Some(&sig), Some("1000"), body, 1000);
            assert_eq!(r.is_ok(), ok);
        }
        let sig = signature::sign(&next, 1000, body);
        assert_eq!(
            verify_either(&cur, None, Some(&sig), Some("1000"), body, 1000),
            Err(SignatureError::Mismatch)
        );
    }
}
