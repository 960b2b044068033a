//! A small Azure Storage Queue REST client (SharedKey auth): create, put, get with a
//! visibility timeout, peek, count, update visibility, delete, clear. Message text is
//! base64-encoded on the wire, as the Functions queue extension expects by default.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use url::Url;

use crate::storage::StorageAccount;

const API_VERSION: &str = "2021-08-06";

/// One message as returned by Get Messages or Peek Messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// Message id (a GUID).
    pub id: String,
    /// Pop receipt; empty for peeked messages.
    pub pop_receipt: String,
    /// How many times the message was dequeued (including this time).
    pub dequeue_count: u64,
    /// When it was inserted.
    pub insertion_time: Option<DateTime<Utc>>,
    /// When it expires.
    pub expiration_time: Option<DateTime<Utc>>,
    /// When it becomes visible again; none for peeked messages.
    pub next_visible_time: Option<DateTime<Utc>>,
    /// The raw `MessageText` as stored (base64 for messages written by the host).
    pub raw_text: String,
}

impl QueueMessage {
    /// The message's bytes after base64 decoding, or `None` if the stored text is not base64.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        STANDARD.decode(self.raw_text.trim()).ok()
    }

    /// The decoded message as text (lossy UTF-8), or `None` if the stored text is not base64.
    pub fn text(&self) -> Option<String> {
        self.bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// A queue service client for one storage account.
#[derive(Clone, Debug)]
pub struct QueueClient {
    account: StorageAccount,
    http: reqwest::Client,
}

impl QueueClient {
    /// Builds a client from a connection string.
    ///
    /// # Errors
    /// When the connection string is invalid.
    pub fn from_connection_string(connection_string: &str) -> anyhow::Result<Self> {
        let account = StorageAccount::parse(connection_string)?;
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        if account
            .queue_endpoint
            .host_str()
            .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]")
        {
            builder = builder.no_proxy();
        }
        Ok(Self {
            account,
            http: builder.build().context("building the queue HTTP client")?,
        })
    }

    /// The account this client talks to.
    pub fn account(&self) -> &StorageAccount {
        &self.account
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Url> {
        let base = self.account.queue_endpoint.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}/{path}")).context("building a queue URL")?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> anyhow::Result<reqwest::Response> {
        let date = Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let body = body.unwrap_or_default();
        let mut headers = vec![
            ("x-ms-date".to_string(), date),
            ("x-ms-version".to_string(), API_VERSION.to_string()),
        ];
        if !body.is_empty() {
            headers.push((
                "Content-Type".to_string(),
                "application/xml; charset=utf-8".to_string(),
            ));
        }
        let auth = self
            .account
            .shared_key(method.as_str(), &url, &headers, body.len());
        let mut request = self.http.request(method.clone(), url.clone());
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let response = request
            .header("Authorization", auth)
            .header("Content-Length", body.len())
            .body(body)
            .send()
            .await
            .with_context(|| format!("{method} {}", url.path()))?;
        Ok(response)
    }

    async fn fail(response: reqwest::Response, what: &str) -> anyhow::Error {
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let code = xml_element(&text, "Code").unwrap_or_default();
        let message = xml_element(&text, "Message").unwrap_or_default();
        anyhow::anyhow!(
            "{what}: HTTP {status} {code} {}",
            message.lines().next().unwrap_or("")
        )
    }

    /// Creates the queue if it does not exist yet.
    ///
    /// # Errors
    /// On transport errors or an unexpected status.
    pub async fn create_queue(&self, queue: &str) -> anyhow::Result<()> {
        let response = self.send(Method::PUT, self.url(queue, &[])?, None).await?;
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::CONFLICT => Ok(()),
            _ => Err(Self::fail(response, &format!("creating queue {queue}")).await),
        }
    }

    /// Deletes the queue (missing is fine).
    ///
    /// # Errors
    /// On transport errors or an unexpected status.
    pub async fn delete_queue(&self, queue: &str) -> anyhow::Result<()> {
        let response = self
            .send(Method::DELETE, self.url(queue, &[])?, None)
            .await?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(Self::fail(response, &format!("deleting queue {queue}")).await),
        }
    }

    /// Puts a message whose text is `text`, base64-encoded as the host expects.
    ///
    /// # Errors
    /// On transport errors or an unexpected status (e.g. the queue does not exist).
    pub async fn put_message(&self, queue: &str, text: &str) -> anyhow::Result<QueueMessage> {
        self.put_bytes(queue, text.as_bytes()).await
    }

    /// Puts a message holding `bytes`, base64-encoded.
    ///
    /// # Errors
    /// As [`QueueClient::put_message`].
    pub async fn put_bytes(&self, queue: &str, bytes: &[u8]) -> anyhow::Result<QueueMessage> {
        self.put_raw(queue, &STANDARD.encode(bytes)).await
    }

    /// Puts a message whose stored `MessageText` is exactly `raw` (no base64 encoding);
    /// useful to test how the host treats a producer that forgot to encode.
    ///
    /// # Errors
    /// As [`QueueClient::put_message`].
    pub async fn put_raw(&self, queue: &str, raw: &str) -> anyhow::Result<QueueMessage> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            xml_escape(raw)
        );
        let url = self.url(&format!("{queue}/messages"), &[])?;
        let response = self.send(Method::POST, url, Some(body)).await?;
        if response.status() != StatusCode::CREATED {
            return Err(Self::fail(response, &format!("putting a message on {queue}")).await);
        }
        let text = response.text().await.context("reading the put answer")?;
        let mut messages = parse_messages(&text);
        let mut message = messages
            .pop()
            .context("the put answer holds no QueueMessage")?;
        message.raw_text = raw.to_string();
        Ok(message)
    }

    /// Gets up to `max` (1..=32) messages, hiding them for `visibility`.
    ///
    /// # Errors
    /// On transport errors or an unexpected status.
    pub async fn get_messages(
        &self,
        queue: &str,
        max: u32,
        visibility: Duration,
    ) -> anyhow::Result<Vec<QueueMessage>> {
        let url = self.url(
            &format!("{queue}/messages"),
            &[
                ("numofmessages", max.clamp(1, 32).to_string()),
                ("visibilitytimeout", visibility.as_secs().max(1).to_string()),
            ],
        )?;
        let response = self.send(Method::GET, url, None).await?;
        if response.status() != StatusCode::OK {
            return Err(Self::fail(response, &format!("getting messages from {queue}")).await);
        }
        Ok(parse_messages(&response.text().await?))
    }

    /// Peeks at up to 32 visible messages without changing them.
    ///
    /// # Errors
    /// On transport errors or an unexpected status.
    pub async fn peek_messages(&self, queue: &str) -> anyhow::Result<Vec<QueueMessage>> {
        let url = self.url(
            &format!("{queue}/messages"),
            &[
                ("peekonly", "true".to_string()),
                ("numofmessages", "32".to_string()),
            ],
        )?;
        let response = self.send(Method::GET, url, None).await?;
        match response.status() {
            StatusCode::OK => Ok(parse_messages(&response.text().await?)),
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            _ => Err(Self::fail(response, &format!("peeking {queue}")).await),
        }
    }

    /// The approximate number of messages (visible or not); 0 for a missing queue.
    ///
    /// # Errors
    /// On transport errors or an unexpected status.
    pub async fn message_count(&self, queue: &str) -> anyhow::Result<u64> {
        let url = self.url(queue, &[("comp", "metadata".to_string())])?;
        let response = self.send(Method::GET, url, None).await?;
        match response.status() {
            StatusCode::OK => {
                let count = response
                    .headers()
                    .get("x-ms-approximate-messages-count")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .context("no x-ms-approximate-messages-count header")?;
                Ok(count)
            }
            StatusCode::NOT_FOUND => Ok(0),
            _ => Err(Self::fail(response, &format!("counting {queue}")).await),
        }
    }

    /// Deletes a dequeued message.
    ///
    /// # Errors
    /// On transport errors or an unexpected status (a stale pop receipt is 404).
    pub async fn delete_message(
        &self,
        queue: &str,
        id: &str,
        pop_receipt: &str,
    ) -> anyhow::Result<()> {
        let url = self.url(
            &format!("{queue}/messages/{id}"),
            &[("popreceipt", pop_receipt.to_string())],
        )?;
        let response = self.send(Method::DELETE, url, None).await?;
        if response.status() != StatusCode::NO_CONTENT {
            return Err(Self::fail(response, &format!("deleting message {id} of {queue}")).await);
        }
        Ok(())
    }

    /// Makes a dequeued message visible again after `visibility`; returns the new pop
    /// receipt.
    ///
    /// # Errors
    /// On transport errors or an unexpected status.
    pub async fn update_visibility(
        &self,
        queue: &str,
        id: &str,
        pop_receipt: &str,
        visibility: Duration,
    ) -> anyhow::Result<String> {
        let url = self.url(
            &format!("{queue}/messages/{id}"),
            &[
                ("popreceipt", pop_receipt.to_string()),
                ("visibilitytimeout", visibility.as_secs().to_string()),
            ],
        )?;
        let response = self.send(Method::PUT, url, None).await?;
        if response.status() != StatusCode::NO_CONTENT {
            return Err(Self::fail(response, &format!("releasing message {id} of {queue}")).await);
        }
        Ok(response
            .headers()
            .get("x-ms-popreceipt")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }

    /// Removes every message of the queue (missing queue is fine).
    ///
    /// # Errors
    /// On transport errors or an unexpected status.
    pub async fn clear(&self, queue: &str) -> anyhow::Result<()> {
        let url = self.url(&format!("{queue}/messages"), &[])?;
        let response = self.send(Method::DELETE, url, None).await?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(()),
            _ => Err(Self::fail(response, &format!("clearing {queue}")).await),
        }
    }
}

/// Escapes text for an XML element body.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// Resolves the five predefined entities and numeric character references.
fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let replacement = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ if entity.starts_with("#x") || entity.starts_with("#X") => {
                u32::from_str_radix(&entity[2..], 16)
                    .ok()
                    .and_then(char::from_u32)
            }
            _ if entity.starts_with('#') => entity[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match replacement {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The unescaped text of the first `<name>...</name>` element in `xml`; `Some("")` for
/// `<name/>`.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let empty = format!("<{name} />");
    let empty2 = format!("<{name}/>");
    let close = format!("</{name}>");
    if let Some(start) = xml.find(&open) {
        let body = &xml[start + open.len()..];
        let end = body.find(&close)?;
        return Some(xml_unescape(&body[..end]));
    }
    if xml.contains(&empty) || xml.contains(&empty2) {
        return Some(String::new());
    }
    None
}

fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc2822(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Parses the `QueueMessagesList` answer of Put/Get/Peek Messages.
fn parse_messages(xml: &str) -> Vec<QueueMessage> {
    let mut messages = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<QueueMessage>") {
        let body = &rest[start + "<QueueMessage>".len()..];
        let Some(end) = body.find("</QueueMessage>") else {
            break;
        };
        let item = &body[..end];
        messages.push(QueueMessage {
            id: xml_element(item, "MessageId").unwrap_or_default(),
            pop_receipt: xml_element(item, "PopReceipt").unwrap_or_default(),
            dequeue_count: xml_element(item, "DequeueCount")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            insertion_time: parse_time(xml_element(item, "InsertionTime")),
            expiration_time: parse_time(xml_element(item, "ExpirationTime")),
            next_visible_time: parse_time(xml_element(item, "TimeNextVisible")),
            raw_text: xml_element(item, "MessageText").unwrap_or_default(),
        });
        rest = &body[end..];
    }
    messages
}

/// Checks a queue name against the service's rules (3-63 chars, lower-case letters,
/// digits and single dashes, starting and ending with a letter or digit).
///
/// # Errors
/// With the rule that the name breaks.
pub fn validate_queue_name(name: &str) -> anyhow::Result<()> {
    if !(3..=63).contains(&name.len()) {
        bail!("queue name {name:?} must be 3 to 63 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("queue name {name:?} may hold only lower-case letters, digits and dashes");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        bail!("queue name {name:?} must not start or end with a dash or hold two in a row");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GET_ANSWER: &str = r#"<?xml version="1.0" encoding="utf-8"?><QueueMessagesList><QueueMessage><MessageId>3c9a5e1f-7b2d-4f60-8e4a-0d5b6c7e8f91</MessageId><InsertionTime>Tue, 05 Nov 2024 09:15:01 GMT</InsertionTime><ExpirationTime>Tue, 12 Nov 2024 09:15:01 GMT</ExpirationTime><PopReceipt>AgAAAAMAAAAAAAAAx4gP2m0v2wE=</PopReceipt><TimeNextVisible>Tue, 05 Nov 2024 09:25:02 GMT</TimeNextVisible><DequeueCount>2</DequeueCount><MessageText>aGVsbG8gJmFtcDsgPHdvcmxkPg==</MessageText></QueueMessage><QueueMessage><MessageId>b</MessageId><MessageText>a&amp;b&#x41;&#66;</MessageText></QueueMessage></QueueMessagesList>"#;

    #[test]
    fn a_get_messages_answer_is_parsed_with_times_and_counts() {
        let messages = parse_messages(GET_ANSWER);
        assert_eq!(messages.len(), 2);
        let m = &messages[0];
        assert_eq!(m.id, "3c9a5e1f-7b2d-4f60-8e4a-0d5b6c7e8f91");
        assert_eq!(m.pop_receipt, "AgAAAAMAAAAAAAAAx4gP2m0v2wE=");
        assert_eq!(m.dequeue_count, 2);
        assert_eq!(
            m.insertion_time.unwrap().to_rfc3339(),
            "2024-11-05T09:15:01+00:00"
        );
        assert_eq!(
            m.next_visible_time.unwrap().to_rfc3339(),
            "2024-11-05T09:25:02+00:00"
        );
        assert_eq!(m.text().unwrap(), "hello &amp; <world>");
        assert_eq!(messages[1].raw_text, "a&bAB");
        assert_eq!(messages[1].text(), None);
    }

    #[test]
    fn escaping_then_unescaping_gives_the_text_back() {
        let text = "<a href=\"x\">'&amp;'</a> &#zz;";
        assert_eq!(xml_unescape(&xml_escape(text)), text);
    }

    #[test]
    fn error_answers_yield_their_code() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>QueueNotFound</Code><Message>The specified queue does not exist.\nRequestId:x</Message></Error>";
        assert_eq!(xml_element(xml, "Code").unwrap(), "QueueNotFound");
        assert_eq!(xml_element("<a><Code /></a>", "Code").unwrap(), "");
    }

    #[test]
    fn queue_names_follow_the_service_rules() {
        assert!(validate_queue_name("device-sync").is_ok());
        assert!(validate_queue_name("device-sync-poison").is_ok());
        assert!(validate_queue_name("Device").is_err());
        assert!(validate_queue_name("a--b").is_err());
        assert!(validate_queue_name("ab").is_err());
        assert!(validate_queue_name("-ab").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_survives_escaping(text in ".{0,200}") {
            prop_assert_eq!(xml_unescape(&xml_escape(&text)), text);
        }

        #[test]
        fn parsing_arbitrary_answers_never_panics(xml in ".{0,300}") {
            let _ = parse_messages(&xml);
            let _ = xml_element(&xml, "Code");
        }
    }
}
