//! Reads the app the way the host indexes it: `host.json` (custom handler, route prefix,
//! queue settings, function timeout) and every `functions/<Name>/function.json` (or
//! `<Name>/function.json` at the app root, the deployed layout).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::routes::RouteTemplate;
use crate::schedule::Schedule;

/// The parts of host.json the local host honours.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// `customHandler.description.arguments`, `%VAR%`-expanded.
    pub arguments: Vec<String>,
    /// `customHandler.description.workingDirectory` (empty = app root).
    pub working_directory: String,
    /// `extensions.http.routePrefix` (default `api`), without slashes.
    pub route_prefix: String,
    /// `extensions.queues.maxDequeueCount` (default 5).
    pub max_dequeue_count: u64,
    /// `extensions.queues.visibilityTimeout` (default 0).
    pub visibility_timeout: Duration,
    /// `extensions.queues.batchSize` (default 16, max 32).
    pub batch_size: u32,
    /// `functionTimeout`; `None` for `-1` (unbounded). Default 30 min (Flex).
    pub function_timeout: Option<Duration>,
    /// `customHandler.initializationTimeout` (default 30 s).
    pub initialization_timeout: Duration,
}

impl HostSettings {
    /// Parses host.json text.
    ///
    /// # Errors
    /// On invalid JSON, a missing `customHandler` section, forward/proxy mode (not
    /// emulated), or a malformed TimeSpan.
    pub fn parse(text: &str, resolve: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let json: Value = serde_json::from_str(text).context("host.json is not valid JSON")?;
        Self::from_json(&json, resolve)
    }

    /// Reads settings from parsed host.json.
    ///
    /// # Errors
    /// As [`HostSettings::parse`].
    pub fn from_json(
        json: &Value,
        resolve: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let handler = json
            .get("customHandler")
            .or_else(|| json.get("httpWorker"))
            .context("host.json has no customHandler section")?;
        let description = handler
            .get("description")
            .context("host.json customHandler has no description")?;
        let exe = description
            .get("defaultExecutablePath")
            .and_then(Value::as_str)
            .unwrap_or("");
        if exe.trim().is_empty() {
            bail!("WorkerDescription DefaultExecutablePath cannot be empty");
        }
        for flag in ["enableForwardingHttpRequest", "enableProxyingHttpRequest"] {
            if handler.get(flag).and_then(Value::as_bool) == Some(true) {
                bail!(
                    "host.json customHandler.{flag} = true is not emulated by dev-host (payload mode only)"
                );
            }
        }
        let arguments = description
            .get("arguments")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| expand_env(s, resolve))
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let working_directory = description
            .get("workingDirectory")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let initialization_timeout =
            match handler.get("initializationTimeout").and_then(Value::as_str) {
                Some(t) => parse_timespan(t).context("customHandler.initializationTimeout")?,
                None => Duration::from_secs(30),
            };
        let route_prefix = json
            .pointer("/extensions/http/routePrefix")
            .and_then(Value::as_str)
            .unwrap_or("api")
            .trim_matches('/')
            .to_string();
        let queues = json.pointer("/extensions/queues");
        let get_u64 = |key: &str| queues.and_then(|q| q.get(key)).and_then(Value::as_u64);
        let visibility_timeout = match queues
            .and_then(|q| q.get("visibilityTimeout"))
            .and_then(Value::as_str)
        {
            Some(t) => parse_timespan(t).context("extensions.queues.visibilityTimeout")?,
            None => Duration::ZERO,
        };
        let function_timeout = match json.get("functionTimeout").and_then(Value::as_str) {
            Some("-1") => None,
            Some(t) => Some(parse_timespan(t).context("functionTimeout")?),
            None => Some(Duration::from_secs(30 * 60)),
        };
        Ok(Self {
            arguments,
            working_directory,
            route_prefix,
            max_dequeue_count: get_u64("maxDequeueCount").unwrap_or(5).max(1),
            visibility_timeout,
            batch_size: u32::try_from(get_u64("batchSize").unwrap_or(16))
                .unwrap_or(32)
                .clamp(1, 32),
            function_timeout,
            initialization_timeout,
        })
    }
}

/// Expands `%VAR%` from `resolve`; unresolved references are removed (as the host does for
/// handler arguments).
pub fn expand_env(text: &str, resolve: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('%') {
            Some(end) => {
                out.push_str(&resolve(&after[..end]).unwrap_or_default());
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses a .NET TimeSpan string: `[d.]hh:mm[:ss[.fffffff]]`.
///
/// # Errors
/// When the text is not a TimeSpan.
pub fn parse_timespan(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let bad = || anyhow::anyhow!("{text:?} is not a TimeSpan (expected hh:mm:ss)");
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if rest.contains(':') && !d.contains(':') => {
            (d.parse::<u64>().map_err(|_| bad())?, rest)
        }
        _ => (0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad());
    }
    let hours: u64 = parts[0].parse().map_err(|_| bad())?;
    let minutes: u64 = parts[1].parse().map_err(|_| bad())?;
    let (seconds, nanos) = match parts.get(2) {
        Some(s) => {
            let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
            let whole: u64 = whole.parse().map_err(|_| bad())?;
            let nanos = if frac.is_empty() {
                0
            } else {
                if frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                format!("{frac:0<9}").parse::<u32>().map_err(|_| bad())?
            };
            (whole, nanos)
        }
        None => (0, 0),
    };
    if hours > 23 || minutes > 59 || seconds > 59 {
        return Err(bad());
    }
    Ok(Duration::new(
        days * 86_400 + hours * 3600 + minutes * 60 + seconds,
        nanos,
    ))
}

/// Authorization level of an HTTP trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    /// No key needed.
    Anonymous,
    /// A function key or the admin (master) key.
    Function,
    /// The admin (master) key only.
    Admin,
}

/// A function's trigger.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// `httpTrigger`.
    Http {
        /// Binding name (usually `req`).
        binding: String,
        /// `authLevel`.
        auth: AuthLevel,
        /// Upper-case methods; empty = any.
        methods: Vec<String>,
        /// The route (default: the function name).
        route: RouteTemplate,
    },
    /// `timerTrigger`.
    Timer {
        /// Binding name (usually `timer`).
        binding: String,
        /// The resolved schedule.
        schedule: Schedule,
        /// `useMonitor` (default true): `ScheduleStatus` is null when false.
        use_monitor: bool,
        /// `runOnStartup`.
        run_on_startup: bool,
    },
    /// `queueTrigger`.
    Queue {
        /// Binding name.
        binding: String,
        /// The queue (logical name, as in function.json).
        queue: String,
        /// `dataType: binary`: the message bytes arrive base64-encoded.
        binary: bool,
    },
}

/// An output binding the local host writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// `http` output (the response), by binding name (`res` or `$return`).
    Http {
        /// Binding name.
        name: String,
    },
    /// `queue` output.
    Queue {
        /// Binding name.
        name: String,
        /// Target queue (logical name).
        queue: String,
        /// `dataType: binary`.
        binary: bool,
    },
    /// Any other output type (not written; logged).
    Other {
        /// Binding name.
        name: String,
        /// Binding type.
        kind: String,
    },
}

impl Output {
    /// The binding name.
    pub fn name(&self) -> &str {
        match self {
            Output::Http { name } | Output::Queue { name, .. } | Output::Other { name, .. } => name,
        }
    }
}

/// One function of the app.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    /// Folder name = function name = payload-mode path.
    pub name: String,
    /// The trigger.
    pub trigger: Trigger,
    /// Output bindings.
    pub outputs: Vec<Output>,
}

impl FunctionDef {
    /// Parses one function.json.
    ///
    /// # Errors
    /// On invalid JSON, no or several triggers, an unknown auth level, a bad route, or an
    /// unresolved/unparsable schedule.
    pub fn parse(
        name: &str,
        text: &str,
        resolve: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let json: Value = serde_json::from_str(text)
            .with_context(|| format!("{name}/function.json is not valid JSON"))?;
        let bindings = json
            .get("bindings")
            .and_then(Value::as_array)
            .with_context(|| format!("{name}/function.json has no bindings array"))?;
        let mut trigger = None;
        let mut outputs = Vec::new();
        for b in bindings {
            let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
            let direction = b.get("direction").and_then(Value::as_str).unwrap_or("");
            let binding = b
                .get("name")
                .and_then(Value::as_str)
                .with_context(|| format!("{name}: a binding has no name"))?
                .to_string();
            let binary = b.get("dataType").and_then(Value::as_str) == Some("binary");
            let label = binding.clone();
            let str_field = |field: &str| {
                b.get(field)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .with_context(|| format!("{name}: binding {label} has no {field}"))
            };
            let this = match (kind.to_ascii_lowercase().as_str(), direction) {
                ("httptrigger", _) => {
                    let auth = match b
                        .get("authLevel")
                        .and_then(Value::as_str)
                        .unwrap_or("function")
                        .to_ascii_lowercase()
                        .as_str()
                    {
                        "anonymous" => AuthLevel::Anonymous,
                        "function" => AuthLevel::Function,
                        "admin" | "system" => AuthLevel::Admin,
                        other => bail!("{name}: unknown authLevel {other:?}"),
                    };
                    let methods = b
                        .get("methods")
                        .and_then(Value::as_array)
                        .map(|m| {
                            m.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_ascii_uppercase)
                                .collect()
                        })
                        .unwrap_or_default();
                    let route = b.get("route").and_then(Value::as_str).unwrap_or(name);
                    let route = RouteTemplate::parse(route)
                        .with_context(|| format!("{name}: route {route:?}"))?;
                    Some(Trigger::Http {
                        binding,
                        auth,
                        methods,
                        route,
                    })
                }
                ("timertrigger", _) => {
                    let raw = str_field("schedule")?;
                    let schedule = Schedule::resolve(&raw, resolve)
                        .with_context(|| format!("{name}: timer schedule {raw:?}"))?;
                    Some(Trigger::Timer {
                        binding,
                        schedule,
                        use_monitor: b.get("useMonitor").and_then(Value::as_bool).unwrap_or(true),
                        run_on_startup: b
                            .get("runOnStartup")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    })
                }
                ("queuetrigger", _) => Some(Trigger::Queue {
                    binding,
                    queue: resolve_name(&str_field("queueName")?, resolve, name)?,
                    binary,
                }),
                (t, _) if t.ends_with("trigger") => {
                    bail!("{name}: trigger type {kind:?} is not emulated by dev-host")
                }
                ("http", "out") => {
                    outputs.push(Output::Http { name: binding });
                    None
                }
                ("queue", "out") => {
                    outputs.push(Output::Queue {
                        name: binding,
                        queue: resolve_name(&str_field("queueName")?, resolve, name)?,
                        binary,
                    });
                    None
                }
                (_, "out") => {
                    outputs.push(Output::Other {
                        name: binding,
                        kind: kind.to_string(),
                    });
                    None
                }
                _ => bail!("{name}: input binding type {kind:?} is not emulated by dev-host"),
            };
            if let Some(t) = this {
                if trigger.is_some() {
                    bail!("{name}: more than one trigger");
                }
                trigger = Some(t);
            }
        }
        Ok(Self {
            name: name.to_string(),
            trigger: trigger.with_context(|| format!("{name}: no trigger binding"))?,
            outputs,
        })
    }
}

fn resolve_name(
    raw: &str,
    resolve: &dyn Fn(&str) -> Option<String>,
    function: &str,
) -> anyhow::Result<String> {
    let resolved = if raw.starts_with('%') && raw.ends_with('%') && raw.len() > 2 {
        let key = &raw[1..raw.len() - 1];
        resolve(key).with_context(|| format!("{function}: app setting {key} is not set"))?
    } else {
        raw.to_string()
    };
    crate::queue::validate_queue_name(&resolved)?;
    Ok(resolved)
}

/// Loads every function of an app root: `functions/*/function.json` if that folder
/// exists, otherwise `*/function.json` (the deployed layout). Sorted by name.
///
/// # Errors
/// When a folder cannot be read or a function.json is invalid.
pub fn load_functions(
    app_root: &Path,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<FunctionDef>> {
    let dir = if app_root.join("functions").is_dir() {
        app_root.join("functions")
    } else {
        app_root.to_path_buf()
    };
    let mut functions = Vec::new();
    let mut names = HashMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path().join("function.json");
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if names.insert(name.to_ascii_lowercase(), ()).is_some() {
            bail!("two functions named {name} (names are case-insensitive)");
        }
        functions.push(FunctionDef::parse(&name, &text, resolve)?);
    }
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(functions)
}

/// Applies a JSON merge patch (RFC 7386): objects merge recursively, `null` deletes.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn settings(key: &str) -> Option<String> {
        match key {
            "DEVICE_SYNC_SCHEDULE" => Some("0 0 * * * *".to_string()),
            "PORT" => Some("7000".to_string()),
            _ => None,
        }
    }

    #[test]
    fn the_project_host_json_is_read() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../host.json"))
            .unwrap();
        let s = HostSettings::parse(&text, &settings).unwrap();
        assert_eq!(s.route_prefix, "api");
        assert_eq!(s.max_dequeue_count, 5);
        assert_eq!(s.visibility_timeout, Duration::from_secs(30));
        assert_eq!(s.batch_size, 16);
        assert_eq!(s.function_timeout, Some(Duration::from_secs(600)));
    }

    #[test]
    fn forward_mode_is_refused_rather_than_silently_misemulated() {
        let json = json!({"customHandler": {"description": {"defaultExecutablePath": "h"},
            "enableForwardingHttpRequest": true}});
        let err = HostSettings::from_json(&json, &settings).unwrap_err();
        assert!(err.to_string().contains("enableForwardingHttpRequest"));
    }

    #[test]
    fn an_empty_executable_path_is_refused_like_the_host_does() {
        let json = json!({"customHandler": {"description": {"defaultExecutablePath": ""}}});
        assert!(HostSettings::from_json(&json, &settings).is_err());
    }

    #[test]
    fn arguments_are_expanded_and_unresolved_references_removed() {
        assert_eq!(expand_env("--port=%PORT%", &settings), "--port=7000");
        assert_eq!(expand_env("%NOPE%", &settings), "");
        assert_eq!(expand_env("50%", &settings), "50%");
    }

    #[test]
    fn timespans_parse_like_dotnet() {
        assert_eq!(parse_timespan("00:00:30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_timespan("01:02").unwrap(), Duration::from_secs(3720));
        assert_eq!(
            parse_timespan("1.00:00:00").unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            parse_timespan("00:00:00.5").unwrap(),
            Duration::from_millis(500)
        );
        assert!(parse_timespan("30").is_err());
        assert!(parse_timespan("00:61:00").is_err());
        assert!(parse_timespan("x:y:z").is_err());
    }

    #[test]
    fn every_project_function_json_loads() {
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        let resolve = |_: &str| Some("0 */5 * * * *".to_string());
        let functions = load_functions(root, &resolve).unwrap();
        assert!(functions.len() >= 12, "{}", functions.len());
        let devices = functions.iter().find(|f| f.name == "Devices").unwrap();
        let Trigger::Http { auth, methods, .. } = &devices.trigger else {
            panic!("Devices is http-triggered");
        };
        assert_eq!(*auth, AuthLevel::Function);
        assert_eq!(methods, &vec!["GET".to_string(), "PATCH".to_string()]);
        assert!(devices.outputs.contains(&Output::Queue {
            name: "jobs".into(),
            queue: "offboard".into(),
            binary: false
        }));
    }

    #[test]
    fn an_unresolved_schedule_setting_fails_with_its_name() {
        let text = r#"{"bindings":[{"type":"timerTrigger","direction":"in","name":"timer","schedule":"%MISSING_SCHEDULE%"}]}"#;
        let err = format!(
            "{:#}",
            FunctionDef::parse("T", text, &settings).unwrap_err()
        );
        assert!(err.contains("MISSING_SCHEDULE"), "{err}");
    }

    #[test]
    fn a_function_without_trigger_is_refused() {
        let text =
            r#"{"bindings":[{"type":"queue","direction":"out","name":"jobs","queueName":"x-y"}]}"#;
        assert!(FunctionDef::parse("T", text, &settings).is_err());
    }

    #[test]
    fn merge_patch_overrides_nested_values_and_deletes_nulls() {
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge_patch(&mut target, &json!({"a": {"b": 9}, "d": null}));
        assert_eq!(target, json!({"a": {"b": 9, "c": 2}}));
    }
}
