//! The one console cookie, sealed with AES-256-GCM.
//!
//! Cookie `__Host-defops-console`: `HttpOnly; Secure; SameSite=Lax; Path=/`, value
//! `v1.<base64url(nonce ‖ ciphertext ‖ tag)>`. The key is derived with HKDF-SHA256 from the
//! Key Vault secret named by `CONSOLE_SESSION_SECRET` (at least 32 bytes); the cookie name
//! is the AEAD's associated data. Inside, JSON of a [`Sealed`]:
//! - before sign-in, [`Sealed::Pending`]: the OIDC `state`, `nonce`, PKCE verifier and the
//!   page to return to, for 10 minutes;
//! - after, [`Sealed::User`]: upn, object id, name, roles, the CSRF token, for 8 hours at most
//!   (never renewed: a person signs in again after 8 h, and sees role changes then).
//!
//! A cookie that doesn't open (other key, edited, truncated) or has expired is no session.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::RoleSet;

pub const COOKIE_NAME: &str = "__Host-defops-console";
/// How long a signed-in session lasts (DESIGN §9.5: 8 h at most).
pub const SESSION_SECONDS: i64 = 8 * 3600;
/// How long a sign-in may take between the redirect to Entra and the callback.
pub const PENDING_SECONDS: i64 = 600;
/// The shortest session secret accepted.
pub const MIN_SECRET_BYTES: usize = 32;

/// What the cookie carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Sealed {
    /// A sign-in under way.
    #[serde(rename = "p")]
    Pending {
        state: String,
        nonce: String,
        verifier: String,
        /// A path under `/api/console` to return to after sign-in.
        return_to: String,
        exp: i64,
    },
    /// A signed-in person.
    #[serde(rename = "u")]
    User {
        upn: String,
        oid: String,
        name: String,
        roles: u8,
        csrf: String,
        exp: i64,
    },
}

impl Sealed {
    fn expires(&self) -> i64 {
        match self {
            Self::Pending { exp, .. } | Self::User { exp, .. } => *exp,
        }
    }

    /// A new signed-in session for 8 hours from `now`, with a fresh CSRF token.
    pub fn user(
        upn: String,
        oid: String,
        name: String,
        roles: RoleSet,
        now: OffsetDateTime,
    ) -> Self {
        Self::User {
            upn,
            oid,
            name,
            roles: roles.bits(),
            csrf: random_token(),
            exp: now.unix_timestamp() + SESSION_SECONDS,
        }
    }
}

/// A session secret that is too short to key the cookie.
#[derive(Debug, thiserror::Error)]
#[error("the console session secret must be at least {MIN_SECRET_BYTES} bytes (it has {0})")]
pub struct WeakSecret(pub usize);

/// The AEAD key of the cookie.
pub struct SessionKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// Derives the key from the secret's bytes.
    ///
    /// # Errors
    /// [`WeakSecret`] when the secret has fewer than 32 bytes.
    pub fn derive(secret: &[u8]) -> Result<Self, WeakSecret> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret(secret.len()));
        }
        let prk = Salt::new(HKDF_SHA256, b"defender-ops/console/session/v1").extract(secret);
        let okm = prk
            .expand(&[b"aes-256-gcm"], &AES_256_GCM)
            .map_err(|_| WeakSecret(secret.len()))?;
        Ok(Self {
            key: LessSafeKey::new(UnboundKey::from(okm)),
        })
    }

    /// The cookie value for `content`.
    pub fn seal(&self, content: &Sealed) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut buf = serde_json::to_vec(content).unwrap_or_default();
        // Sealing in place only fails for plaintexts beyond GCM's 64 GiB limit.
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(COOKIE_NAME.as_bytes()),
                &mut buf,
            )
            .is_err()
        {
            return String::new();
        }
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        format!("v1.{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// The content of a cookie value, if it was sealed with this key and has not expired.
    pub fn open(&self, value: &str, now: OffsetDateTime) -> Option<Sealed> {
        let raw = URL_SAFE_NO_PAD.decode(value.strip_prefix("v1.")?).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(COOKIE_NAME.as_bytes()), &mut buf)
            .ok()?;
        let content: Sealed = serde_json::from_slice(plain).ok()?;
        (content.expires() > now.unix_timestamp()).then_some(content)
    }
}

/// `Set-Cookie` carrying `value` (`max_age` seconds).
pub fn set_cookie(value: &str, max_age: i64) -> String {
    format!("{COOKIE_NAME}={value}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={max_age}")
}

/// `Set-Cookie` that removes the cookie (sign-out, a cookie that didn't open).
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0")
}

/// The console cookie's value in a request's `Cookie` header(s), if any.
pub fn cookie_value<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.trim())
}

/// 32 random bytes, base64url: state, nonce, PKCE verifier, CSRF token.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn fill_random(buf: &mut [u8]) {
    // The system RNG failing is not recoverable; abort rather than seal with a fixed nonce.
    if SystemRandom::new().fill(buf).is_err() {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SessionKey {
        SessionKey::derive(&[byte; 32]).expect("32 bytes")
    }

    fn user(now: OffsetDateTime) -> Sealed {
        Sealed::user(
            "ada@contoso.test".into(),
            "oid".into(),
            "Ada".into(),
            RoleSet::from_claims(["Console.Admin"]),
            now,
        )
    }

    #[test]
    fn a_sealed_session_opens_with_its_key_until_it_expires() {
        let now = OffsetDateTime::now_utc();
        let k = key(1);
        let sealed = k.seal(&user(now));
        assert_eq!(k.open(&sealed, now), Some(user_with_csrf(&k, &sealed, now)));
        let later = now + time::Duration::seconds(SESSION_SECONDS);
        assert_eq!(k.open(&sealed, later), None, "8 h later it is expired");
    }

    fn user_with_csrf(k: &SessionKey, sealed: &str, now: OffsetDateTime) -> Sealed {
        k.open(sealed, now).expect("opens")
    }

    #[test]
    fn another_key_an_edit_or_garbage_opens_nothing() {
        let now = OffsetDateTime::now_utc();
        let sealed = key(1).seal(&user(now));
        assert_eq!(key(2).open(&sealed, now), None);
        let mut edited = sealed.clone().into_bytes();
        let last = edited.len() - 5;
        edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).expect("ascii");
        assert_eq!(key(1).open(&edited, now), None);
        for junk in ["", "v1.", "v1.AAAA", "v2.xyz", &sealed[..sealed.len() / 2]] {
            assert_eq!(key(1).open(junk, now), None, "{junk}");
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(SessionKey::derive(&[7; 31]).is_err());
        assert!(SessionKey::derive(&[7; 32]).is_ok());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let header = format!("a=1; {COOKIE_NAME}=v1.xyz; b=2");
        assert_eq!(cookie_value([header.as_str()]), Some("v1.xyz"));
        assert_eq!(cookie_value(["a=1", "b=2"]), None);
    }

    #[test]
    fn cookies_are_http_only_secure_and_lax() {
        let c = set_cookie("v", 10);
        for part in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=10"] {
            assert!(c.contains(part), "{c}");
        }
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
