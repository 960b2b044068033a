//! Graph incidents and sendMail, Teams Workflows and webhook sink self-tests.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use dev_sim::{Fault, Incident, MailFormat, RouteFamily};
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
    assert_eq!(mails[0].format, MailFormat::Json);
    assert_eq!(mails[0].to, vec!["secops@contoso.com".to_owned()]);
    assert_eq!(mails[0].cc, vec!["it-endpoint@contoso.com".to_owned()]);
    assert!(
        mails[0]
            .subject
            .as_deref()
            .is_some_and(|s| s.contains("3 devices"))
    );
    assert!(
        mails[0]
            .html
            .as_deref()
            .is_some_and(|h| h.contains("<li>hr-lt-0311.corp.contoso.com (Pending)</li>"))
    );
    assert_eq!(mails[0].text, None, "the fixture's body is HTML");

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

/// A multipart/alternative mail as a mail program writes it: CRLF, an RFC 2047 subject, a
/// quoted-printable HTML part.
const MIME_MAIL: &str = "From: Defender Ops <noreply-defender@contoso.com>\r\n\
To: SecOps <secops@contoso.com>, soc@contoso.com\r\n\
Cc: it-endpoint@contoso.com\r\n\
Subject: =?utf-8?Q?[Defender]_Offboarding_Rejected:_pc-01_=E2=80=93_Z=C3=BCrich?=\r\n\
Date: Fri, 6 Nov 2026 04:00:00 +0000\r\n\
Message-ID: <6f1c0b52@contoso.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/plain; charset=\"utf-8\"\r\n\
Content-Transfer-Encoding: 7bit\r\n\
\r\n\
Message: <b>OsPlatformNotSupported</b> & co\r\n\
--b1\r\n\
Content-Type: text/html; charset=\"utf-8\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<p>Message: &lt;b&gt;OsPlatformNotSupported&lt;/b&gt; &amp; co =E2=80=93 Z=\r\n\
=C3=BCrich</p>\r\n\
--b1--\r\n";

/// Base64 in lines of 76, as the Graph docs' example.
fn wrapped_base64(raw: &str) -> String {
    let encoded = BASE64.encode(raw);
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    lines.join("\r\n")
}

async fn post_mime(sim: &dev_sim::Sim, token: &str, body: String) -> reqwest::Response {
    client()
        .post(sim.url("v1.0/users/noreply-defender@contoso.com/sendMail"))
        .bearer_auth(token)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("sent")
}

#[tokio::test]
async fn send_mail_in_mime_form_records_the_text_and_the_html_part() {
    let sim = sim().await;
    sim.add_mailbox(TENANT, "noreply-defender@contoso.com");
    let token = graph_token(&sim).await;

    let r = post_mime(&sim, &token, wrapped_base64(MIME_MAIL)).await;

    assert_eq!(r.status(), 202);
    assert_eq!(r.text().await.expect("body"), "");
    let mails = sim.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.format, MailFormat::Mime);
    assert_eq!(m.from, "noreply-defender@contoso.com");
    assert_eq!(
        m.to,
        vec![
            "secops@contoso.com".to_owned(),
            "soc@contoso.com".to_owned()
        ]
    );
    assert_eq!(m.cc, vec!["it-endpoint@contoso.com".to_owned()]);
    assert_eq!(
        m.subject.as_deref(),
        Some("[Defender] Offboarding Rejected: pc-01 – Zürich")
    );
    assert_eq!(m.content_type.as_deref(), Some("multipart/alternative"));
    assert_eq!(m.parts, vec!["text/plain", "text/html"]);
    assert_eq!(m.message_id.as_deref(), Some("6f1c0b52@contoso.com"));
    assert_eq!(
        m.text.as_deref().map(str::trim_end),
        Some("Message: <b>OsPlatformNotSupported</b> & co")
    );
    assert_eq!(
        m.html.as_deref().map(str::trim_end),
        Some("<p>Message: &lt;b&gt;OsPlatformNotSupported&lt;/b&gt; &amp; co – Zürich</p>")
    );
    assert_eq!(m.body["mime"], MIME_MAIL);
}

#[tokio::test]
async fn unusable_mime_content_is_refused_like_graph() {
    let sim = sim().await;
    sim.add_mailbox(TENANT, "noreply-defender@contoso.com");
    let token = graph_token(&sim).await;

    let r = post_mime(&sim, &token, "not base64!".to_owned()).await;
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.expect("json");
    assert_eq!(
        b,
        serde_json::json!({"error": {
            "code": "ErrorMimeContentInvalidBase64String",
            "message": "Invalid base64 string for MIME content.",
        }})
    );

    let no_to = MIME_MAIL.replace("To: SecOps <secops@contoso.com>, soc@contoso.com\r\n", "");
    let no_from = MIME_MAIL.replace("From: Defender Ops <noreply-defender@contoso.com>\r\n", "");
    for (raw, missing) in [(no_to, "To"), (no_from, "From")] {
        let r = post_mime(&sim, &token, BASE64.encode(raw)).await;
        assert_eq!(r.status(), 400, "no {missing}");
        let b: Value = r.json().await.expect("json");
        assert_eq!(
            b["error"]["code"], "ErrorMimeContentInvalid",
            "no {missing}"
        );
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("no {missing} address"))),
            "{b}"
        );
    }

    let other_sender = MIME_MAIL.replace("noreply-defender@contoso.com", "ceo@contoso.com");
    let r = post_mime(&sim, &token, BASE64.encode(other_sender)).await;
    assert_eq!(r.status(), 403);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["code"], "ErrorSendAsDenied");

    assert!(sim.mails().is_empty());
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
