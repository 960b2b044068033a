//! The test CA (created once, shared by processes through `ca.pem` + `ca.key.pem`) and the
//! loopback leaf certificate that the listener serves.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const CA_COMMON_NAME: &str = "defender-ops dev-sim test CA";
const KEY_FILE: &str = "ca.key.pem";

/// A loaded test CA: its certificate path and the key that signs leaf certificates.
pub struct TestCa {
    cert_path: PathBuf,
    key: KeyPair,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "defender-ops dev");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    Ok(params)
}

impl TestCa {
    /// Loads the CA at `cert_path` (with `ca.key.pem` beside it) or creates both files.
    ///
    /// Several processes may call this at once: the one that takes `ca.lock` writes the files
    /// (key first, then certificate, each by rename), the others wait and read what it wrote.
    /// A certificate file without the key beside it is never overwritten (it is someone
    /// else's bundle).
    ///
    /// # Errors
    /// I/O errors, unparsable files, or a foreign certificate file at `cert_path`.
    pub fn load_or_create(cert_path: &Path) -> anyhow::Result<Self> {
        let dir = cert_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."))
            .to_path_buf();
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let key_path = dir.join(KEY_FILE);
        let lock_path = dir.join("ca.lock");
        let deadline = SystemTime::now() + Duration::from_secs(30);
        loop {
            if let Some(ca) = Self::try_load(cert_path, &key_path)? {
                return Ok(ca);
            }
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock_path)
            {
                Ok(_lock) => {
                    let result = Self::create(cert_path, &key_path);
                    let _ = fs::remove_file(&lock_path);
                    return result;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Another process is writing; a lock older than 30 s is from a crash.
                    let stale = fs::metadata(&lock_path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(30));
                    if stale {
                        let _ = fs::remove_file(&lock_path);
                    } else if SystemTime::now() > deadline {
                        bail!("timed out waiting for {}", lock_path.display());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", lock_path.display()));
                }
            }
        }
    }

    fn try_load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Option<Self>> {
        let cert_exists = cert_path.exists();
        if !key_path.exists() {
            if cert_exists {
                bail!(
                    "{} exists but {} does not: refusing to overwrite a certificate file the \
                     simulator did not create; point SimConfig.ca_pem or SSL_CERT_FILE elsewhere (an \
                     SSL_CERT_FILE already set in the shell wins over .cargo/config.toml [env] \
                     unless that entry has `force = true`)",
                    cert_path.display(),
                    key_path.display()
                );
            }
            return Ok(None);
        }
        if !cert_exists {
            // The key is written first: the writer is between its two renames.
            return Ok(None);
        }
        let key_pem = fs::read_to_string(key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("parsing {}", key_path.display()))?;
        Ok(Some(Self {
            cert_path: cert_path.to_path_buf(),
            key,
        }))
    }

    fn create(cert_path: &Path, key_path: &Path) -> anyhow::Result<Self> {
        if let Some(ca) = Self::try_load(cert_path, key_path)? {
            return Ok(ca);
        }
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_atomically(key_path, key.serialize_pem().as_bytes())?;
        write_atomically(cert_path, cert.pem().as_bytes())?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key,
        })
    }

    /// Path of the CA certificate (PEM).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A rustls server configuration with a fresh leaf for `127.0.0.1`, `::1` and `localhost`.
    ///
    /// # Errors
    /// Certificate generation errors.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        // The issuer is rebuilt from the same name and key: the leaf's issuer name and
        // authority key identifier then match the CA certificate on disk.
        let issuer = Issuer::new(ca_params()?, &self.key);
        let leaf_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "dev-sim loopback");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
        let leaf = params.signed_by(&leaf_key, &issuer)?;
        let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", uuid::Uuid::new_v4().simple()));
    {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The CA path to use: the configured one, else `SSL_CERT_FILE`, else a per-process temp dir.
pub fn resolve_ca_path(configured: Option<PathBuf>) -> PathBuf {
    configured
        .or_else(|| std::env::var_os("SSL_CERT_FILE").map(PathBuf::from))
        .unwrap_or_else(|| {
            std::env::temp_dir()
                .join(format!("dev-sim-ca-{}", std::process::id()))
                .join("ca.pem")
        })
}
