//! The Table Storage client against a real Azurite (never a fake): every operation the
//! product relies on, with a unique `TABLE_PREFIX` per test.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use defender_ops::clients::tables::{
    BatchOp, ConnectionString, Continuation, EdmValue, Entity, IfMatch, KeyKind, TableClient,
    TableEntity, TableError, TableOptions, TableService, filter,
};
use defender_ops::config::StorageSettings;
use dev_host::azurite::Azurite;
use dev_host::storage::{DEV_ACCOUNT_KEY, azurite_connection_string};
use time::macros::datetime;
use uuid::Uuid;

/// `DEFENDER_OPS_TEST_STORAGE`, or the Azurite this test process shares.
async fn storage_connection_string() -> String {
    Azurite::shared().await.expect("Azurite for the tests")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn unique_prefix() -> String {
    format!("t{}", &Uuid::new_v4().simple().to_string()[..12])
}

fn service_at(connection_string: &str, prefix: &str) -> TableService {
    let settings = StorageSettings::ConnectionString(connection_string.to_owned().into());
    TableService::from_settings(&settings, TableOptions::with_prefix(prefix)).expect("service")
}

async fn new_table(logical: &str) -> TableClient {
    let table = service_at(&storage_connection_string().await, &unique_prefix())
        .table(logical)
        .expect("valid name");
    table.create_if_not_exists().await.expect("table created");
    table
}

/// A service whose endpoint refuses connections: proves a call failed before sending.
fn unreachable_service() -> TableService {
    let cs = azurite_connection_string(free_port(), free_port());
    let mut options = TableOptions::with_prefix("t");
    options.retry.max_retries = 0;
    let cs = ConnectionString::parse(&cs).expect("connection string");
    TableService::from_connection_string(&cs, options).expect("service")
}

async fn count(table: &TableClient, filter: Option<&str>) -> usize {
    table.query_all(filter, None).await.expect("query").len()
}

#[tokio::test]
async fn create_if_not_exists_is_idempotent_within_and_across_processes() {
    let cs = storage_connection_string().await;
    let prefix = unique_prefix();
    let table = service_at(&cs, &prefix)
        .table("Devices")
        .expect("valid name");
    assert_eq!(table.name(), format!("{prefix}Devices"));
    table.create_if_not_exists().await.expect("created");
    table.create_if_not_exists().await.expect("cached");
    // A second service has an empty cache: the service answers TableAlreadyExists.
    let again = service_at(&cs, &prefix)
        .table("Devices")
        .expect("valid name");
    again
        .create_if_not_exists()
        .await
        .expect("already exists is fine");
    assert_eq!(count(&again, None).await, 0);
}

#[tokio::test]
async fn every_edm_type_round_trips_exactly() {
    let table = new_table("Types").await;
    let when = datetime!(2024-02-29 23:59:59.123_456_7 UTC);
    let entity = Entity::new("p", "r")
        .with("Text", "héllo \"world\"\nline")
        .with("Empty", "")
        .with("Flag", true)
        .with("Small", -7_i32)
        .with("Big", 9_007_199_254_740_993_i64)
        .with("Max", i64::MAX)
        .with("Ratio", 0.1)
        .with("Whole", 3.0)
        .with("At", when)
        .with(
            "Id",
            Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        )
        .with("Bytes", vec![0_u8, 1, 254, 255]);
    let etag = table.insert(&entity).await.expect("inserted");

    let read = table.get("p", "r").await.expect("read").expect("present");
    assert_eq!(read.etag.as_ref(), Some(&etag));
    assert!(read.timestamp.is_some());
    assert_eq!(
        read.props, entity.props,
        "every value and Edm type survives"
    );
    assert_eq!(read.get_i64("Big"), Some(9_007_199_254_740_993));
    assert_eq!(read.get_datetime("At"), Some(when));
    assert_eq!(read.get("Whole"), Some(&EdmValue::Double(3.0)));
    assert_eq!(read.get_binary("Bytes"), Some(&[0_u8, 1, 254, 255][..]));
    assert!(table.get("p", "missing").await.expect("read").is_none());
}

#[tokio::test]
async fn inserting_an_existing_entity_is_a_conflict() {
    let table = new_table("Conflicts").await;
    table
        .insert(&Entity::new("p", "r"))
        .await
        .expect("first insert");
    let err = table
        .insert(&Entity::new("p", "r"))
        .await
        .expect_err("second insert");
    assert!(
        matches!(&err, TableError::Conflict { code, after_retry: false } if code == "EntityAlreadyExists"),
        "{err:?}"
    );
}

#[tokio::test]
async fn writes_with_a_stale_etag_are_refused() {
    let table = new_table("Etags").await;
    let first = table
        .insert(&Entity::new("p", "r").with("N", 1))
        .await
        .expect("insert");
    let second = table
        .update_merge(
            &Entity::new("p", "r").with("N", 2),
            IfMatch::Etag(first.clone()),
        )
        .await
        .expect("fresh etag");
    assert_ne!(first, second);
    for result in [
        table
            .update_replace(&Entity::new("p", "r"), IfMatch::Etag(first.clone()))
            .await,
        table
            .update_merge(&Entity::new("p", "r"), IfMatch::Etag(first.clone()))
            .await,
    ] {
        assert!(
            matches!(
                result,
                Err(TableError::PreconditionFailed { after_retry: false })
            ),
            "{result:?}"
        );
    }
    let stale_delete = table.delete("p", "r", IfMatch::Etag(first)).await;
    assert!(
        matches!(stale_delete, Err(TableError::PreconditionFailed { .. })),
        "{stale_delete:?}"
    );
    let missing = table
        .update_merge(&Entity::new("p", "nope"), IfMatch::Any)
        .await;
    assert!(
        matches!(missing, Err(TableError::NotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(
        table
            .get("p", "r")
            .await
            .expect("read")
            .expect("kept")
            .get_i32("N"),
        Some(2)
    );
}

#[tokio::test]
async fn merge_keeps_other_properties_and_replace_drops_them() {
    let table = new_table("Merges").await;
    table
        .upsert_merge(
            &Entity::new("p", "r")
                .with("Offboard", true)
                .with("Name", "pc-1"),
        )
        .await
        .expect("upsert inserts");
    table
        .upsert_merge(&Entity::new("p", "r").with("Name", "pc-2"))
        .await
        .expect("upsert merges");
    let read = table.get("p", "r").await.expect("read").expect("present");
    assert_eq!(
        (read.get_bool("Offboard"), read.get_str("Name")),
        (Some(true), Some("pc-2"))
    );

    table
        .update_merge(
            &Entity::new("p", "r").with("Result", "Succeeded"),
            IfMatch::Any,
        )
        .await
        .expect("merge");
    let read = table.get("p", "r").await.expect("read").expect("present");
    assert_eq!(read.props.len(), 3);

    table
        .upsert_replace(&Entity::new("p", "r").with("Name", "pc-3"))
        .await
        .expect("replace");
    let read = table.get("p", "r").await.expect("read").expect("present");
    assert_eq!(read.props.len(), 1);
    assert_eq!(read.get_str("Name"), Some("pc-3"));
}

#[tokio::test]
async fn delete_removes_the_entity_and_reports_a_missing_one() {
    let table = new_table("Deletes").await;
    let etag = table.insert(&Entity::new("p", "r")).await.expect("insert");
    assert!(
        table
            .delete("p", "r", IfMatch::Etag(etag))
            .await
            .expect("delete")
    );
    assert!(table.get("p", "r").await.expect("read").is_none());
    assert!(
        !table
            .delete("p", "r", IfMatch::Any)
            .await
            .expect("already gone is not an error")
    );
}

#[tokio::test]
async fn a_missing_table_is_not_found() {
    let service = service_at(&storage_connection_string().await, &unique_prefix());
    let table = service.table("Never").expect("valid name");
    let err = table.get("p", "r").await.expect_err("no table");
    assert!(
        matches!(&err, TableError::NotFound { code } if code == "TableNotFound"),
        "{err:?}"
    );
    let err = table
        .query(None, None, None, None)
        .await
        .expect_err("no table");
    assert!(matches!(err, TableError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn queries_page_across_more_than_a_thousand_entities_with_opaque_tokens() {
    let table = new_table("Paging").await;
    for chunk in 0..11 {
        let ops: Vec<_> = (0..100)
            .map(|i| {
                BatchOp::Insert(
                    Entity::new("p", format!("{:05}", chunk * 100 + i)).with("Even", i % 2 == 0),
                )
            })
            .collect();
        table.batch(&ops).await.expect("batch");
    }
    table
        .insert(&Entity::new("q", "other"))
        .await
        .expect("other partition");

    let only_p = filter::eq("PartitionKey", "p");
    let first = table
        .query(Some(&only_p), None, None, None)
        .await
        .expect("page 1");
    assert_eq!(first.entities.len(), 1000, "Azurite pages at 1,000");
    let token = first.continuation.expect("more pages").to_token();
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "{token}"
    );

    let resumed = Continuation::from_token(&token).expect("our own token");
    let second = table
        .query(Some(&only_p), None, None, Some(resumed))
        .await
        .expect("page 2");
    assert_eq!(second.entities.len(), 100);
    assert!(second.continuation.is_none());
    assert_eq!(second.entities[0].row_key, "01000");

    assert_eq!(count(&table, Some(&only_p)).await, 1100);
    assert_eq!(count(&table, None).await, 1101);
    let even = filter::and(&only_p, &filter::eq("Even", true));
    assert_eq!(count(&table, Some(&even)).await, 550);

    let top = table
        .query(None, Some(&["Even"]), Some(5), None)
        .await
        .expect("top");
    assert_eq!(top.entities.len(), 5);
    assert!(top.continuation.is_some());
    assert_eq!(
        top.entities[0].partition_key, "p",
        "keys come back with $select"
    );

    use futures::TryStreamExt as _;
    let pages: Vec<Vec<Entity>> = table
        .query_pages(Some(&only_p), None)
        .try_collect()
        .await
        .expect("pages");
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 100]);

    assert!(matches!(
        Continuation::from_token("not a token!"),
        Err(TableError::InvalidContinuation)
    ));
}

#[tokio::test]
async fn a_batch_of_a_hundred_is_applied_and_returns_etags() {
    let table = new_table("Batches").await;
    table.insert(&Entity::new("p", "000")).await.expect("seed");
    let mut ops: Vec<_> = (1..99)
        .map(|i| BatchOp::UpsertReplace(Entity::new("p", format!("{i:03}"))))
        .collect();
    ops.push(BatchOp::Delete {
        partition_key: "p".into(),
        row_key: "000".into(),
        if_match: IfMatch::Any,
    });
    ops.push(BatchOp::Insert(Entity::new("p", "099").with("N", 99_i64)));
    assert_eq!(ops.len(), 100);
    let etags = table.batch(&ops).await.expect("batch of 100");
    assert_eq!(etags.len(), 100);
    assert!(etags[0].is_some() && etags[98].is_none() && etags[99].is_some());
    assert_eq!(count(&table, None).await, 99);

    let merge_ops = [
        BatchOp::UpsertMerge(Entity::new("p", "001").with("A", 1)),
        BatchOp::UpdateMerge(Entity::new("p", "002").with("B", 2), IfMatch::Any),
        BatchOp::UpdateReplace(
            Entity::new("p", "099"),
            etags[99].clone().map_or(IfMatch::Any, IfMatch::Etag),
        ),
    ];
    table.batch(&merge_ops).await.expect("merge batch");
    assert_eq!(
        table
            .get("p", "099")
            .await
            .expect("read")
            .expect("present")
            .props
            .len(),
        0
    );
}

#[tokio::test]
async fn oversized_and_mixed_batches_are_refused_before_sending() {
    let table = unreachable_service().table("Batches").expect("valid name");
    let ops: Vec<_> = (0..101)
        .map(|i| BatchOp::Insert(Entity::new("p", i.to_string())))
        .collect();
    assert!(matches!(
        table.batch(&ops).await,
        Err(TableError::InvalidBatch(_))
    ));
    let mixed = [
        BatchOp::Insert(Entity::new("p", "1")),
        BatchOp::Insert(Entity::new("q", "1")),
    ];
    assert!(matches!(
        table.batch(&mixed).await,
        Err(TableError::InvalidBatch(_))
    ));
    assert!(table.batch(&[]).await.expect("nothing to do").is_empty());
}

#[tokio::test]
async fn a_batch_with_a_conflicting_insert_writes_nothing_and_names_the_operation() {
    let table = new_table("Atomic").await;
    table
        .insert(&Entity::new("p", "r5").with("Original", true))
        .await
        .expect("seed");
    let ops: Vec<_> = (0..10)
        .map(|i| BatchOp::Insert(Entity::new("p", format!("r{i}"))))
        .collect();
    let err = table.batch(&ops).await.expect_err("r5 exists");
    match err {
        TableError::BatchFailed {
            index,
            status,
            code,
            ..
        } => {
            assert_eq!(
                (index, status, code.as_str()),
                (5, 409, "EntityAlreadyExists")
            );
        }
        other => panic!("expected BatchFailed, got {other:?}"),
    }
    let rows = table.query_all(None, None).await.expect("query");
    assert_eq!(rows.len(), 1, "the batch was rolled back");
    assert_eq!(rows[0].get_bool("Original"), Some(true));
}

#[tokio::test]
async fn keys_with_quotes_and_punctuation_work_everywhere() {
    let table = new_table("Quotes").await;
    let (pk, rk) = ("o'brien", "it''s 'quoted' (x), y & z %20 é +");
    let etag = table
        .insert(&Entity::new(pk, rk).with("N", 1))
        .await
        .expect("insert");
    let read = table.get(pk, rk).await.expect("read").expect("present");
    assert_eq!(
        (read.partition_key.as_str(), read.row_key.as_str()),
        (pk, rk)
    );
    let etag = table
        .update_merge(&Entity::new(pk, rk).with("N", 2), IfMatch::Etag(etag))
        .await
        .expect("update");
    let found = table
        .query_all(
            Some(&filter::and(
                &filter::eq("PartitionKey", pk),
                &filter::eq("RowKey", rk),
            )),
            None,
        )
        .await
        .expect("query");
    assert_eq!(found.len(), 1);
    table
        .batch(&[BatchOp::UpsertMerge(Entity::new(pk, rk).with("M", 3))])
        .await
        .expect("batch with quotes");
    assert!(table.delete(pk, rk, IfMatch::Any).await.expect("delete"));
    let _ = etag;
}

#[tokio::test]
async fn invalid_keys_and_table_names_are_refused_before_sending() {
    let service = unreachable_service();
    let table = service.table("Keys").expect("valid name");
    for (pk, rk, kind) in [
        ("a/b", "r", KeyKind::PartitionKey),
        ("p", "a\\b", KeyKind::RowKey),
        ("p", "a#b", KeyKind::RowKey),
        ("a?b", "r", KeyKind::PartitionKey),
        ("p", "tab\there", KeyKind::RowKey),
    ] {
        let bad = |e: TableError| matches!(e, TableError::InvalidKey { kind: k, .. } if k == kind);
        assert!(
            bad(table
                .insert(&Entity::new(pk, rk))
                .await
                .expect_err("insert")),
            "{pk:?} {rk:?}"
        );
        assert!(bad(table.get(pk, rk).await.expect_err("get")));
        assert!(bad(table
            .delete(pk, rk, IfMatch::Any)
            .await
            .expect_err("delete")));
        assert!(bad(table
            .batch(&[BatchOp::Insert(Entity::new(pk, rk))])
            .await
            .expect_err("batch")));
    }
    let long = "k".repeat(1025);
    assert!(matches!(
        table.upsert_merge(&Entity::new("p", long)).await,
        Err(TableError::InvalidKey { .. })
    ));
    for name in ["bad-name", "x", "_x"] {
        assert!(
            matches!(
                service.table(name),
                Err(TableError::InvalidTableName { .. })
            ),
            "{name}"
        );
    }
}

#[tokio::test]
async fn filter_values_cannot_inject_expressions() {
    let table = new_table("Filters").await;
    let evil = "x' or PartitionKey ne '";
    table
        .insert(&Entity::new("a", "1").with("Name", "x"))
        .await
        .expect("insert");
    table
        .insert(&Entity::new("b", "1").with("Name", "y"))
        .await
        .expect("insert");
    table
        .insert(&Entity::new("c", "1").with("Name", evil))
        .await
        .expect("insert");
    let found = table
        .query_all(Some(&filter::eq("Name", evil)), None)
        .await
        .expect("query");
    assert_eq!(
        found.len(),
        1,
        "only the row whose value is literally the input"
    );
    assert_eq!(found[0].partition_key, "c");
    assert_eq!(
        count(&table, Some(&filter::starts_with("Name", "x"))).await,
        2
    );
}

#[tokio::test]
async fn ping_succeeds_on_azurite_and_fails_on_a_closed_port_or_a_wrong_key() {
    service_at(&storage_connection_string().await, "t")
        .ping()
        .await
        .expect("Azurite answers");
    let started = Instant::now();
    let err = unreachable_service().ping().await.expect_err("closed port");
    assert!(matches!(err, TableError::Transport(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ping does not retry"
    );

    let wrong_key = storage_connection_string()
        .await
        .replace(DEV_ACCOUNT_KEY, "d3Jvbmcta2V5");
    let err = service_at(&wrong_key, "t")
        .ping()
        .await
        .expect_err("wrong key");
    assert!(matches!(err, TableError::Auth(_)), "{err:?}");
}

#[tokio::test]
async fn calls_ride_out_a_storage_restart_by_retrying_connection_failures() {
    let mut azurite = Azurite::start().await.expect("a private Azurite");
    let mut options = TableOptions::with_prefix(unique_prefix());
    options.retry.max_retries = 8;
    options.retry.initial_delay = Duration::from_millis(200);
    options.retry.max_delay = Duration::from_secs(3);
    let settings = StorageSettings::ConnectionString(azurite.connection_string().into());
    let service = TableService::from_settings(&settings, options).expect("service");
    service.ping().await.expect("up");

    azurite.stop().await;
    let err = service
        .ping()
        .await
        .expect_err("down, and ping does not retry");
    assert!(matches!(err, TableError::Transport(_)), "{err:?}");
    let table = service.table("Restarts").expect("valid name");
    let pending = tokio::spawn(async move { table.create_if_not_exists().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    azurite
        .restart()
        .await
        .expect("Azurite restarts on the same port");
    pending
        .await
        .expect("task")
        .expect("created once Azurite is back");
}

/// A domain row mapped through `TableEntity`, as the product's modules do.
#[derive(Debug, PartialEq)]
struct Cursor {
    tenant: String,
    name: String,
    value: time::OffsetDateTime,
    hits: i64,
}

impl TableEntity for Cursor {
    fn to_entity(&self) -> Entity {
        Entity::new(&self.tenant, &self.name)
            .with("Value", self.value)
            .with("Hits", self.hits)
    }

    fn from_entity(entity: Entity) -> Result<Self, TableError> {
        Ok(Self {
            value: entity.require("Value")?,
            hits: entity.optional("Hits")?.unwrap_or_default(),
            tenant: entity.partition_key,
            name: entity.row_key,
        })
    }
}

#[tokio::test]
async fn domain_rows_map_through_table_entity() {
    let table = new_table("Cursors").await;
    let cursor = Cursor {
        tenant: Uuid::nil().to_string(),
        name: "incidents".into(),
        value: datetime!(2025-01-02 03:04:05.6 UTC),
        hits: 1 << 40,
    };
    table
        .upsert_replace(&cursor.to_entity())
        .await
        .expect("write");
    let read = table
        .get(&cursor.tenant, &cursor.name)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(Cursor::from_entity(read).expect("maps"), cursor);
    table
        .upsert_replace(&Entity::new(&cursor.tenant, "broken").with("Value", "not a date"))
        .await
        .expect("write");
    let broken = table
        .get(&cursor.tenant, "broken")
        .await
        .expect("read")
        .expect("present");
    assert!(matches!(
        Cursor::from_entity(broken),
        Err(TableError::Decode(_))
    ));
}

#[tokio::test]
async fn grouped_writes_of_many_callers_each_get_their_own_answer() {
    let table = new_table("Grouped").await;
    table
        .insert(&Entity::new("p", "r7").with("Original", true))
        .await
        .expect("seed");
    // 60 concurrent inserts to one partition: r7 exists, r3 is asked for twice, and a
    // second partition runs beside them. Whatever batches form, each caller learns the
    // truth about its own row.
    let calls = (0..60).map(|i| {
        let table = table.clone();
        let (partition, row) = match i {
            59 => ("p", "r3".to_owned()),
            50..=58 => ("q", format!("r{i}")),
            _ => ("p", format!("r{i}")),
        };
        async move {
            let result = table
                .insert_grouped(Entity::new(partition, row.clone()).with("Caller", i))
                .await;
            (partition, row, result)
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut r3_answers = Vec::new();
    for (partition, row, result) in &results {
        match (partition, row.as_str()) {
            (&"p", "r7") => assert!(
                matches!(
                    result,
                    Err(TableError::Conflict {
                        after_retry: false,
                        ..
                    })
                ),
                "{result:?}"
            ),
            (&"p", "r3") => r3_answers.push(result.is_ok()),
            _ => assert!(result.is_ok(), "{partition}/{row}: {result:?}"),
        }
    }
    r3_answers.sort_unstable();
    assert_eq!(r3_answers, [false, true], "one of the two r3 inserts wins");
    assert_eq!(
        count(&table, Some(&filter::eq("PartitionKey", "p"))).await,
        50
    );
    assert_eq!(
        count(&table, Some(&filter::eq("PartitionKey", "q"))).await,
        9
    );
    let r7 = table.get("p", "r7").await.expect("read").expect("r7");
    assert_eq!(
        r7.get_bool("Original"),
        Some(true),
        "the existing row untouched"
    );
    assert!(r7.get("Caller").is_none());
}
