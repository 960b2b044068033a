//! The payloads dev-host builds have the same structure and encodings as the contract
//! fixtures in `contracts/functions-host/` (same keys, nesting and value kinds;
//! GUIDs and times may differ).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use dev_host::config::{FunctionDef, Trigger};
use dev_host::payload::{self, Caller, HttpRequestData, QueueTriggerData, ScheduleStatus};
use serde_json::{Map, Value};

fn contracts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contracts/functions-host")
}

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(contracts().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn example(function: &str) -> FunctionDef {
    let text = std::fs::read_to_string(
        contracts()
            .join("examples")
            .join(function)
            .join("function.json"),
    )
    .unwrap();
    let resolve = |_: &str| Some("0 */15 * * * *".to_string());
    FunctionDef::parse(function, &text, &resolve).unwrap()
}

/// What a string value holds once decoded: the kind of JSON it is, if it is JSON.
fn string_class(s: &str) -> &'static str {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::String(_)) => "json-encoded string",
        Ok(Value::Number(_)) => "json-encoded number",
        Ok(Value::Bool(_)) => "json-encoded bool",
        Ok(Value::Object(_)) => "json object text",
        Ok(Value::Array(_)) => "json array text",
        _ => "plain text",
    }
}

fn compare(ours: &Value, theirs: &Value, path: &str, diffs: &mut Vec<String>) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                diffs.push(format!("{path}.{k}: missing"));
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                diffs.push(format!("{path}.{k}: unexpected"));
            }
            for (k, v) in a {
                if let Some(w) = b.get(k) {
                    compare(v, w, &format!("{path}.{k}"), diffs);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                compare(x, y, &format!("{path}[0]"), diffs);
            } else if a.is_empty() != b.is_empty() {
                diffs.push(format!("{path}: one array is empty"));
            }
        }
        (Value::String(a), Value::String(b)) => {
            if string_class(a) != string_class(b) {
                diffs.push(format!(
                    "{path}: {} ({a:?}) where the fixture has {} ({b:?})",
                    string_class(a),
                    string_class(b)
                ));
            }
        }
        (Value::Null, Value::Null) | (Value::Bool(_), Value::Bool(_)) => {}
        (Value::Number(_), Value::Number(_)) => {}
        (a, b) => diffs.push(format!("{path}: {a} where the fixture has {b}")),
    }
}

fn assert_same_shape(ours: &Value, theirs: &Value) {
    let mut diffs = Vec::new();
    compare(ours, theirs, "$", &mut diffs);
    assert!(
        diffs.is_empty(),
        "differences:\n{}\nours: {ours:#}",
        diffs.join("\n")
    );
}

#[test]
fn the_http_trigger_payload_matches_the_fixture() {
    let theirs = fixture("http-trigger.request.json");
    let f = example("OffboardDevice");
    let Trigger::Http { binding, route, .. } = &f.trigger else {
        panic!("OffboardDevice is http-triggered")
    };
    let body = theirs["Data"]["req"]["Body"]
        .as_str()
        .unwrap()
        .as_bytes()
        .to_vec();
    let request = HttpRequestData {
        method: "POST".into(),
        url: "http://localhost:7071/api/devices/7c1f0b9d5a3e2f4c6b8a9d0e1f2a3b4c5d6e7f80/offboard?source=itsm".into(),
        query: Some("source=itsm".into()),
        headers: vec![
            ("Accept".into(), "*/*".into()),
            ("Host".into(), "localhost:7071".into()),
            ("User-Agent".into(), "curl/8.5.0".into()),
            ("Content-Type".into(), "application/json".into()),
            ("Content-Length".into(), body.len().to_string()),
        ],
        body,
    };
    let params = route
        .matches(&dev_host::routes::split_path(
            "devices/7c1f0b9d5a3e2f4c6b8a9d0e1f2a3b4c5d6e7f80/offboard",
        ))
        .unwrap();
    let ours = payload::http_payload(
        &f.name,
        binding,
        &request,
        &params,
        &Caller::AdminKey,
        Utc::now(),
    );
    assert_same_shape(&ours, &theirs);
    // Exact values where the fixture is exact.
    assert_eq!(ours["Data"]["req"]["Query"], theirs["Data"]["req"]["Query"]);
    assert_eq!(
        ours["Data"]["req"]["Headers"],
        theirs["Data"]["req"]["Headers"]
    );
    assert_eq!(
        ours["Data"]["req"]["Params"],
        theirs["Data"]["req"]["Params"]
    );
    assert_eq!(
        ours["Data"]["req"]["Identities"][0]["Claims"][0]["Value"],
        "Admin"
    );
    let mut our_meta = ours["Metadata"].as_object().unwrap().clone();
    let mut their_meta = theirs["Metadata"].as_object().unwrap().clone();
    our_meta.remove("sys");
    their_meta.remove("sys");
    assert_eq!(our_meta, their_meta);
}

#[test]
fn the_timer_payload_matches_the_fixture() {
    let theirs = fixture("timer-trigger.request.json");
    let f = example("SyncDevices");
    let Trigger::Timer {
        binding, schedule, ..
    } = &f.trigger
    else {
        panic!("SyncDevices is timer-triggered")
    };
    let last = Utc.with_ymd_and_hms(2024, 11, 5, 9, 0, 0).unwrap();
    let status = ScheduleStatus {
        last: Some(last),
        next: schedule.next_after(last).unwrap(),
        last_updated: Some(last),
    };
    let ours = payload::timer_payload(
        &f.name,
        binding,
        schedule.adjust_for_dst(),
        Some(status),
        false,
        Utc::now(),
    );
    assert_same_shape(&ours, &theirs);
    assert_eq!(
        ours["Data"]["timer"]["ScheduleStatus"]["Next"],
        "2024-11-05T09:15:00+00:00"
    );
    assert_eq!(
        ours["Data"]["timer"]["Schedule"],
        theirs["Data"]["timer"]["Schedule"]
    );
}

#[test]
fn a_first_timer_run_has_the_dotnet_minimum_date() {
    let ours = payload::timer_payload(
        "T",
        "timer",
        true,
        Some(ScheduleStatus {
            last: None,
            next: Utc::now(),
            last_updated: None,
        }),
        false,
        Utc::now(),
    );
    assert_eq!(
        ours["Data"]["timer"]["ScheduleStatus"]["Last"],
        "0001-01-01T00:00:00+00:00"
    );
}

#[test]
fn the_queue_payload_matches_the_fixture() {
    let theirs = fixture("queue-trigger.request.json");
    let f = example("SyncTenant");
    let Trigger::Queue {
        binding, binary, ..
    } = &f.trigger
    else {
        panic!("SyncTenant is queue-triggered")
    };
    let text: String = serde_json::from_str(theirs["Data"]["queueItem"].as_str().unwrap()).unwrap();
    let inserted = Utc.with_ymd_and_hms(2024, 11, 5, 9, 15, 1).unwrap();
    let message = QueueTriggerData {
        id: Some("3c9a5e1f-7b2d-4f60-8e4a-0d5b6c7e8f91".into()),
        pop_receipt: Some("AgAAAAMAAAAAAAAAx4gP2m0v2wE=".into()),
        dequeue_count: 1,
        insertion_time: Some(inserted),
        expiration_time: Some(inserted + chrono::Duration::days(7)),
        next_visible_time: Some(inserted + chrono::Duration::seconds(601)),
        bytes: text.into_bytes(),
    };
    let ours = payload::queue_payload(&f.name, binding, *binary, &message, Utc::now());
    assert_same_shape(&ours, &theirs);
    let strip = |v: &Value| {
        let mut m: Map<String, Value> = v["Metadata"].as_object().unwrap().clone();
        m.remove("sys");
        m
    };
    assert_eq!(strip(&ours), strip(&theirs));
    assert_eq!(ours["Data"], theirs["Data"]);
}

#[test]
fn the_comparison_notices_a_single_encoded_string() {
    let mut diffs = Vec::new();
    compare(
        &serde_json::json!({"Id": "abc"}),
        &serde_json::json!({"Id": "\"abc\""}),
        "$",
        &mut diffs,
    );
    assert_eq!(diffs.len(), 1);
}
