//! Entities with typed (Edm) properties, and their JSON (minimal metadata) encoding.
//!
//! Plain JSON would lose types: the service stores a JSON number as `Edm.Double` and a string
//! as `Edm.String`. Int64, DateTime, Guid and Binary therefore travel annotated
//! (`"Prop@odata.type": "Edm.Int64"`), Int64 as a string so that all 64 bits survive.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::TableError;

/// A property value with its Edm type.
#[derive(Debug, Clone, PartialEq)]
pub enum EdmValue {
    String(String),
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Double(f64),
    /// Stored with 100 ns precision (the service's ticks); finer digits are truncated on write.
    DateTime(OffsetDateTime),
    Guid(Uuid),
    Binary(Vec<u8>),
}

impl EdmValue {
    /// The Edm type name, e.g. `Edm.Int64`.
    #[must_use]
    pub fn edm_type(&self) -> &'static str {
        match self {
            Self::String(_) => "Edm.String",
            Self::Bool(_) => "Edm.Boolean",
            Self::Int32(_) => "Edm.Int32",
            Self::Int64(_) => "Edm.Int64",
            Self::Double(_) => "Edm.Double",
            Self::DateTime(_) => "Edm.DateTime",
            Self::Guid(_) => "Edm.Guid",
            Self::Binary(_) => "Edm.Binary",
        }
    }
}

macro_rules! edm_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for EdmValue {
            fn from(v: $t) -> Self {
                Self::$v(v.into())
            }
        }
    )*};
}
edm_from!(String => String, &str => String, bool => Bool, i32 => Int32, i64 => Int64,
    f64 => Double, OffsetDateTime => DateTime, Uuid => Guid, Vec<u8> => Binary);

impl From<&String> for EdmValue {
    fn from(v: &String) -> Self {
        Self::String(v.clone())
    }
}

/// Conversion out of an [`EdmValue`] for [`Entity::require`] and [`Entity::optional`].
pub trait FromEdm: Sized {
    /// The value as `Self`, or `None` when the Edm type does not fit.
    fn from_edm(value: &EdmValue) -> Option<Self>;
}

macro_rules! from_edm {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {$(
        impl FromEdm for $t {
            fn from_edm($v: &EdmValue) -> Option<Self> {
                $e
            }
        }
    )*};
}
from_edm!(
    String => |v| match v { EdmValue::String(s) => Some(s.clone()), _ => None },
    bool => |v| match v { EdmValue::Bool(b) => Some(*b), _ => None },
    i32 => |v| match v { EdmValue::Int32(i) => Some(*i), _ => None },
    i64 => |v| match v { EdmValue::Int64(i) => Some(*i), EdmValue::Int32(i) => Some(i64::from(*i)), _ => None },
    f64 => |v| match v { EdmValue::Double(d) => Some(*d), _ => None },
    OffsetDateTime => |v| match v { EdmValue::DateTime(d) => Some(*d), _ => None },
    Uuid => |v| match v { EdmValue::Guid(g) => Some(*g), _ => None },
    Vec<u8> => |v| match v { EdmValue::Binary(b) => Some(b.clone()), _ => None },
);

/// An entity's opaque version, sent back in `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Wraps an ETag as the service returned it.
    #[must_use]
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The ETag as the service returned it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One row of a table: keys, system properties and typed properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entity {
    pub partition_key: String,
    pub row_key: String,
    /// Set on entities read from the service; use it with [`super::IfMatch::Etag`].
    pub etag: Option<ETag>,
    /// Service-maintained last-modified time; ignored on writes.
    pub timestamp: Option<OffsetDateTime>,
    /// Properties other than `PartitionKey`, `RowKey` and `Timestamp`.
    pub props: BTreeMap<String, EdmValue>,
}

impl Entity {
    /// An entity with keys and no properties.
    #[must_use]
    pub fn new(partition_key: impl Into<String>, row_key: impl Into<String>) -> Self {
        Self {
            partition_key: partition_key.into(),
            row_key: row_key.into(),
            ..Self::default()
        }
    }

    /// Builder: sets a property.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<EdmValue>) -> Self {
        self.set(name, value);
        self
    }

    /// Builder: sets a property when `value` is `Some` (a missing column stays missing).
    #[must_use]
    pub fn with_opt<V: Into<EdmValue>>(
        mut self,
        name: impl Into<String>,
        value: Option<V>,
    ) -> Self {
        if let Some(v) = value {
            self.set(name, v);
        }
        self
    }

    /// Sets a property, replacing any previous value.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<EdmValue>) {
        self.props.insert(name.into(), value.into());
    }

    /// A property as stored.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&EdmValue> {
        self.props.get(name)
    }

    /// A string property; `None` when absent or of another type.
    #[must_use]
    pub fn get_str(&self, name: &str) -> Option<&str> {
        match self.props.get(name)? {
            EdmValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean property; `None` when absent or of another type.
    #[must_use]
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        self.props.get(name).and_then(bool::from_edm)
    }

    /// An Int32 property; `None` when absent or of another type.
    #[must_use]
    pub fn get_i32(&self, name: &str) -> Option<i32> {
        self.props.get(name).and_then(i32::from_edm)
    }

    /// An Int64 (or widened Int32) property; `None` when absent or of another type.
    #[must_use]
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        self.props.get(name).and_then(i64::from_edm)
    }

    /// A Double property; `None` when absent or of another type.
    #[must_use]
    pub fn get_f64(&self, name: &str) -> Option<f64> {
        self.props.get(name).and_then(f64::from_edm)
    }

    /// A DateTime property; `None` when absent or of another type.
    #[must_use]
    pub fn get_datetime(&self, name: &str) -> Option<OffsetDateTime> {
        self.props.get(name).and_then(OffsetDateTime::from_edm)
    }

    /// A Guid property; `None` when absent or of another type.
    #[must_use]
    pub fn get_guid(&self, name: &str) -> Option<Uuid> {
        self.props.get(name).and_then(Uuid::from_edm)
    }

    /// A Binary property; `None` when absent or of another type.
    #[must_use]
    pub fn get_binary(&self, name: &str) -> Option<&[u8]> {
        match self.props.get(name)? {
            EdmValue::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// A property that must be present with a fitting type.
    ///
    /// # Errors
    /// [`TableError::Decode`] naming the property when it is absent or of another type.
    pub fn require<T: FromEdm>(&self, name: &str) -> Result<T, TableError> {
        self.optional(name)?
            .ok_or_else(|| TableError::Decode(format!("property {name} is missing")))
    }

    /// A property that may be absent, but has a fitting type when present.
    ///
    /// # Errors
    /// [`TableError::Decode`] naming the property when it has another type.
    pub fn optional<T: FromEdm>(&self, name: &str) -> Result<Option<T>, TableError> {
        self.props
            .get(name)
            .map(|v| {
                T::from_edm(v).ok_or_else(|| {
                    TableError::Decode(format!(
                        "property {name} has the unexpected type {}",
                        v.edm_type()
                    ))
                })
            })
            .transpose()
    }
}

/// A domain row stored in a table: other modules map their structs through it.
pub trait TableEntity: Sized {
    /// The row to write (no ETag needed; conditional writes take it separately).
    fn to_entity(&self) -> Entity;

    /// The domain value of a row read from the table.
    ///
    /// # Errors
    /// [`TableError::Decode`] when a property is missing or malformed.
    fn from_entity(entity: Entity) -> Result<Self, TableError>;
}

const RESERVED: [&str; 3] = ["PartitionKey", "RowKey", "Timestamp"];

/// Formats a DateTime as the service stores it: UTC, 7 fractional digits (100 ns ticks).
pub(crate) fn format_datetime(dt: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
    );
    dt.to_offset(time::UtcOffset::UTC)
        .format(&FORMAT)
        .unwrap_or_default()
}

/// Serializes an entity as the JSON body of an insert or update.
pub(crate) struct EntityBody<'a>(pub &'a Entity);

impl serde::Serialize for EntityBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("PartitionKey", &e.partition_key)?;
        map.serialize_entry("RowKey", &e.row_key)?;
        for (name, value) in e
            .props
            .iter()
            .filter(|(n, _)| !RESERVED.contains(&n.as_str()))
        {
            let annotate = match value {
                EdmValue::String(s) => {
                    map.serialize_entry(name, s)?;
                    false
                }
                EdmValue::Bool(b) => {
                    map.serialize_entry(name, b)?;
                    false
                }
                EdmValue::Int32(i) => {
                    map.serialize_entry(name, i)?;
                    false
                }
                EdmValue::Int64(i) => {
                    map.serialize_entry(name, &i.to_string())?;
                    true
                }
                EdmValue::Double(d) if d.is_finite() => {
                    map.serialize_entry(name, d)?;
                    true
                }
                EdmValue::Double(d) => {
                    let text = if d.is_nan() {
                        "NaN"
                    } else if *d > 0.0 {
                        "Infinity"
                    } else {
                        "-Infinity"
                    };
                    map.serialize_entry(name, text)?;
                    true
                }
                EdmValue::DateTime(dt) => {
                    map.serialize_entry(name, &format_datetime(*dt))?;
                    true
                }
                EdmValue::Guid(g) => {
                    map.serialize_entry(name, &g.hyphenated().to_string())?;
                    true
                }
                EdmValue::Binary(b) => {
                    map.serialize_entry(
                        name,
                        &base64::engine::general_purpose::STANDARD.encode(b),
                    )?;
                    true
                }
            };
            if annotate {
                map.serialize_entry(&format!("{name}@odata.type"), value.edm_type())?;
            }
        }
        map.end()
    }
}

/// Encodes an entity as a JSON body.
pub(crate) fn encode_entity(entity: &Entity) -> Result<Vec<u8>, TableError> {
    serde_json::to_vec(&EntityBody(entity)).map_err(|e| TableError::Decode(e.to_string()))
}

/// Decodes one entity of a minimal-metadata answer; `etag` is the ETag header when the body
/// has no `odata.etag`.
pub(crate) fn decode_entity(
    mut obj: Map<String, Value>,
    etag: Option<ETag>,
) -> Result<Entity, TableError> {
    let take_str = |obj: &mut Map<String, Value>, key: &str| match obj.remove(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let mut entity = Entity {
        partition_key: take_str(&mut obj, "PartitionKey").unwrap_or_default(),
        row_key: take_str(&mut obj, "RowKey").unwrap_or_default(),
        etag: take_str(&mut obj, "odata.etag").map(ETag).or(etag),
        timestamp: None,
        props: BTreeMap::new(),
    };
    if let Some(ts) = take_str(&mut obj, "Timestamp") {
        entity.timestamp = Some(parse_datetime("Timestamp", &ts)?);
    }
    let mut types = BTreeMap::new();
    obj.retain(|k, v| match k.strip_suffix("@odata.type") {
        Some(name) => {
            if let Value::String(t) = v {
                types.insert(name.to_owned(), std::mem::take(t));
            }
            false
        }
        None => !k.starts_with("odata.") && !k.contains('@'),
    });
    for (name, value) in obj {
        let edm = decode_value(&name, value, types.get(&name).map(String::as_str))?;
        entity.props.insert(name, edm);
    }
    Ok(entity)
}

fn decode_value(name: &str, value: Value, edm_type: Option<&str>) -> Result<EdmValue, TableError> {
    let bad = || {
        TableError::Decode(format!(
            "property {name}: value does not match {}",
            edm_type.unwrap_or("its JSON type")
        ))
    };
    Ok(match (edm_type, value) {
        (None | Some("Edm.String"), Value::String(s)) => EdmValue::String(s),
        (None | Some("Edm.Boolean"), Value::Bool(b)) => EdmValue::Bool(b),
        (None, Value::Number(n)) => match n.as_i64() {
            Some(i) => i32::try_from(i).map_or(EdmValue::Int64(i), EdmValue::Int32),
            None => EdmValue::Double(n.as_f64().ok_or_else(bad)?),
        },
        (Some("Edm.Int32"), Value::Number(n)) => EdmValue::Int32(
            n.as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        (Some("Edm.Int64"), Value::String(s)) => EdmValue::Int64(s.parse().map_err(|_| bad())?),
        (Some("Edm.Int64"), Value::Number(n)) => EdmValue::Int64(n.as_i64().ok_or_else(bad)?),
        (Some("Edm.Double"), Value::Number(n)) => EdmValue::Double(n.as_f64().ok_or_else(bad)?),
        (Some("Edm.Double"), Value::String(s)) => EdmValue::Double(match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" | "INF" => f64::INFINITY,
            "-Infinity" | "-INF" => f64::NEG_INFINITY,
            other => other.parse().map_err(|_| bad())?,
        }),
        (Some("Edm.DateTime"), Value::String(s)) => EdmValue::DateTime(parse_datetime(name, &s)?),
        (Some("Edm.Guid"), Value::String(s)) => {
            EdmValue::Guid(Uuid::parse_str(&s).map_err(|_| bad())?)
        }
        (Some("Edm.Binary"), Value::String(s)) => EdmValue::Binary(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| bad())?,
        ),
        _ => return Err(bad()),
    })
}

fn parse_datetime(name: &str, s: &str) -> Result<OffsetDateTime, TableError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| {
        TableError::Decode(format!(
            "property {name}: {s:?} is not an RFC 3339 date-time"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn round_trip(entity: &Entity) -> Entity {
        let body = encode_entity(entity).expect("encodes");
        let Value::Object(obj) = serde_json::from_slice(&body).expect("json") else {
            panic!("not an object")
        };
        decode_entity(obj, None).expect("decodes")
    }

    #[test]
    fn every_edm_type_is_annotated_as_the_service_needs() {
        let e = Entity::new("p", "r")
            .with("S", "text")
            .with("B", true)
            .with("I", 7)
            .with("L", 9_007_199_254_740_993_i64)
            .with("D", 1.5)
            .with("T", datetime!(2024-02-29 23:59:59.123_456_7 UTC))
            .with("G", Uuid::nil())
            .with("X", vec![0_u8, 255]);
        let json: Value =
            serde_json::from_slice(&encode_entity(&e).expect("encodes")).expect("json");
        assert_eq!(json["L"], "9007199254740993");
        assert_eq!(json["L@odata.type"], "Edm.Int64");
        assert_eq!(json["T"], "2024-02-29T23:59:59.1234567Z");
        assert_eq!(json["T@odata.type"], "Edm.DateTime");
        assert_eq!(json["G@odata.type"], "Edm.Guid");
        assert_eq!(json["X"], "AP8=");
        assert_eq!(json["X@odata.type"], "Edm.Binary");
        assert_eq!(json["I"], 7);
        assert!(json.get("I@odata.type").is_none());
        assert!(json.get("S@odata.type").is_none());
        assert_eq!(round_trip(&e), e);
    }

    #[test]
    fn datetimes_are_utc_and_truncated_to_ticks() {
        let local = datetime!(2024-01-01 01:00:00.123_456_789 +01:00);
        assert_eq!(format_datetime(local), "2024-01-01T00:00:00.1234567Z");
    }

    #[test]
    fn unannotated_numbers_are_inferred_and_special_doubles_survive() {
        let obj = serde_json::json!({
            "PartitionKey": "p", "RowKey": "r", "odata.etag": "W/\"x\"",
            "Timestamp": "2024-01-01T00:00:00.1234567Z",
            "Small": 5, "Big": 5_000_000_000_i64, "F": 2.5,
            "N": "NaN", "N@odata.type": "Edm.Double", "Whole": 3, "Whole@odata.type": "Edm.Double"
        });
        let Value::Object(obj) = obj else { panic!() };
        let e = decode_entity(obj, None).expect("decodes");
        assert_eq!(e.etag.as_ref().map(ETag::as_str), Some("W/\"x\""));
        assert_eq!(
            e.timestamp,
            Some(datetime!(2024-01-01 00:00:00.123_456_7 UTC))
        );
        assert_eq!(e.get("Small"), Some(&EdmValue::Int32(5)));
        assert_eq!(e.get_i64("Small"), Some(5));
        assert_eq!(e.get_i64("Big"), Some(5_000_000_000));
        assert_eq!(e.get_f64("F"), Some(2.5));
        assert!(e.get_f64("N").is_some_and(f64::is_nan));
        assert_eq!(e.get_f64("Whole"), Some(3.0));
        assert!(!e.props.contains_key("N@odata.type"));
    }

    #[test]
    fn mismatched_annotations_are_decode_errors() {
        let obj = serde_json::json!({"PartitionKey": "p", "RowKey": "r", "L": "12x", "L@odata.type": "Edm.Int64"});
        let Value::Object(obj) = obj else { panic!() };
        assert!(matches!(
            decode_entity(obj, None),
            Err(TableError::Decode(_))
        ));
    }

    #[test]
    fn require_and_optional_name_the_property() {
        let e = Entity::new("p", "r").with("Count", "seven");
        let err = e.require::<i64>("Count").expect_err("wrong type");
        assert!(err.to_string().contains("Count"), "{err}");
        assert!(e.require::<String>("Missing").is_err());
        assert_eq!(e.optional::<i64>("Missing").expect("absent is fine"), None);
        assert_eq!(e.require::<String>("Count").expect("present"), "seven");
    }

    #[test]
    fn reserved_names_in_props_are_not_sent_twice() {
        let e = Entity::new("p", "r").with("RowKey", "other");
        let json: Value =
            serde_json::from_slice(&encode_entity(&e).expect("encodes")).expect("json");
        assert_eq!(json["RowKey"], "r");
    }
}
