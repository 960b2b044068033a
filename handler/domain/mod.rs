//! Validated types and pure logic; no I/O here.

pub mod ids;

pub use ids::{IdError, IncidentId, MachineId, RequestId, TenantId};
