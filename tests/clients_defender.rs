//! The Defender for Endpoint client over real HTTPS against the simulator: paging, token
//! caching, retries, throttling, offboard outcomes and the no-blind-retry rule.

mod clients_support;

use std::time::{Duration, Instant};

use clients_support::{CLIENT_ID, MDE_SCOPE, TENANT, World, machine_id, world, world_with};
use defender_ops::clients::defender::{ActionStatus, ActionType, DefenderError, MachineQuery};
use defender_ops::clients::http::HttpSettings;
use defender_ops::domain::MachineId;
use dev_sim::{AppRegistration, Fault, Machine, RouteFamily, SimConfig, roles};
use futures::TryStreamExt;

fn seed(world: &World, count: u64) {
    let now = world.sim.now();
    world.sim.add_machines(
        TENANT,
        (0..count).map(|n| Machine::new(machine_id(n + 1), format!("pc-{n:05}.contoso.com"), now)),
    );
}

fn id(n: u64) -> MachineId {
    MachineId::parse(&machine_id(n)).expect("machine id")
}

fn requests_of(world: &World, family: RouteFamily) -> usize {
    world
        .sim
        .requests()
        .iter()
        .filter(|r| r.family == Some(family))
        .count()
}

#[tokio::test]
async fn machines_are_read_in_pages_of_10000_following_next_links() {
    let world = world().await;
    seed(&world, 25_000);
    let client = world.defender();

    let pages: Vec<Vec<_>> = client
        .machines(MachineQuery::default())
        .try_collect()
        .await
        .expect("machines");

    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![10_000, 10_000, 5_000]);
    let mut ids: Vec<&str> = pages.iter().flatten().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 25_000);
    assert_eq!(client.api_calls(), 3);
}

#[tokio::test]
async fn a_full_page_without_a_next_link_is_followed_by_a_skip_request() {
    let world = world().await;
    seed(&world, 20);
    let client = world.defender_with(|s| s.page_size = 10);

    let pages: Vec<Vec<_>> = client
        .machines(MachineQuery::default())
        .try_collect()
        .await
        .expect("machines");

    // 10 (nextLink) + 10 (no nextLink but full) + 0 (the $skip probe).
    assert_eq!(pages.iter().map(Vec::len).sum::<usize>(), 20);
    assert_eq!(client.api_calls(), 3);
    let last = world
        .sim
        .requests()
        .into_iter()
        .rfind(|r| r.family == Some(RouteFamily::Machines))
        .expect("a machines request");
    assert!(
        last.path_and_query.contains("skip=20"),
        "{}",
        last.path_and_query
    );
}

#[tokio::test]
async fn a_filter_is_sent_and_applied() {
    let world = world().await;
    seed(&world, 5);
    world.sim.update_machine(TENANT, &machine_id(3), |m| {
        m.health_status = "Inactive".into()
    });
    let client = world.defender();

    let machines: Vec<_> = client
        .machines(MachineQuery {
            filter: Some("healthStatus ne 'Active'".into()),
            page_size: None,
        })
        .try_concat()
        .await
        .expect("machines");

    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].id, machine_id(3));
}

#[tokio::test]
async fn a_tenant_without_machines_yields_an_empty_stream() {
    let world = world().await;
    world.sim.add_tenant(TENANT);
    let machines: Vec<_> = world
        .defender()
        .machines(MachineQuery::default())
        .try_concat()
        .await
        .expect("no machines is not an error");
    assert!(machines.is_empty());
}

#[tokio::test]
async fn one_token_request_serves_many_calls() {
    let world = world().await;
    seed(&world, 3);
    let client = world.defender();

    for n in 1..=3 {
        client.machine(&id(n)).await.expect("machine");
    }
    let again = world.defender();
    again.machine(&id(1)).await.expect("machine");

    assert_eq!(world.sim.token_requests(TENANT, CLIENT_ID, MDE_SCOPE), 1);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out_then_the_call_succeeds() {
    let world = world().await;
    seed(&world, 1);
    world.sim.inject_fault(
        RouteFamily::Machines,
        Fault::Throttle {
            retry_after: 2,
            count: 1,
        },
    );
    let client = world.defender();

    let started = Instant::now();
    let machine = client
        .machine(&id(1))
        .await
        .expect("machine after the wait");

    assert_eq!(machine.id, machine_id(1));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(requests_of(&world, RouteFamily::Machines), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_reported_as_throttled() {
    let world = world().await;
    seed(&world, 1);
    world.sim.inject_fault(
        RouteFamily::Machines,
        Fault::Throttle {
            retry_after: 37,
            count: 1,
        },
    );

    let error = world
        .defender()
        .machine(&id(1))
        .await
        .expect_err("throttled");

    assert!(
        matches!(error, DefenderError::Throttled { retry_after: Some(d) } if d == Duration::from_secs(37)),
        "{error:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_until_the_call_succeeds() {
    let world = world().await;
    seed(&world, 1);
    world.sim.inject_fault(
        RouteFamily::Machines,
        Fault::Status {
            status: 503,
            count: 2,
        },
    );
    let client = world.defender();

    client.machine(&id(1)).await.expect("machine after retries");

    assert_eq!(requests_of(&world, RouteFamily::Machines), 3);
    assert_eq!(client.api_calls(), 3);
}

#[tokio::test]
async fn persistent_server_errors_end_as_transient() {
    let world = world().await;
    seed(&world, 1);
    world.sim.inject_fault(
        RouteFamily::Machines,
        Fault::Status {
            status: 500,
            count: 100,
        },
    );

    let error = world.defender().machine(&id(1)).await.expect_err("fails");

    assert!(
        matches!(
            error,
            DefenderError::Transient {
                status: Some(500),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(requests_of(&world, RouteFamily::Machines), 5);
}

#[tokio::test]
async fn an_offboard_returns_the_pending_action_on_200_and_201() {
    let world = world().await;
    seed(&world, 2);
    let client = world.defender();

    let submitted = client
        .offboard(&id(1), "Leaver HR-4471")
        .await
        .expect("offboard");
    assert_eq!(
        submitted.http_status, 200,
        "the simulator answers 200 by default"
    );
    let action = submitted.action;
    assert_eq!(action.kind, Some(ActionType::Offboard));
    assert_eq!(action.status, Some(ActionStatus::Pending));
    assert_eq!(action.requestor_comment.as_deref(), Some("Leaver HR-4471"));

    world.sim.set_offboard_config(dev_sim::OffboardConfig {
        respond_201: true,
        ..Default::default()
    });
    let second = client
        .offboard(&id(2), "Leaver HR-4472")
        .await
        .expect("201 is success");
    assert_eq!(second.http_status, 201, "the status Defender answered");
    assert_eq!(second.action.status, Some(ActionStatus::Pending));

    let fetched = client
        .machine_action(&action.id)
        .await
        .expect("action by id");
    assert_eq!(fetched.id, action.id);
    let open = client.find_open_offboard(&id(1)).await.expect("lookup");
    assert_eq!(open.map(|a| a.id), Some(action.id));
}

#[tokio::test]
async fn a_second_offboard_maps_to_active_request_already_exists() {
    let world = world().await;
    seed(&world, 1);
    let client = world.defender();
    client
        .offboard(&id(1), "first")
        .await
        .expect("first offboard");

    let error = client
        .offboard(&id(1), "second")
        .await
        .expect_err("duplicate");

    assert!(
        matches!(&error, DefenderError::ActiveRequestAlreadyExists { message } if !message.is_empty()),
        "{error:?}"
    );
}

#[tokio::test]
async fn offboarding_a_linux_device_keeps_defenders_message_verbatim() {
    let world = world().await;
    let now = world.sim.now();
    let mut linux = Machine::new(machine_id(9), "build-agent-11", now);
    linux.os_platform = Some("Linux".into());
    world.sim.add_machines(TENANT, [linux]);

    let error = world
        .defender()
        .offboard(&id(9), "cleanup")
        .await
        .expect_err("refused");

    let DefenderError::BadRequest { code, message } = &error else {
        panic!("expected BadRequest, got {error:?}");
    };
    assert_eq!(code, "OsPlatformNotSupported");
    assert!(message.contains("Linux"), "{message}");
    assert_eq!(&error.to_string(), message);
}

#[tokio::test]
async fn an_unknown_machine_maps_to_not_found() {
    let world = world().await;
    seed(&world, 1);
    let client = world.defender();

    let error = client.offboard(&id(404), "x").await.expect_err("unknown");
    assert!(matches!(error, DefenderError::NotFound { .. }), "{error:?}");
    let error = client.machine(&id(404)).await.expect_err("unknown");
    assert!(matches!(error, DefenderError::NotFound { .. }), "{error:?}");
    let error = client
        .machine_action("00000000-0000-4000-8000-000000000000")
        .await
        .expect_err("unknown");
    assert!(matches!(error, DefenderError::NotFound { .. }), "{error:?}");
}

#[tokio::test]
async fn a_missing_offboard_role_maps_to_forbidden_naming_it() {
    let world = world().await;
    seed(&world, 1);
    let mut app = AppRegistration::with_secret(TENANT, CLIENT_ID, clients_support::SECRET);
    app.mde_roles = vec![roles::MACHINE_READ_ALL.into()];
    world.sim.add_app(app);

    let error = world
        .defender()
        .offboard(&id(1), "x")
        .await
        .expect_err("forbidden");

    assert!(
        matches!(&error, DefenderError::Forbidden { missing: Some(m), .. } if m.contains("Machine.Offboard")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_timed_out_offboard_is_sent_once_and_reported_as_uncertain() {
    let world = world_with(
        SimConfig::default(),
        HttpSettings {
            request_timeout: Duration::from_secs(1),
            ..HttpSettings::default()
        },
    )
    .await;
    seed(&world, 1);
    world.sim.inject_fault(
        RouteFamily::Offboard,
        Fault::Delay {
            ms: 2_500,
            count: 1,
        },
    );
    let client = world.defender();

    let error = client
        .offboard(&id(1), "Leaver")
        .await
        .expect_err("timed out");

    assert!(
        matches!(&error, DefenderError::Uncertain { machine_id, .. } if machine_id.as_str() == machine_id_str(1)),
        "{error:?}"
    );
    assert!(!error.is_transient());
    // Let the delayed request finish on the simulator, then count what arrived.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let posts = world
        .sim
        .requests()
        .iter()
        .filter(|r| r.family == Some(RouteFamily::Offboard))
        .count();
    // The simulator logs a request when it answers; one abandoned mid-delay may leave no
    // record, so the client's own count is the exact check and the log an upper bound.
    assert!(posts <= 1, "the POST was repeated: {posts}");
    assert_eq!(client.api_calls(), 1);
    // The lookup the caller must do next works.
    client.find_open_offboard(&id(1)).await.expect("lookup");
}

#[tokio::test]
async fn a_reset_offboard_connection_is_not_retried() {
    let world = world().await;
    seed(&world, 1);
    world
        .sim
        .inject_fault(RouteFamily::Offboard, Fault::Reset { count: 1 });
    let client = world.defender();

    let error = client.offboard(&id(1), "Leaver").await.expect_err("reset");

    assert!(
        matches!(error, DefenderError::Uncertain { .. }),
        "{error:?}"
    );
    assert_eq!(client.api_calls(), 1);
    assert!(world.sim.offboard_posts().is_empty());
}

#[tokio::test]
async fn a_throttled_offboard_is_retried_because_it_was_not_processed() {
    let world = world().await;
    seed(&world, 1);
    world.sim.inject_fault(
        RouteFamily::Offboard,
        Fault::Throttle {
            retry_after: 1,
            count: 1,
        },
    );
    let client = world.defender();

    client
        .offboard(&id(1), "Leaver")
        .await
        .expect("offboard after the wait");

    assert_eq!(client.api_calls(), 2);
    assert_eq!(world.sim.offboard_posts().len(), 1);
}

#[tokio::test]
async fn machine_actions_are_filtered_by_machine_and_type() {
    let world = world().await;
    seed(&world, 2);
    let client = world.defender();
    client.offboard(&id(1), "one").await.expect("offboard");
    client.offboard(&id(2), "two").await.expect("offboard");

    let actions = client
        .machine_actions(&id(1), Some(&ActionType::Offboard))
        .await
        .expect("actions");

    assert_eq!(actions.len(), 1);
    assert_eq!(
        actions[0].machine_id.as_deref(),
        Some(machine_id_str(1).as_str())
    );
    let request = world
        .sim
        .requests()
        .into_iter()
        .rfind(|r| r.family == Some(RouteFamily::MachineActions))
        .expect("request");
    assert!(
        request.path_and_query.contains("filter="),
        "{}",
        request.path_and_query
    );
}

fn machine_id_str(n: u64) -> String {
    machine_id(n)
}

#[tokio::test]
async fn a_machine_tag_is_added_and_removed_and_shows_in_the_next_read() {
    let world = world().await;
    seed(&world, 1);
    let client = world.defender();

    let tagged = client
        .tag_machine(&id(1), "DoNotOffboard", true)
        .await
        .expect("add");
    assert_eq!(tagged.machine_tags, vec!["DoNotOffboard".to_owned()]);
    // Adding it again changes nothing.
    let again = client
        .tag_machine(&id(1), "DoNotOffboard", true)
        .await
        .expect("add again");
    assert_eq!(again.machine_tags, vec!["DoNotOffboard".to_owned()]);
    // The next read of the machine (what a sync sees) carries the tag.
    let read = client.machine(&id(1)).await.expect("machine");
    assert_eq!(read.machine_tags, vec!["DoNotOffboard".to_owned()]);

    let untagged = client
        .tag_machine(&id(1), "DoNotOffboard", false)
        .await
        .expect("remove");
    assert!(untagged.machine_tags.is_empty());
    assert!(
        client
            .machine(&id(1))
            .await
            .expect("machine")
            .machine_tags
            .is_empty()
    );

    let unknown = client
        .tag_machine(&id(9), "DoNotOffboard", true)
        .await
        .expect_err("unknown machine");
    assert!(
        matches!(unknown, DefenderError::NotFound { .. }),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn a_tag_change_without_machine_read_write_all_is_forbidden_naming_it() {
    let world = world().await;
    seed(&world, 1);
    let mut app = AppRegistration::with_secret(TENANT, CLIENT_ID, clients_support::SECRET);
    app.mde_roles = vec![
        roles::MACHINE_READ_ALL.into(),
        roles::MACHINE_OFFBOARD.into(),
    ];
    world.sim.add_app(app);
    let error = world
        .defender()
        .tag_machine(&id(1), "DoNotOffboard", true)
        .await
        .expect_err("forbidden");
    assert!(
        matches!(&error, DefenderError::Forbidden { missing: Some(m), .. } if m.contains("Machine.ReadWrite.All")),
        "{error:?}"
    );
}
