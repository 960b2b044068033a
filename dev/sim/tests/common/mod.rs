//! Shared helpers of the simulator's self-tests: a seeded sim, tokens, fixture comparison.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use dev_sim::{AppRegistration, Sim, SimConfig, audiences};
use serde_json::Value;

pub const TENANT: &str = "6f1c2a9e-3b7d-4e58-9a0c-1d2e3f405162";
pub const CLIENT: &str = "0b8e4d2c-7a1f-4c3e-9d5b-2f6a8c1e4b70";
pub const SECRET: &str = "FAKE-SECRET-DO-NOT-USE";

pub async fn sim() -> Sim {
    let sim = Sim::start(SimConfig::default()).await.expect("sim starts");
    sim.add_app(AppRegistration::with_secret(TENANT, CLIENT, SECRET));
    sim
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../contracts/defender-api/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Same keys at every level and the same JSON kinds (null matches anything).
pub fn assert_same_shape(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (_, Value::Null) | (Value::Null, _) => {}
        (Value::Object(a), Value::Object(e)) => {
            let mut ak: Vec<&String> = a.keys().collect();
            let mut ek: Vec<&String> = e.keys().collect();
            ak.sort();
            ek.sort();
            assert_eq!(ak, ek, "keys differ at {at}");
            for (k, v) in e {
                assert_same_shape(&a[k], v, &format!("{at}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            if let (Some(a0), Some(e0)) = (a.first(), e.first()) {
                assert_same_shape(a0, e0, &format!("{at}[0]"));
            }
        }
        (a, e) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(e),
            "kind differs at {at}: {a} vs {e}"
        ),
    }
}

pub async fn token_for(
    sim: &Sim,
    tenant: &str,
    client_id: &str,
    secret: &str,
    aud: &str,
) -> String {
    let resp = client()
        .post(sim.url(&format!("{tenant}/oauth2/v2.0/token")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", &format!("{aud}/.default")),
        ])
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.expect("json");
    v["access_token"].as_str().expect("access_token").to_owned()
}

pub async fn mde_token(sim: &Sim) -> String {
    token_for(sim, TENANT, CLIENT, SECRET, audiences::MDE).await
}

pub async fn graph_token(sim: &Sim) -> String {
    token_for(sim, TENANT, CLIENT, SECRET, audiences::GRAPH).await
}

pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims JSON")
}
