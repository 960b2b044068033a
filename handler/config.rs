//! Typed settings read from the environment (DESIGN §5).
//!
//! Every setting is parsed up front and every problem is reported at once, naming the
//! setting, so a misconfigured app fails at start-up instead of at 3 a.m. on the first timer.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;
use url::Url;

/// How the product reaches Azure Table Storage.
#[derive(Debug, Clone)]
pub enum StorageSettings {
    /// `AzureWebJobsStorage` connection string (account key or `UseDevelopmentStorage=true`).
    ConnectionString(SecretString),
    /// `AzureWebJobsStorage__tableServiceUri` with a managed identity
    /// (`__clientId` selects a user-assigned one).
    Identity {
        table_service_uri: Url,
        client_id: Option<String>,
    },
}

/// Lowest incident severity that produces a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MinSeverity {
    Low,
    Medium,
    High,
}

/// The name of a Key Vault secret (1-127 of `[0-9a-zA-Z-]`), never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretName(String);

impl SecretName {
    /// Parses a Key Vault secret name.
    ///
    /// # Errors
    /// When the name is empty, longer than 127 characters or has characters Key Vault refuses.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok = !raw.is_empty()
            && raw.len() <= 127
            && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(
                "must be 1-127 characters of 0-9, a-z, A-Z and '-' (a Key Vault secret name)"
                    .into(),
            )
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The app registration in the home tenant: Graph `sendMail` and the console's sign-in.
#[derive(Debug, Clone)]
pub struct HomeApp {
    pub tenant_id: String,
    pub client_id: String,
    /// The client secret in Key Vault; `None`: the app's managed identity is the app's
    /// federated credential (the `federated` mode of the tenants).
    pub secret_name: Option<SecretName>,
}

/// The operator console's settings (DESIGN §9.5); the console also needs the home app.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    /// `CONSOLE_SESSION_SECRET`: the Key Vault secret (at least 32 bytes) that keys the
    /// session cookie. Without it the console answers 503 "not configured".
    pub session_secret: Option<SecretName>,
    /// `CONSOLE_BASE_URL`: the console's public origin (`https://ops.example.com`), for the
    /// OIDC redirect URI; unset, the origin of the request as the Functions host reports it.
    pub base_url: Option<Url>,
}

/// Notification targets configured for the whole app (tenants may narrow them).
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    pub teams_secret: Option<SecretName>,
    pub webhook_secret: Option<SecretName>,
    /// The key outbound webhook events are signed with (`NOTIFY_WEBHOOK_SIGNING_SECRET`):
    /// never a key that authorises offboarding (design §9.1).
    pub webhook_signing_secret: Option<SecretName>,
    pub email_from: Option<String>,
    pub email_to: Vec<String>,
}

/// Every setting of DESIGN §5, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub storage: StorageSettings,
    pub key_vault_uri: Option<Url>,
    pub key_vault_verify_challenge_resource: bool,
    pub azure_client_id: Option<String>,
    pub authority_host: Url,
    pub defender_api_base: Url,
    pub graph_api_base: Url,
    pub table_prefix: String,
    pub schedules: Schedules,
    pub stale_after_days: u32,
    pub offboard_exclude_tag: String,
    pub offboard_max_per_run: u32,
    /// `APPROVAL_TTL_HOURS`: a request unanswered this long after it began waiting for an
    /// approver becomes `Expired` (design §9.4).
    pub approval_ttl_hours: u32,
    pub incident_min_severity: MinSeverity,
    pub webhook_hmac_secret: Option<SecretName>,
    /// `WEBHOOK_ALLOW_UNSIGNED=true`: unsigned calls of `POST /api/offboard` are accepted
    /// (as the key holder); otherwise they are refused with 401 (design §9.1).
    pub webhook_allow_unsigned: bool,
    pub notify: NotifySettings,
    pub home_app: Option<HomeApp>,
    pub console: ConsoleSettings,
    /// True when running inside Azure (App Service sets `WEBSITE_SITE_NAME`): logs become JSON.
    pub in_azure: bool,
}

/// Timer schedules; the host reads them, the handler only checks they are well formed.
#[derive(Debug, Clone)]
pub struct Schedules {
    pub device_sync: String,
    pub offboard_flagged: String,
    pub action_tracker: String,
    pub incident_watch: String,
}

/// One problem with one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    pub setting: &'static str,
    pub problem: String,
}

/// All the problems found in the environment; its `Display` lists each setting by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<SettingProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} invalid setting(s):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {}: {}", p.setting, p.problem)?;
        }
        Ok(())
    }
}

/// Every setting name the handler reads. The infra test checks each one is wired in Bicep
/// and in `local.settings.sample.json`.
pub const SETTING_NAMES: &[&str] = &[
    "FUNCTIONS_CUSTOMHANDLER_PORT",
    "AzureWebJobsStorage",
    "AzureWebJobsStorage__tableServiceUri",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "KEY_VAULT_URI",
    "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE",
    "AZURE_CLIENT_ID",
    "AZURE_AUTHORITY_HOST",
    "DEFENDER_API_BASE",
    "GRAPH_API_BASE",
    "TABLE_PREFIX",
    "DEVICE_SYNC_SCHEDULE",
    "OFFBOARD_FLAGGED_SCHEDULE",
    "ACTION_TRACKER_SCHEDULE",
    "INCIDENT_WATCH_SCHEDULE",
    "STALE_AFTER_DAYS",
    "OFFBOARD_EXCLUDE_TAG",
    "OFFBOARD_MAX_PER_RUN",
    "APPROVAL_TTL_HOURS",
    "INCIDENT_MIN_SEVERITY",
    "WEBHOOK_HMAC_SECRET",
    "WEBHOOK_ALLOW_UNSIGNED",
    "NOTIFY_WEBHOOK_SIGNING_SECRET",
    "NOTIFY_TEAMS_SECRET",
    "NOTIFY_EMAIL_FROM",
    "NOTIFY_EMAIL_TO",
    "NOTIFY_WEBHOOK_SECRET",
    "HOME_TENANT_ID",
    "HOME_CLIENT_ID",
    "HOME_SECRET_NAME",
    "CONSOLE_SESSION_SECRET",
    "CONSOLE_BASE_URL",
];

/// Reads settings through a lookup function, collecting problems instead of stopping at the
/// first one.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<SettingProblem>,
}

impl Reader<'_> {
    /// The raw value; empty strings count as unset (sample settings files carry `""`).
    fn raw(&mut self, name: &'static str) -> Option<String> {
        let value = (self.lookup)(name)?;
        let value = value.trim().to_owned();
        if value.is_empty() {
            return None;
        }
        // An App Service Key Vault reference that the platform could not resolve arrives
        // verbatim; running with it would mean using the reference text as a value.
        if value.starts_with("@Microsoft.KeyVault(") {
            self.problem(
                name,
                "holds an unresolved Key Vault reference (@Microsoft.KeyVault(...)); check the app's identity has access to the vault and the reference is correct",
            );
            return None;
        }
        Some(value)
    }

    fn problem(&mut self, setting: &'static str, problem: impl Into<String>) {
        self.problems.push(SettingProblem {
            setting,
            problem: problem.into(),
        });
    }

    fn parsed<T>(
        &mut self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self.raw(name) {
            None => default,
            Some(v) => match parse(&v) {
                Ok(t) => t,
                Err(e) => {
                    self.problem(name, e);
                    default
                }
            },
        }
    }

    fn optional<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let v = self.raw(name)?;
        match parse(&v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(name, e);
                None
            }
        }
    }

    fn url(&mut self, name: &'static str, default: &str) -> Url {
        let fallback = Url::parse(default).unwrap_or_else(|_| unreachable_default());
        self.parsed(name, fallback, parse_https_url)
    }
}

fn unreachable_default() -> Url {
    // Defaults are literals checked by a unit test; this arm can't be reached with them.
    Url::parse("https://invalid.invalid").unwrap_or_else(|_| std::process::abort())
}

fn parse_https_url(v: &str) -> Result<Url, String> {
    let url = Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err("must be an https:// URL (the Azure SDK refuses plain http)".into());
    }
    if url.host_str().is_none() {
        return Err("has no host".into());
    }
    Ok(url)
}

/// An origin (`https://host[:port]`, no path): where browsers reach the console.
fn parse_base_url(v: &str) -> Result<Url, String> {
    let url = Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err("must be an https:// origin (http only for 127.0.0.1 or localhost)".into());
    }
    if url.host_str().is_none() || !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err("must be an origin only, like https://ops.example.com (no path)".into());
    }
    Ok(url)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

fn parse_guid(v: &str) -> Result<String, String> {
    uuid::Uuid::try_parse(v)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| "must be a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)".into())
}

fn parse_positive(v: &str, max: u32) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {max}")),
    }
}

fn parse_email(v: &str) -> Result<String, String> {
    let v = v.trim();
    let domain = v.rsplit_once('@').map_or("", |(_, d)| d);
    // The rule the mail sender applies too, so a setting it would refuse fails at start-up.
    if !crate::domain::mail::is_mail_address(v) || !domain.contains('.') {
        return Err(format!("'{v}' is not an email address"));
    }
    Ok(v.to_owned())
}

fn parse_table_prefix(v: &str) -> Result<String, String> {
    // Table names are 3-63 alphanumerics starting with a letter; the longest logical name is
    // 16 characters ("OffboardRequests"), so the prefix may take the rest.
    let ok = v.len() <= 40
        && v.chars().all(|c| c.is_ascii_alphanumeric())
        && v.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(v.to_owned())
    } else {
        Err("must be up to 40 letters and digits, starting with a letter".into())
    }
}

/// Checks an NCRONTAB schedule (six fields, seconds first) or a `hh:mm:ss` interval.
fn parse_schedule(v: &str) -> Result<String, String> {
    let fields: Vec<&str> = v.split_whitespace().collect();
    let is_cron = fields.len() == 6
        && fields.iter().all(|f| {
            f.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '/' | ',' | '-' | '?'))
        });
    let is_interval = {
        let parts: Vec<&str> = v.split(':').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    if is_cron || is_interval {
        Ok(v.to_owned())
    } else {
        Err("must be a six-field NCRONTAB expression (\"{second} {minute} {hour} {day} {month} {day-of-week}\") or hh:mm:ss".into())
    }
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every malformed setting.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment in production, a map in tests).
    ///
    /// # Errors
    /// A [`ConfigError`] listing every malformed setting.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };

        let port = r.parsed("FUNCTIONS_CUSTOMHANDLER_PORT", 8080, |v| {
            v.parse::<u16>()
                .map_err(|_| "must be a TCP port number (0-65535)".to_string())
        });

        let storage = read_storage(&mut r);

        let key_vault_uri = r.optional("KEY_VAULT_URI", parse_https_url);
        let key_vault_verify_challenge_resource =
            r.parsed("KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", true, parse_bool);
        let azure_client_id = r.optional("AZURE_CLIENT_ID", parse_guid);
        let authority_host = r.url("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.com");
        let defender_api_base = r.url(
            "DEFENDER_API_BASE",
            "https://api.securitycenter.microsoft.com",
        );
        let graph_api_base = r.url("GRAPH_API_BASE", "https://graph.microsoft.com");
        let table_prefix = r.parsed("TABLE_PREFIX", String::new(), parse_table_prefix);

        let schedules = Schedules {
            device_sync: r.parsed("DEVICE_SYNC_SCHEDULE", "0 0 * * * *".into(), parse_schedule),
            offboard_flagged: r.parsed(
                "OFFBOARD_FLAGGED_SCHEDULE",
                "0 */5 * * * *".into(),
                parse_schedule,
            ),
            action_tracker: r.parsed(
                "ACTION_TRACKER_SCHEDULE",
                "0 */5 * * * *".into(),
                parse_schedule,
            ),
            incident_watch: r.parsed(
                "INCIDENT_WATCH_SCHEDULE",
                "0 */5 * * * *".into(),
                parse_schedule,
            ),
        };

        let stale_after_days = r.parsed("STALE_AFTER_DAYS", 7, |v| parse_positive(v, 3650));
        let offboard_exclude_tag =
            r.parsed("OFFBOARD_EXCLUDE_TAG", "DoNotOffboard".to_owned(), |v| {
                if v.len() <= 200 {
                    Ok(v.to_owned())
                } else {
                    Err("must be at most 200 characters".into())
                }
            });
        let offboard_max_per_run =
            r.parsed("OFFBOARD_MAX_PER_RUN", 50, |v| parse_positive(v, 10_000));
        let approval_ttl_hours =
            r.parsed("APPROVAL_TTL_HOURS", 72, |v| parse_positive(v, 24 * 365));
        let incident_min_severity = r.parsed("INCIDENT_MIN_SEVERITY", MinSeverity::Medium, |v| {
            match v.to_ascii_lowercase().as_str() {
                "low" => Ok(MinSeverity::Low),
                "medium" => Ok(MinSeverity::Medium),
                "high" => Ok(MinSeverity::High),
                _ => Err("must be low, medium or high".into()),
            }
        });

        let webhook_hmac_secret = r.optional("WEBHOOK_HMAC_SECRET", SecretName::parse);
        let webhook_allow_unsigned = r.parsed("WEBHOOK_ALLOW_UNSIGNED", false, parse_bool);
        let notify = NotifySettings {
            teams_secret: r.optional("NOTIFY_TEAMS_SECRET", SecretName::parse),
            webhook_secret: r.optional("NOTIFY_WEBHOOK_SECRET", SecretName::parse),
            webhook_signing_secret: r.optional("NOTIFY_WEBHOOK_SIGNING_SECRET", SecretName::parse),
            email_from: r.optional("NOTIFY_EMAIL_FROM", parse_email),
            email_to: r
                .optional("NOTIFY_EMAIL_TO", |v| {
                    v.split([',', ';'])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(parse_email)
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap_or_default(),
        };

        let home_tenant = r.optional("HOME_TENANT_ID", parse_guid);
        let home_client = r.optional("HOME_CLIENT_ID", parse_guid);
        let home_secret = r.optional("HOME_SECRET_NAME", SecretName::parse);
        let home_app = match (home_tenant, home_client, home_secret) {
            (Some(tenant_id), Some(client_id), secret_name) => Some(HomeApp {
                tenant_id,
                client_id,
                secret_name,
            }),
            (None, None, None) => None,
            _ => {
                r.problem(
                    "HOME_TENANT_ID",
                    "HOME_TENANT_ID and HOME_CLIENT_ID go together (with HOME_SECRET_NAME, or without it for the managed identity as federated credential): set both or none",
                );
                None
            }
        };
        let console = ConsoleSettings {
            session_secret: r.optional("CONSOLE_SESSION_SECRET", SecretName::parse),
            base_url: r.optional("CONSOLE_BASE_URL", parse_base_url),
        };
        if console.session_secret.is_some() && home_app.is_none() {
            r.problem(
                "CONSOLE_SESSION_SECRET",
                "the console signs people in with the home app: set HOME_TENANT_ID and HOME_CLIENT_ID too",
            );
        }

        if webhook_hmac_secret.is_some() && webhook_hmac_secret == notify.webhook_signing_secret {
            r.problem(
                "NOTIFY_WEBHOOK_SIGNING_SECRET",
                "names the same secret as WEBHOOK_HMAC_SECRET: receivers of outbound events would hold a key that authorises offboarding; give outbound events their own key",
            );
        }
        let uses_vault = webhook_hmac_secret.is_some()
            || notify.webhook_signing_secret.is_some()
            || notify.teams_secret.is_some()
            || notify.webhook_secret.is_some()
            || home_app.as_ref().is_some_and(|h| h.secret_name.is_some())
            || console.session_secret.is_some();
        if uses_vault
            && key_vault_uri.is_none()
            && !r.problems.iter().any(|p| p.setting == "KEY_VAULT_URI")
        {
            r.problem("KEY_VAULT_URI", "is required because secret names are configured (WEBHOOK_HMAC_SECRET, NOTIFY_*_SECRET, HOME_SECRET_NAME or CONSOLE_SESSION_SECRET)");
        }
        match (&notify.email_from, notify.email_to.is_empty()) {
            (Some(_), true) => r.problem(
                "NOTIFY_EMAIL_TO",
                "is required when NOTIFY_EMAIL_FROM is set",
            ),
            (None, false) => r.problem(
                "NOTIFY_EMAIL_FROM",
                "is required when NOTIFY_EMAIL_TO is set",
            ),
            _ => {}
        }
        if notify.email_from.is_some() && home_app.is_none() {
            r.problem("HOME_TENANT_ID", "email notifications need the home app (HOME_TENANT_ID, HOME_CLIENT_ID, HOME_SECRET_NAME) to call Graph sendMail");
        }

        let in_azure = (lookup)("WEBSITE_SITE_NAME").is_some_and(|v| !v.is_empty());

        match storage {
            Some(storage) if r.problems.is_empty() => Ok(Config {
                port,
                storage,
                key_vault_uri,
                key_vault_verify_challenge_resource,
                azure_client_id,
                authority_host,
                defender_api_base,
                graph_api_base,
                table_prefix,
                schedules,
                stale_after_days,
                offboard_exclude_tag,
                offboard_max_per_run,
                approval_ttl_hours,
                incident_min_severity,
                webhook_hmac_secret,
                webhook_allow_unsigned,
                notify,
                home_app,
                console,
                in_azure,
            }),
            _ => Err(ConfigError {
                problems: r.problems,
            }),
        }
    }

    /// What start-up warns about: settings that widen who may offboard (design §9.1).
    #[must_use]
    pub fn trust_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(name) = &self.webhook_hmac_secret {
            w.push(format!(
                "WEBHOOK_HMAC_SECRET is set ('{name}'): the built-in caller 'default' signs with it and reaches EVERY tenant; register each calling system as a caller (PUT /api/callers/{{callerId}}) with its own key and tenants, then unset WEBHOOK_HMAC_SECRET"
            ));
        }
        if self.webhook_allow_unsigned {
            w.push("WEBHOOK_ALLOW_UNSIGNED=true: POST /api/offboard accepts unsigned calls from any function-key holder, for every tenant".into());
        }
        w
    }

    /// The settings as a map of name → printable value, for the start-up log line.
    /// Secret-bearing values (the storage connection string) are never included.
    pub fn summary(&self) -> BTreeMap<&'static str, String> {
        let mut m = BTreeMap::new();
        m.insert(
            "storage",
            match &self.storage {
                StorageSettings::ConnectionString(_) => "connection string".to_owned(),
                StorageSettings::Identity {
                    table_service_uri, ..
                } => {
                    format!("managed identity → {table_service_uri}")
                }
            },
        );
        m.insert(
            "key_vault",
            self.key_vault_uri
                .as_ref()
                .map_or("not configured".into(), Url::to_string),
        );
        m.insert("defender_api_base", self.defender_api_base.to_string());
        m.insert("graph_api_base", self.graph_api_base.to_string());
        m.insert("authority_host", self.authority_host.to_string());
        m.insert("table_prefix", self.table_prefix.clone());
        m
    }
}

fn read_storage(r: &mut Reader<'_>) -> Option<StorageSettings> {
    let conn = r.raw("AzureWebJobsStorage");
    let uri = r.optional("AzureWebJobsStorage__tableServiceUri", |v| {
        let url = Url::parse(v).map_err(|e| format!("not a URL ({e})"))?;
        if url.scheme() != "https" {
            return Err("must be an https:// URL (bearer tokens are only sent over https)".into());
        }
        Ok(url)
    });
    let credential = r.raw("AzureWebJobsStorage__credential");
    let client_id = r.optional("AzureWebJobsStorage__clientId", parse_guid);
    if let Some(c) = &credential
        && !c.eq_ignore_ascii_case("managedidentity")
    {
        r.problem(
            "AzureWebJobsStorage__credential",
            "must be 'managedidentity' when set",
        );
    }
    match (conn, uri) {
        (Some(conn), _) => {
            if !conn.contains('=') {
                r.problem("AzureWebJobsStorage", "is not a storage connection string (expected Key=Value pairs separated by ';')");
                return None;
            }
            Some(StorageSettings::ConnectionString(SecretString::from(conn)))
        }
        (None, Some(table_service_uri)) => Some(StorageSettings::Identity {
            table_service_uri,
            client_id,
        }),
        (None, None) => {
            if !r
                .problems
                .iter()
                .any(|p| p.setting.starts_with("AzureWebJobsStorage"))
            {
                r.problem(
                    "AzureWebJobsStorage",
                    "is required: a connection string, or AzureWebJobsStorage__tableServiceUri with a managed identity",
                );
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(&move |k| map.get(k).cloned())
    }

    const STORAGE: (&str, &str) = ("AzureWebJobsStorage", "UseDevelopmentStorage=true");

    #[test]
    fn defaults_apply_when_only_storage_is_set() {
        let c = config(&[STORAGE]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.stale_after_days, 7);
        assert_eq!(c.offboard_max_per_run, 50);
        assert_eq!(c.approval_ttl_hours, 72);
        assert_eq!(c.offboard_exclude_tag, "DoNotOffboard");
        assert_eq!(c.incident_min_severity, MinSeverity::Medium);
        assert_eq!(
            c.defender_api_base.as_str(),
            "https://api.securitycenter.microsoft.com/"
        );
        assert_eq!(c.graph_api_base.as_str(), "https://graph.microsoft.com/");
        assert_eq!(
            c.authority_host.as_str(),
            "https://login.microsoftonline.com/"
        );
        assert!(c.key_vault_verify_challenge_resource);
        assert!(c.key_vault_uri.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once_and_names_its_setting() {
        let err = config(&[
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "eighty"),
            ("STALE_AFTER_DAYS", "0"),
            ("INCIDENT_MIN_SEVERITY", "critical"),
            ("DEFENDER_API_BASE", "http://plain.example"),
            ("TABLE_PREFIX", "bad-prefix"),
        ])
        .unwrap_err();
        let names: Vec<&str> = err.problems.iter().map(|p| p.setting).collect();
        for expected in [
            "FUNCTIONS_CUSTOMHANDLER_PORT",
            "AzureWebJobsStorage",
            "STALE_AFTER_DAYS",
            "INCIDENT_MIN_SEVERITY",
            "DEFENDER_API_BASE",
            "TABLE_PREFIX",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let text = err.to_string();
        assert!(text.contains("STALE_AFTER_DAYS: must be a whole number"));
    }

    #[test]
    fn an_unresolved_key_vault_reference_stops_start_up() {
        let err = config(&[
            STORAGE,
            (
                "NOTIFY_EMAIL_FROM",
                "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/x/)",
            ),
        ])
        .unwrap_err();
        assert_eq!(err.problems[0].setting, "NOTIFY_EMAIL_FROM");
        assert!(
            err.problems[0]
                .problem
                .contains("unresolved Key Vault reference")
        );
    }

    #[test]
    fn a_storage_connection_string_never_appears_in_errors_or_summary() {
        let secret_key = "AccountKey=c2VjcmV0LWtleS12YWx1ZQ==";
        let conn = format!("DefaultEndpointsProtocol=https;AccountName=x;{secret_key}");
        let c = config(&[("AzureWebJobsStorage", &conn)]).unwrap();
        assert!(!format!("{c:?}").contains("c2VjcmV0"));
        assert!(!format!("{:?}", c.summary()).contains("c2VjcmV0"));
        let err = config(&[("AzureWebJobsStorage", &conn), ("STALE_AFTER_DAYS", "x")]).unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn identity_based_storage_is_accepted_with_a_user_assigned_client_id() {
        let c = config(&[
            (
                "AzureWebJobsStorage__tableServiceUri",
                "https://acct.table.core.windows.net",
            ),
            ("AzureWebJobsStorage__credential", "managedidentity"),
            (
                "AzureWebJobsStorage__clientId",
                "0b8e6a4c-1d2f-4e3a-9b7c-5d6e7f8a9b0c",
            ),
        ])
        .unwrap();
        match c.storage {
            StorageSettings::Identity { client_id, .. } => {
                assert_eq!(
                    client_id.as_deref(),
                    Some("0b8e6a4c-1d2f-4e3a-9b7c-5d6e7f8a9b0c")
                );
            }
            StorageSettings::ConnectionString(_) => panic!("expected identity storage"),
        }
    }

    #[test]
    fn secret_names_require_a_vault_and_email_requires_the_home_app() {
        let err = config(&[
            STORAGE,
            ("NOTIFY_TEAMS_SECRET", "teams-url"),
            ("NOTIFY_EMAIL_FROM", "ops@contoso.com"),
            ("NOTIFY_EMAIL_TO", "a@contoso.com; b@contoso.com"),
        ])
        .unwrap_err();
        let names: Vec<&str> = err.problems.iter().map(|p| p.setting).collect();
        assert!(names.contains(&"KEY_VAULT_URI"));
        assert!(names.contains(&"HOME_TENANT_ID"));
    }

    #[test]
    fn unsigned_calls_and_the_default_caller_are_opt_in_and_warned_about() {
        let c = config(&[STORAGE]).unwrap();
        assert!(!c.webhook_allow_unsigned);
        assert!(c.trust_warnings().is_empty());
        let c = config(&[
            STORAGE,
            ("KEY_VAULT_URI", "https://kv.vault.azure.net/"),
            ("WEBHOOK_HMAC_SECRET", "webhook-hmac"),
            ("WEBHOOK_ALLOW_UNSIGNED", "true"),
            ("NOTIFY_WEBHOOK_SIGNING_SECRET", "events-signing"),
        ])
        .unwrap();
        assert!(c.webhook_allow_unsigned);
        assert_eq!(
            c.notify
                .webhook_signing_secret
                .as_ref()
                .map(SecretName::as_str),
            Some("events-signing")
        );
        let warnings = c.trust_warnings().join("\n");
        assert!(warnings.contains("'default'") && warnings.contains("EVERY tenant"));
        assert!(warnings.contains("WEBHOOK_ALLOW_UNSIGNED"));
        let err = config(&[STORAGE, ("WEBHOOK_ALLOW_UNSIGNED", "maybe")]).unwrap_err();
        assert_eq!(err.problems[0].setting, "WEBHOOK_ALLOW_UNSIGNED");
    }

    #[test]
    fn outbound_events_cannot_be_signed_with_the_offboarding_key() {
        let err = config(&[
            STORAGE,
            ("KEY_VAULT_URI", "https://kv.vault.azure.net/"),
            ("WEBHOOK_HMAC_SECRET", "webhook-hmac"),
            ("NOTIFY_WEBHOOK_SIGNING_SECRET", "webhook-hmac"),
        ])
        .unwrap_err();
        assert_eq!(err.problems[0].setting, "NOTIFY_WEBHOOK_SIGNING_SECRET");
    }

    #[test]
    fn a_complete_configuration_parses_every_setting() {
        let c = config(&[
            STORAGE,
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "41234"),
            ("KEY_VAULT_URI", "https://kv.vault.azure.net/"),
            ("KEY_VAULT_VERIFY_CHALLENGE_RESOURCE", "false"),
            ("AZURE_CLIENT_ID", "0B8E6A4C-1D2F-4E3A-9B7C-5D6E7F8A9B0C"),
            ("TABLE_PREFIX", "t123"),
            ("DEVICE_SYNC_SCHEDULE", "0 */15 * * * *"),
            ("OFFBOARD_FLAGGED_SCHEDULE", "00:05:00"),
            ("STALE_AFTER_DAYS", "14"),
            ("OFFBOARD_MAX_PER_RUN", "5"),
            ("INCIDENT_MIN_SEVERITY", "HIGH"),
            ("WEBHOOK_HMAC_SECRET", "webhook-hmac"),
            ("NOTIFY_EMAIL_FROM", "ops@contoso.com"),
            ("NOTIFY_EMAIL_TO", "a@contoso.com,b@contoso.com"),
            ("HOME_TENANT_ID", "8f3c2a1b-5d4e-4f6a-9b7c-0d1e2f3a4b5c"),
            ("HOME_CLIENT_ID", "2b7e9c41-0a6d-4c3f-8e15-94d2f0a7b6c8"),
            ("HOME_SECRET_NAME", "home-secret"),
        ])
        .unwrap();
        assert_eq!(c.port, 41234);
        assert!(!c.key_vault_verify_challenge_resource);
        assert_eq!(
            c.azure_client_id.as_deref(),
            Some("0b8e6a4c-1d2f-4e3a-9b7c-5d6e7f8a9b0c")
        );
        assert_eq!(c.table_prefix, "t123");
        assert_eq!(c.schedules.offboard_flagged, "00:05:00");
        assert_eq!(c.incident_min_severity, MinSeverity::High);
        assert_eq!(c.notify.email_to.len(), 2);
        assert_eq!(
            c.home_app
                .unwrap()
                .secret_name
                .map(|s| s.as_str().to_owned())
                .as_deref(),
            Some("home-secret")
        );
    }

    #[test]
    fn a_malformed_schedule_is_refused() {
        let err = config(&[STORAGE, ("ACTION_TRACKER_SCHEDULE", "*/5 * * * *")]).unwrap_err();
        assert_eq!(err.problems[0].setting, "ACTION_TRACKER_SCHEDULE");
    }
}
