//! `openapi.yaml` describes exactly the HTTP routes, methods and auth levels that
//! `functions/*/function.json` declare.

use std::collections::{BTreeMap, BTreeSet};

use defender_ops::functions::{AuthLevel, CATALOG, Trigger};
use serde_json::Value;

fn spec() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
    let text = std::fs::read_to_string(&path).expect("openapi.yaml exists");
    serde_norway::from_str(&text).expect("openapi.yaml is valid YAML")
}

/// `devices/{tenantId}/{machineId?}` → `/devices/{tenantId}` and `/devices/{tenantId}/{machineId}`.
fn expand(route: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for segment in route.split('/') {
        if let Some(name) = segment.strip_prefix("{*").and_then(|s| s.strip_suffix('}')) {
            // A catch-all (`console/{*path}`): one documented path with a `{path}` parameter.
            for p in &mut out {
                p.push_str(&format!("/{{{name}}}"));
            }
        } else if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix("?}")) {
            let with: Vec<String> = out.iter().map(|p| format!("{p}/{{{name}}}")).collect();
            out.extend(with);
        } else {
            for p in &mut out {
                p.push('/');
                p.push_str(segment);
            }
        }
    }
    out
}

#[test]
fn every_http_function_route_and_method_is_documented_and_nothing_else() {
    let spec = spec();
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3."))
    );
    let paths = spec["paths"].as_object().expect("paths");
    let mut declared: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in CATALOG {
        let Trigger::Http { methods, route, .. } = f.trigger else {
            continue;
        };
        let variants = expand(route);
        let mut documented = BTreeSet::new();
        for v in &variants {
            let item = paths
                .get(v)
                .unwrap_or_else(|| panic!("{}: {v} is not in openapi.yaml", f.name));
            documented.extend(
                item.as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| *k != "parameters")
                    .cloned(),
            );
            declared.entry(v.clone()).or_default();
        }
        let expected: BTreeSet<String> = methods.iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(documented, expected, "{}: methods", f.name);
    }
    let documented_paths: BTreeSet<&String> = paths.keys().collect();
    let declared_paths: BTreeSet<&String> = declared.keys().collect();
    assert_eq!(
        documented_paths, declared_paths,
        "paths without a function, or functions without a path"
    );
}

/// The key schemes of one level: the `x-functions-key` header and the `code` query
/// parameter, both checked by the Functions host.
fn key_schemes(auth: AuthLevel) -> &'static [&'static str] {
    match auth {
        AuthLevel::Anonymous => &[],
        AuthLevel::Function => &["functionKey", "functionKeyQuery"],
        AuthLevel::Admin => &["adminKey", "adminKeyQuery"],
    }
}

const SIGNATURE_SCHEMES: [&str; 2] = ["webhookSignature", "webhookTimestamp"];

#[test]
fn auth_levels_match_the_function_bindings() {
    let spec = spec();
    let default_security = spec["security"].clone();
    let declared = spec["components"]["securitySchemes"]
        .as_object()
        .expect("securitySchemes");
    for f in CATALOG {
        let Trigger::Http {
            methods,
            route,
            auth,
        } = f.trigger
        else {
            continue;
        };
        for path in expand(route) {
            for m in methods {
                let Some(op) = spec["paths"][&path].get(*m) else {
                    continue;
                };
                let security = op
                    .get("security")
                    .cloned()
                    .unwrap_or_else(|| default_security.clone());
                let alternatives: Vec<BTreeSet<String>> = security
                    .as_array()
                    .expect("security list")
                    .iter()
                    .map(|s| {
                        s.as_object()
                            .expect("requirement")
                            .keys()
                            .cloned()
                            .collect()
                    })
                    .collect();
                let keys = key_schemes(auth);
                let what = format!("{} {m} {path}", f.name);
                if keys.is_empty() {
                    assert!(alternatives.is_empty(), "{what}: anonymous, no scheme");
                    continue;
                }
                let mut forms = BTreeSet::new();
                for alt in &alternatives {
                    let key: Vec<&String> = alt
                        .iter()
                        .filter(|s| !SIGNATURE_SCHEMES.contains(&s.as_str()))
                        .collect();
                    assert_eq!(key.len(), 1, "{what}: one key per requirement: {alt:?}");
                    assert!(
                        keys.contains(&key[0].as_str()),
                        "{what}: {alt:?} is not {auth:?}"
                    );
                    forms.insert(key[0].clone());
                    let signed = SIGNATURE_SCHEMES
                        .iter()
                        .filter(|s| alt.contains(**s))
                        .count();
                    assert!(
                        signed == 0 || signed == 2,
                        "{what}: signature and timestamp go together"
                    );
                    assert!(
                        signed == 0 || f.name == "OffboardWebhook",
                        "{what}: only the webhook is signed"
                    );
                    for s in alt {
                        assert!(declared.contains_key(s), "{what}: {s} is not declared");
                    }
                }
                let expected: BTreeSet<String> = keys.iter().map(|k| (*k).to_owned()).collect();
                assert_eq!(forms, expected, "{what}: the header and the query form");
                // The host answers a missing or wrong key with 401 before the handler runs.
                assert!(
                    op["responses"].get("401").is_some(),
                    "{what}: 401 (no key) is not documented"
                );
            }
        }
    }
}

#[test]
fn every_operation_with_a_body_documents_413_and_400() {
    let spec = spec();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if op.get("requestBody").is_none() {
                continue;
            }
            for status in ["400", "413"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path}: {status} is not documented"
                );
            }
        }
    }
}

#[test]
fn every_reference_resolves() {
    let spec = spec();
    fn walk(v: &Value, spec: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let pointer = r.strip_prefix('#').expect("local reference");
                    assert!(spec.pointer(pointer).is_some(), "dangling $ref {r}");
                }
                m.values().for_each(|x| walk(x, spec));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, spec)),
            _ => {}
        }
    }
    walk(&spec, &spec);
}
