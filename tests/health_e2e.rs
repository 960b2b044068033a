//! `GET /api/health` is anonymous: a burst of calls must not become a burst of Key Vault
//! reads (the vault's throttle budget belongs to tenant secrets and the signing key).

mod common;

use std::time::Duration;

use common::Env;
use dev_sim::RouteFamily;

fn probe_reads(env: &Env) -> usize {
    env.sim
        .requests()
        .iter()
        .filter(|r| {
            r.family == Some(RouteFamily::KeyVault)
                && r.had_bearer
                && r.path_and_query.contains("defender-ops-health-probe")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_40_health_calls_reads_key_vault_at_most_once() {
    let env = Env::start().await;
    // Let the handler finish its start-up reads before counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = probe_reads(&env);
    let calls = (0..40).map(|_| {
        let (http, url) = (env.http.clone(), env.url("health"));
        async move {
            let res = http.get(url).send().await.expect("health");
            (res.status().as_u16(), res.text().await.unwrap_or_default())
        }
    });
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    let reads = probe_reads(&env) - before;
    println!("Key Vault reads for 40 concurrent health calls: {reads}");
    assert!(reads <= 1, "{reads} Key Vault reads for 40 health calls");

    // And 20 more, one after the other, within the cache's lifetime: still no new read.
    for _ in 0..20 {
        let res = env
            .http
            .get(env.url("health"))
            .send()
            .await
            .expect("health");
        assert_eq!(res.status(), 200);
    }
    let reads = probe_reads(&env) - before;
    println!("Key Vault reads after 60 health calls: {reads}");
    assert!(reads <= 1, "{reads} Key Vault reads for 60 health calls");
}
