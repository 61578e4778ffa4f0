//! Faults: racing bootstraps over real HTTP, the gateway killed and restarted under
//! heartbeating clients, and the gateway gone for several intervals.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_gateway::api::Registration;
use cluster_gateway::{GatewayClient, GatewayServer, ServerConfig};
use serde_json::json;

use crate::support::{
    Barrier, TestServer, agent, eventually, free_port, join_all, own_host, registration,
};

/// Rounds of the bootstrap race: all of them when `GATEWAY_SLOW_TESTS` is set (CI sets it).
fn rounds() -> usize {
    if std::env::var_os("GATEWAY_SLOW_TESTS").is_some() {
        1000
    } else {
        100
    }
}

#[test]
fn exactly_one_of_fifty_http_clients_bootstraps_every_round() {
    let server = TestServer::with(|c| c.workers = 8);
    let url = server.url.clone();
    let rounds = rounds();
    // If one racer panics, the barrier breaks and the others fail too, instead of waiting for
    // it forever.
    let barrier = Barrier::new(50);
    let winners = Arc::new(Mutex::new(vec![0usize; rounds]));
    let racers: Vec<_> = (0..50u64)
        .map(|id| {
            let (url, barrier, winners) = (url.clone(), Arc::clone(&barrier), Arc::clone(&winners));
            std::thread::spawn(move || {
                let _guard = barrier.guard();
                // A connection per request, as the gateway's own client does: tiny_http's
                // connection pool can leave a new connection waiting while keep-alive
                // connections hold all its threads (see RELIABILITY.md).
                let client: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(20)))
                    .max_idle_connections(0)
                    .max_idle_connections_per_host(0)
                    .build()
                    .into();
                let body = registration(id).to_string();
                let leave = json!({"node_id": id}).to_string();
                for round in 0..rounds {
                    barrier.wait();
                    let mut answer = client.post(format!("{url}/register")).send(&body).unwrap();
                    let answer: serde_json::Value =
                        serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
                    if answer["is_bootstrap"] == true {
                        winners.lock().unwrap()[round] += 1;
                    }
                    // Everyone leaves on purpose: the next round starts from an empty, armed
                    // registry.
                    barrier.wait();
                    let mut left = client
                        .post(format!("{url}/remove"))
                        .send(&leave)
                        .unwrap_or_else(|e| panic!("remove {id} in round {round}: {e}"));
                    left.body_mut().read_to_string().unwrap();
                }
            })
        })
        .collect();
    join_all(racers, Duration::from_secs(1200));
    let winners = winners.lock().unwrap();
    for (round, &count) in winners.iter().enumerate() {
        assert_eq!(count, 1, "round {round} had {count} bootstrap nodes");
    }
}

/// A gateway-server process on a fixed port.
fn spawn_server(port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gateway-server"))
        .args([
            "--host",
            own_host::SIGKILL,
            "--port",
            &port.to_string(),
            "--heartbeat-interval",
            "1",
            "--log-level",
            "ERROR",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn count_nodes(url: &str) -> Option<usize> {
    let mut answer = agent().get(format!("{url}/nodes")).call().ok()?;
    let nodes: serde_json::Value =
        serde_json::from_str(&answer.body_mut().read_to_string().ok()?).ok()?;
    nodes["nodes"].as_array().map(Vec::len)
}

fn heartbeating_client(url: &str, node_id: u64) -> GatewayClient {
    let client = GatewayClient::builder()
        .gateway(url)
        .heartbeat_interval(Duration::from_secs(1))
        .timeout(Duration::from_secs(1))
        .retry_base_delay(Duration::from_millis(50))
        .build()
        .unwrap();
    client
        .register_node(Registration {
            node_id,
            ip_address: "127.0.0.1".into(),
            port: 7000 + node_id as u16,
            capabilities: vec!["raft".into()],
            metadata: None,
            previous_epoch: None,
        })
        .unwrap();
    client
}

#[test]
fn after_sigkill_and_restart_every_client_registers_again() {
    let port = free_port(own_host::SIGKILL);
    let url = format!("http://{}:{port}", own_host::SIGKILL);
    let mut server = spawn_server(port);
    assert!(eventually(Duration::from_secs(20), || count_nodes(&url).is_some()));
    let clients: Vec<GatewayClient> = (1..=20).map(|id| heartbeating_client(&url, id)).collect();
    assert_eq!(count_nodes(&url), Some(20));

    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let mut server = spawn_server(port);
    assert!(eventually(Duration::from_secs(20), || count_nodes(&url).is_some()));
    // How fast is for scripts/bench.sh to measure: a timed assertion here failed on a loaded
    // machine (3.4 s against 2.5 s) while the clients did exactly what they should.
    assert!(
        eventually(Duration::from_secs(20), || count_nodes(&url) == Some(20)),
        "not every client came back"
    );
    for client in &clients {
        assert!(client.status().heartbeat_running, "a heartbeat thread died");
    }
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn while_the_gateway_is_gone_clients_keep_their_view_report_it_and_recover() {
    let first = TestServer::with(|c| c.host = own_host::GONE.into());
    let port = first.addr().port();
    let url = first.url.clone();
    let clients: Vec<GatewayClient> = (1..=3)
        .map(|id| {
            let c = GatewayClient::builder()
                .gateway(url.clone())
                .heartbeat_interval(Duration::from_millis(100))
                .timeout(Duration::from_millis(500))
                .retry_base_delay(Duration::from_millis(10))
                .build()
                .unwrap();
            c.register_node(Registration {
                node_id: id,
                ip_address: "127.0.0.1".into(),
                port: 7100 + id as u16,
                capabilities: vec![],
                metadata: None,
                previous_epoch: None,
            })
            .unwrap();
            c
        })
        .collect();
    for client in &clients {
        let both_peers = || {
            client
                .cluster_view()
                .is_some_and(|v| v.cluster.nodes.len() == 2)
        };
        assert!(eventually(Duration::from_secs(10), both_peers));
    }
    drop(first);

    // Several intervals without a gateway.
    for client in &clients {
        assert!(eventually(Duration::from_secs(20), || client
            .status()
            .consecutive_failures
            >= 3));
        let status = client.status();
        assert!(status.last_error.is_some());
        let view = client.cluster_view().expect("the last view is kept");
        assert_eq!(view.cluster.nodes.len(), 2);
        assert!(view.age() >= Duration::from_millis(100));
    }

    let mut second = None;
    assert!(eventually(Duration::from_secs(10), || {
        second = GatewayServer::new(ServerConfig {
            host: own_host::GONE.into(),
            port,
            ..ServerConfig::default()
        })
        .start()
        .ok();
        second.is_some()
    }));
    assert!(eventually(Duration::from_secs(20), || count_nodes(&url) == Some(3)));
    for client in &clients {
        assert!(eventually(Duration::from_secs(10), || client
            .status()
            .consecutive_failures
            == 0));
        assert!(client.status().last_error.is_none());
    }
}
