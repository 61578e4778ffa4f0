//! Issue 22, item 4: answers a client can read and a server can afford. The registry's memory
//! budget (`--max-registry-bytes`, 507 past it), and every list within what a client reads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_gateway::GatewayClient;
use cluster_gateway::api::limits;
use serde_json::{Value, json};

use crate::support::{FakeGateway, TestServer, agent};

/// A node at the per-node limits: 64 capabilities of 128 bytes, 16 KiB of metadata.
fn at_the_limits(node_id: u64) -> Value {
    let capabilities: Vec<String> = (0..limits::CAPABILITIES)
        .map(|i| format!("{i:03}{}", "c".repeat(limits::CAPABILITY_BYTES - 3)))
        .collect();
    // `{"blob":"..."}`: 11 bytes around the value.
    let blob = "m".repeat(limits::METADATA_BYTES - 11);
    json!({
        "node_id": node_id,
        "ip_address": "10.1.2.3",
        "port": 7000,
        "capabilities": capabilities,
        "metadata": {"blob": blob},
    })
}

/// A node half way to the limits (about 12 KB as a list writes it).
fn fat(node_id: u64) -> Value {
    let mut node = at_the_limits(node_id);
    node["metadata"] = json!({"blob": "f".repeat(4000)});
    node
}

/// `POST /register` asking for the minimal answer: status and body.
fn register(url: &str, body: &Value) -> (u16, Value) {
    let response = agent()
        .post(format!("{url}/register"))
        .header("Prefer", "return=minimal")
        .send(body.to_string().as_bytes());
    let mut response = response.expect("the gateway answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A sample of `/metrics`.
fn metric(server: &TestServer, name: &str) -> u64 {
    let text = agent()
        .get(format!("{}/metrics", server.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

/// The plain text of `GET /nodes?status=all` (no compression asked).
fn list_text(server: &TestServer) -> String {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .write_all(b"GET /nodes?status=all HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Registers `node(id)` for ids from `first` on until the gateway answers 507; returns the
/// first refused id and the refusal's body.
fn fill(url: &str, first: u64, node: impl Fn(u64) -> Value) -> (u64, Value) {
    for id in first..first + 5_000 {
        match register(url, &node(id)) {
            (200, _) => continue,
            (507, body) => return (id, body),
            (status, body) => panic!("node {id}: {status} {body}"),
        }
    }
    panic!("the budget never refused a node");
}

#[test]
fn a_registration_past_the_budget_is_refused_with_507_and_changes_nothing() {
    let budget = 256 * 1024;
    let server = TestServer::with(|c| c.max_registry_bytes = budget);
    assert_eq!(
        metric(&server, "cluster_gateway_max_registry_bytes"),
        budget
    );
    assert_eq!(metric(&server, "cluster_gateway_registry_bytes"), 0);

    let (refused, error) = fill(&server.url, 1, fat);
    assert!(refused > 10, "only {} fat nodes fit", refused - 1);
    let message = error["error"].as_str().unwrap();
    assert!(message.contains("--max-registry-bytes"), "{message}");
    let used = metric(&server, "cluster_gateway_registry_bytes");
    assert!(used <= budget, "{used} past {budget}");

    // Then small nodes until even one of them does not fit.
    let (small_refused, _) = fill(&server.url, 1_000, crate::support::registration);
    let used = metric(&server, "cluster_gateway_registry_bytes");
    let (_, before) = server.get("/nodes?status=all");
    let version = before["registry_version"].as_u64().unwrap();

    // Refused and unchanged: a new node, and a known one that would grow.
    let (status, _) = register(&server.url, &fat(refused));
    assert_eq!(status, 507);
    let mut grown = fat(1);
    grown["metadata"] = json!({"more": "g".repeat(2000)});
    let (status, body) = register(&server.url, &grown);
    assert_eq!(status, 507, "{body}");
    let (_, after) = server.get("/nodes?status=all");
    assert_eq!(after, before, "a refused registration changed the list");
    assert_eq!(after["registry_version"].as_u64(), Some(version));
    assert_eq!(metric(&server, "cluster_gateway_registry_bytes"), used);
    let ids: Vec<u64> = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_u64().unwrap())
        .collect();
    assert!(!ids.contains(&refused) && !ids.contains(&small_refused));

    // The nodes already there go on: heartbeats, and registrations that do not grow.
    for id in [1, 2, 1_000] {
        let (status, body) = server.post("/heartbeat", &json!({"node_id": id}).to_string());
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("acknowledged"))
        );
    }
    let (status, body) = register(&server.url, &fat(1));
    assert_eq!(status, 200, "{body}");

    // The list never takes more than the registry accounts.
    let text = list_text(&server);
    assert!(
        text.len() as u64 <= used + 100,
        "a list of {} bytes, {used} accounted",
        text.len()
    );

    // Room comes back when a node leaves.
    let (status, _) = server.post("/remove", &json!({"node_id": 2}).to_string());
    assert_eq!(status, 200);
    assert!(metric(&server, "cluster_gateway_registry_bytes") < used);
    let (status, body) = register(&server.url, &fat(refused));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_full_registry_of_nodes_at_the_per_node_limits_is_read_by_the_client_and_the_cli() {
    let budget = 8 * 1024 * 1024;
    let server = TestServer::with(|c| c.max_registry_bytes = budget);
    // Four registering threads, until the budget refuses.
    let refused = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (url, refused) = (&server.url, Arc::clone(&refused));
            scope.spawn(move || {
                let (id, _) = fill(url, 1 + t * 10_000, at_the_limits);
                refused.lock().unwrap().push(id);
            });
        }
    });
    let used = metric(&server, "cluster_gateway_registry_bytes");
    let text = list_text(&server);
    let listed = serde_json::from_str::<Value>(&text).unwrap()["nodes"]
        .as_array()
        .unwrap()
        .len();
    assert!(listed > 200, "only {listed} nodes at the limits fit 8 MiB");
    // The bound the client's answer limit rests on.
    assert!(text.len() as u64 <= used + 100);
    assert!(text.len() as u64 <= budget + limits::ANSWER_MARGIN_BYTES);

    let client = GatewayClient::builder()
        .gateway(&server.url)
        .build()
        .unwrap();
    assert_eq!(client.list_nodes(true).unwrap().nodes.len(), listed);
    let out = crate::client_cli::run(
        Command::new(env!("CARGO_BIN_EXE_gateway-client"))
            .args(["--gateway", &server.url, "nodes", "--all", "--json"])
            .env_remove("GATEWAY_URL"),
    );
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["nodes"].as_array().unwrap().len(), listed);

    // A registration's answer carries the list, and the leader's record once more.
    let first = *refused.lock().unwrap().iter().min().unwrap() - 1;
    let (status, _) = server.post("/remove", &json!({"node_id": first}).to_string());
    assert_eq!(status, 200);
    let registration = cluster_gateway::api::Registration::new(first, "10.9.9.9", 9000);
    let answer = client.register_node(registration).unwrap();
    assert_eq!(answer.nodes.len(), listed - 1);
    assert!(answer.leader.is_some());
    client.leave().unwrap();
}

/// The largest answer a gateway can send, a list of nodes at the per-node limits padded to
/// `bytes`: the whole answer limit of the client.
fn list_of(bytes: u64) -> String {
    let node = |id: u64| {
        let mut node = at_the_limits(id);
        node["status"] = json!("active");
        node["last_seen"] = json!(1_764_000_000.25);
        node["join_timestamp"] = json!(1_764_000_000.25);
        node.to_string()
    };
    let one = node(1).len() as u64;
    let mut text = String::with_capacity(bytes as usize);
    text.push_str("{\"nodes\":[");
    let mut id = 1;
    while (text.len() as u64) + one + 64 < bytes {
        if id > 1 {
            text.push(',');
        }
        text.push_str(&node(id));
        id += 1;
    }
    text.push_str("],\"registry_version\":7}");
    while (text.len() as u64) < bytes {
        text.push(' ');
    }
    text
}

#[test]
fn the_client_reads_an_answer_as_large_as_the_largest_a_gateway_can_send() {
    // A gateway's answer is at most its budget plus the margin; the budget is at most
    // REGISTRY_BYTES (the server refuses more at start: config tests).
    let largest = limits::REGISTRY_BYTES + limits::ANSWER_MARGIN_BYTES;
    assert!(largest <= limits::ANSWER_BYTES);
    let text = list_of(largest);
    let expected = text.matches("\"node_id\":").count();
    let fake = FakeGateway::start(Some(200), &text);
    drop(text);
    let client = GatewayClient::builder()
        .gateway(fake.url())
        .retry_attempts(1)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let nodes = client.list_nodes(true).unwrap().nodes;
    assert_eq!(nodes.len(), expected);
}
