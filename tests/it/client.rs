//! The blocking client, its heartbeat thread and the discovery handle, against in-process
//! gateways with short intervals.

use std::time::{Duration, Instant};

use cluster_gateway::api::Registration;
use cluster_gateway::client::discovery::{Discovery, GatewayDiscovery};
use cluster_gateway::server::registry::{Now, unix_now};
use cluster_gateway::{ClientError, GatewayClient, GatewayServer, ServerConfig};
use serde_json::Value;

use crate::support::Guarded;
use crate::support::{
    ClosedPort, FakeGateway, TestServer, eventually, free_port, own_host, within,
};

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
    Registration::new(node_id, "127.0.0.1", 6000 + node_id as u16).capabilities(["raft", "gossip"])
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
    // Nodes are never suspected or reaped in real time here (a loaded machine held the
    // 50 ms beats up past the 800 ms node timeout): only the view is the question.
    let server = TestServer::with(|c| {
        fast(c);
        c.liveness.suspect_after = Duration::from_secs(3600);
        c.liveness.node_timeout = Duration::from_secs(36000);
    });
    let a = client(&server);
    a.discover_cluster(node(1)).unwrap();
    let b = client(&server);
    b.discover_cluster(node(2)).unwrap();
    // A learns of B from a heartbeat answer's registry_version, without asking.
    assert!(eventually(Duration::from_secs(60), || {
        a.cluster_view()
            .is_some_and(|v| v.cluster.nodes.iter().any(|n| n.node_id == 2))
    }));
    // A beat that a loaded machine held past the client's 2 s timeout counts as a failure
    // until the next one succeeds: the status says so once one has.
    assert!(eventually(Duration::from_secs(60), || {
        let status = a.status();
        status.last_success.is_some() && status.consecutive_failures == 0
    }));
}

fn heartbeats_total(server: &TestServer) -> u64 {
    server.get("/stats").1["heartbeats_total"].as_u64().unwrap()
}

/// Both bounds of the heartbeat pace: never so slow that the node is suspected (2.5 s of
/// slack against the 50 ms interval: a machine with a load average of 31 stalled the client
/// for over a second), never faster than the interval allows (beats are at least 45 ms apart,
/// 50 ms less its 10 % jitter).
#[test]
fn heartbeats_keep_a_node_alive_well_past_node_timeout_and_come_no_faster_than_the_interval() {
    let server = TestServer::with(|c| {
        fast(c);
        c.liveness.suspect_after = Duration::from_millis(2500);
        c.liveness.node_timeout = Duration::from_millis(3000);
    });
    let c = client(&server);
    c.register_node(node(1)).unwrap();
    let (started, beats_before) = (Instant::now(), heartbeats_total(&server));
    // Two node timeouts pass; the node must be there, active, at every look.
    let until = started + Duration::from_millis(6000);
    while Instant::now() < until {
        let record = registered(&server, 1).expect("the heartbeating node was reaped");
        assert_eq!(record["status"], "active");
        std::thread::sleep(Duration::from_millis(25));
    }
    let beats = heartbeats_total(&server) - beats_before;
    let most = (started.elapsed().as_millis() / 45 + 1) as u64;
    eprintln!("{beats} heartbeats in {:?}", started.elapsed());
    assert!(beats <= most, "{beats} heartbeats, at most {most} expected");
}

#[test]
fn a_node_whose_heartbeats_stop_is_suspected_then_reaped() {
    // Suspected after 300 ms of silence in real time, but reaped only by a sweep with injected
    // time: with 500 ms between the two, a loaded machine's slow looks missed the suspicion.
    let server = TestServer::with(|c| {
        fast(c);
        c.liveness.node_timeout = Duration::from_secs(3600);
    });
    let c = client(&server);
    c.register_node(node(1)).unwrap();
    c.shutdown();
    // In this order: the suspicion (no heartbeat for 300 ms after shutdown()), no heartbeat
    // since, then the reaping. Counted from the suspicion: a beat already on the wire when
    // shutdown() returned may still land (it is left to finish), and would end the suspicion.
    assert!(eventually(Duration::from_secs(60), || registered(
        &server, 1
    )
    .is_some_and(|n| n["status"] == "suspected")));
    let beats = heartbeats_total(&server);
    // Long enough for a heartbeat thread that kept running to beat many times (50 ms).
    let suspected = Instant::now();
    while suspected.elapsed() < Duration::from_millis(500) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        registered(&server, 1).map(|n| n["status"].clone()),
        Some(Value::from("suspected")),
        "heard from after shutdown()"
    );
    assert_eq!(
        heartbeats_total(&server),
        beats,
        "a heartbeat after shutdown()"
    );
    server.server.gateway().sweep(Now {
        instant: Instant::now() + Duration::from_secs(3601),
        unix: unix_now() + 3601.0,
    });
    assert!(registered(&server, 1).is_none());
    assert_eq!(
        heartbeats_total(&server),
        beats,
        "a heartbeat after shutdown()"
    );
    assert_eq!(server.get("/stats").1["reaped_total"], 1);
}

#[test]
fn after_a_gateway_restart_the_client_registers_again() {
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
    assert!(eventually(Duration::from_secs(60), || {
        second = GatewayServer::new(ServerConfig::new(own_host::CLIENT_RESTART, addr.port()))
            .start()
            .ok();
        second.is_some()
    }));
    let second = second.unwrap();
    let url = format!("http://{}", second.local_addr());
    let back = eventually(Duration::from_secs(60), || {
        let mut answer = crate::support::agent()
            .get(format!("{url}/nodes"))
            .call()
            .unwrap();
        let nodes: Value =
            serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
        nodes["nodes"].as_array().unwrap().len() == 1
    });
    assert!(back, "the client never registered again");
    assert!(eventually(Duration::from_secs(60), || c
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
    // Not the 60 s interval: the thread is woken, not waited out (a deadline half as long).
    let c = within(Duration::from_secs(30), move || {
        c.shutdown();
        c
    });
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
    let bad = {
        let mut registration = node(1);
        registration.ip_address = "not an address".into();
        registration
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
    let closed = ClosedPort::new();
    let port = closed.port;
    let c = GatewayClient::builder()
        .gateway(closed.address())
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
    let closed = ClosedPort::new();
    let info = node.initialize_discovery(
        closed.host,
        closed.port,
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
    assert!(eventually(Duration::from_secs(60), || {
        server = GatewayServer::new(ServerConfig::new(host, port))
            .start()
            .ok();
        server.is_some()
    }));
    let url = format!("http://{host}:{port}");
    assert!(eventually(Duration::from_secs(60), || {
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
    assert!(eventually(Duration::from_secs(60), || node
        .discovery_info()
        .gateway_available));
    node.shutdown_discovery();
}

fn node_registration() -> Registration {
    node(9)
}

const BUSY: &str = r#"{"error": "busy", "status_code": 503, "timestamp": 1.0}"#;

/// A client of `url` that retries at once.
fn quick(url: &str, attempts: u32) -> GatewayClient {
    GatewayClient::builder()
        .gateway(url)
        .retry_attempts(attempts)
        .retry_base_delay(Duration::from_millis(1))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn a_5xx_is_tried_again_retry_attempts_times() {
    for attempts in [1, 3, 5] {
        let fake = FakeGateway::start(Some(503), BUSY);
        let c = quick(&fake.url(), attempts);
        let err = within(Duration::from_secs(60), move || {
            c.health_check().unwrap_err()
        });
        match &err {
            ClientError::Gateway {
                status, message, ..
            } => {
                assert_eq!(*status, 503);
                assert_eq!(message, "busy");
            }
            other => panic!("expected the gateway's 503, got {other:?}"),
        }
        assert_eq!(
            fake.requests(),
            attempts as usize,
            "tries for retry_attempts({attempts})"
        );
    }
}

#[test]
fn every_gateway_is_tried_at_least_once() {
    let (a, b) = (
        FakeGateway::start(Some(500), BUSY),
        FakeGateway::start(Some(502), BUSY),
    );
    let c = GatewayClient::builder()
        .gateway(a.url())
        .gateway(b.url())
        .retry_attempts(1)
        .retry_base_delay(Duration::from_millis(1))
        .build()
        .unwrap();
    within(Duration::from_secs(60), move || {
        c.health_check().unwrap_err()
    });
    assert_eq!((a.requests(), b.requests()), (1, 1));
}

#[test]
fn a_4xx_is_the_answer_and_is_not_tried_again() {
    let fake = FakeGateway::start(
        Some(400),
        r#"{"error": "Invalid node_id: no", "status_code": 400, "timestamp": 1.0}"#,
    );
    let c = quick(&fake.url(), 5);
    let err = within(Duration::from_secs(60), move || {
        c.update_leader(1).unwrap_err()
    });
    assert_eq!(
        err,
        ClientError::Gateway {
            address: fake.url(),
            status: 400,
            message: "Invalid node_id: no".into()
        }
    );
    assert_eq!(fake.requests(), 1);
}

#[test]
fn a_gateway_that_does_not_answer_is_a_timeout_error() {
    let silent = FakeGateway::start(None, "");
    let c = GatewayClient::builder()
        .gateway(silent.url())
        .timeout(Duration::from_millis(300))
        .retry_attempts(2)
        .retry_base_delay(Duration::from_millis(1))
        .build()
        .unwrap();
    let err = within(Duration::from_secs(60), move || {
        c.health_check().unwrap_err()
    });
    assert_eq!(
        err,
        ClientError::Timeout {
            address: silent.url()
        }
    );
    assert!(err.is_transport());
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(silent.requests(), 2, "a timeout is tried again");
}

#[test]
fn the_timeout_covers_connecting() {
    // A listener whose accept queue is full: the kernel drops further connection attempts, so a
    // connect never completes (a black-holed gateway, on loopback).
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let _queued = std::net::TcpStream::connect(addr).unwrap();
    let stalled = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let blocked = stalled.connect_timeout(&addr.into(), Duration::from_millis(300));
    assert!(
        blocked.is_err(),
        "the accept queue is not full: {blocked:?}"
    );
    let c = GatewayClient::builder()
        .gateway(addr.to_string())
        .timeout(Duration::from_millis(500))
        .retry_attempts(1)
        .build()
        .unwrap();
    let err = within(Duration::from_secs(60), move || {
        c.health_check().unwrap_err()
    });
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
}

/// Only runs as the child process of
/// [`proxy_from_env_true_sends_requests_through_the_proxy`], whose environment names a proxy:
/// on its own it has nothing to check and returns.
#[test]
fn proxy_child_process() {
    if std::env::var_os("GATEWAY_TEST_PROXY_CHILD").is_none() {
        return;
    }
    // A host name that resolves nowhere: only a proxy can reach it.
    let gateway = "http://gateway.invalid:1";
    let ignoring = GatewayClient::builder()
        .gateway(gateway)
        .retry_attempts(1)
        .build()
        .unwrap();
    assert!(ignoring.health_check().unwrap_err().is_transport());
    let proxied = GatewayClient::builder()
        .gateway(gateway)
        .retry_attempts(1)
        .proxy_from_env(true)
        .build()
        .unwrap();
    assert_eq!(proxied.health_check().unwrap().status, "healthy");
}

#[test]
fn proxy_from_env_true_sends_requests_through_the_proxy() {
    let proxy = FakeGateway::start(
        Some(200),
        r#"{"status": "healthy", "timestamp": 1.0, "version": "0", "epoch": "e"}"#,
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "client::proxy_child_process",
            "--test-threads",
            "1",
        ])
        .env("GATEWAY_TEST_PROXY_CHILD", "1")
        .env("HTTP_PROXY", proxy.url())
        .env("ALL_PROXY", proxy.url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdout(std::process::Stdio::null())
        .guarded_spawn()
        .unwrap();
    let mut status = None;
    let ended = eventually(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    assert!(ended, "the child did not end");
    assert!(status.unwrap().success(), "the child's checks failed");
    assert_eq!(
        proxy.tunnels(),
        1,
        "exactly the proxied client went through the proxy"
    );
    assert_eq!(proxy.requests(), 1);
}

#[test]
fn list_nodes_answers_active_nodes_or_all_with_the_registry_version() {
    let server = TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_secs(30);
        c.liveness.suspect_after = Duration::from_secs(60);
        c.liveness.node_timeout = Duration::from_secs(600);
    });
    server.register(1);
    server.register(2);
    // Both suspected through injected time, then node 2 heard from again.
    server
        .server
        .gateway()
        .sweep(cluster_gateway::server::registry::Now {
            instant: Instant::now() + Duration::from_secs(61),
            unix: cluster_gateway::server::registry::unix_now() + 61.0,
        });
    server.post_json("/heartbeat", &serde_json::json!({"node_id": 2}));
    let c = client(&server);
    let active = c.list_nodes(false).unwrap();
    assert_eq!(
        active.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(),
        vec![2]
    );
    let all = c.list_nodes(true).unwrap();
    assert_eq!(
        all.nodes
            .iter()
            .map(|n| (n.node_id, n.status))
            .collect::<Vec<_>>(),
        vec![
            (1, cluster_gateway::api::NodeStatus::Suspected),
            (2, cluster_gateway::api::NodeStatus::Active)
        ]
    );
    let version = server.get("/stats").1["registry_version"].as_u64().unwrap();
    assert_eq!(all.registry_version, version);
    assert_eq!(active.registry_version, version);
}

#[test]
fn discovery_reads_answer_from_the_last_view_while_the_gateway_is_down() {
    let server = TestServer::start();
    let port = server.addr().port();
    let first = MyNode {
        discovery: Discovery::new(),
    };
    first.initialize_discovery("127.0.0.1", port, 1, "127.0.0.1", 5001, &["raft"], None);
    let second = MyNode {
        discovery: Discovery::new(),
    };
    second.initialize_discovery("127.0.0.1", port, 2, "127.0.0.1", 5002, &["raft"], None);
    drop(server);
    let second = std::sync::Arc::new(second);
    let reader = std::sync::Arc::clone(&second);
    let (nodes, leader, bootstrap) = within(Duration::from_secs(20), move || {
        (
            reader.cluster_nodes(),
            reader.cluster_leader(),
            reader.is_bootstrap_node(),
        )
    });
    assert_eq!(nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(), vec![1]);
    assert_eq!(leader.map(|l| l.node_id), Some(1));
    assert!(!bootstrap);
    first.shutdown_discovery();
    second.shutdown_discovery();
}

#[test]
fn initialize_discovery_registers_in_the_background_once_a_gateway_answers() {
    let host = own_host::BACKGROUND;
    let port = free_port(host);
    let node = MyNode {
        discovery: Discovery::new(),
    };
    // The original's signature, default client settings: a 30 s heartbeat registers the node.
    let info = node.initialize_discovery(host, port, 11, "127.0.0.1", 5011, &["raft"], None);
    assert!(!info.gateway_available, "{info:?}");
    let mut server = None;
    assert!(eventually(Duration::from_secs(60), || {
        server = GatewayServer::new(ServerConfig::new(host, port))
            .start()
            .ok();
        server.is_some()
    }));
    let gateway = std::sync::Arc::clone(server.as_ref().unwrap().gateway());
    assert!(
        eventually(Duration::from_secs(90), || gateway.stats().total_nodes == 1),
        "node 11 never registered"
    );
    assert!(eventually(Duration::from_secs(60), || node
        .discovery_info()
        .gateway_available));
    node.shutdown_discovery();
}
