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
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix("?}")) {
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

#[test]
fn auth_levels_match_the_function_bindings() {
    let spec = spec();
    let default_security = spec["security"].clone();
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
                let schemes: Vec<String> = security
                    .as_array()
                    .expect("security list")
                    .iter()
                    .flat_map(|s| s.as_object().expect("requirement").keys().cloned())
                    .collect();
                let expected: Vec<String> = match auth {
                    AuthLevel::Anonymous => vec![],
                    AuthLevel::Function => vec!["functionKey".into()],
                    AuthLevel::Admin => vec!["adminKey".into()],
                };
                assert_eq!(schemes, expected, "{} {m} {path}", f.name);
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
