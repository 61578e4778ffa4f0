//! Fuzzes the request path: method, URL and body through the same dispatch the server uses
//! (`http::handle`), against one gateway whose registry accumulates state across inputs.
//!
//! Input layout: the first line is the method, the second the URL, the rest the body.

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use cluster_gateway::gateway::Gateway;
use cluster_gateway::http::{self, Request};
use cluster_gateway::registry::{Liveness, Now, Registry};
use libfuzzer_sys::fuzz_target;

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

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let gateway = gateway();
    let answer = http::handle(gateway, &Request { method: &method, url: &url, body, headers: &[] });
    // Every answer is a known status with a JSON body.
    assert!((200..600).contains(&answer.status), "status {}", answer.status);
    let bytes = answer.body.to_vec();
    assert_eq!(bytes.len(), answer.body.len());
    let json: serde_json::Value = serde_json::from_slice(&bytes).expect("the body is JSON");
    if answer.status >= 400 {
        assert!(json["error"].is_string(), "an error without text: {json}");
    }
    // Let suspicion and reaping run now and then, so lists see every status.
    if data.len() % 7 == 0 {
        gateway.sweep(Now::system());
    }
});
