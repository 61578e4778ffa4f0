//! One test per row of the wire contract, and one per error the gateway answers with.
//!
//! Longer than ~800 lines on purpose: a catalogue of short tests, one a route and case, sharing
//! the helpers at the top; it is searched, not read through.

use std::time::{Duration, Instant};

use cluster_gateway::server::registry::{Now, unix_now};

use serde_json::{Value, json};

use crate::support::{TestServer, eventually, raw, registration, status_of};

fn ids(nodes: &Value) -> Vec<u64> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_u64().unwrap())
        .collect()
}

/// Asserts an error answer: its status, and that `error` starts with `message`.
fn check_error(answer: (u16, Value), status: u16, message: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["status_code"], status, "{body}");
    assert!(body["timestamp"].is_f64(), "{body}");
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {body}"));
    assert!(
        error.starts_with(message),
        "expected {message:?}, got {error:?}"
    );
}

#[test]
fn health_reports_status_time_version_and_epoch() {
    let server = TestServer::start();
    let (status, body) = server.get("/health");
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert!(body["timestamp"].is_f64());
    assert_eq!(body["version"], cluster_gateway::VERSION);
    assert!(!body["epoch"].as_str().unwrap().is_empty());
}

#[test]
fn register_and_health_advertise_epoch_and_liveness_settings() {
    let server = TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_secs(2);
        c.liveness.suspect_after = Duration::from_secs(5);
        c.liveness.node_timeout = Duration::from_secs(9);
    });
    let health = server.get("/health").1;
    let answer = server.register(1);
    assert_eq!(answer["epoch"], health["epoch"], "{answer}");
    for body in [&answer, &health] {
        assert_eq!(body["heartbeat_interval"], 2.0, "{body}");
        assert_eq!(body["suspect_after"], 5.0, "{body}");
        assert_eq!(body["node_timeout"], 9.0, "{body}");
    }
}

#[test]
fn a_registration_with_previous_epoch_never_bootstraps_and_disarms_bootstrap() {
    let server = TestServer::start();
    let mut rejoin = registration(1);
    rejoin["previous_epoch"] = json!("18a-1");
    let (status, answer) = server.post_json("/register", &rejoin);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["is_bootstrap"], false);
    assert_eq!(answer["leader"], Value::Null);
    assert_eq!(server.register(2)["is_bootstrap"], false);
    assert_eq!(server.get("/stats").1["bootstrap_armed"], false);
}

#[test]
fn register_answers_peers_leader_and_bootstrap() {
    let server = TestServer::start();
    let first = server.register(1);
    assert_eq!(first["status"], "registered");
    assert_eq!(first["is_bootstrap"], true);
    assert_eq!(first["nodes"], json!([]));
    assert_eq!(first["leader"]["node_id"], 1);

    let second = server.register(2);
    assert_eq!(second["is_bootstrap"], false);
    assert_eq!(ids(&second["nodes"]), vec![1]);
    assert_eq!(second["leader"]["node_id"], 1);
    assert!(second["registry_version"].as_u64() > first["registry_version"].as_u64());
}

#[test]
fn re_register_updates_and_merges_metadata() {
    let server = TestServer::start();
    server.register(1);
    let mut update = registration(1);
    update["port"] = json!(7001);
    update["metadata"] = json!({"rack": "r1"});
    let (status, body) = server.post_json("/register", &update);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "updated");
    assert_eq!(body["is_bootstrap"], false);
    let (_, nodes) = server.get("/nodes");
    assert_eq!(nodes["nodes"][0]["port"], 7001);
    assert_eq!(
        nodes["nodes"][0]["metadata"],
        json!({"zone": "a", "rack": "r1"})
    );
}

#[test]
fn nodes_excludes_filters_and_sorts() {
    let server = TestServer::start();
    for id in [3, 1, 2] {
        server.register(id);
    }
    let mut other = registration(4);
    other["capabilities"] = json!(["storage"]);
    server.post_json("/register", &other);

    let (status, all) = server.get("/nodes");
    assert_eq!(status, 200);
    assert_eq!(ids(&all["nodes"]), vec![1, 2, 3, 4]);
    assert!(all["registry_version"].is_u64());
    assert_eq!(
        ids(&server.get("/nodes?node_id=2").1["nodes"]),
        vec![1, 3, 4]
    );
    assert_eq!(
        ids(&server.get("/nodes?node_id=1").1["nodes"]),
        vec![2, 3, 4]
    );
    assert_eq!(
        ids(&server.get("/nodes?node_id=4").1["nodes"]),
        vec![1, 2, 3]
    );
    assert_eq!(
        ids(&server.get("/nodes?capability=storage").1["nodes"]),
        vec![4]
    );
    assert_eq!(
        ids(&server.get("/nodes?capability=raft&node_id=1").1["nodes"]),
        vec![2, 3]
    );
}

/// A gateway whose nodes stay active for a minute of real time: tests make a node suspected
/// through injected time ([`suspect_all`]), so no stall of the machine can change a status.
fn slow_liveness() -> TestServer {
    TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_secs(30);
        c.liveness.suspect_after = Duration::from_secs(60);
        c.liveness.node_timeout = Duration::from_secs(600);
    })
}

/// Sweeps as if 61 s had passed: every node not heard from since is suspected.
fn suspect_all(server: &TestServer) {
    server.server.gateway().sweep(Now {
        instant: Instant::now() + Duration::from_secs(61),
        unix: unix_now() + 61.0,
    });
}

/// Node 1 (the leader) suspected; nodes 2 and 3 active.
fn one_suspected(server: &TestServer) {
    for id in [1, 2, 3] {
        server.register(id);
    }
    suspect_all(server);
    for id in [2, 3] {
        let (_, ack) = server.post_json("/heartbeat", &json!({"node_id": id}));
        assert_eq!(ack["status"], "acknowledged");
    }
    let all = server.get("/nodes?status=all").1;
    let statuses: Vec<&str> = all["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["suspected", "active", "active"], "{all}");
}

#[test]
fn nodes_shows_suspected_nodes_only_with_status_all() {
    let server = slow_liveness();
    one_suspected(&server);
    assert_eq!(ids(&server.get("/nodes").1["nodes"]), vec![2, 3]);
    assert_eq!(
        ids(&server.get("/nodes?status=all").1["nodes"]),
        vec![1, 2, 3]
    );
    let stats = server.get("/stats").1;
    assert_eq!(stats["suspected_nodes"], 1);
    assert_eq!(stats["active_nodes"], 2);
    // The leader is shown while registered, with its status.
    assert_eq!(server.get("/leader").1["leader"]["status"], "suspected");
}

#[test]
fn register_answers_leave_out_suspected_nodes() {
    let server = slow_liveness();
    one_suspected(&server);
    let answer = server.register(4);
    assert_eq!(ids(&answer["nodes"]), vec![2, 3], "{answer}");
    assert_eq!(answer["leader"]["node_id"], 1);
}

#[test]
fn status_all_combines_with_capability_and_node_id() {
    let server = slow_liveness();
    one_suspected(&server);
    let mut storage = registration(3);
    storage["capabilities"] = json!(["storage"]);
    server.post_json("/register", &storage);
    let nodes = |query: &str| ids(&server.get(&format!("/nodes?{query}")).1["nodes"]);
    assert_eq!(nodes("capability=raft"), vec![2]);
    assert_eq!(nodes("status=all&capability=raft"), vec![1, 2]);
    assert_eq!(nodes("capability=storage&status=all"), vec![3]);
    assert_eq!(nodes("status=all&capability=raft&node_id=2"), vec![1]);
    assert_eq!(nodes("status=all&capability=gossip&node_id=1"), vec![2]);
    assert_eq!(nodes("status=all&capability=none"), Vec::<u64>::new());
}

#[test]
fn a_registration_revives_a_suspected_node_over_http() {
    let server = slow_liveness();
    one_suspected(&server);
    let before = server.get("/stats").1["registry_version"].as_u64().unwrap();
    let answer = server.register(1);
    assert_eq!(answer["status"], "updated");
    assert!(answer["registry_version"].as_u64().unwrap() > before);
    assert_eq!(server.get("/stats").1["suspected_nodes"], 0);
}

#[test]
fn nodes_refuses_a_bad_query() {
    let server = TestServer::start();
    check_error(server.get("/nodes?node_id=abc"), 400, "Invalid node_id");
    check_error(server.get("/nodes?node_id=-1"), 400, "Invalid node_id");
    check_error(server.get("/nodes?status=dead"), 400, "Invalid status");
    check_error(
        server.get("/nodes?capability=%zz"),
        400,
        "Invalid capability",
    );
}

#[test]
fn leader_get_and_set() {
    let server = TestServer::start();
    let (status, none) = server.get("/leader");
    assert_eq!(status, 200);
    assert_eq!(
        none,
        json!({"leader": null, "message": "No leader currently registered"})
    );

    server.register(1);
    server.register(2);
    let (_, leader) = server.get("/leader");
    assert_eq!(leader["leader"]["node_id"], 1);
    assert!(leader["registry_version"].is_u64());

    let (status, set) = server.post_json("/leader", &json!({"leader_id": 2}));
    assert_eq!(status, 200);
    assert_eq!(set, json!({"status": "updated", "leader_id": 2}));
    assert_eq!(server.get("/leader").1["leader"]["node_id"], 2);

    let (status, failed) = server.post_json("/leader", &json!({"leader_id": 99}));
    assert_eq!(status, 200);
    assert_eq!(
        failed,
        json!({"status": "failed", "message": "Leader not found in registry"})
    );
    assert_eq!(server.get("/stats").1["leader_id"], 2);
}

#[test]
fn heartbeat_acknowledges_known_nodes_and_says_not_found_with_200() {
    let server = TestServer::start();
    server.register(1);
    let (status, ack) = server.post_json("/heartbeat", &json!({"node_id": 1}));
    assert_eq!(status, 200);
    assert_eq!(ack["status"], "acknowledged");
    assert!(ack["registry_version"].is_u64());
    assert_eq!(ack["epoch"], server.get("/health").1["epoch"]);

    let (status, missing) = server.post_json("/heartbeat", &json!({"node_id": 42}));
    assert_eq!(status, 200);
    assert_eq!(missing["status"], "not_found");
}

#[test]
fn remove_says_removed_then_not_found_and_clears_the_leader() {
    let server = TestServer::start();
    server.register(1);
    assert_eq!(
        server.post_json("/remove", &json!({"node_id": 1})),
        (200, json!({"status": "removed", "node_id": 1}))
    );
    assert_eq!(
        server.post_json("/remove", &json!({"node_id": 1})),
        (200, json!({"status": "not_found", "node_id": 1}))
    );
    assert_eq!(server.get("/leader").1["leader"], Value::Null);
}

#[test]
fn the_whole_cluster_leaving_re_arms_bootstrap() {
    let server = TestServer::start();
    server.register(1);
    server.post_json("/remove", &json!({"node_id": 1}));
    assert_eq!(server.register(2)["is_bootstrap"], true);
}

#[test]
fn stats_has_the_original_fields_and_operator_extras() {
    let server = TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_secs(20);
        c.liveness.suspect_after = Duration::from_secs(70);
        c.liveness.node_timeout = Duration::from_secs(200);
    });
    let registered = server.register(1);
    let (status, stats) = server.get("/stats");
    assert_eq!(status, 200);
    let expected = json!({
        "total_nodes": 1,
        "active_nodes": 1,
        "suspected_nodes": 0,
        "leader_id": 1,
        "registry_version": registered["registry_version"],
        "bootstrap_initiated": true,
        "bootstrap_armed": false,
        "joins_total": 1,
        "removed_total": 0,
        "reaped_total": 0,
        "heartbeats_total": 0,
        "suspect_after": 70.0,
        "node_timeout": 200.0,
        "heartbeat_interval": 20.0,
        "version": cluster_gateway::VERSION,
        "epoch": server.get("/health").1["epoch"],
    });
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&stats[field], value, "{field} in {stats}");
    }
    let uptime = stats["uptime"].as_f64().expect("uptime is a number");
    assert!(uptime >= 0.0, "{stats}");
}

#[test]
fn stats_counters_count_joins_leaves_and_heartbeats() {
    let server = TestServer::start();
    for id in [1, 2, 3] {
        server.register(id);
    }
    server.register(1); // an update is not a join
    for id in [2, 2, 99] {
        server.post_json("/heartbeat", &json!({"node_id": id}));
    }
    server.post_json("/remove", &json!({"node_id": 3}));
    server.post_json("/remove", &json!({"node_id": 99}));
    let stats = server.get("/stats").1;
    assert_eq!(stats["joins_total"], 3, "{stats}");
    assert_eq!(stats["heartbeats_total"], 2, "{stats}");
    assert_eq!(stats["removed_total"], 1, "{stats}");
    assert_eq!(stats["reaped_total"], 0, "{stats}");
    assert_eq!(stats["bootstrap_armed"], false, "{stats}");
    for id in [1, 2] {
        server.post_json("/remove", &json!({"node_id": id}));
    }
    let stats = server.get("/stats").1;
    assert_eq!(stats["removed_total"], 3, "{stats}");
    assert_eq!(stats["total_nodes"], 0, "{stats}");
    assert_eq!(
        stats["bootstrap_armed"], true,
        "everyone left on purpose: {stats}"
    );
}

#[test]
fn registry_version_grows_on_a_capability_change_not_on_a_heartbeat() {
    let server = TestServer::start();
    server.register(1);
    let version = server.register(2)["registry_version"].as_u64().unwrap();
    for _ in 0..3 {
        let (_, ack) = server.post_json("/heartbeat", &json!({"node_id": 2}));
        assert_eq!(ack["registry_version"], version, "a plain heartbeat: {ack}");
    }
    assert_eq!(
        server.register(2)["registry_version"],
        version,
        "nothing changed"
    );
    let mut changed = registration(2);
    changed["capabilities"] = json!(["raft"]);
    let (_, answer) = server.post_json("/register", &changed);
    let after = answer["registry_version"].as_u64().unwrap();
    assert!(after > version, "a capability change: {version} -> {after}");
    assert_eq!(server.get("/nodes").1["registry_version"], after);
}

/// A gateway whose reaper removes a silent node within a second.
fn fast_reaper() -> TestServer {
    TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_millis(50);
        c.liveness.suspect_after = Duration::from_millis(200);
        c.liveness.node_timeout = Duration::from_millis(500);
    })
}

fn reaped(server: &TestServer, count: u64) -> bool {
    server.get("/stats").1["reaped_total"] == count
}

#[test]
fn the_reaper_grows_registry_version_clears_a_reaped_leader_and_does_not_re_arm_bootstrap() {
    let server = fast_reaper();
    let first = server.register(1);
    assert_eq!(first["is_bootstrap"], true);
    let version = first["registry_version"].as_u64().unwrap();
    assert!(
        eventually(Duration::from_secs(60), || reaped(&server, 1)),
        "node 1 was never reaped"
    );
    let (_, leader) = server.get("/leader");
    assert_eq!(
        leader,
        json!({"leader": null, "message": "No leader currently registered"})
    );
    let stats = server.get("/stats").1;
    assert_eq!(stats["leader_id"], Value::Null, "{stats}");
    assert_eq!(stats["total_nodes"], 0, "{stats}");
    assert!(
        stats["registry_version"].as_u64().unwrap() > version,
        "{stats}"
    );
    assert_eq!(stats["bootstrap_armed"], false, "{stats}");
    // The registry emptied by reaping: the next node does not bootstrap a second cluster.
    let next = server.register(2);
    assert_eq!(next["is_bootstrap"], false, "{next}");
    assert_eq!(next["leader"], Value::Null, "{next}");
}

#[test]
fn a_reaped_leader_leaves_the_cluster_without_a_leader() {
    let server = fast_reaper();
    server.register(1);
    server.register(2);
    // Node 2 keeps beating while node 1 falls silent.
    let leader_gone = eventually(Duration::from_secs(60), || {
        server.post_json("/heartbeat", &json!({"node_id": 2}));
        server.get("/leader").1["leader"].is_null()
    });
    assert!(leader_gone, "the silent leader was never reaped");
    let (_, leader) = server.get("/leader");
    assert_eq!(leader["message"], "No leader currently registered");
    assert!(
        !ids(&server.get("/nodes?status=all").1["nodes"]).contains(&1),
        "the leader went because it was reaped"
    );
    let stats = server.get("/stats").1;
    assert!(stats["reaped_total"].as_u64().unwrap() >= 1);
    assert!(
        stats["leader_id"].is_null(),
        "no dangling leader id: {stats}"
    );
}

/// A gateway whose reaper sweeps every 0.5 s, suspecting after 1.25 s and reaping after
/// 2.75 s: neither a whole number of sweeps, so that a sweep that reads its clock early
/// (by up to a sweep) acts a quarter of a second early, not just within the polling slack.
fn timed_reaper() -> TestServer {
    TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_millis(500);
        c.liveness.suspect_after = Duration::from_millis(1250);
        c.liveness.node_timeout = Duration::from_millis(2750);
    })
}

#[test]
fn a_silent_node_is_suspected_and_reaped_neither_early_nor_late() {
    let server = timed_reaper();
    let before = Instant::now();
    server.register(1);
    let registered = Instant::now();
    let status = || {
        let nodes = server.get("/nodes?status=all").1;
        nodes["nodes"]
            .as_array()
            .unwrap()
            .first()
            .map(|n| n["status"].as_str().unwrap().to_owned())
    };
    // Only how long the test looks: a late suspicion or reaping is told by the bounds below.
    let deadline = registered + Duration::from_secs(60);
    let (mut suspected, mut reaped) = (None, None);
    // The longest the machine kept the test from looking again (the look's request and the
    // pause's overshoot): how late the test itself saw things, measured, not guessed.
    let (mut held_up, mut last_look) = (Duration::ZERO, Instant::now());
    while Instant::now() < deadline && reaped.is_none() {
        let seen = status();
        let at = Instant::now();
        held_up = held_up.max(at.saturating_duration_since(last_look));
        last_look = at;
        match seen.as_deref() {
            Some("suspected") if suspected.is_none() => suspected = Some(at),
            None => reaped = Some(at),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let suspected = suspected.expect("never suspected") - before;
    let reaped = reaped.expect("never reaped") - before;
    eprintln!("suspected after {suspected:?}, reaped after {reaped:?}; looks held up {held_up:?}");
    // Never before its silence lasted suspect_after (node_timeout); after, at most a sweep,
    // some slack, and the longest the machine held the test's own looks up (a loaded machine
    // holds the reaper up alike; a reaper that sweeps late by design is not explained by it).
    let slack = Duration::from_millis(500 + 1500) + held_up;
    let (suspect_after, node_timeout) = (Duration::from_millis(1250), Duration::from_millis(2750));
    assert!(suspected >= suspect_after, "suspected early: {suspected:?}");
    assert!(
        suspected <= suspect_after + slack,
        "suspected late: {suspected:?}"
    );
    assert!(reaped >= node_timeout, "reaped early: {reaped:?}");
    assert!(reaped <= node_timeout + slack, "reaped late: {reaped:?}");
}

#[test]
fn a_heartbeat_moves_last_seen_in_the_list_within_a_second() {
    let server = TestServer::start();
    server.register(1);
    // Asked plain, as the original's clients ask: a gzip answer may keep `last_seen` for up to
    // 5 s (docs/http-api.md), a plain one for at most a second.
    let last_seen = || {
        let answer = raw(
            server.addr(),
            b"GET /nodes HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        let body = &answer[answer.find("\r\n\r\n").expect("an answer") + 4..];
        let list: Value = serde_json::from_str(body).expect("a JSON list");
        list["nodes"][0]["last_seen"].as_f64().unwrap()
    };
    let first = last_seen();
    // Some time must pass for last_seen to move: wait until 1.5 s have.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let beat = unix_now();
    let answer = server.post_json("/heartbeat", &json!({"node_id": 1}));
    let acknowledged = Instant::now();
    assert_eq!(answer.1["status"], "acknowledged", "{answer:?}");
    // The bound is the test's own clock: a plain list asked for once a second (the most it
    // may keep last_seen) has passed since the acknowledgement carries the heartbeat, however
    // long a loaded machine took to answer either request.
    while acknowledged.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = last_seen();
    assert!(
        listed >= beat - 1.0,
        "last_seen stayed at {first} after a heartbeat at {beat}: {listed}"
    );
}

#[test]
fn a_full_registry_refuses_new_nodes_with_503_and_keeps_taking_known_ones() {
    let server = TestServer::with(|c| c.max_nodes = 2);
    server.register(1);
    server.register(2);
    let (status, answer) = server.post_json("/register", &registration(3));
    assert_eq!(
        status, 503,
        "a full registry is the gateway's state, not a bad request (a 4xx makes clients give up): {answer}"
    );
    assert!(answer["error"].as_str().unwrap().contains('2'), "{answer}");
    assert_eq!(
        server.post_json("/register", &registration(1)).0,
        200,
        "a known node re-registers"
    );
    assert_eq!(server.get("/stats").1["total_nodes"], 2);
}

#[test]
fn boundary_values_are_accepted() {
    let server = TestServer::start();
    let label = "a".repeat(63);
    let host = format!("{label}.{label}.{label}.{}", "b".repeat(61));
    assert_eq!(host.len(), 253);
    let capabilities: Vec<String> = (0..64).map(|i| format!("{i:0>128}")).collect();
    let keys: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("k{i}"), json!(i))).collect();
    // {"k":"xxx..."} of exactly 16 KiB as compact JSON.
    let big = json!({"k": "x".repeat(16 * 1024 - 8)});
    assert_eq!(big.to_string().len(), 16 * 1024);
    let cases = [
        json!({"node_id": u64::MAX, "ip_address": "10.0.0.1", "port": 1, "capabilities": []}),
        json!({"node_id": 0, "ip_address": host, "port": 65535, "capabilities": capabilities}),
        json!({"node_id": 2, "ip_address": "::1", "port": "65535", "capabilities": ["a"], "metadata": keys}),
        json!({"node_id": 3, "ip_address": "h", "port": 5003, "capabilities": ["a"], "metadata": big}),
        json!({"node_id": 4, "ip_address": "h", "port": 5004, "capabilities": ["a"], "metadata": null}),
        json!({"node_id": 5, "ip_address": "h", "port": 5005, "capabilities": ["a"], "colour": "blue", "extra": {"x": [1]}}),
    ];
    for body in &cases {
        let (status, answer) = server.post_json("/register", body);
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer["status"], "registered", "{answer}");
        let id = body["node_id"].as_u64().unwrap();
        assert_eq!(answer["node_id"].as_u64(), Some(id), "{answer}");
    }
    let all = server.get("/nodes").1["nodes"].clone();
    let node = |id: u64| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"].as_u64() == Some(id))
            .unwrap_or_else(|| panic!("node {id} missing from {all}"))
            .clone()
    };
    assert_eq!(node(u64::MAX)["port"], 1);
    assert_eq!(node(0)["ip_address"].as_str().unwrap().len(), 253);
    assert_eq!(node(0)["port"], 65535);
    assert_eq!(node(0)["capabilities"].as_array().unwrap().len(), 64);
    assert_eq!(node(2)["metadata"].as_object().unwrap().len(), 64);
    assert_eq!(node(3)["metadata"], big);
    assert_eq!(node(4)["metadata"], json!({}));
    assert!(
        node(5).get("colour").is_none(),
        "unknown fields are not stored"
    );
    // One past each limit is refused.
    let too_big = json!({"k": "x".repeat(16 * 1024 - 7)});
    let mut over = registration(6);
    over["metadata"] = too_big;
    check_error(
        server.post_json("/register", &over),
        400,
        "Invalid metadata",
    );
    let mut over = registration(6);
    over["ip_address"] = json!(format!("c{host}"));
    check_error(
        server.post_json("/register", &over),
        400,
        "Invalid ip_address",
    );
    let mut over = registration(6);
    over["capabilities"] = json!(["x".repeat(129)]);
    check_error(
        server.post_json("/register", &over),
        400,
        "Invalid capabilities",
    );
}

#[test]
fn invalid_json_and_non_objects_are_400() {
    let server = TestServer::start();
    check_error(
        server.post("/register", "{\"node_id\": 1,"),
        400,
        "Invalid JSON",
    );
    check_error(server.post("/register", "[1, 2]"), 400, "Invalid JSON");
    check_error(server.post("/heartbeat", ""), 400, "Invalid JSON");
}

#[test]
fn missing_fields_are_named_like_the_original() {
    let server = TestServer::start();
    for field in ["node_id", "ip_address", "port", "capabilities"] {
        let mut body = registration(1);
        body.as_object_mut().unwrap().remove(field);
        check_error(
            server.post_json("/register", &body),
            400,
            &format!("Missing required field: {field}"),
        );
    }
    check_error(
        server.post_json("/heartbeat", &json!({})),
        400,
        "Missing node_id",
    );
    check_error(
        server.post_json("/remove", &json!({"node_id": null})),
        400,
        "Missing node_id",
    );
    check_error(
        server.post_json("/leader", &json!({})),
        400,
        "Missing leader_id",
    );
}

#[test]
fn invalid_values_are_400_and_change_nothing() {
    let server = TestServer::start();
    server.register(1);
    let before = server.get("/nodes").1;
    let cases = [
        ("node_id", json!(-1)),
        ("node_id", json!(1.5)),
        ("node_id", json!("four")),
        ("port", json!(70000)),
        ("ip_address", json!("has space")),
        ("capabilities", json!([1, 2])),
        ("metadata", json!("not an object")),
    ];
    for (field, value) in cases {
        let mut body = registration(1);
        body[field] = value;
        check_error(
            server.post_json("/register", &body),
            400,
            &format!("Invalid {field}"),
        );
    }
    check_error(
        server.post_json("/heartbeat", &json!({"node_id": true})),
        400,
        "Invalid node_id",
    );
    check_error(
        server.post_json("/leader", &json!({"leader_id": "x"})),
        400,
        "Invalid leader_id",
    );
    assert_eq!(server.get("/nodes").1, before);
}

#[test]
fn decimal_strings_are_accepted_as_ids_and_ports() {
    let server = TestServer::start();
    let (status, body) = server.post_json(
        "/register",
        &json!({"node_id": "7", "ip_address": "h", "port": "5007", "capabilities": []}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node_id"], 7);
}

#[test]
fn any_content_type_is_accepted() {
    let server = TestServer::start();
    let body = registration(1).to_string();
    let request = format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(
        status_of(&raw(
            server.addr(),
            request.as_bytes(),
            Duration::from_secs(10)
        )),
        200
    );
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let server = TestServer::start();
    check_error(server.get("/no-such-path"), 404, "Not Found");
    check_error(server.post("/no-such-path", "{}"), 404, "Not Found");
    check_error(server.get("/register"), 405, "Method GET not allowed");
    let answer = raw(
        server.addr(),
        b"DELETE /nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(status_of(&answer), 405);
    assert!(answer.contains("Allow: GET, HEAD"), "{answer}");
}

#[test]
fn a_body_over_the_limit_is_413_before_it_is_read() {
    let server = TestServer::with(|c| c.max_body_bytes = 1024);
    // Declared too large: answered without sending the body.
    let answer = raw(
        server.addr(),
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert!(answer.contains("limit is 1024 bytes"), "{answer}");
    // Chunked, no length: refused once past the limit.
    let chunk = "x".repeat(2000);
    let chunked = format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    assert_eq!(
        status_of(&raw(
            server.addr(),
            chunked.as_bytes(),
            Duration::from_secs(10)
        )),
        413
    );
    // An absurd declared length does not bring the server down.
    let huge = raw(
        server.addr(),
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n",
        Duration::from_secs(2),
    );
    assert_eq!(status_of(&huge), 413);
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn a_body_shorter_than_declared_is_refused() {
    let server = TestServer::start();
    // More than tiny_http buffers itself (1 KiB), then the client stops sending.
    let body = registration(1).to_string();
    let request =
        format!("POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n{body}");
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(
        answer.contains("shorter than its Content-Length"),
        "{answer}"
    );
    assert_eq!(server.get("/nodes").1["nodes"], json!([]));
}

#[test]
fn health_is_503_unhealthy_while_writes_fail_and_live_stays_200() {
    // A gateway over an etcd that nothing answers: it cannot take writes.
    let closed = crate::support::free_port(crate::support::own_host::CLOSED);
    let server = TestServer::with(|c| {
        c.store = cluster_gateway::server::StoreKind::Etcd;
        c.etcd_endpoints = vec![format!(
            "http://{}:{closed}",
            crate::support::own_host::CLOSED
        )];
    });
    let (status, health) = server.get("/health");
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "unhealthy");
    assert!(
        health["store_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{health}"
    );
    let (status, live) = server.get("/health?live");
    assert_eq!(status, 200, "the liveness probe: {live}");
    assert_eq!(live["status"], "healthy");
    assert_eq!(live["store_error"], health["store_error"]);
    let (status, _) = server.post_json("/register", &registration(1));
    assert_eq!(status, 503, "writes fail, as /health says");
}

#[test]
fn health_is_200_healthy_while_writes_succeed() {
    let server = TestServer::start();
    let (status, health) = server.get("/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    assert!(health.get("store_error").is_none(), "{health}");
    assert_eq!(server.get("/health?live").0, 200);
}

#[test]
fn one_node_is_read_by_its_id_and_an_unknown_one_is_404() {
    let server = TestServer::start();
    server.register(1);
    server.register(7);
    let (status, node) = server.get("/nodes/7");
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["node_id"], 7);
    assert_eq!(node["ip_address"], "127.0.0.1");
    assert_eq!(node["status"], "active");
    // The same record /nodes lists.
    let listed = server.get("/nodes").1["nodes"][1].clone();
    assert_eq!(node, listed);
    check_error(server.get("/nodes/8"), 404, "node 8 is not registered");
    check_error(server.get("/nodes/seven"), 400, "Invalid node_id");
    assert_eq!(server.post_json("/nodes/7", &json!({})).0, 405);
    assert_eq!(server.get("/nodes/7/x").0, 404);
    // /nodes?node_id=N keeps the original's meaning: every node but N.
    assert_eq!(ids(&server.get("/nodes?node_id=7").1["nodes"]), vec![1]);
}
