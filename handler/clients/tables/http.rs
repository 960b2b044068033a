//! One request to the service: URL, headers, SharedKeyLite or bearer auth (retries come from
//! the shared `clients::http` loop), and the mapping of error answers to [`TableError`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use azure_core::credentials::TokenCredential;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, IF_MATCH};
use reqwest::{Method, StatusCode};
use sha2::Sha256;
use time::OffsetDateTime;
use url::Url;

use super::error::parse_error_body;
use super::{IfMatch, TableError};
use crate::clients::http::{
    RetryPolicy, SendError, body_limit, error_chain, read_limited, send_with_retry,
};

const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
const API_VERSION: &str = "2019-02-02";
const ODATA_VERSION: &str = "3.0;NetFx";
pub(crate) const ACCEPT_JSON: &str = "application/json;odata=minimalmetadata";

/// How requests prove who they are.
#[derive(Clone)]
pub(crate) enum Auth {
    /// Account key, kept only as a keyed HMAC so the raw key is not held.
    SharedKeyLite {
        account: String,
        mac: Hmac<Sha256>,
    },
    Bearer(Arc<dyn TokenCredential>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedKeyLite { account, .. } => write!(f, "SharedKeyLite({account})"),
            Self::Bearer(_) => f.write_str("Bearer"),
        }
    }
}

/// One logical request, re-signed on every attempt.
pub(crate) struct Request<'a> {
    pub method: Method,
    /// Path below the account endpoint, already percent-encoded (`Tables`, `T(...)`, `$batch`).
    pub path: &'a str,
    /// Query string without `?`, already percent-encoded; may be empty.
    pub query: &'a str,
    pub if_match: Option<&'a IfMatch>,
    pub prefer_no_content: bool,
    pub body: Option<(Bytes, &'a str)>,
    pub retry: bool,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, path: &'a str) -> Self {
        Self {
            method,
            path,
            query: "",
            if_match: None,
            prefer_no_content: false,
            body: None,
            retry: true,
        }
    }
}

/// A complete answer (body read), and whether an earlier attempt may have been applied.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub retried: bool,
}

impl Reply {
    /// The `ETag` header.
    pub fn etag(&self) -> Option<super::ETag> {
        self.headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(super::ETag::new)
    }

    /// This answer as an error (call it for statuses the caller does not handle itself).
    pub fn into_error(self) -> TableError {
        let header_code = self
            .headers
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok());
        let e = parse_error_body(&self.body, header_code);
        let status = self.status.as_u16();
        match status {
            401 | 403 => TableError::Auth(format!("{status} {}: {}", e.code, e.message)),
            404 => TableError::NotFound { code: e.code },
            409 => TableError::Conflict {
                code: e.code,
                after_retry: self.retried,
            },
            412 => TableError::PreconditionFailed {
                after_retry: self.retried,
            },
            429 => TableError::Throttled { status },
            503 if e.code == "ServerBusy" => TableError::Throttled { status },
            _ => TableError::Service {
                status,
                code: e.code,
                message: e.message,
            },
        }
    }

    /// `Ok(self)` for a 2xx answer, the mapped error otherwise.
    pub fn success(self) -> Result<Self, TableError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.into_error())
        }
    }
}

/// The HTTP side shared by every table of a service.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub http: reqwest::Client,
    /// Endpoint without trailing slash.
    pub base: String,
    pub auth: Auth,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

impl Pipeline {
    /// Sends `req` through the shared retry loop (`clients::http::send_with_retry`: 408,
    /// 429, 5xx, timeouts and connection failures); returns the final answer whatever its
    /// status. Every attempt is signed anew (fresh `x-ms-date`, fresh token).
    ///
    /// Table writes are sent as retryable even when not idempotent (an insert, a batch):
    /// the reply's `retried` flag then lets a `Conflict` or `PreconditionFailed` say that an
    /// earlier attempt may have been applied.
    pub async fn send(&self, req: &Request<'_>) -> Result<Reply, TableError> {
        let mut url = String::with_capacity(self.base.len() + req.path.len() + req.query.len() + 2);
        url.push_str(&self.base);
        url.push('/');
        url.push_str(req.path);
        if !req.query.is_empty() {
            url.push('?');
            url.push_str(req.query);
        }
        let url =
            Url::parse(&url).map_err(|e| TableError::InvalidConfig(format!("request URL: {e}")))?;
        let once = RetryPolicy {
            max_retries: 0,
            ..self.retry.clone()
        };
        let policy = if req.retry { &self.retry } else { &once };
        let attempts = AtomicU32::new(0);
        // Attempts that may have been applied: sent without an answer, or answered with a
        // server error or timeout. A 429 or a refused connection certainly changed nothing.
        let maybe_applied = AtomicU32::new(0);
        let started = Instant::now();
        let response = send_with_retry(policy, true, || {
            let (attempts, maybe_applied, url) = (&attempts, &maybe_applied, &url);
            async move {
                attempts.fetch_add(1, Ordering::Relaxed);
                let outcome = self.attempt(req, url).await;
                let uncertain = match &outcome {
                    Ok(Ok(response)) => is_uncertain(response.status()),
                    Ok(Err(error)) => !error.is_connect(),
                    Err(_) => false,
                };
                if uncertain {
                    maybe_applied.fetch_add(1, Ordering::Relaxed);
                }
                outcome
            }
        })
        .await
        .map_err(|e| match e {
            SendError::Before(e) => e,
            SendError::Transport { source, .. } => TableError::Transport(source),
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response, body_limit::TABLES)
            .await
            .map_err(TableError::Transport)?
            .ok_or_else(|| {
                TableError::Decode(format!(
                    "the answer is longer than {} MiB",
                    body_limit::TABLES / (1024 * 1024)
                ))
            })?;
        let attempts = attempts.into_inner();
        tracing::debug!(
            http.method = %req.method,
            http.status = status.as_u16(),
            attempts,
            duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "table storage request"
        );
        Ok(Reply {
            status,
            headers,
            body,
            // The final answer's own uncertainty is the caller's to read from its status.
            retried: maybe_applied.into_inner() > u32::from(is_uncertain(status)),
        })
    }

    /// One signed attempt: `Err` for a token failure, the inner `Err` for transport errors.
    async fn attempt(
        &self,
        req: &Request<'_>,
        url: &Url,
    ) -> Result<Result<reqwest::Response, reqwest::Error>, TableError> {
        let date = rfc1123(OffsetDateTime::now_utc());
        let mut headers = HeaderMap::with_capacity(10);
        headers.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
        headers.insert(
            "DataServiceVersion",
            HeaderValue::from_static(ODATA_VERSION),
        );
        headers.insert(
            "MaxDataServiceVersion",
            HeaderValue::from_static(ODATA_VERSION),
        );
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_JSON));
        if req.prefer_no_content {
            headers.insert("Prefer", HeaderValue::from_static("return-no-content"));
        }
        if let Some(m) = req.if_match {
            headers.insert(IF_MATCH, header_value(m.as_header())?);
        }
        let mut auth = match &self.auth {
            Auth::SharedKeyLite { account, mac } => {
                let comp = url.query_pairs().find(|(k, _)| k == "comp").map(|(_, v)| v);
                let to_sign = string_to_sign(&date, account, url.path(), comp.as_deref());
                header_value(&format!("SharedKeyLite {account}:{}", sign(mac, &to_sign)))?
            }
            Auth::Bearer(credential) => {
                let token = credential
                    .get_token(&[STORAGE_SCOPE], None)
                    .await
                    .map_err(|e| {
                        TableError::Auth(format!("cannot get a storage token: {}", error_chain(&e)))
                    })?;
                header_value(&format!("Bearer {}", token.token.secret()))?
            }
        };
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert("x-ms-date", header_value(&date)?);
        let mut builder = self
            .http
            .request(req.method.clone(), url.clone())
            .timeout(self.timeout)
            .headers(headers);
        if let Some((body, content_type)) = &req.body {
            builder = builder
                .header(CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        Ok(builder.send().await)
    }
}

fn header_value(text: &str) -> Result<HeaderValue, TableError> {
    HeaderValue::from_str(text)
        .map_err(|_| TableError::InvalidConfig("a header value is not valid ASCII".into()))
}

/// `Sun, 11 Oct 2009 21:49:13 GMT`.
pub(crate) fn rfc1123(at: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&FORMAT)
        .unwrap_or_default()
}

/// SharedKeyLite for the Table service: `Date + "\n" + CanonicalizedResource`, where the
/// resource is `/{account}{encoded path}` (path-style endpoints repeat the account) plus
/// `?comp=...` when present.
pub(crate) fn string_to_sign(date: &str, account: &str, path: &str, comp: Option<&str>) -> String {
    let mut s = format!("{date}\n/{account}{path}");
    if let Some(comp) = comp {
        s.push_str("?comp=");
        s.push_str(comp);
    }
    s
}

pub(crate) fn sign(mac: &Hmac<Sha256>, to_sign: &str) -> String {
    let mut mac = mac.clone();
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A status after which the request may or may not have been applied.
pub(super) fn is_uncertain(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_date_is_rfc1123_in_gmt() {
        assert_eq!(
            rfc1123(datetime!(2009-10-11 23:49:13 +02:00)),
            "Sun, 11 Oct 2009 21:49:13 GMT"
        );
        assert_eq!(
            rfc1123(datetime!(2024-03-05 01:02:03 UTC)),
            "Tue, 05 Mar 2024 01:02:03 GMT"
        );
    }

    #[test]
    fn the_string_to_sign_has_the_date_and_the_canonical_resource() {
        let date = "Tue, 05 Mar 2024 01:02:03 GMT";
        assert_eq!(
            string_to_sign(date, "devstoreaccount1", "/devstoreaccount1/Tables", None),
            "Tue, 05 Mar 2024 01:02:03 GMT\n/devstoreaccount1/devstoreaccount1/Tables"
        );
        assert_eq!(
            string_to_sign(
                date,
                "acct",
                "/Devices(PartitionKey='a%27%27b',RowKey='r')",
                None
            ),
            "Tue, 05 Mar 2024 01:02:03 GMT\n/acct/Devices(PartitionKey='a%27%27b',RowKey='r')"
        );
        assert_eq!(
            string_to_sign(date, "acct", "/", Some("properties")),
            format!("{date}\n/acct/?comp=properties")
        );
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_string_base64() {
        // Expected value computed independently:
        // printf 'Tue, 05 Mar 2024 01:02:03 GMT\n/acct/Tables' \
        //   | openssl dgst -sha256 -mac HMAC -macopt hexkey:6b65792d6279746573 -binary | base64
        let mac = Hmac::<Sha256>::new_from_slice(b"key-bytes").expect("any key length");
        let to_sign = string_to_sign("Tue, 05 Mar 2024 01:02:03 GMT", "acct", "/Tables", None);
        assert_eq!(
            sign(&mac, &to_sign),
            "93/O9wImtEepvwncdddgTJP9D7x/I7aXveg39e5tBWg="
        );
    }
}
