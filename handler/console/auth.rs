//! Who is signed in, and the role types that prove what they may do.
//!
//! [`SignedIn`] is built by the router from the sealed cookie, never by a page. A page that
//! needs a role asks for its proof with [`SignedIn::require`]; handlers that change things take
//! the proof (`Operator`, `Approver`, `Admin`) as a parameter, so they can't be called without
//! the check. The proofs can only be made here.

use crate::domain::{Actor, ConsoleRole, RoleSet};

use super::refusal::Refusal;
use super::session::Sealed;

/// The person behind the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    upn: String,
    oid: String,
    name: String,
    roles: RoleSet,
    csrf: String,
}

impl SignedIn {
    /// The person of a signed-in session; `None` for a sign-in still under way.
    pub(super) fn from_sealed(sealed: Sealed) -> Option<Self> {
        match sealed {
            Sealed::User {
                upn,
                oid,
                name,
                roles,
                csrf,
                ..
            } => Some(Self {
                upn,
                oid,
                name,
                roles: RoleSet::from_bits(roles),
                csrf,
            }),
            Sealed::Pending { .. } => None,
        }
    }

    /// The proof that this person holds role `R`, or a 403 refusal.
    ///
    /// # Errors
    /// [`Refusal::NoRole`] for a person without any console role,
    /// [`Refusal::Forbidden`] when the role is missing.
    pub fn require<R: Role>(&self) -> Result<R, Refusal> {
        if self.roles.is_empty() {
            Err(Refusal::NoRole)
        } else if self.roles.allows(R::ROLE) {
            Ok(R::grant(Grant(())))
        } else {
            Err(Refusal::Forbidden { needed: R::ROLE })
        }
    }

    /// Whether to show the controls of `role` (the server checks again on every POST).
    pub fn may(&self, role: ConsoleRole) -> bool {
        self.roles.allows(role)
    }

    /// The user principal name (e.g. `ada@contoso.com`).
    pub fn upn(&self) -> &str {
        &self.upn
    }

    /// The Entra object id.
    pub fn object_id(&self) -> &str {
        &self.oid
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn roles(&self) -> RoleSet {
        self.roles
    }

    /// The form field every POST must echo (checked by the router, in one place).
    pub fn csrf_token(&self) -> &str {
        &self.csrf
    }

    /// `user:<upn>` with the object id, for Audit rows and requests.
    pub fn actor(&self) -> Actor {
        Actor::User {
            upn: self.upn.clone(),
            object_id: self.oid.clone(),
        }
    }
}

/// Made only by [`SignedIn::require`]: outside this module no role proof can be built.
#[derive(Debug)]
pub struct Grant(());

/// A console role as a type. Sealed: the four below are all there is.
pub trait Role: private::Sealed + Sized {
    const ROLE: ConsoleRole;
    #[doc(hidden)]
    fn grant(grant: Grant) -> Self;
}

mod private {
    pub trait Sealed {}
}

macro_rules! role {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy)]
        pub struct $name(());

        impl private::Sealed for $name {}

        impl Role for $name {
            const ROLE: ConsoleRole = $role;
            fn grant(_: Grant) -> Self {
                Self(())
            }
        }
    };
}

role!(
    Viewer,
    ConsoleRole::Viewer,
    "Proof that the person may read the console (any console role)."
);
role!(
    Operator,
    ConsoleRole::Operator,
    "Proof of `Console.Operator`: may request offboarding and set flags."
);
role!(
    Approver,
    ConsoleRole::Approver,
    "Proof of `Console.Approver`: may approve or deny waiting requests."
);
role!(
    Admin,
    ConsoleRole::Admin,
    "Proof of `Console.Admin`: may register, edit, disable and check tenants."
);

#[cfg(test)]
mod tests {
    use super::*;

    fn person(claims: &[&str]) -> SignedIn {
        SignedIn {
            upn: "p@contoso.test".into(),
            oid: "o".into(),
            name: "P".into(),
            roles: RoleSet::from_claims(claims.iter().copied()),
            csrf: "c".into(),
        }
    }

    #[test]
    fn a_viewer_may_read_but_not_act() {
        let v = person(&["Console.Viewer"]);
        assert!(v.require::<Viewer>().is_ok());
        assert!(matches!(
            v.require::<Operator>(),
            Err(Refusal::Forbidden {
                needed: ConsoleRole::Operator
            })
        ));
        assert!(v.require::<Admin>().is_err());
    }

    #[test]
    fn no_role_is_refused_everything() {
        let n = person(&[]);
        assert!(matches!(n.require::<Viewer>(), Err(Refusal::NoRole)));
        assert!(matches!(n.require::<Admin>(), Err(Refusal::NoRole)));
    }

    #[test]
    fn the_actor_is_the_user() {
        assert_eq!(
            person(&["Console.Admin"]).actor().label(),
            "user:p@contoso.test"
        );
    }
}
