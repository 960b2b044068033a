//! Key and table-name rules, URL key predicates and percent-encoding.

use std::fmt::Write as _;

use super::{KeyKind, TableError};

const MAX_KEY_BYTES: usize = 1024;

/// Checks a PartitionKey or RowKey against the service's rules: no `/ \ # ?`, no control
/// characters, at most 1 KiB. An empty key is allowed, as the service allows it.
///
/// # Errors
/// [`TableError::InvalidKey`] with the rule broken.
pub fn validate_key(kind: KeyKind, key: &str) -> Result<(), TableError> {
    let reason = if key.len() > MAX_KEY_BYTES {
        "longer than 1 KiB"
    } else if key.contains(['/', '\\', '#', '?']) {
        "contains one of / \\ # ?"
    } else if key.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(TableError::InvalidKey { kind, reason })
}

/// Checks a full table name (prefix included): alphanumeric, 3-63 characters, starting with
/// a letter, and not the reserved `tables`.
///
/// # Errors
/// [`TableError::InvalidTableName`].
pub fn validate_table_name(name: &str) -> Result<(), TableError> {
    let ok = (3..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && !name.eq_ignore_ascii_case("tables");
    if ok {
        Ok(())
    } else {
        Err(TableError::InvalidTableName {
            name: name.to_owned(),
        })
    }
}

/// `Table(PartitionKey='pk',RowKey='rk')` with `'` doubled and the values percent-encoded,
/// after validating both keys.
pub(crate) fn entity_path(table: &str, pk: &str, rk: &str) -> Result<String, TableError> {
    validate_key(KeyKind::PartitionKey, pk)?;
    validate_key(KeyKind::RowKey, rk)?;
    let mut path = String::with_capacity(table.len() + pk.len() + rk.len() + 32);
    path.push_str(table);
    path.push_str("(PartitionKey='");
    push_key(&mut path, pk);
    path.push_str("',RowKey='");
    push_key(&mut path, rk);
    path.push_str("')");
    Ok(path)
}

fn push_key(out: &mut String, key: &str) {
    for part in key.split('\'').enumerate() {
        if part.0 > 0 {
            out.push_str("%27%27");
        }
        percent_encode_into(out, part.1);
    }
}

/// Appends `text` with every byte outside `A-Z a-z 0-9 - _ . ~` percent-encoded: safe in a
/// path segment and a query value alike (a space is `%20`, never `+`).
pub(crate) fn percent_encode_into(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_everything_else_encoded() {
        let p = entity_path("Devices", "o'brien", "a b,c)").expect("valid keys");
        assert_eq!(
            p,
            "Devices(PartitionKey='o%27%27brien',RowKey='a%20b%2Cc%29')"
        );
        assert_eq!(
            entity_path("T", "é", "").expect("valid"),
            "T(PartitionKey='%C3%A9',RowKey='')"
        );
    }

    #[test]
    fn forbidden_key_characters_are_refused() {
        for bad in [
            "a/b", "a\\b", "a#b", "a?b", "a\u{0}b", "a\nb", "a\u{7f}b", "a\u{85}b",
        ] {
            assert!(
                matches!(
                    validate_key(KeyKind::RowKey, bad),
                    Err(TableError::InvalidKey {
                        kind: KeyKind::RowKey,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(validate_key(KeyKind::PartitionKey, &"k".repeat(1025)).is_err());
        assert!(validate_key(KeyKind::PartitionKey, &"k".repeat(1024)).is_ok());
        assert!(validate_key(KeyKind::PartitionKey, "it's fine: (x), 'y' & z").is_ok());
    }

    #[test]
    fn table_names_follow_the_service_rules() {
        for good in ["abc", "Devices", "t1234567890", &"a".repeat(63)] {
            assert!(validate_table_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "1abc",
            "a-bc",
            "a_bc",
            "tables",
            "Tables",
            &"a".repeat(64),
            "dévices",
        ] {
            assert!(validate_table_name(bad).is_err(), "{bad}");
        }
    }
}
