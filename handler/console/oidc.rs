//! OpenID Connect with Entra ID: the authorization code flow with PKCE, the handler being the
//! confidential client of the home app (`HOME_TENANT_ID`, `HOME_CLIENT_ID`).
//!
//! Endpoints under the authority (`AZURE_AUTHORITY_HOST`, dev/sim locally):
//! `{authority}/{tenant}/oauth2/v2.0/authorize` and `/token`, the JWKS at
//! `{authority}/{tenant}/discovery/v2.0/keys`, issuer `{authority}/{tenant}/v2.0`.
//! The client credential is the home app's secret from Key Vault (`HOME_SECRET_NAME`) or,
//! without it, the app's managed-identity token for `api://AzureADTokenExchange` as client
//! assertion (the federated credential, as the `federated` tenants use).
//!
//! Every ID token is checked with `jsonwebtoken`: RS256 signature against the JWKS (cached,
//! fetched again when a token names an unknown `kid`, at most once a minute), issuer, audience
//! (the client id), expiry and not-before (60 s leeway), and the nonce of this sign-in.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::app::AppState;
use crate::clients::identity::TOKEN_EXCHANGE_SCOPE;
use crate::config::HomeApp;
use crate::domain::RoleSet;

/// Why a sign-in did not complete. The text is safe to show (no secret, no token).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Entra refused the code or the client (its `error` and first line of the description).
    #[error("Entra ID refused the sign-in: {0}")]
    Rejected(String),
    /// The ID token failed a check.
    #[error("the ID token is not valid: {0}")]
    InvalidToken(String),
    /// Entra, the JWKS, Key Vault or the managed identity could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

/// The claims of an ID token the console reads.
#[derive(Debug, Clone, Deserialize)]
pub struct IdClaims {
    pub oid: String,
    #[serde(default)]
    pub preferred_username: Option<String>,
    #[serde(default)]
    pub upn: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub nonce: Option<String>,
}

impl IdClaims {
    /// The person's sign-in name (`preferred_username`, else `upn`, else the object id).
    pub fn upn(&self) -> String {
        self.preferred_username
            .clone()
            .or_else(|| self.upn.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.oid.clone())
    }

    pub fn roles(&self) -> RoleSet {
        RoleSet::from_claims(self.roles.iter().map(String::as_str))
    }
}

/// The home app's sign-in endpoints.
#[derive(Debug, Clone)]
pub struct Oidc {
    authority: String,
    tenant: String,
    client_id: String,
}

impl Oidc {
    pub fn new(authority: &Url, home: &HomeApp) -> Self {
        Self {
            authority: authority.as_str().trim_end_matches('/').to_owned(),
            tenant: home.tenant_id.clone(),
            client_id: home.client_id.clone(),
        }
    }

    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.authority, self.tenant)
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}/{}/{path}", self.authority, self.tenant)
    }

    pub fn jwks_uri(&self) -> String {
        self.endpoint("discovery/v2.0/keys")
    }

    /// Where the browser goes to sign in.
    pub fn authorize_url(
        &self,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = self.endpoint("oauth2/v2.0/authorize");
        url.push('?');
        url.push_str(
            &url::form_urlencoded::Serializer::new(String::new())
                .append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("response_mode", "query")
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("scope", "openid profile")
                .append_pair("state", state)
                .append_pair("nonce", nonce)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256")
                .finish(),
        );
        url
    }

    /// Redeems `code` and returns the validated claims of its ID token.
    ///
    /// # Errors
    /// [`SignInError`].
    pub async fn redeem(
        &self,
        state: &AppState,
        home: &HomeApp,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
        nonce: &str,
    ) -> Result<IdClaims, SignInError> {
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("client_id", self.client_id.clone()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", verifier.to_owned()),
            ("scope", "openid profile".into()),
        ];
        form.extend(client_credential(state, home).await?);
        let http = &state.services().http;
        let answer = http
            .post(self.endpoint("oauth2/v2.0/token"))
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                SignInError::Unavailable(format!("Entra ID could not be reached ({e})"))
            })?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.unwrap_or(serde_json::Value::Null);
        if !status.is_success() {
            let error = body["error"].as_str().unwrap_or("error");
            let description = body["error_description"]
                .as_str()
                .and_then(|d| d.lines().next())
                .unwrap_or("no description");
            return Err(if status.is_server_error() {
                SignInError::Unavailable(format!("Entra ID answered {status}"))
            } else {
                SignInError::Rejected(format!("{error}: {description}"))
            });
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| SignInError::Rejected("the token answer has no id_token".into()))?;
        self.validate(state, id_token, nonce).await
    }

    /// Checks signature, issuer, audience, expiry and nonce of an ID token.
    ///
    /// # Errors
    /// [`SignInError::InvalidToken`], or `Unavailable` when the JWKS can't be fetched.
    pub async fn validate(
        &self,
        state: &AppState,
        id_token: &str,
        nonce: &str,
    ) -> Result<IdClaims, SignInError> {
        let invalid = |e: jsonwebtoken::errors::Error| SignInError::InvalidToken(e.to_string());
        let header = jsonwebtoken::decode_header(id_token).map_err(invalid)?;
        if header.alg != Algorithm::RS256 {
            return Err(SignInError::InvalidToken(format!(
                "algorithm {:?} is not RS256",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| SignInError::InvalidToken("the token header has no kid".into()))?;
        let key = state
            .services()
            .console
            .jwks
            .key(state, &self.jwks_uri(), &kid)
            .await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.client_id]);
        validation.set_issuer(&[self.issuer()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 60;
        let data =
            jsonwebtoken::decode::<IdClaims>(id_token, &key, &validation).map_err(invalid)?;
        let same_nonce = data.claims.nonce.as_deref().is_some_and(|n| {
            aws_lc_rs::constant_time::verify_slices_are_equal(n.as_bytes(), nonce.as_bytes())
                .is_ok()
        });
        if !same_nonce {
            return Err(SignInError::InvalidToken(
                "the nonce does not match this sign-in".into(),
            ));
        }
        Ok(data.claims)
    }
}

/// The home app's credential for the token request.
async fn client_credential(
    state: &AppState,
    home: &HomeApp,
) -> Result<Vec<(&'static str, String)>, SignInError> {
    match &home.secret_name {
        Some(name) => {
            let vault = state.vault().ok_or_else(|| {
                SignInError::Unavailable("HOME_SECRET_NAME needs Key Vault (KEY_VAULT_URI)".into())
            })?;
            let secret = vault.get(name).await.map_err(|e| {
                tracing::warn!(error = %e, secret = %name, "home app secret unavailable");
                SignInError::Unavailable(format!(
                    "the home app's secret ({name}) can't be read from Key Vault"
                ))
            })?;
            Ok(vec![(
                "client_secret",
                secret.value.expose_secret().to_owned(),
            )])
        }
        None => {
            let token = state
                .services()
                .identity
                .token(TOKEN_EXCHANGE_SCOPE)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "managed identity token for the home app's federated credential");
                    SignInError::Unavailable("the app's managed identity gave no token for the home app's federated credential".into())
                })?;
            Ok(vec![
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ),
                ("client_assertion", token.token.secret().to_owned()),
            ])
        }
    }
}

/// The signing keys of the identity provider, cached; fetched again for an unknown `kid`
/// (key rollover) but at most once a minute, and after a day in any case.
#[derive(Default)]
pub struct JwksCache {
    inner: Mutex<Option<(String, JwkSet, Instant)>>,
}

const JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);

impl JwksCache {
    fn cached(&self, uri: &str, kid: &str) -> (Option<DecodingKey>, bool) {
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_ref() {
            Some((u, set, at)) if u == uri => {
                let key = (at.elapsed() < JWKS_MAX_AGE)
                    .then(|| {
                        set.find(kid)
                            .and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
                    })
                    .flatten();
                (key, at.elapsed() >= JWKS_MIN_REFRESH)
            }
            _ => (None, true),
        }
    }

    async fn key(
        &self,
        state: &AppState,
        uri: &str,
        kid: &str,
    ) -> Result<DecodingKey, SignInError> {
        let (key, may_refresh) = self.cached(uri, kid);
        if let Some(key) = key {
            return Ok(key);
        }
        if !may_refresh {
            return Err(SignInError::InvalidToken(format!(
                "no signing key with kid {kid}"
            )));
        }
        let answer = state
            .services()
            .http
            .get(uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| {
                SignInError::Unavailable(format!("the signing keys could not be fetched ({e})"))
            })?;
        let set: JwkSet = answer.json().await.map_err(|e| {
            SignInError::Unavailable(format!("the signing keys are not a JWK set ({e})"))
        })?;
        let key = set
            .find(kid)
            .and_then(|jwk| DecodingKey::from_jwk(jwk).ok());
        *self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((uri.to_owned(), set, Instant::now()));
        key.ok_or_else(|| SignInError::InvalidToken(format!("no signing key with kid {kid}")))
    }
}
