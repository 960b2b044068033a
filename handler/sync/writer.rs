//! The device rows a sync writes: upsert-merges batched per partition (100 operations), a
//! few batches in flight, a second write to a pending row folded into the first.

use std::collections::HashMap;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::clients::tables::{BatchOp, Entity, MAX_BATCH_OPERATIONS, TableClient, TableError};

/// Batches written at once; Azurite and the Table service both serialise per partition, so
/// a few in flight hide latency without queueing behind each other.
pub const BATCHES_IN_FLIGHT: usize = 4;

type BatchFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), TableError>> + Send + 'a>>;

/// Writes batches of one partition with a few in flight.
pub(super) struct Writer<'a> {
    table: &'a TableClient,
    pending: Vec<BatchOp>,
    /// RowKey → index in `pending`: a batch may name an entity only once, so a second write
    /// to the same row (content, then its DuplicateOf) is folded into the first.
    pending_rows: HashMap<String, usize>,
    in_flight: FuturesUnordered<BatchFuture<'a>>,
    writes: u64,
}

impl<'a> Writer<'a> {
    pub(super) fn new(table: &'a TableClient) -> Self {
        Self {
            table,
            pending: Vec::with_capacity(MAX_BATCH_OPERATIONS),
            pending_rows: HashMap::with_capacity(MAX_BATCH_OPERATIONS),
            in_flight: FuturesUnordered::new(),
            writes: 0,
        }
    }

    pub(super) async fn push(&mut self, entity: Entity) -> Result<(), TableError> {
        if let Some(&i) = self.pending_rows.get(&entity.row_key)
            && let Some(BatchOp::UpsertMerge(existing)) = self.pending.get_mut(i)
        {
            existing.props.extend(entity.props);
            return Ok(());
        }
        self.pending_rows
            .insert(entity.row_key.clone(), self.pending.len());
        self.pending.push(BatchOp::UpsertMerge(entity));
        if self.pending.len() >= MAX_BATCH_OPERATIONS {
            self.flush_pending().await?;
        }
        Ok(())
    }

    /// Whether a write to `row_key` is waiting in the next batch (not sent yet).
    pub(super) fn is_pending(&self, row_key: &str) -> bool {
        self.pending_rows.contains_key(row_key)
    }

    async fn flush_pending(&mut self) -> Result<(), TableError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        while self.in_flight.len() >= BATCHES_IN_FLIGHT {
            if let Some(r) = self.in_flight.next().await {
                r?;
            }
        }
        let ops = std::mem::replace(&mut self.pending, Vec::with_capacity(MAX_BATCH_OPERATIONS));
        self.pending_rows.clear();
        self.writes += ops.len() as u64;
        let table = self.table;
        self.in_flight.push(Box::pin(async move {
            if ops.len() == 1 {
                // One operation costs the same as a batch and is simpler on the wire.
                if let Some(BatchOp::UpsertMerge(e)) = ops.first() {
                    return table.upsert_merge(e).await.map(drop);
                }
            }
            table.batch(&ops).await.map(drop)
        }));
        Ok(())
    }

    /// Waits for every batch in flight: later writes to the same rows must not race earlier
    /// ones (batches in flight may land in any order). Rows still pending stay pending: a
    /// later write to one of them is folded into it, and the batch stays full.
    pub(super) async fn settle(&mut self) -> Result<(), TableError> {
        while let Some(r) = self.in_flight.next().await {
            r?;
        }
        Ok(())
    }

    pub(super) async fn finish(mut self) -> Result<u64, TableError> {
        self.flush_pending().await?;
        self.settle().await?;
        Ok(self.writes)
    }
}
