//! A small JSON Schema (draft-07 subset) validator: `type`, `enum`, `const`, `properties`,
//! `required`, `additionalProperties`, `items`, `minItems`, `minLength`, `maxLength`,
//! `anyOf`, `oneOf`, `allOf` and local `$ref`s. Enough to check every card against the
//! vendored Adaptive Card schema (`tests/data/adaptive-card.schema.json`) without pulling a
//! schema engine into the product.

use serde_json::{Map, Value};

/// A parsed schema document (its `definitions` resolve `$ref`s).
#[derive(Debug, Clone)]
pub struct Schema {
    root: Value,
}

impl Schema {
    /// Parses a schema document.
    ///
    /// # Errors
    /// When `text` is not a JSON object.
    pub fn parse(text: &str) -> Result<Self, String> {
        let root: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !root.is_object() {
            return Err("a schema must be a JSON object".into());
        }
        Ok(Self { root })
    }

    /// Every violation, as `path: problem`; empty when `instance` is valid.
    #[must_use]
    pub fn validate(&self, instance: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(&self.root, instance, "", &mut errors, 0);
        errors
    }

    fn resolve<'a>(&'a self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn check(&self, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>, depth: u32) {
        let here = if path.is_empty() { "/" } else { path };
        if depth > 64 {
            errors.push(format!("{here}: schema nesting too deep"));
            return;
        }
        let Some(s) = schema.as_object() else {
            if schema == &Value::Bool(false) {
                errors.push(format!("{here}: not allowed"));
            }
            return;
        };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            match self.resolve(r) {
                Some(target) => self.check(target, v, path, errors, depth + 1),
                None => errors.push(format!("{here}: unresolvable $ref {r}")),
            }
            return;
        }
        if let Some(t) = s.get("type") {
            let ok = match t {
                Value::String(name) => type_matches(name, v),
                Value::Array(names) => names
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|n| type_matches(n, v)),
                _ => true,
            };
            if !ok {
                errors.push(format!("{here}: expected type {t}, found {}", type_name(v)));
                return;
            }
        }
        if let Some(c) = s.get("const")
            && c != v
        {
            errors.push(format!("{here}: must be {c}, found {v}"));
        }
        if let Some(Value::Array(options)) = s.get("enum")
            && !options.contains(v)
        {
            errors.push(format!(
                "{here}: {v} is not one of {}",
                Value::Array(options.clone())
            ));
        }
        if let Value::String(text) = v {
            let n = text.chars().count() as u64;
            if s.get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
            {
                errors.push(format!("{here}: string shorter than minLength"));
            }
            if s.get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
            {
                errors.push(format!("{here}: string longer than maxLength"));
            }
        }
        if let Value::Object(o) = v {
            self.check_object(s, o, path, errors, depth);
        }
        if let Value::Array(items) = v {
            if s.get("minItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| (items.len() as u64) < m)
            {
                errors.push(format!("{here}: fewer items than minItems"));
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.check(item_schema, item, &format!("{path}/{i}"), errors, depth + 1);
                }
            }
        }
        if let Some(Value::Array(all)) = s.get("allOf") {
            for sub in all {
                self.check(sub, v, path, errors, depth + 1);
            }
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            if let Some(Value::Array(alternatives)) = s.get(keyword) {
                let results: Vec<Vec<String>> = alternatives
                    .iter()
                    .map(|alt| {
                        let mut e = Vec::new();
                        self.check(alt, v, path, &mut e, depth + 1);
                        e
                    })
                    .collect();
                let passing = results.iter().filter(|e| e.is_empty()).count();
                if passing == 0 {
                    // The closest alternative explains best what is wrong.
                    let closest = results.iter().min_by_key(|e| e.len()).cloned();
                    errors.push(format!("{here}: matches no alternative of {keyword}"));
                    errors.extend(closest.unwrap_or_default());
                } else if exactly_one && passing > 1 {
                    errors.push(format!("{here}: matches {passing} alternatives of oneOf"));
                }
            }
        }
    }

    fn check_object(
        &self,
        s: &Map<String, Value>,
        o: &Map<String, Value>,
        path: &str,
        errors: &mut Vec<String>,
        depth: u32,
    ) {
        let here = if path.is_empty() { "/" } else { path };
        if let Some(Value::Array(required)) = s.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !o.contains_key(name) {
                    errors.push(format!("{here}: missing required property {name}"));
                }
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        for (name, value) in o {
            let child = format!("{path}/{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(prop_schema) => self.check(prop_schema, value, &child, errors, depth + 1),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{here}: unexpected property {name}"));
                    }
                    Some(extra @ Value::Object(_)) => {
                        self.check(extra, value, &child, errors, depth + 1);
                    }
                    _ => {}
                },
            }
        }
    }
}

fn type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn the_subset_reports_each_kind_of_violation_with_its_path() {
        let schema = Schema::parse(
            &json!({
                "type": "object",
                "required": ["kind", "items"],
                "additionalProperties": false,
                "properties": {
                    "kind": { "enum": ["a", "b"] },
                    "items": { "type": "array", "minItems": 1, "items": { "$ref": "#/definitions/item" } }
                },
                "definitions": {
                    "item": { "anyOf": [
                        { "type": "object", "properties": { "type": { "const": "x" } }, "required": ["type"] },
                        { "type": "string", "minLength": 2 }
                    ] }
                }
            })
            .to_string(),
        )
        .unwrap();
        assert!(
            schema
                .validate(&json!({"kind": "a", "items": ["ok", {"type": "x"}]}))
                .is_empty()
        );
        let errors = schema.validate(&json!({"kind": "c", "items": [{"type": "y"}], "extra": 1}));
        let text = errors.join("\n");
        assert!(text.contains("/kind: \"c\" is not one of"), "{text}");
        assert!(text.contains("/items/0: matches no alternative"), "{text}");
        assert!(text.contains("/: unexpected property extra"), "{text}");
        assert!(
            schema
                .validate(&json!({"kind": "a", "items": []}))
                .join("")
                .contains("minItems")
        );
    }
}
