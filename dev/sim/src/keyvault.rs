//! Key Vault secrets: `GET /secrets/{name}[/][{version}]?api-version=...` with the 401
//! `WWW-Authenticate` challenge the Azure SDK's `KeyVaultAuthorizer` parses.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use crate::server::{Auth, json_response};
use crate::{Shared, audiences};

fn unauthorized(sh: &Shared, code: &str, message: &str) -> Response {
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    );
    // The SDK reads `resource="..."` (8 characters before `="`) and asks for
    // `{resource}/.default`; the authority is informational.
    let challenge = format!(
        r#"Bearer authorization="{}/{}", resource="{}""#,
        sh.base_str(),
        sh.home_tenant,
        audiences::VAULT
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// `GET /secrets/{name}` and `GET /secrets/{name}/`
pub(crate) async fn get_secret(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
) -> Response {
    answer(&sh, &auth, &name, None)
}

/// `GET /secrets/{name}/{version}`
pub(crate) async fn get_secret_version(
    State(sh): State<Arc<Shared>>,
    Extension(auth): Extension<Auth>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    answer(&sh, &auth, &name, Some(&version))
}

fn answer(sh: &Shared, auth: &Auth, name: &str, version: Option<&str>) -> Response {
    if !auth.had_bearer {
        return unauthorized(
            sh,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
    }
    let Some(claims) = &auth.claims else {
        return unauthorized(
            sh,
            "Unauthorized",
            "AKV10013: Invalid token: the token is malformed, forged or expired.",
        );
    };
    if claims.aud.trim_end_matches('/') != audiences::VAULT {
        return unauthorized(
            sh,
            "Unauthorized",
            &format!(
                "AKV10022: Invalid audience. Expected {}, found: {}.",
                audiences::VAULT,
                claims.aud
            ),
        );
    }
    if claims.tid != sh.home_tenant {
        return unauthorized(
            sh,
            "Unauthorized",
            &format!(
                "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{}/, found {}.",
                sh.home_tenant, claims.iss
            ),
        );
    }
    let entry = sh.lock().secrets.get(name).cloned();
    let entry = entry.filter(|e| version.is_none_or(|v| v.eq_ignore_ascii_case(&e.version)));
    let Some(e) = entry else {
        return json_response(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": {
                "code": "SecretNotFound",
                "message": format!(
                    "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
                ),
            }}),
        );
    };
    let created = e.created.unix_timestamp();
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "value": e.value,
            "id": format!("{}/secrets/{name}/{}", sh.base_str(), e.version),
            "attributes": {
                "enabled": true,
                "created": created,
                "updated": created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": {},
        }),
    )
}
