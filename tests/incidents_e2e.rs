//! IncidentWatch end to end: Graph incidents in dev/sim become `incidentNew` and
//! `incidentChanged` notes, delivered by Notify, through dev/host + handler + Azurite.

mod common;

use common::{APP1, APP2, Env, Options, T1, T2, mid, request_paths};
use defender_ops::notify::schema::Schema;
use dev_sim::{Incident, Machine, RouteFamily};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const TEAMS_SIG: &str = "teamsSig5ecretIncidents";

/// The handler with Teams and the webhook configured (no mail).
async fn start() -> Env {
    let env = Env::start_with(Options {
        settings: vec![
            ("NOTIFY_TEAMS_SECRET".into(), "notify-teams".into()),
            ("NOTIFY_WEBHOOK_SECRET".into(), "notify-webhook".into()),
        ],
        ..Options::default()
    })
    .await;
    let teams = env.sim.add_teams_workflow("wf-incidents", TEAMS_SIG);
    env.sim.set_secret("notify-teams", teams.as_str());
    env.sim
        .set_secret("notify-webhook", env.sim.sink_url("incidents").as_str());
    env
}

/// Registers a tenant with one synced device; `incident_role` false leaves its app without
/// SecurityIncident.Read.All.
async fn register(env: &Env, tenant: &str, app: &str, incident_role: bool) -> Machine {
    let machine = Machine::new(
        mid(if tenant == T1 { 1 } else { 2 }),
        "fin-lt-0142.corp.contoso.com",
        env.sim.now(),
    );
    env.sim.add_tenant(tenant);
    env.sim.add_machines(tenant, vec![machine.clone()]);
    let status = env
        .register_tenant_with(tenant, app, |registration| {
            if !incident_role {
                registration
                    .graph_roles
                    .retain(|r| r != "SecurityIncident.Read.All");
            }
        })
        .await;
    assert_eq!(status, 201);
    env.settle().await;
    machine
}

fn events(env: &Env) -> Vec<Value> {
    env.sim
        .sink_events()
        .iter()
        .map(|e| serde_json::from_str(&e.body).expect("event JSON"))
        .collect()
}

async fn watch(env: &Env) {
    env.host
        .fire_timer("IncidentWatch")
        .await
        .expect("IncidentWatch runs");
    env.settle().await;
}

fn assert_cards_valid(env: &Env) {
    let schema = Schema::parse(include_str!("data/adaptive-card.schema.json")).expect("schema");
    for p in env.sim.teams_posts() {
        assert_eq!(p.flow_failure, None);
        let errors = schema.validate(&p.body);
        assert!(errors.is_empty(), "{errors:?}\n{:#}", p.body);
    }
}

fn incident_requests(env: &Env) -> Vec<String> {
    request_paths(&env.sim, RouteFamily::Incidents)
}

fn filter_since(path_and_query: &str) -> Option<OffsetDateTime> {
    let url = url::Url::parse(&format!("https://x{path_and_query}")).ok()?;
    let (_, filter) = url.query_pairs().find(|(k, _)| k == "$filter")?;
    let since = filter.strip_prefix("lastUpdateDateTime ge ")?.to_owned();
    OffsetDateTime::parse(&since, &Rfc3339).ok()
}

#[tokio::test]
async fn an_incident_that_appears_then_changes_severity_then_changes_nothing_notifies_twice() {
    let env = start().await;
    let machine = register(&env, T1, APP1, true).await;
    // The Devices row names the device; the evidence's name is older.
    let devices = env.tables.table("Devices").expect("Devices");
    let mut row = env
        .row("Devices", T1, &machine.id)
        .await
        .expect("device row");
    row.set("ComputerDnsName", "fin-lt-0142-renamed.corp.contoso.com");
    devices.upsert_merge(&row).await.expect("rename");
    let t0 = env.sim.now() - time::Duration::minutes(30);
    env.sim.upsert_incident(
        T1,
        Incident::for_machine(T1, "1001", "Suspicious PowerShell", "medium", &machine, t0),
    );
    // Below INCIDENT_MIN_SEVERITY (medium): silent.
    env.sim.upsert_incident(
        T1,
        Incident::for_machine(T1, "1002", "Unwanted software", "low", &machine, t0),
    );

    watch(&env).await;
    let first = events(&env);
    assert_eq!(first.len(), 1, "{first:#?}");
    let new = &first[0];
    assert_eq!(new["type"], "defender-ops.incidentNew");
    assert_eq!(new["data"]["incidentId"], "1001");
    assert_eq!(new["data"]["severity"], "medium");
    assert_eq!(
        new["data"]["devices"][0]["name"],
        "fin-lt-0142-renamed.corp.contoso.com"
    );
    assert_eq!(new["data"]["devices"][0]["machineId"], machine.id.as_str());
    let fingerprint = env
        .row("Incidents", T1, "1001")
        .await
        .expect("incident row")
        .get_str("Fingerprint")
        .expect("fingerprint")
        .to_owned();
    assert_eq!(new["id"], format!("incident-{T1}-1001-{fingerprint}"));

    let t1 = t0 + time::Duration::minutes(5);
    assert!(env.sim.update_incident(T1, "1001", |i| {
        i.severity = "high".into();
        i.last_update_date_time = t1;
    }));
    watch(&env).await;
    let second = events(&env);
    assert_eq!(second.len(), 2);
    let changed = &second[1];
    assert_eq!(changed["type"], "defender-ops.incidentChanged");
    assert_eq!(changed["data"]["severity"], "high");
    assert_eq!(
        changed["data"]["changes"],
        json!(["severity: medium → high"])
    );

    // A comment-like update: lastUpdateDateTime moves, nothing a person acts on changes.
    let t2 = t1 + time::Duration::minutes(5);
    assert!(env.sim.update_incident(T1, "1001", |i| {
        i.description = Some("analyst note".into());
        i.last_update_date_time = t2;
    }));
    watch(&env).await;
    assert_eq!(events(&env).len(), 2, "unchanged updates are silent");
    assert_eq!(env.sim.teams_posts().len(), 2);
    assert_cards_valid(&env);

    let row = env.row("Incidents", T1, "1001").await.expect("row");
    assert_eq!(row.get_str("Severity"), Some("high"));
    assert_eq!(row.get_str("Status"), Some("active"));
    let cursor = env.row("Cursors", T1, "incidents").await.expect("cursor");
    let value =
        OffsetDateTime::parse(cursor.get_str("Value").expect("Value"), &Rfc3339).expect("RFC 3339");
    // Graph's times carry 100 ns ticks.
    assert!(
        (value - t2).abs() < time::Duration::microseconds(1),
        "the watermark is the newest lastUpdateDateTime: {value} vs {t2}"
    );
}

#[tokio::test]
async fn a_hundred_and_twenty_incidents_across_three_pages_are_each_notified_once() {
    let env = start().await;
    let machine = register(&env, T1, APP1, true).await;
    let newest = env.sim.now() - time::Duration::minutes(10);
    for i in 0..120u32 {
        env.sim.upsert_incident(
            T1,
            Incident::for_machine(
                T1,
                &format!("{}", 5000 + i),
                &format!("Alert {i}"),
                "high",
                &machine,
                newest - time::Duration::minutes(i64::from(i)),
            ),
        );
    }
    env.sim.clear_requests();
    watch(&env).await;
    let first_run = incident_requests(&env);
    assert_eq!(first_run.len(), 3, "pages of 50: {first_run:?}");
    let first_since = filter_since(&first_run[0]).expect("a $filter");
    assert!(
        OffsetDateTime::now_utc() - first_since >= time::Duration::hours(23),
        "the first run looks back a day"
    );
    let events = events(&env);
    assert_eq!(events.len(), 120);
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e["data"]["incidentId"].as_str().expect("id").to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 120, "each incident once");
    assert_eq!(env.sim.teams_posts().len(), 120);

    // The next run starts at the stored watermark (minus the overlap) and finds nothing new.
    env.sim.clear_requests();
    watch(&env).await;
    let second_run = incident_requests(&env);
    assert_eq!(
        second_run.len(),
        1,
        "only the overlap is re-read: {second_run:?}"
    );
    let since = filter_since(&second_run[0]).expect("a $filter");
    let expected = newest - time::Duration::minutes(2);
    assert!(
        (since - expected).abs() < time::Duration::microseconds(1),
        "{since} vs {expected}"
    );
    assert_eq!(env.sim.sink_events().len(), 120);
    assert_eq!(env.sim.teams_posts().len(), 120);
}

#[tokio::test]
async fn a_tenant_whose_graph_call_fails_does_not_stop_the_others() {
    let env = start().await;
    let m1 = register(&env, T1, APP1, true).await;
    let m2 = register(&env, T2, APP2, false).await;
    let at = env.sim.now() - time::Duration::minutes(5);
    env.sim.upsert_incident(
        T1,
        Incident::for_machine(T1, "7001", "Mimikatz", "high", &m1, at),
    );
    env.sim.upsert_incident(
        T2,
        Incident::for_machine(T2, "7002", "Mimikatz", "high", &m2, at),
    );
    watch(&env).await;

    let events = events(&env);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["tenantId"], T1);
    let audit = env.rows("Audit", T2).await;
    let failure = audit
        .iter()
        .find(|e| e.get_str("Kind") == Some("IncidentWatchFailed"))
        .expect("the failure is audited");
    assert!(
        failure
            .get_str("Detail")
            .unwrap_or_default()
            .contains("SecurityIncident.Read.All"),
        "{:?}",
        failure.props
    );
    assert!(env.row("Cursors", T2, "incidents").await.is_none());
    assert!(env.row("Cursors", T1, "incidents").await.is_some());
    let logs = env.host.handler_log_text();
    assert!(!logs.contains(TEAMS_SIG) && !logs.contains("sink/incidents") && !logs.contains("eyJ"));
}
