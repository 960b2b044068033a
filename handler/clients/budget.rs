//! The per-tenant Defender for Endpoint rate budget (100 calls/minute and 1,500/hour per
//! tenant app), shared by every instance of the app through one Table Storage row, so
//! scale-out can't multiply the limit.
//!
//! # How it works
//! Row `RateBudget(PartitionKey = tenantId, RowKey = "mde")` holds, per limit, a ring of
//! call counts in fixed buckets (`MinuteBucket` = index of the newest bucket, `MinuteCounts`
//! = the counts, oldest first; `HourBucket`, `HourCounts` likewise), plus `LeaseHolder` and
//! `LeaseExpiry` (the last instance that reserved calls, and until when: diagnostics).
//! An instance reserves a *block* of calls with an ETag-checked write (412 → re-read,
//! re-plan, retry), then hands them out locally without a table round trip. A block is as
//! large as the demand waiting in this instance (at most `block`, default 10): a lone call
//! reserves one, a burst of queued offboards reserves ten. A block is usable for `lease`
//! (default 1 s); calls not used by then expire, still counted, which is why blocks follow
//! demand rather than a fixed size: a fixed block of ten would let a trickle of single calls
//! use up the hour's 1,500 after 150 real calls.
//!
//! # Why it is conservative
//! MDE's windows are rolling (the simulator counts any 60 s). A reservation made at `t` is
//! spent during `[t, t + lease)`, so the calls that land in any rolling window `W` were
//! reserved within `W + lease`; the ring therefore spans `ceil((W + lease) / bucket) + 1`
//! buckets and a block is granted only if the whole ring stays within the limit. The price:
//! sustained throughput is about `W / span` of the limit (about 97 of 100 per minute with the
//! defaults: 1 s buckets and leases, a 62-bucket ring), plus whatever expires unused. Clock
//! skew between instances weakens the bound by the skew; 429s are still honoured by the
//! clients.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;

use super::tables::{Entity, IfMatch, TableClient, TableError, TableService};
use crate::domain::TenantId;

/// Logical table name (`TABLE_PREFIX` is added by the tables module).
pub const TABLE: &str = "RateBudget";
/// RowKey of the Defender for Endpoint budget.
pub const ROW_KEY: &str = "mde";

/// One rolling-window limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowLimit {
    /// Window length.
    pub window: Duration,
    /// Calls allowed in any window.
    pub limit: u32,
    /// Bucket width of the stored ring (a divisor of `window` is best).
    pub bucket: Duration,
}

/// The limits and the reservation tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    /// The per-minute limit (MDE: 100).
    pub minute: WindowLimit,
    /// The per-hour limit (MDE: 1,500).
    pub hour: WindowLimit,
    /// Most calls reserved per table write (fewer when fewer callers wait).
    pub block: u32,
    /// How long a reserved block may be spent.
    pub lease: Duration,
    /// Longest wait inside [`Budget::acquire`]; beyond it the call fails with
    /// [`BudgetError::Exhausted`] so the work can be rescheduled.
    pub max_wait: Duration,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        Self {
            minute: WindowLimit {
                window: Duration::from_secs(60),
                limit: 100,
                // Short buckets and leases keep the ring close to the real window: 1 s each
                // spends about 97 of the 100 calls a minute allows (2 s: 94, 5 s: 86).
                bucket: Duration::from_secs(1),
            },
            hour: WindowLimit {
                window: Duration::from_secs(3600),
                limit: 1500,
                bucket: Duration::from_secs(300),
            },
            block: 10,
            // Blocks are sized to callers already waiting, who spend them at once.
            lease: Duration::from_secs(1),
            max_wait: Duration::from_secs(90),
        }
    }
}

/// Why no permit was given.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The budget allows no call before `retry_after` (longer than `max_wait`).
    #[error("the Defender API budget of tenant {tenant_id} is used up; retry in {}s", retry_after.as_secs())]
    Exhausted {
        /// The tenant.
        tenant_id: TenantId,
        /// When a call will be allowed again.
        retry_after: Duration,
    },
    /// The budget row could not be read or written.
    #[error("the rate budget table failed")]
    Table(#[from] TableError),
    /// Too many concurrent writers kept changing the row.
    #[error("the rate budget row of tenant {tenant_id} kept changing under contention")]
    Contention {
        /// The tenant.
        tenant_id: TenantId,
    },
}

/// A time source, injectable for tests.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Leave to make one API call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// How long [`Budget::acquire`] waited for it.
    pub waited: Duration,
}

/// One tenant's budget in this process: the block being spent, and how many callers are
/// queued for it (the size of the next reservation).
#[derive(Debug, Default)]
struct Slot {
    block: tokio::sync::Mutex<LocalBlock>,
    waiting: AtomicU32,
}

#[derive(Debug, Default)]
struct LocalBlock {
    remaining: u32,
    /// Unix milliseconds after which the block is void.
    expires_ms: i64,
}

/// The shared budget. One per process; cheap to share (`Arc`).
#[derive(Debug)]
pub struct Budget {
    table: TableClient,
    limits: BudgetLimits,
    holder: String,
    clock: Arc<dyn Clock>,
    local: Mutex<HashMap<TenantId, Arc<Slot>>>,
}

impl Budget {
    /// A budget over table [`TABLE`] (created if missing). `holder` names this instance in
    /// the row's `LeaseHolder` (e.g. the host instance id).
    ///
    /// # Errors
    /// [`BudgetError::Table`] when the table can't be created.
    pub async fn new(
        tables: &TableService,
        limits: BudgetLimits,
        holder: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BudgetError> {
        let table = tables.table(TABLE)?;
        table.create_if_not_exists().await?;
        Ok(Self {
            table,
            limits,
            holder: holder.into(),
            clock,
            local: Mutex::new(HashMap::new()),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &BudgetLimits {
        &self.limits
    }

    /// Waits (asynchronously) until the tenant's budget allows one more call and takes it.
    ///
    /// # Errors
    /// [`BudgetError::Exhausted`] when the wait would exceed `max_wait`;
    /// [`BudgetError::Table`] / [`BudgetError::Contention`] when the row can't be updated.
    pub async fn acquire(&self, tenant: &TenantId) -> Result<Permit, BudgetError> {
        let slot = {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(local.entry(tenant.clone()).or_default())
        };
        // One refill per tenant at a time in this process; other tenants proceed.
        slot.waiting.fetch_add(1, Ordering::SeqCst);
        let mut block = slot.block.lock().await;
        // Callers still queued behind this one: they will want calls right after it.
        let behind = slot
            .waiting
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        let now = unix_ms(self.clock.now());
        if block.remaining > 0 && now < block.expires_ms {
            block.remaining -= 1;
            return Ok(Permit {
                waited: Duration::ZERO,
            });
        }
        let started = tokio::time::Instant::now();
        let want = behind.saturating_add(1).min(self.limits.block);
        let (granted, expires_ms) = self.reserve(tenant, want).await?;
        block.remaining = granted.saturating_sub(1);
        block.expires_ms = expires_ms;
        Ok(Permit {
            waited: started.elapsed(),
        })
    }

    async fn reserve(&self, tenant: &TenantId, want: u32) -> Result<(u32, i64), BudgetError> {
        const MAX_CONFLICTS: u32 = 50;
        let mut conflicts = 0;
        let mut waited = Duration::ZERO;
        loop {
            let row = self.table.get(tenant.as_str(), ROW_KEY).await?;
            let now = unix_ms(self.clock.now());
            let (mut state, etag) = match row {
                Some(entity) => (BudgetState::from_entity(&entity, &self.limits), entity.etag),
                None => (BudgetState::new(&self.limits), None),
            };
            match state.plan(now, &self.limits, want) {
                Plan::Grant(n) => {
                    let expires_ms = now + millis_i64(self.limits.lease);
                    let entity = state.to_entity(tenant.as_str(), &self.holder, expires_ms);
                    let written = match etag {
                        Some(etag) => self
                            .table
                            .update_replace(&entity, IfMatch::Etag(etag))
                            .await
                            .map(drop),
                        None => self.table.insert(&entity).await.map(drop),
                    };
                    match written {
                        Ok(()) => {
                            tracing::debug!(tenant.id = %tenant, calls = n, "reserved Defender API calls");
                            return Ok((n, expires_ms));
                        }
                        Err(
                            TableError::PreconditionFailed { .. } | TableError::Conflict { .. },
                        ) => {
                            conflicts += 1;
                            if conflicts >= MAX_CONFLICTS {
                                return Err(BudgetError::Contention {
                                    tenant_id: tenant.clone(),
                                });
                            }
                            let jitter =
                                rand::random_range(0..=20u64 * u64::from(conflicts.min(10)));
                            tokio::time::sleep(Duration::from_millis(jitter)).await;
                        }
                        Err(other) => return Err(other.into()),
                    }
                }
                Plan::WaitUntil(until_ms) => {
                    let wait = Duration::from_millis(u64::try_from(until_ms - now).unwrap_or(0));
                    if waited + wait > self.limits.max_wait {
                        return Err(BudgetError::Exhausted {
                            tenant_id: tenant.clone(),
                            retry_after: wait,
                        });
                    }
                    tracing::debug!(
                        tenant.id = %tenant,
                        wait_ms = wait.as_millis() as u64,
                        "Defender API budget used up; waiting"
                    );
                    // A little jitter so instances waiting on one window don't collide.
                    let jitter = Duration::from_millis(rand::random_range(0..=50));
                    tokio::time::sleep(wait + jitter).await;
                    waited += wait + jitter;
                }
            }
        }
    }
}

fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What the budget allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// This many calls were added to the state.
    Grant(u32),
    /// Nothing is allowed before this time (unix milliseconds).
    WaitUntil(i64),
}

/// Counts per bucket of one limit: `counts[len-1]` is bucket `newest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ring {
    newest: i64,
    counts: Vec<u32>,
}

impl Ring {
    fn span(limit: &WindowLimit, lease: Duration) -> usize {
        let bucket = limit.bucket.as_millis().max(1);
        let covered = (limit.window + lease).as_millis().div_ceil(bucket);
        usize::try_from(covered).unwrap_or(usize::MAX / 2) + 1
    }

    fn empty(limit: &WindowLimit, lease: Duration) -> Self {
        Self {
            newest: 0,
            counts: vec![0; Self::span(limit, lease)],
        }
    }

    fn bucket_ms(limit: &WindowLimit) -> i64 {
        millis_i64(limit.bucket).max(1)
    }

    /// Moves the ring to `now`; a clock behind the ring's newest bucket counts as that bucket.
    fn advance(&mut self, now_ms: i64, limit: &WindowLimit) {
        let current = now_ms.div_euclid(Self::bucket_ms(limit));
        if current <= self.newest {
            return;
        }
        let shift = current - self.newest;
        let len = self.counts.len();
        if shift >= i64::try_from(len).unwrap_or(i64::MAX) {
            self.counts.iter_mut().for_each(|c| *c = 0);
        } else {
            let shift = usize::try_from(shift).unwrap_or(len);
            self.counts.rotate_left(shift);
            self.counts[len - shift..].iter_mut().for_each(|c| *c = 0);
        }
        self.newest = current;
    }

    fn total(&self) -> u32 {
        self.counts
            .iter()
            .fold(0u32, |acc, c| acc.saturating_add(*c))
    }

    /// When the total first drops below `limit` as old buckets leave the ring.
    fn free_at(&self, limit: &WindowLimit) -> i64 {
        let total = self.total();
        let len = i64::try_from(self.counts.len()).unwrap_or(i64::MAX);
        let oldest = self.newest - len + 1;
        let mut left = total;
        for (i, count) in self.counts.iter().enumerate() {
            left = left.saturating_sub(*count);
            if left < limit.limit {
                let leaving = oldest + i64::try_from(i).unwrap_or(0);
                return (leaving + len) * Self::bucket_ms(limit);
            }
        }
        (self.newest + len) * Self::bucket_ms(limit)
    }

    fn render(&self) -> String {
        self.counts
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads a stored ring; a ring stored with another length (changed settings) is folded
    /// into one bucket, which keeps its calls counted.
    fn parse(
        newest: Option<i64>,
        text: Option<&str>,
        limit: &WindowLimit,
        lease: Duration,
    ) -> Self {
        let mut ring = Self::empty(limit, lease);
        let (Some(newest), Some(text)) = (newest, text) else {
            return ring;
        };
        let counts: Vec<u32> = text
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse().unwrap_or(u32::MAX / 4))
            .collect();
        ring.newest = newest;
        if counts.len() == ring.counts.len() {
            ring.counts = counts;
        } else if let Some(last) = ring.counts.last_mut() {
            *last = counts.iter().fold(0u32, |acc, c| acc.saturating_add(*c));
        }
        ring
    }
}

/// The stored state of one tenant's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BudgetState {
    minute: Ring,
    hour: Ring,
}

impl BudgetState {
    pub(crate) fn new(limits: &BudgetLimits) -> Self {
        Self {
            minute: Ring::empty(&limits.minute, limits.lease),
            hour: Ring::empty(&limits.hour, limits.lease),
        }
    }

    /// Grants up to `want` calls at `now_ms` (adding them to the state), or says when to retry.
    pub(crate) fn plan(&mut self, now_ms: i64, limits: &BudgetLimits, want: u32) -> Plan {
        self.minute.advance(now_ms, &limits.minute);
        self.hour.advance(now_ms, &limits.hour);
        let room_minute = limits.minute.limit.saturating_sub(self.minute.total());
        let room_hour = limits.hour.limit.saturating_sub(self.hour.total());
        let grant = want.max(1).min(room_minute).min(room_hour);
        if grant == 0 {
            let mut until = now_ms;
            if room_minute == 0 {
                until = until.max(self.minute.free_at(&limits.minute));
            }
            if room_hour == 0 {
                until = until.max(self.hour.free_at(&limits.hour));
            }
            return Plan::WaitUntil(until.max(now_ms + 1));
        }
        for ring in [&mut self.minute, &mut self.hour] {
            if let Some(last) = ring.counts.last_mut() {
                *last = last.saturating_add(grant);
            }
        }
        Plan::Grant(grant)
    }

    fn from_entity(entity: &Entity, limits: &BudgetLimits) -> Self {
        Self {
            minute: Ring::parse(
                entity.get_i64("MinuteBucket"),
                entity.get_str("MinuteCounts"),
                &limits.minute,
                limits.lease,
            ),
            hour: Ring::parse(
                entity.get_i64("HourBucket"),
                entity.get_str("HourCounts"),
                &limits.hour,
                limits.lease,
            ),
        }
    }

    fn to_entity(&self, tenant: &str, holder: &str, lease_expiry_ms: i64) -> Entity {
        let expiry =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(lease_expiry_ms) * 1_000_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Entity::new(tenant, ROW_KEY)
            .with("MinuteBucket", self.minute.newest)
            .with("MinuteCounts", self.minute.render())
            .with("HourBucket", self.hour.newest)
            .with("HourCounts", self.hour.render())
            .with("LeaseHolder", holder)
            .with("LeaseExpiry", expiry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, per_hour: u32) -> BudgetLimits {
        BudgetLimits {
            minute: WindowLimit {
                window: Duration::from_secs(60),
                limit: per_minute,
                bucket: Duration::from_secs(5),
            },
            hour: WindowLimit {
                window: Duration::from_secs(3600),
                limit: per_hour,
                bucket: Duration::from_secs(300),
            },
            block: 10,
            lease: Duration::from_secs(5),
            max_wait: Duration::from_secs(90),
        }
    }

    const T0: i64 = 1_800_000_000_000; // a bucket boundary of both rings

    #[test]
    fn the_ring_spans_the_window_plus_the_lease_plus_one_bucket() {
        let l = limits(100, 1500);
        assert_eq!(Ring::span(&l.minute, l.lease), 14);
        assert_eq!(Ring::span(&l.hour, l.lease), 14);
    }

    #[test]
    fn blocks_are_granted_until_the_minute_limit_then_a_wait_is_planned() {
        let l = limits(25, 1500);
        let mut state = BudgetState::new(&l);
        assert_eq!(state.plan(T0, &l, 10), Plan::Grant(10));
        assert_eq!(state.plan(T0 + 1_000, &l, 10), Plan::Grant(10));
        assert_eq!(state.plan(T0 + 2_000, &l, 10), Plan::Grant(5));
        // Everything was counted in bucket T0; it leaves the 14-bucket ring 70 s later.
        assert_eq!(state.plan(T0 + 3_000, &l, 10), Plan::WaitUntil(T0 + 70_000));
        assert_eq!(
            state.plan(T0 + 69_999, &l, 10),
            Plan::WaitUntil(T0 + 70_000)
        );
        assert_eq!(state.plan(T0 + 70_000, &l, 10), Plan::Grant(10));
    }

    #[test]
    fn the_wait_ends_when_enough_old_calls_leave_the_ring() {
        let l = limits(20, 1500);
        let mut state = BudgetState::new(&l);
        assert_eq!(state.plan(T0, &l, 10), Plan::Grant(10));
        assert_eq!(state.plan(T0 + 20_000, &l, 10), Plan::Grant(10));
        // The first block leaves at T0 + 70 s, freeing room for another.
        assert_eq!(
            state.plan(T0 + 30_000, &l, 10),
            Plan::WaitUntil(T0 + 70_000)
        );
        assert_eq!(state.plan(T0 + 70_000, &l, 10), Plan::Grant(10));
    }

    #[test]
    fn the_hour_limit_applies_across_minutes() {
        let l = limits(100, 30);
        let mut state = BudgetState::new(&l);
        for minute in 0..3 {
            assert_eq!(state.plan(T0 + minute * 60_000, &l, 10), Plan::Grant(10));
        }
        let plan = state.plan(T0 + 4 * 60_000, &l, 10);
        // The first hour bucket (T0..T0+5 min) holds 30 calls... all three blocks were in it,
        // so nothing is free until it leaves the 14 × 5 min ring.
        assert_eq!(plan, Plan::WaitUntil(T0 + 14 * 300_000));
    }

    #[test]
    fn no_rolling_window_ever_sees_more_calls_than_the_limit() {
        // Simulate a greedy caller spending each block within the lease, then check every
        // rolling 60 s window of actual call times.
        let l = limits(20, 10_000);
        let mut state = BudgetState::new(&l);
        let mut calls: Vec<i64> = Vec::new();
        let mut now = T0 + 2_345;
        while now < T0 + 600_000 {
            match state.plan(now, &l, 10) {
                Plan::Grant(n) => {
                    // Spend the block as late as the lease allows: the worst case.
                    let spend_at = now + millis_i64(l.lease) - 1;
                    calls.extend(std::iter::repeat_n(spend_at, n as usize));
                    now += 1;
                }
                Plan::WaitUntil(t) => now = t,
            }
        }
        calls.sort_unstable();
        let mut start = 0;
        for end in 0..calls.len() {
            while calls[end] - calls[start] >= 60_000 {
                start += 1;
            }
            assert!(end - start < 20, "{} calls within 60 s", end - start + 1);
        }
        assert!(calls.len() >= 80, "throughput collapsed: {}", calls.len());
    }

    #[test]
    fn a_clock_behind_the_stored_ring_counts_in_the_newest_bucket() {
        let l = limits(20, 1500);
        let mut state = BudgetState::new(&l);
        assert_eq!(state.plan(T0 + 60_000, &l, 10), Plan::Grant(10));
        assert_eq!(state.plan(T0, &l, 10), Plan::Grant(10));
        assert_eq!(state.minute.total(), 20);
        assert!(matches!(state.plan(T0, &l, 10), Plan::WaitUntil(_)));
    }

    #[test]
    fn stored_rings_round_trip_and_foreign_lengths_keep_their_calls() {
        let l = limits(20, 1500);
        let mut state = BudgetState::new(&l);
        assert_eq!(state.plan(T0, &l, 7), Plan::Grant(7));
        let entity = state.to_entity("t", "instance-1", T0);
        assert_eq!(BudgetState::from_entity(&entity, &l), state);
        let folded = Ring::parse(Some(5), Some("3,4"), &l.minute, l.lease);
        assert_eq!(folded.total(), 7);
        assert_eq!(folded.counts.len(), 14);
    }
}
