//! TLS trust, Entra token endpoint, managed identity and Key Vault self-tests.

mod common;

use common::*;
use dev_sim::{AppRegistration, ManagedIdentity, Sim, SimConfig, audiences};
use serde_json::Value;

#[tokio::test]
async fn a_plain_reqwest_client_trusts_the_sim_through_ssl_cert_file() {
    let sim = sim().await;
    let expected = std::env::var_os("SSL_CERT_FILE").expect("cargo sets SSL_CERT_FILE");
    assert_eq!(sim.ca_pem_path(), std::path::Path::new(&expected));
    let resp = reqwest::Client::new()
        .get(sim.url("_sim/health"))
        .send()
        .await
        .expect("TLS handshake succeeds with the platform verifier");
    assert_eq!(resp.status(), 200);
    assert_eq!(sim.base_url().scheme(), "https");
}

#[tokio::test]
async fn two_sims_in_one_process_share_the_ca() {
    let a = sim().await;
    let b = Sim::start(SimConfig::default()).await.expect("second sim");
    assert_eq!(a.ca_pem_path(), b.ca_pem_path());
    for s in [&a, &b] {
        let r = client()
            .get(s.url("_sim/health"))
            .send()
            .await
            .expect("trusted");
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn a_token_carries_audience_tenant_app_and_roles() {
    let sim = sim().await;
    let resp = client()
        .post(sim.url(&format!("{TENANT}/oauth2/v2.0/token")))
        .form(&[
            ("client_id", CLIENT),
            ("scope", "https://api.securitycenter.microsoft.com/.default"),
            ("client_secret", SECRET),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_same_shape(&body, &fixture("token.response.json"), "token");
    assert_eq!(body["expires_in"], 3599);
    let claims = claims_of(body["access_token"].as_str().expect("token"));
    assert_eq!(claims["aud"], audiences::MDE);
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["appid"], CLIENT);
    assert_eq!(
        claims["roles"],
        serde_json::json!([
            "Machine.Read.All",
            "Machine.Offboard",
            "Machine.ReadWrite.All"
        ])
    );
    assert!(claims["exp"].as_i64() > claims["iat"].as_i64());
    assert_eq!(
        sim.token_requests(
            TENANT,
            CLIENT,
            "https://api.securitycenter.microsoft.com/.default"
        ),
        1
    );
}

async fn token_error(sim: &Sim, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = client()
        .post(sim.url(&format!("{tenant}/oauth2/v2.0/token")))
        .form(form)
        .send()
        .await
        .expect("sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json error"))
}

#[tokio::test]
async fn token_errors_follow_entra() {
    let sim = sim().await;
    let base = |scope: &'static str, secret: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", secret),
            ("scope", scope),
        ]
    };
    let (s, b) = token_error(&sim, TENANT, &base("Machine.Offboard", SECRET)).await;
    assert_eq!(s, 400);
    assert_same_shape(&b, &fixture("token.error.invalid-scope.json"), "scope");
    assert_eq!(b["error_codes"][0], 1_002_012);
    assert!(
        b["error_description"]
            .as_str()
            .expect("text")
            .contains("\r\nTrace ID: ")
    );

    let (s, b) = token_error(
        &sim,
        TENANT,
        &base("https://graph.microsoft.com/.default", "wrong"),
    )
    .await;
    assert_eq!(s, 401);
    assert_same_shape(&b, &fixture("token.error.json"), "secret");
    assert_eq!(b["error"], "invalid_client");
    assert_eq!(b["error_codes"][0], 7_000_215);

    let (s, b) = token_error(
        &sim,
        "11111111-1111-4111-8111-111111111111",
        &base("https://graph.microsoft.com/.default", SECRET),
    )
    .await;
    assert_eq!((s, b["error_codes"][0].as_u64()), (400, Some(90002)));

    let mut form = base("https://graph.microsoft.com/.default", SECRET);
    form[1] = ("client_id", "22222222-2222-4222-8222-222222222222");
    let (s, b) = token_error(&sim, TENANT, &form).await;
    assert_eq!((s, b["error_codes"][0].as_u64()), (400, Some(700_016)));
    assert_eq!(b["error"], "unauthorized_client");
}

#[tokio::test]
async fn managed_identity_tokens_and_federated_assertions_work() {
    let sim = sim().await;
    let mi = "33333333-3333-4333-8333-333333333333";
    sim.add_managed_identity(ManagedIdentity {
        client_id: mi.into(),
        ..ManagedIdentity::default()
    });
    let fed_client = "44444444-4444-4444-8444-444444444444";
    sim.add_app(AppRegistration::federated(TENANT, fed_client, mi));

    let no_header = client()
        .get(sim.identity_endpoint())
        .query(&[
            ("resource", audiences::TOKEN_EXCHANGE),
            ("api-version", "2019-08-01"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(no_header.status(), 401);

    let resp = client()
        .get(sim.identity_endpoint())
        .header("X-IDENTITY-HEADER", sim.identity_header())
        .query(&[
            ("resource", audiences::TOKEN_EXCHANGE),
            ("api-version", "2019-08-01"),
            ("client_id", mi),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["expires_on"]
            .as_str()
            .expect("string")
            .parse::<i64>()
            .is_ok()
    );
    assert_eq!(body["resource"], audiences::TOKEN_EXCHANGE);
    assert_eq!(body["client_id"], mi);
    let assertion = body["access_token"].as_str().expect("token");

    let exchange = |assertion: String| {
        let url = sim.url(&format!("{TENANT}/oauth2/v2.0/token"));
        async move {
            client()
                .post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", fed_client),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.as_str()),
                    ("scope", "https://api.securitycenter.microsoft.com/.default"),
                ])
                .send()
                .await
                .expect("sent")
        }
    };
    let ok = exchange(assertion.to_owned()).await;
    assert_eq!(ok.status(), 200);
    let t: Value = ok.json().await.expect("json");
    let claims = claims_of(t["access_token"].as_str().expect("token"));
    assert_eq!(
        (claims["tid"].as_str(), claims["appid"].as_str()),
        (Some(TENANT), Some(fed_client))
    );

    let forged = exchange(format!("{assertion}x")).await;
    assert_eq!(forged.status(), 400);

    let unknown = client()
        .get(sim.identity_endpoint())
        .header("X-IDENTITY-HEADER", sim.identity_header())
        .query(&[
            ("resource", audiences::VAULT),
            ("api-version", "2019-08-01"),
            ("client_id", "55555555-5555-4555-8555-555555555555"),
        ])
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn key_vault_challenges_then_serves_secrets() {
    let sim = sim().await;
    sim.set_secret("tenant-contoso", "s3cr3t");
    let url = sim.url("secrets/tenant-contoso/?api-version=2025-07-01");
    let challenge = client().get(url.clone()).send().await.expect("sent");
    assert_eq!(challenge.status(), 401);
    let header = challenge
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .expect("challenge")
        .to_owned();
    assert_eq!(
        header,
        format!(
            r#"Bearer authorization="{}{}", resource="https://vault.azure.net""#,
            sim.base_url(),
            sim.home_tenant()
        )
    );

    // A token of the vault audience from the home tenant (managed identity).
    let mi: Value = client()
        .get(sim.identity_endpoint())
        .header("X-IDENTITY-HEADER", sim.identity_header())
        .query(&[
            ("resource", audiences::VAULT),
            ("api-version", "2019-08-01"),
        ])
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let token = mi["access_token"].as_str().expect("token").to_owned();
    for path in [
        "secrets/tenant-contoso?api-version=2025-07-01",
        "secrets/tenant-contoso/?api-version=2025-07-01",
    ] {
        let resp = client()
            .get(sim.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200, "{path}");
        let v: Value = resp.json().await.expect("json");
        assert_eq!(v["value"], "s3cr3t");
        assert!(v["attributes"]["created"].is_i64());
    }
    let missing = client()
        .get(sim.url("secrets/nope/?api-version=2025-07-01"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(missing.status(), 404);
    let v: Value = missing.json().await.expect("json");
    assert_eq!(v["error"]["code"], "SecretNotFound");

    let mde = mde_token(&sim).await;
    let wrong_aud = client()
        .get(url)
        .bearer_auth(mde)
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong_aud.status(), 401);
}
