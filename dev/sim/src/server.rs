//! The router, the front middleware (fault injection, MDE rate limits, request log) and the
//! TLS accept loop serving axum over hyper.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::signin;
use crate::state::RecordedRequest;
use crate::token::{self, Claims};
use crate::{Fault, RouteFamily, Shared, admin, graph, keyvault, mde, notify};

/// Authentication facts the front middleware found, for the handlers.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    /// Claims of a valid, unexpired sim token.
    pub claims: Option<Claims>,
    /// Whether an `Authorization: Bearer` header came along at all.
    pub had_bearer: bool,
}

/// Closes the request's connection without answering (a `Fault::Reset`).
#[derive(Clone)]
struct ConnKill(Arc<Notify>);

/// A JSON answer with `Content-Type: application/json; charset=utf-8`.
pub(crate) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        bytes,
    )
        .into_response()
}

pub(crate) fn router(sh: Arc<Shared>) -> Router {
    let mde_routes = Router::new()
        .route("/machines", get(mde::list_machines))
        .route("/machines/{id}", get(mde::get_machine))
        .route("/machines/{id}/offboard", post(mde::offboard))
        .route("/machines/{id}/tags", post(mde::tag_machine))
        .route("/machineactions", get(mde::list_actions))
        .route("/machineactions/{id}", get(mde::get_action))
        .route("/machineactions/{id}/cancel", post(mde::cancel_action));
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(signin::authorize_page).post(signin::authorize_choose),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(signin::jwks))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(signin::openid_configuration),
        )
        .route("/msi/token", get(token::msi))
        .route("/secrets/{name}", get(keyvault::get_secret))
        .route("/secrets/{name}/", get(keyvault::get_secret))
        .route(
            "/secrets/{name}/{version}",
            get(keyvault::get_secret_version),
        )
        .nest("/api", mde_routes.clone())
        .nest("/api/v1.0", mde_routes)
        .route("/v1.0/security/incidents", get(graph::list_incidents))
        .route("/v1.0/security/incidents/{id}", get(graph::get_incident))
        .route("/v1.0/users/{upn}/{action}", post(graph::user_action))
        .route(
            "/teams/workflows/{id}/triggers/manual/paths/invoke",
            post(notify::teams),
        )
        .route("/sink/{id}", post(notify::sink))
        .nest("/_sim", admin::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(sh.clone(), front))
        .with_state(sh)
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": {"code": "NotFound", "message": "No simulated route matches"}}),
    )
}

/// The route family of a request path.
pub(crate) fn classify(method: &Method, path: &str) -> Option<RouteFamily> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mde = |rest: &[&str]| match rest {
        ["machines", _, "offboard"] => Some(RouteFamily::Offboard),
        ["machines", ..] => Some(RouteFamily::Machines),
        ["machineactions", ..] => Some(RouteFamily::MachineActions),
        _ => None,
    };
    match segs.as_slice() {
        [_, "oauth2", "v2.0", "token"] if method == Method::POST => Some(RouteFamily::Token),
        ["msi", "token"] => Some(RouteFamily::Msi),
        ["secrets", ..] => Some(RouteFamily::KeyVault),
        ["api", "v1.0", rest @ ..] => mde(rest),
        ["api", rest @ ..] => mde(rest),
        ["v1.0", "security", "incidents", ..] => Some(RouteFamily::Incidents),
        ["v1.0", "users", _, action] if action.eq_ignore_ascii_case("sendmail") => {
            Some(RouteFamily::SendMail)
        }
        ["teams", ..] => Some(RouteFamily::Teams),
        ["sink", ..] => Some(RouteFamily::Sink),
        _ => None,
    }
}

fn redact(uri: &http::Uri) -> String {
    let path = uri.path();
    match uri.query() {
        None => path.to_owned(),
        Some(q) => {
            let q: Vec<String> = q
                .split('&')
                .map(|part| {
                    if part.to_ascii_lowercase().starts_with("sig=") {
                        "sig=REDACTED".to_owned()
                    } else {
                        part.to_owned()
                    }
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
    }
}

/// The family's throttling answer, with `Retry-After`.
pub(crate) fn throttled(family: RouteFamily, retry_after: u64) -> Response {
    let mut resp = if family.is_mde() {
        mde::error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            &format!("Rate limit is exceeded. Try again in {retry_after} seconds."),
        )
    } else if family.is_graph() {
        graph::error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests.",
        )
    } else if family == RouteFamily::Token {
        token::entra_error(
            StatusCode::TOO_MANY_REQUESTS,
            "temporarily_unavailable",
            90055,
            "The request was throttled: too many requests.",
        )
    } else {
        generic_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "Too many requests.",
        )
    };
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// A 200 whose JSON body (`{"value":[],"pad":"xxx…"}`) is `bytes` long, streamed so the
/// simulator never holds it whole.
fn oversize(bytes: u64) -> Response {
    const HEAD: &[u8] = br#"{"value":[],"pad":""#;
    const TAIL: &[u8] = br#""}"#;
    let fixed = (HEAD.len() + TAIL.len()) as u64;
    let pad = bytes.saturating_sub(fixed);
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let full = pad / chunk.len() as u64;
    let rest = usize::try_from(pad % chunk.len() as u64).unwrap_or(0);
    let body = futures::stream::iter(
        std::iter::once(bytes::Bytes::from_static(HEAD))
            .chain((0..full).map(move |_| chunk.clone()))
            .chain(std::iter::once(bytes::Bytes::from(vec![b'x'; rest])))
            .chain(std::iter::once(bytes::Bytes::from_static(TAIL)))
            .map(Ok::<_, std::io::Error>),
    );
    let mut resp = axum::body::Body::from_stream(body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn generic_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

/// The family's answer for an injected status.
fn fault_status(family: RouteFamily, status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let code = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "ResourceNotFound",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        500 => "InternalServerError",
        _ => "Error",
    };
    let message = "Injected fault";
    if family.is_mde() {
        mde::error(status, code, message)
    } else if family.is_graph() {
        graph::error(status, code, message)
    } else if family == RouteFamily::Token {
        token::entra_error(
            status,
            "temporarily_unavailable",
            50000,
            "There was an error issuing a token or an issue with our sign-in service.",
        )
    } else {
        generic_error(status, code, message)
    }
}

async fn front(State(sh): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sim") {
        return next.run(req).await;
    }
    let family = classify(req.method(), &path);
    let bearer = token::bearer(req.headers()).map(str::to_owned);
    let had_bearer = bearer.is_some();
    let claims = bearer.as_deref().and_then(token::verify);
    let tenant = match family {
        Some(RouteFamily::Token) => path.split('/').nth(1).map(str::to_owned),
        _ => claims.as_ref().map(|c| c.tid.clone()),
    };
    let mut record = RecordedRequest {
        method: req.method().to_string(),
        path_and_query: redact(req.uri()),
        tenant: tenant.clone(),
        client_id: claims.as_ref().map(|c| c.appid.clone()),
        family,
        at: OffsetDateTime::now_utc(),
        sim_at: sh.lock().now(),
        status: 0,
        had_bearer,
        fault: None,
    };
    req.extensions_mut().insert(Auth {
        claims: claims.clone(),
        had_bearer,
    });
    let mut early = None;
    if let Some(f) = family {
        let fault = sh.lock().take_fault(f);
        match fault {
            Some(Fault::Delay { ms, .. }) => {
                record.fault = Some(format!("delay {ms} ms"));
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Some(Fault::Reset { .. }) => {
                record.fault = Some("reset".into());
                sh.lock().requests.push(record);
                if let Some(kill) = req.extensions().get::<ConnKill>().cloned() {
                    kill.0.notify_one();
                    std::future::pending::<()>().await;
                }
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            Some(Fault::Status { status, .. }) => {
                record.fault = Some(format!("status {status}"));
                early = Some(fault_status(f, status));
            }
            Some(Fault::Throttle { retry_after, .. }) => {
                record.fault = Some(format!("throttle {retry_after} s"));
                early = Some(throttled(f, retry_after));
            }
            Some(Fault::ThrottleRaw { retry_after, .. }) => {
                record.fault = Some(format!("throttle {retry_after:?}"));
                let mut resp = throttled(f, 1);
                match HeaderValue::from_str(&retry_after) {
                    Ok(v) => {
                        resp.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                    Err(_) => {
                        resp.headers_mut().remove(header::RETRY_AFTER);
                    }
                }
                early = Some(resp);
            }
            Some(Fault::Oversize { bytes, .. }) => {
                record.fault = Some(format!("oversize {bytes} bytes"));
                early = Some(oversize(bytes));
            }
            None => {}
        }
        if early.is_none()
            && f.is_mde()
            && let (Some(t), Some(c)) = (&tenant, &claims)
        {
            let verdict = sh.lock().rate_check(t, &c.appid, f);
            if let Err(retry) = verdict {
                record.fault = Some("rate limit".into());
                early = Some(throttled(f, retry));
            }
        }
    }
    let resp = match early {
        Some(r) => r,
        None => next.run(req).await,
    };
    record.status = resp.status().as_u16();
    sh.lock().requests.push(record);
    resp
}

/// Accepts TLS connections until `shutdown` fires; each connection runs in its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let kill = Arc::new(Notify::new());
            let conn_kill = ConnKill(kill.clone());
            let svc = tower::ServiceExt::map_request(router, move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(conn_kill.clone());
                req
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
            tokio::select! {
                _ = conn => {}
                () = kill.notified() => {}
            }
        });
    }
}
