//! Issue 21, the embedded client's second round: a final `leave()`, joins within moments of a
//! gateway appearing, `update_metadata` that never registers first, the membership status,
//! the leader given back after an in-memory restart, failing fast, absurd advertised
//! intervals, and the helpers. Each test failed with its fix taken out (see the commits).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::relay::{Event, Mode, Relay, Request};
use super::*;
use crate::support::{Barrier, join_all};

/// Settings as a test gateway advertises them: 100 ms heartbeats, slow suspicion.
fn advertised(config: &mut ServerConfig) {
    fast_config(config, 30_000);
}

fn client_of(gateway: &str) -> GatewayClient {
    // A generous deadline: under two CPU hogs a leave() took over 2 s, and no test here times
    // these clients' calls against it.
    GatewayClient::builder()
        .gateway(gateway)
        .retry_base_delay(Duration::from_millis(5))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn listed(server: &TestServer, node_id: u64) -> bool {
    let (_, nodes) = server.get("/nodes?status=all");
    nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["node_id"] == node_id)
}

/// A socket bound to `host:port` that never listens: connections are refused until dropped.
fn hold_closed(host: &str) -> (socket2::Socket, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr: SocketAddr = format!("{host}:0").parse().unwrap();
    socket.bind(&addr.into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    (socket, port)
}

/// Item 1: `leave()` racing `update_metadata()` 200 times leaves no ghost, seen from the
/// gateway's side. Every request passes a relay that records it, as does a witness node that
/// stays registered. Each round a new node registers, then one thread publishes metadata while
/// another calls `leave()`, released together by a barrier and each spinning (not sleeping)
/// first for a time that varies by round, so that the publish lands before `leave()` began, is
/// on the wire while it waits, or comes after it. After `leave()` returns Ok the node is not
/// listed and its heartbeat thread has stopped. At the end, once the witness has landed two
/// more heartbeats (a heartbeat interval, in which any ghost thread would have written too),
/// no registration, heartbeat, metadata or leader write of any round's node reached the
/// gateway after that node's removal did, and only the witness is registered.
#[test]
fn two_hundred_leaves_racing_metadata_updates_leave_no_ghost() {
    const ROUNDS: u64 = 200;
    const WITNESS: u64 = 1;
    let server = TestServer::with(advertised);
    let relay = Relay::start(server.addr());
    let witness = client_of(&relay.address());
    witness.register_node(node(WITNESS)).unwrap();
    // Kept until the end: a ghost thread of a dropped client would be stopped by the drop.
    let mut clients = Vec::new();
    let (mut published, mut refused) = (0, 0);
    for round in 0..ROUNDS {
        let node_id = 1000 + round;
        let client = Arc::new(client_of(&relay.address()));
        client.register_node(node(node_id)).unwrap();
        // From the publisher 200 us behind to 1 ms ahead of `leave()`, in 12 us steps, twice.
        let offset = (round % 100) as i64 * 12 - 200;
        let publisher_spin = Duration::from_micros(offset.min(0).unsigned_abs());
        let leave_spin = Duration::from_micros(offset.max(0).unsigned_abs());
        let barrier = Barrier::new(2);
        let publisher = {
            let (client, barrier) = (Arc::clone(&client), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let _guard = barrier.guard();
                barrier.wait();
                spin(publisher_spin);
                let mut metadata = serde_json::Map::new();
                metadata.insert("round".into(), json!(round));
                client.update_metadata(metadata)
            })
        };
        barrier.wait();
        spin(leave_spin);
        let left = client.leave();
        let update = join_all(vec![publisher], PATIENCE).remove(0);
        assert!(left.is_ok(), "round {round}: {left:?}");
        match update {
            Ok(_) => published += 1,
            Err(ClientError::NotRegistered) => refused += 1,
            Err(e) => panic!("round {round}: update_metadata failed otherwise: {e}"),
        }
        assert!(
            !listed(&server, node_id),
            "round {round}: node {node_id} listed after leave() returned Ok"
        );
        assert!(
            !client.status().heartbeat_running,
            "round {round}: heartbeats after leave()"
        );
        assert_eq!(client.membership(), Membership::Left, "round {round}");
        clients.push(client);
    }
    eprintln!("{published} publishes landed before leave() removed the node, {refused} refused");
    // Both sides of the race were run, not only one.
    assert!(published > 0 && refused > 0, "{published} / {refused}");
    let beats = |events: &[Event]| {
        events
            .iter()
            .filter(|e| match e {
                Event::Landed(r, _) => r.path == "/heartbeat" && about(r) == Some(WITNESS),
                Event::Arrived(_) => false,
            })
            .count()
    };
    let before = beats(&relay.events());
    relay.wait_for("two more heartbeats of the witness", |events| {
        beats(events) >= before + 2
    });
    let ghosts = writes_after_removal(&relay.events());
    assert_eq!(
        ghosts,
        Vec::<String>::new(),
        "writes after a node's removal"
    );
    assert_eq!(server.get("/stats").1["total_nodes"], 1);
    assert!(listed(&server, WITNESS));
    assert!(clients.iter().all(|c| !c.status().heartbeat_running));
}

/// Busy-waits for `duration`: a few microseconds' offset between two threads, which a sleep
/// (at least the scheduler's tick, and whatever it likes) cannot give.
fn spin(duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// The node a request is about: its body's `node_id` (`leader_id` for `/leader`).
fn about(request: &Request) -> Option<u64> {
    let body: Value = serde_json::from_str(&request.body).ok()?;
    body.get("node_id")
        .or_else(|| body.get("leader_id"))?
        .as_u64()
}

/// Every registration, heartbeat, metadata or leader write (arrived or landed) about a node
/// after that node's first removal arrived, described.
fn writes_after_removal(events: &[Event]) -> Vec<String> {
    let mut removed = HashSet::new();
    let mut ghosts = Vec::new();
    for event in events {
        let (request, what) = match event {
            Event::Arrived(r) => (r, "arrived"),
            Event::Landed(r, _) => (r, "landed"),
        };
        let Some(node_id) = about(request) else {
            continue;
        };
        match request.path.as_str() {
            "/remove" => {
                removed.insert(node_id);
            }
            "/register" | "/heartbeat" | "/leader" if removed.contains(&node_id) => {
                ghosts.push(format!("{} {what} for node {node_id}", request.path));
            }
            _ => {}
        }
    }
    ghosts
}

/// A client of the gateway behind `relay` that gives up on a request after `deadline`.
fn client_with_deadline(relay: &Relay, deadline: Duration) -> Arc<GatewayClient> {
    Arc::new(
        GatewayClient::builder()
            .gateway(relay.address())
            .retry_base_delay(Duration::from_millis(5))
            .timeout(deadline)
            .deadline(deadline)
            .build()
            .unwrap(),
    )
}

/// Publishes `{"round": round}` on a thread of its own.
fn publish_round(
    client: &Arc<GatewayClient>,
    round: u64,
) -> std::thread::JoinHandle<Result<cluster_gateway::api::RegisterResponse, ClientError>> {
    let client = Arc::clone(client);
    std::thread::spawn(move || {
        let mut metadata = serde_json::Map::new();
        metadata.insert("round".into(), json!(round));
        client.update_metadata(metadata)
    })
}

fn is_round(request: &Request) -> bool {
    request.path == "/register" && request.body.contains("\"round\"")
}

fn landed(events: &[Event], what: impl Fn(&Request) -> bool) -> Option<usize> {
    events
        .iter()
        .position(|e| matches!(e, Event::Landed(r, _) if what(r)))
}

/// True once a removal has landed after the metadata write landed.
fn removed_after_the_write(events: &[Event]) -> bool {
    landed(events, is_round).is_some_and(|write| {
        events[write..]
            .iter()
            .any(|e| matches!(e, Event::Landed(r, 200) if r.path == "/remove"))
    })
}

/// What reached the relay after the first `skip` events, but removals.
fn sent_after(relay: &Relay, skip: usize) -> Vec<String> {
    relay.events()[skip..]
        .iter()
        .filter_map(|e| match e {
            Event::Arrived(r) if r.path != "/remove" => Some(r.path.clone()),
            _ => None,
        })
        .collect()
}

/// Item 1, made to happen: a metadata write the gateway takes only after `leave()`'s removal
/// (held by the relay until the removal has landed, past the client's deadline, so the client
/// gave up on it). Before, `leave()` took the removal's answer as final and the write left a
/// ghost; now a write that ended without an answer leaves the removal to the background,
/// which takes the node off again after the write landed.
#[test]
fn a_metadata_write_the_gateway_takes_after_the_removal_leaves_no_ghost() {
    let server = TestServer::with(advertised);
    let relay = Relay::start(server.addr());
    let client = client_with_deadline(&relay, Duration::from_secs(1));
    client.register_node(node(1)).unwrap();
    relay.hold_requests(is_round);
    relay.hold_answers(|r| r.path == "/remove");
    let publisher = publish_round(&client, 1);
    relay.wait_for("the metadata write", |events| {
        events
            .iter()
            .any(|e| matches!(e, Event::Arrived(r) if is_round(r)))
    });
    let leaving = {
        let client = Arc::clone(&client);
        std::thread::spawn(move || client.leave())
    };
    // The client gives up on the write at its deadline...
    let published = join_all(vec![publisher], PATIENCE).remove(0);
    assert!(published.is_err(), "{published:?}");
    // ... `leave()` removes the node...
    relay.wait_for("the removal land", |events| {
        landed(events, |r| r.path == "/remove").is_some()
    });
    // ... and only then does the gateway take the write: the node is listed again.
    relay.resume(|_| false);
    assert!(listed(&server, 1));
    relay.release_answers();
    let left = join_all(vec![leaving], PATIENCE).remove(0);
    assert!(
        matches!(left, Err(ClientError::Timeout { .. })),
        "leave() must say its removal is not final: {left:?}"
    );
    let after_leave = relay.events().len();
    relay.wait_for("a removal after the write landed", removed_after_the_write);
    assert!(!listed(&server, 1), "a ghost");
    assert_eq!(sent_after(&relay, after_leave), Vec::<String>::new());
    assert!(!client.status().heartbeat_running);
    assert_eq!(client.status().node_id, None);
    assert_eq!(client.membership(), Membership::Left);
}

/// Item 1, the gateway frozen: `leave()` returns within its bound (the deadline for the
/// writes on the wire, then the removal's own), and when the gateway resumes and takes what
/// it held in the worst order (the removals first, the node's registration last), the node
/// is removed again and stays gone.
#[test]
fn a_node_that_left_while_its_gateway_was_frozen_stays_gone_after_it_resumes() {
    let server = TestServer::with(advertised);
    let relay = Relay::start(server.addr());
    let deadline = Duration::from_secs(1);
    let client = client_with_deadline(&relay, deadline);
    client.register_node(node(1)).unwrap();
    relay.set_mode(Mode::Frozen);
    let publisher = publish_round(&client, 1);
    relay.wait_for("the metadata write", |events| {
        events
            .iter()
            .any(|e| matches!(e, Event::Arrived(r) if is_round(r)))
    });
    let started = Instant::now();
    let left = client.leave();
    let took = started.elapsed();
    eprintln!("leave() returned after {took:?}: {left:?}");
    assert!(left.is_err(), "no gateway confirmed the removal: {left:?}");
    // The 200 ms given to the heartbeat thread, the writes' deadline, the removal's deadline.
    let bound = Duration::from_millis(200) + deadline * 2;
    assert!(took <= bound + Duration::from_secs(1), "{took:?}");
    assert!(join_all(vec![publisher], PATIENCE).remove(0).is_err());
    let after_leave = relay.events().len();
    relay.resume(|r| r.path == "/remove");
    assert!(landed(&relay.events(), is_round).is_some());
    relay.wait_for("a removal after the write landed", removed_after_the_write);
    assert!(!listed(&server, 1), "a ghost");
    assert_eq!(sent_after(&relay, after_leave), Vec::<String>::new());
    assert!(!client.status().heartbeat_running);
    assert_eq!(client.membership(), Membership::Left);
}

/// Item 5: a gateway that goes away and comes back five times. `gateway_available` and the
/// membership follow each time, with no flap back to unavailable once it answers again; the
/// node is registered once (the gateway kept it), and after `leave()` it is gone.
#[test]
fn availability_and_membership_follow_a_flapping_gateway_without_ghosts() {
    let server = TestServer::with(advertised);
    let relay = Relay::start(server.addr());
    let client = client_of(&relay.address());
    let changes = client.subscribe_membership();
    client.register_node(node(1)).unwrap();
    let registered = client.membership();
    assert!(matches!(registered, Membership::Registered { .. }));
    let rounds = 5;
    for round in 0..rounds {
        relay.set_mode(Mode::Away);
        assert!(
            eventually(PATIENCE, || matches!(
                client.membership(),
                Membership::GatewayLost { .. }
            )),
            "round {round}: the gateway's absence was not noticed"
        );
        assert!(!client.status().gateway_available);
        relay.set_mode(Mode::Pass);
        assert!(
            eventually(PATIENCE, || client.status().gateway_available),
            "round {round}: the gateway's return was not noticed"
        );
        // Five heartbeats later it has not flapped back, and the node is a member as before.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            assert!(client.status().gateway_available, "round {round}: a flap");
            assert_eq!(client.membership(), registered, "round {round}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let seen: Vec<Membership> = changes.try_iter().collect();
    let mut expected = vec![Membership::Joining, registered.clone()];
    for _ in 0..rounds {
        expected.push(Membership::GatewayLost {
            since: std::time::SystemTime::UNIX_EPOCH,
        });
        expected.push(registered.clone());
    }
    let shape = |m: &Membership| match m {
        Membership::GatewayLost { .. } => Membership::GatewayLost {
            since: std::time::SystemTime::UNIX_EPOCH,
        },
        other => other.clone(),
    };
    assert_eq!(seen.iter().map(shape).collect::<Vec<_>>(), expected);
    let registrations = relay
        .events()
        .iter()
        .filter(|e| matches!(e, Event::Arrived(r) if r.path == "/register"))
        .count();
    assert_eq!(
        registrations, 1,
        "registered again though the gateway kept it"
    );
    client.leave().unwrap();
    assert!(!listed(&server, 1), "a ghost");
    assert_eq!(server.get("/stats").1["total_nodes"], 0);
}

/// Item 2: a node started before its gateway registers within moments of the gateway's
/// start, not at the 30 s heartbeat pace it has before any gateway answered.
#[test]
fn a_node_started_before_its_gateway_joins_within_two_seconds_of_it() {
    let host = own_host::JOIN_LATE;
    let (closed, port) = hold_closed(host);
    let client = GatewayClient::builder()
        .gateway(format!("{host}:{port}"))
        .build()
        .unwrap();
    client.keep_registered(node(1));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(client.membership(), Membership::Joining);
    drop(closed);
    let server = start_at(host, port, advertised);
    let started = Instant::now();
    assert!(eventually(PATIENCE, || matches!(
        client.membership(),
        Membership::Registered { .. }
    )));
    let joined_after = started.elapsed();
    eprintln!("joined {joined_after:?} after the gateway started");
    assert!(joined_after < Duration::from_secs(2), "{joined_after:?}");
    assert!(listed(&server, 1));
}

/// Item 3: `update_metadata` called before the node's first registration landed sends no
/// registration of its own: it waits for the first one, then publishes as a rejoining member,
/// so its answer never says bootstrap.
#[test]
fn update_metadata_before_the_first_registration_never_bootstraps() {
    let host = own_host::METADATA_FIRST;
    let (closed, port) = hold_closed(host);
    let client = Arc::new(
        GatewayClient::builder()
            .gateway(format!("{host}:{port}"))
            .build()
            .unwrap(),
    );
    client.keep_registered(node(1));
    let update = {
        let client = Arc::clone(&client);
        std::thread::spawn(move || {
            let mut metadata = serde_json::Map::new();
            metadata.insert("round".into(), json!(7));
            client.update_metadata(metadata)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    drop(closed);
    let server = start_at(host, port, advertised);
    let answer = update.join().unwrap().expect("published once registered");
    assert!(
        !answer.is_bootstrap,
        "update_metadata bootstrapped the cluster"
    );
    let (_, nodes) = server.get("/nodes");
    assert_eq!(nodes["nodes"][0]["metadata"]["round"], 7);
}

/// Item 5: the membership says whether the node is registered, whatever `gateway_available`
/// says, and follows the gateway going away and `leave()`.
#[test]
fn membership_follows_joining_registered_gateway_lost_and_left() {
    let host = own_host::FAIL_FAST;
    let port = free_port(host);
    let server = start_at(host, port, advertised);
    let client = client_of(&format!("{host}:{port}"));
    let changes = client.subscribe_membership();
    assert_eq!(changes.recv_timeout(PATIENCE).unwrap(), Membership::Joining);
    client.register_node(node(1)).unwrap();
    assert!(matches!(
        changes.recv_timeout(PATIENCE).unwrap(),
        Membership::Registered { .. }
    ));
    drop(server);
    assert!(matches!(
        changes.recv_timeout(PATIENCE).unwrap(),
        Membership::GatewayLost { .. }
    ));
    assert!(!client.status().gateway_available);

    // Item 7: calls fail fast while the client knows no gateway answers.
    let started = Instant::now();
    let leader = client.get_leader();
    assert!(
        matches!(leader, Err(ClientError::GatewayUnavailable { .. })),
        "{leader:?}"
    );
    let mut metadata = serde_json::Map::new();
    metadata.insert("round".into(), json!(1));
    let update = client.update_metadata(metadata);
    assert!(
        matches!(update, Err(ClientError::GatewayUnavailable { .. })),
        "{update:?}"
    );
    let left = client.leave();
    assert!(
        matches!(left, Err(ClientError::GatewayUnavailable { .. })),
        "{left:?}"
    );
    let took = started.elapsed();
    eprintln!("get_leader, update_metadata and leave failed fast in {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");
    assert_eq!(client.membership(), Membership::Left);
    assert_eq!(changes.recv_timeout(PATIENCE).unwrap(), Membership::Left);

    // The gateway comes back: the background removal confirms the departure; nothing else
    // registers the node again.
    let server = start_at(host, port, advertised);
    server.register(1); // As a frozen gateway would still list it.
    assert!(eventually(PATIENCE, || !listed(&server, 1)), "a ghost");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!listed(&server, 1));
}

/// Item 6: after an in-memory restart, the node that led gives the gateway its leader back as
/// soon as it has registered again; meanwhile the view marks the leader as carried.
#[test]
fn after_an_in_memory_restart_the_old_leader_is_back_within_a_heartbeat() {
    let host = own_host::LEADER_RESTART;
    let port = free_port(host);
    let server = start_at(host, port, advertised);
    let leader = client_of(&format!("{host}:{port}"));
    leader.register_node(node(1)).unwrap();
    let follower = client_of(&format!("{host}:{port}"));
    follower.register_node(node(2)).unwrap();
    assert!(leader.update_leader(1).unwrap());
    assert!(eventually(PATIENCE, || {
        leader
            .cluster_view()
            .and_then(|v| v.cluster.leader)
            .is_some_and(|l| l.node_id == 1)
    }));
    drop(server);
    let server = start_at(host, port, advertised);
    assert!(eventually(PATIENCE, || listed(&server, 1)));
    let rejoined = Instant::now();
    assert!(eventually(
        PATIENCE,
        || server.get("/leader").1["leader"]["node_id"] == 1
    ));
    let back_after = rejoined.elapsed();
    eprintln!("leader back {back_after:?} after the old leader rejoined");
    assert!(back_after < Duration::from_millis(500), "{back_after:?}");
}

/// Item 9: an advertised heartbeat interval of 0 (or 1e-300) is refused: the client keeps its
/// own, and does not beat 100 times a second.
#[test]
fn an_absurd_advertised_heartbeat_interval_is_refused() {
    for absurd in [0.0, 1e-300] {
        let run = FakeRun::new("e", json!({"heartbeat_interval": absurd}));
        let fake = fake_run("127.0.0.1", &run);
        let client = GatewayClient::builder()
            .gateway(fake.address())
            .build()
            .unwrap();
        client.register_node(node(1)).unwrap();
        assert_eq!(
            client.status().heartbeat_interval,
            DEFAULT_HEARTBEAT_INTERVAL
        );
        std::thread::sleep(Duration::from_millis(500));
        let requests = fake.requests.lock().unwrap().len();
        assert!(requests < 5, "{requests} requests in 500 ms");
    }
}

/// Item 11: typed metadata, waiting for peers, and a change callback that stops when its
/// handle is dropped.
#[test]
fn typed_metadata_waiting_for_peers_and_unsubscribing() {
    #[derive(cluster_gateway::serde::Serialize)]
    #[serde(crate = "cluster_gateway::serde")]
    struct Progress {
        training_round: u32,
    }
    let server = TestServer::with(advertised);
    let my = my_node();
    let client = client_of(&server.url);
    my.discovery().initialize_with(client, node(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let subscription = {
        let calls = Arc::clone(&calls);
        my.discovery().on_change(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
        })
    };
    let waiter = {
        let discovery_client = my.discovery().client().unwrap();
        std::thread::spawn(move || discovery_client.wait_for_peers(2, PATIENCE))
    };
    server.register(2);
    server.register(3);
    let view = waiter.join().unwrap().unwrap();
    assert_eq!(view.cluster.nodes.len(), 2);
    assert!(eventually(PATIENCE, || calls.load(Ordering::SeqCst) >= 2));
    subscription.cancel();
    let before = calls.load(Ordering::SeqCst);
    my.discovery()
        .update_metadata_typed(&Progress { training_round: 3 })
        .unwrap();
    let (_, nodes) = server.get("/nodes?node_id=2");
    assert_eq!(nodes["nodes"][0]["metadata"]["training_round"], 3);
    server.register(4);
    assert!(eventually(PATIENCE, || my.cluster_nodes().len() == 3));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        before,
        "called after cancel()"
    );
    assert!(matches!(
        my.discovery()
            .client()
            .unwrap()
            .wait_for_peers(9, Duration::from_millis(200)),
        Err(ClientError::Timeout { .. })
    ));
    my.shutdown_discovery();
}
