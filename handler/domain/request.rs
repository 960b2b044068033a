//! Offboard requests: where they come from, the states they move through, and which moves
//! are allowed. `Accepted → Submitted → InProgress → Succeeded | Failed | TimeOut |
//! Cancelled`, or `Rejected` (Defender's 400, message kept verbatim), or `DryRun`. With
//! approvals (design §9.4) a request may start in `AwaitingApproval` and move to `Accepted`,
//! `Denied` or `Expired`; an operator cancels one not yet submitted (`Accepted` without a
//! worker's mark, or `AwaitingApproval`) to `Cancelled`.

use std::fmt;

/// Who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A signed call of `POST /api/offboard` (ITSM, HR leaver flows).
    Webhook,
    /// The `Offboard` flag on a stored device.
    Flag,
    /// An unsigned call of `POST /api/offboard` with the function key.
    Api,
    /// A person in the operator console.
    Console,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Flag => "flag",
            Self::Api => "api",
            Self::Console => "console",
        }
    }

    /// # Errors
    /// For an unknown spelling.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "webhook" => Ok(Self::Webhook),
            "flag" => Ok(Self::Flag),
            "api" => Ok(Self::Api),
            "console" => Ok(Self::Console),
            other => Err(format!("unknown source '{other}'")),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestStatus {
    /// Waits for an approver (no job, no Defender call).
    AwaitingApproval,
    Accepted,
    Submitted,
    InProgress,
    Succeeded,
    Failed,
    TimeOut,
    Cancelled,
    Rejected,
    DryRun,
    /// An approver said no. Final.
    Denied,
    /// Nobody answered within `APPROVAL_TTL_HOURS`. Final.
    Expired,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 12] = [
        Self::AwaitingApproval,
        Self::Accepted,
        Self::Submitted,
        Self::InProgress,
        Self::Succeeded,
        Self::Failed,
        Self::TimeOut,
        Self::Cancelled,
        Self::Rejected,
        Self::DryRun,
        Self::Denied,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Accepted => "Accepted",
            Self::Submitted => "Submitted",
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::TimeOut => "TimeOut",
            Self::Cancelled => "Cancelled",
            Self::Rejected => "Rejected",
            Self::DryRun => "DryRun",
            Self::Denied => "Denied",
            Self::Expired => "Expired",
        }
    }

    /// # Errors
    /// For an unknown spelling.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| format!("unknown request status '{raw}'"))
    }

    /// No further move is possible.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded
                | Self::Failed
                | Self::TimeOut
                | Self::Cancelled
                | Self::Rejected
                | Self::DryRun
                | Self::Denied
                | Self::Expired
        )
    }

    /// A Defender machine action exists and is being followed.
    #[must_use]
    pub fn is_tracked(self) -> bool {
        matches!(self, Self::Submitted | Self::InProgress)
    }

    /// Whether `self → next` is a legal move. Staying put is not a move.
    #[must_use]
    pub fn can_move_to(self, next: RequestStatus) -> bool {
        use RequestStatus::*;
        match (self, next) {
            // An approver decides, the expiry timer expires, an operator cancels.
            (AwaitingApproval, Accepted | Denied | Expired | Cancelled) => true,
            (Accepted, Submitted | InProgress | Rejected | Failed) => true,
            // A machine action can finish between two polls, or be found already finished.
            (Accepted | Submitted | InProgress, Succeeded | Failed | TimeOut | Cancelled) => true,
            (Submitted, InProgress) => true,
            _ => false,
        }
    }

    /// Whether an operator may still cancel a request in this state: nothing was sent to
    /// Defender yet (the worker's mark is checked beside this, on the row).
    #[must_use]
    pub fn is_cancellable(self) -> bool {
        matches!(self, Self::AwaitingApproval | Self::Accepted)
    }

    /// The state of a Defender machine action status (`Pending`, `InProgress`, ...).
    #[must_use]
    pub fn from_action_status(status: &str) -> Option<RequestStatus> {
        match status {
            "Pending" => Some(Self::Submitted),
            "InProgress" => Some(Self::InProgress),
            "Succeeded" => Some(Self::Succeeded),
            "Failed" => Some(Self::Failed),
            "TimeOut" => Some(Self::TimeOut),
            "Cancelled" | "Canceled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

impl fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The comment Defender requires on an offboard call when the caller gave none (the seed
/// flow's text, so existing reports keep matching).
pub const DEFAULT_COMMENT: &str = "Offboard machine by automation";

/// An idempotency key: what a caller sends so a retry can't create a second request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// 1-200 characters of letters, digits and `._:@+=-` (it becomes a table key).
    ///
    /// # Errors
    /// Says what is allowed.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 200
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:@+=-".contains(c));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err("idempotencyKey must be 1-200 characters of letters, digits and ._:@+=-".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an idempotency key is bound to (design §9.3): the device as the caller named it
/// (`machineId:…`, `deviceName:…` lower-cased, `aadDeviceId:…`) and `dryRun`. The tenant is
/// bound by where the key is stored (`IdempotencyKeys` is partitioned by tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBinding {
    pub selector: String,
    pub dry_run: bool,
}

impl KeyBinding {
    /// Whether a repeat of the key is the same request. A key stored before bindings were
    /// recorded (`stored` has no selector) is judged by `dryRun` alone.
    #[must_use]
    pub fn same_request(&self, stored_selector: Option<&str>, stored_dry_run: bool) -> bool {
        self.dry_run == stored_dry_run && stored_selector.is_none_or(|s| s == self.selector)
    }
}

#[cfg(test)]
mod key_binding_tests {
    use super::KeyBinding;

    #[test]
    fn a_key_repeats_only_the_same_device_and_dry_run() {
        let b = KeyBinding {
            selector: "machineId:01".into(),
            dry_run: false,
        };
        assert!(b.same_request(Some("machineId:01"), false));
        assert!(!b.same_request(Some("machineId:02"), false));
        assert!(!b.same_request(Some("machineId:01"), true));
        assert!(!b.same_request(Some("deviceName:pc-01"), false));
        assert!(b.same_request(None, false));
        assert!(!b.same_request(None, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn final_states_admit_no_move() {
        for from in RequestStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for to in RequestStatus::ALL {
                assert!(!from.can_move_to(to), "{from} → {to}");
            }
        }
    }

    #[test]
    fn the_happy_path_and_the_refusals_are_legal() {
        use RequestStatus::*;
        for (a, b) in [
            (Accepted, Submitted),
            (Submitted, InProgress),
            (InProgress, Succeeded),
            (Accepted, Rejected),
            (Submitted, TimeOut),
            (Accepted, Succeeded),
        ] {
            assert!(a.can_move_to(b), "{a} → {b}");
        }
        assert!(!InProgress.can_move_to(Submitted), "no going back");
        assert!(!Submitted.can_move_to(Rejected));
    }

    #[test]
    fn a_waiting_request_is_approved_denied_expired_or_cancelled_and_nothing_else() {
        use RequestStatus::*;
        let allowed = [Accepted, Denied, Expired, Cancelled];
        for to in RequestStatus::ALL {
            assert_eq!(
                AwaitingApproval.can_move_to(to),
                allowed.contains(&to),
                "AwaitingApproval → {to}"
            );
        }
        for from in RequestStatus::ALL {
            for to in [Denied, Expired, AwaitingApproval] {
                if from != AwaitingApproval {
                    assert!(!from.can_move_to(to), "{from} → {to}");
                }
            }
        }
        assert!(Denied.is_final() && Expired.is_final());
        assert!(!AwaitingApproval.is_final() && !AwaitingApproval.is_tracked());
        assert!(AwaitingApproval.is_cancellable() && Accepted.is_cancellable());
        assert!(!Submitted.is_cancellable() && !InProgress.is_cancellable());
    }

    #[test]
    fn defender_action_statuses_map_to_request_states() {
        assert_eq!(
            RequestStatus::from_action_status("Pending"),
            Some(RequestStatus::Submitted)
        );
        assert_eq!(
            RequestStatus::from_action_status("TimeOut"),
            Some(RequestStatus::TimeOut)
        );
        assert_eq!(RequestStatus::from_action_status("Weird"), None);
    }

    proptest! {
        #[test]
        fn statuses_round_trip_and_unknown_text_is_refused(raw in "[A-Za-z]{0,12}") {
            match RequestStatus::parse(&raw) {
                Ok(s) => prop_assert_eq!(s.as_str(), raw.as_str()),
                Err(e) => prop_assert!(e.contains("unknown")),
            }
        }

        #[test]
        fn accepted_idempotency_keys_are_safe_table_keys(raw in ".{0,220}") {
            if let Ok(k) = IdempotencyKey::parse(&raw) {
                prop_assert!(!k.as_str().contains(['/', '\\', '#', '?', '\'']));
                prop_assert!(k.as_str().len() <= 200);
            }
        }
    }
}
