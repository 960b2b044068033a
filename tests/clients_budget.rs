//! The shared Defender rate budget on a real Azurite: two budget instances (as two app
//! instances would have) hammering one tenant through the Defender client never exceed the
//! limit at the simulator, in any rolling window.

mod clients_support;

use std::sync::Arc;
use std::time::Duration;

use clients_support::{TENANT, machine_id, tenant_id, world};
use defender_ops::clients::budget::{Budget, BudgetError, BudgetLimits, SystemClock, WindowLimit};
use defender_ops::clients::defender::{DefenderClient, DefenderSettings};
use defender_ops::clients::tables::{ConnectionString, TableOptions, TableService};
use defender_ops::domain::MachineId;
use dev_sim::Machine;

async fn tables() -> TableService {
    let connection = dev_host::azurite::Azurite::shared()
        .await
        .expect("Azurite runs");
    let prefix = format!("b{}", uuid::Uuid::new_v4().simple());
    TableService::from_connection_string(
        &ConnectionString::parse(&connection).expect("connection string"),
        TableOptions::with_prefix(&prefix[..12]),
    )
    .expect("table service")
}

/// A small, fast budget: 6 calls in any 2 s.
fn small_limits() -> BudgetLimits {
    BudgetLimits {
        minute: WindowLimit {
            window: Duration::from_secs(2),
            limit: 6,
            bucket: Duration::from_millis(250),
        },
        hour: WindowLimit {
            window: Duration::from_secs(3600),
            limit: 10_000,
            bucket: Duration::from_secs(300),
        },
        block: 3,
        lease: Duration::from_millis(250),
        max_wait: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn two_budget_instances_never_exceed_the_limit_at_the_simulator() {
    let world = world().await;
    let now = world.sim.now();
    world
        .sim
        .add_machines(TENANT, [Machine::new(machine_id(1), "pc-1", now)]);
    let tables = tables().await;
    let clock = Arc::new(SystemClock);
    let first = Arc::new(
        Budget::new(&tables, small_limits(), "instance-a", clock.clone())
            .await
            .expect("budget a"),
    );
    let second = Arc::new(
        Budget::new(&tables, small_limits(), "instance-b", clock)
            .await
            .expect("budget b"),
    );
    let client_with = |budget: &Arc<Budget>| {
        DefenderClient::new(
            world.http.clone(),
            DefenderSettings::new(world.sim.base_url()),
            Arc::clone(&world.credentials),
            clients_support::tenant_auth(),
            Some(Arc::clone(budget)),
        )
    };
    let clients = [
        client_with(&first),
        client_with(&first),
        client_with(&second),
        client_with(&second),
    ];
    let id = MachineId::parse(&machine_id(1)).expect("id");
    world.sim.clear_requests();

    let runs = clients.iter().map(|client| {
        let id = id.clone();
        async move {
            for _ in 0..6 {
                client.machine(&id).await.expect("call within budget");
            }
        }
    });
    futures::future::join_all(runs).await;

    let total: u64 = clients.iter().map(DefenderClient::api_calls).sum();
    assert_eq!(total, 24);
    let worst = world
        .sim
        .max_calls_in_any_window(TENANT, Duration::from_secs(2));
    assert!(worst <= 6, "{worst} calls within 2 s at the simulator");
    assert!(worst >= 3, "the budget should still allow bursts: {worst}");
}

#[tokio::test]
async fn a_used_up_budget_fails_fast_when_the_wait_exceeds_the_cap() {
    let tables = tables().await;
    let mut limits = small_limits();
    limits.minute.window = Duration::from_secs(60);
    limits.minute.bucket = Duration::from_secs(5);
    limits.max_wait = Duration::from_millis(200);
    let budget = Budget::new(&tables, limits, "instance-a", Arc::new(SystemClock))
        .await
        .expect("budget");
    let tenant = tenant_id();

    for _ in 0..6 {
        budget.acquire(&tenant).await.expect("within the limit");
    }
    let error = budget.acquire(&tenant).await.expect_err("used up");

    let BudgetError::Exhausted {
        retry_after,
        tenant_id,
    } = error
    else {
        panic!("expected Exhausted, got {error:?}");
    };
    assert_eq!(tenant_id.as_str(), TENANT);
    assert!(retry_after > Duration::from_secs(50), "{retry_after:?}");
}

#[tokio::test]
async fn single_calls_spaced_beyond_the_lease_each_use_one_call_of_the_budget() {
    // A trickle of lone calls (a tracker poll, one offboard) must not reserve whole blocks
    // that expire unused: with blocks of 3 and a limit of 6, fixed blocks would run out after
    // two lone calls.
    let tables = tables().await;
    let mut limits = small_limits();
    limits.minute.window = Duration::from_secs(60);
    limits.minute.bucket = Duration::from_secs(5);
    limits.lease = Duration::from_millis(50);
    limits.max_wait = Duration::from_millis(200);
    let budget = Budget::new(&tables, limits, "instance-a", Arc::new(SystemClock))
        .await
        .expect("budget");
    let tenant = tenant_id();

    for n in 0..6 {
        budget
            .acquire(&tenant)
            .await
            .unwrap_or_else(|e| panic!("lone call {n} within the limit: {e}"));
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(
        matches!(
            budget.acquire(&tenant).await,
            Err(BudgetError::Exhausted { .. })
        ),
        "the seventh call exceeds the limit of 6"
    );
}

#[tokio::test]
async fn a_burst_of_queued_callers_gets_the_whole_limit_and_no_more() {
    // A burst reserves up to `block` calls in one table write, and never more than the
    // limit: 6 concurrent callers with blocks of 3 get their calls without waiting.
    let tables = tables().await;
    let mut limits = small_limits();
    limits.minute.window = Duration::from_secs(60);
    limits.minute.bucket = Duration::from_secs(5);
    limits.lease = Duration::from_secs(5);
    limits.max_wait = Duration::from_millis(200);
    let budget = Arc::new(
        Budget::new(&tables, limits, "instance-a", Arc::new(SystemClock))
            .await
            .expect("budget"),
    );
    let tenant = tenant_id();
    let permits = futures::future::join_all((0..6).map(|_| {
        let budget = Arc::clone(&budget);
        let tenant = tenant.clone();
        async move { budget.acquire(&tenant).await }
    }))
    .await;
    assert!(permits.iter().all(Result::is_ok), "{permits:?}");
    assert!(
        budget.acquire(&tenant).await.is_err(),
        "all 6 calls of the minute are spent"
    );
}
