//! Shared HTTP plumbing for the Microsoft API clients: one pooled `reqwest` client with
//! timeouts, the retry policy (jittered exponential backoff; `Retry-After` honoured on 429),
//! the retry loop, and helpers for wire DTOs (string enums that keep unknown values).

use std::future::Future;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Timeouts and identification of the shared HTTP client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Whole-request timeout (connect + send + receive the full body).
    pub request_timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("defender-ops/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// The shared HTTP client could not be built (TLS roots, invalid settings).
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client")]
pub struct HttpBuildError(#[from] reqwest::Error);

/// Builds the one pooled `reqwest` client shared by every Microsoft API client (and handed to
/// the Azure SDK as its transport, so there is one TLS stack and one connection pool).
///
/// TLS trusts the platform roots; `SSL_CERT_FILE` adds a CA (the simulator's in tests).
///
/// # Errors
/// [`HttpBuildError`] when reqwest cannot initialise TLS.
pub fn build_client(settings: &HttpSettings) -> Result<reqwest::Client, HttpBuildError> {
    Ok(reqwest::Client::builder()
        .timeout(settings.request_timeout)
        .connect_timeout(settings.connect_timeout)
        .user_agent(settings.user_agent.clone())
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()?)
}

/// Azure SDK client options that send through `http` (our pool and timeouts) and retry
/// moderately (the SDK default retries for about a minute, which hides a broken setup).
pub fn sdk_client_options(http: &reqwest::Client) -> azure_core::http::ClientOptions {
    use azure_core::http::{ExponentialRetryOptions, RetryOptions, Transport};
    azure_core::http::ClientOptions {
        transport: Some(Transport::new(std::sync::Arc::new(http.clone()))),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(300),
            max_retries: 3,
            max_total_elapsed: azure_core::time::Duration::seconds(20),
            max_delay: azure_core::time::Duration::seconds(5),
        }),
        ..Default::default()
    }
}

/// When and how long to retry.
///
/// Retries happen on 408, 429, 500, 502, 503, 504, timeouts and connection errors. A request
/// that must not be repeated blindly (a POST) is retried only when it certainly did not take
/// effect: a 429 or a failed connection.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Backoff before the first retry; doubles each time, with jitter.
    pub initial_delay: Duration,
    /// Upper bound of one backoff delay.
    pub max_delay: Duration,
    /// Longest `Retry-After` waited in place; a longer one ends the call with the 429 so the
    /// caller can reschedule the work instead of holding an invocation.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (0-based): "equal jitter", uniformly in
    /// `[d/2, d]` where `d = min(max_delay, initial_delay * 2^retry)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(16));
        let ceiling = self
            .initial_delay
            .saturating_mul(factor)
            .min(self.max_delay);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        let jitter = if jitter_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::random_range(0..=jitter_ms))
        };
        half + jitter
    }
}

/// Whether a status is worth another try of an idempotent request.
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::REQUEST_TIMEOUT
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The longest `Retry-After` this crate represents: anything longer (`1e20`, a 23-digit
/// number, a date in the year 9999) is read as this much. Every caller waits in place only up
/// to its own, much shorter, [`RetryPolicy::max_retry_after`] and fails the invocation
/// beyond it, so the queue retries later; the ceiling only keeps the arithmetic finite.
pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses `Retry-After` (delta-seconds, fractional seconds, or an HTTP date) relative to
/// `now`, capped at [`RETRY_AFTER_CEILING`]. Never panics: negative, non-finite or unreadable
/// values are `None` (the caller backs off as usual); a date in the past is zero.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?, now)
}

/// [`retry_after`] on the header's text.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Any number of digits: one that does not fit a u64 is over the ceiling anyway.
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds).min(RETRY_AFTER_CEILING));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        if !seconds.is_finite() || seconds < 0.0 {
            return None;
        }
        return Some(if seconds >= RETRY_AFTER_CEILING.as_secs_f64() {
            RETRY_AFTER_CEILING
        } else {
            Duration::from_secs_f64(seconds)
        });
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let now = time::OffsetDateTime::from(now);
    let wait = at - now;
    if wait.is_negative() {
        return Some(Duration::ZERO);
    }
    Some(
        Duration::try_from(wait)
            .unwrap_or(RETRY_AFTER_CEILING)
            .min(RETRY_AFTER_CEILING),
    )
}

/// How a request that failed without a response ended.
#[derive(Debug, thiserror::Error)]
pub enum SendError<E> {
    /// The step before sending (token, rate budget, building the request) failed.
    #[error(transparent)]
    Before(E),
    /// No response: timeout, reset or connection failure, after the allowed retries.
    #[error("no response from the service")]
    Transport {
        /// The last error.
        #[source]
        source: reqwest::Error,
        /// The request may have reached the service (false only for connection failures).
        maybe_sent: bool,
        /// Attempts made, including the first.
        attempts: u32,
    },
}

/// Sends with retries. `attempt` is called once per try (it takes a rate-budget permit,
/// fetches a token and sends); a response of any status that is not retried is returned
/// as `Ok` for the caller to map, including a 429 whose `Retry-After` is over the cap or
/// that outlived the retries.
///
/// `idempotent == false` (a POST) retries only on 429 and connection failures.
///
/// # Errors
/// [`SendError::Before`] as soon as `attempt` fails before sending; [`SendError::Transport`]
/// when no response came back.
pub async fn send_with_retry<E, F, Fut>(
    policy: &RetryPolicy,
    idempotent: bool,
    mut attempt: F,
) -> Result<reqwest::Response, SendError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<reqwest::Response, reqwest::Error>, E>>,
{
    let mut retries = 0u32;
    loop {
        let outcome = attempt().await.map_err(SendError::Before)?;
        let can_retry = retries < policy.max_retries;
        match outcome {
            Ok(response) => {
                let status = response.status();
                if status == StatusCode::TOO_MANY_REQUESTS {
                    if !can_retry {
                        return Ok(response);
                    }
                    let wait = retry_after(response.headers(), SystemTime::now())
                        .unwrap_or_else(|| policy.backoff(retries));
                    if wait > policy.max_retry_after {
                        return Ok(response);
                    }
                    tracing::warn!(
                        http.status = status.as_u16(),
                        retry.delay_ms = millis(wait),
                        retry.attempt = retries + 1,
                        "throttled; waiting before the next try"
                    );
                    drop(response);
                    tokio::time::sleep(wait).await;
                } else if idempotent && can_retry && is_retryable_status(status) {
                    let wait = policy.backoff(retries);
                    tracing::warn!(
                        http.status = status.as_u16(),
                        retry.delay_ms = millis(wait),
                        retry.attempt = retries + 1,
                        "server error; retrying"
                    );
                    drop(response);
                    tokio::time::sleep(wait).await;
                } else {
                    return Ok(response);
                }
            }
            Err(error) => {
                // URLs can carry a signed query (a Teams Workflows `sig`): never keep them in
                // an error that is logged or returned.
                let error = error.without_url();
                let maybe_sent = !error.is_connect();
                if can_retry && (idempotent || !maybe_sent) {
                    let wait = policy.backoff(retries);
                    tracing::warn!(
                        error = %error_chain(&error),
                        retry.delay_ms = millis(wait),
                        retry.attempt = retries + 1,
                        "request failed without a response; retrying"
                    );
                    tokio::time::sleep(wait).await;
                } else {
                    return Err(SendError::Transport {
                        source: error,
                        maybe_sent,
                        attempts: retries + 1,
                    });
                }
            }
        }
        retries += 1;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A complete HTTP answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// Why no complete answer came back from [`send_with_retry`]. The URL is never in the
/// message (it can carry a mailbox or a signed query).
#[derive(Debug)]
pub enum NoAnswer<E> {
    /// The attempt failed before sending (token, budget...).
    Before(E),
    /// No response, or a response whose body was cut off.
    Lost {
        message: String,
        /// The request may have reached the service.
        maybe_sent: bool,
        /// Set when the status line arrived but the body did not.
        status: Option<StatusCode>,
    },
    /// The body was longer than the caller's limit; reading stopped there.
    TooLarge {
        /// The answer's status.
        status: StatusCode,
        /// The limit, in bytes.
        limit: usize,
    },
}

impl<E> NoAnswer<E> {
    /// The text of a [`NoAnswer::TooLarge`].
    pub fn too_large_message(status: StatusCode, limit: usize) -> String {
        format!(
            "the answer ({}) is longer than the {} KiB this client reads",
            status.as_u16(),
            limit / 1024
        )
    }
}

/// The most bytes of one answer each client reads (a page of 10,000 Defender machines is
/// about 10 MiB; a Graph page holds at most 50 incidents with their alerts).
pub mod body_limit {
    /// Defender for Endpoint: pages of up to 10,000 machines or machine actions.
    pub const DEFENDER: usize = 64 * 1024 * 1024;
    /// Microsoft Graph: incident pages, `sendMail` answers.
    pub const GRAPH: usize = 16 * 1024 * 1024;
    /// Table Storage: query pages of up to 1,000 of our small rows, batch answers.
    pub const TABLES: usize = 32 * 1024 * 1024;
    /// Teams Workflows and the outbound webhook: only an error code is read.
    pub const NOTIFY: usize = 64 * 1024;
}

/// The most pages one listing follows (`@odata.nextLink` or `$skip`): a server that keeps
/// sending links (a loop, or a hostile one) ends the listing with an error instead of
/// holding the invocation for ever.
#[derive(Debug)]
pub struct PageLimit {
    max_pages: u32,
    pages: u32,
    seen: std::collections::HashSet<String>,
}

impl PageLimit {
    /// A listing of at most `max_pages` pages.
    pub fn new(max_pages: u32) -> Self {
        Self {
            max_pages,
            pages: 0,
            seen: std::collections::HashSet::new(),
        }
    }

    /// Records the next page's URL.
    ///
    /// # Errors
    /// A readable reason when the listing is over its page count or the URL was already read
    /// (a `nextLink` loop).
    pub fn next(&mut self, url: &url::Url) -> Result<(), String> {
        self.pages += 1;
        if self.pages > self.max_pages {
            return Err(format!(
                "the listing went on past {} pages; stopped",
                self.max_pages
            ));
        }
        if !self.seen.insert(url.as_str().to_owned()) {
            return Err("the next page's link points to a page already read".into());
        }
        Ok(())
    }
}

/// Completes [`send_with_retry`]: reads the whole body, up to `limit` bytes, and turns
/// transport failures into [`NoAnswer::Lost`] for the caller to map to its own "transient"
/// or "uncertain" error.
///
/// # Errors
/// [`NoAnswer`] when no complete answer came back, or [`NoAnswer::TooLarge`].
pub async fn read_answer<E>(
    result: Result<reqwest::Response, SendError<E>>,
    limit: usize,
) -> Result<Answer, NoAnswer<E>> {
    let response = match result {
        Ok(response) => response,
        Err(SendError::Before(error)) => return Err(NoAnswer::Before(error)),
        Err(SendError::Transport {
            source,
            maybe_sent,
            attempts,
        }) => {
            return Err(NoAnswer::Lost {
                message: format!(
                    "{} after {attempts} attempt(s)",
                    error_chain(&source.without_url())
                ),
                maybe_sent,
                status: None,
            });
        }
    };
    let status = response.status();
    let headers = response.headers().clone();
    match read_limited(response, limit).await {
        Ok(Some(body)) => Ok(Answer {
            status,
            headers,
            body,
        }),
        Ok(None) => Err(NoAnswer::TooLarge { status, limit }),
        Err(error) => Err(NoAnswer::Lost {
            message: format!("reading the answer: {}", error_chain(&error.without_url())),
            maybe_sent: true,
            status: Some(status),
        }),
    }
}

/// Reads a body chunk by chunk, giving up (`Ok(None)`) as soon as it passes `limit` bytes,
/// or before reading when `Content-Length` already says so.
///
/// # Errors
/// The transport's, while reading.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<bytes::Bytes>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Ok(None);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// Renders an error and its `source()` chain on one line (`a: b: c`). Callers must only pass
/// errors whose messages carry no secret (ours never do; reqwest's omit query strings only
/// when built with `without_url`, see [`strip_url`]).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(cause) = current {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        current = cause.source();
    }
    text
}

/// What an Azure SDK error boils down to, found by walking its `source()` chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkFailure {
    /// The service answered with this HTTP status.
    Status(u16),
    /// No answer: connection failure, timeout, reset.
    Unreachable,
    /// Anything else (parse failures, refused options).
    Other,
}

impl SdkFailure {
    /// True for outcomes worth retrying later: no answer, throttling, server errors.
    pub fn is_transient(self) -> bool {
        match self {
            Self::Unreachable => true,
            Self::Status(status) => status == 408 || status == 429 || status >= 500,
            Self::Other => false,
        }
    }
}

/// Classifies an Azure SDK error (credential errors wrap the HTTP error that caused them).
pub fn sdk_failure(error: &azure_core::Error) -> SdkFailure {
    use azure_core::error::ErrorKind;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut found = SdkFailure::Other;
    while let Some(err) = current {
        if let Some(sdk) = err.downcast_ref::<azure_core::Error>() {
            match sdk.kind() {
                ErrorKind::HttpResponse { status, .. } => {
                    return SdkFailure::Status(u16::from(*status));
                }
                ErrorKind::Connection | ErrorKind::Io => found = SdkFailure::Unreachable,
                _ => {}
            }
        } else if err.downcast_ref::<reqwest::Error>().is_some()
            || err.downcast_ref::<std::io::Error>().is_some()
        {
            found = SdkFailure::Unreachable;
        }
        current = err.source();
    }
    found
}

/// Drops the URL from a reqwest error (a URL can carry a signed query, e.g. a webhook).
pub fn strip_url(error: reqwest::Error) -> reqwest::Error {
    error.without_url()
}

/// Replaces the scheme, host and port of `link` (an `@odata.nextLink`) with those of `base`,
/// so paging stays on the configured host and a bearer token is never sent elsewhere.
pub fn rebase_link(base: &url::Url, link: &str) -> Option<url::Url> {
    let parsed = url::Url::parse(link).or_else(|_| base.join(link)).ok()?;
    let mut rebased = base.clone();
    rebased.set_path(parsed.path());
    rebased.set_query(parsed.query());
    Some(rebased)
}

/// Declares a wire enum carried as a string: known values as variants, anything else kept
/// verbatim in `Unknown(String)`. Matching is case-insensitive; serialisation writes the
/// canonical spelling (or the unknown text as received).
macro_rules! string_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this version does not know, kept as received.
            Unknown(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Unknown(text) => text,
                }
            }

            /// Parses a wire value; never fails (unknown values are kept).
            pub fn parse(text: &str) -> Self {
                $(if text.eq_ignore_ascii_case($text) { return Self::$variant; })+
                Self::Unknown(text.to_owned())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(deserializer)?;
                Ok(Self::parse(&text))
            }
        }
    };
}
pub(crate) use string_enum;

/// Serde helpers: `null` → default, for fields that are documented non-null but may not be.
pub(crate) mod nullable {
    use serde::{Deserialize, Deserializer};

    /// Deserializes `null` as `T::default()`.
    pub fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canned(status: u16, retry_after: Option<&str>) -> reqwest::Response {
        let mut builder = http::Response::builder().status(status);
        if let Some(value) = retry_after {
            builder = builder.header("Retry-After", value);
        }
        reqwest::Response::from(builder.body("").expect("response"))
    }

    fn fast_policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_stays_within_half_and_full_of_the_doubling_ceiling() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for _ in 0..200 {
            let first = policy.backoff(0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let capped = policy.backoff(30);
            assert!(capped >= Duration::from_millis(500) && capped <= Duration::from_secs(1));
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "37".parse().expect("header"));
        assert_eq!(
            retry_after(&headers, SystemTime::now()),
            Some(Duration::from_secs(37))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        headers.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:47 GMT".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(10)));
        headers.insert(RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers, now), None);
    }

    #[test]
    fn next_links_are_rebased_onto_the_configured_host() {
        let base = url::Url::parse("https://127.0.0.1:8443").expect("url");
        let link = "https://api.security.microsoft.com/api/machines?$top=5&$skip=5";
        assert_eq!(
            rebase_link(&base, link).expect("link").as_str(),
            "https://127.0.0.1:8443/api/machines?$top=5&$skip=5"
        );
    }

    #[tokio::test]
    async fn a_429_with_retry_after_is_waited_out_then_retried() {
        // Real time: the crate's tokio has no `test-util` (no paused clock) yet.
        let policy = fast_policy();
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let response = send_with_retry::<(), _, _>(&policy, false, || {
            calls += 1;
            let first = calls == 1;
            async move {
                Ok(Ok(if first {
                    canned(429, Some("1"))
                } else {
                    canned(200, None)
                }))
            }
        })
        .await
        .expect("response");
        assert_eq!(response.status(), 200);
        assert_eq!(calls, 2);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_retry_after_over_the_cap_is_returned_to_the_caller() {
        let policy = RetryPolicy {
            max_retry_after: Duration::from_secs(10),
            ..fast_policy()
        };
        let mut calls = 0;
        let response = send_with_retry::<(), _, _>(&policy, true, || {
            calls += 1;
            async { Ok(Ok(canned(429, Some("37")))) }
        })
        .await
        .expect("response");
        assert_eq!(response.status(), 429);
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn server_errors_are_retried_for_reads_but_not_for_posts() {
        let policy = fast_policy();
        let mut calls = 0;
        let response = send_with_retry::<(), _, _>(&policy, true, || {
            calls += 1;
            let status = if calls < 3 { 503 } else { 200 };
            async move { Ok(Ok(canned(status, None))) }
        })
        .await
        .expect("response");
        assert_eq!((response.status().as_u16(), calls), (200, 3));

        let mut posts = 0;
        let response = send_with_retry::<(), _, _>(&policy, false, || {
            posts += 1;
            async { Ok(Ok(canned(500, None))) }
        })
        .await
        .expect("response");
        assert_eq!((response.status().as_u16(), posts), (500, 1));
    }

    #[tokio::test]
    async fn retries_stop_after_the_configured_count() {
        let policy = RetryPolicy {
            max_retries: 2,
            ..fast_policy()
        };
        let mut calls = 0;
        let response = send_with_retry::<(), _, _>(&policy, true, || {
            calls += 1;
            async { Ok(Ok(canned(502, None))) }
        })
        .await
        .expect("response");
        assert_eq!((response.status().as_u16(), calls), (502, 3));
    }

    string_enum! {
        /// Test enum.
        enum Colour { Red = "Red", DarkBlue = "darkBlue" }
    }

    #[test]
    fn string_enums_match_case_insensitively_and_keep_unknown_values() {
        let parsed: Vec<Colour> =
            serde_json::from_str(r#"["red","DarkBlue","Mauve"]"#).expect("json");
        assert_eq!(
            parsed,
            vec![
                Colour::Red,
                Colour::DarkBlue,
                Colour::Unknown("Mauve".into())
            ]
        );
        assert_eq!(
            serde_json::to_string(&parsed).expect("json"),
            r#"["Red","darkBlue","Mauve"]"#
        );
    }

    #[test]
    fn hostile_retry_after_values_are_capped_or_ignored_never_a_panic() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ceiling = Some(RETRY_AFTER_CEILING);
        for huge in [
            "1e20",
            "12345678901234567890123",
            "18446744073709551616",
            "1.7e308",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(parse_retry_after(huge, now), ceiling, "{huge}");
        }
        for ignored in [
            "-1", "-0.5", "inf", "NaN", "", "soon", "1e", "0x10", "\u{0}",
        ] {
            assert_eq!(parse_retry_after(ignored, now), None, "{ignored}");
        }
        assert_eq!(
            parse_retry_after("0.25", now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 1900 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[tokio::test]
    async fn a_1e20_retry_after_ends_the_call_with_the_429_instead_of_sleeping() {
        let mut calls = 0;
        let response = send_with_retry::<(), _, _>(&fast_policy(), true, || {
            calls += 1;
            async { Ok(Ok(canned(429, Some("1e20")))) }
        })
        .await
        .expect("response");
        assert_eq!((response.status().as_u16(), calls), (429, 1));
    }

    fn body_of(len: usize, content_length: bool) -> reqwest::Response {
        let body = vec![b'x'; len];
        if content_length {
            return reqwest::Response::from(http::Response::new(body));
        }
        // A streamed body announces no length: the limit must hold chunk by chunk.
        let chunks = futures::stream::iter(
            body.chunks(4096)
                .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(chunks)))
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_with_or_without_a_length() {
        for announced in [true, false] {
            let read = read_limited(body_of(100_001, announced), 100_000).await;
            assert!(read.expect("read").is_none(), "announced: {announced}");
            let read = read_limited(body_of(100_000, announced), 100_000).await;
            assert_eq!(read.expect("read").expect("within").len(), 100_000);
        }
        let answer = read_answer::<()>(Ok(body_of(2048, false)), 1024).await;
        assert!(matches!(
            answer,
            Err(NoAnswer::TooLarge { limit: 1024, .. })
        ));
    }

    #[test]
    fn a_listing_stops_at_its_page_count_and_on_a_link_loop() {
        let url =
            |n: u32| url::Url::parse(&format!("https://h/api/machines?$skip={n}")).expect("url");
        let mut pages = PageLimit::new(3);
        for n in 0..3 {
            assert!(pages.next(&url(n)).is_ok());
        }
        assert!(pages.next(&url(3)).is_err());
        let mut looping = PageLimit::new(100);
        assert!(looping.next(&url(0)).is_ok());
        assert!(looping.next(&url(1)).is_ok());
        assert!(looping.next(&url(0)).is_err());
    }

    mod hostile_answers {
        use super::super::*;
        use super::body_of;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a server sends as `Retry-After`, parsing never panics and never
            /// yields more than the ceiling.
            #[test]
            fn any_retry_after_text_parses_within_the_ceiling(value in ".{0,40}", secs in 0u64..4_000_000_000) {
                let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                if let Some(wait) = parse_retry_after(&value, now) {
                    prop_assert!(wait <= RETRY_AFTER_CEILING);
                }
            }

            #[test]
            fn any_number_or_date_shaped_retry_after_is_capped(
                digits in "[0-9]{1,40}",
                float in any::<f64>(),
                year in 1900u32..=9999,
                day in 1u32..=28,
            ) {
                let now = SystemTime::now();
                for value in [
                    digits.clone(),
                    float.to_string(),
                    format!("{float:e}"),
                    format!("Mon, {day:02} Feb {year} 10:00:00 GMT"),
                ] {
                    if let Some(wait) = parse_retry_after(&value, now) {
                        prop_assert!(wait <= RETRY_AFTER_CEILING, "{value}");
                    }
                }
                prop_assert!(parse_retry_after(&digits, now).is_some());
            }

            /// Any header value bytes reqwest accepts go through [`retry_after`] unharmed.
            #[test]
            fn any_header_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
                if let Ok(value) = reqwest::header::HeaderValue::from_bytes(&raw) {
                    let mut headers = HeaderMap::new();
                    headers.insert(RETRY_AFTER, value);
                    if let Some(wait) = retry_after(&headers, SystemTime::now()) {
                        prop_assert!(wait <= RETRY_AFTER_CEILING);
                    }
                }
            }

            /// A body is returned whole when within the limit and refused past it, whatever
            /// the sizes and whether its length is announced.
            #[test]
            fn bodies_are_read_whole_within_the_limit_and_refused_past_it(
                len in 0usize..200_000,
                limit in 0usize..200_000,
                announced in any::<bool>(),
            ) {
                let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
                let read = runtime.block_on(read_limited(body_of(len, announced), limit)).expect("read");
                match read {
                    Some(body) => prop_assert!(len <= limit && body.len() == len),
                    None => prop_assert!(len > limit),
                }
            }
        }
    }

    mod next_link {
        use super::super::rebase_link;
        use proptest::prelude::*;

        proptest! {
            /// Whatever a server puts in `@odata.nextLink`, the next request goes to the
            /// configured host (a bearer token is never sent elsewhere), and parsing never panics.
            #[test]
            fn next_links_always_stay_on_the_configured_host(link in ".{0,200}") {
                let base = url::Url::parse("https://api.securitycenter.microsoft.com/").expect("base");
                if let Some(next) = rebase_link(&base, &link) {
                    prop_assert_eq!(next.scheme(), "https");
                    prop_assert_eq!(next.host_str(), Some("api.securitycenter.microsoft.com"));
                    prop_assert_eq!(next.port(), None);
                }
            }

            #[test]
            fn a_foreign_absolute_link_keeps_its_path_and_query_only(
                host in "[a-z]{1,12}\\.example",
                skip in 0u32..100_000,
            ) {
                let base = url::Url::parse("https://127.0.0.1:8443/").expect("base");
                let link = format!("http://{host}:81/api/machines?$top=10000&$skip={skip}");
                let next = rebase_link(&base, &link).expect("a valid link");
                prop_assert_eq!(next.host_str(), Some("127.0.0.1"));
                prop_assert_eq!(next.port(), Some(8443));
                prop_assert_eq!(next.path(), "/api/machines");
                let expected_query = format!("$top=10000&$skip={skip}");
                prop_assert_eq!(next.query(), Some(expected_query.as_str()));
            }
        }
    }
}
