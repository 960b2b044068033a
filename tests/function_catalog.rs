//! Contract test: `functions/*/function.json` and the handler's catalog describe the same
//! functions, triggers and bindings, and `host.json` is set up for a custom handler.

use std::collections::BTreeSet;
use std::path::PathBuf;

use defender_ops::functions::{AuthLevel, CATALOG, Trigger};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn function_folders() -> BTreeSet<String> {
    std::fs::read_dir(root().join("functions"))
        .expect("functions/ exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("function.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_function_folder_has_a_handler_and_every_handler_has_a_folder() {
    let folders = function_folders();
    let catalog: BTreeSet<String> = CATALOG.iter().map(|s| s.name.to_owned()).collect();
    assert_eq!(folders, catalog);
    // DESIGN §2's twelve and §9's additions: Callers (§9.1) and Console (§9.5).
    for name in ["Health", "Tenants", "Devices", "Callers", "Console"] {
        assert!(catalog.contains(name), "{name} is missing");
    }
    assert_eq!(
        catalog.len(),
        14,
        "DESIGN §2 lists twelve functions; §9.1 adds Callers, §9.5 Console"
    );
}

#[test]
fn bindings_in_function_json_match_the_catalog() {
    for spec in CATALOG {
        let fj = read_json(
            &root()
                .join("functions")
                .join(spec.name)
                .join("function.json"),
        );
        let bindings = fj["bindings"].as_array().expect("bindings array");
        let inputs: Vec<&Value> = bindings.iter().filter(|b| b["direction"] == "in").collect();
        assert_eq!(
            inputs.len(),
            1,
            "{}: exactly one input (the trigger)",
            spec.name
        );
        let trigger = inputs[0];
        assert_eq!(
            trigger["name"], spec.trigger_binding,
            "{}: trigger binding name",
            spec.name
        );
        match spec.trigger {
            Trigger::Http {
                methods,
                route,
                auth,
            } => {
                assert_eq!(trigger["type"], "httpTrigger", "{}", spec.name);
                assert_eq!(trigger["route"], route, "{}", spec.name);
                let declared: Vec<&str> = trigger["methods"]
                    .as_array()
                    .expect("methods")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert_eq!(declared, methods, "{}", spec.name);
                let level = match auth {
                    AuthLevel::Anonymous => "anonymous",
                    AuthLevel::Function => "function",
                    AuthLevel::Admin => "admin",
                };
                assert_eq!(trigger["authLevel"], level, "{}", spec.name);
            }
            Trigger::Timer { schedule } => {
                assert_eq!(trigger["type"], "timerTrigger", "{}", spec.name);
                assert_eq!(trigger["schedule"], schedule, "{}", spec.name);
            }
            Trigger::Queue { queue } => {
                assert_eq!(trigger["type"], "queueTrigger", "{}", spec.name);
                assert_eq!(trigger["queueName"], queue, "{}", spec.name);
                assert_eq!(
                    trigger["connection"], "AzureWebJobsStorage",
                    "{}",
                    spec.name
                );
            }
        }
        let outputs: Vec<&Value> = bindings
            .iter()
            .filter(|b| b["direction"] == "out")
            .collect();
        assert_eq!(outputs.len(), spec.outputs.len(), "{}: outputs", spec.name);
        for (name, queue) in spec.outputs {
            let b = outputs
                .iter()
                .find(|b| b["name"] == *name)
                .unwrap_or_else(|| panic!("{}: output binding {name} missing", spec.name));
            match queue {
                None => assert_eq!(b["type"], "http", "{}: {name}", spec.name),
                Some(q) => {
                    assert_eq!(b["type"], "queue", "{}: {name}", spec.name);
                    assert_eq!(b["queueName"], *q, "{}: {name}", spec.name);
                    assert_eq!(
                        b["connection"], "AzureWebJobsStorage",
                        "{}: {name}",
                        spec.name
                    );
                }
            }
        }
    }
}

#[test]
fn binding_and_function_names_follow_the_hosts_naming_rules() {
    for spec in CATALOG {
        let ok_fn = spec.name.len() <= 128
            && spec
                .name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && spec
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        assert!(ok_fn, "{}", spec.name);
        let fj = read_json(
            &root()
                .join("functions")
                .join(spec.name)
                .join("function.json"),
        );
        for b in fj["bindings"].as_array().expect("bindings") {
            let name = b["name"].as_str().expect("name");
            assert!(
                name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "binding name {name} has characters the host refuses"
            );
        }
    }
}

#[test]
fn host_json_runs_the_handler_in_payload_mode_with_queue_retries() {
    let host = read_json(&root().join("host.json"));
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "handler"
    );
    assert_eq!(host["customHandler"]["enableForwardingHttpRequest"], false);
    assert_eq!(
        host["extensionBundle"]["id"],
        "Microsoft.Azure.Functions.ExtensionBundle"
    );
    assert_eq!(host["extensionBundle"]["version"], "[4.*, 5.0.0)");
    assert_eq!(host["extensions"]["queues"]["maxDequeueCount"], 5);
    // The worker records `Failed` on the last delivery instead of leaving it to the poison
    // queue: it must know which delivery is the last.
    assert_eq!(
        host["extensions"]["queues"]["maxDequeueCount"],
        defender_ops::functions::offboard_worker::MAX_DEQUEUE_COUNT
    );
    assert!(host["extensions"]["queues"]["visibilityTimeout"].is_string());
    assert_eq!(host["extensions"]["http"]["routePrefix"], "api");
    assert!(
        host["functionTimeout"].is_string(),
        "an explicit functionTimeout"
    );
}

#[test]
fn the_sample_settings_list_every_setting_the_handler_reads() {
    let sample = read_json(&root().join("local.settings.sample.json"));
    let values = sample["Values"].as_object().expect("Values");
    for name in defender_ops::config::SETTING_NAMES {
        // Identity-based storage and the port are alternatives/host-provided, not sample values.
        if name.starts_with("AzureWebJobsStorage__") || *name == "FUNCTIONS_CUSTOMHANDLER_PORT" {
            continue;
        }
        assert!(
            values.contains_key(*name),
            "local.settings.sample.json lacks {name}"
        );
    }
    assert_eq!(values["FUNCTIONS_WORKER_RUNTIME"], "custom");
}
