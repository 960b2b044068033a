//! Queue message bodies the functions exchange (JSON text, one message per string); each
//! lives with its use case.

pub use crate::offboard::OffboardJob;
pub use crate::sync::{SyncJob, run_id};
