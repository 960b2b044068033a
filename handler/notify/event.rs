//! The outbound webhook: a JSON event per note, signed like the inbound webhook
//! (`X-Signature: sha256=<hex HMAC-SHA256(key, "<unix ts>.<raw body>")>`,
//! `X-Signature-Timestamp: <unix ts>`), so receivers verify both directions the same way.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
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

/// `sha256=<hex>` of HMAC-SHA256(key, "<timestamp>.<body>").
#[must_use]
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error arm cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::notify::message::{self, tests::every_kind};

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // RFC 4231 test case 2 shape, with our "<ts>.<body>" message built by hand.
        let sig = signature(b"Jefe", 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{}");
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, format!("sha256={expected}"));
        assert_eq!(sig.len(), "sha256=".len() + 64);
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
