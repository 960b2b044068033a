//! Defender-ops handler library.
