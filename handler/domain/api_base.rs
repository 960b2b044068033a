//! Where a tenant's Defender token may be sent: the allow-list of Microsoft's Defender for
//! Endpoint API hosts that a tenant's `defenderApiBase` must name (docs/design.md, "Hardening").

/// Microsoft's Defender for Endpoint API hosts, global, regional and US Government.
///
/// Sources (Microsoft Learn, MicrosoftDocs/defender-docs):
/// - "Supported Microsoft Defender for Endpoint APIs" (defender-endpoint/api/exposed-apis-list):
///   `api.security.microsoft.com` and, "for better performance", `us.`, `eu.`, `uk.`, `au.`,
///   `swa.` and `ina.api.security.microsoft.com`;
/// - "Supported Microsoft Defender XDR APIs" (defender-xdr/api-supported): `api-us.`,
///   `api-eu.` and `api-uk.security.microsoft.com`;
/// - "Microsoft Defender for Endpoint for US Government customers" (defender-endpoint/gov.md,
///   section API): GCC `api-gcc.securitycenter.microsoft.us`, GCC High and DoD
///   `api-gov.securitycenter.microsoft.us`;
/// - the `securitycenter.microsoft.com` names the API had before (this project's default
///   `DEFENDER_API_BASE`, and their regional forms) and the `security.microsoft.us` forms of
///   the government hosts, which Microsoft still answers on.
pub const DEFENDER_API_HOSTS: &[&str] = &[
    "api.security.microsoft.com",
    "us.api.security.microsoft.com",
    "eu.api.security.microsoft.com",
    "uk.api.security.microsoft.com",
    "au.api.security.microsoft.com",
    "swa.api.security.microsoft.com",
    "ina.api.security.microsoft.com",
    "api-us.security.microsoft.com",
    "api-eu.security.microsoft.com",
    "api-uk.security.microsoft.com",
    "api.securitycenter.microsoft.com",
    "api-us.securitycenter.microsoft.com",
    "api-eu.securitycenter.microsoft.com",
    "api-uk.securitycenter.microsoft.com",
    "api-au.securitycenter.microsoft.com",
    "api-gcc.securitycenter.microsoft.us",
    "api-gov.securitycenter.microsoft.us",
    "api-gcc.security.microsoft.us",
    "api-gov.security.microsoft.us",
];

/// Why a `defenderApiBase` is refused (answered 400; the text says what is allowed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiBaseError {
    #[error("defenderApiBase must be an https:// URL")]
    NotHttps,
    #[error("defenderApiBase must not carry a user name, password, query or fragment")]
    Extra,
    #[error(
        "defenderApiBase host '{0}' is not a Microsoft Defender for Endpoint API host \
         (allowed: api.security.microsoft.com, its regional forms such as \
         eu.api.security.microsoft.com, api.securitycenter.microsoft.com, the US Government \
         hosts api-gcc/api-gov.securitycenter.microsoft.us, or the host of DEFENDER_API_BASE)"
    )]
    HostNotAllowed(String),
}

/// Checks a tenant's Defender API base: https, no credentials, and a host of
/// [`DEFENDER_API_HOSTS`] on the default port, or exactly the host and port of the app's own
/// `DEFENDER_API_BASE` (`configured`: a simulator in tests, or a proxy the operator set).
///
/// # Errors
/// [`ApiBaseError`] saying what is wrong.
pub fn check_defender_api_base(url: &url::Url, configured: &url::Url) -> Result<(), ApiBaseError> {
    if url.scheme() != "https" {
        return Err(ApiBaseError::NotHttps);
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(ApiBaseError::Extra);
    }
    let host = url.host_str().ok_or(ApiBaseError::NotHttps)?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let same_as_configured = configured
        .host_str()
        .is_some_and(|h| h.eq_ignore_ascii_case(&host))
        && url.port_or_known_default() == configured.port_or_known_default();
    let listed = url.port().is_none() && DEFENDER_API_HOSTS.contains(&host.as_str());
    if listed || same_as_configured {
        Ok(())
    } else {
        Err(ApiBaseError::HostNotAllowed(
            host.chars().take(100).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn check(url: &str) -> Result<(), ApiBaseError> {
        let configured = url::Url::parse("https://127.0.0.1:8443").unwrap();
        check_defender_api_base(&url::Url::parse(url).unwrap(), &configured)
    }

    #[test]
    fn microsofts_hosts_and_the_configured_one_are_allowed() {
        for ok in [
            "https://api.securitycenter.microsoft.com",
            "https://api.security.microsoft.com/",
            "https://EU.api.security.microsoft.com",
            "https://api-uk.security.microsoft.com",
            "https://api-gcc.securitycenter.microsoft.us",
            "https://api-gov.securitycenter.microsoft.us/",
            "https://api-gov.security.microsoft.us",
            "https://api.security.microsoft.com.",
            "https://127.0.0.1:8443/",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn other_hosts_ports_schemes_and_credentials_are_refused() {
        for (bad, why) in [
            ("https://attacker.example", "host"),
            (
                "https://api.security.microsoft.com.attacker.example",
                "host",
            ),
            (
                "https://attacker.example/api.security.microsoft.com",
                "host",
            ),
            ("https://api.security.microsoft.com:8443", "host"),
            ("https://127.0.0.1:9999", "host"),
            ("https://127.0.0.2:8443", "host"),
            ("http://api.security.microsoft.com", "https"),
            ("https://user:pw@api.security.microsoft.com", "extra"),
            ("https://api.security.microsoft.com/?x=1", "extra"),
        ] {
            let err = check(bad).unwrap_err();
            let kind = match err {
                ApiBaseError::HostNotAllowed(_) => "host",
                ApiBaseError::NotHttps => "https",
                ApiBaseError::Extra => "extra",
            };
            assert_eq!(kind, why, "{bad}");
        }
    }

    proptest! {
        /// No host outside the list (and not the configured one) gets through.
        #[test]
        fn any_unlisted_host_is_refused(host in "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,3}") {
            let url = format!("https://{host}/");
            if let Ok(parsed) = url::Url::parse(&url) {
                let h = parsed.host_str().unwrap_or_default().to_owned();
                let allowed = DEFENDER_API_HOSTS.contains(&h.as_str());
                prop_assert_eq!(check(&url).is_ok(), allowed);
            }
        }
    }
}
