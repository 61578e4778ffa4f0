//! Safe restarts: the data directory over HTTP, `kill -9` in a storm of registrations, and
//! rejoining nodes that never bootstrap a second cluster.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::server_cli::Process;
use crate::support::Guarded;
use crate::support::{TestServer, eventually, registration};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-server");

/// A fresh directory, removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new(name: &str) -> DataDir {
        let path = std::env::temp_dir().join(format!("gateway-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        DataDir(path)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway-server process on `dir`.
fn start(dir: &Path) -> Process {
    Process::start(&["--data-dir", dir.to_str().unwrap()], &[])
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .proxy(None)
        .build()
        .into()
}

/// How long the storm may take to get going, and a client to wait for an answer.
const STORM_PATIENCE: Duration = Duration::from_secs(300);

/// What one client sent and what the gateway acknowledged, per node: the highest metadata
/// round attempted and the highest acknowledged.
#[derive(Default)]
struct Ledger {
    attempted: HashMap<u64, u64>,
    acknowledged: HashMap<u64, u64>,
}

#[test]
fn kill_9_in_a_storm_of_registrations_loses_nothing_acknowledged_and_invents_nothing() {
    let dir = DataDir::new("storm");
    let mut gateway = start(&dir.0);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let acked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8u64)
        .map(|client| {
            let (url, ledger, acked, stop) = (
                gateway.url.clone(),
                Arc::clone(&ledger),
                Arc::clone(&acked),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                // A slow answer is not a gone gateway: on a loaded machine a durable
                // registration has taken seconds.
                let agent = agent(STORM_PATIENCE);
                // Each client joins new nodes and changes the metadata of the ones it has,
                // until the gateway is gone (or the test has given up on the storm).
                let deadline = std::time::Instant::now() + STORM_PATIENCE;
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    round += 1;
                    let node_id = client * 1_000_000 + round % 50;
                    let mut body = registration(node_id);
                    body["metadata"] = json!({"round": round});
                    ledger.lock().unwrap().attempted.insert(node_id, round);
                    let answer = agent.post(format!("{url}/register")).send(body.to_string());
                    match answer {
                        Ok(answer) if answer.status() == 200 => {
                            ledger.lock().unwrap().acknowledged.insert(node_id, round);
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => panic!("unexpected status {}", answer.status()),
                        Err(_) => return, // the gateway is gone
                    }
                }
            })
        })
        .collect();
    // The kill comes once the storm has got going and has touched the nodes the checks
    // below count on, however long a loaded machine takes to get there.
    let going =
        || acked.load(Ordering::Relaxed) >= 600 && ledger.lock().unwrap().acknowledged.len() >= 300;
    assert!(
        eventually(STORM_PATIENCE, going),
        "the storm got going: {} registrations acknowledged, {} nodes",
        acked.load(Ordering::Relaxed),
        ledger.lock().unwrap().acknowledged.len()
    );
    gateway.kill_9();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("a client thread");
    }

    let gateway = start(&dir.0);
    let nodes = gateway.get("/nodes?status=all");
    let stored: HashMap<u64, u64> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_id"].as_u64().unwrap(),
                n["metadata"]["round"].as_u64().unwrap(),
            )
        })
        .collect();
    let ledger = ledger.lock().unwrap();
    assert!(
        ledger.acknowledged.len() >= 300,
        "many nodes were acknowledged"
    );
    for (node_id, &round) in &ledger.acknowledged {
        let kept = stored
            .get(node_id)
            .unwrap_or_else(|| panic!("acknowledged node {node_id} was lost"));
        assert!(
            *kept >= round,
            "node {node_id}: round {round} was acknowledged, {kept} survived"
        );
    }
    for (node_id, kept) in &stored {
        let attempted = ledger
            .attempted
            .get(node_id)
            .unwrap_or_else(|| panic!("node {node_id} was never sent"));
        assert!(
            kept <= attempted,
            "node {node_id}: round {kept} was never sent"
        );
    }
    println!(
        "{} registrations acknowledged before kill -9, {} nodes; all {} back after restart",
        acked.load(Ordering::Relaxed),
        ledger.acknowledged.len(),
        stored.len()
    );
}

#[test]
fn a_second_server_on_the_same_data_directory_refuses_to_start() {
    let dir = DataDir::new("locked");
    let _first = start(&dir.0);
    let output = Command::new(BIN)
        .args(["--host", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(&dir.0)
        .guarded_output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another gateway-server"),
        "{stderr}"
    );
    assert!(stderr.contains(&dir.0.display().to_string()), "{stderr}");
}

#[test]
fn after_kill_9_the_lock_is_free_and_leader_version_and_bootstrap_come_back() {
    let dir = DataDir::new("lock-after-kill");
    let mut gateway = start(&dir.0);
    let post = |url: &str, path: &str, body: Value| {
        let mut answer = agent(Duration::from_secs(20))
            .post(format!("{url}{path}"))
            .send(body.to_string())
            .unwrap();
        serde_json::from_str::<Value>(&answer.body_mut().read_to_string().unwrap()).unwrap()
    };
    assert_eq!(
        post(&gateway.url, "/register", registration(1))["is_bootstrap"],
        true
    );
    post(&gateway.url, "/register", registration(2));
    post(&gateway.url, "/leader", json!({"leader_id": 2}));
    let before = gateway.get("/stats");
    gateway.kill_9();

    let gateway = start(&dir.0);
    let after = gateway.get("/stats");
    assert_eq!(after["leader_id"], 2);
    assert_eq!(after["total_nodes"], 2);
    assert_eq!(after["registry_version"], before["registry_version"]);
    assert_eq!(after["bootstrap_armed"], false);
    assert_eq!(after["durable"], true);
    assert_ne!(after["epoch"], before["epoch"], "a new run, a new epoch");
    let newcomer = post(&gateway.url, "/register", registration(3));
    assert_eq!(
        newcomer["is_bootstrap"], false,
        "no second cluster after a restart"
    );
}

#[test]
fn stats_show_the_data_directory_and_its_log() {
    let dir = DataDir::new("stats");
    let server = TestServer::with(|c| c.data_dir = Some(dir.0.clone()));
    server.register(1);
    let stats = server.get("/stats").1;
    assert_eq!(stats["durable"], true);
    assert_eq!(stats["data_dir"], dir.0.display().to_string());
    assert!(stats["log_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["last_compaction"], Value::Null);

    let memory = TestServer::start();
    let stats = memory.get("/stats").1;
    assert_eq!(stats["durable"], false);
    assert_eq!(stats["data_dir"], Value::Null);
}

#[test]
fn restored_nodes_are_reaped_when_they_never_come_back() {
    let dir = DataDir::new("reap");
    let quick = |c: &mut cluster_gateway::ServerConfig| {
        c.data_dir = Some(dir.0.clone());
        c.heartbeat_interval = Duration::from_millis(100);
        c.liveness.suspect_after = Duration::from_millis(1500);
        c.liveness.node_timeout = Duration::from_secs(3);
    };
    {
        let server = TestServer::with(quick);
        server.register(1);
        server.register(2);
    }
    let server = TestServer::with(quick);
    assert_eq!(server.get("/stats").1["total_nodes"], 2, "both restored");
    // Node 2 comes back and keeps beating; node 1 never does.
    let gone = eventually(Duration::from_secs(60), || {
        let (status, _) = server.post_json("/heartbeat", &json!({"node_id": 2}));
        assert_eq!(status, 200);
        server.get("/stats").1["total_nodes"] == 1
    });
    assert!(gone, "node 1 was reaped");
    let nodes = server.get("/nodes?status=all").1;
    assert_eq!(nodes["nodes"][0]["node_id"], 2, "{nodes}");
    assert_eq!(
        server.get("/leader").1["leader"],
        Value::Null,
        "the leader left with it"
    );
}

#[test]
fn in_memory_a_rejoining_node_and_then_a_newcomer_never_bootstrap_after_a_restart() {
    let epoch = {
        let before = TestServer::start();
        let first = before.register(1);
        assert_eq!(first["is_bootstrap"], true);
        first["epoch"].as_str().unwrap().to_owned()
    };
    // A restart without a data directory: the registry is empty and armed.
    let after = TestServer::start();
    let mut rejoin = registration(1);
    rejoin["previous_epoch"] = json!(epoch);
    let (status, answer) = after.post_json("/register", &rejoin);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["is_bootstrap"], false,
        "the survivor rejoins, it does not bootstrap"
    );
    assert_eq!(
        after.register(2)["is_bootstrap"],
        false,
        "nor does the newcomer"
    );
}
