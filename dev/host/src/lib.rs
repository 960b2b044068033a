//! Local Functions host.
