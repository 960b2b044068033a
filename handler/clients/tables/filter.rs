//! OData `$filter` expressions built from typed values, so user input can never change the
//! expression's structure: strings are quoted with `'` doubled, other types use Edm literals.
//!
//! Property names are the caller's code, not user input: they must be plain identifiers.

use std::fmt::Write as _;

use super::EdmValue;
use super::value::format_datetime;

/// The OData literal of a value: `'it''s'`, `42`, `42L`, `true`, `datetime'…'`, `guid'…'`,
/// `X'…'`.
#[must_use]
pub fn literal(value: &EdmValue) -> String {
    match value {
        EdmValue::String(s) => format!("'{}'", s.replace('\'', "''")),
        EdmValue::Bool(b) => b.to_string(),
        EdmValue::Int32(i) => i.to_string(),
        EdmValue::Int64(i) => format!("{i}L"),
        EdmValue::Double(d) => format!("{d:?}"),
        EdmValue::DateTime(dt) => format!("datetime'{}'", format_datetime(*dt)),
        EdmValue::Guid(g) => format!("guid'{}'", g.hyphenated()),
        EdmValue::Binary(b) => {
            let mut s = String::with_capacity(b.len() * 2 + 3);
            s.push_str("X'");
            for byte in b {
                let _ = write!(s, "{byte:02x}");
            }
            s.push('\'');
            s
        }
    }
}

fn compare(prop: &str, op: &str, value: impl Into<EdmValue>) -> String {
    debug_assert!(
        !prop.is_empty() && prop.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "filter property names are identifiers from code: {prop:?}"
    );
    format!("{prop} {op} {}", literal(&value.into()))
}

/// `prop eq value`.
#[must_use]
pub fn eq(prop: &str, value: impl Into<EdmValue>) -> String {
    compare(prop, "eq", value)
}

/// `prop ne value`.
#[must_use]
pub fn ne(prop: &str, value: impl Into<EdmValue>) -> String {
    compare(prop, "ne", value)
}

/// `prop gt value`.
#[must_use]
pub fn gt(prop: &str, value: impl Into<EdmValue>) -> String {
    compare(prop, "gt", value)
}

/// `prop ge value`.
#[must_use]
pub fn ge(prop: &str, value: impl Into<EdmValue>) -> String {
    compare(prop, "ge", value)
}

/// `prop lt value`.
#[must_use]
pub fn lt(prop: &str, value: impl Into<EdmValue>) -> String {
    compare(prop, "lt", value)
}

/// `prop le value`.
#[must_use]
pub fn le(prop: &str, value: impl Into<EdmValue>) -> String {
    compare(prop, "le", value)
}

/// `(a) and (b)`.
#[must_use]
pub fn and(a: &str, b: &str) -> String {
    format!("({a}) and ({b})")
}

/// `(a) or (b)`.
#[must_use]
pub fn or(a: &str, b: &str) -> String {
    format!("({a}) or ({b})")
}

/// `not (a)`.
#[must_use]
pub fn not(a: &str) -> String {
    format!("not ({a})")
}

/// Every row whose string `prop` starts with `prefix` (a range on the sort order:
/// `prop ge 'x' and prop lt 'x\u{10ffff}'`-like, computed exactly).
#[must_use]
pub fn starts_with(prop: &str, prefix: &str) -> String {
    match next_prefix(prefix) {
        Some(upper) => and(&ge(prop, prefix), &lt(prop, upper)),
        None => ge(prop, prefix),
    }
}

/// The smallest string greater than every string starting with `prefix`.
fn next_prefix(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(c) = next {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn injection_attempts_stay_inside_the_string_literal() {
        assert_eq!(
            eq("ComputerDnsName", "x' or PartitionKey ne '"),
            "ComputerDnsName eq 'x'' or PartitionKey ne '''"
        );
    }

    #[test]
    fn literals_keep_their_edm_types() {
        assert_eq!(eq("Count", 5_i64), "Count eq 5L");
        assert_eq!(eq("N", 5), "N eq 5");
        assert_eq!(ne("Gone", true), "Gone ne true");
        assert_eq!(gt("Score", 1.0), "Score gt 1.0");
        assert_eq!(
            lt("LastSeen", datetime!(2024-05-01 12:00 UTC)),
            "LastSeen lt datetime'2024-05-01T12:00:00.0000000Z'"
        );
        assert_eq!(
            eq("Id", uuid::Uuid::nil()),
            "Id eq guid'00000000-0000-0000-0000-000000000000'"
        );
        assert_eq!(eq("Bin", vec![1_u8, 0xab]), "Bin eq X'01ab'");
        assert_eq!(
            and(&eq("A", "a"), &not(&eq("B", "b"))),
            "(A eq 'a') and (not (B eq 'b'))"
        );
    }

    #[test]
    fn starts_with_is_a_closed_range() {
        assert_eq!(
            starts_with("Name", "pc-"),
            "(Name ge 'pc-') and (Name lt 'pc.')"
        );
        assert_eq!(starts_with("Name", ""), "Name ge ''");
    }
}
