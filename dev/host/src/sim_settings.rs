//! The app settings that point the handler at a running `dev_sim::Sim`: one list for the
//! end-to-end tests, `run-local` and the benchmarks.

use dev_sim::Sim;

/// Entra, Defender, Graph and Key Vault at the simulator's base URL, its managed-identity
/// endpoint, the test CA, a table prefix and the four timer schedules.
#[must_use]
pub fn handler_settings(sim: &Sim, table_prefix: &str) -> Vec<(String, String)> {
    let base = sim.base_url().to_string();
    [
        ("TABLE_PREFIX", table_prefix),
        ("KEY_VAULT_URI", base.as_str()),
        // A loopback vault can't satisfy the challenge-domain check (NOTES.md).
        ("KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", "false"),
        ("AZURE_AUTHORITY_HOST", base.as_str()),
        ("DEFENDER_API_BASE", base.as_str()),
        ("GRAPH_API_BASE", base.as_str()),
        ("IDENTITY_ENDPOINT", sim.identity_endpoint().as_str()),
        ("IDENTITY_HEADER", sim.identity_header()),
        ("SSL_CERT_FILE", &sim.ca_pem_path().display().to_string()),
        ("DEVICE_SYNC_SCHEDULE", "0 0 * * * *"),
        ("OFFBOARD_FLAGGED_SCHEDULE", "0 */5 * * * *"),
        ("ACTION_TRACKER_SCHEDULE", "0 */5 * * * *"),
        ("INCIDENT_WATCH_SCHEDULE", "0 */5 * * * *"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Replaces or adds `name = value` in a settings list.
pub fn set(settings: &mut Vec<(String, String)>, name: &str, value: impl Into<String>) {
    settings.retain(|(k, _)| k != name);
    settings.push((name.to_owned(), value.into()));
}
