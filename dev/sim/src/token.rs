//! Fake JWTs (base64url JSON, HMAC "signature" with a per-process key), the Entra v2 token
//! endpoint (client secret and client assertion) and the App Service managed-identity endpoint.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;

use crate::server::json_response;
use crate::state::TokenRequestKey;
use crate::{Shared, audiences};

/// The claims of a simulated access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub app_displayname: String,
    pub appid: String,
    pub idtyp: String,
    pub oid: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub sub: String,
    pub tid: String,
    pub ver: String,
}

impl Claims {
    pub fn has_any_role(&self, wanted: &[&str]) -> bool {
        self.roles.iter().any(|r| wanted.contains(&r.as_str()))
    }
}

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

fn sign(data: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key()).expect("HMAC takes keys of any length");
    mac.update(data.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

pub(crate) fn issue(claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"dev-sim"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signed = format!("{header}.{payload}");
    let sig = sign(&signed);
    format!("{signed}.{sig}")
}

/// Decodes a token this process issued; `None` if malformed, forged or expired (real time).
pub(crate) fn verify(token: &str) -> Option<Claims> {
    let (signed, sig) = token.rsplit_once('.')?;
    if sign(signed) != sig {
        return None;
    }
    let (_, payload) = signed.split_once('.')?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.exp > OffsetDateTime::now_utc().unix_timestamp()).then_some(claims)
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn entra_timestamp(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    t.format(&fmt).unwrap_or_default()
}

/// An Entra error body (`token.error.json` shape, `\r\n` in `error_description`).
pub(crate) fn entra_error(status: StatusCode, error: &str, code: u32, text: &str) -> Response {
    let now = OffsetDateTime::now_utc();
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let stamp = entra_timestamp(now);
    let body = serde_json::json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {stamp}"
        ),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    json_response(status, &body)
}

/// The audience a `.default` resource maps to, or `None` if Entra doesn't know it.
fn audience_for(resource: &str) -> Option<&'static str> {
    let r = resource.trim_end_matches('/');
    [
        audiences::MDE,
        audiences::XDR,
        audiences::GRAPH,
        audiences::VAULT,
        audiences::STORAGE,
    ]
    .into_iter()
    .find(|a| a.eq_ignore_ascii_case(r))
    .or_else(|| {
        r.eq_ignore_ascii_case("https://securitycenter.onmicrosoft.com/windowsatpservice")
            .then_some(audiences::MDE)
    })
}

fn roles_for<'a>(aud: &str, mde: &'a [String], graph: &'a [String]) -> Vec<String> {
    if aud == audiences::MDE {
        mde.to_vec()
    } else if aud == audiences::GRAPH {
        graph.to_vec()
    } else {
        Vec::new()
    }
}

fn claims(
    aud: &str,
    tenant: &str,
    appid: &str,
    oid: &str,
    name: &str,
    roles: Vec<String>,
    lifetime: u64,
) -> Claims {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Claims {
        aud: aud.to_owned(),
        iss: format!("https://sts.windows.net/{tenant}/"),
        iat: now,
        nbf: now,
        exp: now + i64::try_from(lifetime).unwrap_or(3599),
        app_displayname: name.to_owned(),
        appid: appid.to_owned(),
        idtyp: "app".into(),
        oid: oid.to_owned(),
        roles,
        sub: oid.to_owned(),
        tid: tenant.to_owned(),
        ver: "1.0".into(),
    }
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// `POST /{tenant}/oauth2/v2.0/token`
pub(crate) async fn token(
    State(sh): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut st = sh.lock();
    if let (Some(client_id), Some(scope)) = (get("client_id"), get("scope")) {
        *st.token_counts
            .entry(TokenRequestKey {
                tenant: tenant.clone(),
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
            })
            .or_default() += 1;
    }
    if !st.tenants.contains_key(&tenant) {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        );
    }
    match get("grant_type") {
        Some("client_credentials") => {}
        Some("authorization_code") => {
            drop(st);
            return crate::signin::redeem(&sh, &tenant, &form);
        }
        Some(other) => {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
        None => return missing_param("grant_type"),
    }
    let Some(client_id) = get("client_id") else {
        return missing_param("client_id");
    };
    let Some(scope) = get("scope") else {
        return missing_param("scope");
    };
    let Some(resource) = scope
        .strip_suffix("/.default")
        .filter(|_| !scope.contains(' '))
    else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1_002_012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    let Some(app) = st.app(&tenant, client_id).cloned() else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    };
    if let Err(refusal) = authenticate_client(&app, &form) {
        return refusal;
    }
    let Some(aud) = audience_for(resource) else {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500_011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
            ),
        );
    };
    let lifetime = st.token_lifetime_secs;
    drop(st);
    let oid = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, client_id.as_bytes()).to_string();
    let c = claims(
        aud,
        &tenant,
        &app.client_id,
        &oid,
        &app.display_name,
        roles_for(aud, &app.mde_roles, &app.graph_roles),
        lifetime,
    );
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": issue(&c),
        }),
    )
}

/// Checks the client credential of a token request: `client_secret`, or a managed-identity
/// token as `client_assertion` (federated credential). Shared by every grant.
pub(crate) fn authenticate_client(
    app: &crate::AppRegistration,
    form: &std::collections::HashMap<String, String>,
) -> Result<(), Response> {
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if let Some(secret) = get("client_secret") {
        if app.secret.as_deref() != Some(secret) {
            return Err(entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7_000_215,
                &format!(
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                    app.client_id
                ),
            ));
        }
    } else if let Some(assertion) = get("client_assertion") {
        if get("client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50027,
                "Invalid client_assertion_type: the value must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ));
        }
        let ok = verify(assertion).is_some_and(|c| {
            c.aud == audiences::TOKEN_EXCHANGE
                && app
                    .federated_identity
                    .as_deref()
                    .is_some_and(|mi| mi.eq_ignore_ascii_case(&c.appid))
        });
        if !ok {
            return Err(entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                70021,
                "No matching federated identity record found for presented assertion. Assertion Issuer: 'https://sts.windows.net/'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.",
            ));
        }
    } else {
        return Err(entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_216,
            &format!(
                "'client_assertion', 'client_secret' or 'request' is required for the '{}' grant type.",
                get("grant_type").unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn missing_param(name: &str) -> Response {
    entra_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900_144,
        &format!("The request body must contain the following parameter: '{name}'."),
    )
}

fn msi_error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({ "statusCode": status.as_u16(), "message": message }),
    )
}

/// `GET /msi/token?resource=...&api-version=2019-08-01[&client_id=|object_id=|mi_res_id=]`
pub(crate) async fn msi(
    State(sh): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let header_ok = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == sh.identity_header);
    if !header_ok {
        return msi_error(
            StatusCode::UNAUTHORIZED,
            "X-IDENTITY-HEADER is missing or does not match IDENTITY_HEADER",
        );
    }
    if q.get("api-version").map(String::as_str) != Some("2019-08-01") {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "api-version 2019-08-01 is required",
        );
    }
    let Some(resource) = q.get("resource").filter(|r| !r.is_empty()) else {
        return msi_error(StatusCode::BAD_REQUEST, "resource is required");
    };
    let st = sh.lock();
    let identity = if let Some(id) = q.get("client_id") {
        st.identities.get(&id.to_ascii_lowercase()).cloned()
    } else if let Some(oid) = q.get("object_id").or_else(|| q.get("principal_id")) {
        st.identities
            .values()
            .find(|i| i.object_id.eq_ignore_ascii_case(oid))
            .cloned()
    } else if let Some(res_id) = q.get("mi_res_id") {
        let name = res_id.rsplit('/').next().unwrap_or_default();
        st.identities
            .values()
            .find(|i| i.client_id.eq_ignore_ascii_case(name))
            .cloned()
    } else {
        st.identities.get(&st.system_identity).cloned()
    };
    let lifetime = st.token_lifetime_secs;
    drop(st);
    let Some(identity) = identity else {
        return msi_error(
            StatusCode::BAD_REQUEST,
            "Unable to load the proper Managed Identity.",
        );
    };
    let aud = audience_for(resource).unwrap_or(resource.as_str());
    let c = claims(
        aud,
        &sh.home_tenant,
        &identity.client_id,
        &identity.object_id,
        &identity.client_id,
        roles_for(aud, &identity.mde_roles, &identity.graph_roles),
        lifetime,
    );
    let body = serde_json::json!({
        "access_token": issue(&c),
        "expires_on": c.exp.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    });
    json_response(StatusCode::OK, &body).into_response()
}
