//! defender-ops: an Azure Functions custom handler for Microsoft Defender device operations.
//!
//! # Layout
//! - `config`: typed settings from the environment (DESIGN §5).
//! - `clients`: Table Storage, Key Vault, tokens, Defender, Graph, notifiers.

pub mod clients;
pub mod config;
