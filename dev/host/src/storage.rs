//! Storage account connection strings and SharedKey request signing, shared by the queue
//! client. Supports explicit endpoints (Azurite), `EndpointSuffix` accounts and
//! `UseDevelopmentStorage=true`.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

/// Azurite's account name (public, from Azurite's documentation).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key (public, from Azurite's documentation).
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A parsed storage connection string: the account, its key and the service endpoints.
#[derive(Clone)]
pub struct StorageAccount {
    /// Account name, e.g. `devstoreaccount1`.
    pub name: String,
    key: Vec<u8>,
    /// Queue service base URL, without a trailing slash.
    pub queue_endpoint: Url,
    /// Table service base URL, without a trailing slash.
    pub table_endpoint: Url,
}

impl std::fmt::Debug for StorageAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageAccount")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("queue_endpoint", &self.queue_endpoint.as_str())
            .field("table_endpoint", &self.table_endpoint.as_str())
            .finish()
    }
}

impl StorageAccount {
    /// Parses a connection string (`Key=Value;...`, keys case-insensitive).
    ///
    /// # Errors
    /// When the account name or key is missing, the key is not base64, or an endpoint is
    /// not a URL. The error never contains the key.
    pub fn parse(connection_string: &str) -> anyhow::Result<Self> {
        let mut fields = std::collections::HashMap::new();
        for part in connection_string.split(';') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((k, v)) = part.split_once('=') else {
                bail!("connection string part without '=' (not shown)");
            };
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
        if fields
            .get("usedevelopmentstorage")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            let proxy = fields
                .get("developmentstorageproxyuri")
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1".to_string());
            let proxy = proxy.trim_end_matches('/');
            return Ok(Self {
                name: DEV_ACCOUNT.to_string(),
                key: STANDARD
                    .decode(DEV_ACCOUNT_KEY)
                    .context("decoding the Azurite key")?,
                queue_endpoint: Url::parse(&format!("{proxy}:10001/{DEV_ACCOUNT}"))?,
                table_endpoint: Url::parse(&format!("{proxy}:10002/{DEV_ACCOUNT}"))?,
            });
        }
        let name = fields
            .get("accountname")
            .cloned()
            .context("connection string has no AccountName")?;
        let key = fields
            .get("accountkey")
            .context("connection string has no AccountKey (SAS and identity are not supported)")?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| anyhow::anyhow!("AccountKey is not valid base64"))?;
        let protocol = fields
            .get("defaultendpointsprotocol")
            .cloned()
            .unwrap_or_else(|| "https".to_string());
        let suffix = fields
            .get("endpointsuffix")
            .cloned()
            .unwrap_or_else(|| "core.windows.net".to_string());
        let endpoint = |key: &str, service: &str| -> anyhow::Result<Url> {
            let raw = fields
                .get(key)
                .cloned()
                .unwrap_or_else(|| format!("{protocol}://{name}.{service}.{suffix}"));
            Url::parse(raw.trim_end_matches('/')).with_context(|| format!("{key} is not a URL"))
        };
        Ok(Self {
            queue_endpoint: endpoint("queueendpoint", "queue")?,
            table_endpoint: endpoint("tableendpoint", "table")?,
            name,
            key,
        })
    }

    /// Computes the `Authorization: SharedKey` header value for a request.
    ///
    /// `headers` must contain every header that will be sent (names any case);
    /// `content_length` is the body length (0 signs as empty, per version 2015-02-21+).
    pub fn shared_key(
        &self,
        method: &str,
        url: &Url,
        headers: &[(String, String)],
        content_length: usize,
    ) -> String {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let length = if content_length == 0 {
            String::new()
        } else {
            content_length.to_string()
        };
        let mut ms: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        ms.sort();
        let canonical_headers: String = ms.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let mut resource = format!("/{}{}", self.name, url.path());
        let mut params: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
        params.sort();
        let mut merged: Vec<(String, Vec<String>)> = Vec::new();
        for (k, v) in params {
            match merged.last_mut() {
                Some((last, values)) if *last == k => values.push(v),
                _ => merged.push((k, vec![v])),
            }
        }
        for (k, values) in merged {
            resource.push_str(&format!("\n{k}:{}", values.join(",")));
        }
        let to_sign = format!(
            "{method}\n{}\n{}\n{length}\n{}\n{}\n\n{}\n{}\n{}\n{}\n{}\n{canonical_headers}{resource}",
            get("content-encoding"),
            get("content-language"),
            get("content-md5"),
            get("content-type"),
            get("if-modified-since"),
            get("if-match"),
            get("if-none-match"),
            get("if-unmodified-since"),
            get("range"),
        );
        let signature = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mut mac) => {
                mac.update(to_sign.as_bytes());
                STANDARD.encode(mac.finalize().into_bytes())
            }
            // HMAC accepts keys of any length; this arm is unreachable in practice.
            Err(_) => String::new(),
        };
        format!("SharedKey {}:{signature}", self.name)
    }
}

/// Builds the connection string of an Azurite instance listening on loopback ports.
pub fn azurite_connection_string(table_port: u16, queue_port: u16) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};\
         TableEndpoint=http://127.0.0.1:{table_port}/{DEV_ACCOUNT};\
         QueueEndpoint=http://127.0.0.1:{queue_port}/{DEV_ACCOUNT};"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_azurite_connection_string_yields_path_style_endpoints() {
        let account = StorageAccount::parse(&azurite_connection_string(4000, 4001)).unwrap();
        assert_eq!(account.name, "devstoreaccount1");
        assert_eq!(
            account.queue_endpoint.as_str(),
            "http://127.0.0.1:4001/devstoreaccount1"
        );
        assert_eq!(
            account.table_endpoint.as_str(),
            "http://127.0.0.1:4000/devstoreaccount1"
        );
    }

    #[test]
    fn use_development_storage_means_azurite_default_ports() {
        let account = StorageAccount::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            account.queue_endpoint.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
    }

    #[test]
    fn an_account_without_explicit_endpoints_uses_the_suffix() {
        let account = StorageAccount::parse(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(
            account.queue_endpoint.as_str(),
            "https://acct.queue.core.windows.net/"
        );
    }

    #[test]
    fn a_connection_string_without_key_is_refused_without_echoing_it() {
        let err = StorageAccount::parse("AccountName=acct;SharedAccessSignature=sv=secret")
            .unwrap_err()
            .to_string();
        assert!(err.contains("AccountKey"));
        assert!(!err.contains("secret"));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let account = StorageAccount::parse(&azurite_connection_string(1, 2)).unwrap();
        assert!(!format!("{account:?}").contains("Eby8"));
    }

    #[test]
    fn the_canonical_resource_includes_the_account_twice_for_path_style_urls() {
        // Same inputs, same signature; a different query parameter changes it.
        let account = StorageAccount::parse(&azurite_connection_string(1, 2)).unwrap();
        let url =
            Url::parse("http://127.0.0.1:2/devstoreaccount1/q/messages?numofmessages=1").unwrap();
        let headers = vec![("x-ms-date".to_string(), "x".to_string())];
        let a = account.shared_key("GET", &url, &headers, 0);
        let b = account.shared_key("GET", &url, &headers, 0);
        assert_eq!(a, b);
        assert!(a.starts_with("SharedKey devstoreaccount1:"));
        let other =
            Url::parse("http://127.0.0.1:2/devstoreaccount1/q/messages?numofmessages=2").unwrap();
        assert_ne!(a, account.shared_key("GET", &other, &headers, 0));
    }
}
