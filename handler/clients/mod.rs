//! Clients of the outside services; wire DTOs stay here and convert into domain types.

pub mod budget;
pub mod credentials;
pub mod defender;
pub mod graph;
pub mod http;
pub mod identity;
pub mod keyvault;
pub mod tables;
