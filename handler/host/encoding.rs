//! Decoding of the values the host JSON-encodes a second time.
//!
//! The host serialises every string or scalar of `Data` and `Metadata` with Newtonsoft and
//! puts the resulting JSON *text* in a string: queue text `hello` arrives as `"\"hello\""`,
//! `DequeueCount` 1 as `"1"` (CONTRACT §3.2). Docs show single encoding; the source and its
//! tests show double. We accept both, so a host that one day stops double-encoding still works.

use serde_json::Value;

/// Decodes a double-encoded string value into its text.
///
/// `"\"hello\""` → `hello`. A string that is not a JSON string literal is taken as the text
/// itself (single encoding, as the docs describe).
#[must_use]
pub fn decode_string(wire: &str) -> String {
    match serde_json::from_str::<String>(wire) {
        Ok(inner) => inner,
        Err(_) => wire.to_owned(),
    }
}

/// Decodes a double-encoded scalar (`"1"`, `"\"True\""`, `"\"x\""`) into a JSON value.
///
/// Objects and arrays (nested POCOs such as `sys`) are returned unchanged.
#[must_use]
pub fn decode_scalar(wire: &Value) -> Value {
    match wire {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::String(inner)) => Value::String(inner),
            Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
            // JSON text that is an object or array stays text: it was a string property.
            Ok(_) | Err(_) => Value::String(s.clone()),
        },
        other => other.clone(),
    }
}

/// Encodes a text the way the host does (for tests and for `dev/host`): JSON-encodes it and
/// returns the JSON text, which then goes into a JSON string.
#[must_use]
pub fn encode_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn queue_text_from_the_fixture_decodes_to_the_original_message() {
        let wire = "\"{\\\"tenantId\\\":\\\"8f3c2a1b\\\",\\\"full\\\":true}\"";
        assert_eq!(
            decode_string(wire),
            "{\"tenantId\":\"8f3c2a1b\",\"full\":true}"
        );
    }

    #[test]
    fn single_encoded_text_is_taken_as_is() {
        assert_eq!(decode_string("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(decode_string("hello"), "hello");
    }

    #[test]
    fn metadata_scalars_decode_to_their_json_values() {
        assert_eq!(decode_scalar(&Value::String("1".into())), Value::from(1));
        assert_eq!(
            decode_scalar(&Value::String("\"True\"".into())),
            Value::String("True".into())
        );
        assert_eq!(
            decode_scalar(&Value::String("\"abc\"".into())),
            Value::String("abc".into())
        );
        assert_eq!(
            decode_scalar(&Value::String("2024-11-12T09:15:01+00:00".into())),
            Value::String("2024-11-12T09:15:01+00:00".into())
        );
    }

    proptest! {
        #[test]
        fn any_text_survives_double_encoding(text in any::<String>()) {
            let wire = encode_string(&text);
            prop_assert_eq!(decode_string(&wire), text.clone());
            // And through a whole JSON document, as the host sends it.
            let doc = serde_json::json!({ "queueItem": wire }).to_string();
            let parsed: Value = serde_json::from_str(&doc).expect("valid json");
            let field = parsed["queueItem"].as_str().expect("string");
            prop_assert_eq!(decode_string(field), text);
        }

        #[test]
        fn numbers_in_metadata_decode_to_numbers(n in any::<i64>()) {
            prop_assert_eq!(decode_scalar(&Value::String(n.to_string())), Value::from(n));
        }

        #[test]
        fn decoding_never_panics_on_arbitrary_input(s in any::<String>()) {
            let _ = decode_string(&s);
            let _ = decode_scalar(&Value::String(s));
        }
    }
}
