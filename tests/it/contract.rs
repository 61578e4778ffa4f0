//! Replays the recording of the original Python gateway and compares every answer.

use serde_json::Value;

use crate::support::TestServer;

/// Fields that hold times: compare their type, not their value.
const TIMES: [&str; 4] = ["timestamp", "last_seen", "join_timestamp", "uptime"];

#[test]
fn answers_the_recorded_scenario_like_the_original() {
    let server = TestServer::start();
    let transcript = include_str!("../data/original-transcript.jsonl");
    let mut last_version = 0;
    for (line, exchange) in transcript.lines().enumerate() {
        let exchange: Value = serde_json::from_str(exchange).unwrap();
        let request = &exchange["request"];
        let expected = &exchange["response"];
        let path = request["path"].as_str().unwrap();
        let (status, body) = match request["method"].as_str().unwrap() {
            "GET" => server.get(path),
            "POST" => match &request["body"] {
                // A string is a raw body, sent as it is (the recording's invalid JSON).
                Value::String(raw) => server.post(path, raw),
                json => server.post_json(path, json),
            },
            other => panic!("method {other}"),
        };
        let context = format!("exchange {} ({} {path})", line + 1, request["method"]);
        assert_eq!(
            u64::from(status),
            expected["status"].as_u64().unwrap(),
            "{context}: {body}"
        );
        compare(&expected["body"], &body, &context, "", &mut last_version);
    }
}

/// Every field of the original must be in ours with the same meaning; ours may have more.
fn compare(expected: &Value, actual: &Value, context: &str, key: &str, last_version: &mut u64) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (k, v) in want {
                let got = have
                    .get(k)
                    .unwrap_or_else(|| panic!("{context}: field {k} missing in {actual}"));
                compare(v, got, context, k, last_version);
            }
        }
        (Value::Array(want), Value::Array(have)) => {
            assert_eq!(want.len(), have.len(), "{context}: {key} has {actual}");
            for (w, h) in want.iter().zip(have) {
                compare(w, h, context, key, last_version);
            }
        }
        _ if TIMES.contains(&key) => {
            assert!(
                actual.is_f64() || actual.is_u64(),
                "{context}: {key} = {actual} is not a time"
            );
        }
        _ if key == "version" && expected.is_string() => {
            assert_eq!(actual.as_str(), Some(cluster_gateway::VERSION), "{context}");
        }
        _ if key == "registry_version" => {
            let v = actual
                .as_u64()
                .unwrap_or_else(|| panic!("{context}: registry_version {actual}"));
            assert!(
                v >= *last_version,
                "{context}: registry_version went back from {last_version} to {v}"
            );
            *last_version = v;
        }
        _ if key == "error"
            && expected
                .as_str()
                .is_some_and(|e| e.contains("invalid literal for int()")) =>
        {
            let error = actual.as_str().unwrap_or_default();
            assert!(error.starts_with("Invalid node_id"), "{context}: {error}");
        }
        _ => assert_eq!(expected, actual, "{context}: {key}"),
    }
}
