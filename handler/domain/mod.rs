//! Validated types and pure logic (sync rules, duplicates, request states, approvals); no I/O here.

pub mod actor;
pub mod api_base;
pub mod approval;
pub mod caller;
pub mod channel;
pub mod device;
pub mod duplicates;
pub mod ids;
pub mod mail;
pub mod notification;
pub mod request;
pub mod roles;
pub mod signature;

pub use actor::{Actor, CallerId};
pub use channel::{Channel, ChannelSet};
pub use ids::{CompactMachineId, IdError, IncidentId, MachineId, RequestId, TenantId};
pub use roles::{ConsoleRole, RoleSet};
