//! The client's watch thread (issue 11, change notification; issue 25, event streams): the view
//! follows joins, departures, suspicions, recoveries and leaders as they happen, over the
//! gateway's event stream; the change callback; a gateway restart resets the index and the
//! watch opens a stream on the new run; behind a proxy that strips streams it long-polls (one
//! parked request per wait, never a request a millisecond); a gateway without long-poll is
//! polled at the heartbeat interval, not spun on; shutdown waits neither for a parked request
//! nor for an open stream; and `gateway-client watch` in both output modes.
//!
//! The watching clients pin a heartbeat interval of an hour and register no node (or one
//! whose heartbeat never comes due), so nothing but the watch can move their view.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_gateway::api::Registration;
use cluster_gateway::client::discovery::Discovery;
use cluster_gateway::client::{ChangeEvent, ClusterChange};
use cluster_gateway::server::registry::{Now, unix_now};
use cluster_gateway::{GatewayClient, GatewayServer, ServerConfig};
use serde_json::{Value, json};

use crate::support::Guarded;
use crate::support::{
    ClosedPort, FakeGateway, RequestLines, TestServer, eventually, free_port, requests_to, within,
};

/// Loopback addresses owned by one test each here (see `support::own_host`): this test frees a
/// port and binds it again.
mod own_host {
    pub const RESTART: &str = "127.0.0.150";
}

/// Long enough for anything on a loaded machine; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(60);
/// A heartbeat that never comes due while a test runs.
const NEVER: Duration = Duration::from_secs(3600);

/// A gateway with 50 ms sweeps that suspects after 300 ms and reaps after ten minutes.
fn fast(config: &mut ServerConfig) {
    config.heartbeat_interval = Duration::from_millis(50);
    config.liveness.suspect_after = Duration::from_millis(300);
    config.liveness.node_timeout = Duration::from_secs(600);
}

fn watcher(gateway: &str) -> GatewayClient {
    GatewayClient::builder()
        .gateway(gateway)
        .heartbeat_interval(NEVER)
        .retry_base_delay(Duration::from_millis(20))
        .build()
        .unwrap()
}

fn node(node_id: u64) -> Registration {
    Registration::new(node_id, "127.0.0.1", 6000 + node_id as u16).capabilities(["raft"])
}

/// Reads changes until one has the event `line`; returns every event line read. Fails (does
/// not hang) when none comes within [`PATIENCE`].
fn until_event(changes: &Receiver<ClusterChange>, line: &str) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(change) = changes.recv_timeout(left) else {
            panic!("no {line:?} within {PATIENCE:?}; saw {seen:?}");
        };
        let lines: Vec<String> = change.events().iter().map(ChangeEvent::to_string).collect();
        let found = lines.iter().any(|l| l == line);
        seen.extend(lines);
        if found {
            return seen;
        }
    }
}

fn view_ids(client: &GatewayClient) -> (Vec<u64>, Vec<u64>) {
    let view = client.cluster_view().unwrap_or_else(|| panic!("no view"));
    (
        view.cluster.nodes.iter().map(|n| n.node_id).collect(),
        view.suspected.iter().map(|n| n.node_id).collect(),
    )
}

/// The gateway's count of parked long-polls.
fn parked(server: &TestServer) -> usize {
    let text = crate::support::metrics_text(&server.url);
    text.lines()
        .find_map(|l| l.strip_prefix("cluster_gateway_watchers_waiting "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as usize
}

/// The gateway's open event streams.
fn streams(server: &TestServer) -> usize {
    server.server.streams_open()
}

/// A proxy in front of a gateway that strips event streams, as some proxies do: it forwards
/// each request without `stream=1` (one request per connection, `Connection: close`), so the
/// gateway answers a delta answer or a long-poll. Records each request line as sent by the
/// client.
pub(crate) struct NoStreams {
    pub(crate) url: String,
    lines: RequestLines,
}

impl NoStreams {
    pub(crate) fn start(gateway: &str) -> NoStreams {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let backend = gateway.trim_start_matches("http://").to_owned();
        let lines = RequestLines::default();
        let recorded = lines.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let (backend, recorded) = (backend.clone(), recorded.clone());
                std::thread::spawn(move || relay(client, &backend, &recorded));
            }
        });
        NoStreams { url, lines }
    }

    /// The request lines that asked for `/nodes`.
    pub(crate) fn nodes_requests(&self) -> Vec<String> {
        self.lines.nodes()
    }
}

/// One request from `client` to `backend`, `stream=1` left out, and its answer back.
fn relay(mut client: TcpStream, backend: &str, recorded: &RequestLines) {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default().to_owned();
    recorded.push(line.clone());
    let line = line.replace("&stream=1", "");
    let mut forwarded = format!("{line}\r\n");
    for header in lines.filter(|h| !h.is_empty()) {
        if !header.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(&format!("{header}\r\n"));
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    let Ok(mut gateway) = TcpStream::connect(backend) else {
        return;
    };
    if gateway.write_all(forwarded.as_bytes()).is_err() {
        return;
    }
    let _ = std::io::copy(&mut gateway, &mut client);
    let _ = client.shutdown(Shutdown::Both);
}

#[test]
fn the_view_follows_a_join_a_suspicion_a_recovery_a_leader_and_a_leave_as_they_happen() {
    // Suspicion comes from a sweep with injected time, never from real time: on a loaded
    // machine 300 ms of silence passed before the view could be looked at as "joined".
    let server = TestServer::with(|c| {
        fast(c);
        c.liveness.suspect_after = Duration::from_secs(3600);
        c.liveness.node_timeout = Duration::from_secs(36000);
    });
    let client = watcher(&server.url);
    let changes = client.subscribe();
    client.watch();
    assert!(client.is_watching());

    server.register(2);
    until_event(&changes, "joined 2 127.0.0.1:5002");
    assert_eq!(view_ids(&client), (vec![2], vec![]));

    // Node 2 never heartbeats: an hour later the gateway suspects it.
    server.server.gateway().sweep(Now {
        instant: Instant::now() + Duration::from_secs(3601),
        unix: unix_now() + 3601.0,
    });
    let seen = until_event(&changes, "suspected 2 127.0.0.1:5002");
    assert!(!seen.iter().any(|l| l.starts_with("left")), "{seen:?}");
    assert_eq!(view_ids(&client), (vec![], vec![2]));

    let (status, body) = server.post_json("/heartbeat", &json!({"node_id": 2}));
    assert_eq!((status, &body["status"]), (200, &json!("acknowledged")));
    let seen = until_event(&changes, "back 2 127.0.0.1:5002");
    assert!(!seen.iter().any(|l| l.starts_with("joined")), "{seen:?}");
    assert_eq!(view_ids(&client), (vec![2], vec![]));

    // Node 2 bootstrapped, so it leads already; another node takes over.
    server.register(3);
    until_event(&changes, "joined 3 127.0.0.1:5003");
    let (status, _) = server.post_json("/leader", &json!({"leader_id": 3}));
    assert_eq!(status, 200);
    until_event(&changes, "leader 3 127.0.0.1:5003");
    assert_eq!(
        client
            .cluster_view()
            .unwrap()
            .cluster
            .leader
            .unwrap()
            .node_id,
        3
    );

    let (status, _) = server.post_json("/remove", &json!({"node_id": 2}));
    assert_eq!(status, 200);
    until_event(&changes, "left 2");
    assert!(!view_ids(&client).0.contains(&2));
    client.shutdown();
    assert!(!client.is_watching());
}

#[test]
fn a_discovery_callback_hears_of_changes_from_a_watching_client_that_leaves_itself_out() {
    let server = TestServer::with(fast);
    let discovery = Discovery::new();
    let heard = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let heard = Arc::clone(&heard);
        discovery
            .on_change(move |change| {
                let lines = change
                    .events()
                    .iter()
                    .map(ChangeEvent::to_string)
                    .collect::<Vec<_>>();
                heard.lock().unwrap().extend(lines);
            })
            .detach();
    }
    let client = GatewayClient::builder()
        .gateway(server.url.clone())
        .heartbeat_interval(NEVER)
        .watch(true)
        .build()
        .unwrap();
    let info = discovery.initialize_with(client, node(1));
    assert!(info.gateway_available, "{info:?}");
    assert!(discovery.client().unwrap().is_watching());
    server.register(7);
    let heard_join = eventually(PATIENCE, || {
        heard
            .lock()
            .unwrap()
            .iter()
            .any(|l| l == "joined 7 127.0.0.1:5007")
    });
    assert!(heard_join, "{:?}", heard.lock().unwrap());
    // Its own node is never a peer, though the watch reads every node.
    let lines = heard.lock().unwrap().clone();
    // (It may be the leader: it bootstrapped.)
    let about_itself = |l: &&String| !l.starts_with("leader") && l.contains(" 1 ");
    assert!(!lines.iter().any(|l| about_itself(&l)), "{lines:?}");
    assert!(discovery.cluster_nodes().iter().all(|n| n.node_id != 1));
    discovery.shutdown();
    assert!(!discovery.client().unwrap().is_watching());
}

/// Starts a gateway on `host:port`, retrying while the port is still taken.
fn start_at(host: &str, port: u16) -> TestServer {
    let mut server = None;
    assert!(eventually(PATIENCE, || {
        let mut config = ServerConfig::new(host, port);
        config.workers = 4;
        fast(&mut config);
        match GatewayServer::new(config).start() {
            Ok(running) => {
                server = Some(running);
                true
            }
            Err(_) => false,
        }
    }));
    let server = server.unwrap();
    let url = format!("http://{}", server.local_addr());
    TestServer { server, url }
}

#[test]
fn a_gateway_restart_resets_the_index_and_the_watch_follows_the_new_runs_stream() {
    let host = own_host::RESTART;
    let port = free_port(host);
    let first = start_at(host, port);
    // The first run's index climbs well past where the second run's will be.
    for id in 1..=6 {
        first.register(id);
    }
    let client = watcher(&first.url);
    let changes = client.subscribe();
    client.watch();
    assert!(eventually(PATIENCE, || streams(&first) == 1));
    // The stream's first event (the whole list) read: the stream counts as open before.
    assert!(eventually(PATIENCE, || {
        client
            .cluster_view()
            .is_some_and(|v| v.cluster.nodes.len() == 6)
    }));
    let old_key = client.cluster_view().unwrap();
    let old_index = old_key.cluster.registry_version;
    drop(first);

    // The stream ends with the gateway; the watch opens one on the run at the same address.
    let second = start_at(host, port);
    second.register(9);
    assert!(eventually(PATIENCE, || streams(&second) == 1));
    let (_, health) = second.get("/health");
    assert!(eventually(PATIENCE, || {
        client.cluster_view().unwrap().epoch.as_deref() == health["epoch"].as_str()
    }));
    let view = client.cluster_view().unwrap();
    assert!(view.cluster.registry_version < old_index, "{view:?}");
    // And it sees the new run's changes as they happen, over that one stream.
    let asked = requests_to(&second, "/nodes");
    second.register(10);
    until_event(&changes, "joined 10 127.0.0.1:5010");
    assert_eq!(requests_to(&second, "/nodes"), asked);
    assert_eq!(streams(&second), 1);
    client.shutdown();
}

#[test]
fn a_gateway_without_long_poll_is_polled_at_the_heartbeat_interval_not_spun_on() {
    // As the original gateway: answers at once, without X-Gateway-Index.
    let fake = FakeGateway::start(
        Some(200),
        r#"{"nodes": [], "registry_version": 1, "leader": null}"#,
    );
    let interval = Duration::from_millis(20);
    let client = GatewayClient::builder()
        .gateway(fake.url())
        .heartbeat_interval(interval)
        .build()
        .unwrap();
    let started = Instant::now();
    client.watch();
    assert!(eventually(PATIENCE, || fake.requests() >= 10));
    let requests = fake.requests();
    let intervals = started.elapsed().as_secs_f64() / interval.as_secs_f64();
    // One /health at start; then a /nodes and a /leader per interval at most. A loop that did
    // not wait would have made thousands in that time.
    assert!(
        requests as f64 <= 2.0 * (intervals + 1.0) + 1.0,
        "{requests} requests in {intervals:.1} intervals"
    );
    assert!(
        client.cluster_view().is_some(),
        "the polled list is the view"
    );
    client.shutdown();
}

/// A watch against a gateway with no room for watchers (`max_watchers` 0), straight (every
/// stream refused with a 503) or through a proxy that strips streams (every long-poll answered
/// at once): asked again after a pause that grows, never in a loop.
fn full_gateway_is_asked_again_after_a_growing_pause(strip_streams: bool) {
    let server = TestServer::with(|c| c.max_watchers = 0);
    let proxy = strip_streams.then(|| NoStreams::start(&server.url));
    let base = Duration::from_millis(20);
    let client = GatewayClient::builder()
        .gateway(proxy.as_ref().map_or(&server.url, |p| &p.url).clone())
        .heartbeat_interval(NEVER)
        .retry_base_delay(base)
        .build()
        .unwrap();
    let nodes_requests = || requests_to(&server, "/nodes");
    let started = Instant::now();
    client.watch();
    assert!(eventually(PATIENCE, || nodes_requests() >= 5));
    let requests = nodes_requests();
    // At least half the base delay between two asks (and it doubles): a loop that did not
    // pause would have asked thousands of times by then.
    let pauses = started.elapsed().as_secs_f64() / (base / 2).as_secs_f64();
    assert!(
        requests as f64 <= pauses + 1.0,
        "{requests} requests in {pauses:.1} half base delays"
    );
    client.shutdown();
}

#[test]
fn a_gateway_full_of_streams_refusing_them_is_asked_again_after_a_growing_pause() {
    full_gateway_is_asked_again_after_a_growing_pause(false);
}

#[test]
fn a_gateway_full_of_watchers_answering_at_once_is_asked_again_after_a_growing_pause() {
    full_gateway_is_asked_again_after_a_growing_pause(true);
}

#[test]
fn behind_a_proxy_that_strips_streams_an_idle_watch_costs_one_parked_request_per_wait() {
    let server = TestServer::start();
    server.register(1);
    let proxy = NoStreams::start(&server.url);
    let wait = Duration::from_millis(100);
    let client = GatewayClient::builder()
        .gateway(proxy.url.clone())
        .heartbeat_interval(NEVER)
        .watch_wait(wait)
        .build()
        .unwrap();
    let started = Instant::now();
    client.watch();
    assert!(eventually(PATIENCE, || requests_to(&server, "/nodes") >= 6));
    let lists = requests_to(&server, "/nodes");
    let waits = started.elapsed().as_secs_f64() / wait.as_secs_f64();
    // Each long-poll is held for its whole wait while nothing changes: at most one a wait
    // (plus the first, unconditional read); the leader comes in the delta answers, never
    // read on its own.
    assert!(
        lists as f64 <= waits + 2.0,
        "{lists} lists in {waits:.1} waits"
    );
    assert_eq!(requests_to(&server, "/leader"), 0);
    assert_eq!(
        requests_to(&server, "/health"),
        1,
        "settings, once at start"
    );
    // A stream was asked for once: the answer that was not one is remembered.
    let asked = proxy.nodes_requests();
    assert!(asked[0].contains("stream=1"), "{asked:?}");
    assert!(
        asked[1..].iter().all(|l| !l.contains("stream=1")),
        "{asked:?}"
    );
    assert_eq!(streams(&server), 0);
    client.shutdown();
}

#[test]
fn an_idle_watch_holds_one_stream_and_a_subscriber_hears_each_change_over_it() {
    let server = TestServer::start();
    server.register(1);
    let client = watcher(&server.url);
    let changes = client.subscribe();
    client.watch();
    assert!(eventually(PATIENCE, || streams(&server) == 1));
    assert_eq!(parked(&server), 0, "no long-poll beside the stream");
    for id in 2..=4 {
        let sent = Instant::now();
        server.register(id);
        until_event(&changes, &format!("joined {id} 127.0.0.1:{}", 5000 + id));
        let heard = sent.elapsed();
        eprintln!("joined {id} heard after {heard:?}");
        assert!(
            heard < Duration::from_secs(5),
            "joined {id} after {heard:?}"
        );
    }
    // One request for it all: the stream.
    assert_eq!(requests_to(&server, "/nodes"), 1);
    assert_eq!(requests_to(&server, "/leader"), 0);
    assert_eq!(streams(&server), 1);
    let status = client.status();
    assert!(status.gateway_available, "{status:?}");
    assert_eq!(status.consecutive_failures, 0);
    client.shutdown();
}

#[test]
fn shutdown_does_not_wait_for_a_parked_long_poll() {
    let server = TestServer::start();
    let proxy = NoStreams::start(&server.url);
    let client = GatewayClient::builder()
        .gateway(proxy.url.clone())
        .watch_wait(Duration::from_secs(120))
        .build()
        .unwrap();
    client.watch();
    assert!(eventually(PATIENCE, || parked(&server) == 1));
    // Bounded well under the two minutes the request may stay parked.
    let took = within(PATIENCE, move || {
        let started = Instant::now();
        client.shutdown();
        let took = started.elapsed();
        assert!(!client.is_watching());
        took
    });
    eprintln!("shutdown with a parked long-poll took {took:?}");
}

/// A plain TCP relay in front of a gateway that tells when its clients close their
/// connections, and when the gateway last sent them a byte.
struct Pipe {
    url: String,
    seen: Arc<Mutex<Piped>>,
}

#[derive(Default)]
struct Piped {
    open: usize,
    closed: Option<Instant>,
    from_gateway: Option<Instant>,
}

impl Pipe {
    fn start(gateway: &str) -> Pipe {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let backend = gateway.trim_start_matches("http://").to_owned();
        let seen = Arc::new(Mutex::new(Piped::default()));
        let shared = Arc::clone(&seen);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let Ok(mut gateway) = TcpStream::connect(&backend) else {
                    continue;
                };
                shared.lock().unwrap().open += 1;
                let (mut to_gateway, mut to_client) =
                    (gateway.try_clone().unwrap(), client.try_clone().unwrap());
                let up = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client, &mut to_gateway);
                    let mut seen = up.lock().unwrap();
                    seen.open -= 1;
                    seen.closed = Some(Instant::now());
                    drop(seen);
                    let _ = to_gateway.shutdown(Shutdown::Both);
                });
                let down = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut buffer = [0; 4096];
                    while let Ok(n @ 1..) = gateway.read(&mut buffer) {
                        down.lock().unwrap().from_gateway = Some(Instant::now());
                        if to_client.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown(Shutdown::Both);
                });
            }
        });
        Pipe { url, seen }
    }
}

#[test]
fn stop_returns_at_once_with_a_stream_open_and_closes_it() {
    let server = TestServer::start();
    let pipe = Pipe::start(&server.url);
    let client = watcher(&pipe.url);
    client.watch();
    assert!(eventually(PATIENCE, || streams(&server) == 1));
    // The gateway lists a stream before its head and first event are written (on a pool
    // thread): wait until the client has read them, so that nothing more comes from the
    // gateway unless something changes.
    assert!(eventually(PATIENCE, || client.cluster_view().is_some()));
    let stopped = Instant::now();
    let client = within(Duration::from_secs(2), move || {
        client.shutdown();
        assert!(!client.is_watching());
        client
    });
    // Its connection is closed at once, not left to the thread's next read (which only an
    // event or a keepalive from the gateway, up to 25 s away, would end).
    assert!(
        eventually(Duration::from_secs(2), || pipe.seen.lock().unwrap().open
            == 0),
        "the stream's connection is still open after the stop"
    );
    let seen = pipe.seen.lock().unwrap();
    let sent = seen.from_gateway.filter(|&at| at > stopped);
    assert!(
        sent.is_none_or(|at| at > seen.closed.unwrap()),
        "the gateway wrote to the stream before it was closed: that ended it, not the stop"
    );
    drop(seen);
    // The gateway's writes to it (the changes below: the first is taken by the kernel, the
    // connection's reset comes back) fail and end the stream.
    server.register(3);
    server.register(4);
    assert!(eventually(PATIENCE, || streams(&server) == 0));
    // Nothing was recorded after the stop: the read cut short is not a failure.
    let status = client.status();
    assert_eq!(status.consecutive_failures, 0, "{status:?}");
    assert_eq!(status.last_error, None);
}

const BIN: &str = env!("CARGO_BIN_EXE_gateway-client");

/// Runs `gateway-client watch` with `args`; once it has a stream open, runs `act` with a
/// function that waits until a line was printed, then stops it with `signal`. Returns every line
/// printed; fails (does not hang) if a line never comes or it does not exit 0.
fn watch_cli(
    server: &TestServer,
    args: &[&str],
    signal: &str,
    act: impl FnOnce(&dyn Fn(&str)),
) -> Vec<String> {
    let mut child = Command::new(BIN)
        .args(["--gateway", &server.url, "watch"])
        .args(args)
        .env_remove("GATEWAY_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .guarded_spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let printed = Arc::clone(&printed);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                printed.lock().unwrap().push(line);
            }
        });
    }
    assert!(
        eventually(PATIENCE, || streams(server) == 1),
        "gateway-client watch never opened a stream"
    );
    // `json:joined 4` is a JSON line with that event and node id.
    let matches = |line: &str, want: &str| match want.strip_prefix("json:") {
        None => line == want,
        Some(want) => serde_json::from_str::<Value>(line).is_ok_and(|v| {
            format!("{} {}", v["event"].as_str().unwrap_or("?"), v["node_id"]) == want
        }),
    };
    act(&|want: &str| {
        let seen = eventually(PATIENCE, || {
            printed.lock().unwrap().iter().any(|l| matches(l, want))
        });
        assert!(
            seen,
            "never printed {want:?}: {:?}",
            printed.lock().unwrap()
        );
    });
    let killed = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    let stopped = eventually(PATIENCE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(stopped, "gateway-client watch did not stop on SIG{signal}");
    assert_eq!(status.unwrap().code(), Some(0));
    printed.lock().unwrap().clone()
}

/// `earlier` comes before `later` in `lines`.
fn before(lines: &[String], earlier: &str, later: &str) -> bool {
    let at = |l: &str| lines.iter().position(|x| x == l);
    matches!((at(earlier), at(later)), (Some(a), Some(b)) if a < b)
}

#[test]
fn gateway_client_watch_prints_each_change_on_a_line() {
    let server = TestServer::with(fast);
    let lines = watch_cli(&server, &[], "TERM", |printed| {
        server.register(1);
        printed("joined 1 127.0.0.1:5001");
        printed("leader 1 127.0.0.1:5001"); // it bootstrapped
        printed("suspected 1 127.0.0.1:5001"); // silent for 300 ms
        server.post_json("/heartbeat", &json!({"node_id": 1}));
        printed("back 1 127.0.0.1:5001");
        server.register(2);
        printed("joined 2 127.0.0.1:5002");
        server.post_json("/leader", &json!({"leader_id": 2}));
        printed("leader 2 127.0.0.1:5002");
        server.post_json("/remove", &json!({"node_id": 1}));
        printed("left 1");
    });
    assert!(before(
        &lines,
        "joined 1 127.0.0.1:5001",
        "suspected 1 127.0.0.1:5001"
    ));
    assert!(before(
        &lines,
        "suspected 1 127.0.0.1:5001",
        "back 1 127.0.0.1:5001"
    ));
    assert!(before(&lines, "back 1 127.0.0.1:5001", "left 1"));
    // One fact a line, nothing else.
    let words = ["joined", "left", "suspected", "back", "leader", "updated"];
    for line in &lines {
        let first = line.split(' ').next().unwrap();
        assert!(words.contains(&first), "{line:?} in {lines:?}");
    }
}

#[test]
fn gateway_client_watch_json_prints_one_object_a_line() {
    let server = TestServer::start();
    server.register(3);
    let lines = watch_cli(&server, &["--json"], "INT", |printed| {
        // The cluster as it is first: node 3, which bootstrapped and leads.
        printed("json:joined 3");
        printed("json:leader 3");
        server.register(4);
        printed("json:joined 4");
        server.post_json("/remove", &json!({"node_id": 3}));
        printed("json:left 3");
        printed("json:leader null");
    });
    let objects: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let joined = objects
        .iter()
        .find(|o| o["event"] == "joined" && o["node_id"] == 4);
    let joined = joined.unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(joined["node"]["ip_address"], "127.0.0.1");
    assert_eq!(joined["node"]["port"], 5004);
    assert_eq!(joined["node"]["status"], "active");
    let left = objects.iter().find(|o| o["event"] == "left").unwrap();
    assert_eq!(*left, json!({"event": "left", "node_id": 3}));
    assert_eq!(objects.len(), 5, "one object a fact: {lines:?}");
}

#[test]
fn gateway_client_watch_exits_1_when_no_gateway_answers_at_start() {
    let closed = ClosedPort::new();
    let out = Command::new(BIN)
        .args(["--gateway", &closed.address(), "--timeout", "1", "watch"])
        .env_remove("GATEWAY_URL")
        .env("GATEWAY_CLIENT_RETRY_ATTEMPTS", "1")
        .stdin(Stdio::null())
        .guarded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&closed.address()), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn gateway_client_watch_ends_with_exit_0_when_its_reader_goes_away() {
    // As `gateway-client watch | head -n 1`: once head has its line and exits, the next change
    // finds stdout closed, and the watch must end rather than wait for a signal forever.
    let server = TestServer::start();
    server.register(1);
    let mut child = Command::new(BIN)
        .args(["--gateway", &server.url, "watch"])
        .env_remove("GATEWAY_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .guarded_spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let first = within(PATIENCE, move || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        line // The reader is dropped here: the pipe has no reader left.
    });
    assert_eq!(first.trim(), "joined 1 127.0.0.1:5001");
    // A change to print: the write that finds the pipe closed ends it (or the leader line
    // already has, if it came after the reader went).
    server.register(2);
    let mut status = None;
    let ended = eventually(PATIENCE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(
        ended,
        "gateway-client watch kept running with nobody reading"
    );
    assert_eq!(status.unwrap().code(), Some(0));
}

/// A stand-in for gateways that do not share a registry behind one address: each answer comes
/// from another run (a new `X-Gateway-Epoch`). Counts the `/nodes` requests; stops on drop.
struct EveryAnswerAnotherRun {
    url: String,
    lists: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EveryAnswerAnotherRun {
    fn start() -> EveryAnswerAnotherRun {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let lists = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counted, stopped) = (Arc::clone(&lists), Arc::clone(&stop));
        std::thread::spawn(move || {
            for (run, stream) in listener.incoming().enumerate() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let body = if head.starts_with("GET /nodes") {
                    counted.fetch_add(1, Ordering::SeqCst);
                    r#"{"nodes": [], "registry_version": 1}"#
                } else if head.starts_with("GET /leader") {
                    r#"{"leader": null, "registry_version": 1}"#
                } else {
                    r#"{"status": "healthy", "timestamp": 1.0}"#
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Gateway-Index: 1\r\n\
                     X-Gateway-Epoch: run-{run}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        EveryAnswerAnotherRun { url, lists, stop }
    }

    fn lists(&self) -> usize {
        self.lists.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for EveryAnswerAnotherRun {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

#[test]
fn answers_each_from_another_gateway_run_are_asked_again_after_a_growing_pause() {
    let fake = EveryAnswerAnotherRun::start();
    // Long enough that even a slow loop without pauses makes its six rounds within a few.
    let base = Duration::from_millis(100);
    let client = GatewayClient::builder()
        .gateway(fake.url.clone())
        .heartbeat_interval(NEVER)
        .retry_base_delay(base)
        .build()
        .unwrap();
    let started = Instant::now();
    client.watch();
    assert!(eventually(PATIENCE, || fake.lists() >= 6));
    let lists = fake.lists();
    // The first restart is read at once, the next after at least half the base delay (and
    // it doubles): a loop that never paused would have asked hundreds of times by then.
    let pauses = started.elapsed().as_secs_f64() / (base / 2).as_secs_f64();
    assert!(
        lists as f64 <= pauses + 3.0,
        "{lists} lists in {pauses:.1} half base delays"
    );
    client.shutdown();
}

#[test]
fn gateway_client_watch_exits_1_when_the_gateway_refuses_it_at_start() {
    // /health stays open to probes; the watch's reads need a token it does not have. It
    // retried its 401s until stopped, printing nothing.
    let server = TestServer::with(|c| {
        c.tokens.inline = Some(cluster_gateway::server::auth::Secret::new(
            "read:ops:0123456789abcdef0123",
        ));
    });
    let mut command = Command::new(BIN);
    command
        .args(["--gateway", &server.url, "watch"])
        .env_remove("GATEWAY_URL")
        .env_remove("GATEWAY_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.guarded_spawn().unwrap();
    let mut status = None;
    let ended = eventually(PATIENCE, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "gateway-client watch kept retrying a refusal");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_wait_of_zero_is_taken_as_the_shortest_wait_not_a_request_a_millisecond() {
    let server = TestServer::start();
    server.register(1);
    // Long-polls: through a proxy that strips streams.
    let proxy = NoStreams::start(&server.url);
    let client = GatewayClient::builder()
        .gateway(proxy.url.clone())
        .heartbeat_interval(NEVER)
        .watch_wait(Duration::ZERO)
        .build()
        .unwrap();
    let started = Instant::now();
    client.watch();
    assert!(eventually(PATIENCE, || requests_to(&server, "/nodes") >= 4));
    let lists = requests_to(&server, "/nodes");
    // Each long-poll held for the shortest wait, 100 ms, while nothing changes; a wait of a
    // millisecond would have made dozens in that time.
    let waits = started.elapsed().as_secs_f64() / 0.1;
    assert!(
        lists as f64 <= waits + 2.0,
        "{lists} lists in {waits:.1} shortest waits"
    );
    client.shutdown();
}

#[test]
#[cfg_attr(
    not(all(has_nginx, has_openssl)),
    ignore = "needs nginx and openssl: apt-get install nginx openssl"
)]
fn over_https_with_a_token_and_a_ca_file_the_watch_follows_a_stream_through_the_front() {
    use crate::front::{Front, Tls, nginx_binary};
    use crate::tls::{Scratch, make_ca, make_server_certificate};
    use cluster_gateway::server::auth::Secret;

    let nginx = nginx_binary().expect("nginx is installed");
    let dir = std::env::temp_dir().join(format!("gateway-watch-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _scratch = Scratch(dir.clone());
    make_ca(&dir, "ca");
    make_server_certificate(&dir, "ca", "127.0.0.9");
    let (read, write) = ("watch-r3ad-t0ken-33333333", "watch-wr1te-t0ken-4444444");
    let server = TestServer::with(|config| {
        config.tokens.inline = Some(Secret::new(format!(
            "read:watch:{read}\nwrite:ops:{write}\n"
        )));
    });
    // Nodes join straight to the gateway, with the write token.
    let writer = GatewayClient::builder()
        .gateway(server.url.clone())
        .token(write)
        .heartbeat_interval(NEVER)
        .build()
        .unwrap();
    let front = Front::start_tls(
        &nginx,
        &server.addr().to_string(),
        Tls {
            certificate: &dir.join("server.crt"),
            key: &dir.join("server.key"),
        },
    );
    let client = GatewayClient::builder()
        .gateway(format!("https://{}", front.address))
        .ca_file(dir.join("ca.crt"))
        .token(read)
        .heartbeat_interval(NEVER)
        .retry_base_delay(Duration::from_millis(20))
        .build()
        .unwrap();
    let changes = client.subscribe();
    client.watch();
    assert!(eventually(PATIENCE, || streams(&server) == 1));
    for id in [4, 5] {
        writer.register_node(node(id)).unwrap();
        until_event(&changes, &format!("joined {id} 127.0.0.1:{}", 6000 + id));
    }
    // Over the one stream the front keeps open.
    assert_eq!(streams(&server), 1);
    assert_eq!(client.status().consecutive_failures, 0);
    within(Duration::from_secs(2), move || client.shutdown());
}
