//! The `sim` binary and the admin HTTP API, out of process.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_bin_seeds_a_demo_and_the_admin_api_drives_it() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_sim"))
            .args(["--port", "0", "--seed-demo"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("sim starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut vars = std::collections::HashMap::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.to_owned(), v.to_owned());
        }
        if line.starts_with("SIM_WEBHOOK_SINK=") {
            break;
        }
    }
    let base: url::Url = vars["SIM_BASE_URL"].parse().expect("base url");
    assert!(vars["SIM_TENANT_1_DEVICES"].contains("\"stale\""));
    let c = reqwest::Client::new();
    let admin = |p: &str| base.join(&format!("_sim/{p}")).expect("url");

    let health: Value = c
        .get(admin("health"))
        .send()
        .await
        .expect("up")
        .json()
        .await
        .expect("json");
    assert_eq!(health["baseUrl"], base.as_str());

    let tenant = vars["SIM_TENANT_1"]
        .split(' ')
        .next()
        .expect("tenant")
        .to_owned();
    let machines: Vec<Value> = c
        .get(admin(&format!("tenants/{tenant}/machines")))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(machines.len(), 1000);

    let r = c
        .post(admin("faults"))
        .json(&json!({"family": "token", "fault": {"kind": "status", "status": 500, "count": 1}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 204);
    let token_url = base
        .join(&format!("{tenant}/oauth2/v2.0/token"))
        .expect("url");
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "0b8e4d2c-7a1f-4c3e-9d5b-2f6a8c1e4b70"),
        ("client_secret", "demo-secret-1"),
        ("scope", "https://api.securitycenter.microsoft.com/.default"),
    ];
    assert_eq!(
        c.post(token_url.clone())
            .form(&form)
            .send()
            .await
            .expect("sent")
            .status(),
        500
    );
    let t: Value = c
        .post(token_url)
        .form(&form)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let token = t["access_token"].as_str().expect("token");

    let id = machines
        .iter()
        .find(|m| m["osPlatform"] == "Windows11")
        .and_then(|m| m["id"].as_str())
        .expect("a Windows 11 device");
    let r = c
        .post(
            base.join(&format!("api/machines/{id}/offboard"))
                .expect("url"),
        )
        .bearer_auth(token)
        .json(&json!({"Comment": "demo"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let r = c
        .post(admin("clock/advance"))
        .json(&json!({"seconds": 600}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let actions: Vec<Value> = c
        .get(admin(&format!("tenants/{tenant}/actions")))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(actions[0]["status"] == "Succeeded" || actions[0]["status"] == "TimeOut");
    let requests: Vec<Value> = c
        .get(admin("requests"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert!(
        requests
            .iter()
            .any(|r| r["family"] == "offboard" && r["status"] == 200)
    );
    let counts: Vec<Value> = c
        .get(admin("token-counts"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        counts[0]["count"], 1,
        "the faulted request never reached the endpoint"
    );
}
