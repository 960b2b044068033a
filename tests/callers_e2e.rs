//! Callers end to end (design §9.1–§9.2): each calling system its own key and its own
//! tenants, rotation to a next key, unsigned calls refused unless allowed, and every
//! change traced to its actor; through dev/host + handler + Azurite + dev/sim.

mod common;

use common::{Env, Options};
use defender_ops::domain::signature;
use dev_sim::Machine;
use reqwest::Method;
use serde_json::{Value, json};

const T1: &str = "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c";
const T2: &str = "2b7e9c41-0a6d-4c3f-8e15-94d2f0a7b6c8";
const UNKNOWN: &str = "5a5a5a5a-1b1b-4c4c-8d8d-9e9e9e9e9e9e";
const APP1: &str = "11111111-1111-4111-8111-111111111111";
const APP2: &str = "22222222-2222-4222-8222-222222222222";
const KEY1: &str = "itsm-key-one-0123456789abcdef0123456789abcdef";
const KEY2: &str = "itsm-key-two-0123456789abcdef0123456789abcdef";
const OTHER: &str = "somebody-elses-key-0123456789abcdef0123456789";

fn mid(n: u32) -> String {
    format!("{n:040x}")
}

/// Two tenants with two synced Windows devices each, the caller keys in Key Vault.
async fn seeded(options: Options) -> Env {
    let env = Env::start_with(options).await;
    let now = env.sim.now();
    for (tenant, app, base) in [(T1, APP1, 1u32), (T2, APP2, 100)] {
        env.sim.add_tenant(tenant);
        env.sim.add_machines(
            tenant,
            (base..base + 2).map(|n| Machine::new(mid(n), format!("pc-{n:03}.contoso.com"), now)),
        );
        env.register_tenant(tenant, app).await;
    }
    env.settle().await;
    env.sim.set_secret("itsm-key-1", KEY1);
    env.sim.set_secret("itsm-key-2", KEY2);
    env.sim.set_secret("short-key", "only-20-bytes-long!!");
    env
}

async fn put_caller(env: &Env, id: &str, body: &Value) -> (u16, Value) {
    env.admin(Method::PUT, &format!("callers/{id}"), Some(body))
        .await
}

/// Posts `body` signed with `key`, as `caller` when given.
async fn post_as(env: &Env, caller: Option<&str>, key: &str, body: &Value) -> (u16, Value) {
    let text = body.to_string();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut req = env
        .http
        .post(env.url("offboard"))
        .header("x-functions-key", env.host.function_key())
        .header("content-type", "application/json")
        .header(
            "x-signature",
            signature::sign(key.as_bytes(), ts, text.as_bytes()),
        )
        .header("x-signature-timestamp", ts.to_string());
    if let Some(c) = caller {
        req = req.header("x-caller-id", c);
    }
    let res = req.body(text).send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// What a tenant's partitions hold: requests, keys, audit rows.
async fn written(env: &Env, tenant: &str) -> (usize, usize, usize) {
    (
        env.rows("OffboardRequests", tenant).await.len(),
        env.rows("IdempotencyKeys", tenant).await.len(),
        env.rows("Audit", tenant).await.len(),
    )
}

#[tokio::test]
async fn callers_are_validated_answered_without_keys_and_audited() {
    let env = seeded(Options::default()).await;
    let good = json!({"displayName": "ITSM", "tenants": [T1], "secretName": "itsm-key-1"});
    let cases = [
        ("ITSM", good.clone(), "InvalidCallerId"),
        ("default", good.clone(), "InvalidCallerId"),
        (
            "itsm",
            json!({"tenants": [T1], "secretName": "itsm-key-1"}),
            "MissingField",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": [], "secretName": "itsm-key-1"}),
            "InvalidTenants",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": ["*", T1], "secretName": "itsm-key-1"}),
            "InvalidTenants",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": ["contoso"], "secretName": "itsm-key-1"}),
            "InvalidTenants",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": [T1]}),
            "MissingField",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": [T1], "secretName": "not a name!"}),
            "InvalidSecretName",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": [T1], "secretName": "absent-key"}),
            "SecretNotFound",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": [T1], "secretName": "short-key"}),
            "KeyTooShort",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": [T1], "secretName": "itsm-key-1", "nextSecretName": "short-key"}),
            "KeyTooShort",
        ),
        (
            "itsm",
            json!({"displayName": "ITSM", "tenants": [T1], "secretName": "itsm-key-1", "key": KEY1}),
            "UnknownField",
        ),
    ];
    for (id, body, code) in cases {
        let (status, e) = put_caller(&env, id, &body).await;
        // The body is fine but the vault is not (absent or short key): 422, else 400.
        let expected = if matches!(code, "SecretNotFound" | "KeyTooShort") {
            422
        } else {
            400
        };
        assert_eq!(status, expected, "{id} {body} → {e}");
        assert_eq!(e["error"]["code"], code, "{id} {body} → {e}");
    }
    assert!(
        env.rows("Callers", "caller").await.is_empty(),
        "a refused PUT writes nothing"
    );

    let (status, created) = put_caller(&env, "itsm", &good).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tenants"], json!([T1]));
    assert_eq!(created["enabled"], true);
    let (status, updated) = put_caller(
        &env,
        "itsm",
        &json!({"displayName": "ITSM", "tenants": ["*"], "secretName": "itsm-key-1", "nextSecretName": "itsm-key-2"}),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["tenants"], json!(["*"]));
    let (status, list) = env.admin(Method::GET, "callers", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let text = list.to_string();
    assert!(
        !text.contains(KEY1) && !text.contains(KEY2),
        "never a key: {text}"
    );
    let (status, _) = env.call(Method::GET, "callers", None).await;
    assert_eq!(status, 401, "the function key can't manage callers");

    let (status, disabled) = env.admin(Method::DELETE, "callers/itsm", None).await;
    assert_eq!(status, 200, "{disabled}");
    assert_eq!(disabled["enabled"], false);
    let (status, e) = env.admin(Method::GET, "callers/nobody", None).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (404, Some("CallerNotFound"))
    );

    // Each change is one Audit row with its actor.
    let audit: Vec<_> = env
        .rows("Audit", "app")
        .await
        .into_iter()
        .filter(|r| r.get_str("Kind") == Some("Caller"))
        .collect();
    assert_eq!(audit.len(), 3, "{audit:?}");
    assert!(
        audit
            .iter()
            .all(|r| r.get_str("Actor") == Some("admin-key"))
    );
    // Tenant registrations are audited too.
    let tenant_audit = env
        .rows("Audit", T1)
        .await
        .into_iter()
        .filter(|r| r.get_str("Kind") == Some("Tenant"))
        .count();
    assert_eq!(tenant_audit, 1);
}

#[tokio::test]
async fn a_caller_reaches_only_its_tenants_and_only_with_its_key() {
    let env = seeded(Options::default()).await;
    let (status, c) = put_caller(
        &env,
        "itsm",
        &json!({"displayName": "ITSM", "tenants": [T1], "secretName": "itsm-key-1"}),
    )
    .await;
    assert_eq!(status, 201, "{c}");

    let ok = json!({"tenantId": T1, "machineId": mid(1), "comment": "Leaver HR-1"});
    let (status, accepted) = post_as(&env, Some("itsm"), KEY1, &ok).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["requestId"].as_str().expect("id");
    let (status, state) = env
        .call(Method::GET, &format!("offboard/{T1}/{id}"), None)
        .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["actor"], "caller:itsm");
    assert_eq!(state["source"], "webhook");
    assert_eq!(state["history"][0]["actor"], "caller:itsm", "{state}");

    // The caller's key comes from the Key Vault cache, not one vault read per call.
    let vault_reads = || {
        env.sim
            .requests()
            .iter()
            .filter(|r| r.path_and_query.contains("/secrets/itsm-key-1"))
            .count()
    };
    let reads_before = vault_reads();
    assert!(reads_before >= 1, "the PUT read the key from the vault");

    // Another customer's tenant: exactly what an unknown tenant gets, and nothing written.
    let before = written(&env, T2).await;
    let device_before = env.row("Devices", T2, &mid(100)).await.expect("device");
    let (status, out_of_scope) = post_as(
        &env,
        Some("itsm"),
        KEY1,
        &json!({"tenantId": T2, "machineId": mid(100)}),
    )
    .await;
    let (unknown_status, unknown) = post_as(
        &env,
        Some("itsm"),
        KEY1,
        &json!({"tenantId": UNKNOWN, "machineId": mid(100)}),
    )
    .await;
    assert_eq!(
        (status, unknown_status),
        (404, 404),
        "{out_of_scope} {unknown}"
    );
    assert_eq!(out_of_scope["error"]["code"], "TenantNotFound");
    assert_eq!(
        out_of_scope["error"]["message"]
            .as_str()
            .map(|m| m.replace(T2, "<tenant>")),
        unknown["error"]["message"]
            .as_str()
            .map(|m| m.replace(UNKNOWN, "<tenant>")),
        "indistinguishable from an unknown tenant"
    );
    assert_eq!(written(&env, T2).await, before, "nothing written for T2");
    let device_after = env.row("Devices", T2, &mid(100)).await.expect("device");
    assert_eq!(
        device_after.get_str("Result"),
        device_before.get_str("Result")
    );
    env.settle().await;
    assert!(
        env.sim
            .offboard_posts()
            .iter()
            .all(|p| p.machine_id != mid(100)),
        "Defender never heard of it"
    );

    // Wrong key, unknown caller, the built-in name, a disabled caller: 401.
    let other = json!({"tenantId": T1, "machineId": mid(2)});
    for (caller, key, what) in [
        (Some("itsm"), OTHER, "wrong key"),
        (Some("itsm"), KEY2, "a key not (yet) the caller's"),
        (Some("nobody"), KEY1, "unknown caller"),
        (Some("Not A Caller!"), KEY1, "malformed caller id"),
        (Some("default"), KEY1, "the built-in caller by name"),
        (None, KEY1, "signed, but no default key configured"),
    ] {
        let (status, e) = post_as(&env, caller, key, &other).await;
        assert_eq!(status, 401, "{what}: {e}");
    }
    assert_eq!(
        vault_reads(),
        reads_before,
        "signed calls read the caller's key from the cache"
    );
    let (status, _) = env.admin(Method::DELETE, "callers/itsm", None).await;
    assert_eq!(status, 200);
    let (status, e) = post_as(&env, Some("itsm"), KEY1, &other).await;
    assert_eq!(status, 401, "disabled: {e}");
    assert_eq!(
        env.rows("OffboardRequests", T1).await.len(),
        1,
        "only the first call made a request"
    );
}

#[tokio::test]
async fn a_caller_rotates_to_its_next_key_without_a_gap() {
    let env = seeded(Options::default()).await;
    let caller = |secret: &str, next: Option<&str>| {
        let mut body = json!({"displayName": "ITSM", "tenants": ["*"], "secretName": secret});
        if let Some(n) = next {
            body["nextSecretName"] = json!(n);
        }
        body
    };
    let dry = |n: u32| json!({"tenantId": T1, "machineId": mid(1), "dryRun": true, "comment": format!("rotation step {n}")});
    assert_eq!(
        put_caller(&env, "itsm", &caller("itsm-key-1", None))
            .await
            .0,
        201
    );
    assert_eq!(post_as(&env, Some("itsm"), KEY2, &dry(1)).await.0, 401);

    // 1. Add the next key: both verify while the calling system moves over.
    assert_eq!(
        put_caller(&env, "itsm", &caller("itsm-key-1", Some("itsm-key-2")))
            .await
            .0,
        200
    );
    assert_eq!(post_as(&env, Some("itsm"), KEY1, &dry(2)).await.0, 200);
    assert_eq!(post_as(&env, Some("itsm"), KEY2, &dry(3)).await.0, 200);
    // 2. Swap: the next key becomes the key, the old one stops working.
    assert_eq!(
        put_caller(&env, "itsm", &caller("itsm-key-2", None))
            .await
            .0,
        200
    );
    assert_eq!(post_as(&env, Some("itsm"), KEY2, &dry(4)).await.0, 200);
    let (status, e) = post_as(&env, Some("itsm"), KEY1, &dry(5)).await;
    assert_eq!(status, 401, "the retired key: {e}");
}

#[tokio::test]
async fn unsigned_calls_are_refused_unless_allowed() {
    let body = json!({"tenantId": T1, "machineId": mid(1)});
    let env = seeded(Options::default()).await;
    let (status, e) = env.call(Method::POST, "offboard", Some(&body)).await;
    assert_eq!(status, 401, "{e}");
    assert_eq!(written(&env, T1).await.0, 0, "nothing written");
    drop(env);

    let env = seeded(Options {
        settings: vec![("WEBHOOK_ALLOW_UNSIGNED".into(), "true".into())],
        ..Options::default()
    })
    .await;
    let (status, a) = env.call(Method::POST, "offboard", Some(&body)).await;
    assert_eq!(status, 202, "{a}");
    let id = a["requestId"].as_str().expect("id");
    let (_, state) = env
        .call(Method::GET, &format!("offboard/{T1}/{id}"), None)
        .await;
    assert_eq!(state["actor"], "function-key");
    assert_eq!(state["source"], "api");
    // With the admin key, the admin key is the actor.
    let (status, a) = env
        .admin(
            Method::POST,
            "offboard",
            Some(&json!({"tenantId": T1, "machineId": mid(2)})),
        )
        .await;
    assert_eq!(status, 202, "{a}");
    let id = a["requestId"].as_str().expect("id");
    let (_, state) = env
        .call(Method::GET, &format!("offboard/{T1}/{id}"), None)
        .await;
    assert_eq!(state["actor"], "admin-key");
}
