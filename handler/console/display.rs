//! How the console writes values: times in UTC to the minute, counts with separators, and
//! links into the Defender portal.

use time::OffsetDateTime;
use time::macros::format_description;

/// `2026-12-01 12:00 UTC`; empty for none.
pub fn time(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| {
        t.to_offset(time::UtcOffset::UTC)
            .format(format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
    })
    .unwrap_or_default()
}

/// `12,345`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The device's page in the Defender portal, in the right tenant.
pub fn defender_portal(machine_id: &str, tenant_id: &str) -> String {
    let mut url = String::from("https://security.microsoft.com/machines/v2/");
    url.extend(url::form_urlencoded::byte_serialize(machine_id.as_bytes()));
    url.push_str("?tid=");
    url.extend(url::form_urlencoded::byte_serialize(tenant_id.as_bytes()));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_times_read_easily() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(
            time(Some(time::macros::datetime!(2026-12-01 12:05:31 +01:00))),
            "2026-12-01 11:05 UTC"
        );
        assert_eq!(time(None), "");
        assert_eq!(
            defender_portal(&"a".repeat(40), "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c"),
            format!(
                "https://security.microsoft.com/machines/v2/{}?tid=8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c",
                "a".repeat(40)
            )
        );
    }
}
