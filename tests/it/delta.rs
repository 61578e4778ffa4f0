//! Delta answers (`GET /nodes?index=V&changes=1`): the events since a version, the full list
//! marked `full` when the journal does not reach back, the long-poll that wakes with only the
//! change, and tokens checked before parking.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster_gateway::server::auth::Secret;
use cluster_gateway::server::registry::{Now, unix_now};
use serde_json::{Value, json};

use crate::support::{TestServer, eventually, get, registration, within};

const LIMIT: Duration = Duration::from_secs(60);

/// A gateway whose nodes stay active for a minute of real time: suspicions and reaps are
/// made by sweeping with injected time.
fn slow_liveness() -> TestServer {
    TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_secs(30);
        c.liveness.suspect_after = Duration::from_secs(60);
        c.liveness.node_timeout = Duration::from_secs(600);
    })
}

fn sweep_after(server: &TestServer, seconds: u64) {
    server.server.gateway().sweep(Now {
        instant: Instant::now() + Duration::from_secs(seconds),
        unix: unix_now() + seconds as f64,
    });
}

fn index_of(server: &TestServer) -> u64 {
    get(&server.url, "/nodes", &[])
        .index
        .expect("X-Gateway-Index")
}

/// `(event, node_id or leader_id)` of each change.
fn events(body: &Value) -> Vec<(String, Value)> {
    body["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("changes: {body}"))
        .iter()
        .map(|c| {
            let who = match c["event"].as_str().unwrap() {
                "leader" => c["leader_id"].clone(),
                _ => c["node_id"].clone(),
            };
            (c["event"].as_str().unwrap().to_owned(), who)
        })
        .collect()
}

/// Applies an answer to `view` (node id -> record) as a client would; returns the leader.
fn apply(view: &mut BTreeMap<u64, Value>, body: &Value) -> Value {
    if body["full"] == true {
        view.clear();
        for node in body["nodes"].as_array().unwrap() {
            view.insert(node["node_id"].as_u64().unwrap(), node.clone());
        }
    } else {
        for change in body["changes"].as_array().unwrap() {
            let id = change["node_id"].as_u64();
            match change["event"].as_str().unwrap() {
                "left" | "reaped" => {
                    view.remove(&id.unwrap());
                }
                "leader" => {}
                _ => {
                    view.insert(id.unwrap(), change["node"].clone());
                }
            }
        }
    }
    body["leader"].clone()
}

/// A record without `last_seen` (a cached list may show it up to a second old).
fn shape(node: &Value) -> Value {
    let mut node = node.clone();
    node.as_object_mut().unwrap().remove("last_seen");
    node
}

fn same_as_the_list(server: &TestServer, view: &BTreeMap<u64, Value>, leader: &Value) {
    let list = server.get("/nodes?status=all").1;
    let listed: Vec<Value> = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(shape)
        .collect();
    let held: Vec<Value> = view.values().map(shape).collect();
    assert_eq!(held, listed, "the view built from deltas is the list");
    let named = server.get("/leader").1["leader"]["node_id"].clone();
    assert_eq!(*leader, named, "the leader");
}

#[test]
fn a_delta_carries_joins_updates_leader_suspicions_recoveries_leaves_and_reaps_in_order() {
    let server = slow_liveness();
    let start = get(&server.url, "/nodes?changes=1", &[]);
    assert_eq!(start.body["full"], true, "no index: the full list");
    let mut view = BTreeMap::new();
    apply(&mut view, &start.body);
    let from = start.index.unwrap();

    server.register(1); // joined, and leader (bootstrap)
    server.register(2);
    server.register(3);
    let mut moved = registration(3);
    moved["metadata"] = json!({"zone": "b"});
    assert_eq!(server.post_json("/register", &moved).0, 200); // updated
    assert_eq!(
        server.post_json("/leader", &json!({"leader_id": 2})).1["status"],
        "updated"
    );
    sweep_after(&server, 61); // suspected 1, 2, 3
    for id in [2, 3] {
        assert_eq!(
            server.post_json("/heartbeat", &json!({"node_id": id})).1["status"],
            "acknowledged"
        ); // recovered
    }
    assert_eq!(server.post_json("/remove", &json!({"node_id": 3})).0, 200); // left

    let delta = get(&server.url, &format!("/nodes?index={from}&changes=1"), &[]);
    assert_eq!(delta.status, 200);
    assert_eq!(delta.body["full"], false, "{}", delta.body);
    assert_eq!(delta.index, delta.body["registry_version"].as_u64());
    assert!(delta.epoch.is_some());
    let versions: Vec<u64> = delta.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["registry_version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert!(versions[0] > from && *versions.last().unwrap() == delta.index.unwrap());
    // Node 3 went: its earlier events are left out (their records are gone), its departure
    // is what counts.
    let e = |name: &str, id: Value| (name.to_owned(), id);
    assert_eq!(
        events(&delta.body),
        vec![
            e("joined", json!(1)),
            e("leader", json!(1)),
            e("joined", json!(2)),
            e("leader", json!(2)),
            e("suspected", json!(1)),
            e("suspected", json!(2)),
            e("recovered", json!(2)),
            e("left", json!(3)),
        ],
        "{}",
        delta.body
    );
    let leader = apply(&mut view, &delta.body);
    assert_eq!(leader, json!(2));
    same_as_the_list(&server, &view, &leader);
    // The records are the list's (status included).
    assert_eq!(view[&1]["status"], "suspected");
    assert_eq!(view[&2]["status"], "active");

    // Ten minutes of silence: nodes 1 and 2 (the leader) are reaped.
    let from = delta.index.unwrap();
    sweep_after(&server, 601);
    let reaped = get(&server.url, &format!("/nodes?index={from}&changes=1"), &[]);
    let mut reaps = events(&reaped.body);
    reaps.sort_by_key(|(name, id)| (name.clone(), id.to_string()));
    assert_eq!(
        reaps,
        vec![
            e("leader", Value::Null),
            e("reaped", json!(1)),
            e("reaped", json!(2)),
        ],
        "{}",
        reaped.body
    );
    apply(&mut view, &reaped.body);
    // A new leader removed on request: `left`, and no leader.
    let after_reap = reaped.index.unwrap();
    server.register(4);
    server.register(5);
    assert_eq!(
        server.post_json("/leader", &json!({"leader_id": 4})).1["status"],
        "updated"
    );
    assert_eq!(server.post_json("/remove", &json!({"node_id": 4})).0, 200);
    let last = get(
        &server.url,
        &format!("/nodes?index={after_reap}&changes=1"),
        &[],
    );
    assert_eq!(
        events(&last.body),
        vec![
            e("joined", json!(5)),
            e("leader", json!(4)),
            e("left", json!(4)),
            e("leader", Value::Null),
        ],
        "{}",
        last.body
    );
    let leader = apply(&mut view, &last.body);
    assert_eq!(leader, Value::Null);
    same_as_the_list(&server, &view, &leader);

    // Nothing new, and no wait: an empty delta at the same index.
    let now = last.index.unwrap();
    let nothing = get(
        &server.url,
        &format!("/nodes?index={now}&changes=1&wait=0"),
        &[],
    );
    assert_eq!(nothing.body["changes"], json!([]));
    assert_eq!(nothing.body["full"], false);
    assert_eq!(nothing.index, Some(now));
}

#[test]
fn a_delta_further_back_than_the_journal_reaches_is_the_full_list_marked_full() {
    let server = TestServer::start();
    server.register(1);
    let from = index_of(&server);
    server.server.gateway().set_delta_limit(2);
    for id in 2..=4 {
        server.register(id);
    }
    let answer = get(&server.url, &format!("/nodes?index={from}&changes=1"), &[]);
    assert_eq!(answer.body["full"], true, "{}", answer.body);
    assert_eq!(answer.body["changes"], json!([]));
    let ids: Vec<u64> = answer.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert_eq!(answer.body["leader"], 1);
    assert_eq!(answer.index, answer.body["registry_version"].as_u64());
    // Within the limit it is a delta again.
    let near = answer.index.unwrap() - 1;
    let delta = get(&server.url, &format!("/nodes?index={near}&changes=1"), &[]);
    assert_eq!(delta.body["full"], false, "{}", delta.body);

    // Another run's index, or an index from the future, starts over too.
    let index = answer.index.unwrap();
    let other_run = get(
        &server.url,
        &format!("/nodes?index={index}&epoch=another-run&changes=1"),
        &[],
    );
    assert_eq!(other_run.body["full"], true);
    let future = get(
        &server.url,
        &format!("/nodes?index={}&changes=1", index + 10),
        &[],
    );
    assert_eq!(future.body["full"], true);
}

#[test]
fn a_restarted_durable_gateway_answers_an_index_from_its_last_run_with_the_full_list() {
    let dir = std::env::temp_dir().join(format!("gateway-it-delta-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let durable = |c: &mut cluster_gateway::ServerConfig| c.data_dir = Some(dir.clone());
    let before = {
        let server = TestServer::with(durable);
        server.register(1);
        server.register(2);
        index_of(&server)
    };
    let server = TestServer::with(durable);
    assert_eq!(index_of(&server), before, "the version came back");
    // The journal starts afresh at the restored version: what came before it is not kept.
    let answer = get(
        &server.url,
        &format!("/nodes?index={}&changes=1", before - 1),
        &[],
    );
    assert_eq!(answer.body["full"], true, "{}", answer.body);
    assert_eq!(answer.body["nodes"].as_array().unwrap().len(), 2);
    server.register(3);
    let answer = get(
        &server.url,
        &format!("/nodes?index={before}&changes=1"),
        &[],
    );
    assert_eq!(events(&answer.body), [("joined".to_owned(), json!(3))]);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_parked_delta_watcher_woken_by_a_change_gets_only_that_change() {
    let server = TestServer::start();
    for id in 1..=200 {
        server.register(id);
    }
    let index = index_of(&server);
    let epoch = get(&server.url, "/nodes", &[]).epoch.unwrap();
    let watcher = {
        let url = server.url.clone();
        let path = format!("/nodes?index={index}&epoch={epoch}&changes=1&wait=5m");
        std::thread::spawn(move || get(&url, &path, &[]))
    };
    assert!(eventually(LIMIT, || server.server.watchers_waiting() == 1));
    server.register(201);
    let answer = within(LIMIT, move || watcher.join().unwrap());
    assert_eq!(answer.status, 200);
    assert_eq!(events(&answer.body), [("joined".to_owned(), json!(201))]);
    assert_eq!(
        shape(&answer.body["changes"][0]["node"]),
        shape(&server.get("/nodes/201").1),
        "the record as /nodes shows it"
    );
    assert_eq!(answer.index, Some(index + 1));
    assert!(answer.bytes < 1024, "{} bytes for one change", answer.bytes);
}

#[test]
fn filters_apply_or_are_refused_with_the_reason() {
    let server = TestServer::start();
    server.register(1);
    let from = index_of(&server);
    server.register(2);
    server.register(3);
    let all = get(
        &server.url,
        &format!("/nodes?index={from}&changes=1&status=all"),
        &[],
    );
    assert_eq!(all.status, 200);
    let without_2 = get(
        &server.url,
        &format!("/nodes?index={from}&changes=1&node_id=2"),
        &[],
    );
    assert_eq!(events(&without_2.body), [("joined".to_owned(), json!(3))]);
    let full_without_2 = get(&server.url, "/nodes?changes=1&node_id=2", &[]);
    assert_eq!(full_without_2.body["nodes"].as_array().unwrap().len(), 2);
    for refused in ["capability=raft", "status=active", "changes=yes"] {
        let answer = get(
            &server.url,
            &format!("/nodes?index={from}&changes=1&{refused}"),
            &[],
        );
        assert_eq!(answer.status, 400, "{refused}: {}", answer.body);
        assert!(answer.body["error"].as_str().unwrap().len() > 10);
    }
    // changes=0 is the plain list, as is any /nodes without it.
    let plain = get(&server.url, "/nodes?changes=0", &[]);
    assert_eq!(plain.body, server.get("/nodes").1);
}

#[test]
fn with_tokens_a_delta_long_poll_is_refused_before_it_parks() {
    const READ: &str = "r3ad-t0ken-aaaaaaaaaaaa";
    let server = TestServer::with(|c| {
        c.tokens.inline = Some(Secret::new(format!(
            "read:dash:{READ}\nwrite:ops:wr1te-t0ken-bbbbbbbbbbb\n"
        )));
    });
    let bearer = format!("Bearer {READ}");
    let index = get(&server.url, "/nodes", &[("Authorization", &bearer)])
        .index
        .unwrap();
    let path = format!("/nodes?index={index}&changes=1&wait=5m");
    let (url, refused_path) = (server.url.clone(), path.clone());
    // Unparked, the refusal comes at once; parked, it would wait five minutes.
    let refused = within(LIMIT, move || get(&url, &refused_path, &[]));
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(server.server.watchers_waiting(), 0);
    // With the token it parks.
    let (url, bearer2) = (server.url.clone(), bearer.clone());
    let watcher = std::thread::spawn(move || get(&url, &path, &[("Authorization", &bearer2)]));
    assert!(eventually(LIMIT, || server.server.watchers_waiting() == 1));
    drop(server);
    let answer = within(LIMIT, move || watcher.join().unwrap());
    assert_eq!(answer.status, 200, "answered at stop");
}
