//! The Azure Functions custom-handler wire protocol (payload mode), and nothing about Defender.
//!
//! The host POSTs `{"Data", "Metadata"}` to `/{FunctionName}` and expects a 200 with a JSON
//! object `{"Outputs", "Logs", "ReturnValue"}`; any other answer fails the invocation. See
//! `contracts/functions-host/CONTRACT.md`.

pub mod encoding;
pub mod invocation;
pub mod response;

pub use invocation::{EnvelopeError, HttpRequestData, Invocation, QueueMessage, TimerInfo};
pub use response::{HttpResponse, InvocationResponse};
