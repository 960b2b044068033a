//! The console's app roles (DESIGN §9.5): what the home app's ID token says a person may do.
//!
//! Roles are independent grants, not a ladder: an admin who should also approve is given both
//! roles. Any role lets a person read the console (the viewer's rights); a person with none is
//! signed in but refused every page.

use std::fmt;

/// One app role of the home app, as it appears in the ID token's `roles` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConsoleRole {
    /// Reads every page (fleet, devices, requests); no action controls.
    Viewer,
    /// Requests offboarding and sets flags from the console.
    Operator,
    /// Approves or denies requests waiting for a second person.
    Approver,
    /// Registers, edits, disables and checks tenants.
    Admin,
}

impl ConsoleRole {
    pub const ALL: [Self; 4] = [Self::Viewer, Self::Operator, Self::Approver, Self::Admin];

    /// The app role's value in Entra ID (`Console.Viewer`...).
    pub fn claim(self) -> &'static str {
        match self {
            Self::Viewer => "Console.Viewer",
            Self::Operator => "Console.Operator",
            Self::Approver => "Console.Approver",
            Self::Admin => "Console.Admin",
        }
    }

    /// The short name shown in the console's header.
    pub fn label(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }

    /// The role for a claim value; other app roles (of other apps or future ones) are `None`.
    pub fn from_claim(claim: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.claim() == claim)
    }

    fn bit(self) -> u8 {
        match self {
            Self::Viewer => 1,
            Self::Operator => 2,
            Self::Approver => 4,
            Self::Admin => 8,
        }
    }
}

impl fmt::Display for ConsoleRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.claim())
    }
}

/// The console roles a person holds (unknown claims dropped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RoleSet(u8);

impl RoleSet {
    /// The roles named in a token's `roles` claim.
    pub fn from_claims<'a>(claims: impl IntoIterator<Item = &'a str>) -> Self {
        Self(
            claims
                .into_iter()
                .filter_map(ConsoleRole::from_claim)
                .fold(0, |bits, r| bits | r.bit()),
        )
    }

    #[must_use]
    pub fn with(self, role: ConsoleRole) -> Self {
        Self(self.0 | role.bit())
    }

    pub fn contains(self, role: ConsoleRole) -> bool {
        self.0 & role.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether the roles allow `role`'s rights: any role includes the viewer's.
    pub fn allows(self, role: ConsoleRole) -> bool {
        match role {
            ConsoleRole::Viewer => !self.is_empty(),
            other => self.contains(other),
        }
    }

    /// The roles held, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = ConsoleRole> {
        ConsoleRole::ALL
            .into_iter()
            .filter(move |r| self.contains(*r))
    }

    /// The raw bits, for the sealed session cookie.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From [`RoleSet::bits`]; bits of no role are dropped.
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & 0b1111)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_map_to_roles_and_unknown_ones_are_dropped() {
        let set = RoleSet::from_claims(["Console.Operator", "Console.Admin", "Other.Role", ""]);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [ConsoleRole::Operator, ConsoleRole::Admin]
        );
        assert!(RoleSet::from_claims(["console.admin"]).is_empty());
    }

    #[test]
    fn any_role_may_view_but_no_role_grants_another() {
        let admin = RoleSet::default().with(ConsoleRole::Admin);
        assert!(admin.allows(ConsoleRole::Viewer));
        assert!(!admin.allows(ConsoleRole::Operator));
        assert!(!admin.allows(ConsoleRole::Approver));
        let viewer = RoleSet::default().with(ConsoleRole::Viewer);
        assert!(!viewer.allows(ConsoleRole::Admin));
        assert!(!RoleSet::default().allows(ConsoleRole::Viewer));
    }

    #[test]
    fn bits_round_trip() {
        for bits in 0..=255u8 {
            let set = RoleSet::from_bits(bits);
            assert_eq!(RoleSet::from_bits(set.bits()), set);
        }
    }
}
