//! defender-ops: an Azure Functions custom handler for Microsoft Defender device operations.
//!
//! # Layout
//! - [`config`]: typed settings from the environment, all problems reported at once (DESIGN §5).
//! - [`telemetry`]: tracing to stdout, JSON in Azure, compact locally.
//! - [`app`]: state, the router the Functions host calls, the server loop.
//! - [`error`]: the error policy: client errors inside `res`, failed invocations for retries.
//! - [`host`]: the custom-handler wire protocol (envelopes, double decoding, answers).
//! - [`functions`]: one module per `functions/<Name>` folder, and their catalog: adapters
//!   from an invocation to a use case and back.
//! - [`domain`]: validated ids and pure logic (no I/O).
//! - [`offboard`]: offboarding use cases shared by the webhook, the flag timer, the worker,
//!   the tracker and the console (device resolution, policy, acceptance, state changes,
//!   approvals, cancel, the exclusion tag).
//! - [`sync`]: the device sync of one tenant (`SyncTenant`'s use case): streamed pages,
//!   changed rows only, gone, stale and duplicate marks.
//! - [`devices`]: device queries (filtered pages, one device) and the `Offboard` flag, for
//!   `Devices` and the console.
//! - [`store`]: typed rows of the product's tables (tenants, devices, requests, audit...).
//! - [`clients`]: Table Storage, Key Vault, tokens, Defender, Graph, notifiers.
//! - [`console`]: the operator console (sign-in, session, pages under `/api/console`).
//! - [`fleet`]: what the console reads: the overview per tenant, the devices grid, the CSV.
//! - [`notify`]: notes rendered per channel (card, mail, webhook event), sent once each.

pub mod app;
pub mod clients;
pub mod config;
pub mod console;
pub mod devices;
pub mod domain;
pub mod error;
pub mod fleet;
pub mod functions;
pub mod host;
pub mod notify;
pub mod offboard;
pub mod store;
pub mod sync;
pub mod telemetry;
