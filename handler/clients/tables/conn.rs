//! Storage connection strings (`UseDevelopmentStorage=true`, account name + key, endpoints).

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::TableError;

/// Azurite's well-known development account; its key is public (Azurite's documentation).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const DEV_TABLE_ENDPOINT: &str = "http://127.0.0.1:10002/devstoreaccount1";

/// A parsed storage connection string: the account, its key and the table endpoint.
#[derive(Debug, Clone)]
pub struct ConnectionString {
    /// `AccountName` (`devstoreaccount1` for development storage).
    pub account_name: String,
    /// `AccountKey`, base64 as given.
    pub account_key: SecretString,
    /// `TableEndpoint`, or the one derived from protocol, account and `EndpointSuffix`.
    pub table_endpoint: Url,
}

impl ConnectionString {
    /// Parses `Key=Value;...` pairs (key names case-insensitive, values may contain `=`).
    /// `UseDevelopmentStorage=true` means Azurite at `http://127.0.0.1:10002/devstoreaccount1`.
    ///
    /// # Errors
    /// [`TableError::InvalidConfig`] for a missing account name or key, a key that is not
    /// base64, a shared access signature (not supported) or a malformed endpoint. The message
    /// never contains the key.
    pub fn parse(text: &str) -> Result<Self, TableError> {
        let (mut protocol, mut name, mut key, mut endpoint, mut suffix) =
            (None, None, None, None, None);
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                TableError::InvalidConfig("connection string has a part without '='".into())
            })?;
            match k.trim().to_ascii_lowercase().as_str() {
                "usedevelopmentstorage" if v.trim().eq_ignore_ascii_case("true") => {
                    return Ok(Self {
                        account_name: DEV_ACCOUNT.to_owned(),
                        account_key: SecretString::from(DEV_KEY),
                        table_endpoint: Url::parse(DEV_TABLE_ENDPOINT)
                            .map_err(|e| TableError::InvalidConfig(e.to_string()))?,
                    });
                }
                "defaultendpointsprotocol" => protocol = Some(v.trim()),
                "accountname" => name = Some(v.trim()),
                "accountkey" => key = Some(v.trim()),
                "tableendpoint" => endpoint = Some(v.trim()),
                "endpointsuffix" => suffix = Some(v.trim()),
                "sharedaccesssignature" => {
                    return Err(TableError::InvalidConfig(
                        "shared access signatures are not supported; use an account key or a managed identity".into(),
                    ));
                }
                _ => {}
            }
        }
        let name = name.filter(|n| !n.is_empty()).ok_or_else(|| {
            TableError::InvalidConfig("connection string has no AccountName".into())
        })?;
        let key = key.filter(|k| !k.is_empty()).ok_or_else(|| {
            TableError::InvalidConfig("connection string has no AccountKey".into())
        })?;
        decode_key(key)?;
        let endpoint = match endpoint {
            Some(e) => e.to_owned(),
            None => format!(
                "{}://{name}.table.{}",
                protocol.unwrap_or("https"),
                suffix.unwrap_or("core.windows.net")
            ),
        };
        let table_endpoint = Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                TableError::InvalidConfig("the table endpoint is not an http(s) URL".into())
            })?;
        Ok(Self {
            account_name: name.to_owned(),
            account_key: SecretString::from(key),
            table_endpoint,
        })
    }

    /// The decoded account key.
    pub(crate) fn key_bytes(&self) -> Result<Vec<u8>, TableError> {
        decode_key(self.account_key.expose_secret())
    }
}

fn decode_key(key: &str) -> Result<Vec<u8>, TableError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| TableError::InvalidConfig("AccountKey is not valid base64".into()))
}

/// The endpoint without a trailing slash, e.g. `http://127.0.0.1:10002/devstoreaccount1`
/// (path style: the account is in the path) or `https://acct.table.core.windows.net`.
pub(crate) fn base_url(endpoint: &Url) -> String {
    let mut base = endpoint.clone();
    base.set_query(None);
    base.set_fragment(None);
    base.as_str().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "a2V5LWJ5dGVz";

    #[test]
    fn development_storage_means_azurite_on_the_default_port() {
        let cs = ConnectionString::parse("UseDevelopmentStorage=true").expect("parses");
        assert_eq!(cs.account_name, "devstoreaccount1");
        assert_eq!(
            base_url(&cs.table_endpoint),
            "http://127.0.0.1:10002/devstoreaccount1"
        );
        assert_eq!(cs.key_bytes().expect("base64").len(), 64);
    }

    #[test]
    fn account_key_strings_derive_the_host_style_endpoint() {
        let cs = ConnectionString::parse(&format!(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={KEY};EndpointSuffix=core.chinacloudapi.cn;"
        ))
        .expect("parses");
        assert_eq!(cs.account_name, "acct");
        assert_eq!(
            base_url(&cs.table_endpoint),
            "https://acct.table.core.chinacloudapi.cn"
        );
        assert_eq!(cs.key_bytes().expect("base64"), b"key-bytes");
        let cs = ConnectionString::parse(&format!("accountname=acct;accountkey={KEY}"))
            .expect("case-insensitive names and defaults");
        assert_eq!(
            base_url(&cs.table_endpoint),
            "https://acct.table.core.windows.net"
        );
    }

    #[test]
    fn an_explicit_table_endpoint_wins() {
        let cs = ConnectionString::parse(&format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={KEY};TableEndpoint=http://127.0.0.1:41234/devstoreaccount1/;"
        ))
        .expect("parses");
        assert_eq!(
            base_url(&cs.table_endpoint),
            "http://127.0.0.1:41234/devstoreaccount1"
        );
    }

    #[test]
    fn garbage_is_refused_without_echoing_the_key() {
        for bad in [
            "",
            "garbage",
            "AccountName=acct",
            "AccountKey=a2V5",
            "AccountName=acct;AccountKey=not base64!!",
            "AccountName=acct;AccountKey=a2V5;TableEndpoint=ftp://x",
            "AccountName=acct;SharedAccessSignature=sv=1",
            "UseDevelopmentStorage=false",
        ] {
            let err = ConnectionString::parse(bad).expect_err(bad);
            assert!(matches!(err, TableError::InvalidConfig(_)), "{bad}: {err}");
            assert!(!err.to_string().contains("base64!!"), "{err}");
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let cs =
            ConnectionString::parse(&format!("AccountName=acct;AccountKey={KEY}")).expect("parses");
        assert!(!format!("{cs:?}").contains(KEY));
    }
}
