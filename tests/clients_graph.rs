//! The Microsoft Graph client over real HTTPS against the simulator: incident pages with
//! alerts and device evidence, the watermark filter, sendMail and its typed errors.

mod clients_support;

use std::time::Duration;

use clients_support::{CLIENT_ID, SECRET, TENANT, machine_id, tenant_auth, world};
use defender_ops::clients::graph::{GraphError, IncidentQuery, MAIL_SEND, Severity};
use dev_sim::{AppRegistration, Fault, Incident, Machine, RouteFamily, roles};
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

#[tokio::test]
async fn a_mail_is_sent_from_a_known_mailbox() {
    let world = world().await;
    world
        .sim
        .add_mailbox(TENANT, "noreply-defender@contoso.com");

    world
        .graph(tenant_auth())
        .send_mail(
            "noreply-defender@contoso.com",
            &["secops@contoso.com".to_owned()],
            "[Defender cleanup] 3 devices offboarded",
            "<p>Done</p>",
            "Done",
        )
        .await
        .expect("sent");

    let mails = world.sim.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, vec!["secops@contoso.com".to_owned()]);
    assert_eq!(
        mails[0].subject.as_deref(),
        Some("[Defender cleanup] 3 devices offboarded")
    );
}

#[tokio::test]
async fn an_unknown_mailbox_is_reported_as_such() {
    let world = world().await;

    let error = world
        .graph(tenant_auth())
        .send_mail(
            "nobody@contoso.com",
            &["a@contoso.com".to_owned()],
            "s",
            "",
            "text",
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
            "s",
            "<p>x</p>",
            "x",
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
