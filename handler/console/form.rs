//! Posted forms (`application/x-www-form-urlencoded`) and their CSRF field.
//!
//! The router parses the body of every POST and checks [`CSRF_FIELD`] against the session's
//! token before any page sees it; pages only read fields.

use aws_lc_rs::constant_time::verify_slices_are_equal;

/// The hidden field every console form carries (see `csrf_field` in the templates).
pub const CSRF_FIELD: &str = "csrf";
/// The largest form accepted.
pub const FORM_LIMIT: usize = 64 * 1024;

/// The fields of a posted form, in order (a name may repeat, e.g. checkboxes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Parses a urlencoded body; `None` when it is larger than [`FORM_LIMIT`].
    pub fn parse(body: &str) -> Option<Self> {
        (body.len() <= FORM_LIMIT).then(|| Self {
            fields: url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect(),
        })
    }

    /// The first value of `name`, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name` (checkboxes, multi-selects).
    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.fields
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a checkbox named `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether the form's CSRF field equals the session's token (constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        let sent = self
            .fields
            .iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map_or("", |(_, v)| v.as_str());
        !token.is_empty() && verify_slices_are_equal(sent.as_bytes(), token.as_bytes()).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_decoded() {
        let f = Form::parse("displayName=A+%26+B&enabled=on&x=&t=1&t=2").expect("small");
        assert_eq!(f.get("displayName"), Some("A & B"));
        assert!(f.checked("enabled"));
        assert_eq!(f.get("x"), None);
        assert_eq!(f.all("t").collect::<Vec<_>>(), ["1", "2"]);
    }

    #[test]
    fn csrf_must_match_exactly() {
        let f = Form::parse("csrf=abc").expect("small");
        assert!(f.csrf_matches("abc"));
        assert!(!f.csrf_matches("abcd"));
        assert!(!f.csrf_matches(""));
        assert!(!Form::default().csrf_matches("abc"));
    }

    #[test]
    fn large_forms_are_refused() {
        assert!(Form::parse(&"a".repeat(FORM_LIMIT + 1)).is_none());
    }
}
