//! The queue client against Azurite (`Azurite::shared()`), and Azurite's own lifecycle.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dev_host::{Azurite, QueueClient};

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

#[tokio::test]
async fn messages_round_trip_through_azurite_base64_encoded() {
    let client = QueueClient::from_connection_string(&Azurite::shared().await.unwrap()).unwrap();
    let queue = unique("rt");
    client.create_queue(&queue).await.unwrap();
    client.create_queue(&queue).await.unwrap(); // idempotent
    let put = client.put_message(&queue, "{\"a\":\"<&>\"}").await.unwrap();
    assert!(!put.id.is_empty());
    assert_eq!(client.message_count(&queue).await.unwrap(), 1);

    let peeked = client.peek_messages(&queue).await.unwrap();
    assert_eq!(peeked.len(), 1);
    assert_eq!(peeked[0].text().unwrap(), "{\"a\":\"<&>\"}");

    let got = client
        .get_messages(&queue, 32, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.dequeue_count, 1);
    assert_eq!(m.id, put.id);
    assert!(m.insertion_time.is_some() && m.expiration_time.is_some());
    assert!(m.next_visible_time.unwrap() > chrono::Utc::now());
    // Invisible now: nothing more to get, but still counted.
    assert!(
        client
            .get_messages(&queue, 32, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(client.message_count(&queue).await.unwrap(), 1);

    // Released with visibility 0: back at once, dequeue count 2.
    client
        .update_visibility(&queue, &m.id, &m.pop_receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = client
        .get_messages(&queue, 1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(again[0].dequeue_count, 2);
    client
        .delete_message(&queue, &again[0].id, &again[0].pop_receipt)
        .await
        .unwrap();
    assert_eq!(client.message_count(&queue).await.unwrap(), 0);
    client.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn a_missing_queue_counts_as_empty_and_putting_on_it_fails() {
    let client = QueueClient::from_connection_string(&Azurite::shared().await.unwrap()).unwrap();
    let queue = unique("missing");
    assert_eq!(client.message_count(&queue).await.unwrap(), 0);
    assert!(client.peek_messages(&queue).await.unwrap().is_empty());
    let err = format!("{:#}", client.put_message(&queue, "x").await.unwrap_err());
    assert!(err.contains("QueueNotFound"), "{err}");
}

#[tokio::test]
async fn a_wrong_account_key_is_refused_by_the_service() {
    let conn = Azurite::shared().await.unwrap();
    let bad = conn.replace(
        dev_host::storage::DEV_ACCOUNT_KEY,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    );
    let client = QueueClient::from_connection_string(&bad).unwrap();
    let err = format!(
        "{:#}",
        client.create_queue(&unique("auth")).await.unwrap_err()
    );
    assert!(err.contains("403"), "{err}");
}

#[tokio::test]
async fn a_private_azurite_restarts_on_the_same_ports_with_empty_storage() {
    let mut azurite = Azurite::start().await.unwrap();
    let conn = azurite.connection_string();
    let client = QueueClient::from_connection_string(&conn).unwrap();
    client.create_queue("restart-test").await.unwrap();
    client.put_message("restart-test", "x").await.unwrap();
    azurite.stop().await;
    assert!(client.message_count("restart-test").await.is_err());
    azurite.restart().await.unwrap();
    assert_eq!(azurite.connection_string(), conn);
    assert_eq!(client.message_count("restart-test").await.unwrap(), 0);
}
