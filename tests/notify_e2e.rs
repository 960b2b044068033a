//! Notifications end to end: notes put on `notifications` are delivered to Teams (dev/sim's
//! Workflows endpoint), Graph sendMail and the outbound webhook sink, once per channel,
//! through dev/host + handler + Azurite.

mod common;

use common::{APP1, Env, Options, T1, T2};
use defender_ops::clients::credentials::{AuthMode, TenantAuth};
use defender_ops::clients::tables::Entity;
use defender_ops::config::SecretName;
use defender_ops::domain::notification::{DeviceRef, Event, Note};
use defender_ops::domain::{ChannelSet, TenantId};
use defender_ops::notify::schema::Schema;
use defender_ops::store::{self, names, outbox, tenants};
use dev_sim::{AppRegistration, Fault, MailFormat, RouteFamily, SimConfig};
use serde_json::Value;
use time::OffsetDateTime;

const HOME_APP: &str = "33333333-3333-4333-8333-333333333333";
const FROM: &str = "defender-ops@contoso.com";
const TO: &str = "secops@contoso.com";
// Secrets: none may appear in handler logs or Outbox rows.
const TEAMS_SIG: &str = "teamsSig5ecretQz81";
const HMAC_KEY: &str = "hmacKey5ecretWx42-0123456789abcdef";
/// The outbound events' own key (`NOTIFY_WEBHOOK_SIGNING_SECRET`), not the inbound one.
const EVENTS_KEY: &str = "eventsKey5ecretQz97-fedcba9876543210";
const HOME_SECRET: &str = "homeApp5ecretVb77";
const TEAMS_PATH: &str = "teams/workflows/wf-secops";
const SINK_ID: &str = "hook-7f3a9c";

struct Channels {
    mail_send: bool,
    sign: bool,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            mail_send: true,
            sign: true,
        }
    }
}

/// The handler with all three channels configured and their secrets in the sim's vault.
async fn start(ch: Channels) -> Env {
    let home = SimConfig::default().home_tenant;
    let mut settings: Vec<(String, String)> = vec![
        ("NOTIFY_TEAMS_SECRET".into(), "notify-teams".into()),
        ("NOTIFY_WEBHOOK_SECRET".into(), "notify-webhook".into()),
        ("NOTIFY_EMAIL_FROM".into(), FROM.into()),
        ("NOTIFY_EMAIL_TO".into(), TO.into()),
        ("HOME_TENANT_ID".into(), home.clone()),
        ("HOME_CLIENT_ID".into(), HOME_APP.into()),
        ("HOME_SECRET_NAME".into(), "home-app".into()),
    ];
    if ch.sign {
        settings.push(("WEBHOOK_HMAC_SECRET".into(), "webhook-hmac".into()));
        settings.push((
            "NOTIFY_WEBHOOK_SIGNING_SECRET".into(),
            "events-signing".into(),
        ));
    }
    let env = Env::start_with(Options {
        settings,
        ..Options::default()
    })
    .await;
    let teams = env.sim.add_teams_workflow("wf-secops", TEAMS_SIG);
    env.sim.set_secret("notify-teams", teams.as_str());
    env.sim
        .set_secret("notify-webhook", env.sim.sink_url(SINK_ID).as_str());
    env.sim.set_secret("webhook-hmac", HMAC_KEY);
    env.sim.set_secret("events-signing", EVENTS_KEY);
    let mut app = AppRegistration::with_secret(&home, HOME_APP, HOME_SECRET);
    if !ch.mail_send {
        app.graph_roles.clear();
    }
    env.sim.add_app(app);
    env.sim.set_secret("home-app", HOME_SECRET);
    env.sim.add_mailbox(&home, FROM);
    seed_tenant(&env, T1, "").await;
    env
}

/// A `Tenants` row written directly (no first sync, so no sync notes), narrowed to
/// `channels` (empty = every configured channel).
async fn seed_tenant(env: &Env, tenant: &str, channels: &str) {
    let table = store::open(&env.tables, names::TENANTS)
        .await
        .expect("Tenants");
    let now = OffsetDateTime::now_utc();
    let t = tenants::Tenant {
        auth: TenantAuth::new(
            TenantId::parse(tenant).expect("tenant id"),
            APP1,
            AuthMode::Secret,
            Some(SecretName::parse("tenant-secret").expect("name")),
        )
        .expect("auth"),
        display_name: "Contoso <Europe>".into(),
        enabled: true,
        defender_api_base: None,
        notify_channels: ChannelSet::parse(channels).expect("channels"),
        approval: Default::default(),
        created_at: now,
        updated_at: now,
    };
    tenants::insert(&table, &t).await.expect("tenant row");
}

fn note(id: &str, tenant: &str, event: Event) -> Note {
    Note {
        id: id.into(),
        tenant_id: TenantId::parse(tenant).expect("tenant"),
        at: OffsetDateTime::now_utc(),
        event,
    }
}

fn device(n: u32, name: &str) -> DeviceRef {
    DeviceRef {
        machine_id: format!("{n:040x}"),
        name: Some(name.into()),
    }
}

/// One note of every kind.
fn every_kind(tenant: &str) -> Vec<Note> {
    vec![
        note(
            "offboard-r1",
            tenant,
            Event::OffboardResult {
                request_id: "r1".into(),
                machine_id: format!("{:040x}", 1),
                device_name: Some("pc-01.contoso.com".into()),
                status: "Rejected".into(),
                message: Some("<b>OsPlatformNotSupported</b> & co".into()),
                action_id: None,
                console_url: None,
            },
        ),
        note(
            "incident-new-48213",
            tenant,
            Event::IncidentNew {
                incident_id: "48213".into(),
                title: "Suspicious PowerShell on one endpoint".into(),
                severity: "high".into(),
                status: "active".into(),
                url: Some(format!(
                    "https://security.microsoft.com/incidents/48213?tid={tenant}"
                )),
                devices: vec![device(2, "fin-lt-0142.corp.contoso.com")],
            },
        ),
        note(
            "incident-changed-48213",
            tenant,
            Event::IncidentChanged {
                incident_id: "48213".into(),
                title: "Suspicious PowerShell on one endpoint".into(),
                severity: "high".into(),
                status: "resolved".into(),
                changes: vec!["status: active → resolved".into()],
                url: Some(format!(
                    "https://security.microsoft.com/incidents/48213?tid={tenant}"
                )),
            },
        ),
        note(
            "sync-1-onboarded",
            tenant,
            Event::DevicesOnboarded {
                run_id: "sync-1".into(),
                count: 2,
                devices: vec![device(3, "new-03"), device(4, "new-04")],
            },
        ),
        note(
            "sync-1-stale",
            tenant,
            Event::DevicesStale {
                run_id: "sync-1".into(),
                count: 30,
                stale_after_days: 7,
                devices: vec![device(5, "old-05")],
            },
        ),
        note(
            "sync-1-failed",
            tenant,
            Event::SyncFailed {
                run_id: "sync-1".into(),
                message: "Defender refused the app (403)".into(),
            },
        ),
    ]
}

async fn enqueue(env: &Env, n: &Note) {
    env.host
        .enqueue("notifications", &n.to_message())
        .await
        .expect("enqueue");
}

async fn outbox_row(env: &Env, n: &Note) -> Entity {
    env.row("Outbox", &outbox::day_of(n.at), &n.id)
        .await
        .unwrap_or_else(|| panic!("Outbox row of {}", n.id))
}

fn schema() -> Schema {
    Schema::parse(include_str!("data/adaptive-card.schema.json")).expect("schema")
}

fn card_title(card: &Value) -> String {
    card["attachments"][0]["content"]["body"][0]["items"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn events(env: &Env) -> Vec<Value> {
    env.sim
        .sink_events()
        .iter()
        .map(|e| serde_json::from_str(&e.body).expect("event JSON"))
        .collect()
}

/// No secret in the handler's logs, nor in any Outbox row.
async fn assert_no_secrets(env: &Env, notes: &[Note]) {
    // Every secret of this suite, and the start of any JWT.
    let secrets = [
        TEAMS_SIG,
        HMAC_KEY,
        EVENTS_KEY,
        HOME_SECRET,
        TEAMS_PATH,
        SINK_ID,
        "eyJ",
    ];
    let logs = env.host.handler_log_text();
    for secret in secrets {
        assert!(!logs.contains(secret), "'{secret}' in the handler logs");
    }
    for n in notes {
        let row = outbox_row(env, n).await;
        let text = format!("{:?}", row.props);
        for secret in secrets {
            assert!(!text.contains(secret), "'{secret}' in Outbox {}", n.id);
        }
    }
}

#[tokio::test]
async fn every_kind_of_note_reaches_teams_email_and_the_webhook_with_its_content() {
    let env = start(Channels::default()).await;
    let notes = every_kind(T1);
    for n in &notes {
        enqueue(&env, n).await;
    }
    env.settle().await;

    // Teams: one valid card per note, in the Workflows envelope, nothing the flow would drop.
    let posts = env.sim.teams_posts();
    assert_eq!(posts.len(), notes.len());
    let schema = schema();
    for p in &posts {
        assert_eq!(p.flow_failure, None, "{:#}", p.body);
        let errors = schema.validate(&p.body);
        assert!(errors.is_empty(), "{errors:?}\n{:#}", p.body);
    }
    let titles: Vec<String> = posts.iter().map(|p| card_title(&p.body)).collect();
    for expected in [
        "Offboarding Rejected: pc-01.contoso.com",
        "New high incident: Suspicious PowerShell on one endpoint",
        "Incident 48213 changed: Suspicious PowerShell on one endpoint",
        "2 new devices onboarded",
        "30 devices turned stale",
        "Device sync failed",
    ] {
        assert!(
            titles.iter().any(|t| t == expected),
            "{expected} in {titles:?}"
        );
    }
    let incident = posts
        .iter()
        .find(|p| card_title(&p.body).starts_with("New high"))
        .expect("incident card");
    let content = &incident.body["attachments"][0]["content"];
    assert_eq!(content["body"][0]["style"], "attention");
    assert_eq!(
        content["actions"][0]["url"],
        format!("https://security.microsoft.com/incidents/48213?tid={T1}")
    );
    let text = content.to_string();
    assert!(text.contains("fin-lt-0142.corp.contoso.com"));
    assert!(
        text.contains("Contoso <Europe>"),
        "tenant name in the facts"
    );
    let offboard = posts
        .iter()
        .find(|p| card_title(&p.body).starts_with("Offboarding"))
        .expect("offboard card");
    let content = &offboard.body["attachments"][0]["content"];
    assert_eq!(
        content["actions"][0]["url"],
        format!(
            "https://security.microsoft.com/machines/v2/{:040x}/overview?tid={T1}",
            1
        )
    );
    assert!(
        content
            .to_string()
            .contains("<b>OsPlatformNotSupported</b> & co")
    );

    // Email: a MIME multipart/alternative mail from the configured mailbox to the
    // recipients, text part first; the same content in both parts, escaped in the HTML.
    let mails = env.sim.mails();
    assert_eq!(mails.len(), notes.len());
    for m in &mails {
        assert_eq!(m.from, FROM);
        assert_eq!(m.to, vec![TO.to_owned()]);
        assert_eq!(m.format, MailFormat::Mime);
        assert_eq!(m.content_type.as_deref(), Some("multipart/alternative"));
        assert_eq!(m.parts, vec!["text/plain", "text/html"]);
        assert!(
            m.message_id
                .as_deref()
                .is_some_and(|id| id.ends_with("@contoso.com")),
            "{:?}",
            m.message_id
        );
    }
    let rejected = mails
        .iter()
        .find(|m| {
            m.subject.as_deref() == Some("[Defender] Offboarding Rejected: pc-01.contoso.com")
        })
        .expect("offboard mail");
    let text = rejected.text.as_deref().expect("a text part");
    let html = rejected.html.as_deref().expect("an HTML part");
    for (part, body) in [("text", text), ("html", html)] {
        for expected in [
            "pc-01.contoso.com",
            "r1",
            "Rejected",
            &format!("{:040x}", 1),
        ] {
            assert!(
                body.contains(expected),
                "'{expected}' in the {part} part:\n{body}"
            );
        }
    }
    assert!(
        text.contains("<b>OsPlatformNotSupported</b> & co"),
        "verbatim in the text part:\n{text}"
    );
    assert!(text.contains("Contoso <Europe>"), "{text}");
    assert!(
        html.contains("&lt;b&gt;OsPlatformNotSupported&lt;/b&gt; &amp; co"),
        "{html}"
    );
    assert!(html.contains("Contoso &lt;Europe&gt;"), "{html}");
    assert!(!html.contains("<b>OsPlatformNotSupported"), "{html}");
    let incident = mails
        .iter()
        .find(|m| m.subject.as_deref().is_some_and(|s| s.contains("New high")))
        .expect("incident mail");
    for body in [&incident.text, &incident.html] {
        let body = body.as_deref().expect("both parts");
        assert!(body.contains("fin-lt-0142.corp.contoso.com"), "{body}");
        assert!(
            body.contains("https://security.microsoft.com/incidents/48213"),
            "{body}"
        );
    }

    // Webhook: one signed JSON event per note, verifiable with the events' own key and
    // never with the key that authorises offboarding (design §9.1).
    let sink = env.sim.sink_events();
    assert_eq!(sink.len(), notes.len());
    for e in &sink {
        assert_eq!(e.sink_id, SINK_ID);
        let verify = |key: &str| {
            defender_ops::domain::signature::verify(
                key.as_bytes(),
                e.header("x-signature"),
                e.header("x-signature-timestamp"),
                e.body.as_bytes(),
                OffsetDateTime::now_utc().unix_timestamp(),
            )
        };
        verify(EVENTS_KEY).expect("a valid signature under NOTIFY_WEBHOOK_SIGNING_SECRET");
        assert_eq!(
            verify(HMAC_KEY),
            Err(defender_ops::domain::signature::SignatureError::Mismatch),
            "an outbound event must not verify under the inbound key"
        );
    }
    let events = events(&env);
    for n in &notes {
        let e = events
            .iter()
            .find(|e| e["id"] == n.id.as_str())
            .unwrap_or_else(|| panic!("event {}", n.id));
        assert_eq!(e["tenantId"], T1);
        assert_eq!(e["data"], serde_json::to_value(n).expect("note JSON"));
    }

    // Outbox: every channel marked sent once, the payload is the note.
    for n in &notes {
        let row = outbox_row(&env, n).await;
        assert_eq!(row.get_str("Channels"), Some("teams,email,webhook"));
        assert_eq!(row.get_str("Payload"), Some(n.to_message().as_str()));
        for c in ["Teams", "Email", "Webhook"] {
            assert!(
                row.get_datetime(&format!("{c}SentAt")).is_some(),
                "{c} of {}",
                n.id
            );
            assert_eq!(row.get_i32(&format!("{c}Attempts")), Some(1));
        }
        assert!(row.get_datetime("SentAt").is_some());
    }
    assert_no_secrets(&env, &notes).await;
}

#[tokio::test]
async fn a_redelivered_note_sends_nothing_twice_even_when_deliveries_race() {
    let env = start(Channels::default()).await;
    let notes = every_kind(T1);
    let first = &notes[1];
    enqueue(&env, first).await;
    env.settle().await;
    // Redelivered later: nothing more.
    enqueue(&env, first).await;
    env.settle().await;
    // Delivered four times at once: the claims let one through per channel.
    let second = &notes[3];
    for _ in 0..4 {
        enqueue(&env, second).await;
    }
    env.settle().await;

    for n in [first, second] {
        let count = |items: Vec<String>| items.iter().filter(|t| t.contains(&n.id)).count();
        assert_eq!(
            count(events(&env).iter().map(|e| e["id"].to_string()).collect()),
            1,
            "webhook events of {}",
            n.id
        );
        let row = outbox_row(&env, n).await;
        assert_eq!(row.get_i32("TeamsAttempts"), Some(1), "{:?}", row.props);
        assert_eq!(row.get_i32("EmailAttempts"), Some(1));
        assert_eq!(row.get_i32("WebhookAttempts"), Some(1));
    }
    assert_eq!(env.sim.teams_posts().len(), 2);
    assert_eq!(env.sim.mails().len(), 2);
    assert_eq!(env.sim.sink_events().len(), 2);
    assert!(
        env.host
            .poison_messages("notifications")
            .await
            .expect("poison")
            .is_empty()
    );
}

#[tokio::test]
async fn a_teams_500_is_retried_and_exactly_one_card_arrives() {
    let env = start(Channels::default()).await;
    env.sim.inject_fault(
        RouteFamily::Teams,
        Fault::Status {
            status: 500,
            count: 1,
        },
    );
    let n = &every_kind(T1)[5];
    enqueue(&env, n).await;
    env.settle().await;

    assert_eq!(env.sim.teams_posts().len(), 1, "one card");
    assert_eq!(env.sim.mails().len(), 1, "mail not repeated by the retry");
    assert_eq!(env.sim.sink_events().len(), 1, "webhook not repeated");
    let row = outbox_row(&env, n).await;
    assert_eq!(row.get_i32("TeamsAttempts"), Some(2));
    assert_eq!(row.get_i32("EmailAttempts"), Some(1));
    assert!(row.get_datetime("TeamsSentAt").is_some());
    assert_eq!(row.get_str("TeamsLastError"), Some(""), "cleared once sent");
    assert!(row.get_datetime("TeamsLastErrorAt").is_some());
    assert_no_secrets(&env, std::slice::from_ref(n)).await;
}

#[tokio::test]
async fn a_throttled_teams_post_waits_out_retry_after_in_place() {
    let env = start(Channels::default()).await;
    env.sim.inject_fault(
        RouteFamily::Teams,
        Fault::Throttle {
            retry_after: 1,
            count: 1,
        },
    );
    let n = &every_kind(T1)[0];
    enqueue(&env, n).await;
    env.settle().await;
    let throttled = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.family == Some(RouteFamily::Teams) && r.status == 429)
        .count();
    assert_eq!(throttled, 1, "the throttle was served");
    assert_eq!(env.sim.teams_posts().len(), 1);
    let row = outbox_row(&env, n).await;
    assert_eq!(
        row.get_i32("TeamsAttempts"),
        Some(1),
        "no failed invocation"
    );
}

#[tokio::test]
async fn an_app_without_mail_send_fails_clearly_and_the_note_ends_in_poison() {
    let env = start(Channels {
        mail_send: false,
        sign: true,
    })
    .await;
    let n = &every_kind(T1)[0];
    enqueue(&env, n).await;
    env.settle().await;

    let poison = env
        .host
        .poison_messages("notifications")
        .await
        .expect("poison");
    assert_eq!(poison.len(), 1, "the note ends in poison");
    let row = outbox_row(&env, n).await;
    let error = row.get_str("EmailLastError").unwrap_or_default();
    assert!(error.contains("Mail.Send"), "{error}");
    assert!(row.get_datetime("EmailSentAt").is_none());
    assert!(row.get_datetime("SentAt").is_none());
    assert_eq!(row.get_i32("EmailAttempts"), Some(5), "one per delivery");
    // The other channels were sent once, not once per retry.
    assert_eq!(env.sim.teams_posts().len(), 1);
    assert_eq!(env.sim.sink_events().len(), 1);
    assert_eq!(row.get_i32("TeamsAttempts"), Some(1));
    assert!(env.sim.mails().is_empty());
    assert_no_secrets(&env, std::slice::from_ref(n)).await;
}

#[tokio::test]
async fn a_tenant_narrowed_to_the_webhook_gets_no_card_and_no_mail() {
    let env = start(Channels::default()).await;
    seed_tenant(&env, T2, "webhook").await;
    let n = &every_kind(T2)[3];
    enqueue(&env, n).await;
    env.settle().await;
    assert!(env.sim.teams_posts().is_empty());
    assert!(env.sim.mails().is_empty());
    assert_eq!(env.sim.sink_events().len(), 1);
    let row = outbox_row(&env, n).await;
    assert_eq!(row.get_str("Channels"), Some("webhook"));
    assert!(row.get_datetime("SentAt").is_some());
}

#[tokio::test]
async fn an_unsigned_webhook_is_sent_when_no_key_is_configured() {
    let env = start(Channels {
        mail_send: true,
        sign: false,
    })
    .await;
    let n = &every_kind(T1)[2];
    enqueue(&env, n).await;
    env.settle().await;
    let sink = env.sim.sink_events();
    assert_eq!(sink.len(), 1);
    assert!(sink[0].header("x-signature").is_none());
    assert!(env.host.handler_log_text().contains("sent unsigned"));
}

#[tokio::test]
async fn a_malformed_note_ends_in_poison_and_sends_nothing() {
    let env = start(Channels::default()).await;
    env.host
        .enqueue("notifications", r#"{"id":"x","kind":"nothingKnown"}"#)
        .await
        .expect("enqueue");
    env.settle().await;
    assert_eq!(
        env.host
            .poison_messages("notifications")
            .await
            .expect("poison")
            .len(),
        1
    );
    assert!(env.sim.teams_posts().is_empty());
    assert!(env.sim.mails().is_empty());
    assert!(env.sim.sink_events().is_empty());
}

/// The claim protocol on its own, on Azurite: a race sends once, and a claim left by a
/// delivery that died mid-send is taken over once its lease has run out.
#[tokio::test]
async fn claims_let_one_racer_send_and_expire_when_their_holder_died() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use defender_ops::clients::tables::{IfMatch, TableOptions, TableService};
    use defender_ops::config::StorageSettings;
    use defender_ops::domain::Channel;
    use defender_ops::notify::deliver::{self, ChannelOutcome};

    let storage = dev_host::Azurite::shared().await.expect("Azurite");
    let tables = TableService::from_settings(
        &StorageSettings::ConnectionString(storage.into()),
        TableOptions::with_prefix(common::unique("c")),
    )
    .expect("tables");
    let table = store::open(&tables, names::OUTBOX).await.expect("Outbox");
    let now = OffsetDateTime::now_utc();
    let day = outbox::day_of(now);
    outbox::record(
        &table,
        &outbox::NewOutbox {
            day: day.clone(),
            note_id: "race-1",
            kind: "syncFailed",
            tenant_id: T1,
            channels: &[Channel::Teams, Channel::Email],
            payload: "{}",
        },
        now,
    )
    .await
    .expect("row");

    let sends = Arc::new(AtomicU32::new(0));
    let racer = || {
        let sends = sends.clone();
        let (table, day) = (table.clone(), day.clone());
        async move {
            deliver::channel(
                &table,
                &day,
                "race-1",
                Channel::Teams,
                OffsetDateTime::now_utc,
                || async move {
                    sends.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    Ok(())
                },
            )
            .await
            .expect("storage")
        }
    };
    let (a, b) = tokio::join!(racer(), racer());
    assert_eq!(sends.load(Ordering::SeqCst), 1, "{a:?} {b:?}");
    let mut outcomes = [a, b];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        [ChannelOutcome::AlreadySent, ChannelOutcome::Sent]
    );

    // A delivery died holding the email claim three minutes ago (lease: two).
    let dead = Entity::new(day.as_str(), "race-1")
        .with("EmailClaimId", "dead-delivery")
        .with("EmailClaimedAt", now - time::Duration::minutes(3))
        .with("EmailAttempts", 1);
    table
        .update_merge(&dead, IfMatch::Any)
        .await
        .expect("claim");
    let outcome = deliver::channel(
        &table,
        &day,
        "race-1",
        Channel::Email,
        OffsetDateTime::now_utc,
        || async { Ok(()) },
    )
    .await
    .expect("storage");
    assert_eq!(outcome, ChannelOutcome::Sent);
    let row = table.get(&day, "race-1").await.expect("read").expect("row");
    assert_eq!(row.get_i32("EmailAttempts"), Some(2));
    assert_eq!(row.get_str("EmailClaimId"), Some(""));
    assert!(row.get_datetime("EmailSentAt").is_some());

    // A failed send is recorded and releases the claim for the next delivery.
    let outcome = deliver::channel(
        &table,
        &day,
        "race-1",
        Channel::Webhook,
        OffsetDateTime::now_utc,
        || async { Err("the outbound webhook answered 503".to_owned()) },
    )
    .await
    .expect("storage");
    assert_eq!(
        outcome,
        ChannelOutcome::Failed("the outbound webhook answered 503".into())
    );
    let row = table.get(&day, "race-1").await.expect("read").expect("row");
    assert_eq!(
        row.get_str("WebhookLastError"),
        Some("the outbound webhook answered 503")
    );
    assert_eq!(row.get_str("WebhookClaimId"), Some(""));
}
