//! The client's watch thread over delta answers (`changes=1`): its view equals the plain list
//! after random churn, over the gateway's event stream and over long-polls (behind a proxy that
//! strips streams); it starts over from the full list when another gateway answers; and it
//! falls back to lists against a gateway that does not know delta answers.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use cluster_gateway::GatewayClient;
use cluster_gateway::server::registry::{Now, unix_now};
use serde_json::{Value, json};

use crate::support::{RequestLines, TestServer, eventually, registration, requests_to};

const PATIENCE: Duration = Duration::from_secs(60);
const NEVER: Duration = Duration::from_secs(3600);

fn watcher(gateways: &[&str]) -> GatewayClient {
    let mut builder = GatewayClient::builder()
        .heartbeat_interval(NEVER)
        .retry_base_delay(Duration::from_millis(20));
    for gateway in gateways {
        builder = builder.gateway(*gateway);
    }
    builder.build().unwrap()
}

/// `(id, status, port, metadata)` of every node, and the leader's id: what a view and the
/// plain list must agree on.
type Summary = (Vec<(u64, String, u64, Value)>, Option<u64>);

thread_local! {
    /// The `/nodes` requests [`listed`] made on this thread (the test's own, beside the watch's).
    static LISTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn listed(server: &TestServer) -> (u64, Summary) {
    LISTED.with(|n| n.set(n.get() + 1));
    let (_, list) = server.get("/nodes?status=all");
    let nodes = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_u64().unwrap(),
                n["status"].as_str().unwrap().to_owned(),
                n["port"].as_u64().unwrap(),
                n["metadata"].clone(),
            )
        })
        .collect();
    // From /stats: the watch's own /leader reads are counted below.
    let leader = server.get("/stats").1["leader_id"].as_u64();
    (list["registry_version"].as_u64().unwrap(), (nodes, leader))
}

fn viewed(client: &GatewayClient) -> Option<(u64, Summary)> {
    let view = client.cluster_view()?;
    let mut nodes: Vec<_> = view
        .cluster
        .nodes
        .iter()
        .chain(view.suspected.iter())
        // Peers carried over from another gateway run (see the view) are not the gateway's.
        .filter(|n| !view.carried.contains(&n.node_id))
        .map(|n| {
            (
                n.node_id,
                n.status.as_str().to_owned(),
                u64::from(n.port),
                Value::Object(n.metadata.clone()),
            )
        })
        .collect();
    nodes.sort_by_key(|n| n.0);
    let leader = view
        .cluster
        .leader
        .as_ref()
        .filter(|_| !view.leader_carried)
        .map(|n| n.node_id);
    Some((view.cluster.registry_version, (nodes, leader)))
}

/// Waits until the client's view is at the gateway's version, then says whether they agree.
fn converges(
    client: &GatewayClient,
    server: &TestServer,
) -> (Option<(u64, Summary)>, (u64, Summary)) {
    let mut last = None;
    let mut expected = listed(server);
    eventually(PATIENCE, || {
        expected = listed(server);
        last = viewed(client);
        last.as_ref() == Some(&expected)
    });
    (last, expected)
}

/// A small deterministic random sequence (no dependency, same churn every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Random churn on `server` (joins, moves, departures, leaders, suspicions, recoveries, reaps)
/// while `client` watches through `url`; its view must equal the plain list at checkpoints
/// and at the end. Returns the count of leader changes posted.
fn churn(server: &TestServer, client: &GatewayClient) -> usize {
    let sweep = |seconds: u64| {
        server.server.gateway().sweep(Now {
            instant: Instant::now() + Duration::from_secs(seconds),
            unix: unix_now() + seconds as f64,
        })
    };
    let mut random = Lcg(25);
    let mut leader_posts = 0;
    for round in 0..300 {
        let id = random.below(24) + 1;
        match random.below(10) {
            0..=3 => {
                server.register(id);
            }
            4 | 5 => {
                let mut moved = registration(id);
                moved["metadata"] = json!({"round": round});
                assert_eq!(server.post_json("/register", &moved).0, 200);
            }
            6 => {
                server.post_json("/remove", &json!({"node_id": id}));
            }
            7 => {
                server.post_json("/leader", &json!({"leader_id": id}));
                leader_posts += 1;
            }
            8 => sweep(61), // everyone not heard from since is suspected
            _ => {
                server.post_json("/heartbeat", &json!({"node_id": id})); // recovers
            }
        }
        if round % 100 == 99 && round < 200 {
            sweep(601); // reaps every node
            let (view, list) = converges(client, server);
            assert_eq!(view.as_ref(), Some(&list), "after round {round}");
        }
    }
    let (view, list) = converges(client, server);
    assert_eq!(view.as_ref(), Some(&list), "at the end");
    assert!(!list.1.0.is_empty(), "the churn left nodes to compare");
    leader_posts
}

/// Nodes stay active in real time; suspicions and reaps come from sweeps with injected time.
fn churned() -> TestServer {
    TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_secs(30);
        c.liveness.suspect_after = Duration::from_secs(60);
        c.liveness.node_timeout = Duration::from_secs(600);
    })
}

#[test]
fn the_watching_clients_view_equals_the_plain_list_after_random_churn() {
    let server = churned();
    let client = watcher(&[&server.url]);
    client.watch();
    assert!(eventually(PATIENCE, || server.server.streams_open() == 1));
    let leader_posts = churn(&server, &client);
    // Delta answers all along: a list-watching client reads /leader on every change (the
    // route counts the test's own POSTs).
    assert_eq!(requests_to(&server, "/leader"), leader_posts);
    // Over the one stream: no long-poll, no other request for the changes.
    assert_eq!(server.server.streams_open(), 1);
    let own = LISTED.with(|n| n.get());
    assert_eq!(requests_to(&server, "/nodes"), 1 + own);
    client.shutdown();
}

#[test]
fn behind_a_proxy_that_strips_streams_the_view_follows_churn_over_long_polls() {
    let server = churned();
    let proxy = crate::client_watch::NoStreams::start(&server.url);
    let client = watcher(&[&proxy.url]);
    client.watch();
    assert!(eventually(PATIENCE, || server.server.watchers_waiting() == 1));
    let leader_posts = churn(&server, &client);
    assert_eq!(requests_to(&server, "/leader"), leader_posts);
    assert_eq!(server.server.streams_open(), 0);
    let asked = proxy.nodes_requests();
    assert!(asked.len() > 10, "a long-poll per change or so: {asked:?}");
    assert_eq!(
        asked.iter().filter(|l| l.contains("stream=1")).count(),
        1,
        "a stream asked for once, then long-polls: {:?}",
        &asked[..3]
    );
    client.shutdown();
}

#[test]
fn after_a_switch_to_another_gateway_the_view_is_that_gateways_list() {
    let first = TestServer::start();
    let second = TestServer::start();
    for id in [1, 2, 3] {
        first.register(id);
    }
    for id in [7, 8] {
        second.register(id);
    }
    // The versions line up (same count of changes): only the epoch and the address tell.
    let client = watcher(&[&first.url, &second.url]);
    client.watch();
    let (view, list) = converges(&client, &first);
    assert_eq!(view.as_ref(), Some(&list));
    drop(first);
    second.register(9);
    let (view, list) = converges(&client, &second);
    assert_eq!(view.as_ref(), Some(&list), "the second gateway's nodes");
    client.shutdown();
}

/// A gateway that long-polls but does not know `changes=1` (it ignores the parameter and
/// answers the list asked for), with node 7 leading; records each request line.
struct ListsOnly {
    url: String,
    lines: RequestLines,
}

impl ListsOnly {
    fn start() -> ListsOnly {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lines = RequestLines::default();
        let recorded = lines.clone();
        std::thread::spawn(move || {
            let node = r#"{"node_id": 7, "ip_address": "10.0.0.7", "port": 5007, "capabilities": ["raft"], "status": "active", "last_seen": 1.0, "join_timestamp": 1.0, "metadata": {}}"#;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or_default().to_owned();
                recorded.push(line.clone());
                let body = if line.starts_with("GET /nodes") {
                    format!(r#"{{"nodes": [{node}], "registry_version": 4}}"#)
                } else if line.starts_with("GET /leader") {
                    format!(r#"{{"leader": {node}, "registry_version": 4}}"#)
                } else {
                    r#"{"status": "healthy", "timestamp": 1.0}"#.to_owned()
                };
                // Each long-poll ends its wait unchanged after a moment.
                if line.contains("index=") {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Gateway-Index: 4\r\n\
                     X-Gateway-Epoch: old\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        ListsOnly { url, lines }
    }

    fn nodes_requests(&self) -> Vec<String> {
        self.lines.nodes()
    }
}

#[test]
fn against_a_gateway_without_delta_answers_the_watch_takes_its_lists() {
    let old = ListsOnly::start();
    let client = watcher(&[&old.url]);
    client.watch();
    assert!(eventually(PATIENCE, || {
        client.cluster_view().is_some_and(|v| {
            v.cluster.nodes.iter().any(|n| n.node_id == 7)
                && v.cluster.leader.as_ref().is_some_and(|l| l.node_id == 7)
        })
    }));
    assert!(eventually(PATIENCE, || old.nodes_requests().len() >= 3));
    let asked = old.nodes_requests();
    assert!(asked[0].contains("changes=1"), "{asked:?}");
    assert!(
        asked[1..]
            .iter()
            .all(|l| !l.contains("changes=1") && l.contains("status=all")),
        "lists from the first answer on: {asked:?}"
    );
    client.shutdown();
}
