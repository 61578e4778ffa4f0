//! The client as a node author embeds it (issue 14) and nodes that rejoin (issue 8, client
//! side): bootstrap learned from background registrations, reads that never wait for a frozen
//! gateway, deadlines and prompt shutdown, the gateway's heartbeat interval followed,
//! `previous_epoch` on every registration after the first, no phantom departures across a
//! gateway restart, and the smaller API points.
//!
//! Longer than ~800 lines on purpose: every test here drives the scriptable fake gateway and
//! the node type defined at the top (frozen, restarted, answering what a test says) and reads as
//! one scenario from start to end; split, each part would need them moved to `support.rs`.
//!
//! A frozen gateway is a [`FakeGateway`] that accepts connections and never answers; the same
//! fake, answering, shows exactly what the client sends.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cluster_gateway::api::{NodeStatus, Registration};
use cluster_gateway::client::discovery::{Discovery, GatewayDiscovery};
use cluster_gateway::client::{ClusterChange, DEFAULT_HEARTBEAT_INTERVAL, Membership};
use cluster_gateway::{ClientError, GatewayClient, GatewayServer, Metadata, ServerConfig};
use serde_json::{Value, json};

use crate::support::{TestServer, eventually, free_port};

/// Loopback addresses owned by one test each here (see `support::own_host`): these tests free
/// ports and bind them again, or need them to stay closed.
mod own_host {
    pub const STARTED_BEFORE_GATEWAY: &str = "127.0.0.140";
    pub const RESTART: &str = "127.0.0.141";
    pub const FAILOVER: &str = "127.0.0.142";
    pub const CLOSED: &str = "127.0.0.143";
    pub const JOIN_LATE: &str = "127.0.0.144";
    pub const LEADER_RESTART: &str = "127.0.0.145";
    pub const FAIL_FAST: &str = "127.0.0.146";
    pub const METADATA_FIRST: &str = "127.0.0.147";
}

/// Issue 21: the embedded client, round two.
mod issue21;
/// A relay that holds requests and answers: interleavings made on purpose.
mod relay;

/// Long enough for anything on a loaded machine; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn node(node_id: u64) -> Registration {
    Registration::new(node_id, "127.0.0.1", 6000 + node_id as u16).capabilities(["raft"])
}

struct MyNode {
    discovery: Discovery,
}

impl GatewayDiscovery for MyNode {
    fn discovery(&self) -> &Discovery {
        &self.discovery
    }
}

fn my_node() -> MyNode {
    MyNode {
        discovery: Discovery::new(),
    }
}

/// A gateway with 100 ms heartbeats (the shortest a client follows) that suspects after
/// `suspect_ms` and reaps after twice that.
fn fast_config(config: &mut ServerConfig, suspect_ms: u64) {
    config.heartbeat_interval = Duration::from_millis(100);
    config.liveness.suspect_after = Duration::from_millis(suspect_ms);
    config.liveness.node_timeout = Duration::from_millis(2 * suspect_ms);
}

/// Starts a gateway on `host:port`, retrying while the port is still taken.
fn start_at(host: &str, port: u16, configure: impl Fn(&mut ServerConfig)) -> TestServer {
    let mut server = None;
    assert!(eventually(PATIENCE, || {
        let mut config = ServerConfig::new(host, port);
        config.workers = 4;
        configure(&mut config);
        server = GatewayServer::new(config).start().ok();
        server.is_some()
    }));
    let server = server.unwrap();
    let url = format!("http://{}", server.local_addr());
    TestServer { server, url }
}

// ---------------------------------------------------------------------------------------------
// A scriptable fake gateway.

type Answer = dyn Fn(&str, &Value) -> Value + Send + Sync;

/// A gateway on a loopback port that answers with `answer(path, body)` (one request per
/// connection, as the client sends them), records every request, and when frozen accepts
/// connections and never answers them. Dropping it closes every connection it holds.
struct FakeGateway {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
    /// Each request's line and headers, as sent.
    heads: Arc<Mutex<Vec<String>>>,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeGateway {
    fn start(host: &str, answer: impl Fn(&str, &Value) -> Value + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind((host, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let thread = {
            let (requests, heads, frozen, stop, held) = (
                Arc::clone(&requests),
                Arc::clone(&heads),
                Arc::clone(&frozen),
                Arc::clone(&stop),
                Arc::clone(&held),
            );
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    if frozen.load(Ordering::SeqCst) {
                        held.lock().unwrap().push(stream);
                        continue;
                    }
                    let _ = serve(stream, &requests, &heads, &*answer);
                }
            })
        };
        FakeGateway {
            addr,
            requests,
            heads,
            frozen,
            stop,
            held,
            thread: Some(thread),
        }
    }

    /// A fake that freezes at once: every connection is accepted and never answered.
    fn frozen(host: &str) -> Self {
        let fake = FakeGateway::start(host, |_, _| json!({}));
        fake.freeze();
        fake
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Connections held unanswered.
    fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }

    /// The bodies of the `/register` requests so far.
    fn registrations(&self) -> Vec<Value> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|(path, _)| path == "/register")
            .map(|(_, body)| body.clone())
            .collect()
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.held.lock().unwrap().clear();
    }
}

fn serve(
    stream: TcpStream,
    requests: &Mutex<Vec<(String, Value)>>,
    heads: &Mutex<Vec<String>>,
    answer: &Answer,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut head = line.clone();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        head.push_str(&header);
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = path.split('?').next().unwrap_or("").to_owned();
    let reply = answer(&path, &body).to_string();
    heads.lock().unwrap().push(head);
    requests.lock().unwrap().push((path, body));
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    stream.flush()
}

/// A fake gateway run: an epoch, the nodes it knows, and optional liveness settings (none, as
/// the original gateway).
struct FakeRun {
    epoch: Mutex<String>,
    known: Mutex<HashSet<u64>>,
    settings: Value,
}

impl FakeRun {
    fn new(epoch: &str, settings: Value) -> Arc<FakeRun> {
        Arc::new(FakeRun {
            epoch: Mutex::new(epoch.into()),
            known: Mutex::new(HashSet::new()),
            settings,
        })
    }

    /// A restart: another epoch, nobody known.
    fn restart(&self, epoch: &str) {
        *self.epoch.lock().unwrap() = epoch.into();
        self.known.lock().unwrap().clear();
    }

    /// A restart that kept the registry (a gateway with a data dir): another epoch only.
    fn restart_keeping_nodes(&self, epoch: &str) {
        *self.epoch.lock().unwrap() = epoch.into();
    }

    fn answer(&self, path: &str, body: &Value) -> Value {
        let epoch = self.epoch.lock().unwrap().clone();
        let id = body["node_id"].as_u64().unwrap_or(0);
        match path {
            "/register" => {
                let mut known = self.known.lock().unwrap();
                let bootstrap = known.is_empty() && body.get("previous_epoch").is_none();
                known.insert(id);
                let mut answer = json!({
                    "status": "registered", "node_id": id, "is_bootstrap": bootstrap,
                    "registry_version": 1, "nodes": [], "leader": null, "epoch": epoch,
                });
                if let Value::Object(settings) = &self.settings {
                    answer.as_object_mut().unwrap().extend(settings.clone());
                }
                answer
            }
            "/heartbeat" if self.known.lock().unwrap().contains(&id) => {
                json!({"status": "acknowledged", "registry_version": 1, "epoch": epoch})
            }
            "/heartbeat" => json!({"status": "not_found", "epoch": epoch}),
            "/nodes" => json!({"nodes": [], "registry_version": 1}),
            "/leader" => json!({"leader": null, "message": "No leader currently registered"}),
            "/health" => {
                json!({"status": "healthy", "timestamp": 1.0, "version": "fake", "epoch": epoch})
            }
            _ => json!({"status": "failed", "message": "unknown node"}),
        }
    }
}

fn fake_run(host: &str, run: &Arc<FakeRun>) -> FakeGateway {
    let run = Arc::clone(run);
    FakeGateway::start(host, move |path, body| run.answer(path, body))
}

fn fast_client(gateway: &str) -> GatewayClient {
    GatewayClient::builder()
        .gateway(gateway)
        .heartbeat_interval(Duration::from_millis(20))
        .retry_base_delay(Duration::from_millis(5))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Runs `f` on a thread and returns its result, or `None` if it has not returned within
/// `limit` (the thread is then left to finish on its own).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    receiver.recv_timeout(limit).ok()
}

// ---------------------------------------------------------------------------------------------
// Issue 8, client side: previous_epoch.

#[test]
fn every_registration_after_the_first_carries_the_epoch_it_registered_with() {
    let run = FakeRun::new("run-1", Value::Null);
    let fake = fake_run("127.0.0.1", &run);
    let client = fast_client(&fake.address());
    client.register_node(node(1)).unwrap();
    // The gateway restarts: heartbeats get `not_found`, and the node registers again.
    run.restart("run-2");
    assert!(eventually(PATIENCE, || fake.registrations().len() >= 2));
    // Taken its answer, as below (a shutdown while it is on its way leaves the client with
    // run-1, the run it last registered with, and the next registration rightly says run-1).
    assert!(eventually(PATIENCE, || matches!(
        client.membership(),
        Membership::Registered { epoch: Some(e), .. } if e == "run-2"
    )));
    // The heartbeat thread is restarted: its next registration says so too.
    client.shutdown();
    run.restart("run-3");
    client.keep_registered(node(1));
    assert!(eventually(PATIENCE, || fake.registrations().len() >= 3));
    // The client has taken that registration's answer (the fake records a request before it
    // answers: under load the metadata could otherwise go out while the answer is on its way).
    assert!(eventually(PATIENCE, || matches!(
        client.membership(),
        Membership::Registered { epoch: Some(e), .. } if e == "run-3"
    )));
    // Metadata changed after joining.
    let mut metadata = Metadata::new();
    metadata.insert("role".into(), json!("replica"));
    client.update_metadata(metadata).unwrap();
    client.shutdown();

    // A busy machine may add a registration (a heartbeat's `not_found` racing the restart):
    // what holds is the order. The first names no epoch, each later one the run it last
    // registered with, and the last (the metadata) the third run.
    let sent = fake.registrations();
    let epochs: Vec<Option<&str>> = sent
        .iter()
        .map(|r| r.get("previous_epoch").and_then(Value::as_str))
        .collect();
    assert_eq!(epochs[0], None, "{sent:?}");
    let mut sorted = epochs.clone();
    sorted.sort();
    assert_eq!(epochs, sorted, "epochs only move on: {epochs:?}");
    for run in ["run-1", "run-2"] {
        assert!(epochs.contains(&Some(run)), "{run} in {epochs:?}");
    }
    let last = sent.last().unwrap();
    assert_eq!(last["previous_epoch"], "run-3", "{epochs:?}");
    assert_eq!(last["metadata"]["role"], "replica");
    assert!(
        client.is_bootstrap(),
        "the node that bootstrapped stays the bootstrap node"
    );
}

#[test]
fn a_failover_to_another_gateway_carries_previous_epoch() {
    let first_run = FakeRun::new("first", Value::Null);
    let second_run = FakeRun::new("second", Value::Null);
    let first = fake_run(own_host::FAILOVER, &first_run);
    let second = fake_run("127.0.0.1", &second_run);
    let client = GatewayClient::builder()
        .gateway(first.address())
        .gateway(second.address())
        .heartbeat_interval(Duration::from_millis(20))
        .retry_base_delay(Duration::from_millis(5))
        .build()
        .unwrap();
    client.register_node(node(3)).unwrap();
    drop(first);
    assert!(eventually(PATIENCE, || !second.registrations().is_empty()));
    assert_eq!(second.registrations()[0]["previous_epoch"], "first");
    assert_eq!(
        client.status().current_gateway,
        format!("http://{}", second.address())
    );
}

#[test]
fn reinitialising_discovery_rejoins_and_keeps_the_bootstrap_role() {
    let run = FakeRun::new("only", Value::Null);
    let fake = fake_run("127.0.0.1", &run);
    let my = my_node();
    let info = my
        .discovery()
        .initialize_with(fast_client(&fake.address()), node(5));
    assert!(info.is_bootstrap && my.is_bootstrap_node(), "{info:?}");
    my.discovery()
        .initialize_with(fast_client(&fake.address()), node(5));
    assert!(
        my.is_bootstrap_node(),
        "re-initialising must not flip the role"
    );
    assert_eq!(fake.registrations()[1]["previous_epoch"], "only");
    my.shutdown_discovery();
}

#[test]
fn after_an_in_memory_restart_neither_a_rejoining_node_nor_a_newcomer_bootstraps() {
    let port = free_port(own_host::RESTART);
    let first = start_at(own_host::RESTART, port, |c| fast_config(c, 5000));
    let survivor = my_node();
    let client = GatewayClient::builder()
        .gateway(format!("{}:{port}", own_host::RESTART))
        .retry_base_delay(Duration::from_millis(5))
        .build()
        .unwrap();
    let info = survivor.discovery().initialize_with(client, node(1));
    assert!(info.is_bootstrap, "{info:?}");
    let old_epoch = first.get("/health").1["epoch"].clone();
    drop(first);

    let second = start_at(own_host::RESTART, port, |c| fast_config(c, 5000));
    // The survivor's heartbeat meets `not_found` and registers again, as a rejoining member.
    assert!(eventually(
        PATIENCE,
        || second.get("/stats").1["total_nodes"] == 1
    ));
    let stats = second.get("/stats").1;
    assert_eq!(stats["bootstrap_armed"], false, "{stats}");
    // Nobody bootstrapped: the old leader, rejoining, put itself back as leader (issue 21),
    // which a bootstrap never is.
    assert!(
        eventually(PATIENCE, || second.get("/leader").1["leader"]["node_id"]
            == 1),
        "{}",
        second.get("/leader").1
    );
    assert_eq!(second.get("/stats").1["bootstrap_initiated"], true);
    // A newcomer is not told to start a second cluster.
    let newcomer = second.register(2);
    assert_eq!(newcomer["is_bootstrap"], false, "{newcomer}");
    // The survivor still knows it bootstrapped the cluster, and now follows the new run.
    assert!(survivor.is_bootstrap_node());
    assert!(eventually(PATIENCE, || survivor
        .discovery_info()
        .epoch
        .is_some_and(|e| e != old_epoch)));
    survivor.shutdown_discovery();
}

// ---------------------------------------------------------------------------------------------
// Issue 14.

/// Item 1: the registration made by the heartbeat thread is not thrown away.
#[test]
fn a_node_started_before_its_gateway_learns_that_it_bootstrapped() {
    let host = own_host::STARTED_BEFORE_GATEWAY;
    let port = free_port(host);
    let my = my_node();
    let changes = my.discovery().subscribe();
    let client = GatewayClient::builder()
        .gateway(format!("{host}:{port}"))
        .heartbeat_interval(Duration::from_millis(50))
        .retry_base_delay(Duration::from_millis(5))
        .build()
        .unwrap();
    let info = my.discovery().initialize_with(client, node(1));
    assert!(!info.gateway_available && !info.is_bootstrap, "{info:?}");

    let server = start_at(host, port, |_| {});
    assert!(eventually(PATIENCE, || my.is_bootstrap_node()));
    assert_eq!(server.get("/leader").1["leader"]["node_id"], 1);
    let change: ClusterChange = changes.recv_timeout(PATIENCE).unwrap();
    assert!(change.bootstrapped, "{change:?}");
    assert!(my.discovery_info().is_bootstrap);
    my.shutdown_discovery();
}

/// Items 2 and 4: a frozen gateway holds up the caller that talks to it, never a reader, and
/// shows as unavailable while the request is still waiting.
#[test]
fn reads_answer_while_the_gateway_is_frozen_and_availability_shows_it() {
    let run = FakeRun::new("e1", Value::Null);
    let fake = Arc::new(fake_run("127.0.0.1", &run));
    let my = Arc::new(my_node());
    let client = GatewayClient::builder()
        .gateway(fake.address())
        .heartbeat_interval(Duration::from_millis(20))
        // Long enough that nothing here ends by timing out.
        .timeout(Duration::from_secs(120))
        .deadline(Duration::from_secs(120))
        .build()
        .unwrap();
    let info = my.discovery().initialize_with(client, node(1));
    assert!(info.gateway_available, "{info:?}");
    fake.freeze();

    // A writer blocks on the frozen gateway...
    let (done, writer_done) = mpsc::channel();
    let writer = {
        let my = Arc::clone(&my);
        std::thread::spawn(move || {
            let _ = my.update_gateway_leader(1);
            let _ = done.send(());
        })
    };
    // Its request and a heartbeat's now wait on the frozen gateway.
    assert!(eventually(PATIENCE, || fake.held() >= 2));
    // Every read answers while the writer is still blocked.
    let reader = Arc::clone(&my);
    let read = within(PATIENCE, move || {
        (
            reader.discovery_info(),
            reader.is_bootstrap_node(),
            reader.cluster_nodes(),
            reader.cluster_leader(),
            reader.discovery().snapshot(),
            reader.discovery().status(),
            reader.discovery().cluster_view(),
        )
    });
    let (info, bootstrap, ..) = read.expect("a read waited for the frozen gateway");
    assert!(
        writer_done.try_recv().is_err(),
        "the writer is still blocked"
    );
    // The gateway shows as unavailable well before any request times out.
    let reader = Arc::clone(&my);
    let unavailable = within(PATIENCE, move || {
        eventually(PATIENCE, || !reader.discovery_info().gateway_available)
    });
    assert_eq!(unavailable, Some(true));
    assert_eq!(
        my.discovery().status().unwrap().consecutive_failures,
        0,
        "nothing timed out yet"
    );
    assert!(bootstrap && info.is_bootstrap);
    // The writer is released by closing the frozen connections; shutdown returns meanwhile.
    assert!(within(PATIENCE, move || my.shutdown_discovery()).is_some());
    drop(Arc::try_unwrap(fake).ok());
    writer.join().unwrap();
}

/// Item 3: `initialize_*` is bounded by a deadline, and cancelled by `shutdown()`.
#[test]
fn initialising_against_a_frozen_gateway_ends_at_the_deadline() {
    let fake = FakeGateway::frozen("127.0.0.1");
    let client = GatewayClient::builder()
        .gateway(fake.address())
        .timeout(Duration::from_secs(120))
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let my = my_node();
    let info = within(PATIENCE, move || {
        let info = my.discovery().initialize_with(client, node(1));
        my.shutdown_discovery();
        info
    })
    .expect("initialize_with waited past its deadline");
    assert!(!info.gateway_available, "{info:?}");
    assert!(info.error.is_some());
}

#[test]
fn shutdown_cancels_an_initialisation_waiting_on_a_frozen_gateway() {
    let fake = FakeGateway::frozen("127.0.0.1");
    let (sender, returned) = mpsc::channel();
    let client = GatewayClient::builder()
        .gateway(fake.address())
        .timeout(Duration::from_secs(120))
        .deadline(Duration::from_secs(120))
        .build()
        .unwrap();
    let second = Arc::new(my_node());
    {
        let second = Arc::clone(&second);
        std::thread::spawn(move || {
            let _ = sender.send(second.discovery().initialize_with(client, node(2)));
        });
    }
    assert!(eventually(PATIENCE, || second
        .discovery()
        .client()
        .is_some()));
    // Ctrl-C: the embedder shuts discovery down from another thread; both return promptly.
    assert!(
        within(PATIENCE, {
            let second = Arc::clone(&second);
            move || second.shutdown_discovery()
        })
        .is_some()
    );
    let info = returned
        .recv_timeout(PATIENCE)
        .expect("initialize_with ignored shutdown");
    assert!(!info.gateway_available);
}

/// Item 5: without a pinned interval the client beats at the gateway's.
#[test]
fn a_node_follows_the_gateways_heartbeat_interval_and_is_never_reaped() {
    // Reaped after 10 s of silence: at the default 30 s interval the node would be gone,
    // while a loaded machine that holds the 100 ms beats up for a second or two does not
    // reap it (it did at 2 s, under two CPU hogs).
    let server = TestServer::with(|c| fast_config(c, 5000));
    let client = GatewayClient::builder()
        .gateway(server.url.clone())
        .build()
        .unwrap();
    client.register_node(node(1)).unwrap();
    assert_eq!(
        client.status().heartbeat_interval,
        Duration::from_millis(100)
    );
    // Beats come at the gateway's interval: 30 of them, which at the default interval would
    // take a quarter of an hour; the node is there at every look meanwhile, and beats no
    // faster than the interval allows (90 ms apart at least: 100 ms less its 10 % jitter).
    let beats = || server.get("/stats").1["heartbeats_total"].as_u64().unwrap();
    let (started, beats_before) = (std::time::Instant::now(), beats());
    let beating = eventually(Duration::from_secs(60), || {
        let (_, nodes) = server.get("/nodes?status=all");
        let present = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node_id"] == 1);
        assert!(present, "the node was reaped");
        beats() >= beats_before + 30
    });
    assert!(beating, "{} heartbeats in a minute", beats() - beats_before);
    let beaten = beats() - beats_before;
    let most = (started.elapsed().as_millis() / 90 + 1) as u64;
    assert!(
        beaten <= most,
        "{beaten} heartbeats, at most {most} expected"
    );
    assert_eq!(server.get("/stats").1["reaped_total"], 0);
}

#[test]
fn a_pinned_interval_wins_and_the_original_gateway_gets_the_default() {
    let run = FakeRun::new(
        "e",
        json!({"heartbeat_interval": 0.15, "suspect_after": 0.3}),
    );
    let fake = fake_run("127.0.0.1", &run);
    let pinned = GatewayClient::builder()
        .gateway(fake.address())
        .heartbeat_interval(Duration::from_secs(7))
        .build()
        .unwrap();
    pinned.register_node(node(1)).unwrap();
    assert_eq!(pinned.status().heartbeat_interval, Duration::from_secs(7));
    assert_eq!(pinned.gateway_settings().heartbeat_interval, Some(0.15));

    let original = FakeRun::new("e", Value::Null);
    let fake = fake_run("127.0.0.1", &original);
    let client = GatewayClient::builder()
        .gateway(fake.address())
        .build()
        .unwrap();
    client.register_node(node(2)).unwrap();
    assert_eq!(
        client.status().heartbeat_interval,
        DEFAULT_HEARTBEAT_INTERVAL
    );
}

/// Item 6 and the subscription: across a gateway restart, no peer that stayed is ever reported
/// gone; one that really went is, once the carry period ends.
#[test]
fn a_gateway_restart_shows_no_phantom_departures_and_reports_real_ones() {
    let host = own_host::RESTART;
    let port = free_port(host);
    // Suspect after 5 s: the carry period after the restart (long, for a loaded machine).
    let first = start_at(host, port, |c| fast_config(c, 5000));
    let gateway = format!("{host}:{port}");
    let nodes: Vec<MyNode> = (1..=4).map(|_| my_node()).collect();
    for (i, n) in nodes.iter().enumerate() {
        let client = GatewayClient::builder()
            .gateway(gateway.clone())
            .retry_base_delay(Duration::from_millis(5))
            .build()
            .unwrap();
        let info = n.discovery().initialize_with(client, node(i as u64 + 1));
        assert!(info.gateway_available, "{info:?}");
    }
    let watcher = &nodes[1];
    assert!(eventually(PATIENCE, || watcher.cluster_nodes().len() == 3));
    let changes = watcher.discovery().subscribe();
    let before = changes.recv_timeout(PATIENCE).unwrap();
    assert_eq!(before.view.cluster.nodes.len(), 3);
    // Node 4 goes away for good while the gateway is down.
    nodes[3].shutdown_discovery();
    let old_epoch = first.get("/health").1["epoch"].as_str().unwrap().to_owned();
    drop(first);
    let second = start_at(host, port, |c| fast_config(c, 5000));
    let new_epoch = second.get("/health").1["epoch"]
        .as_str()
        .unwrap()
        .to_owned();

    // Watch every change until node 4 is reported gone.
    let mut seen = Vec::new();
    let gone = loop {
        let change = changes
            .recv_timeout(PATIENCE)
            .expect("node 4's departure was never reported");
        let ids: Vec<u64> = change
            .view
            .cluster
            .nodes
            .iter()
            .map(|n| n.node_id)
            .collect();
        assert!(
            ids.contains(&1) && ids.contains(&3),
            "a peer that stayed was shown gone: {change:?}"
        );
        assert!(
            change.left.iter().all(|&id| id == 4),
            "a phantom departure: {change:?}"
        );
        seen.push(change.clone());
        if change.left == vec![4] {
            break change;
        }
    };
    assert_eq!(gone.view.epoch.as_deref(), Some(new_epoch.as_str()));
    assert_ne!(old_epoch, new_epoch);
    // The leader (node 1, which bootstrapped) was carried while the new run named none; when
    // the carry period ends the view says what the gateway says (an in-memory gateway forgot
    // the leader until a node sets it again).
    seen.pop();
    assert!(seen.iter().all(|c| {
        c.view
            .cluster
            .leader
            .as_ref()
            .is_some_and(|l| l.node_id == 1)
    }));
    for n in &nodes {
        n.shutdown_discovery();
    }
}

/// Item 7: a bad host is an error at once, never a silent rewrite.
#[test]
fn a_bad_gateway_host_is_an_error_at_once() {
    let my = my_node();
    let info = my.initialize_discovery("gw host", 8080, 1, "127.0.0.1", 5001, &["raft"], None);
    assert!(!info.gateway_available);
    assert_eq!(info.node_id, Some(1));
    let error = info.error.unwrap();
    assert!(error.contains("gw host"), "{error}");
    assert!(my.discovery().client().is_none(), "nothing runs");

    assert!(matches!(
        GatewayClient::try_new("gw host", 8080),
        Err(ClientError::InvalidAddress(_))
    ));
    let client = GatewayClient::new("gw host", 8080);
    assert!(matches!(
        client.health_check(),
        Err(ClientError::InvalidAddress(_))
    ));
    client.keep_registered(node(1));
    assert!(!client.status().heartbeat_running);
}

/// Item 8: the error names the gateway in use.
#[test]
fn with_several_gateways_the_error_names_the_one_in_use() {
    let in_use = free_port(own_host::CLOSED);
    let mut other = free_port(own_host::CLOSED);
    while other == in_use {
        other = free_port(own_host::CLOSED);
    }
    let client = GatewayClient::builder()
        .gateway(format!("{}:{in_use}", own_host::CLOSED))
        .gateway(format!("{}:{other}", own_host::CLOSED))
        .retry_base_delay(Duration::from_millis(1))
        .build()
        .unwrap();
    let error = client.health_check().unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&format!(":{in_use}")), "{text}");
    assert!(!text.contains(&format!(":{other}")), "{text}");
}

/// Warnings logged by the discovery handle, captured by the only logger this test binary
/// installs.
fn discovery_warnings() -> &'static Mutex<Vec<String>> {
    struct Capture;
    static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    impl log::Log for Capture {
        fn enabled(&self, metadata: &log::Metadata) -> bool {
            metadata.level() <= log::Level::Warn
                && metadata
                    .target()
                    .starts_with("cluster_gateway::client::discovery")
        }
        fn log(&self, record: &log::Record) {
            if self.enabled(record.metadata()) {
                WARNINGS.lock().unwrap().push(record.args().to_string());
            }
        }
        fn flush(&self) {}
    }
    static CAPTURE: Capture = Capture;
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).expect("no other logger in the test binary");
        log::set_max_level(log::LevelFilter::Warn);
    });
    &WARNINGS
}

/// Item 8: a leader the gateway does not know is a logged refusal, not a bare `false`.
#[test]
fn an_unknown_leader_is_refused_with_the_gateways_reason_logged() {
    let warnings = discovery_warnings();
    let server = TestServer::start();
    let my = my_node();
    let client = GatewayClient::builder()
        .gateway(server.url.clone())
        .build()
        .unwrap();
    my.discovery().initialize_with(client, node(1));
    assert!(!my.update_gateway_leader(999));
    let logged = warnings.lock().unwrap().clone();
    assert!(
        logged
            .iter()
            .any(|w| w.contains("999") && w.contains("Leader not found in registry")),
        "{logged:?}"
    );
    assert!(my.update_gateway_leader(1));
    my.shutdown_discovery();
}

/// Item 8: after `leave()` the client no longer names a node.
#[test]
fn after_leave_the_status_names_no_node_and_the_next_registration_is_a_first() {
    let server = TestServer::start();
    let my = my_node();
    let client = GatewayClient::builder()
        .gateway(server.url.clone())
        .build()
        .unwrap();
    my.discovery().initialize_with(client, node(1));
    assert!(my.is_bootstrap_node());
    my.discovery().leave().unwrap();
    assert_eq!(my.discovery().status().unwrap().node_id, None);
    assert!(!my.is_bootstrap_node());
    assert_eq!(server.get("/stats").1["total_nodes"], 0);
    // The whole cluster left on purpose: the next node bootstraps a new one.
    let client = my.discovery().client().unwrap();
    let answer = client.register_node(node(1)).unwrap();
    assert!(answer.is_bootstrap);
    my.shutdown_discovery();
}

/// Item 8, decided: the leader is reported as the gateway reports it, suspected or not, while
/// the peer list holds active nodes only.
#[test]
fn a_suspected_leader_is_still_the_leader_but_not_a_listed_peer() {
    let server = TestServer::with(|c| {
        fast_config(c, 300);
        // Suspected soon, reaped long after the test.
        c.liveness.node_timeout = Duration::from_secs(600);
    });
    let leader = GatewayClient::builder()
        .gateway(server.url.clone())
        .build()
        .unwrap();
    leader.register_node(node(1)).unwrap();
    let follower = my_node();
    let client = GatewayClient::builder()
        .gateway(server.url.clone())
        .build()
        .unwrap();
    follower.discovery().initialize_with(client, node(2));
    leader.shutdown();
    assert!(eventually(PATIENCE, || follower.cluster_nodes().is_empty()));
    let shown = follower
        .cluster_leader()
        .expect("the suspected leader is still the leader");
    assert_eq!(shown.node_id, 1);
    assert_eq!(shown.status, NodeStatus::Suspected);
    follower.shutdown_discovery();
}

/// Item 9: the handle exposes the client, metadata changes after joining, and a consistent
/// snapshot.
#[test]
fn the_handle_offers_leave_status_metadata_and_a_snapshot() {
    let server = TestServer::start();
    let my = my_node();
    let client = GatewayClient::builder()
        .gateway(server.url.clone())
        .build()
        .unwrap();
    let mut metadata = Metadata::new();
    metadata.insert("zone".into(), json!("a"));
    my.discovery()
        .initialize_with(client, node(1).metadata(metadata));
    let mut more = Metadata::new();
    more.insert("role".into(), json!("primary"));
    my.discovery().update_metadata(more).unwrap();
    let (_, nodes) = server.get("/nodes");
    assert_eq!(
        nodes["nodes"][0]["metadata"],
        json!({"zone": "a", "role": "primary"})
    );
    assert!(my.is_bootstrap_node(), "a metadata change keeps the role");

    let snapshot = my.discovery().snapshot();
    let status = snapshot.status.unwrap();
    assert_eq!(status.node_id, Some(1));
    assert!(snapshot.info.gateway_available && status.gateway_available);
    // The epoch is known from the registration's answer, before any heartbeat.
    assert_eq!(
        status.gateway_epoch.as_deref(),
        server.get("/health").1["epoch"].as_str()
    );
    assert_eq!(
        snapshot.info.registry_version,
        snapshot.view.as_ref().map(|v| v.cluster.registry_version)
    );
    assert_eq!(
        snapshot.info.epoch.as_deref(),
        server.get("/health").1["epoch"].as_str()
    );
    assert!(
        my.discovery()
            .client()
            .unwrap()
            .get_stats()
            .unwrap()
            .total_nodes
            == 1
    );
    my.discovery().leave().unwrap();
    assert_eq!(server.get("/stats").1["total_nodes"], 0);
}

/// A registration the gateway refuses (4xx) is reported, and stops the heartbeat thread: it
/// would be refused again.
#[test]
fn a_refused_background_registration_is_reported_and_stops_heartbeating() {
    let server = TestServer::start();
    let my = my_node();
    let client = GatewayClient::builder()
        .gateway(server.url.clone())
        .build()
        .unwrap();
    let info = my.discovery().initialize_with(client, {
        let mut registration = node(1);
        registration.ip_address = "not an address".into();
        registration
    });
    assert!(!info.gateway_available);
    let error = info.error.unwrap();
    assert!(error.contains("Invalid ip_address"), "{error}");
    assert!(eventually(PATIENCE, || !my
        .discovery()
        .status()
        .unwrap()
        .heartbeat_running));
    assert_eq!(server.get("/stats").1["total_nodes"], 0);
}

/// Item 6: a new epoch with this node still known (a gateway restarted with its registry kept)
/// makes the client fetch the view and settings again, and the view carries the new epoch.
#[test]
fn a_new_epoch_alone_makes_the_client_fetch_the_view_again() {
    let run = FakeRun::new("before", Value::Null);
    let fake = fake_run("127.0.0.1", &run);
    let client = fast_client(&fake.address());
    client.register_node(node(1)).unwrap();
    let fetched = |path: &str| {
        fake.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    };
    let (nodes_before, health_before) = (fetched("/nodes"), fetched("/health"));
    run.restart_keeping_nodes("after");
    assert!(eventually(PATIENCE, || client
        .cluster_view()
        .is_some_and(|v| v.epoch.as_deref() == Some("after"))));
    assert!(fetched("/nodes") > nodes_before);
    assert!(fetched("/health") > health_before);
    assert_eq!(
        fake.registrations().len(),
        1,
        "the node was known: no registration"
    );
    assert_eq!(client.status().gateway_epoch.as_deref(), Some("after"));
}

/// Re-initialising keeps subscribers, and sends them changes only: the next message after it
/// is the next real change, not the known peers again.
#[test]
fn subscribers_carry_on_across_reinitialisation_without_a_replay() {
    let server = TestServer::with(|c| fast_config(c, 5000));
    let builder = || {
        GatewayClient::builder()
            .gateway(server.url.clone())
            .build()
            .unwrap()
    };
    let peer = my_node();
    peer.discovery().initialize_with(builder(), node(1));
    let my = my_node();
    let changes = my.discovery().subscribe();
    my.discovery().initialize_with(builder(), node(2));
    let first = changes.recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        first.joined.iter().map(|n| n.node_id).collect::<Vec<_>>(),
        vec![1]
    );
    my.discovery().initialize_with(builder(), node(2));
    server.register(3);
    let next = changes.recv_timeout(PATIENCE).unwrap();
    assert_eq!(
        next.joined.iter().map(|n| n.node_id).collect::<Vec<_>>(),
        vec![3],
        "{next:?}"
    );
    assert!(next.left.is_empty());
    peer.shutdown_discovery();
    my.shutdown_discovery();
}

#[test]
fn the_heartbeat_threads_registrations_ask_for_no_list() {
    let run = FakeRun::new("e1", json!({}));
    let fake = fake_run("127.0.0.1", &run);
    let client = fast_client(&fake.address());
    // The caller's own registration returns the cluster: it asks for the list.
    client.discover_cluster(node(1)).expect("registered");
    // A restart: the heartbeat thread registers again, and reads the list apart.
    run.restart("e2");
    let again = crate::support::eventually(PATIENCE, || {
        fake.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.starts_with("POST /register"))
            .count()
            >= 2
    });
    assert!(again, "the heartbeat thread registered again");
    let heads = fake.heads.lock().unwrap().clone();
    let registrations: Vec<&String> = heads
        .iter()
        .filter(|h| h.starts_with("POST /register"))
        .collect();
    for head in &registrations[1..] {
        assert!(
            head.to_ascii_lowercase().contains("prefer: return=minimal"),
            "a re-registration without the preference: {head}"
        );
    }
    client.shutdown();
}
