//! Bad input never panics, never half-writes: a corpus of malformed requests is answered with
//! a 4xx JSON error and leaves every table exactly as it was; and known secret values never
//! reach a log line or a stored row.

mod common;

use std::collections::BTreeSet;

use common::{APP1, Env, Options, T1, mid};
use defender_ops::store::names;
use dev_sim::{AppRegistration, Machine};
use reqwest::Method;
use serde_json::{Value, json};

/// Every row of every product table: (table, pk, rk, etag).
async fn snapshot(env: &Env) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for name in names::ALL {
        let table = env.tables.table(name).expect("table");
        let rows = match table.query_all(None, None).await {
            Ok(rows) => rows,
            Err(defender_ops::clients::tables::TableError::NotFound { .. }) => continue,
            Err(e) => panic!("{name}: {e}"),
        };
        for r in rows {
            let etag = r
                .etag
                .as_ref()
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default();
            out.insert(((*name).to_owned(), r.partition_key, r.row_key, etag));
        }
    }
    out
}

async fn raw(
    env: &Env,
    method: Method,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> (u16, String) {
    let res = env
        .http
        .request(method, env.url(path))
        .header("x-functions-key", env.host.function_key())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_corpus_of_malformed_requests_gets_4xx_json_errors_and_writes_nothing() {
    // Unsigned calls allowed, so the bodies below reach the body checks (a 401 at the door
    // would hide them); the trust headers get their own cases below.
    let env = Env::start_with(Options {
        settings: vec![("WEBHOOK_ALLOW_UNSIGNED".into(), "true".into())],
        ..Options::default()
    })
    .await;
    let now = env.sim.now();
    env.sim.add_tenant(T1);
    env.sim.add_machines(
        T1,
        (1..=3).map(|n| Machine::new(mid(n), format!("pc-{n}"), now)),
    );
    env.register_tenant(T1, APP1).await;
    env.settle().await;
    let before = snapshot(&env).await;
    assert!(!before.is_empty());

    let huge = format!(
        "{{\"tenantId\":\"{T1}\",\"machineId\":\"{}\",\"comment\":\"{}\"}}",
        mid(1),
        "x".repeat(70 * 1024)
    );
    let injection = "x' or PartitionKey ne '";
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not json", b"tenantId=x".to_vec()),
        ("array", b"[1,2,3]".to_vec()),
        ("number", b"42".to_vec()),
        ("null", b"null".to_vec()),
        ("bad utf-8", vec![b'{', 0xff, 0xfe, b'}']),
        ("truncated", format!("{{\"tenantId\":\"{T1}\"").into_bytes()),
        ("huge", huge.into_bytes()),
        (
            "tenant as number",
            br#"{"tenantId": 5, "machineId": "x"}"#.to_vec(),
        ),
        (
            "machineId as object",
            format!(r#"{{"tenantId":"{T1}","machineId":{{"a":1}}}}"#).into_bytes(),
        ),
        (
            "dryRun as string",
            format!(
                r#"{{"tenantId":"{T1}","machineId":"{}","dryRun":"true"}}"#,
                mid(1)
            )
            .into_bytes(),
        ),
        (
            "missing tenant",
            format!(r#"{{"machineId":"{}"}}"#, mid(1)).into_bytes(),
        ),
        (
            "two selectors",
            format!(
                r#"{{"tenantId":"{T1}","machineId":"{}","aadDeviceId":"x"}}"#,
                mid(1)
            )
            .into_bytes(),
        ),
        (
            "injection in name",
            json!({"tenantId": T1, "deviceName": injection})
                .to_string()
                .into_bytes(),
        ),
        (
            "injection in machineId",
            // A hostile input, not a path of this repository (tests/standalone.rs skips it).
            json!({"tenantId": T1, "machineId": "../../Tenants(PartitionKey='tenant')"})
                .to_string()
                .into_bytes(),
        ),
        (
            "control characters",
            json!({"tenantId": T1, "deviceName": "pc\u{0}\u{7}"})
                .to_string()
                .into_bytes(),
        ),
        (
            "bad idempotency key",
            json!({"tenantId": T1, "machineId": mid(1), "idempotencyKey": "a/b#c?"})
                .to_string()
                .into_bytes(),
        ),
        (
            "unknown field",
            json!({"tenantId": T1, "machineID": mid(1)})
                .to_string()
                .into_bytes(),
        ),
        (
            "unknown tenant",
            json!({"tenantId": "00000000-0000-4000-8000-000000000001", "machineId": mid(1)})
                .to_string()
                .into_bytes(),
        ),
        (
            "unknown device",
            json!({"tenantId": T1, "machineId": mid(99)})
                .to_string()
                .into_bytes(),
        ),
    ];
    for (name, body) in bodies {
        let (status, text) = raw(&env, Method::POST, "offboard", body, "application/json").await;
        assert!(
            (400..500).contains(&status) && status != 401,
            "{name}: {status} {text}"
        );
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{name}: {text}"
        );
    }

    // Trust headers (design §9.1): a caller id that is malformed, huge, unknown or unsigned,
    // a signature without a configured key, a garbage signature: 401, nothing read further.
    let body = json!({"tenantId": T1, "machineId": mid(1)}).to_string();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let sig = defender_ops::domain::signature::sign(
        b"some-key-0123456789abcdef0123456789",
        ts.parse().expect("ts"),
        body.as_bytes(),
    );
    let long_id = "x".repeat(5000);
    let headers: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "malformed caller id",
            vec![
                ("x-caller-id", "Not A Caller!"),
                ("x-signature", &sig),
                ("x-signature-timestamp", &ts),
            ],
        ),
        (
            "huge caller id",
            vec![
                ("x-caller-id", &long_id),
                ("x-signature", &sig),
                ("x-signature-timestamp", &ts),
            ],
        ),
        (
            "unknown caller",
            vec![
                ("x-caller-id", "nobody"),
                ("x-signature", &sig),
                ("x-signature-timestamp", &ts),
            ],
        ),
        ("caller id, unsigned", vec![("x-caller-id", "nobody")]),
        (
            "signed, no default key",
            vec![("x-signature", &sig), ("x-signature-timestamp", &ts)],
        ),
        (
            "garbage signature",
            vec![
                ("x-caller-id", "nobody"),
                ("x-signature", "sha256=zz"),
                ("x-signature-timestamp", "1e99"),
            ],
        ),
    ];
    for (name, hs) in headers {
        let mut req = env
            .http
            .post(env.url("offboard"))
            .header("x-functions-key", env.host.function_key())
            .header("content-type", "application/json");
        for (k, v) in hs {
            req = req.header(k, v);
        }
        let res = req.body(body.clone()).send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        assert_eq!(status, 401, "{name}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{name}: not JSON: {text}"));
        assert_eq!(v["error"]["code"], "Unauthorized", "{name}: {text}");
    }
    // A well-formed caller whose key Key Vault lacks: 422, the body is fine, the vault is not.
    let (status, answer) = env
        .admin(
            Method::PUT,
            "callers/itsm",
            Some(&json!({"displayName": "x", "tenants": [T1], "secretName": "no-such-secret"})),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "SecretNotFound", "{answer}");
    let callers = [
        (
            "itsm",
            json!({"displayName": "x", "tenants": "nope", "secretName": "k"}),
        ),
        (
            "itsm",
            json!({"displayName": "x", "tenants": [5], "secretName": "k"}),
        ),
        (
            "itsm",
            json!({"displayName": "x", "tenants": [T1], "secretName": "k", "enabled": "yes"}),
        ),
        ("itsm", json!([1])),
        (
            "UPPER",
            json!({"displayName": "x", "tenants": [T1], "secretName": "k"}),
        ),
    ];
    for (id, body) in callers {
        let (status, answer) = env
            .admin(Method::PUT, &format!("callers/{id}"), Some(&body))
            .await;
        assert_eq!(status, 400, "{id} {body}: {answer}");
    }

    let paths = [
        (Method::GET, format!("devices/{T1}?stale=maybe")),
        (Method::GET, format!("devices/{T1}?top=0")),
        (Method::GET, format!("devices/{T1}?top=100000")),
        (
            Method::GET,
            format!("devices/{T1}?continuationToken=%27%20or%201%20eq%201"),
        ),
        (Method::GET, format!("devices/{T1}?sort=name")),
        (Method::GET, format!("devices/{T1}?os={}", "x".repeat(300))),
        (Method::GET, "devices/not-a-tenant".to_owned()),
        (Method::GET, format!("devices/{T1}/zz")),
        (Method::GET, format!("offboard/{T1}/not-a-guid")),
        (
            Method::GET,
            format!("offboard/{T1}/00000000-0000-4000-8000-000000000002"),
        ),
        (Method::PATCH, format!("devices/{T1}")),
    ];
    for (method, path) in paths {
        let (status, text) = raw(&env, method.clone(), &path, Vec::new(), "application/json").await;
        assert!(
            (400..500).contains(&status),
            "{method} {path}: {status} {text}"
        );
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"));
        assert!(v["error"]["code"].is_string(), "{path}: {text}");
    }
    // Injection through the filter parameters is just a name that matches nothing.
    let (status, text) = raw(
        &env,
        Method::GET,
        &format!("devices/{T1}?name=x%27%20or%20PartitionKey%20ne%20%27"),
        Vec::new(),
        "application/json",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json")["items"],
        json!([])
    );

    let patches = [
        json!({"offboard": "yes"}),
        json!({"offboard": true, "extra": 1}),
        json!({}),
        json!([true]),
    ];
    for body in patches {
        let (status, text) = raw(
            &env,
            Method::PATCH,
            &format!("devices/{T1}/{}", mid(1)),
            body.to_string().into_bytes(),
            "application/json",
        )
        .await;
        assert_eq!(status, 400, "{body}: {text}");
    }
    let registrations = [
        json!({"displayName": "x", "clientId": APP1, "authMode": "secret", "secretName": "no such secret!"}),
        json!({"displayName": "x".repeat(300), "clientId": APP1, "authMode": "federated"}),
        json!({"displayName": "x", "clientId": APP1, "authMode": "federated", "notifyChannels": ["sms"]}),
        json!({"displayName": "x", "clientId": APP1, "authMode": "federated", "defenderApiBase": "http://plain"}),
    ];
    for body in registrations {
        let (status, answer) = env
            .admin(Method::PUT, &format!("tenants/{T1}"), Some(&body))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
    }
    // The tenant's Defender token goes to defenderApiBase: Microsoft's hosts and the
    // configured DEFENDER_API_BASE only.
    let sim_port = env.sim.url("").port().unwrap_or(443);
    for base in [
        "https://attacker.example".to_owned(),
        "https://api.security.microsoft.com.attacker.example".to_owned(),
        "https://attacker.example/api.security.microsoft.com".to_owned(),
        "https://api.securitycenter.microsoft.com:8443".to_owned(),
        format!("https://127.0.0.1:{}", sim_port.wrapping_add(1)),
        "https://user:pw@api.security.microsoft.com".to_owned(),
    ] {
        let body = json!({"displayName": "x", "clientId": APP1, "authMode": "federated", "defenderApiBase": base});
        let (status, answer) = env
            .admin(Method::PUT, &format!("tenants/{T1}"), Some(&body))
            .await;
        assert_eq!(status, 400, "{base}: {answer}");
        assert!(
            answer["error"]["code"] == "DefenderApiBaseNotAllowed"
                || answer["error"]["code"] == "InvalidField",
            "{base}: {answer}"
        );
    }

    let after = snapshot(&env).await;
    let changed: Vec<_> = after.symmetric_difference(&before).collect();
    assert!(changed.is_empty(), "bad input changed tables: {changed:?}");

    // The simulator's own host (DEFENDER_API_BASE) and Microsoft's are accepted.
    for base in [
        env.sim.url("").to_string(),
        "https://api-gov.securitycenter.microsoft.us".to_owned(),
    ] {
        let body = json!({"displayName": "x", "clientId": APP1, "authMode": "federated", "defenderApiBase": base});
        let (status, answer) = env
            .admin(Method::PUT, &format!("tenants/{T1}"), Some(&body))
            .await;
        assert_eq!(status, 200, "{base}: {answer}");
    }
}

#[tokio::test]
async fn known_secret_values_never_reach_a_log_line_or_a_stored_row() {
    const HMAC_KEY: &str = "hmac-key-7f1e0c9a5b3d4e2f-8a6c4e2f0b1d3f57";
    const TEAMS_SIG: &str = "teams-sig-a1b2c3d4e5f6";
    const CALLER_KEY: &str = "caller-key-5e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b";
    let env = Env::start_with(Options {
        settings: vec![
            ("WEBHOOK_HMAC_SECRET".into(), "webhook-hmac".into()),
            ("NOTIFY_TEAMS_SECRET".into(), "teams-url".into()),
        ],
        ..Options::default()
    })
    .await;
    env.sim.set_secret("webhook-hmac", HMAC_KEY);
    let teams_url = env.sim.add_teams_workflow("wf1", TEAMS_SIG);
    env.sim.set_secret("teams-url", teams_url.as_str());
    let now = env.sim.now();
    let client_secret = "client-secret-9d8c7b6a5f4e3d2c";
    env.sim.add_tenant(T1);
    env.sim
        .add_app(AppRegistration::with_secret(T1, APP1, client_secret));
    env.sim.set_secret("tenant-8f3c2a1b", client_secret);
    env.sim.add_machines(
        T1,
        (1..=3).map(|n| Machine::new(mid(n), format!("pc-{n}"), now)),
    );
    let (status, _) = env
        .admin(
            Method::PUT,
            &format!("tenants/{T1}"),
            Some(&json!({"displayName": "Contoso", "clientId": APP1, "authMode": "secret", "secretName": "tenant-8f3c2a1b"})),
        )
        .await;
    assert_eq!(status, 201);
    env.settle().await;
    let body = json!({"tenantId": T1, "machineId": mid(1)}).to_string();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let sig = defender_ops::domain::signature::sign(HMAC_KEY.as_bytes(), ts, body.as_bytes());
    let res = env
        .http
        .post(env.url("offboard"))
        .header("x-functions-key", env.host.function_key())
        .header("x-signature", &sig)
        .header("x-signature-timestamp", ts.to_string())
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status().as_u16(), 202);
    // A registered caller's key (design §9.1) stays out of logs and rows too.
    env.sim.set_secret("caller-key", CALLER_KEY);
    let (status, answer) = env
        .admin(
            Method::PUT,
            "callers/itsm",
            Some(&json!({"displayName": "ITSM", "tenants": [T1], "secretName": "caller-key"})),
        )
        .await;
    assert_eq!(status, 201, "{answer}");
    let body = json!({"tenantId": T1, "machineId": mid(2), "dryRun": true}).to_string();
    let caller_sig =
        defender_ops::domain::signature::sign(CALLER_KEY.as_bytes(), ts, body.as_bytes());
    let res = env
        .http
        .post(env.url("offboard"))
        .header("x-functions-key", env.host.function_key())
        .header("x-caller-id", "itsm")
        .header("x-signature", &caller_sig)
        .header("x-signature-timestamp", ts.to_string())
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status().as_u16(), 200);
    env.settle().await;
    // The action finishes, so a result note goes to Teams.
    env.sim.advance(std::time::Duration::from_secs(600));
    assert!(
        env.host
            .fire_timer("ActionTracker")
            .await
            .expect("tracker")
            .succeeded()
    );
    env.settle().await;
    assert!(
        !env.sim.teams_posts().is_empty(),
        "a card was sent, so the Teams URL was used"
    );

    let logs = env.host.handler_log_text();
    assert!(logs.len() > 1000, "the handler logged its work");
    let account_key = env
        .storage
        .split("AccountKey=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("none");
    let secrets = [
        HMAC_KEY,
        CALLER_KEY,
        TEAMS_SIG,
        client_secret,
        account_key,
        sig.as_str(),
        caller_sig.as_str(),
        env.host.function_key(),
        env.host.admin_key(),
    ];
    for s in secrets {
        assert!(!logs.contains(s), "a secret reached the handler's log");
    }
    for name in names::ALL {
        let rows = match env
            .tables
            .table(name)
            .expect("table")
            .query_all(None, None)
            .await
        {
            Ok(rows) => rows,
            // A table the run never created holds no secret.
            Err(defender_ops::clients::tables::TableError::NotFound { .. }) => continue,
            Err(e) => panic!("{name}: {e}"),
        };
        for r in rows {
            for (col, v) in &r.props {
                if let defender_ops::clients::tables::EdmValue::String(text) = v {
                    for s in secrets {
                        assert!(!text.contains(s), "a secret is stored in {name}.{col}");
                    }
                }
            }
        }
    }
}
