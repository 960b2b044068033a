//! Keeps `infra/` (Bicep) in step with the product: every setting the handler reads is set on
//! the function app, every table and queue is created, the app runs as a Flex Consumption
//! custom handler, and every module / parameter-file reference resolves. The Bicep compiler
//! can't run here (no network), so this reads the Bicep text with a small tokenizer that knows
//! strings (with `${...}` interpolation) and comments.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use defender_ops::config::SETTING_NAMES;
use defender_ops::functions::queues;
use defender_ops::store::names;

/// Set by the platform, not by us.
const PLATFORM_SETTINGS: &[&str] = &["FUNCTIONS_CUSTOMHANDLER_PORT"];
/// The connection-string alternative; the Bicep uses identity-based `AzureWebJobsStorage__*`
/// (shared keys are disabled on the account).
const CONNECTION_STRING_SETTING: &str = "AzureWebJobsStorage";
/// Identity-based host storage settings the Bicep must set (NOTES: Functions hosting).
const IDENTITY_STORAGE_SETTINGS: &[&str] = &[
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
];
const TABLE_TYPE: &str = "Microsoft.Storage/storageAccounts/tableServices/tables@";
const QUEUE_TYPE: &str = "Microsoft.Storage/storageAccounts/queueServices/queues@";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---- tokenizer ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A string literal's raw text between the quotes (interpolations kept as `${...}`).
    Str(String),
    Ident(String),
    Punct(char),
}

impl Tok {
    fn is_ident(&self, s: &str) -> bool {
        matches!(self, Tok::Ident(i) if i == s)
    }
    fn is_punct(&self, c: char) -> bool {
        matches!(self, Tok::Punct(p) if *p == c)
    }
    /// A string literal without interpolation.
    fn literal(&self) -> Option<&str> {
        match self {
            Tok::Str(s) if !s.contains("${") => Some(s),
            _ => None,
        }
    }
}

/// Reads a `'...'` string starting at `chars[i] == '\''`; returns its raw text and the index
/// after the closing quote. `${ ... }` may hold nested strings and braces.
fn read_string(chars: &[char], mut i: usize) -> (String, usize) {
    if chars[i..].starts_with(&['\'', '\'', '\'']) {
        let start = i + 3;
        let mut j = start;
        while j + 2 < chars.len() && !chars[j..].starts_with(&['\'', '\'', '\'']) {
            j += 1;
        }
        return (chars[start..j].iter().collect(), (j + 3).min(chars.len()));
    }
    i += 1;
    let mut out = String::new();
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                out.push(chars[i]);
                out.push(chars[i + 1]);
                i += 2;
            }
            '\'' => return (out, i + 1),
            '$' if chars.get(i + 1) == Some(&'{') => {
                out.push_str("${");
                i += 2;
                let mut depth = 1;
                while i < chars.len() && depth > 0 {
                    match chars[i] {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        '\'' => {
                            let (inner, next) = read_string(chars, i);
                            out.push('\'');
                            out.push_str(&inner);
                            out.push('\'');
                            i = next;
                            continue;
                        }
                        _ => {}
                    }
                    out.push(chars[i]);
                    i += 1;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (out, i)
}

fn tokenize(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' {
            let (s, next) = read_string(&chars, i);
            toks.push(Tok::Str(s));
            i = next;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

/// Index of the bracket closing the one at `open` (`[`/`{`/`(`).
fn matching(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('[' | '{' | '(') => depth += 1,
            Tok::Punct(']' | '}' | ')') => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced brackets after token {open}");
}

/// Literal values of `<key>: '<value>'` pairs directly inside `toks`.
fn key_literals<'a>(toks: &'a [Tok], key: &str) -> Vec<&'a str> {
    toks.windows(3)
        .filter(|w| w[0].is_ident(key) && w[1].is_punct(':'))
        .filter_map(|w| w[2].literal())
        .collect()
}

// ---- Bicep model -------------------------------------------------------------------------

struct BicepFile {
    path: PathBuf,
    toks: Vec<Tok>,
}

impl BicepFile {
    fn parse(path: &Path) -> Self {
        let src = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self {
            path: path.to_owned(),
            toks: tokenize(&src),
        }
    }

    fn from_src(name: &str, src: &str) -> Self {
        Self {
            path: PathBuf::from(name),
            toks: tokenize(src),
        }
    }

    /// Names of every `{ name: '...', value: ... }` entry of every `appSettings: [...]`.
    fn app_setting_names(&self) -> Vec<String> {
        let t = &self.toks;
        let mut out = Vec::new();
        for i in 0..t.len().saturating_sub(2) {
            if t[i].is_ident("appSettings") && t[i + 1].is_punct(':') && t[i + 2].is_punct('[') {
                let end = matching(t, i + 2);
                out.extend(
                    key_literals(&t[i + 2..=end], "name")
                        .into_iter()
                        .map(str::to_owned),
                );
            }
        }
        out
    }

    /// String items of `var <name> = [ ... ]`.
    fn array_var(&self, name: &str) -> Option<Vec<String>> {
        let t = &self.toks;
        (0..t.len().saturating_sub(3)).find_map(|i| {
            (t[i].is_ident("var")
                && t[i + 1].is_ident(name)
                && t[i + 2].is_punct('=')
                && t[i + 3].is_punct('['))
            .then(|| {
                let end = matching(t, i + 3);
                t[i + 4..end]
                    .iter()
                    .filter_map(|x| x.literal().map(str::to_owned))
                    .collect()
            })
        })
    }

    /// The token ranges of `resource <sym> '<type>...' = <body>` whose type starts with `prefix`.
    fn resources(&self, prefix: &str) -> Vec<(usize, usize)> {
        let t = &self.toks;
        let mut out = Vec::new();
        for i in 0..t.len().saturating_sub(4) {
            let typed = matches!(&t[i + 2], Tok::Str(s) if s.starts_with(prefix));
            if t[i].is_ident("resource") && typed {
                let open = (i + 3..t.len())
                    .find(|&k| t[k].is_punct('{') || t[k].is_punct('['))
                    .expect("resource body");
                out.push((open, matching(t, open)));
            }
        }
        out
    }

    /// Names created by resources of a type: a literal name (an optional `${tablePrefix}` in
    /// front is dropped), or a `[for x in arr: { name: '...${x}' }]` loop over a literal array.
    fn created_names(&self, type_prefix: &str) -> BTreeSet<String> {
        let t = &self.toks;
        let mut out = BTreeSet::new();
        for (open, close) in self.resources(type_prefix) {
            let body = &t[open..=close];
            let name = body
                .windows(3)
                .find(|w| w[0].is_ident("name") && w[1].is_punct(':'))
                .and_then(|w| match &w[2] {
                    Tok::Str(s) => Some(s.clone()),
                    // `name: item` in a loop is the same as `name: '${item}'`.
                    Tok::Ident(i) => Some(format!("${{{i}}}")),
                    Tok::Punct(_) => None,
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{}: a {type_prefix} resource without a string name",
                        self.path.display()
                    )
                });
            let name = name
                .strip_prefix("${tablePrefix}")
                .unwrap_or(&name)
                .to_owned();
            let is_loop = body.len() > 4 && body[0].is_punct('[') && body[1].is_ident("for");
            if is_loop {
                let (Tok::Ident(var), true, Tok::Ident(arr)) =
                    (&body[2], body[3].is_ident("in"), &body[4])
                else {
                    panic!(
                        "{}: unexpected loop form over {type_prefix}",
                        self.path.display()
                    );
                };
                assert_eq!(
                    name,
                    format!("${{{var}}}"),
                    "{}: a loop over {arr} must name each resource after its item",
                    self.path.display()
                );
                let items = self.array_var(arr).unwrap_or_else(|| {
                    panic!("{}: no literal `var {arr} = [...]`", self.path.display())
                });
                out.extend(items);
            } else {
                assert!(
                    !name.contains("${"),
                    "{}: table/queue name {name:?} is not literal",
                    self.path.display()
                );
                out.insert(name);
            }
        }
        out
    }

    /// `param <name> <type> [= default]`: name -> has a default.
    fn params(&self) -> BTreeMap<String, bool> {
        let t = &self.toks;
        let mut out = BTreeMap::new();
        for i in 0..t.len().saturating_sub(3) {
            if let (true, Tok::Ident(name), Tok::Ident(_ty)) =
                (t[i].is_ident("param"), &t[i + 1], &t[i + 2])
            {
                out.insert(name.clone(), t[i + 3].is_punct('='));
            }
        }
        out
    }

    /// `module <sym> '<path>' = { ... params: { key: ... } }`: (path, keys).
    fn module_calls(&self) -> Vec<(String, BTreeSet<String>)> {
        let t = &self.toks;
        let mut out = Vec::new();
        for i in 0..t.len().saturating_sub(4) {
            if let (true, Tok::Str(path), true, true) = (
                t[i].is_ident("module"),
                &t[i + 2],
                t[i + 3].is_punct('='),
                t[i + 4].is_punct('{'),
            ) {
                let end = matching(t, i + 4);
                let mut keys = BTreeSet::new();
                let mut k = i + 5;
                while k + 2 < end {
                    if t[k].is_ident("params") && t[k + 1].is_punct(':') && t[k + 2].is_punct('{') {
                        let pend = matching(t, k + 2);
                        let mut j = k + 3;
                        while j < pend {
                            if let (Tok::Ident(key), true) = (&t[j], t[j + 1].is_punct(':')) {
                                keys.insert(key.clone());
                            }
                            if t[j].is_punct('{') || t[j].is_punct('[') || t[j].is_punct('(') {
                                j = matching(t, j);
                            }
                            j += 1;
                        }
                        break;
                    }
                    k += 1;
                }
                out.push((path.clone(), keys));
            }
        }
        out
    }

    /// Literal `name:` inside the `runtime: { ... }` object(s).
    fn runtime_names(&self) -> Vec<String> {
        let t = &self.toks;
        let mut out = Vec::new();
        for i in 0..t.len().saturating_sub(2) {
            if t[i].is_ident("runtime") && t[i + 1].is_punct(':') && t[i + 2].is_punct('{') {
                let end = matching(t, i + 2);
                out.extend(
                    key_literals(&t[i + 2..=end], "name")
                        .into_iter()
                        .map(str::to_owned),
                );
            }
        }
        out
    }

    /// True when the word appears in code (an identifier or inside a string), not in comments.
    fn mentions(&self, word: &str) -> bool {
        self.toks.iter().any(|t| match t {
            Tok::Ident(i) => i == word,
            Tok::Str(s) => s.contains(word),
            Tok::Punct(_) => false,
        })
    }
}

fn files_with_ext(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_with_ext(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn bicep_files() -> Vec<BicepFile> {
    let mut paths = Vec::new();
    files_with_ext(&root().join("infra"), "bicep", &mut paths);
    paths.sort();
    assert!(!paths.is_empty(), "no .bicep file under infra/");
    paths.iter().map(|p| BicepFile::parse(p)).collect()
}

fn all_app_settings(files: &[BicepFile]) -> BTreeSet<String> {
    files
        .iter()
        .flat_map(BicepFile::app_setting_names)
        .collect()
}

/// `expected - actual`, for messages that name what is missing.
fn missing<'a>(
    expected: impl IntoIterator<Item = &'a str>,
    actual: &BTreeSet<String>,
) -> Vec<&'a str> {
    expected
        .into_iter()
        .filter(|e| !actual.contains(*e))
        .collect()
}

/// Settings the Bicep must set on the function app.
fn settings_for_bicep() -> impl Iterator<Item = &'static str> {
    SETTING_NAMES
        .iter()
        .copied()
        .filter(|s| !PLATFORM_SETTINGS.contains(s) && *s != CONNECTION_STRING_SETTING)
}

fn queues_from_function_json() -> BTreeSet<String> {
    let mut paths = Vec::new();
    files_with_ext(&root().join("functions"), "json", &mut paths);
    assert!(!paths.is_empty(), "no functions/*/function.json");
    let mut out = BTreeSet::new();
    for path in paths {
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for b in json["bindings"].as_array().into_iter().flatten() {
            let ty = b["type"].as_str().unwrap_or_default();
            if ty == "queue" || ty == "queueTrigger" {
                let q = b["queueName"].as_str().unwrap_or_else(|| {
                    panic!("{}: queue binding without queueName", path.display())
                });
                out.insert(q.to_owned());
            }
        }
    }
    out
}

// ---- the checks --------------------------------------------------------------------------

#[test]
fn every_setting_is_set_in_the_bicep_app_settings() {
    let set = all_app_settings(&bicep_files());
    let absent = missing(settings_for_bicep(), &set);
    assert!(
        absent.is_empty(),
        "settings of config::SETTING_NAMES not set in infra/**/*.bicep appSettings: {absent:?}"
    );
}

#[test]
fn bicep_uses_identity_based_storage_and_no_worker_runtime() {
    let files = bicep_files();
    let set = all_app_settings(&files);
    let absent = missing(IDENTITY_STORAGE_SETTINGS.iter().copied(), &set);
    assert!(
        absent.is_empty(),
        "identity-based storage settings missing from appSettings: {absent:?}"
    );
    assert!(
        !set.contains(CONNECTION_STRING_SETTING),
        "appSettings set the AzureWebJobsStorage connection string; shared keys are disabled, use AzureWebJobsStorage__*"
    );
    let offenders: Vec<_> = files
        .iter()
        .filter(|f| f.mentions("FUNCTIONS_WORKER_RUNTIME"))
        .map(|f| f.path.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "FUNCTIONS_WORKER_RUNTIME is rejected on Flex Consumption; found in {offenders:?}"
    );
    for name in [
        "AZURE_CLIENT_ID",
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    ] {
        assert!(set.contains(name), "{name} missing from appSettings");
    }
}

#[test]
fn bicep_runs_the_app_as_a_flex_custom_handler() {
    let files = bicep_files();
    let runtimes: Vec<String> = files.iter().flat_map(BicepFile::runtime_names).collect();
    assert_eq!(
        runtimes,
        ["custom"],
        "functionAppConfig.runtime.name must be exactly 'custom' once"
    );
    let flex = files.iter().any(|f| {
        f.toks.windows(3).any(|w| {
            w[0].is_ident("tier") && w[1].is_punct(':') && w[2].literal() == Some("FlexConsumption")
        })
    });
    assert!(flex, "no plan with tier 'FlexConsumption'");
}

#[test]
fn every_setting_is_in_the_local_settings_sample() {
    let text = fs::read_to_string(root().join("local.settings.sample.json"))
        .expect("local.settings.sample.json");
    let json: serde_json::Value =
        serde_json::from_str(&text).expect("local.settings.sample.json is JSON");
    let values: BTreeSet<String> = json["Values"]
        .as_object()
        .expect("Values object")
        .keys()
        .cloned()
        .collect();
    // The sample uses the connection-string form (Azurite); the identity-based alternative
    // (`AzureWebJobsStorage__*`) and the host-provided port are not local settings.
    let expected = SETTING_NAMES
        .iter()
        .copied()
        .filter(|s| !PLATFORM_SETTINGS.contains(s) && !s.starts_with("AzureWebJobsStorage__"));
    let absent = missing(expected, &values);
    assert!(
        absent.is_empty(),
        "settings missing from local.settings.sample.json: {absent:?}"
    );
}

#[test]
fn the_local_settings_sample_shows_identity_based_storage_beside_the_connection_string() {
    let text = fs::read_to_string(root().join("local.settings.sample.json"))
        .expect("local.settings.sample.json");
    let json: serde_json::Value =
        serde_json::from_str(&text).expect("local.settings.sample.json is JSON");
    let values = json["Values"].as_object().expect("Values object");
    assert!(values.contains_key(CONNECTION_STRING_SETTING));
    // Shown under a prefix, so that the sample used as it is keeps the connection string.
    for name in IDENTITY_STORAGE_SETTINGS {
        let shown = format!("identity-based.{name}");
        assert!(
            values
                .get(&shown)
                .and_then(|v| v.as_str())
                .is_some_and(|v| !v.is_empty()),
            "local.settings.sample.json lacks a sample {shown}"
        );
        assert!(
            !values.contains_key(*name),
            "{name} would override the connection string"
        );
    }
    assert_eq!(
        values["identity-based.AzureWebJobsStorage__credential"],
        "managedidentity"
    );
}

#[test]
fn every_table_is_created_by_the_bicep() {
    let created: BTreeSet<String> = bicep_files()
        .iter()
        .flat_map(|f| f.created_names(TABLE_TYPE))
        .collect();
    let absent = missing(names::ALL.iter().copied(), &created);
    assert!(
        absent.is_empty(),
        "tables of store::names::ALL not created in infra/: {absent:?} (created: {created:?})"
    );
}

#[test]
fn every_queue_and_its_poison_queue_is_created_by_the_bicep() {
    let created: BTreeSet<String> = bicep_files()
        .iter()
        .flat_map(|f| f.created_names(QUEUE_TYPE))
        .collect();
    let mut used = queues_from_function_json();
    used.extend([queues::DEVICE_SYNC, queues::OFFBOARD, queues::NOTIFICATIONS].map(str::to_owned));
    let expected: BTreeSet<String> = used
        .iter()
        // A function's own `poison` output already names a poison queue.
        .flat_map(|q| {
            [
                q.clone(),
                format!("{}-poison", q.trim_end_matches("-poison")),
            ]
        })
        .collect();
    let absent = missing(expected.iter().map(String::as_str), &created);
    assert!(
        absent.is_empty(),
        "queues not created in infra/: {absent:?} (created: {created:?})"
    );
}

#[test]
fn modules_and_parameter_file_match_their_declarations() {
    let files = bicep_files();
    let infra = root().join("infra");
    let main = files
        .iter()
        .find(|f| f.path == infra.join("main.bicep"))
        .expect("infra/main.bicep");
    let mut problems = Vec::new();
    for (rel, keys) in main.module_calls() {
        assert!(
            !rel.starts_with("br/") && !rel.starts_with("br:"),
            "registry module {rel}: checkov can't see it"
        );
        let path = infra.join(&rel);
        let Some(module) = files.iter().find(|f| f.path == path) else {
            problems.push(format!("module {rel} does not exist"));
            continue;
        };
        let params = module.params();
        for k in &keys {
            if !params.contains_key(k) {
                problems.push(format!("{rel}: passed `{k}` is not a param"));
            }
        }
        for (p, has_default) in &params {
            if !has_default && !keys.contains(p) {
                problems.push(format!("{rel}: required param `{p}` is not passed"));
            }
        }
    }
    let param_file =
        fs::read_to_string(infra.join("main.bicepparam")).expect("infra/main.bicepparam");
    let toks = tokenize(&param_file);
    assert!(
        toks.windows(2)
            .any(|w| w[0].is_ident("using") && w[1].literal() == Some("./main.bicep")),
        "main.bicepparam must start with `using './main.bicep'`"
    );
    let declared = main.params();
    for w in toks.windows(3) {
        if let (true, Tok::Ident(name), true) = (w[0].is_ident("param"), &w[1], w[2].is_punct('='))
            && !declared.contains_key(name)
        {
            problems.push(format!(
                "main.bicepparam sets `{name}`, which main.bicep doesn't declare"
            ));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn basic_publishing_credentials_are_off_for_ftp_and_scm() {
    const POLICY_TYPE: &str = "Microsoft.Web/sites/basicPublishingCredentialsPolicies@";
    let files = bicep_files();
    let mut off = BTreeSet::new();
    for f in &files {
        for (open, close) in f.resources(POLICY_TYPE) {
            let body = &f.toks[open..=close];
            let name = body
                .windows(3)
                .find(|w| w[0].is_ident("name") && w[1].is_punct(':'))
                .and_then(|w| w[2].literal().map(str::to_owned));
            let allows = body
                .windows(3)
                .find(|w| w[0].is_ident("allow") && w[1].is_punct(':'))
                .map(|w| w[2].is_ident("false"));
            if let (Some(name), Some(true)) = (name, allows) {
                off.insert(name);
            }
        }
    }
    assert_eq!(
        off,
        BTreeSet::from(["ftp".to_owned(), "scm".to_owned()]),
        "infra/ must set basicPublishingCredentialsPolicies ftp and scm to allow: false"
    );
}

// ---- the scanner itself can fail -----------------------------------------------------------

const SAMPLE: &str = r#"
// appSettings: [ { name: 'IN_A_COMMENT' } ]
var queueNames = [
  'a'
  'a-poison'
]
resource q 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-01-01' = [for queue in queueNames: {
  name: queue
}]
resource t 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-01-01' = {
  name: '${tablePrefix}Tenants'
}
resource site 'Microsoft.Web/sites@2024-04-01' = {
  properties: {
    siteConfig: {
      appSettings: [
        { name: 'KEY_VAULT_URI', value: 'https://${vault}/it\'s' }
        {
          name: 'TABLE_PREFIX'
          value: '${concat('a', '}')}'
        }
      ]
    }
  }
}
"#;

#[test]
fn scanner_reads_settings_tables_and_queues_and_names_what_is_missing() {
    let f = BicepFile::from_src("sample.bicep", SAMPLE);
    let set: BTreeSet<String> = f.app_setting_names().into_iter().collect();
    assert_eq!(
        set,
        BTreeSet::from(["KEY_VAULT_URI".to_owned(), "TABLE_PREFIX".to_owned()])
    );
    assert!(!f.mentions("IN_A_COMMENT"));
    assert_eq!(
        missing(["KEY_VAULT_URI", "GRAPH_API_BASE"], &set),
        ["GRAPH_API_BASE"]
    );
    assert_eq!(
        f.created_names(TABLE_TYPE),
        BTreeSet::from(["Tenants".to_owned()])
    );
    let expected: BTreeSet<String> = ["a", "a-poison", "b", "b-poison"].map(str::to_owned).into();
    let created = f.created_names(QUEUE_TYPE);
    assert_eq!(
        missing(expected.iter().map(String::as_str), &created),
        ["b", "b-poison"]
    );
}
