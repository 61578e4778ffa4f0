//! Fuzzes the request path: method, URL and body through the same dispatch the server uses
//! (`http::handle`), against one gateway whose registry accumulates state across inputs.
//!
//! Input layout: one or more requests separated by a `---` line, so that one input can hold a
//! sequence (register, set the leader, remove it); in each, the first line is the method, the
//! second the URL, the rest the body.
//!
//! Checked on every input:
//! - no answer is a 5xx (a 500 is a bug, by the README; nothing here is ever busy);
//! - every answer is JSON, and an error answer (4xx) says why in `error`;
//! - bad input changes nothing: after a 4xx, or a 200 that refuses (`failed`, `not_found`),
//!   the registry's version, counters, leader and bootstrap state are as they were;
//! - a leader is always a registered node, after the request and after a sweep.

#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cluster_gateway::server::gateway::Gateway;
use cluster_gateway::server::http::{self, Request};
use cluster_gateway::server::registry::{Liveness, Now, Registry};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let liveness = Liveness {
            suspect_after: Duration::from_millis(2),
            node_timeout: Duration::from_millis(5),
        };
        Gateway::new(Registry::new(liveness), Duration::from_millis(1))
    })
}

/// Everything a request may change, without the clock (`uptime`).
fn state(gateway: &Gateway) -> Value {
    let mut stats = serde_json::to_value(gateway.stats()).expect("stats serialise");
    stats.as_object_mut().expect("stats are an object").remove("uptime");
    stats
}

/// A leader is a registered node: the list the gateway serves holds it.
fn check_leader(gateway: &Gateway, when: &str) {
    let stats = gateway.stats();
    if let Some(leader) = stats.leader_id {
        let list = gateway.list();
        assert!(
            list.node(leader).is_some(),
            "{when}: leader {leader} is not a registered node"
        );
        assert_eq!(list.leader, Some(leader), "{when}: the list shows another leader");
    }
}

fuzz_target!(|data: &[u8]| {
    // One input at a time: the before/after comparison must not see another input's change.
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let gateway = gateway();
    for request in split(data).take(16) {
        check(gateway, request);
    }
    // Let suspicion and reaping run now and then, so lists see every status.
    if data.len() % 7 == 0 {
        gateway.sweep(Now::system());
        check_leader(gateway, "after a sweep");
    }
});

/// The requests of one input, split at `\n---\n`.
fn split(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    const SEPARATOR: &[u8] = b"\n---\n";
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                let request = &data[..at];
                data = &data[at + SEPARATOR.len()..];
                Some(request)
            }
            None => Some(std::mem::take(&mut data)),
        }
    })
}

/// Sends one request and checks the answer and the invariants.
fn check(gateway: &Gateway, data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let before = state(gateway);
    let answer = http::handle(gateway, &Request {
        method: &method,
        url: &url,
        body,
        headers: &[],
    });

    assert!(
        (200..500).contains(&answer.status),
        "status {} for {method} {url}",
        answer.status
    );
    let bytes = answer.body.to_vec();
    assert_eq!(bytes.len(), answer.body.len());
    if answer.content_type != http::JSON {
        // The dashboard page and the metrics, the answers that are not JSON.
        assert!(
            answer.content_type.starts_with("text/html")
                || answer.content_type.starts_with("text/plain"),
            "{method} {url}"
        );
        assert_eq!(answer.status, 200, "{method} {url}");
        assert_eq!(state(gateway), before, "{method} {url} changed the registry");
        return;
    }
    let json: Value = serde_json::from_slice(&bytes).expect("the body is JSON");
    let refused = answer.status >= 400
        || json
            .get("status")
            .is_some_and(|s| s == "failed" || s == "not_found");
    if answer.status >= 400 {
        assert!(json["error"].is_string(), "an error without text: {json}");
    }
    if refused {
        assert_eq!(
            state(gateway),
            before,
            "a refused {method} {url} changed the registry: {json}"
        );
    }
    check_leader(gateway, "after a request");
}
