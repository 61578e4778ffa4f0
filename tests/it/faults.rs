//! Faults: racing bootstraps over real HTTP, the gateway killed and restarted under
//! heartbeating clients, and the gateway gone for several intervals.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_gateway::api::Registration;
use cluster_gateway::{GatewayClient, GatewayServer, ServerConfig};
use serde_json::json;

use crate::support::{
    Barrier, ChildGuard, TestServer, agent, answers_unread, eventually, free_port, join_all,
    own_host, registration,
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
fn spawn_server(port: u16) -> ChildGuard {
    ChildGuard::spawn(
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
            .stderr(Stdio::null()),
    )
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
        .register_node(
            Registration::new(node_id, "127.0.0.1", 7000 + node_id as u16).capabilities(["raft"]),
        )
        .unwrap();
    client
}

#[test]
fn after_sigkill_and_restart_every_client_registers_again() {
    let port = free_port(own_host::SIGKILL);
    let url = format!("http://{}:{port}", own_host::SIGKILL);
    let mut server = spawn_server(port);
    assert!(eventually(Duration::from_secs(60), || count_nodes(&url).is_some()));
    let clients: Vec<GatewayClient> = (1..=20).map(|id| heartbeating_client(&url, id)).collect();
    assert_eq!(count_nodes(&url), Some(20));

    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let mut server = spawn_server(port);
    assert!(eventually(Duration::from_secs(60), || count_nodes(&url).is_some()));
    // How fast is for scripts/bench.sh to measure: a timed assertion here failed on a loaded
    // machine (3.4 s against 2.5 s) while the clients did exactly what they should.
    assert!(
        eventually(Duration::from_secs(60), || count_nodes(&url) == Some(20)),
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
            c.register_node(Registration::new(id, "127.0.0.1", 7100 + id as u16))
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
        assert!(eventually(Duration::from_secs(60), both_peers));
    }
    drop(first);

    // Several intervals without a gateway.
    for client in &clients {
        assert!(eventually(Duration::from_secs(60), || client
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
    assert!(eventually(Duration::from_secs(60), || {
        second = GatewayServer::new(ServerConfig::new(own_host::GONE, port))
            .start()
            .ok();
        second.is_some()
    }));
    assert!(eventually(Duration::from_secs(60), || count_nodes(&url) == Some(3)));
    // Both from one status: a beat that a loaded machine held past the 500 ms timeout after
    // the success is a new failure, not the recovery undone.
    for client in &clients {
        assert!(eventually(Duration::from_secs(60), || {
            let status = client.status();
            status.consecutive_failures == 0 && status.last_error.is_none()
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// Stopping: no client is left waiting on a server that stopped.

/// The gateway client's own timeout for one try (`ClientBuilder::timeout`'s default): a client
/// left hanging by a stopped server finds out only after this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends a GET on `stream` (kept alive).
fn send_get(stream: &mut std::net::TcpStream, path: &str) -> std::io::Result<()> {
    use std::io::Write;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n").as_bytes())
}

/// Reads one answer (head and `Content-Length` body) off `stream`; returns its status.
fn read_answer(stream: &mut std::net::TcpStream) -> u16 {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the answer ended early");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

/// What a client waiting for an answer on `stream` sees first, within `CLIENT_TIMEOUT`:
/// `Ok(n)` bytes (0: the connection ended), or the read's error (`WouldBlock`/`TimedOut`: it
/// waited out its timeout).
fn first_read(stream: &mut std::net::TcpStream) -> std::io::Result<usize> {
    use std::io::Read;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.read(&mut [0u8; 512])
}

fn waited_out_its_timeout(read: &std::io::Result<usize>) -> bool {
    matches!(read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// tiny_http keeps reading a kept-alive connection after its server is gone, and queues what it
/// reads where no one takes it (#244): before the fix, this client waited its whole timeout.
#[test]
fn a_request_on_a_kept_alive_connection_after_the_server_stopped_ends_before_the_client_timeout() {
    let TestServer { server, .. } = TestServer::start();
    let mut stream = std::net::TcpStream::connect(server.local_addr()).unwrap();
    send_get(&mut stream, "/health").unwrap();
    assert_eq!(read_answer(&mut stream), 200);
    server.stop();
    // The write may already fail (the connection was ended); if not, the read must.
    let read = send_get(&mut stream, "/health").and_then(|()| first_read(&mut stream));
    assert!(
        !waited_out_its_timeout(&read),
        "the request was left hanging: {read:?}"
    );
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a stopped server answered: {read:?}"
    );
}

/// 300 nodes with 8 KiB of metadata each: a list is about 2.5 MB, more than a socket buffers.
fn register_big_nodes(url: &str) {
    let client = agent();
    for id in 0..300u64 {
        let mut node = registration(id);
        node["metadata"] = json!({"blob": "x".repeat(8 * 1024)});
        let answer = client
            .post(format!("{url}/register"))
            .send(node.to_string())
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
}

/// The stop waits (up to the grace) for the one worker, stuck writing to a client that does
/// not read. Meanwhile new connections are refused, and the connection of a request that
/// arrived before the stop, with no worker free to take it, is ended: both while the stop is
/// still waiting (before, both were left hanging until the client's timeout).
#[test]
fn while_the_stop_waits_for_a_busy_worker_new_connections_are_refused_and_queued_requests_end() {
    let TestServer { server, url } = TestServer::with(|c| c.workers = 1);
    register_big_nodes(&url);
    let address = server.local_addr();
    let mut reader = std::net::TcpStream::connect(address).unwrap();
    for _ in 0..16 {
        send_get(&mut reader, "/nodes?status=all").unwrap();
    }
    assert!(
        eventually(Duration::from_secs(60), || answers_unread(address.port())),
        "the worker never got stuck writing"
    );
    let mut queued = std::net::TcpStream::connect(address).unwrap();
    send_get(&mut queued, "/health").unwrap();

    let stopping = std::thread::spawn(move || server.stop());
    assert!(
        eventually(Duration::from_secs(60), || {
            std::net::TcpStream::connect(address).is_err()
        }),
        "new connections were never refused"
    );
    assert!(
        !stopping.is_finished(),
        "new connections were refused only once the stop was over"
    );
    let read = first_read(&mut queued);
    assert!(
        !waited_out_its_timeout(&read),
        "the queued request was left hanging: {read:?}"
    );
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a request no worker took was answered: {read:?}"
    );
    assert!(
        !stopping.is_finished(),
        "the queued request's connection ended only once the stop was over"
    );
    join_all(vec![stopping], Duration::from_secs(20));
    drop(reader);
}

/// The stop ends the connections accepted on its own listener only: tests and embedding
/// programs run many servers (and clients) in one process, found by the stop through the same
/// `/proc/self/fd` as its own connections.
#[test]
fn a_stop_ends_its_own_connections_and_no_other_socket_of_the_process() {
    use std::io::{Read, Write};
    let stopping = TestServer::start();
    let other = TestServer::start();
    let mut own = std::net::TcpStream::connect(stopping.addr()).unwrap();
    send_get(&mut own, "/health").unwrap();
    assert_eq!(read_answer(&mut own), 200);
    // A kept-alive connection to another gateway of the process, both of its ends here.
    let mut to_other = std::net::TcpStream::connect(other.addr()).unwrap();
    send_get(&mut to_other, "/health").unwrap();
    assert_eq!(read_answer(&mut to_other), 200);
    // A connection to a plain listener of the process, and the socket that listener accepted.
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(foreign.local_addr().unwrap()).unwrap();
    let (mut accepted, _) = foreign.accept().unwrap();

    let TestServer { server, .. } = stopping;
    server.stop();

    let read = first_read(&mut own);
    assert!(
        matches!(read, Ok(0) | Err(_)) && !waited_out_its_timeout(&read),
        "the stopped server's idle connection did not end: {read:?}"
    );
    send_get(&mut to_other, "/health").unwrap();
    assert_eq!(
        read_answer(&mut to_other),
        200,
        "the other gateway's connection"
    );
    client.write_all(b"ping").unwrap();
    accepted.write_all(b"pong").unwrap();
    for (stream, expected) in [(&mut accepted, b"ping"), (&mut client, b"pong")] {
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, expected);
    }
}
