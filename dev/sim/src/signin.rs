//! Entra ID's sign-in for people (OpenID Connect, authorization code flow with PKCE):
//! `GET /{tenant}/oauth2/v2.0/authorize` (a page to pick a test user instead of a password),
//! `POST` of that page (→ `302 redirect_uri?code&state`), the token endpoint's
//! `authorization_code` grant (in `token`), the JWKS at `/{tenant}/discovery/v2.0/keys` and
//! the OpenID configuration at `/{tenant}/v2.0/.well-known/openid-configuration`.
//!
//! As Entra: the client must be an app of the tenant and `redirect_uri` one of its registered
//! redirect URIs ([`crate::Sim::add_redirect_uri`]), otherwise an error page and no redirect;
//! codes are one-time and expire after 10 minutes; the token request must repeat
//! `redirect_uri`, carry the PKCE `code_verifier` (S256 of the challenge) and authenticate the
//! client (secret or assertion). The ID token is RS256, signed with a key generated when first
//! needed (`kid` in the header), `iss` `{base}/{tenant}/v2.0`, `aud` the client id, `nonce`,
//! `iat`/`nbf`/`exp`, `oid`, `sub`, `tid`, `preferred_username`, `name` and `roles` (app roles
//! `Console.*`, left out when the user has none).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::Shared;
use crate::server::json_response;
use crate::token::{authenticate_client, entra_error, missing_param};

/// A person who can sign in to the console locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestUser {
    /// Short name, the value of the page's button (`viewer`, `operator`...).
    pub key: &'static str,
    pub upn: &'static str,
    pub oid: &'static str,
    pub name: &'static str,
    /// App roles of the home app (`Console.Viewer`...).
    pub roles: &'static [&'static str],
}

/// The test users, the same in every tenant.
pub const TEST_USERS: &[TestUser] = &[
    TestUser {
        key: "viewer",
        upn: "vera.viewer@ops.test",
        oid: "00000000-0000-4000-8000-00000000c001",
        name: "Vera Viewer",
        roles: &["Console.Viewer"],
    },
    TestUser {
        key: "operator",
        upn: "otto.operator@ops.test",
        oid: "00000000-0000-4000-8000-00000000c002",
        name: "Otto Operator",
        roles: &["Console.Operator"],
    },
    TestUser {
        key: "approver",
        upn: "anna.approver@ops.test",
        oid: "00000000-0000-4000-8000-00000000c003",
        name: "Anna Approver",
        roles: &["Console.Approver"],
    },
    TestUser {
        key: "admin",
        upn: "adam.admin@ops.test",
        oid: "00000000-0000-4000-8000-00000000c004",
        name: "Adam Admin <script>",
        roles: &["Console.Admin"],
    },
    TestUser {
        key: "norole",
        upn: "nora.norole@ops.test",
        oid: "00000000-0000-4000-8000-00000000c005",
        name: "Nora Norole",
        roles: &[],
    },
];

/// The test user with this key.
#[must_use]
pub fn test_user(key: &str) -> Option<&'static TestUser> {
    TEST_USERS.iter().find(|u| u.key == key)
}

const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// An issued authorization code, redeemable once.
#[derive(Debug, Clone)]
pub(crate) struct AuthCode {
    tenant: String,
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    user: &'static TestUser,
    issued: Instant,
}

/// The RSA key that signs ID tokens.
pub(crate) struct SigningKey {
    pair: KeyPair,
    kid: String,
}

impl SigningKey {
    fn generate() -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let n = pair.public_key().modulus();
        let kid =
            URL_SAFE_NO_PAD.encode(&Sha256::digest(n.big_endian_without_leading_zero())[..12]);
        Self { pair, kid }
    }

    fn jwk(&self) -> serde_json::Value {
        let pk = self.pair.public_key();
        serde_json::json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(pk.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(pk.exponent().big_endian_without_leading_zero()),
        })
    }

    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

pub(crate) fn signing_key(cell: &OnceLock<SigningKey>) -> &SigningKey {
    cell.get_or_init(SigningKey::generate)
}

/// The sign-in state of the simulated Entra ID (inside the sim's state mutex).
#[derive(Default)]
pub(crate) struct SignInState {
    /// (tenant, lower-case client id) → registered redirect URIs.
    pub redirect_uris: HashMap<(String, String), Vec<String>>,
    codes: HashMap<String, AuthCode>,
}

fn query_map(raw: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

fn error_page(status: StatusCode, code: u32, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in</title></head><body><h1>Sorry, but we're having trouble signing you in.</h1><p>AADSTS{code}: {}</p></body></html>",
        escape(text)
    );
    (status, Html(body)).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The parameters of an authorize request, checked as Entra does; `Err` is the answer.
struct Authorize {
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: String,
    params: HashMap<String, String>,
}

fn check_authorize(
    sh: &Shared,
    tenant: &str,
    q: HashMap<String, String>,
) -> Result<Authorize, Response> {
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let st = sh.lock();
    if !st.tenants.contains_key(tenant) {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            90002,
            &format!("Tenant '{tenant}' not found."),
        ));
    }
    let Some(client_id) = get("client_id") else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            900_144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    };
    if st.app(tenant, client_id).is_none() {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        ));
    }
    let redirect_uri = get("redirect_uri").unwrap_or_default();
    let registered = st
        .signin
        .redirect_uris
        .get(&(tenant.to_owned(), client_id.to_ascii_lowercase()))
        .is_some_and(|uris| uris.iter().any(|u| u == redirect_uri));
    if !registered {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            50011,
            &format!(
                "The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'."
            ),
        ));
    }
    drop(st);
    let fail = |error: &str, text: &str| -> Response {
        let mut url = url::Url::parse(redirect_uri)
            .unwrap_or_else(|_| url::Url::parse("https://invalid.invalid").expect("literal"));
        url.query_pairs_mut()
            .append_pair("error", error)
            .append_pair("error_description", text);
        if let Some(s) = get("state") {
            url.query_pairs_mut().append_pair("state", s);
        }
        redirect(url.as_str())
    };
    if get("response_type") != Some("code") {
        return Err(fail(
            "unsupported_response_type",
            "AADSTS700054: response_type 'code' is required here.",
        ));
    }
    if !get("scope").is_some_and(|s| s.split(' ').any(|p| p == "openid")) {
        return Err(fail(
            "invalid_request",
            "AADSTS900144: scope must include openid.",
        ));
    }
    let Some(code_challenge) = get("code_challenge") else {
        return Err(fail(
            "invalid_request",
            "AADSTS9002325: Proof Key for Code Exchange is required for cross-origin authorization code redemption.",
        ));
    };
    if get("code_challenge_method") != Some("S256") {
        return Err(fail(
            "invalid_request",
            "AADSTS501491: code_challenge_method must be S256.",
        ));
    }
    Ok(Authorize {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        state: get("state").map(str::to_owned),
        nonce: get("nonce").map(str::to_owned),
        code_challenge: code_challenge.to_owned(),
        params: q.clone(),
    })
}

fn redirect(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

/// `GET /{tenant}/oauth2/v2.0/authorize`: the page to pick a test user.
pub(crate) async fn authorize_page(
    State(sh): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let a = match check_authorize(&sh, &tenant, query_map(&query.unwrap_or_default())) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let hidden: String = a
        .params
        .iter()
        .filter(|(k, _)| k.as_str() != "user")
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let buttons: String = TEST_USERS
        .iter()
        .map(|u| {
            let roles = if u.roles.is_empty() { "no role".to_owned() } else { u.roles.join(", ") };
            format!(
                "<li><button type=\"submit\" name=\"user\" value=\"{}\">{} &lt;{}&gt; ({})</button></li>",
                u.key,
                escape(u.name),
                escape(u.upn),
                escape(&roles)
            )
        })
        .collect();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in to your account</title></head><body><h1>Pick an account</h1><p>dev-sim plays Entra ID: choose a test user for {}.</p><form method=\"post\" action=\"/{}/oauth2/v2.0/authorize\">{hidden}<ul>{buttons}</ul></form></body></html>",
        escape(&a.client_id),
        escape(&tenant),
    );
    Html(body).into_response()
}

/// `POST /{tenant}/oauth2/v2.0/authorize` (the page's form): issues a code for the chosen
/// user and redirects back.
pub(crate) async fn authorize_choose(
    State(sh): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form = query_map(&String::from_utf8_lossy(&body));
    let user = form.get("user").and_then(|k| test_user(k));
    let a = match check_authorize(&sh, &tenant, form) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Some(user) = user else {
        return error_page(
            StatusCode::BAD_REQUEST,
            50034,
            "The user account does not exist in this directory.",
        );
    };
    let code = format!(
        "sim-code-{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    sh.lock().signin.codes.insert(
        code.clone(),
        AuthCode {
            tenant: tenant.clone(),
            client_id: a.client_id.to_ascii_lowercase(),
            redirect_uri: a.redirect_uri.clone(),
            code_challenge: a.code_challenge,
            nonce: a.nonce,
            user,
            issued: Instant::now(),
        },
    );
    let mut url = match url::Url::parse(&a.redirect_uri) {
        Ok(u) => u,
        Err(_) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                50011,
                "The redirect URI is not a URL.",
            );
        }
    };
    url.query_pairs_mut().append_pair("code", &code);
    if let Some(s) = &a.state {
        url.query_pairs_mut().append_pair("state", s);
    }
    redirect(url.as_str())
}

fn invalid_grant(code: u32, text: &str) -> Response {
    entra_error(StatusCode::BAD_REQUEST, "invalid_grant", code, text)
}

/// The token endpoint's `authorization_code` grant.
pub(crate) fn redeem(sh: &Shared, tenant: &str, form: &HashMap<String, String>) -> Response {
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id") else {
        return missing_param("client_id");
    };
    let Some(code) = get("code") else {
        return missing_param("code");
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return missing_param("redirect_uri");
    };
    let mut st = sh.lock();
    let Some(app) = st.app(tenant, client_id).cloned() else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    };
    if let Err(refusal) = authenticate_client(&app, form) {
        return refusal;
    }
    // One-time: the code is gone once presented, whatever happens next.
    let Some(issued) = st.signin.codes.remove(code) else {
        return invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        );
    };
    drop(st);
    if issued.issued.elapsed() > CODE_LIFETIME {
        return invalid_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
        );
    }
    if issued.tenant != tenant || issued.client_id != client_id.to_ascii_lowercase() {
        return invalid_grant(
            70000,
            "The provided value for the 'code' parameter is not valid. The code was issued to another client or tenant.",
        );
    }
    if issued.redirect_uri != redirect_uri {
        return invalid_grant(
            50148,
            "The redirect URI specified in the request does not match the redirect URI used in the authorization request.",
        );
    }
    let Some(verifier) = get("code_verifier") else {
        return invalid_grant(
            50148,
            "The code_verifier does not match the code_challenge supplied in the authorization request for PKCE.",
        );
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if challenge != issued.code_challenge {
        return invalid_grant(
            501_481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        );
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let user = issued.user;
    let mut claims = serde_json::json!({
        "aud": app.client_id,
        "iss": format!("{}/{tenant}/v2.0", sh.base_str()),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "name": user.name,
        "oid": user.oid,
        "preferred_username": user.upn,
        "sub": URL_SAFE_NO_PAD.encode(&Sha256::digest(format!("{}{}", user.oid, app.client_id))[..16]),
        "tid": tenant,
        "ver": "2.0",
    });
    if let Some(nonce) = &issued.nonce {
        claims["nonce"] = nonce.clone().into();
    }
    if !user.roles.is_empty() {
        claims["roles"] = user.roles.to_vec().into();
    }
    let id_token = signing_key(&sh.signing).sign(&claims);
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "token_type": "Bearer",
            "scope": "openid profile",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": crate::token::issue(&crate::token::Claims {
                aud: "00000003-0000-0000-c000-000000000000".into(),
                iss: format!("https://sts.windows.net/{tenant}/"),
                iat: now,
                nbf: now,
                exp: now + 3599,
                app_displayname: app.display_name.clone(),
                appid: app.client_id.clone(),
                idtyp: "user".into(),
                oid: user.oid.into(),
                roles: Vec::new(),
                sub: user.oid.into(),
                tid: tenant.into(),
                ver: "1.0".into(),
            }),
            "id_token": id_token,
        }),
    )
}

/// `GET /{tenant}/discovery/v2.0/keys`
pub(crate) async fn jwks(State(sh): State<Arc<Shared>>, Path(_tenant): Path<String>) -> Response {
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "keys": [signing_key(&sh.signing).jwk()] }),
    )
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`
pub(crate) async fn openid_configuration(
    State(sh): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Response {
    let base = sh.base_str();
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "issuer": format!("{base}/{tenant}/v2.0"),
            "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "name", "oid", "preferred_username", "roles", "tid", "ver"],
        }),
    )
}
