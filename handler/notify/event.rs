//! The outbound webhook: a JSON event per note, signed like the inbound webhook
//! (`X-Signature: sha256=<hex HMAC-SHA256(key, "<unix ts>.<raw body>")>`,
//! `X-Signature-Timestamp: <unix ts>`), so receivers verify both directions the same way,
//! but with its own key (`NOTIFY_WEBHOOK_SIGNING_SECRET`), never one that can offboard.

use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use super::message::{Message, kind};
use crate::domain::notification::Note;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Signature";
/// Header carrying the signed timestamp (unix seconds).
pub const TIMESTAMP_HEADER: &str = "X-Signature-Timestamp";

/// The event body: the note's own fields under `data` (receivers may rely on them), plus
/// the rendered title, summary, tone, facts and link, so a receiver that only forwards text
/// needs no rendering of its own.
#[must_use]
pub fn render(note: &Note, m: &Message) -> Value {
    let data = serde_json::to_value(note).unwrap_or(Value::Null);
    let facts: serde_json::Map<String, Value> = m
        .facts
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "specVersion": "1",
        "source": "defender-ops",
        "id": note.id,
        "type": format!("defender-ops.{}", kind(&note.event)),
        "tenantId": note.tenant_id.as_str(),
        "time": note.at.format(&Rfc3339).unwrap_or_default(),
        "title": m.title,
        "summary": m.summary,
        "tone": m.tone.as_str(),
        "facts": facts,
        "devices": m.devices.iter().map(|d| json!({"name": d.label, "machineId": d.machine_id, "url": d.url})).collect::<Vec<_>>(),
        "url": m.link.as_ref().map(|l| l.url.clone()),
        "data": data,
    })
}

/// `sha256=<hex>` of HMAC-SHA256(key, "<timestamp>.<body>"): the inbound scheme
/// ([`crate::domain::signature`]), so one verifier serves both directions.
#[must_use]
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    crate::domain::signature::sign(key, timestamp, body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::notify::message::{self, tests::every_kind};

    #[test]
    fn the_signature_verifies_with_the_inbound_scheme() {
        let body = br#"{"id":"n-1"}"#;
        let sig = signature(b"key", 1_700_000_000, body);
        assert!(sig.starts_with("sha256=") && sig.len() == "sha256=".len() + 64);
        let ts = "1700000000";
        crate::domain::signature::verify(b"key", Some(&sig), Some(ts), body, 1_700_000_010)
            .unwrap();
        assert!(
            crate::domain::signature::verify(b"other", Some(&sig), Some(ts), body, 1_700_000_010)
                .is_err()
        );
    }

    #[test]
    fn the_event_carries_the_note_and_its_rendering() {
        let note = &every_kind()[1];
        let v = render(note, &message::render(note, None));
        assert_eq!(v["type"], "defender-ops.incidentNew");
        assert_eq!(v["id"], "n-1");
        assert_eq!(v["data"]["incidentId"], "48213");
        assert_eq!(v["tone"], "attention");
        assert_eq!(v["facts"]["Severity"], "high");
        assert!(v["url"].as_str().unwrap().starts_with("https://"));
    }
}
