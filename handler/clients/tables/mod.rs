//! Azure Table Storage over REST (DESIGN §8): an in-house client on one pooled `reqwest`
//! client, with SharedKeyLite or bearer auth, typed Edm values, ETags, paging and batches.
//!
//! Start at [`TableService`] (`from_settings`), then [`TableService::table`].

mod batch;
mod conn;
mod continuation;
mod error;
pub mod filter;
mod group;
mod http;
mod keys;
mod value;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use bytes::Bytes;
use futures::Stream;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::clients::http::{HttpSettings, RetryPolicy, build_client, error_chain};
use crate::config::StorageSettings;

pub use batch::{BatchOp, MAX_BATCH_OPERATIONS};
pub use conn::ConnectionString;
pub use continuation::Continuation;
pub use error::{KeyKind, TableError};
pub use keys::{validate_key, validate_table_name};
pub use value::{ETag, EdmValue, Entity, FromEdm, TableEntity};

use http::{Auth, Pipeline, Reply, Request};
use keys::{entity_path, percent_encode_into};
use value::{decode_entity, encode_entity};

const JSON: &str = "application/json";

/// Tuning of a [`TableService`]; `TableOptions::with_prefix(p)` keeps the defaults.
#[derive(Debug, Clone)]
pub struct TableOptions {
    /// Prepended to every logical table name (`TABLE_PREFIX`).
    pub table_prefix: String,
    /// Limit of one attempt, connection to last byte.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries of transient failures (the shared policy; tables default to 3 retries).
    pub retry: RetryPolicy,
    /// A client to share (one pool per process); `None` builds one with the timeouts above.
    pub http_client: Option<reqwest::Client>,
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            table_prefix: String::new(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy {
                max_retries: 3,
                initial_delay: Duration::from_millis(250),
                max_delay: Duration::from_secs(8),
                max_retry_after: Duration::from_secs(30),
            },
            http_client: None,
        }
    }
}

impl TableOptions {
    /// The defaults with a table prefix.
    #[must_use]
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            table_prefix: prefix.into(),
            ..Self::default()
        }
    }
}

/// The condition of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// Unconditional (`If-Match: *`), but the entity must exist.
    Any,
    /// Only if the entity still has this ETag, else [`TableError::PreconditionFailed`].
    Etag(ETag),
}

impl IfMatch {
    fn as_header(&self) -> &str {
        match self {
            Self::Any => "*",
            Self::Etag(e) => e.as_str(),
        }
    }
}

/// One page of a query.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub entities: Vec<Entity>,
    /// Where the next page starts; `None` on the last page.
    pub continuation: Option<Continuation>,
}

/// A storage account's Table service. Cheap to clone (one `Arc`); share one per process.
#[derive(Debug, Clone)]
pub struct TableService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pipeline: Pipeline,
    prefix: String,
    /// Tables created (or found) by this process: `create_if_not_exists` costs one call each.
    created: Mutex<HashSet<String>>,
    /// Writes waiting to share a batch (see `group`).
    lanes: group::Lanes,
}

impl TableService {
    /// The service of the product's settings: a connection string, or the managed identity
    /// (user-assigned when `client_id` is set) with `https://storage.azure.com/.default`.
    ///
    /// # Errors
    /// [`TableError::InvalidConfig`] for a bad connection string or URI,
    /// [`TableError::Auth`] when the managed identity credential cannot be built.
    pub fn from_settings(
        settings: &StorageSettings,
        options: TableOptions,
    ) -> Result<Self, TableError> {
        match settings {
            StorageSettings::ConnectionString(cs) => {
                Self::from_connection_string(&ConnectionString::parse(cs.expose_secret())?, options)
            }
            StorageSettings::Identity {
                table_service_uri,
                client_id,
            } => {
                let credential =
                    ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                        user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                        ..ManagedIdentityCredentialOptions::default()
                    }))
                    .map_err(|e| {
                        TableError::Auth(format!("managed identity: {}", error_chain(&e)))
                    })?;
                Self::with_credential(table_service_uri, credential, options)
            }
        }
    }

    /// A service authenticated with the account key (SharedKeyLite).
    ///
    /// # Errors
    /// [`TableError::InvalidConfig`] when the key is not base64 or the client cannot be built.
    pub fn from_connection_string(
        cs: &ConnectionString,
        options: TableOptions,
    ) -> Result<Self, TableError> {
        let mac = Hmac::new_from_slice(&cs.key_bytes()?)
            .map_err(|_| TableError::InvalidConfig("AccountKey cannot key an HMAC".into()))?;
        let auth = Auth::SharedKeyLite {
            account: cs.account_name.clone(),
            mac,
        };
        Self::build(&cs.table_endpoint, auth, options)
    }

    /// A service authenticated with bearer tokens from any credential (managed identity,
    /// a test credential, ...), e.g. `https://acct.table.core.windows.net/`.
    ///
    /// # Errors
    /// [`TableError::InvalidConfig`] for a URI that is not http(s), or a client that cannot be built.
    pub fn with_credential(
        table_service_uri: &Url,
        credential: Arc<dyn TokenCredential>,
        options: TableOptions,
    ) -> Result<Self, TableError> {
        Self::build(table_service_uri, Auth::Bearer(credential), options)
    }

    fn build(endpoint: &Url, auth: Auth, options: TableOptions) -> Result<Self, TableError> {
        if !matches!(endpoint.scheme(), "http" | "https") || !endpoint.has_host() {
            return Err(TableError::InvalidConfig(
                "the table endpoint is not an http(s) URL".into(),
            ));
        }
        let http = match options.http_client {
            Some(client) => client,
            None => build_client(&HttpSettings {
                request_timeout: options.timeout,
                connect_timeout: options.connect_timeout,
                ..HttpSettings::default()
            })
            .map_err(|e| TableError::InvalidConfig(format!("HTTP client: {}", error_chain(&e))))?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                pipeline: Pipeline {
                    http,
                    base: conn::base_url(endpoint),
                    auth,
                    retry: options.retry,
                    timeout: options.timeout,
                },
                prefix: options.table_prefix,
                created: Mutex::new(HashSet::new()),
                lanes: group::Lanes::default(),
            }),
        })
    }

    /// The table `TABLE_PREFIX + logical_name`.
    ///
    /// # Errors
    /// [`TableError::InvalidTableName`] unless the full name is alphanumeric, 3-63
    /// characters and starts with a letter.
    pub fn table(&self, logical_name: &str) -> Result<TableClient, TableError> {
        let name = format!("{}{logical_name}", self.inner.prefix);
        validate_table_name(&name)?;
        Ok(TableClient {
            service: self.clone(),
            name: name.into(),
        })
    }

    /// The prefix of every table name.
    #[must_use]
    pub fn table_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Readiness: lists at most one table, once, without retries.
    ///
    /// # Errors
    /// Any network, auth or service failure.
    pub async fn ping(&self) -> Result<(), TableError> {
        let mut req = Request::new(Method::GET, "Tables");
        req.query = "%24top=1";
        req.retry = false;
        self.inner.pipeline.send(&req).await?.success().map(drop)
    }

    async fn send(&self, req: &Request<'_>) -> Result<Reply, TableError> {
        self.inner.pipeline.send(req).await
    }
}

/// One table. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TableClient {
    service: TableService,
    name: Arc<str>,
}

#[derive(Deserialize)]
struct QueryBody {
    value: Vec<Map<String, Value>>,
}

impl TableClient {
    /// The full table name (prefix included).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the table unless it exists; after the first success, free for this process.
    ///
    /// # Errors
    /// Any failure other than `TableAlreadyExists`.
    pub async fn create_if_not_exists(&self) -> Result<(), TableError> {
        if self.is_known() {
            return Ok(());
        }
        let body = serde_json::to_vec(&serde_json::json!({ "TableName": &*self.name }))
            .map_err(|e| TableError::Decode(e.to_string()))?;
        let mut req = Request::new(Method::POST, "Tables");
        req.prefer_no_content = true;
        req.body = Some((Bytes::from(body), JSON));
        let reply = self.service.send(&req).await?;
        match reply.success() {
            // Already there (perhaps made by this call's own retried first attempt): done.
            Ok(_) => {}
            Err(TableError::Conflict { code, .. }) if code == "TableAlreadyExists" => {}
            Err(e) => return Err(e),
        }
        self.service
            .inner
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(self.name.to_string());
        Ok(())
    }

    fn is_known(&self) -> bool {
        self.service
            .inner
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&*self.name)
    }

    /// Point read; the entity carries its ETag.
    ///
    /// # Errors
    /// Invalid keys; `NotFound { code: "TableNotFound" }` when the table is missing; any
    /// other failure. A missing entity is `Ok(None)`.
    pub async fn get(
        &self,
        partition_key: &str,
        row_key: &str,
    ) -> Result<Option<Entity>, TableError> {
        let path = entity_path(&self.name, partition_key, row_key)?;
        let reply = self.service.send(&Request::new(Method::GET, &path)).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return match reply.into_error() {
                TableError::NotFound { code } if code == "TableNotFound" => {
                    Err(TableError::NotFound { code })
                }
                _ => Ok(None),
            };
        }
        let reply = reply.success()?;
        let etag = reply.etag();
        let obj: Map<String, Value> =
            serde_json::from_slice(&reply.body).map_err(|e| TableError::Decode(e.to_string()))?;
        decode_entity(obj, etag).map(Some)
    }

    /// Inserts a new entity; returns its ETag.
    ///
    /// # Errors
    /// [`TableError::Conflict`] (`EntityAlreadyExists`) when it exists. With
    /// `after_retry: true` an earlier attempt may have inserted it: read it back before
    /// treating the conflict as someone else's row.
    pub async fn insert(&self, entity: &Entity) -> Result<ETag, TableError> {
        keys::validate_key(KeyKind::PartitionKey, &entity.partition_key)?;
        keys::validate_key(KeyKind::RowKey, &entity.row_key)?;
        let mut req = Request::new(Method::POST, &self.name);
        req.prefer_no_content = true;
        req.body = Some((Bytes::from(encode_entity(entity)?), JSON));
        self.write_reply(&req).await
    }

    /// [`Self::insert`], sent in one entity-group transaction with the writes of the same
    /// partition that queue up while an earlier one is in flight (group commit, see
    /// `group.rs`). Same answers as `insert`, one per caller.
    ///
    /// # Errors
    /// As [`Self::insert`].
    pub async fn insert_grouped(&self, entity: Entity) -> Result<ETag, TableError> {
        group::submit(self, group::GroupWrite::Insert(entity)).await
    }

    /// [`Self::upsert_replace`] with group commit (see [`Self::insert_grouped`]).
    ///
    /// # Errors
    /// As [`Self::upsert_replace`].
    pub async fn upsert_replace_grouped(&self, entity: Entity) -> Result<ETag, TableError> {
        group::submit(self, group::GroupWrite::UpsertReplace(entity)).await
    }

    /// Inserts, or merges into the existing entity (other properties kept).
    ///
    /// # Errors
    /// Invalid keys; any service failure.
    pub async fn upsert_merge(&self, entity: &Entity) -> Result<ETag, TableError> {
        self.write(merge(), entity, None).await
    }

    /// Inserts, or replaces the existing entity (properties not given are removed).
    ///
    /// # Errors
    /// Invalid keys; any service failure.
    pub async fn upsert_replace(&self, entity: &Entity) -> Result<ETag, TableError> {
        self.write(Method::PUT, entity, None).await
    }

    /// Merges into an existing entity if it matches `if_match`.
    ///
    /// # Errors
    /// [`TableError::PreconditionFailed`] when the ETag is stale, [`TableError::NotFound`]
    /// when the entity does not exist.
    pub async fn update_merge(
        &self,
        entity: &Entity,
        if_match: IfMatch,
    ) -> Result<ETag, TableError> {
        self.write(merge(), entity, Some(&if_match)).await
    }

    /// Replaces an existing entity if it matches `if_match`.
    ///
    /// # Errors
    /// [`TableError::PreconditionFailed`] when the ETag is stale, [`TableError::NotFound`]
    /// when the entity does not exist.
    pub async fn update_replace(
        &self,
        entity: &Entity,
        if_match: IfMatch,
    ) -> Result<ETag, TableError> {
        self.write(Method::PUT, entity, Some(&if_match)).await
    }

    async fn write(
        &self,
        method: Method,
        entity: &Entity,
        if_match: Option<&IfMatch>,
    ) -> Result<ETag, TableError> {
        let path = entity_path(&self.name, &entity.partition_key, &entity.row_key)?;
        let mut req = Request::new(method, &path);
        req.if_match = if_match;
        req.body = Some((Bytes::from(encode_entity(entity)?), JSON));
        self.write_reply(&req).await
    }

    async fn write_reply(&self, req: &Request<'_>) -> Result<ETag, TableError> {
        let reply = self.service.send(req).await?.success()?;
        reply
            .etag()
            .ok_or_else(|| TableError::Decode("the service answered without an ETag".into()))
    }

    /// Deletes an entity if it matches `if_match`. Returns `false` when there was no such
    /// entity (already deleted: the end state the caller wanted, so not an error).
    ///
    /// # Errors
    /// [`TableError::PreconditionFailed`] when the ETag is stale; `NotFound` with code
    /// `TableNotFound` when the table is missing; any other failure.
    pub async fn delete(
        &self,
        partition_key: &str,
        row_key: &str,
        if_match: IfMatch,
    ) -> Result<bool, TableError> {
        let path = entity_path(&self.name, partition_key, row_key)?;
        let mut req = Request::new(Method::DELETE, &path);
        req.if_match = Some(&if_match);
        match self.service.send(&req).await?.success() {
            Ok(_) => Ok(true),
            Err(TableError::NotFound { code }) if code != "TableNotFound" => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One page of entities (at most 1,000, or `top`), in key order.
    ///
    /// `filter` is an OData expression: build it with [`filter`] when any part comes from
    /// input. `select` limits the properties (keys are always returned).
    ///
    /// # Errors
    /// `NotFound` when the table is missing; a 400 `Service` error for a bad filter; any
    /// other failure.
    pub async fn query(
        &self,
        filter: Option<&str>,
        select: Option<&[&str]>,
        top: Option<u32>,
        continuation: Option<Continuation>,
    ) -> Result<Page, TableError> {
        let mut query = String::new();
        let mut param = |name: &str, value: &str| {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(name);
            query.push('=');
            percent_encode_into(&mut query, value);
        };
        if let Some(f) = filter {
            param("%24filter", f);
        }
        if let Some(fields) = select {
            let mut list = String::from("PartitionKey,RowKey");
            for f in fields
                .iter()
                .filter(|f| !matches!(**f, "PartitionKey" | "RowKey"))
            {
                list.push(',');
                list.push_str(f);
            }
            param("%24select", &list);
        }
        if let Some(top) = top {
            param("%24top", &top.to_string());
        }
        if let Some(c) = &continuation {
            param("NextPartitionKey", &c.next_partition_key);
            if let Some(rk) = &c.next_row_key {
                param("NextRowKey", rk);
            }
        }
        let path = format!("{}()", self.name);
        let mut req = Request::new(Method::GET, &path);
        req.query = &query;
        let reply = self.service.send(&req).await?.success()?;
        let body: QueryBody =
            serde_json::from_slice(&reply.body).map_err(|e| TableError::Decode(e.to_string()))?;
        Ok(Page {
            entities: body
                .value
                .into_iter()
                .map(|obj| decode_entity(obj, None))
                .collect::<Result<_, _>>()?,
            continuation: Continuation::from_headers(&reply.headers),
        })
    }

    /// Every page of a query, fetched one after the other as the stream is polled.
    pub fn query_pages<'a>(
        &'a self,
        filter: Option<&'a str>,
        select: Option<&'a [&'a str]>,
    ) -> impl Stream<Item = Result<Vec<Entity>, TableError>> + 'a {
        futures::stream::try_unfold(
            Some(None),
            move |state: Option<Option<Continuation>>| async move {
                let Some(continuation) = state else {
                    return Ok(None);
                };
                let page = self.query(filter, select, None, continuation).await?;
                Ok(Some((page.entities, page.continuation.map(Some))))
            },
        )
    }

    /// Every entity a query matches, following continuations.
    ///
    /// # Errors
    /// As [`TableClient::query`].
    pub async fn query_all(
        &self,
        filter: Option<&str>,
        select: Option<&[&str]>,
    ) -> Result<Vec<Entity>, TableError> {
        let mut all = Vec::new();
        let mut continuation = None;
        loop {
            let page = self.query(filter, select, None, continuation).await?;
            all.extend(page.entities);
            match page.continuation {
                Some(c) => continuation = Some(c),
                None => return Ok(all),
            }
        }
    }

    /// An entity-group transaction: up to 100 operations on one partition, applied all or
    /// none. Returns each operation's new ETag (`None` for deletes), in order.
    ///
    /// # Errors
    /// [`TableError::InvalidBatch`] before sending for more than 100 operations or mixed
    /// partitions; [`TableError::BatchFailed`] with the failing operation's index when the
    /// service refused one (then nothing was written); any other failure.
    pub async fn batch(&self, ops: &[BatchOp]) -> Result<Vec<Option<ETag>>, TableError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let (content_type, body) =
            batch::build(&self.service.inner.pipeline.base, &self.name, ops)?;
        let mut req = Request::new(Method::POST, "$batch");
        req.body = Some((Bytes::from(body), &content_type));
        let reply = self.service.send(&req).await?;
        if reply.status.is_success() {
            return batch::parse_response(&reply.body, ops.len(), reply.retried);
        }
        // Some failures arrive as a plain error answer whose message still names the operation.
        let e = error::parse_error_body(&reply.body, None);
        match batch::split_index(&e.message) {
            (Some(index), message) if reply.status.is_client_error() => {
                Err(TableError::BatchFailed {
                    index,
                    status: reply.status.as_u16(),
                    code: e.code,
                    message: message.to_owned(),
                    after_retry: reply.retried,
                })
            }
            _ => Err(reply.into_error()),
        }
    }
}

fn merge() -> Method {
    Method::from_bytes(b"MERGE").unwrap_or(Method::PATCH)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A credential with a fixed answer (the `async_trait` signature written out by hand).
    #[derive(Debug)]
    struct Fixed(Option<&'static str>);

    impl TokenCredential for Fixed {
        fn get_token<'life0, 'life1, 'life2, 'life3, 'async_trait>(
            &'life0 self,
            scopes: &'life1 [&'life2 str],
            _options: Option<TokenRequestOptions<'life3>>,
        ) -> Pin<Box<dyn Future<Output = azure_core::Result<AccessToken>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            'life1: 'async_trait,
            'life2: 'async_trait,
            'life3: 'async_trait,
            Self: 'async_trait,
        {
            assert_eq!(scopes, ["https://storage.azure.com/.default"]);
            let answer = match self.0 {
                Some(token) => Ok(AccessToken::new(
                    token,
                    time::OffsetDateTime::now_utc() + time::Duration::hours(1),
                )),
                None => Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "no identity here",
                )),
            };
            Box::pin(async move { answer })
        }
    }

    /// Accepts one request and answers an empty table list; returns the request head.
    async fn one_shot_server() -> (Url, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url =
            Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
        let head = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0_u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.expect("read");
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"value":[]}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&head).to_ascii_lowercase()
        });
        (url, head)
    }

    /// Answers one request per status in `statuses`, in order, on one keep-alive connection.
    async fn scripted_server(statuses: &'static [u16]) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url =
            Url::parse(&format!("http://{}/", listener.local_addr().expect("addr"))).expect("url");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            for status in statuses {
                let mut request = Vec::new();
                let mut buf = [0_u8; 4096];
                // Head, then the body its Content-Length announces.
                loop {
                    let n = socket.read(&mut buf).await.expect("read");
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let body = r#"{"odata.error":{"code":"EntityAlreadyExists","message":{"value":"exists"}}}"#;
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nRetry-After: 0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.expect("write");
            }
        });
        url
    }

    async fn insert_after(statuses: &'static [u16]) -> TableError {
        let service = TableService::with_credential(
            &scripted_server(statuses).await,
            Arc::new(Fixed(Some("tok"))),
            TableOptions {
                retry: crate::clients::http::RetryPolicy {
                    max_retries: 3,
                    initial_delay: Duration::from_millis(1),
                    max_delay: Duration::from_millis(1),
                    max_retry_after: Duration::from_secs(1),
                },
                ..TableOptions::default()
            },
        )
        .expect("service");
        service
            .table("Things")
            .expect("table")
            .insert(&Entity::new("p", "r"))
            .await
            .expect_err("a conflict")
    }

    #[tokio::test]
    async fn a_conflict_says_after_retry_only_when_an_earlier_attempt_may_have_landed() {
        // A 429 changed nothing: the conflict is someone else's row.
        assert!(
            matches!(
                insert_after(&[429, 409]).await,
                TableError::Conflict {
                    after_retry: false,
                    ..
                }
            ),
            "after a 429"
        );
        // A 503 may have been applied before the answer was lost or refused.
        assert!(
            matches!(
                insert_after(&[503, 409]).await,
                TableError::Conflict {
                    after_retry: true,
                    ..
                }
            ),
            "after a 503"
        );
    }

    #[tokio::test]
    async fn bearer_mode_sends_the_credentials_token_for_the_storage_scope() {
        let (url, head) = one_shot_server().await;
        let service = TableService::with_credential(
            &url,
            Arc::new(Fixed(Some("tok-123"))),
            TableOptions::default(),
        )
        .expect("service");
        service.ping().await.expect("ping");
        let head = head.await.expect("server");
        assert!(
            head.starts_with("get /tables?%24top=1 http/1.1\r\n"),
            "{head}"
        );
        for header in [
            "authorization: bearer tok-123\r\n",
            "x-ms-version: 2019-02-02\r\n",
            "accept: application/json;odata=minimalmetadata\r\n",
            "dataserviceversion: 3.0;netfx\r\n",
            "x-ms-date: ",
        ] {
            assert!(head.contains(header), "{header} missing in {head}");
        }
    }

    #[tokio::test]
    async fn a_credential_failure_is_an_auth_error_without_a_request() {
        let url = Url::parse("http://127.0.0.1:9/").expect("url");
        let service =
            TableService::with_credential(&url, Arc::new(Fixed(None)), TableOptions::default())
                .expect("service");
        let err = service.ping().await.expect_err("no token");
        assert!(
            matches!(&err, TableError::Auth(m) if m.contains("no identity here")),
            "{err:?}"
        );
    }

    #[test]
    fn the_service_is_cheap_to_clone_and_shareable() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<TableService>();
        shareable::<TableClient>();
        let cs = ConnectionString::parse("UseDevelopmentStorage=true").expect("dev storage");
        let service = TableService::from_connection_string(&cs, TableOptions::with_prefix("t"))
            .expect("service");
        assert!(matches!(
            service.table("x"),
            Err(TableError::InvalidTableName { .. })
        ));
        assert!(format!("{service:?}").contains("SharedKeyLite(devstoreaccount1)"));
        assert!(!format!("{service:?}").contains("Eby8"));
    }
}
