//! The Microsoft Graph client over real HTTPS against the simulator: incident pages with
//! alerts and device evidence, the watermark filter, sendMail (a MIME text + HTML mail) and its
//! typed errors.

mod clients_support;

use std::time::Duration;

use clients_support::{CLIENT_ID, SECRET, TENANT, machine_id, tenant_auth, world};
use defender_ops::clients::graph::{GraphError, IncidentQuery, MAIL_SEND, OutgoingMail, Severity};
use dev_sim::{AppRegistration, Fault, Incident, Machine, MailFormat, RouteFamily, roles};
use futures::TryStreamExt;

fn seed_incidents(world: &clients_support::World, count: u64) -> time::OffsetDateTime {
    let now = world.sim.now();
    let machine = Machine::new(machine_id(1), "fin-lt-0142.corp.contoso.com", now);
    world.sim.add_machines(TENANT, [machine.clone()]);
    for n in 0..count {
        let at = now - time::Duration::minutes(i64::try_from(n).expect("small"));
        let severity = if n % 2 == 0 { "high" } else { "medium" };
        world.sim.upsert_incident(
            TENANT,
            Incident::for_machine(
                TENANT,
                &format!("{}", 48_000 + n),
                "Suspicious PowerShell",
                severity,
                &machine,
                at,
            ),
        );
    }
    now
}

#[tokio::test]
async fn incidents_are_read_in_pages_of_50_with_alerts_and_device_evidence() {
    let world = world().await;
    seed_incidents(&world, 120);
    let client = world.graph(tenant_auth());

    let pages: Vec<Vec<_>> = client
        .incidents(IncidentQuery::default())
        .try_collect()
        .await
        .expect("incidents");

    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![50, 50, 20]
    );
    let first = &pages[0][0];
    assert!(matches!(
        first.severity,
        Some(Severity::High | Severity::Medium)
    ));
    assert_eq!(first.mde_device_ids(), vec![machine_id(1).as_str()]);
    assert_eq!(client.api_calls(), 3);
    let request = world
        .sim
        .requests()
        .into_iter()
        .find(|r| r.family == Some(RouteFamily::Incidents))
        .expect("request");
    assert!(
        request.path_and_query.contains("expand=alerts"),
        "{}",
        request.path_and_query
    );
}

#[tokio::test]
async fn only_incidents_updated_since_the_watermark_are_read() {
    let world = world().await;
    let now = seed_incidents(&world, 10);

    let incidents: Vec<_> = world
        .graph(tenant_auth())
        .incidents(IncidentQuery {
            since: Some(now - time::Duration::seconds(150)),
            page_size: None,
        })
        .try_concat()
        .await
        .expect("incidents");

    // Updated at now, now-1 min, now-2 min.
    assert_eq!(incidents.len(), 3);
}

#[tokio::test]
async fn a_throttled_incident_page_is_retried_after_retry_after() {
    let world = world().await;
    seed_incidents(&world, 2);
    world.sim.inject_fault(
        RouteFamily::Incidents,
        Fault::Throttle {
            retry_after: 1,
            count: 1,
        },
    );
    let started = std::time::Instant::now();

    let incidents: Vec<_> = world
        .graph(tenant_auth())
        .incidents(IncidentQuery::default())
        .try_concat()
        .await
        .expect("incidents");

    assert_eq!(incidents.len(), 2);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

fn mail<'a>(subject: &'a str, text: &'a str, html: &'a str) -> OutgoingMail<'a> {
    OutgoingMail {
        subject,
        text,
        html,
        key: None,
    }
}

#[tokio::test]
async fn a_mail_is_sent_from_a_known_mailbox_with_a_text_and_an_html_part() {
    let world = world().await;
    world
        .sim
        .add_mailbox(TENANT, "noreply-defender@contoso.com");
    let to = [
        "secops@contoso.com".to_owned(),
        "soc@contoso.com".to_owned(),
    ];

    world
        .graph(tenant_auth())
        .send_mail(
            "noreply-defender@contoso.com",
            &to,
            &mail(
                "[Defender cleanup] 3 devices offboarded – Zürich",
                "Offboarded: fin-lt-0142 (<b>note</b> & more)\n",
                "<p>Offboarded: fin-lt-0142 (&lt;b&gt;note&lt;/b&gt; &amp; more)</p>",
            ),
        )
        .await
        .expect("sent");

    let mails = world.sim.mails();
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m.format, MailFormat::Mime);
    assert_eq!(m.from, "noreply-defender@contoso.com");
    assert_eq!(m.to, to);
    assert_eq!(
        m.subject.as_deref(),
        Some("[Defender cleanup] 3 devices offboarded – Zürich")
    );
    assert_eq!(m.content_type.as_deref(), Some("multipart/alternative"));
    assert_eq!(m.parts, vec!["text/plain", "text/html"]);
    assert_eq!(
        m.text.as_deref().map(str::trim_end),
        Some("Offboarded: fin-lt-0142 (<b>note</b> & more)")
    );
    assert_eq!(
        m.html.as_deref(),
        Some("<p>Offboarded: fin-lt-0142 (&lt;b&gt;note&lt;/b&gt; &amp; more)</p>")
    );
    let request = world
        .sim
        .requests()
        .into_iter()
        .find(|r| r.path_and_query.ends_with("/sendMail"))
        .expect("request");
    assert_eq!(request.status, 202);
}

#[tokio::test]
async fn every_send_of_one_key_carries_the_same_message_id() {
    let world = world().await;
    world
        .sim
        .add_mailbox(TENANT, "noreply-defender@contoso.com");
    let client = world.graph(tenant_auth());
    let to = ["secops@contoso.com".to_owned()];
    for key in [
        Some("offboard-r1-Rejected"),
        Some("offboard-r1-Rejected"),
        None,
    ] {
        client
            .send_mail(
                "noreply-defender@contoso.com",
                &to,
                &OutgoingMail {
                    key,
                    ..mail("s", "t", "<p>t</p>")
                },
            )
            .await
            .expect("sent");
    }

    let ids: Vec<String> = world
        .sim
        .mails()
        .into_iter()
        .map(|m| m.message_id.expect("a Message-ID"))
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
    assert!(ids.iter().all(|id| id.ends_with("@contoso.com")), "{ids:?}");
}

#[tokio::test]
async fn an_unusable_recipient_is_refused_before_anything_is_sent() {
    let world = world().await;
    world
        .sim
        .add_mailbox(TENANT, "noreply-defender@contoso.com");
    let client = world.graph(tenant_auth());

    for to in [
        vec![],
        vec!["secops@contoso.com\r\nBcc: attacker@example.com".to_owned()],
    ] {
        let error = client
            .send_mail(
                "noreply-defender@contoso.com",
                &to,
                &mail("s", "t", "<p>t</p>"),
            )
            .await
            .expect_err("refused");
        assert!(
            matches!(error, GraphError::InvalidRecipients { .. }),
            "{error:?}"
        );
    }
    assert_eq!(client.api_calls(), 0);
    assert!(world.sim.mails().is_empty());
}

#[tokio::test]
async fn a_throttled_mail_is_sent_once_after_retry_after() {
    let world = world().await;
    world
        .sim
        .add_mailbox(TENANT, "noreply-defender@contoso.com");
    world.sim.inject_fault(
        RouteFamily::SendMail,
        Fault::Throttle {
            retry_after: 1,
            count: 1,
        },
    );
    let started = std::time::Instant::now();

    world
        .graph(tenant_auth())
        .send_mail(
            "noreply-defender@contoso.com",
            &["secops@contoso.com".to_owned()],
            &mail("s", "t", "<p>t</p>"),
        )
        .await
        .expect("sent after the wait");

    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(world.sim.mails().len(), 1);
}

#[tokio::test]
async fn an_unknown_mailbox_is_reported_as_such() {
    let world = world().await;

    let error = world
        .graph(tenant_auth())
        .send_mail(
            "nobody@contoso.com",
            &["a@contoso.com".to_owned()],
            &mail("s", "text", ""),
        )
        .await
        .expect_err("unknown mailbox");

    assert!(
        matches!(&error, GraphError::MailboxNotFound { mailbox, code, .. } if mailbox == "nobody@contoso.com" && code == "ErrorInvalidUser"),
        "{error:?}"
    );
}

#[tokio::test]
async fn sending_without_mail_send_is_forbidden_naming_the_permission() {
    let world = world().await;
    world
        .sim
        .add_mailbox(TENANT, "noreply-defender@contoso.com");
    let mut app = AppRegistration::with_secret(TENANT, CLIENT_ID, SECRET);
    app.graph_roles = vec![roles::SECURITY_INCIDENT_READ_ALL.into()];
    world.sim.add_app(app);

    let error = world
        .graph(tenant_auth())
        .send_mail(
            "noreply-defender@contoso.com",
            &["a@contoso.com".to_owned()],
            &mail("s", "x", "<p>x</p>"),
        )
        .await
        .expect_err("forbidden");

    assert!(
        matches!(
            error,
            GraphError::Forbidden {
                permission: MAIL_SEND,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("Mail.Send"));
    assert!(world.sim.mails().is_empty());
}
