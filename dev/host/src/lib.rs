//! A local stand-in for the Azure Functions host: reads `host.json` and
//! `functions/*/function.json`, supervises the custom handler and invokes it in payload
//! mode exactly as the real host does (see `contracts/functions-host/`).
//!
//! # Layout
//! - [`azurite`]: Azurite for tests (shared per process or private, stop/restart).
//! - [`storage`]: connection strings and SharedKey signing.
//! - [`queue`]: a small Storage Queue REST client.
//! - [`config`]: host.json and function.json, TimeSpans.
//! - [`schedule`]: NCRONTAB and TimeSpan timer schedules, `%SETTING%` resolution.
//! - [`routes`]: HTTP trigger route templates.
//! - [`payload`]: the `{"Data","Metadata"}` bodies sent to the handler.
//! - [`outputs`]: reading the handler's answer, `res`, queue output conversions.
//! - [`sim_settings`]: the handler's settings for a running simulator (tests, run-local, benches).
//! - [`worker`]: the handler process (readiness, logs, restarts).
//! - [`host`]: [`Host::start`] → [`RunningHost`]: front end, timers, queue listeners.
//! - [`rig`]: what run-local and the benches share: paths, simulator, host, tenant registration.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod azurite;
pub mod config;
pub mod host;
pub mod outputs;
pub mod payload;
pub mod queue;
pub mod rig;
pub mod routes;
pub mod schedule;
pub mod sim_settings;
pub mod storage;
pub mod worker;

pub use azurite::Azurite;
pub use host::{FunctionStats, Host, HostConfig, Invocation, RunningHost};
pub use queue::{QueueClient, QueueMessage};
pub use worker::{HandlerLog, LogSource, WorkerState};
