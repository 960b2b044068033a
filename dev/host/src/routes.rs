//! ASP.NET-style route templates of HTTP triggers: literal segments (case-insensitive),
//! `{param}`, optional `{param?}`, constraints `{id:int}` (accepted, not enforced) and a
//! catch-all `{*rest}`.

use anyhow::bail;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param { name: String, optional: bool },
    CatchAll { name: String },
}

/// A parsed route template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    template: String,
    segments: Vec<Segment>,
}

impl RouteTemplate {
    /// Parses a template such as `devices/{tenantId}/{machineId?}`.
    ///
    /// # Errors
    /// On an unbalanced brace, an empty parameter name, a segment mixing text and a
    /// parameter, a required parameter after an optional one, or a catch-all not last.
    pub fn parse(template: &str) -> anyhow::Result<Self> {
        let mut segments = Vec::new();
        let trimmed = template.trim_matches('/');
        for raw in trimmed.split('/').filter(|s| !s.is_empty()) {
            let segment = if raw.starts_with('{') && raw.ends_with('}') {
                let inner = &raw[1..raw.len() - 1];
                if inner.contains('{') || inner.contains('}') {
                    bail!("segment {raw:?} has nested braces");
                }
                let (inner, optional) = match inner.strip_suffix('?') {
                    Some(i) => (i, true),
                    None => (inner, false),
                };
                // `{name:constraint}` or `{name=default}`: keep the name only.
                let name = inner.split([':', '=']).next().unwrap_or("");
                if let Some(name) = name.strip_prefix('*') {
                    if name.is_empty() {
                        bail!("catch-all in {raw:?} has no name");
                    }
                    Segment::CatchAll {
                        name: name.to_string(),
                    }
                } else {
                    if name.is_empty() {
                        bail!("parameter in {raw:?} has no name");
                    }
                    Segment::Param {
                        name: name.to_string(),
                        optional,
                    }
                }
            } else if raw.contains('{') || raw.contains('}') {
                bail!("segment {raw:?} mixes text and a parameter (not supported by dev-host)");
            } else {
                Segment::Literal(raw.to_string())
            };
            segments.push(segment);
        }
        let mut seen_optional = false;
        for (i, s) in segments.iter().enumerate() {
            match s {
                Segment::Param { optional: true, .. } => seen_optional = true,
                Segment::Param { name, .. } if seen_optional => {
                    bail!("required parameter {name} follows an optional one")
                }
                Segment::Literal(l) if seen_optional => {
                    bail!("literal {l} follows an optional parameter")
                }
                Segment::CatchAll { name } if i + 1 != segments.len() => {
                    bail!("catch-all {name} must be the last segment")
                }
                _ => {}
            }
        }
        Ok(Self {
            template: template.to_string(),
            segments,
        })
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// How specific the template is (more literal segments first), to order candidates.
    pub fn precedence(&self) -> (usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (literals, self.segments.len())
    }

    /// Matches a path (relative to the route prefix, already split on `/` and
    /// percent-decoded); returns the route parameters (`null` for a missing optional one).
    pub fn matches(&self, path: &[String]) -> Option<Map<String, Value>> {
        let mut params = Map::new();
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => {
                    if !path.get(i)?.eq_ignore_ascii_case(l) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Param { name, optional } => match path.get(i) {
                    Some(value) => {
                        params.insert(name.clone(), Value::String(value.clone()));
                        i += 1;
                    }
                    None if *optional => {
                        params.insert(name.clone(), Value::Null);
                    }
                    None => return None,
                },
                Segment::CatchAll { name } => {
                    let rest = path.get(i..).unwrap_or(&[]).join("/");
                    params.insert(name.clone(), Value::String(rest));
                    i = path.len();
                }
            }
        }
        (i == path.len()).then_some(params)
    }
}

/// Splits a request path into percent-decoded, non-empty segments.
pub fn split_path(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| s.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn m(template: &str, path: &str) -> Option<Value> {
        RouteTemplate::parse(template)
            .unwrap()
            .matches(&split_path(path))
            .map(Value::Object)
    }

    #[test]
    fn literal_routes_match_case_insensitively() {
        assert_eq!(m("health", "Health"), Some(json!({})));
        assert_eq!(m("health", "health/x"), None);
        assert_eq!(m("offboard", ""), None);
    }

    #[test]
    fn parameters_are_captured_and_decoded() {
        assert_eq!(
            m("offboard/{tenantId}/{requestId}", "offboard/t1/r%201"),
            Some(json!({"tenantId": "t1", "requestId": "r 1"}))
        );
        assert_eq!(m("offboard/{tenantId}/{requestId}", "offboard/t1"), None);
    }

    #[test]
    fn a_missing_optional_parameter_is_null() {
        assert_eq!(
            m("devices/{tenantId}/{machineId?}", "devices/t1"),
            Some(json!({"tenantId": "t1", "machineId": null}))
        );
        assert_eq!(
            m("devices/{tenantId}/{machineId?}", "devices/t1/m1"),
            Some(json!({"tenantId": "t1", "machineId": "m1"}))
        );
        assert_eq!(
            m("tenants/{tenantId?}", "tenants"),
            Some(json!({"tenantId": null}))
        );
        assert_eq!(
            m("devices/{tenantId}/{machineId?}", "devices/t1/m1/x"),
            None
        );
    }

    #[test]
    fn constraints_are_stripped_and_catch_all_takes_the_rest() {
        assert_eq!(m("items/{id:int}", "items/42"), Some(json!({"id": "42"})));
        assert_eq!(m("items/{id:int?}", "items"), Some(json!({"id": null})));
        assert_eq!(
            m("files/{*path}", "files/a/b"),
            Some(json!({"path": "a/b"}))
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert!(RouteTemplate::parse("a/{}").is_err());
        assert!(RouteTemplate::parse("a/{x?}/{y}").is_err());
        assert!(RouteTemplate::parse("a/file.{ext}").is_err());
        assert!(RouteTemplate::parse("{*a}/b").is_err());
    }

    #[test]
    fn more_literal_templates_take_precedence() {
        let a = RouteTemplate::parse("offboard").unwrap();
        let b = RouteTemplate::parse("{x}").unwrap();
        assert!(a.precedence() > b.precedence());
    }
}

#[cfg(test)]
mod properties {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_segment_value_is_captured_back_exactly(
            a in "[^/]{1,20}", b in "[^/]{1,20}"
        ) {
            let template = RouteTemplate::parse("x/{a}/{b?}").unwrap();
            // Percent-encode every byte but ASCII alphanumerics, as a client would a path.
            let encode = |s: &str| {
                s.bytes()
                    .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                    .collect::<String>()
            };
            let path = format!("x/{}/{}", encode(&a), encode(&b));
            let params = template.matches(&split_path(&path)).unwrap();
            prop_assert_eq!(params.get("a").and_then(Value::as_str), Some(a.as_str()));
            prop_assert_eq!(params.get("b").and_then(Value::as_str), Some(b.as_str()));
        }

        #[test]
        fn parsing_never_panics(template in ".{0,40}") {
            let _ = RouteTemplate::parse(&template);
        }
    }
}
