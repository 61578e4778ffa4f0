//! The blocking client, its heartbeat thread and the discovery handle, against in-process
//! gateways with short intervals.

use std::time::{Duration, Instant};

use cluster_gateway::api::Registration;
use cluster_gateway::discovery::{Discovery, GatewayDiscovery};
use cluster_gateway::{ClientError, GatewayClient, GatewayServer, ServerConfig};
use serde_json::Value;

use crate::support::{TestServer, eventually, free_port, own_host};

fn fast_server() -> TestServer {
    TestServer::with(fast)
}

fn fast(config: &mut ServerConfig) {
    config.heartbeat_interval = Duration::from_millis(50);
    config.liveness.suspect_after = Duration::from_millis(300);
    config.liveness.node_timeout = Duration::from_millis(800);
}

fn client(server: &TestServer) -> GatewayClient {
    GatewayClient::builder()
        .gateway(server.url.clone())
        .heartbeat_interval(Duration::from_millis(50))
        .timeout(Duration::from_secs(2))
        .retry_base_delay(Duration::from_millis(20))
        .build()
        .unwrap()
}

fn node(node_id: u64) -> Registration {
    Registration {
        node_id,
        ip_address: "127.0.0.1".into(),
        port: 6000 + node_id as u16,
        capabilities: vec!["raft".into(), "gossip".into()],
        metadata: None,
        previous_epoch: None,
    }
}

fn registered(server: &TestServer, node_id: u64) -> Option<Value> {
    let (_, nodes) = server.get("/nodes?status=all");
    nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == node_id)
        .cloned()
}

/// A port nothing listens on, on an address no other test uses.
fn closed_port() -> u16 {
    free_port(own_host::CLOSED)
}

#[test]
fn first_node_bootstraps_and_the_second_joins_it() {
    let server = TestServer::start();
    let a = client(&server);
    let (bootstrap, cluster) = a.discover_cluster(node(1)).unwrap();
    assert!(bootstrap);
    assert!(cluster.nodes.is_empty());
    assert_eq!(cluster.leader.unwrap().node_id, 1);

    let b = client(&server);
    let (bootstrap, cluster) = b.discover_cluster(node(2)).unwrap();
    assert!(!bootstrap);
    assert_eq!(
        cluster.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(
        b.get_nodes(true)
            .unwrap()
            .iter()
            .map(|n| n.node_id)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(b.get_nodes(false).unwrap().len(), 2);
    assert_eq!(b.get_leader().unwrap().unwrap().node_id, 1);
    assert!(b.update_leader(2).unwrap());
    assert!(!b.update_leader(99).unwrap());
    assert_eq!(a.get_stats().unwrap().leader_id, Some(2));
    assert_eq!(a.health_check().unwrap().status, "healthy");
    assert!(a.is_gateway_available());
}

#[test]
fn the_cached_view_follows_the_registry_through_heartbeats() {
    let server = fast_server();
    let a = client(&server);
    a.discover_cluster(node(1)).unwrap();
    let b = client(&server);
    b.discover_cluster(node(2)).unwrap();
    // A learns of B from a heartbeat answer's registry_version, without asking.
    assert!(eventually(Duration::from_secs(10), || {
        a.cluster_view()
            .is_some_and(|v| v.cluster.nodes.iter().any(|n| n.node_id == 2))
    }));
    assert!(a.status().last_success.is_some());
    assert_eq!(a.status().consecutive_failures, 0);
}

#[test]
fn heartbeats_keep_a_node_alive_well_past_node_timeout() {
    let server = fast_server();
    let c = client(&server);
    c.register_node(node(1)).unwrap();
    // Three node timeouts pass; the node must be there, active, at every look.
    let until = Instant::now() + Duration::from_millis(2400);
    while Instant::now() < until {
        let record = registered(&server, 1).expect("the heartbeating node was reaped");
        assert_eq!(record["status"], "active");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn a_node_whose_heartbeats_stop_is_suspected_then_reaped() {
    let server = fast_server();
    let c = client(&server);
    c.register_node(node(1)).unwrap();
    c.shutdown();
    assert!(eventually(Duration::from_secs(10), || registered(
        &server, 1
    )
    .is_some_and(|n| n["status"] == "suspected")));
    assert!(eventually(Duration::from_secs(10), || registered(
        &server, 1
    )
    .is_none()));
    assert_eq!(server.get("/stats").1["reaped_total"], 1);
}

#[test]
fn after_a_gateway_restart_the_client_registers_again_within_an_interval() {
    let first = TestServer::with(|c| {
        fast(c);
        c.host = own_host::CLIENT_RESTART.into();
    });
    let addr = first.addr();
    let c = client(&first);
    c.register_node(node(7)).unwrap();
    let old_epoch = first.get("/health").1["epoch"].clone();
    drop(first);

    // Same port, empty registry. The port may take a moment to be free again.
    let mut second = None;
    assert!(eventually(Duration::from_secs(10), || {
        second = GatewayServer::new(ServerConfig {
            host: own_host::CLIENT_RESTART.into(),
            port: addr.port(),
            ..ServerConfig::default()
        })
        .start()
        .ok();
        second.is_some()
    }));
    let second = second.unwrap();
    let url = format!("http://{}", second.local_addr());
    let restarted = Instant::now();
    let back = eventually(Duration::from_secs(10), || {
        let mut answer = crate::support::agent()
            .get(format!("{url}/nodes"))
            .call()
            .unwrap();
        let nodes: Value =
            serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
        nodes["nodes"].as_array().unwrap().len() == 1
    });
    assert!(back, "the client never registered again");
    // One 50 ms interval, with room for a loaded machine.
    assert!(
        restarted.elapsed() < Duration::from_secs(2),
        "took {:?}",
        restarted.elapsed()
    );
    assert!(eventually(Duration::from_secs(5), || c
        .status()
        .gateway_epoch
        .is_some_and(|e| e != old_epoch)));
}

#[test]
fn the_client_fails_over_to_the_next_gateway() {
    let first = TestServer::with(|c| c.host = own_host::FAILOVER.into());
    let second = TestServer::start();
    let c = GatewayClient::builder()
        .gateway(first.url.clone())
        .gateway(second.url.clone())
        .retry_base_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    assert_eq!(
        c.health_check().unwrap().epoch,
        first.get("/health").1["epoch"]
    );
    drop(first);
    assert_eq!(
        c.health_check().unwrap().epoch,
        second.get("/health").1["epoch"]
    );
    assert_eq!(c.status().current_gateway, second.url);
}

#[test]
fn shutdown_returns_at_once_and_stops_the_thread() {
    let server = TestServer::start();
    let c = GatewayClient::builder()
        .gateway(server.url.clone())
        .heartbeat_interval(Duration::from_secs(60))
        .build()
        .unwrap();
    c.register_node(node(1)).unwrap();
    assert!(c.status().heartbeat_running);
    let started = Instant::now();
    c.shutdown();
    // Not the 60 s interval: the thread is woken, not waited out.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(!c.status().heartbeat_running);
    // The registration stays until reaped.
    assert!(registered(&server, 1).is_some());
}

#[test]
fn leave_deregisters_the_node() {
    let server = TestServer::start();
    let c = client(&server);
    c.register_node(node(1)).unwrap();
    c.leave().unwrap();
    assert!(registered(&server, 1).is_none());
    assert!(!c.status().heartbeat_running);
    assert_eq!(c.heartbeat(), Err(ClientError::NotRegistered));
}

#[test]
fn the_gateway_error_text_reaches_the_caller() {
    let server = TestServer::start();
    let c = client(&server);
    let bad = Registration {
        ip_address: "not an address".into(),
        ..node(1)
    };
    match c.register_node(bad) {
        Err(ClientError::Gateway {
            status, message, ..
        }) => {
            assert_eq!(status, 400);
            assert!(message.starts_with("Invalid ip_address"), "{message}");
        }
        other => panic!("expected the gateway's refusal, got {other:?}"),
    }
    assert!(
        !c.status().heartbeat_running,
        "a refused registration starts no heartbeat"
    );
}

#[test]
fn an_unreachable_gateway_is_reported_with_its_address() {
    let port = closed_port();
    let c = GatewayClient::builder()
        .gateway(format!("{}:{port}", own_host::CLOSED))
        .retry_base_delay(Duration::from_millis(1))
        .build()
        .unwrap();
    let err = c.health_check().unwrap_err();
    assert!(err.is_transport(), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert!(!c.is_gateway_available());
}

struct MyNode {
    discovery: Discovery,
}

impl GatewayDiscovery for MyNode {
    fn discovery(&self) -> &Discovery {
        &self.discovery
    }
}

#[test]
fn the_discovery_handle_degrades_without_a_gateway() {
    let node = MyNode {
        discovery: Discovery::new(),
    };
    let info = node.initialize_discovery(
        own_host::CLOSED,
        closed_port(),
        1,
        "127.0.0.1",
        5001,
        &["raft"],
        None,
    );
    assert!(!info.gateway_available);
    assert!(info.error.is_some());
    assert!(!node.is_bootstrap_node());
    assert!(node.cluster_nodes().is_empty());
    assert!(node.cluster_leader().is_none());
    assert!(!node.update_gateway_leader(1));
    node.shutdown_discovery();
}

#[test]
fn the_discovery_handle_joins_and_tracks_the_cluster() {
    let server = TestServer::start();
    let port = server.addr().port();
    let first = MyNode {
        discovery: Discovery::new(),
    };
    let info = first.initialize_discovery("127.0.0.1", port, 1, "127.0.0.1", 5001, &["raft"], None);
    assert!(info.gateway_available, "{info:?}");
    assert!(first.is_bootstrap_node());
    let second = MyNode {
        discovery: Discovery::new(),
    };
    second.initialize_discovery("127.0.0.1", port, 2, "127.0.0.1", 5002, &["raft"], None);
    assert!(!second.is_bootstrap_node());
    assert_eq!(second.cluster_nodes().len(), 1);
    assert_eq!(second.cluster_leader().unwrap().node_id, 1);
    assert!(second.update_gateway_leader(2));
    assert_eq!(server.get("/leader").1["leader"]["node_id"], 2);
    first.shutdown_discovery();
    second.shutdown_discovery();
}

#[test]
fn a_node_started_before_its_gateway_registers_once_the_gateway_is_up() {
    let host = own_host::STARTED_BEFORE_GATEWAY;
    let port = free_port(host);
    let node = MyNode {
        discovery: Discovery::new(),
    };
    let client = GatewayClient::builder()
        .gateway(format!("{host}:{port}"))
        .heartbeat_interval(Duration::from_millis(50))
        .retry_base_delay(Duration::from_millis(5))
        .build()
        .unwrap();
    let info = node
        .discovery()
        .initialize_with(client, node_registration());
    assert!(!info.gateway_available);
    let mut server = None;
    assert!(eventually(Duration::from_secs(10), || {
        server = GatewayServer::new(ServerConfig {
            host: host.into(),
            port,
            ..ServerConfig::default()
        })
        .start()
        .ok();
        server.is_some()
    }));
    let url = format!("http://{host}:{port}");
    assert!(eventually(Duration::from_secs(10), || {
        let mut answer = crate::support::agent()
            .get(format!("{url}/nodes"))
            .call()
            .unwrap();
        answer
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("\"node_id\":9")
    }));
    assert!(eventually(Duration::from_secs(10), || node
        .discovery_info()
        .gateway_available));
    node.shutdown_discovery();
}

fn node_registration() -> Registration {
    node(9)
}
