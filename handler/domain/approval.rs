//! Approvals (design §9.4): which new requests wait for a second person, who may decide
//! them, and when an unanswered one expires. Pure rules; the store keeps the window.

use std::fmt;

use time::{Duration, OffsetDateTime};

use super::actor::Actor;

/// The highest `above` threshold: the window keeps one timestamp per counted request.
pub const MAX_THRESHOLD: u32 = 1000;

/// How long the `above` mode looks back.
pub const WINDOW: Duration = Duration::hours(24);

/// A tenant's approval mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApprovalPolicy {
    /// No request waits (the default, and what a tenant row without the columns means).
    #[default]
    Never,
    /// Every new request waits.
    Always,
    /// Every request after the first `threshold` of the tenant in the last 24 h waits.
    Above { threshold: u32 },
}

impl ApprovalPolicy {
    /// The mode's name as in the API and the `ApprovalMode` column.
    #[must_use]
    pub fn mode(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Always => "always",
            Self::Above { .. } => "above",
        }
    }

    /// The threshold (0 unless `above`).
    #[must_use]
    pub fn threshold(self) -> u32 {
        match self {
            Self::Above { threshold } => threshold,
            _ => 0,
        }
    }

    /// From a mode and a threshold (required for `above`, 0..=[`MAX_THRESHOLD`]).
    ///
    /// # Errors
    /// Says which part is wrong.
    pub fn parse(mode: &str, threshold: Option<i64>) -> Result<Self, String> {
        match (mode, threshold) {
            ("never", _) => Ok(Self::Never),
            ("always", _) => Ok(Self::Always),
            ("above", Some(n)) if (0..=i64::from(MAX_THRESHOLD)).contains(&n) => Ok(Self::Above {
                threshold: u32::try_from(n).unwrap_or(MAX_THRESHOLD),
            }),
            ("above", Some(_)) => Err(format!(
                "approval.threshold must be a whole number from 0 to {MAX_THRESHOLD}"
            )),
            ("above", None) => Err("approval.threshold is required with mode 'above'".into()),
            (other, _) => Err(format!(
                "approval.mode must be 'never', 'always' or 'above', not '{other}'"
            )),
        }
    }
}

impl fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Above { threshold } => write!(f, "above {threshold}"),
            other => f.write_str(other.mode()),
        }
    }
}

/// What a new request becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `Accepted`: queue its job.
    Proceed,
    /// `AwaitingApproval`: no job until an approver approves it.
    AwaitApproval,
}

/// The creation times of a tenant's most recent requests, newest last, at most
/// [`MAX_THRESHOLD`] of them: enough to tell whether N requests were created in the last
/// 24 h for any threshold N.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentRequests {
    /// Unix seconds.
    times: Vec<i64>,
}

impl RecentRequests {
    /// From the stored text (unix seconds separated by spaces); unreadable parts are dropped.
    #[must_use]
    pub fn from_stored(text: &str) -> Self {
        let mut times: Vec<i64> = text
            .split_ascii_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        times.sort_unstable();
        Self { times }
    }

    /// The stored text.
    #[must_use]
    pub fn to_stored(&self) -> String {
        self.times
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// How many requests were created in the 24 h before `now`.
    #[must_use]
    pub fn in_window(&self, now: OffsetDateTime) -> usize {
        let since = (now - WINDOW).unix_timestamp();
        self.times.iter().filter(|t| **t > since).count()
    }

    /// Decides a new request created at `now` under `policy`, and counts it (whether it
    /// waits or not: every request counts toward the next ones). Times older than the window
    /// are forgotten.
    pub fn admit(&mut self, policy: ApprovalPolicy, now: OffsetDateTime) -> Gate {
        let gate = match policy {
            ApprovalPolicy::Never => Gate::Proceed,
            ApprovalPolicy::Always => Gate::AwaitApproval,
            ApprovalPolicy::Above { threshold } => {
                if self.in_window(now) >= threshold as usize {
                    Gate::AwaitApproval
                } else {
                    Gate::Proceed
                }
            }
        };
        let since = (now - WINDOW).unix_timestamp();
        self.times.retain(|t| *t > since);
        self.times.push(now.unix_timestamp());
        self.times.sort_unstable();
        if self.times.len() > MAX_THRESHOLD as usize {
            let excess = self.times.len() - MAX_THRESHOLD as usize;
            self.times.drain(..excess);
        }
        gate
    }
}

/// Why a person may not decide a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefused {
    #[error("nobody approves or denies their own request; another approver must decide it")]
    OwnRequest,
    #[error("only a person signed in to the console decides requests")]
    NotAPerson,
}

/// Whether `decider` may approve or deny a request made by `requester`: a signed-in person
/// other than the requester (the same Entra object id, or the same UPN, is the same person).
///
/// # Errors
/// [`DecisionRefused`].
pub fn may_decide(requester: &Actor, decider: &Actor) -> Result<(), DecisionRefused> {
    let Actor::User {
        upn: d_upn,
        object_id: d_oid,
    } = decider
    else {
        return Err(DecisionRefused::NotAPerson);
    };
    if let Actor::User {
        upn: r_upn,
        object_id: r_oid,
    } = requester
    {
        let same_oid = !d_oid.is_empty() && d_oid.eq_ignore_ascii_case(r_oid);
        if same_oid || d_upn.eq_ignore_ascii_case(r_upn) {
            return Err(DecisionRefused::OwnRequest);
        }
    }
    Ok(())
}

/// Whether a request waiting since `since` is past its time to live at `now`.
#[must_use]
pub fn is_expired(since: OffsetDateTime, ttl: Duration, now: OffsetDateTime) -> bool {
    now - since >= ttl
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use time::macros::datetime;

    fn user(upn: &str, oid: &str) -> Actor {
        Actor::User {
            upn: upn.into(),
            object_id: oid.into(),
        }
    }

    #[test]
    fn modes_parse_with_their_threshold_and_bad_ones_say_why() {
        assert_eq!(
            ApprovalPolicy::parse("never", None),
            Ok(ApprovalPolicy::Never)
        );
        assert_eq!(
            ApprovalPolicy::parse("always", None),
            Ok(ApprovalPolicy::Always)
        );
        assert_eq!(
            ApprovalPolicy::parse("above", Some(2)),
            Ok(ApprovalPolicy::Above { threshold: 2 })
        );
        assert!(
            ApprovalPolicy::parse("above", None)
                .unwrap_err()
                .contains("required")
        );
        assert!(ApprovalPolicy::parse("above", Some(-1)).is_err());
        assert!(ApprovalPolicy::parse("above", Some(1001)).is_err());
        assert!(
            ApprovalPolicy::parse("sometimes", None)
                .unwrap_err()
                .contains("'sometimes'")
        );
        assert_eq!(ApprovalPolicy::default(), ApprovalPolicy::Never);
    }

    #[test]
    fn above_two_lets_two_through_in_a_day_and_holds_the_third() {
        let t0 = datetime!(2026-12-08 06:00 UTC);
        let mut w = RecentRequests::default();
        let p = ApprovalPolicy::Above { threshold: 2 };
        assert_eq!(w.admit(p, t0), Gate::Proceed);
        assert_eq!(w.admit(p, t0 + Duration::hours(1)), Gate::Proceed);
        assert_eq!(w.admit(p, t0 + Duration::hours(2)), Gate::AwaitApproval);
        // The waiting one counted too: a day after the first, two are still in the window.
        assert_eq!(w.admit(p, t0 + Duration::hours(24)), Gate::AwaitApproval);
        // Once the first three slid out, requests pass again.
        assert_eq!(w.admit(p, t0 + Duration::hours(50)), Gate::Proceed);
    }

    #[test]
    fn always_holds_every_request_and_never_none() {
        let t0 = datetime!(2026-12-08 06:00 UTC);
        let mut w = RecentRequests::default();
        assert_eq!(w.admit(ApprovalPolicy::Always, t0), Gate::AwaitApproval);
        assert_eq!(w.admit(ApprovalPolicy::Never, t0), Gate::Proceed);
        assert_eq!(w.in_window(t0 + Duration::seconds(1)), 2);
        assert_eq!(
            w.admit(ApprovalPolicy::Above { threshold: 0 }, t0),
            Gate::AwaitApproval
        );
    }

    #[test]
    fn the_window_round_trips_through_its_column_and_stays_bounded() {
        let t0 = datetime!(2026-12-08 06:00 UTC);
        let mut w = RecentRequests::default();
        for i in 0..1100 {
            w.admit(ApprovalPolicy::Never, t0 + Duration::seconds(i));
        }
        let back = RecentRequests::from_stored(&w.to_stored());
        assert_eq!(back, w);
        assert_eq!(
            back.in_window(t0 + Duration::hours(1)),
            MAX_THRESHOLD as usize
        );
        assert_eq!(RecentRequests::from_stored("x 5 y").times, vec![5]);
    }

    #[test]
    fn nobody_decides_their_own_request() {
        let ada = user("ada@contoso.com", "oid-ada");
        assert_eq!(may_decide(&ada, &ada), Err(DecisionRefused::OwnRequest));
        // Same person, other spelling of the UPN, or the same object id under a renamed UPN.
        assert_eq!(
            may_decide(&ada, &user("ADA@contoso.com", "oid-other")),
            Err(DecisionRefused::OwnRequest)
        );
        assert_eq!(
            may_decide(&ada, &user("ada.l@contoso.com", "OID-ADA")),
            Err(DecisionRefused::OwnRequest)
        );
        assert_eq!(
            may_decide(&ada, &user("bob@contoso.com", "oid-bob")),
            Ok(())
        );
        let itsm = Actor::Caller(crate::domain::CallerId::parse("itsm").unwrap());
        assert_eq!(may_decide(&itsm, &ada), Ok(()));
        assert_eq!(may_decide(&ada, &itsm), Err(DecisionRefused::NotAPerson));
        assert_eq!(
            may_decide(&ada, &Actor::AdminKey),
            Err(DecisionRefused::NotAPerson)
        );
    }

    #[test]
    fn a_request_expires_at_its_time_to_live() {
        let t0 = datetime!(2026-12-08 06:00 UTC);
        let ttl = Duration::hours(72);
        assert!(!is_expired(t0, ttl, t0 + Duration::hours(71)));
        assert!(is_expired(t0, ttl, t0 + Duration::hours(72)));
    }
}
