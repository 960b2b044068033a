//! Notification channels, and the subset a tenant is narrowed to.

use std::fmt;

/// Where a notification can go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Teams,
    Email,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Teams, Channel::Email, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Teams => "teams",
            Self::Email => "email",
            Self::Webhook => "webhook",
        }
    }

    /// # Errors
    /// For anything but `teams`, `email`, `webhook` (case-insensitive).
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "teams" => Ok(Self::Teams),
            "email" => Ok(Self::Email),
            "webhook" => Ok(Self::Webhook),
            other => Err(format!(
                "unknown channel '{other}' (use teams, email or webhook)"
            )),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant's channels; empty means "every channel configured for the app".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelSet(Vec<Channel>);

impl ChannelSet {
    /// Parses `teams,email` (also `;` separated); duplicates collapse.
    ///
    /// # Errors
    /// Names the unknown channel.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::from_names(
            raw.split([',', ';'])
                .map(str::trim)
                .filter(|s| !s.is_empty()),
        )
    }

    /// # Errors
    /// Names the unknown channel.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut v = names
            .into_iter()
            .map(Channel::parse)
            .collect::<Result<Vec<_>, _>>()?;
        v.sort();
        v.dedup();
        Ok(Self(v))
    }

    /// Whether `channel` may be used for this tenant.
    #[must_use]
    pub fn allows(&self, channel: Channel) -> bool {
        self.0.is_empty() || self.0.contains(&channel)
    }

    pub fn channels(&self) -> &[Channel] {
        &self.0
    }

    /// The stored form: `teams,email`.
    #[must_use]
    pub fn to_stored(&self) -> String {
        self.0
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_empty_set_allows_every_channel_and_a_narrowed_one_only_its_own() {
        assert!(ChannelSet::default().allows(Channel::Email));
        let s = ChannelSet::parse("Teams; teams ,webhook").unwrap();
        assert_eq!(s.to_stored(), "teams,webhook");
        assert!(s.allows(Channel::Teams));
        assert!(!s.allows(Channel::Email));
        assert!(ChannelSet::parse("teams,sms").unwrap_err().contains("sms"));
    }
}
