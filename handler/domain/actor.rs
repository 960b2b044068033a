//! Who asked: the `Actor` recorded on every offboard request and every Audit row (design §9.2).

use std::fmt;

use super::ids::IdError;

/// A registered calling system's id: `[a-z0-9][a-z0-9-]{1,62}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerId(String);

impl CallerId {
    /// The built-in caller that signs with `WEBHOOK_HMAC_SECRET` and reaches every tenant.
    pub const DEFAULT: &'static str = "default";

    /// # Errors
    /// When `raw` is not 2 to 63 characters of `a-z`, `0-9` and `-`, starting with a letter or
    /// digit.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let bytes = raw.as_bytes();
        let ok = (2..=63).contains(&bytes.len())
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError {
                what: "callerId",
                expected: "2 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            })
        }
    }

    /// The built-in `default` caller.
    pub fn default_caller() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CallerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who caused a change. Stored as text (`caller:<id>`, `user:<upn>`, `timer:<Function>`,
/// `admin-key`, `function-key`); a signed-in user's object id travels beside it (`ActorId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A calling system that signed its request with its own key.
    Caller(CallerId),
    /// A person signed in to the console.
    User { upn: String, object_id: String },
    /// A timer function acting on its own (the flag timer, the tracker, expiry).
    Timer(String),
    /// A holder of the host's admin (master) key.
    AdminKey,
    /// A holder of a function key, without a caller signature.
    FunctionKey,
}

impl Actor {
    /// The `Actor` column's text.
    pub fn label(&self) -> String {
        match self {
            Self::Caller(id) => format!("caller:{id}"),
            Self::User { upn, .. } => format!("user:{upn}"),
            Self::Timer(name) => format!("timer:{name}"),
            Self::AdminKey => "admin-key".to_owned(),
            Self::FunctionKey => "function-key".to_owned(),
        }
    }

    /// The actor of a call the host let through with a key, from the host's `authlevel`
    /// claim (`Admin` for the master key, `Function` for a function key). Anything else
    /// (no claim: an anonymous function) counts as the weaker function key.
    #[must_use]
    pub fn from_key_level(auth_level: Option<&str>) -> Self {
        match auth_level {
            Some(level) if level.eq_ignore_ascii_case("admin") => Self::AdminKey,
            _ => Self::FunctionKey,
        }
    }

    /// A timer function by name.
    #[must_use]
    pub fn timer(function: &str) -> Self {
        Self::Timer(function.to_owned())
    }

    /// Reads an `Actor` column back (with the `ActorId` column for users); `None` for text
    /// that is not one of the five forms.
    #[must_use]
    pub fn parse(label: &str, object_id: Option<&str>) -> Option<Self> {
        match label {
            "admin-key" => return Some(Self::AdminKey),
            "function-key" => return Some(Self::FunctionKey),
            _ => {}
        }
        let (kind, rest) = label.split_once(':')?;
        match kind {
            "caller" => CallerId::parse(rest).ok().map(Self::Caller),
            "user" if !rest.is_empty() => Some(Self::User {
                upn: rest.to_owned(),
                object_id: object_id.unwrap_or_default().to_owned(),
            }),
            "timer" if !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Some(Self::Timer(rest.to_owned()))
            }
            _ => None,
        }
    }

    /// The `ActorId` column: a user's Entra object id, nothing for the others.
    pub fn object_id(&self) -> Option<&str> {
        match self {
            Self::User { object_id, .. } => Some(object_id),
            _ => None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn caller_ids_follow_the_pattern() {
        for ok in ["itsm", "hr-leavers", "a1", &"x".repeat(63)] {
            assert!(CallerId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "-itsm",
            "ITSM",
            "itsm_1",
            "it sm",
            &"x".repeat(64),
            "itsm/1",
        ] {
            assert!(CallerId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn actors_are_labelled_as_stored() {
        let caller = Actor::Caller(CallerId::parse("itsm").expect("a valid caller id"));
        assert_eq!(caller.label(), "caller:itsm");
        let user = Actor::User {
            upn: "ada@contoso.com".into(),
            object_id: "0b8c7f5e-5a5e-4c1a-9d8e-1f2a3b4c5d6e".into(),
        };
        assert_eq!(user.label(), "user:ada@contoso.com");
        assert_eq!(
            user.object_id(),
            Some("0b8c7f5e-5a5e-4c1a-9d8e-1f2a3b4c5d6e")
        );
        assert_eq!(
            Actor::timer("OffboardFlagged").label(),
            "timer:OffboardFlagged"
        );
        assert_eq!(Actor::AdminKey.label(), "admin-key");
        assert_eq!(Actor::FunctionKey.to_string(), "function-key");
        assert_eq!(caller.object_id(), None);
    }

    #[test]
    fn stored_labels_read_back_as_the_same_actor() {
        let user = Actor::User {
            upn: "ada@contoso.com".into(),
            object_id: "0b8c7f5e-5a5e-4c1a-9d8e-1f2a3b4c5d6e".into(),
        };
        for actor in [
            Actor::Caller(CallerId::parse("itsm").unwrap()),
            user,
            Actor::timer("OffboardFlagged"),
            Actor::AdminKey,
            Actor::FunctionKey,
        ] {
            assert_eq!(
                Actor::parse(&actor.label(), actor.object_id()),
                Some(actor.clone()),
                "{actor}"
            );
        }
        for bad in [
            "",
            "caller:",
            "caller:A B",
            "robot:x",
            "timer:",
            "timer:a b",
            "user:",
        ] {
            assert_eq!(Actor::parse(bad, None), None, "{bad}");
        }
    }

    #[test]
    fn the_hosts_key_level_names_the_key() {
        assert_eq!(Actor::from_key_level(Some("Admin")), Actor::AdminKey);
        assert_eq!(Actor::from_key_level(Some("Function")), Actor::FunctionKey);
        assert_eq!(Actor::from_key_level(None), Actor::FunctionKey);
        assert_eq!(Actor::from_key_level(Some("Anonymous")), Actor::FunctionKey);
    }
}
