//! Reading JSON request bodies field by field, so a 400 names the field that is wrong.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::host::HttpRequestData;

/// A JSON object body, with typed accessors that fail with a 400 naming the field.
pub struct JsonBody {
    fields: Map<String, Value>,
}

impl JsonBody {
    /// Parses the request body as a JSON object of at most `limit` bytes.
    ///
    /// # Errors
    /// 413 when too large, 400 when missing, not JSON or not an object.
    pub fn parse(req: &HttpRequestData, limit: usize) -> Result<Self, ApiError> {
        let raw = req.body.as_deref().unwrap_or_default();
        if raw.len() > limit {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body is larger than {limit} bytes"
            )));
        }
        if raw.trim().is_empty() {
            return Err(ApiError::bad_request(
                "MissingBody",
                "a JSON object body is required",
            ));
        }
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(fields)) => Ok(Self { fields }),
            Ok(_) => Err(ApiError::bad_request(
                "InvalidBody",
                "the body must be a JSON object",
            )),
            Err(e) => Err(ApiError::bad_request(
                "InvalidJson",
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }

    /// Refuses fields outside `known`, so a typo (`machineID`) is not silently ignored.
    ///
    /// # Errors
    /// 400 naming the first unknown field.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.fields.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(
                "UnknownField",
                format!(
                    "unknown field '{}'; expected one of: {}",
                    truncate(k),
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// An optional string (absent or null → `None`; empty or blank counts as absent).
    ///
    /// # Errors
    /// 400 when present with another type.
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(ApiError::bad_request(
                "InvalidField",
                format!("{name} must be a string"),
            )),
        }
    }

    /// A required string.
    ///
    /// # Errors
    /// 400 when missing, empty or not a string.
    pub fn str(&self, name: &str) -> Result<String, ApiError> {
        self.opt_str(name)?
            .ok_or_else(|| ApiError::bad_request("MissingField", format!("{name} is required")))
    }

    /// An optional boolean.
    ///
    /// # Errors
    /// 400 when present with another type.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::bad_request(
                "InvalidField",
                format!("{name} must be true or false"),
            )),
        }
    }

    /// An optional list of strings, given as an array or a comma-separated string.
    ///
    /// # Errors
    /// 400 when present with another type.
    pub fn opt_list(&self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(
                s.split([',', ';'])
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "InvalidField",
                        format!("{name} must be a list of strings"),
                    )
                }),
            Some(_) => Err(ApiError::bad_request(
                "InvalidField",
                format!("{name} must be a list of strings"),
            )),
        }
    }

    /// Whether `name` is there and a JSON array.
    pub fn is_array(&self, name: &str) -> bool {
        self.fields.get(name).is_some_and(Value::is_array)
    }

    /// A field as given (absent or null → `None`), for a nested object.
    pub fn opt_value(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.get(name).is_some_and(|v| !v.is_null())
    }
}

/// Caps echoed user input in messages.
pub fn truncate(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}
