//! Graph incidents and sendMail, Teams Workflows and webhook sink self-tests.

mod common;

use common::*;
use dev_sim::{Fault, Incident, RouteFamily};
use serde_json::Value;

fn fixture_incidents() -> Vec<Incident> {
    serde_json::from_value(fixture("incidents.json")["value"].clone()).expect("fixture incidents")
}

#[tokio::test]
async fn incidents_page_filter_and_expand_like_graph() {
    let sim = sim().await;
    for i in fixture_incidents() {
        sim.upsert_incident(TENANT, i);
    }
    let token = graph_token(&sim).await;
    let mut url = sim.url("v1.0/security/incidents");
    url.query_pairs_mut()
        .append_pair("$expand", "alerts")
        .append_pair("$filter", "lastUpdateDateTime ge 2026-11-05T01:00:00Z")
        .append_pair("$top", "1");
    let r = client()
        .get(url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("request-id"));
    let page: Value = r.json().await.expect("json");
    assert_same_shape(&page, &fixture("incidents.json"), "incidents");
    assert_eq!(page["value"][0]["id"], "48213", "newest first");
    assert_eq!(
        page["value"][0]["alerts"][0]["evidence"][0]["mdeDeviceId"],
        "a3f9c2e17b5d48e09c1f6a2b3d4e5f60718293ab"
    );
    let next: url::Url = page["@odata.nextLink"]
        .as_str()
        .expect("nextLink")
        .parse()
        .expect("url");
    let page2: Value = client()
        .get(next)
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(page2["value"][0]["id"], "48207");
    assert!(
        page2.get("@odata.nextLink").is_none(),
        "48190 is older than the filter"
    );

    let plain: Value = client()
        .get(sim.url("v1.0/security/incidents?$filter=status eq 'resolved'"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(plain["value"].as_array().map(Vec::len), Some(1));
    assert!(plain["value"][0].get("alerts").is_none());

    let r = client()
        .get(sim.url("v1.0/security/incidents?$top=100"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    let fx = fixture("error.graph.400.top-limit.json");
    assert_same_shape(&body, &fx, "top");
    assert_eq!(body["error"]["message"], fx["error"]["message"]);

    sim.inject_fault(
        RouteFamily::Incidents,
        Fault::Throttle {
            retry_after: 3,
            count: 1,
        },
    );
    let r = client()
        .get(sim.url("v1.0/security/incidents"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    let body: Value = r.json().await.expect("json");
    assert_same_shape(&body, &fixture("error.graph.429.json"), "graph 429");

    let mde = mde_token(&sim).await;
    let r = client()
        .get(sim.url("v1.0/security/incidents"))
        .bearer_auth(mde)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn send_mail_accepts_known_mailboxes_with_mail_send() {
    let sim = sim().await;
    sim.add_mailbox(TENANT, "noreply-defender@contoso.com");
    let token = graph_token(&sim).await;
    let body = fixture("graph-sendmail.request.json");
    let send = |upn: &str, token: String| {
        let url = sim.url(&format!("v1.0/users/{upn}/sendMail"));
        let body = body.clone();
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("sent")
        }
    };
    let r = send("noreply-defender@contoso.com", token.clone()).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.text().await.expect("body"), "");
    let mails = sim.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["secops@contoso.com".to_owned()]);
    assert!(
        mails[0]
            .subject
            .as_deref()
            .is_some_and(|s| s.contains("3 devices"))
    );

    let r = send("someone@contoso.com", token).await;
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.expect("json");
    assert_same_shape(&b, &fixture("graph-sendmail.error.404.json"), "404");

    sim.add_app(dev_sim::AppRegistration {
        graph_roles: vec!["SecurityIncident.Read.All".into()],
        ..dev_sim::AppRegistration::with_secret(TENANT, "no-mail", "pw")
    });
    let t = token_for(&sim, TENANT, "no-mail", "pw", dev_sim::audiences::GRAPH).await;
    let r = send("noreply-defender@contoso.com", t).await;
    assert_eq!(r.status(), 403);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b, fixture("graph-sendmail.error.403.json"));
}

#[tokio::test]
async fn teams_accepts_any_json_and_records_flow_failures() {
    let sim = sim().await;
    let url = sim.add_teams_workflow("wf1", "sig-123");
    let card = fixture("teams-webhook.request.json");
    let r = client()
        .post(url.clone())
        .json(&card)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
    let r = client()
        .post(url.clone())
        .json(&serde_json::json!({"text": "legacy MessageCard"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 202);
    let posts = sim.teams_posts();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].flow_failure, None);
    assert!(posts[1].flow_failure.is_some());

    let mut bad_sig = url.clone();
    bad_sig.set_query(Some("api-version=1&sig=wrong"));
    assert_eq!(
        client()
            .post(bad_sig)
            .json(&card)
            .send()
            .await
            .expect("sent")
            .status(),
        401
    );
    let unknown = sim.url("teams/workflows/nope/triggers/manual/paths/invoke?sig=x");
    assert_eq!(
        client()
            .post(unknown)
            .json(&card)
            .send()
            .await
            .expect("sent")
            .status(),
        404
    );
    assert!(
        sim.requests()
            .iter()
            .all(|r| !r.path_and_query.contains("sig-123"))
    );
}

#[tokio::test]
async fn the_sink_records_bodies_and_headers() {
    let sim = sim().await;
    let r = client()
        .post(sim.sink_url("hooks"))
        .header("x-signature", "sha256=abc")
        .header("authorization", "Bearer secret-value")
        .body(r#"{"event":"offboarded"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    let events = sim.sink_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].sink_id, "hooks");
    assert_eq!(events[0].header("X-Signature"), Some("sha256=abc"));
    assert_eq!(events[0].header("authorization"), Some("REDACTED"));
    assert_eq!(events[0].body, r#"{"event":"offboarded"}"#);
}
