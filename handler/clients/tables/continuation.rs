//! Where a query resumes (`NextPartitionKey`/`NextRowKey`), and its opaque URL-safe token.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::TableError;

/// Header names of the service's continuation.
pub(crate) const NEXT_PK_HEADER: &str = "x-ms-continuation-NextPartitionKey";
pub(crate) const NEXT_RK_HEADER: &str = "x-ms-continuation-NextRowKey";

/// Tokens longer than this are not ours (the service's keys are short encoded markers).
const MAX_TOKEN_LEN: usize = 4096;

/// The point where the next page of a query starts.
///
/// `Display` gives an opaque URL-safe token (base64url of both markers) for an HTTP API's
/// `continuationToken`; `FromStr` / [`Continuation::from_token`] parse it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    pub(crate) next_partition_key: String,
    pub(crate) next_row_key: Option<String>,
}

impl Continuation {
    pub(crate) fn from_headers(headers: &reqwest::header::HeaderMap) -> Option<Self> {
        let get = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Some(Self {
            next_partition_key: get(NEXT_PK_HEADER)?,
            next_row_key: get(NEXT_RK_HEADER),
        })
    }

    /// The opaque token; the same as `to_string()`.
    #[must_use]
    pub fn to_token(&self) -> String {
        self.to_string()
    }

    /// Parses a token made by [`Continuation::to_token`].
    ///
    /// # Errors
    /// [`TableError::InvalidContinuation`] for anything else.
    pub fn from_token(token: &str) -> Result<Self, TableError> {
        token.parse()
    }
}

impl fmt::Display for Continuation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(&self.next_partition_key))?;
        if let Some(rk) = &self.next_row_key {
            write!(f, ".{}", URL_SAFE_NO_PAD.encode(rk))?;
        }
        Ok(())
    }
}

impl FromStr for Continuation {
    type Err = TableError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TableError::InvalidContinuation);
        }
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                // The markers go back out as header-safe query values.
                .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
                .ok_or(TableError::InvalidContinuation)
        };
        let (pk, rk) = match token.split_once('.') {
            Some((pk, rk)) => (pk, Some(rk)),
            None => (token, None),
        };
        Ok(Self {
            next_partition_key: decode(pk)?,
            next_row_key: rk.map(decode).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn garbage_tokens_are_refused() {
        for bad in [
            "",
            ".",
            "!!!",
            "YQ.",
            "YQ.!!",
            "YQ.YQ.YQ",
            "_w",
            &"A".repeat(5000),
        ] {
            assert!(
                matches!(
                    Continuation::from_token(bad),
                    Err(TableError::InvalidContinuation)
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_token_without_row_key_round_trips() {
        let c = Continuation {
            next_partition_key: "1!8!cGsx".into(),
            next_row_key: None,
        };
        assert_eq!(Continuation::from_token(&c.to_token()).expect("parses"), c);
    }

    proptest! {
        #[test]
        fn tokens_round_trip_and_are_url_safe(pk in "[^\\p{Cc}]{1,200}", rk in proptest::option::of("[^\\p{Cc}]{1,200}")) {
            let c = Continuation { next_partition_key: pk, next_row_key: rk };
            let token = c.to_token();
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'));
            prop_assert_eq!(Continuation::from_token(&token).expect("parses"), c);
        }
    }
}
