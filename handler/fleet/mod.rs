//! What the operator console reads, as use cases that know nothing of HTTP: the fleet
//! overview per tenant ([`overview`]), the devices grid across tenants with its filters,
//! sorting and paging ([`grid`]), and the CSV export of a filtered grid ([`export`]).
//!
//! Table Storage has no server-side sort and no "contains": see [`grid`] for what is asked
//! of the service, what is done here, and the bounds that keep each page's work and memory
//! limited whatever the fleet's size.

pub mod detail;
pub mod export;
pub mod grid;
pub mod overview;

pub use grid::{DeviceFilter, GridPage, GridQuery, Sort};
pub use overview::TenantOverview;
