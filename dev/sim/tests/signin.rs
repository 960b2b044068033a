//! Entra sign-in self-tests: the authorize page, registered redirect URIs only, one-time codes
//! with PKCE and the client credential, and an RS256 ID token that verifies against the JWKS.

mod common;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

const REDIRECT: &str = "http://127.0.0.1:7071/api/console/auth/callback";
const VERIFIER: &str = "a-pkce-verifier-of-enough-length-0123456789abcdefghijklmnop";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize_params(redirect: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", CLIENT.to_owned()),
        ("response_type", "code".into()),
        ("redirect_uri", redirect.to_owned()),
        ("scope", "openid profile".into()),
        ("state", "st-1".into()),
        ("nonce", "n-1".into()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".into()),
    ]
}

/// Picks `user` on the authorize page; the code from the redirect.
async fn code_for(sim: &dev_sim::Sim, user: &str) -> String {
    let mut form = authorize_params(REDIRECT);
    form.push(("user", user.to_owned()));
    let r = no_redirects()
        .post(sim.url(&format!("{TENANT}/oauth2/v2.0/authorize")))
        .form(&form)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 302);
    let location = url::Url::parse(r.headers()["location"].to_str().expect("ascii")).expect("url");
    assert!(location.as_str().starts_with(REDIRECT));
    let q: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st-1");
    q["code"].clone()
}

async fn redeem(sim: &dev_sim::Sim, code: &str, verifier: &str, secret: &str) -> (u16, Value) {
    let r = client()
        .post(sim.url(&format!("{TENANT}/oauth2/v2.0/token")))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", CLIENT),
            ("client_secret", secret),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
            ("scope", "openid profile"),
        ])
        .send()
        .await
        .expect("sent");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn b64json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

#[tokio::test]
async fn the_authorize_page_lists_the_test_users_for_a_registered_redirect_only() {
    let sim = sim().await;
    let url = |redirect: &str| {
        let mut u = sim.url(&format!("{TENANT}/oauth2/v2.0/authorize"));
        u.query_pairs_mut().extend_pairs(authorize_params(redirect));
        u
    };
    let r = no_redirects()
        .get(url(REDIRECT))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400, "no redirect URI registered yet");
    assert!(r.text().await.expect("text").contains("AADSTS50011"));

    sim.add_redirect_uri(TENANT, CLIENT, REDIRECT);
    let page = no_redirects()
        .get(url(REDIRECT))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("text");
    for user in dev_sim::TEST_USERS {
        assert!(
            html.contains(&format!("value=\"{}\"", user.key)),
            "{}",
            user.key
        );
    }
    assert!(
        html.contains("Adam Admin &lt;script&gt;"),
        "names are escaped"
    );

    let other = no_redirects()
        .get(url("https://evil.example/cb"))
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), 400);
    assert!(other.headers().get("location").is_none());
}

#[tokio::test]
async fn a_code_redeems_once_with_its_verifier_and_secret_into_a_signed_id_token() {
    let sim = sim().await;
    sim.add_redirect_uri(TENANT, CLIENT, REDIRECT);

    let code = code_for(&sim, "operator").await;
    let (s, body) = redeem(
        &sim,
        &code,
        "another-verifier-0123456789-0123456789-abcdef",
        SECRET,
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (s, _) = redeem(&sim, &code, VERIFIER, SECRET).await;
    assert_eq!(s, 400, "the code was used up by the failed attempt");

    let code = code_for(&sim, "operator").await;
    let (s, body) = redeem(&sim, &code, VERIFIER, "wrong-secret").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );

    let code = code_for(&sim, "operator").await;
    let (s, body) = redeem(&sim, &code, VERIFIER, SECRET).await;
    assert_eq!(s, 200, "{body}");
    let (s, again) = redeem(&sim, &code, VERIFIER, SECRET).await;
    assert_eq!(s, 400, "one-time: {again}");
    assert!(
        again["error_description"]
            .as_str()
            .unwrap_or_default()
            .contains("AADSTS54005")
    );

    let id_token = body["id_token"].as_str().expect("id_token");
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header = b64json(parts[0]);
    let claims = b64json(parts[1]);
    assert_eq!(header["alg"], "RS256");
    let base = sim.base_url().as_str().trim_end_matches('/').to_owned();
    assert_eq!(claims["iss"], format!("{base}/{TENANT}/v2.0"));
    assert_eq!(claims["aud"], CLIENT);
    assert_eq!(claims["nonce"], "n-1");
    assert_eq!(claims["preferred_username"], "otto.operator@ops.test");
    assert_eq!(claims["roles"], serde_json::json!(["Console.Operator"]));
    assert!(claims["exp"].as_i64() > claims["iat"].as_i64());

    let config: Value = client()
        .get(sim.url(&format!("{TENANT}/v2.0/.well-known/openid-configuration")))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(config["issuer"], claims["iss"]);
    let jwks: Value = client()
        .get(config["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let key = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's kid is in the JWKS");
    let n = URL_SAFE_NO_PAD
        .decode(key["n"].as_str().expect("n"))
        .expect("b64");
    let e = URL_SAFE_NO_PAD
        .decode(key["e"].as_str().expect("e"))
        .expect("b64");
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    let signed = format!("{}.{}", parts[0], parts[1]);
    RsaPublicKeyComponents { n: &n, e: &e }
        .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &sig)
        .expect("the signature verifies against the JWKS");
}

#[tokio::test]
async fn a_user_without_roles_gets_no_roles_claim() {
    let sim = sim().await;
    sim.add_redirect_uri(TENANT, CLIENT, REDIRECT);
    let code = code_for(&sim, "norole").await;
    let (s, body) = redeem(&sim, &code, VERIFIER, SECRET).await;
    assert_eq!(s, 200);
    let claims = b64json(
        body["id_token"]
            .as_str()
            .expect("id")
            .split('.')
            .nth(1)
            .expect("payload"),
    );
    assert!(claims.get("roles").is_none(), "{claims}");
}
