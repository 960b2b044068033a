//! Group commit: single-entity writes to one partition of one table that arrive while an
//! earlier write to that partition is on the wire are sent together, as one entity-group
//! transaction, when it returns.
//!
//! Why: under load every accepted offboard request writes its request row and its audit
//! row in its tenant's partition. Sharing a `$batch` turns k concurrent writes into one
//! round trip: fewer storage transactions (billed per transaction) and fewer wake-ups of
//! this process. A lone write is sent at once, on its own, as before: grouping never waits
//! for company, it only uses the time the previous write is in flight anyway.
//!
//! Each caller still gets its own answer. A batch is all-or-nothing, so when it fails every
//! write is sent again on its own and answers for itself (an insert that collides gets its
//! own `Conflict`). When the batch's outcome is unknown (no answer, 5xx after retries), an
//! insert that then conflicts counts as landed by the batch (`after_retry: true`) only if
//! no write of the group was inserted fresh: a batch applies all of its writes or none.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::batch::{BatchOp, MAX_BATCH_OPERATIONS};
use super::{ETag, Entity, TableClient, TableError};

/// A write that may share a batch: unconditional, so its outcome depends on nothing but
/// the row's existence.
#[derive(Debug, Clone)]
pub(crate) enum GroupWrite {
    Insert(Entity),
    UpsertReplace(Entity),
}

impl GroupWrite {
    fn entity(&self) -> &Entity {
        match self {
            Self::Insert(e) | Self::UpsertReplace(e) => e,
        }
    }

    fn to_batch_op(&self) -> BatchOp {
        match self.clone() {
            Self::Insert(e) => BatchOp::Insert(e),
            Self::UpsertReplace(e) => BatchOp::UpsertReplace(e),
        }
    }

    async fn send_alone(&self, table: &TableClient) -> Result<ETag, TableError> {
        match self {
            Self::Insert(e) => table.insert(e).await,
            Self::UpsertReplace(e) => table.upsert_replace(e).await,
        }
    }
}

/// (table, partition): writes to one lane may share a batch.
type LaneKey = (Arc<str>, String);

struct Pending {
    write: GroupWrite,
    answer: oneshot::Sender<Result<ETag, TableError>>,
}

/// The writes waiting per lane. A lane is present exactly while its sender task runs.
#[derive(Default)]
pub(crate) struct Lanes {
    waiting: Mutex<HashMap<LaneKey, Vec<Pending>>>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lanes")
    }
}

impl Lanes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LaneKey, Vec<Pending>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Queues `write` on its lane (starting the lane's sender when idle) and waits for its
/// own answer.
pub(crate) async fn submit(table: &TableClient, write: GroupWrite) -> Result<ETag, TableError> {
    let e = write.entity();
    super::keys::validate_key(super::KeyKind::PartitionKey, &e.partition_key)?;
    super::keys::validate_key(super::KeyKind::RowKey, &e.row_key)?;
    let key: LaneKey = (table.name.clone(), e.partition_key.clone());
    let (answer, reply) = oneshot::channel();
    let start = {
        let mut lanes = table.service.inner.lanes.lock();
        match lanes.get_mut(&key) {
            Some(queue) => {
                queue.push(Pending { write, answer });
                false
            }
            None => {
                lanes.insert(key.clone(), vec![Pending { write, answer }]);
                true
            }
        }
    };
    if start {
        // Its own task: a caller that gives up (host timeout) must not take the writes of
        // the others down with it.
        tokio::spawn(run_lane(table.clone(), key));
    }
    reply.await.unwrap_or_else(|_| {
        Err(TableError::Service {
            status: 500,
            code: "GroupWriterStopped".into(),
            message: "the batch writer stopped before answering".into(),
        })
    })
}

/// Removes the lane if its sender ends abnormally (a panic where panics unwind, as in tests;
/// the release profile aborts): a lane left behind would queue writes that nobody sends. Dropping the pending senders answers their callers. A normal
/// end removes the lane itself, under the same lock that sees it empty, and disarms this:
/// once the lock is released a new caller may already have started a new lane under the
/// same key, which must not be touched.
struct LaneGuard {
    table: TableClient,
    key: LaneKey,
    armed: bool,
}

impl Drop for LaneGuard {
    fn drop(&mut self) {
        if self.armed {
            self.table.service.inner.lanes.lock().remove(&self.key);
        }
    }
}

async fn run_lane(table: TableClient, key: LaneKey) {
    let mut guard = LaneGuard {
        table,
        key,
        armed: true,
    };
    loop {
        let group = {
            let mut lanes = guard.table.service.inner.lanes.lock();
            match lanes.get_mut(&guard.key) {
                Some(queue) if !queue.is_empty() => take_group(queue),
                _ => {
                    lanes.remove(&guard.key);
                    guard.armed = false;
                    return;
                }
            }
        };
        send_group(&guard.table, group).await;
    }
}

/// Up to 100 writes with distinct row keys (a batch may touch a row once); the rest wait
/// for the next round, in arrival order.
fn take_group(queue: &mut Vec<Pending>) -> Vec<Pending> {
    let mut rows = HashSet::new();
    let mut group = Vec::new();
    let mut rest = Vec::new();
    for p in queue.drain(..) {
        if group.len() < MAX_BATCH_OPERATIONS && rows.insert(p.write.entity().row_key.clone()) {
            group.push(p);
        } else {
            rest.push(p);
        }
    }
    *queue = rest;
    group
}

async fn send_group(table: &TableClient, mut group: Vec<Pending>) {
    if group.len() == 1 {
        if let Some(p) = group.pop() {
            let result = p.write.send_alone(table).await;
            let _ = p.answer.send(result);
        }
        return;
    }
    let ops: Vec<BatchOp> = group.iter().map(|p| p.write.to_batch_op()).collect();
    tracing::debug!(table = %table.name, writes = ops.len(), "group commit");
    let failure = match table.batch(&ops).await {
        Ok(etags) => {
            for (p, etag) in group.into_iter().zip(etags) {
                let result = etag.ok_or_else(|| {
                    TableError::Decode("the batch answer has no ETag for a write".into())
                });
                // A caller that gave up no longer listens; its write stands.
                let _ = p.answer.send(result);
            }
            return;
        }
        Err(e) => e,
    };
    let unknown = outcome_unknown(&failure);
    tracing::debug!(table = %table.name, error = %failure, unknown, "group commit failed; writing one by one");
    let results = futures::future::join_all(group.iter().map(|p| p.write.send_alone(table))).await;
    let any_fresh_insert = group
        .iter()
        .zip(&results)
        .any(|(p, r)| matches!(p.write, GroupWrite::Insert(_)) && r.is_ok());
    for (p, result) in group.into_iter().zip(results) {
        let result = match result {
            Err(TableError::Conflict { code, .. }) if unknown && !any_fresh_insert => {
                Err(TableError::Conflict {
                    code,
                    after_retry: true,
                })
            }
            other => other,
        };
        let _ = p.answer.send(result);
    }
}

/// Whether a failed batch may nevertheless have been applied: anything but a refusal the
/// service gave to the first attempt.
fn outcome_unknown(e: &TableError) -> bool {
    match e {
        TableError::BatchFailed { after_retry, .. }
        | TableError::Conflict { after_retry, .. }
        | TableError::PreconditionFailed { after_retry } => *after_retry,
        TableError::NotFound { .. }
        | TableError::InvalidBatch(_)
        | TableError::InvalidKey { .. }
        | TableError::InvalidTableName { .. }
        | TableError::InvalidContinuation
        | TableError::InvalidConfig(_)
        | TableError::Auth(_) => false,
        TableError::Service { status, .. } => {
            reqwest::StatusCode::from_u16(*status).is_ok_and(super::http::is_uncertain)
        }
        // A success answer that could not be read: the batch was most likely applied.
        TableError::Decode(_) | TableError::Throttled { .. } | TableError::Transport(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, Response};
    use base64::Engine as _;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::clients::http::RetryPolicy;
    use crate::clients::tables::{ConnectionString, TableOptions, TableService};

    /// What the scripted service answers a request: (status, body).
    type Answer = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        body: String,
    }

    impl Seen {
        fn is_batch(&self) -> bool {
            self.path.ends_with("$batch")
        }
        /// Operations inside a `$batch` body (one request line each).
        fn operations(&self) -> usize {
            self.body.matches(" HTTP/1.1\r\n").count()
        }
        fn row(&self) -> String {
            let v: serde_json::Value = serde_json::from_str(&self.body).expect("an entity body");
            v["RowKey"].as_str().expect("RowKey").to_owned()
        }
    }

    /// A table endpoint that records every request and holds the first one until
    /// [`Script::release_first`], so the writes behind it queue up deterministically.
    struct Script {
        seen: Arc<Mutex<Vec<Seen>>>,
        gate: Arc<Semaphore>,
        table: TableClient,
    }

    impl Script {
        async fn start(answer: Box<Answer>) -> Self {
            Self::start_gated(answer, true).await
        }

        async fn start_gated(answer: Box<Answer>, hold_first: bool) -> Self {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let gate = Arc::new(Semaphore::new(if hold_first { 0 } else { usize::MAX >> 4 }));
            let count = Arc::new(AtomicUsize::new(0));
            let answer: Arc<Answer> = Arc::from(answer);
            let (s, g) = (seen.clone(), gate.clone());
            let app = axum::Router::new().fallback(move |req: Request<Body>| {
                let (seen, gate, count, answer) =
                    (s.clone(), g.clone(), count.clone(), answer.clone());
                async move {
                    let path = req.uri().path().to_owned();
                    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                        .await
                        .expect("body");
                    let request = Seen {
                        path,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    seen.lock().expect("log").push(request.clone());
                    if count.fetch_add(1, Ordering::SeqCst) == 0 {
                        gate.acquire().await.expect("gate").forget();
                    }
                    let (status, body) = answer(&request);
                    Response::builder()
                        .status(status)
                        .header("ETag", "W/\"datetime'2026-11-29T00%3A00%3A00Z'\"")
                        .header("Content-Type", "application/json")
                        .body(Body::from(body))
                        .expect("response")
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            tokio::spawn(async move { axum::serve(listener, app).await });
            // The scripted endpoint checks no signature: any base64 key will do.
            let key = base64::engine::general_purpose::STANDARD.encode(b"scripted-endpoint");
            let cs = ConnectionString::parse(&format!(
                "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};\
                 TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1"
            ))
            .expect("connection string");
            let service = TableService::from_connection_string(
                &cs,
                TableOptions {
                    retry: RetryPolicy {
                        max_retries: 1,
                        initial_delay: Duration::from_millis(1),
                        max_delay: Duration::from_millis(1),
                        max_retry_after: Duration::from_secs(1),
                    },
                    ..TableOptions::default()
                },
            )
            .expect("service");
            Self {
                seen,
                gate,
                table: service.table("Things").expect("table"),
            }
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().expect("log").clone()
        }

        fn queued(&self) -> usize {
            self.table
                .service
                .inner
                .lanes
                .lock()
                .get(&(self.table.name.clone(), "p".to_owned()))
                .map_or(0, Vec::len)
        }

        /// Sends `r0` (held by the service), queues `rows` behind it, then lets `r0` through.
        async fn first_then(
            &self,
            rows: &[&str],
            write: fn(Entity) -> GroupWrite,
        ) -> Vec<Result<ETag, TableError>> {
            let t = self.table.clone();
            let first =
                tokio::spawn(async move { submit(&t, write(Entity::new("p", "r0"))).await });
            while self.seen().is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let rest: Vec<_> = rows
                .iter()
                .map(|r| {
                    let (t, e) = (self.table.clone(), Entity::new("p", *r).with("N", 1));
                    tokio::spawn(async move { submit(&t, write(e)).await })
                })
                .collect();
            while self.queued() < rows.len() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            self.gate.add_permits(1);
            first.await.expect("task").expect("the held write lands");
            let mut out = Vec::new();
            for r in rest {
                out.push(r.await.expect("task"));
            }
            out
        }
    }

    fn batch_success(n: usize) -> String {
        let mut body = String::from(
            "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_1\r\n\r\n",
        );
        for i in 0..n {
            body.push_str(&format!(
                "--changesetresponse_1\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\nETag: W/\"{i}\"\r\n\r\n\r\n"
            ));
        }
        body.push_str("--changesetresponse_1--\r\n--batchresponse_1--\r\n");
        body
    }

    /// `Some(after_retry)` for a Conflict, `None` for anything else.
    fn conflict(r: &Result<ETag, TableError>) -> Option<bool> {
        match r {
            Err(TableError::Conflict { after_retry, .. }) => Some(*after_retry),
            _ => None,
        }
    }

    const EXISTS: &str =
        r#"{"odata.error":{"code":"EntityAlreadyExists","message":{"value":"exists"}}}"#;

    #[tokio::test]
    async fn writes_that_queue_behind_one_in_flight_share_one_batch() {
        let script = Script::start(Box::new(|r: &Seen| {
            if r.is_batch() {
                (202, batch_success(r.operations()))
            } else {
                (204, String::new())
            }
        }))
        .await;
        let rows = ["r1", "r2", "r3", "r4", "r5"];
        let results = script.first_then(&rows, GroupWrite::Insert).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let seen = script.seen();
        assert_eq!(seen.len(), 2, "one lone write, then one batch: {seen:?}");
        assert!(!seen[0].is_batch());
        assert!(seen[1].is_batch());
        assert_eq!(seen[1].operations(), 5);
        for r in rows {
            assert!(seen[1].body.contains(&format!("\"RowKey\":\"{r}\"")));
        }
    }

    #[tokio::test]
    async fn after_a_batch_of_unknown_outcome_conflicts_everywhere_mean_it_landed() {
        let script = Script::start(Box::new(|r: &Seen| match r.is_batch() {
            true => (500, String::new()),
            false if r.row() == "r0" => (204, String::new()),
            false => (409, EXISTS.to_owned()),
        }))
        .await;
        let results = script.first_then(&["r1", "r2"], GroupWrite::Insert).await;
        for r in results {
            assert_eq!(conflict(&r), Some(true), "{r:?}");
        }
        let seen = script.seen();
        assert_eq!(
            seen.iter().filter(|s| s.is_batch()).count(),
            2,
            "tried and retried"
        );
        assert_eq!(
            seen.iter().filter(|s| !s.is_batch()).count(),
            3,
            "then one by one"
        );
    }

    #[tokio::test]
    async fn a_fresh_insert_proves_the_batch_did_not_land_so_a_conflict_is_real() {
        let script = Script::start(Box::new(|r: &Seen| match r.is_batch() {
            true => (503, String::new()),
            false if r.row() == "r2" => (409, EXISTS.to_owned()),
            false => (204, String::new()),
        }))
        .await;
        let results = script.first_then(&["r1", "r2"], GroupWrite::Insert).await;
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert_eq!(conflict(&results[1]), Some(false), "{:?}", results[1]);
    }

    #[tokio::test]
    async fn a_refused_batch_answers_each_write_for_itself() {
        // The batch names operation 1 (r2) as the one that exists: nothing was applied.
        let script = Script::start(Box::new(|r: &Seen| match r.is_batch() {
            true => (
                400,
                r#"{"odata.error":{"code":"EntityAlreadyExists","message":{"value":"1:exists"}}}"#
                    .to_owned(),
            ),
            false if r.row() == "r2" => (409, EXISTS.to_owned()),
            false => (204, String::new()),
        }))
        .await;
        let results = script
            .first_then(&["r1", "r2", "r3"], GroupWrite::Insert)
            .await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert_eq!(conflict(&results[1]), Some(false), "{:?}", results[1]);
        assert_eq!(
            script.seen().iter().filter(|s| s.is_batch()).count(),
            1,
            "a refusal is not retried"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lanes_that_end_and_start_again_answer_every_write() {
        // Bursts that start while the previous lane winds down, 400 times. (A sender that
        // removed its lane a second time on exit once dropped the writes of a lane started
        // in between; the window is too narrow for this test to hit reliably, the `armed`
        // flag closes it by construction.)
        let script = Script::start_gated(
            Box::new(|r: &Seen| {
                if r.is_batch() {
                    (202, batch_success(r.operations()))
                } else {
                    (204, String::new())
                }
            }),
            false,
        )
        .await;
        for round in 0..400 {
            let calls = (0..3).map(|i| {
                let t = script.table.clone();
                tokio::spawn(async move {
                    submit(
                        &t,
                        GroupWrite::UpsertReplace(Entity::new("p", format!("{round}-{i}"))),
                    )
                    .await
                })
            });
            for call in futures::future::join_all(calls).await {
                call.expect("task")
                    .expect("every write answered by its send");
            }
        }
    }

    #[test]
    fn a_group_touches_each_row_once_and_holds_at_most_a_hundred() {
        let pending = |row: &str| Pending {
            write: GroupWrite::UpsertReplace(Entity::new("p", row)),
            answer: oneshot::channel().0,
        };
        let mut queue: Vec<Pending> = ["a", "b", "a", "c"].into_iter().map(pending).collect();
        let group = take_group(&mut queue);
        let rows = |v: &[Pending]| {
            v.iter()
                .map(|p| p.write.entity().row_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(&group), ["a", "b", "c"]);
        assert_eq!(rows(&queue), ["a"], "the second write of a waits its turn");

        let mut queue: Vec<Pending> = (0..150).map(|i| pending(&i.to_string())).collect();
        assert_eq!(take_group(&mut queue).len(), 100);
        assert_eq!(queue.len(), 50);
        assert_eq!(queue[0].write.entity().row_key, "100", "arrival order kept");
    }
}
