//! Tenants and device sync, end to end: dev/host + handler + Azurite + dev/sim.

mod common;

use std::time::Duration;

use common::{APP1, APP2, Env, T1, T2, mid};
use dev_sim::{Fault, Machine, RouteFamily};
use reqwest::Method;
use serde_json::json;
use time::OffsetDateTime;

fn machine(n: u32, name: &str, now: OffsetDateTime) -> Machine {
    Machine::new(mid(n), name, now)
}

fn str_col<'a>(e: &'a defender_ops::clients::tables::Entity, c: &str) -> &'a str {
    e.get_str(c).unwrap_or_default()
}

#[tokio::test]
async fn tenants_are_registered_listed_and_disabled_without_exposing_secrets() {
    let env = Env::start().await;
    assert_eq!(env.register_tenant(T1, APP1).await, 201);
    // A second PUT updates.
    assert_eq!(env.register_tenant(T1, APP1).await, 200);

    let (status, list) = env.admin(Method::GET, "tenants", None).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["tenantId"], T1);
    assert_eq!(items[0]["authMode"], "secret");
    assert!(
        !list.to_string().contains("s3cr3t"),
        "no secret value in the API: {list}"
    );

    // The function key is not enough for the admin API (the host enforces authLevel admin).
    let (status, _) = env.call(Method::GET, "tenants", None).await;
    assert_eq!(status, 401);

    let (status, t) = env
        .admin(Method::DELETE, &format!("tenants/{T1}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(t["enabled"], false);
    let (_, t) = env.admin(Method::GET, &format!("tenants/{T1}"), None).await;
    assert_eq!(t["enabled"], false, "disabled, data kept");
    let (status, _) = env.admin(Method::GET, &format!("tenants/{T2}"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_tenant_registrations_are_refused_with_the_field_named_and_nothing_written() {
    let env = Env::start().await;
    env.sim.set_secret("good-secret", "value");
    let base = json!({"displayName": "Contoso", "clientId": APP1, "authMode": "secret", "secretName": "good-secret"});
    let cases = [
        ("not-a-guid", base.clone(), "InvalidTenantId"),
        (
            T1,
            json!({"displayName": "Contoso", "clientId": "nope", "authMode": "secret", "secretName": "good-secret"}),
            "InvalidClientId",
        ),
        (
            T1,
            json!({"displayName": "Contoso", "clientId": APP1, "authMode": "password", "secretName": "good-secret"}),
            "InvalidAuthMode",
        ),
        (
            T1,
            json!({"displayName": "Contoso", "clientId": APP1, "authMode": "secret"}),
            "MissingSecretName",
        ),
        (
            T1,
            json!({"clientId": APP1, "authMode": "federated"}),
            "MissingField",
        ),
        (
            T1,
            json!({"displayName": "Contoso", "clientId": APP1, "authMode": "federated", "clientID": "x"}),
            "UnknownField",
        ),
        (
            T1,
            json!({"displayName": 5, "clientId": APP1, "authMode": "federated"}),
            "InvalidField",
        ),
    ];
    for (tenant, body, code) in cases {
        let (status, answer) = env
            .admin(Method::PUT, &format!("tenants/{tenant}"), Some(&body))
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Well-formed, but the secret is not in Key Vault yet: 422, also nothing written.
    let missing = json!({"displayName": "Contoso", "clientId": APP1, "authMode": "secret", "secretName": "missing-secret"});
    let (status, answer) = env
        .admin(Method::PUT, &format!("tenants/{T1}"), Some(&missing))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "SecretNotFound", "{answer}");
    assert!(
        env.rows("Tenants", "tenant").await.is_empty(),
        "nothing written"
    );
    assert!(
        env.host
            .queue_messages("device-sync")
            .await
            .expect("queue")
            .is_empty()
    );
}

#[tokio::test]
async fn two_tenants_sync_in_isolation_and_every_device_is_classified() {
    let env = Env::start().await;
    let now = env.sim.now();
    let aad = "7a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";

    let normal = machine(1, "pc-01.contoso.com", now);
    let mut stale = machine(2, "pc-02.contoso.com", now);
    stale.last_seen = now - time::Duration::days(12);
    stale.health_status = "Inactive".into();
    // Reinstalled: same name, an older and a newer id.
    let mut old_install = machine(3, "PC-03.contoso.com", now - time::Duration::days(3));
    old_install.first_seen = now - time::Duration::days(300);
    let new_install = machine(4, "pc-03.contoso.com", now);
    // Renamed: same Entra device id.
    let mut before_rename = machine(5, "old-name.contoso.com", now - time::Duration::days(2));
    before_rename.aad_device_id = Some(aad.into());
    let mut after_rename = machine(6, "new-name.contoso.com", now);
    after_rename.aad_device_id = Some(aad.into());
    let mut mac = machine(7, "mac-01", now);
    mac.os_platform = Some("macOS".into());
    env.sim.add_tenant(T1);
    env.sim.add_machines(
        T1,
        vec![
            normal,
            stale,
            old_install,
            new_install,
            before_rename,
            after_rename,
            mac,
        ],
    );
    env.sim.add_tenant(T2);
    env.sim.add_machines(
        T2,
        vec![machine(100, "other-01", now), machine(101, "other-02", now)],
    );

    env.register_tenant(T1, APP1).await;
    env.register_tenant(T2, APP2).await;
    env.settle().await;

    let rows1 = env.rows("Devices", T1).await;
    let rows2 = env.rows("Devices", T2).await;
    assert_eq!(rows1.len(), 7);
    assert_eq!(rows2.len(), 2, "tenant 2 sees only its own devices");
    assert!(
        rows2
            .iter()
            .all(|r| r.row_key == mid(100) || r.row_key == mid(101))
    );

    let get = |id: u32| rows1.iter().find(|r| r.row_key == mid(id)).expect("row");
    assert_eq!(get(2).get_bool("Stale"), Some(true));
    assert_eq!(get(1).get_bool("Stale"), Some(false));
    assert_eq!(
        str_col(get(3), "DuplicateOf"),
        mid(4),
        "old install → newest id"
    );
    assert_eq!(
        str_col(get(4), "DuplicateOf"),
        "",
        "the newest stays primary"
    );
    assert_eq!(
        str_col(get(5), "DuplicateOf"),
        mid(6),
        "renamed device found by aadDeviceId"
    );
    assert_eq!(get(7).get_str("OsPlatform"), Some("macOS"));
    assert_eq!(get(1).get_bool("Gone"), Some(false));

    // The API shows the same, filtered.
    let (status, page) = env
        .call(Method::GET, &format!("devices/{T1}?stale=true"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["items"][0]["machineId"], mid(2));
    let (_, page) = env
        .call(Method::GET, &format!("devices/{T1}?duplicate=true"), None)
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let (_, page) = env
        .call(Method::GET, &format!("devices/{T1}?name=pc-0"), None)
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3), "{page}");
    let (_, page) = env
        .call(Method::GET, &format!("devices/{T1}?os=macOS"), None)
        .await;
    assert_eq!(page["items"][0]["machineId"], mid(7));
    let (status, one) = env
        .call(Method::GET, &format!("devices/{T1}/{}", mid(100)), None)
        .await;
    assert_eq!(status, 404, "another tenant's device is not found: {one}");

    // The audit trail has the counts.
    let audit = env.rows("Audit", T1).await;
    let sync = audit
        .iter()
        .find(|r| r.get_str("Kind") == Some("DeviceSync"))
        .expect("audit entry");
    assert_eq!(sync.get_i64("Seen"), Some(7));
    assert_eq!(sync.get_i64("Inserted"), Some(7));
    assert_eq!(sync.get_i64("Duplicates"), Some(2));
    assert_eq!(sync.get_i64("Stale"), Some(1));
}

#[tokio::test]
async fn a_second_sync_writes_only_changes_keeps_operator_columns_and_marks_gone() {
    let env = Env::start().await;
    let now = env.sim.now();
    env.sim.add_tenant(T1);
    env.sim
        .add_machines(T1, (1..=20).map(|n| machine(n, &format!("pc-{n:02}"), now)));
    env.register_tenant(T1, APP1).await;
    env.settle().await;
    assert_eq!(env.rows("Devices", T1).await.len(), 20);

    // An admin flags a device; Defender changes one, drops one, lets one go stale.
    let (status, dev) = env
        .call(
            Method::PATCH,
            &format!("devices/{T1}/{}", mid(3)),
            Some(&json!({"offboard": true})),
        )
        .await;
    assert_eq!(status, 200, "{dev}");
    assert_eq!(dev["offboard"], true);
    let before = env.rows("Devices", T1).await;
    env.sim.update_machine(T1, &mid(3), |m| {
        m.health_status = "ImpairedCommunication".into()
    });
    env.sim.update_machine(T1, &mid(4), |m| {
        m.last_seen = now - time::Duration::days(30)
    });
    assert!(env.sim.remove_machine(T1, &mid(5)));

    let fired = env.host.fire_timer("SyncScheduler").await.expect("timer");
    assert!(fired.succeeded());
    env.settle().await;

    let after = env.rows("Devices", T1).await;
    assert_eq!(after.len(), 20, "nothing is ever deleted");
    let row = |rows: &[defender_ops::clients::tables::Entity], n: u32| {
        rows.iter()
            .find(|r| r.row_key == mid(n))
            .cloned()
            .expect("row")
    };
    assert_eq!(
        row(&after, 3).get_str("HealthStatus"),
        Some("ImpairedCommunication")
    );
    assert_eq!(
        row(&after, 3).get_bool("Offboard"),
        Some(true),
        "operator column survives the sync"
    );
    assert_eq!(row(&after, 4).get_bool("Stale"), Some(true));
    assert_eq!(row(&after, 5).get_bool("Gone"), Some(true));
    // Unchanged rows were not written at all: same ETag.
    for n in [1u32, 2, 6, 7, 20] {
        assert_eq!(
            row(&before, n).etag,
            row(&after, n).etag,
            "device {n} was rewritten"
        );
    }
    let audit = env.rows("Audit", T1).await;
    let latest = audit
        .iter()
        .find(|r| r.get_str("Kind") == Some("DeviceSync"))
        .expect("newest first");
    assert_eq!(latest.get_i64("Updated"), Some(2));
    assert_eq!(latest.get_i64("Unchanged"), Some(17));
    assert_eq!(latest.get_i64("Gone"), Some(1));
    // A device that turned stale is notified once, the first sync's "new devices" are not.
    // (Until Notify consumes them, notes end on the notifications queue or its poison queue.)
    // Notify records every note in Outbox (with or without channels to send it to).
    let outbox = env.tables.table("Outbox").expect("table");
    let notes: Vec<String> = outbox
        .query_all(None, None)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.get_str("Payload").map(str::to_owned))
        .filter(|p| p.contains(T1))
        .collect();
    let stale_notes: Vec<&String> = notes
        .iter()
        .filter(|n| n.contains("\"devicesStale\""))
        .collect();
    assert_eq!(stale_notes.len(), 1, "{notes:?}");
    assert!(stale_notes[0].contains(&mid(4)));
    assert!(
        !notes.iter().any(|n| n.contains("\"devicesOnboarded\"")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn paging_over_25000_devices_reads_three_pages_and_waits_out_a_429_mid_paging() {
    let env = Env::start().await;
    env.sim.add_tenant(T1);
    env.sim.generate_machines(T1, 25_001, 7);
    env.register_tenant(T1, APP1).await;

    // Throttle once, right after the first page was requested.
    let watcher = {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let sim = &env.sim;
        async move {
            while std::time::Instant::now() < deadline {
                let pages = sim
                    .requests()
                    .iter()
                    .filter(|r| r.family == Some(RouteFamily::Machines))
                    .count();
                if pages >= 1 {
                    sim.inject_fault(
                        RouteFamily::Machines,
                        Fault::Throttle {
                            retry_after: 1,
                            count: 1,
                        },
                    );
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            false
        }
    };
    let (injected, ()) = tokio::join!(watcher, env.settle());
    assert!(injected);

    let rows = env.rows("Devices", T1).await;
    assert_eq!(rows.len(), 25_001);
    let audit = env.rows("Audit", T1).await;
    let sync = audit
        .iter()
        .find(|r| r.get_str("Kind") == Some("DeviceSync"))
        .expect("sync completed");
    assert_eq!(sync.get_i64("Pages"), Some(3));
    assert_eq!(sync.get_i64("Seen"), Some(25_001));
    let throttled = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.family == Some(RouteFamily::Machines) && r.status == 429)
        .count();
    assert_eq!(throttled, 1, "one 429 was answered and waited out");
}

#[tokio::test]
async fn a_disabled_tenant_is_not_synced_and_a_wrong_secret_fails_alone() {
    let env = Env::start().await;
    let now = env.sim.now();
    const T3: &str = "3c8d0e52-1b7e-4d40-9f26-a5e3b1c8d9e0";
    for (t, n) in [(T1, 1u32), (T2, 100), (T3, 200)] {
        env.sim.add_tenant(t);
        env.sim.add_machines(t, vec![machine(n, "pc", now)]);
    }
    env.register_tenant(T1, APP1).await;
    env.register_tenant(T2, APP2).await;
    env.register_tenant(T3, "33333333-3333-4333-8333-333333333333")
        .await;
    env.settle().await;
    for t in [T1, T2, T3] {
        assert_eq!(
            env.rows("Devices", t).await.len(),
            1,
            "{t} synced on registration"
        );
    }

    // T2 is disabled; T3's secret in Key Vault no longer matches the app's.
    env.admin(Method::DELETE, &format!("tenants/{T2}"), None)
        .await;
    env.sim
        .set_secret(&format!("tenant-{}", &T3[..8]), "rotated-but-wrong");
    for t in [T1, T2, T3] {
        let n = match t {
            T1 => 2,
            T2 => 101,
            _ => 201,
        };
        env.sim.add_machines(t, vec![machine(n, "pc-new", now)]);
    }
    // Secrets are cached for 5 minutes; a restart of the handler clears the cache, like a
    // new instance would.
    let starts = env.host.handler_starts();
    env.host.kill_handler();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.host.handler_starts() == starts && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.host
        .wait_handler_ready(Duration::from_secs(30))
        .await
        .expect("handler restarted");
    let fired = env.host.fire_timer("SyncScheduler").await.expect("timer");
    assert!(fired.succeeded(), "{:?}", fired.result);
    env.settle().await;

    assert_eq!(
        env.rows("Devices", T1).await.len(),
        2,
        "the healthy tenant synced"
    );
    assert_eq!(
        env.rows("Devices", T2).await.len(),
        1,
        "the disabled tenant was not synced"
    );
    assert_eq!(env.rows("Devices", T3).await.len(), 1);
    let audit = env.rows("Audit", T3).await;
    let failure = audit
        .iter()
        .find(|r| r.get_str("Kind") == Some("DeviceSyncFailed"))
        .expect("the failure is in the audit trail");
    let detail = failure.get_str("Detail").unwrap_or_default();
    assert!(
        detail.contains(T3) || detail.to_lowercase().contains("authentication"),
        "{detail}"
    );
    assert!(
        !detail.contains("rotated-but-wrong"),
        "never the secret: {detail}"
    );
    assert!(env.poison("device-sync").await.is_empty());
}

#[tokio::test]
async fn the_same_sync_job_delivered_twice_at_once_is_harmless() {
    let env = Env::start().await;
    let now = env.sim.now();
    env.sim.add_tenant(T1);
    env.sim.add_machines(
        T1,
        (1..=300).map(|n| machine(n, &format!("pc-{n:03}"), now)),
    );
    env.register_tenant(T1, APP1).await;
    env.settle().await;
    let (status, _) = env
        .call(
            Method::PATCH,
            &format!("devices/{T1}/{}", mid(7)),
            Some(&json!({"offboard": true})),
        )
        .await;
    assert_eq!(status, 200);
    for n in 1..=30u32 {
        env.sim
            .update_machine(T1, &mid(n), |m| m.health_status = "Inactive".into());
    }
    let job = json!({"tenantId": T1, "runId": "sync-twice", "reason": "scheduled"}).to_string();
    env.host
        .enqueue("device-sync", &job)
        .await
        .expect("enqueue");
    env.host
        .enqueue("device-sync", &job)
        .await
        .expect("enqueue");
    env.settle().await;
    let rows = env.rows("Devices", T1).await;
    assert_eq!(rows.len(), 300);
    let inactive = rows
        .iter()
        .filter(|r| r.get_str("HealthStatus") == Some("Inactive"))
        .count();
    assert_eq!(inactive, 30);
    let flagged = rows.iter().find(|r| r.row_key == mid(7)).expect("row");
    assert_eq!(
        flagged.get_bool("Offboard"),
        Some(true),
        "the operator column survived both runs"
    );
    assert!(env.poison("device-sync").await.is_empty());
}

#[tokio::test]
async fn a_second_sync_of_an_unchanged_fleet_writes_nothing() {
    // 3,000 realistic devices: many batches in flight at once, duplicates among them. A
    // first sync that lost a DuplicateOf to a batch landing late would rewrite it here.
    let env = Env::start().await;
    env.sim.add_tenant(T1);
    env.sim.generate_machines(T1, 3_000, 5);
    env.register_tenant(T1, APP1).await;
    env.settle().await;
    let fired = env.host.fire_timer("SyncScheduler").await.expect("timer");
    assert!(fired.succeeded());
    env.settle().await;
    let audit = env.rows("Audit", T1).await;
    let runs: Vec<_> = audit
        .iter()
        .filter(|r| r.get_str("Kind") == Some("DeviceSync"))
        .collect();
    assert_eq!(runs.len(), 2);
    // Newest first.
    let (second, first) = (runs[0], runs[1]);
    assert!(
        first.get_i64("Duplicates").unwrap_or(0) > 0,
        "the fleet has duplicates"
    );
    assert_eq!(second.get_i64("Duplicates"), first.get_i64("Duplicates"));
    // A device that may be a duplicate is written once, with its mark, in the duplicate pass;
    // only a group's first-listed member that turns out older than a later twin is written
    // twice (content, then mark). Writing every row then every mark would be seen + dups.
    let (seen, dups, writes) = (
        first.get_i64("Seen").unwrap_or(0),
        first.get_i64("Duplicates").unwrap_or(0),
        first.get_i64("TableWrites").unwrap_or(0),
    );
    assert_eq!(seen, 3_000);
    assert!(
        writes >= seen && writes < seen + dups,
        "first sync: {writes} writes for {seen} devices with {dups} duplicates"
    );
    assert_eq!(second.get_i64("Unchanged"), Some(3_000));
    assert_eq!(
        second.get_i64("TableWrites"),
        Some(0),
        "nothing changed, nothing written"
    );
}

#[tokio::test]
async fn a_device_sync_message_with_only_a_tenant_id_syncs_that_tenant() {
    let env = Env::start().await;
    let now = env.sim.now();
    env.sim.add_tenant(T1);
    env.sim.add_machines(T1, vec![machine(1, "pc-01", now)]);
    env.register_tenant(T1, APP1).await;
    env.settle().await;
    env.sim.add_machines(T1, vec![machine(2, "pc-02", now)]);
    // As an operator would type it, or an older version leave it during a deployment.
    env.host
        .enqueue("device-sync", &json!({"tenantId": T1}).to_string())
        .await
        .expect("enqueue");
    env.settle().await;
    let rows = env.rows("Devices", T1).await;
    assert_eq!(
        rows.len(),
        2,
        "the device added after registration is synced"
    );
    let stats = env.host.stats("SyncTenant");
    assert_eq!((stats.invocations, stats.failed), (2, 0), "{stats:?}");
    let syncs: Vec<_> = env
        .rows("Audit", T1)
        .await
        .into_iter()
        .filter(|r| r.get_str("Kind") == Some("DeviceSync"))
        .collect();
    assert_eq!(syncs.len(), 2, "one audit row per run");
    assert!(
        syncs
            .iter()
            .any(|r| r.get_i64("Inserted") == Some(1) && r.get_i64("Unchanged") == Some(1)),
        "the minimal job's run found the new device: {syncs:?}"
    );
    assert!(env.poison("device-sync").await.is_empty());
}
