//! Mail addresses: the one rule for what the app accepts as an address, in its settings and
//! before it writes one into a mail header.

/// An address that can go into a mail header and a URL path: `local@domain`, no spaces,
/// control characters or header punctuation.
#[must_use]
pub fn is_mail_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !address.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_mail_addresses_are_accepted() {
        assert!(is_mail_address("secops@contoso.com"));
        for bad in [
            "",
            "secops",
            "@contoso.com",
            "secops@",
            "a@b.com\r\nBcc: x@y.com",
            "A <a@b.com>",
            "a@b.com,c@d.com",
        ] {
            assert!(!is_mail_address(bad), "{bad:?}");
        }
    }
}
