//! Several gateways over one registry in etcd (`--store etcd`): each test starts its own etcd
//! members (the `etcd` binary from Debian's `etcd-server`) on loopback ports of a loopback
//! address no other test uses, in a temporary directory, and stops them when it ends.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_gateway::api::Registration;
use cluster_gateway::server::config::StoreKind;
use cluster_gateway::{GatewayClient, ServerConfig};
use serde_json::{Value, json};

use crate::support::{Barrier, TestServer, agent, eventually, free_port, join_all, registration};
use crate::support::{ChildGuard, Guarded};

mod group;
mod proxy;

/// Loopback addresses owned by one test each (127.0.0.x belong to `support::own_host`).
mod host {
    pub const READ_ELSEWHERE: &str = "127.0.1.1";
    pub const BOOTSTRAP_RACE: &str = "127.0.1.2";
    pub const SIGKILL: &str = "127.0.1.3";
    pub const QUORUM: &str = "127.0.1.4";
    pub const REJOIN: &str = "127.0.1.5";
    pub const LATE_ETCD: &str = "127.0.1.6";
    pub const BLACKHOLE: &str = "127.0.1.7";
    pub const LONG_POLL: &str = "127.0.1.8";
    pub const GROUP: &str = "127.0.1.9";
    pub const GROUP_TWICE: &str = "127.0.1.10";
}

/// Deadline for anything the tests wait on: generous, as the machine may be busy.
const WAIT: Duration = Duration::from_secs(60);

/// How long [`past_503`] asks again.
const ASK_AGAIN_FOR: Duration = Duration::from_secs(120);

/// `send`'s answer, sent again while it is a 503, as the client library does: a gateway over
/// etcd refuses with 503, changing nothing, while its copy is stale (its freshness probe,
/// starved on a loaded machine, has not shown the copy current for 3 s) and a registration
/// past the bound of those deciding again. For requests a test expects to succeed; a test
/// that asserts a 503 sends once. Returns the first answer that is not a 503, or the last 503
/// after [`ASK_AGAIN_FOR`].
fn past_503<T>(mut send: impl FnMut() -> (u16, T)) -> (u16, T) {
    let started = Instant::now();
    let mut refused = 0;
    loop {
        let answer = send();
        if answer.0 != 503 || started.elapsed() >= ASK_AGAIN_FOR {
            if refused > 0 {
                eprintln!(
                    "answered {} after {refused} 503s in {:?}",
                    answer.0,
                    started.elapsed()
                );
            }
            return answer;
        }
        refused += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Registers `node_id` through `server`, past a 503; the answer must be a 200.
fn register(server: &TestServer, node_id: u64) -> Value {
    let (status, body) = past_503(|| server.post_json("/register", &registration(node_id)));
    assert_eq!(status, 200, "{body}");
    body
}

/// An etcd cluster of separate `etcd` processes on `host`; killed and removed on drop.
struct EtcdCluster {
    host: &'static str,
    dir: PathBuf,
    members: Vec<Member>,
    initial: String,
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<ChildGuard>,
}

impl EtcdCluster {
    fn start(host: &'static str, size: usize) -> EtcdCluster {
        let mut cluster = EtcdCluster::prepare(host, size);
        cluster.start_all();
        cluster
    }

    /// Data directory and ports chosen, no member running yet.
    fn prepare(host: &'static str, size: usize) -> EtcdCluster {
        // tmpfs where there is one: every etcd write is an fsync.
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("gateway-etcd-{host}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(host),
                peer: free_port(host),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://{host}:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        EtcdCluster {
            host,
            dir,
            members,
            initial,
        }
    }

    fn start_all(&mut self) {
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i);
        }
    }

    fn spawn(&mut self, i: usize) {
        let host = self.host;
        let m = &self.members[i];
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args([
                "--listen-client-urls",
                &format!("http://{host}:{}", m.client),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://{host}:{}", m.client),
            ])
            .args(["--listen-peer-urls", &format!("http://{host}:{}", m.peer)])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{host}:{}", m.peer),
            ])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &format!("gw-{host}")])
            // Quick elections: a killed leader is replaced within about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .guarded_spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run etcd ({e}): the etcd tests need it (apt-get install etcd-server)"
                )
            });
        self.members[i].child = Some(child);
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}:{}", self.host, self.members[i].client)
    }

    /// Every member's client URL, comma-separated, starting with member `first`.
    fn endpoints_from(&self, first: usize) -> String {
        let n = self.members.len();
        (0..n)
            .map(|i| self.url((first + i) % n))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn endpoints(&self) -> String {
        self.endpoints_from(0)
    }

    fn wait_healthy(&self, i: usize) {
        let url = format!("{}/health", self.url(i));
        let healthy = eventually(WAIT, || {
            agent()
                .get(&url)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .is_some_and(|body| body.contains("true"))
        });
        assert!(healthy, "etcd member {i} did not become healthy at {url}");
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self, i: usize) {
        self.spawn(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway in this process over `endpoints`.
fn gateway(endpoints: &str, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::with(|c| {
        c.store = StoreKind::Etcd;
        c.etcd_endpoints = endpoints.split(',').map(str::to_owned).collect();
        configure(c);
    })
}

fn node_ids(server: &TestServer) -> BTreeSet<u64> {
    let (status, body) = past_503(|| server.get("/nodes?status=all"));
    assert_eq!(status, 200, "{body}");
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_u64().unwrap())
        .collect()
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn three_members_three_gateways_a_registration_through_one_is_read_through_the_others() {
    let etcd = EtcdCluster::start(host::READ_ELSEWHERE, 3);
    let gateways: Vec<TestServer> = (0..3)
        .map(|i| gateway(&etcd.endpoints_from(i), |_| {}))
        .collect();

    let answer = register(&gateways[0], 7);
    assert_eq!(answer["is_bootstrap"], true, "{answer}");
    let registered_at = Instant::now();
    for other in &gateways[1..] {
        assert!(
            eventually(WAIT, || node_ids(other) == BTreeSet::from([7])),
            "{} never showed node 7",
            other.url
        );
        let (_, leader) = past_503(|| other.get("/leader"));
        assert_eq!(leader["leader"]["node_id"], 7, "{leader}");
    }
    // Reported, not asserted: speed is the benchmark's business.
    eprintln!(
        "node 7 readable through every gateway {:?} after its registration",
        registered_at.elapsed()
    );

    // The others act on it: a heartbeat through the third, a leader change through the second.
    let (status, beat) = past_503(|| gateways[2].post_json("/heartbeat", &json!({"node_id": 7})));
    assert_eq!(
        (status, &beat["status"]),
        (200, &json!("acknowledged")),
        "{beat}"
    );
    let answer = register(&gateways[1], 8);
    assert_eq!(answer["is_bootstrap"], false, "{answer}");
    let (status, set) = past_503(|| gateways[1].post_json("/leader", &json!({"leader_id": 8})));
    assert_eq!((status, &set["status"]), (200, &json!("updated")), "{set}");
    for g in &gateways {
        assert!(
            eventually(WAIT, || {
                let (_, leader) = g.get("/leader");
                node_ids(g) == BTreeSet::from([7, 8]) && leader["leader"]["node_id"] == 8
            }),
            "{} never showed nodes 7 and 8 with 8 leading",
            g.url
        );
    }
    // registry_version is the etcd revision: the same on every gateway once they agree.
    let versions: BTreeSet<u64> = gateways
        .iter()
        .map(|g| {
            past_503(|| g.get("/nodes")).1["registry_version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    // A removal through the third is seen by the first.
    let (_, removed) = past_503(|| gateways[2].post_json("/remove", &json!({"node_id": 7})));
    assert_eq!(removed["status"], "removed", "{removed}");
    assert!(eventually(WAIT, || node_ids(&gateways[0]) == BTreeSet::from([8])));
}

/// Rounds of the bootstrap race: all 100 when `GATEWAY_SLOW_TESTS` is set (CI sets it).
fn rounds() -> usize {
    if std::env::var_os("GATEWAY_SLOW_TESTS").is_some() {
        100
    } else {
        10
    }
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn fifty_nodes_at_once_over_three_gateways_into_an_empty_registry_bootstrap_exactly_once() {
    let etcd = EtcdCluster::start(host::BOOTSTRAP_RACE, 3);
    let gateways: Vec<TestServer> = (0..3)
        .map(|i| gateway(&etcd.endpoints_from(i), |c| c.workers = 8))
        .collect();
    let urls: Vec<String> = gateways.iter().map(|g| g.url.clone()).collect();
    let rounds = rounds();
    let barrier = Barrier::new(50);
    let winners = Arc::new(Mutex::new(vec![Vec::new(); rounds]));
    let racers: Vec<_> = (0..50u64)
        .map(|i| {
            let url = urls[i as usize % 3].clone();
            let (barrier, winners) = (Arc::clone(&barrier), Arc::clone(&winners));
            std::thread::spawn(move || {
                let _guard = barrier.guard();
                let client: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(120)))
                    .max_idle_connections(0)
                    .max_idle_connections_per_host(0)
                    .build()
                    .into();
                for round in 0..rounds {
                    // Other keys every round: nothing of the last round's nodes is reused.
                    let id = round as u64 * 100 + i;
                    barrier.wait();
                    let (status, mut answer) = past_503(|| {
                        let answer = client
                            .post(format!("{url}/register"))
                            .send(registration(id).to_string())
                            .unwrap();
                        (answer.status().as_u16(), answer)
                    });
                    assert_eq!(status, 200, "register {id} in round {round}");
                    let answer: Value =
                        serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
                    if answer["is_bootstrap"] == true {
                        winners.lock().unwrap()[round].push(id);
                    }
                    // Everyone leaves on purpose: the next round starts from an empty, armed
                    // registry.
                    barrier.wait();
                    let (status, mut left) = past_503(|| {
                        let left = client
                            .post(format!("{url}/remove"))
                            .send(json!({"node_id": id}).to_string())
                            .unwrap();
                        (left.status().as_u16(), left)
                    });
                    assert_eq!(status, 200, "remove {id} in round {round}");
                    left.body_mut().read_to_string().unwrap();
                }
            })
        })
        .collect();
    join_all(racers, Duration::from_secs(600));
    let winners = winners.lock().unwrap();
    for (round, ids) in winners.iter().enumerate() {
        assert_eq!(ids.len(), 1, "round {round} had bootstrap nodes {ids:?}");
    }
    // Every gateway ends with the registry empty and armed, as the last removal left it.
    for g in &gateways {
        assert!(
            eventually(WAIT, || {
                let stats = g.get("/stats").1;
                stats["total_nodes"] == 0 && stats["bootstrap_armed"] == true
            }),
            "{}: {}",
            g.url,
            g.get("/stats").1
        );
    }
}

/// A gateway-server process over etcd on `host:port`.
fn spawn_gateway(host: &str, port: u16, endpoints: &str) -> ChildGuard {
    Command::new(env!("CARGO_BIN_EXE_gateway-server"))
        .args(["--host", host, "--port", &port.to_string()])
        .args(["--store", "etcd", "--etcd-endpoints", endpoints])
        .args(["--heartbeat-interval", "0.5", "--node-timeout", "8"])
        .args(["--log-level", "ERROR"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .guarded_spawn()
        .expect("run gateway-server")
}

/// The text of `/metrics`.
fn metrics_of(url: &str) -> String {
    let mut answer = crate::support::agent()
        .get(format!("{url}/metrics"))
        .call()
        .expect("the gateway answers /metrics");
    answer.body_mut().read_to_string().expect("a body")
}

/// GET `url`: the status and the JSON body; 0 and null if nothing answers.
fn get(url: &str) -> (u16, Value) {
    let Ok(mut answer) = agent().get(url).call() else {
        return (0, Value::Null);
    };
    let status = answer.status().as_u16();
    let body = answer.body_mut().read_to_string().ok();
    (
        status,
        body.and_then(|b| serde_json::from_str(&b).ok())
            .unwrap_or_default(),
    )
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn a_gateway_killed_under_heartbeating_clients_they_fail_over_and_nothing_acknowledged_is_lost() {
    let host = host::SIGKILL;
    let etcd = EtcdCluster::start(host, 1);
    let (port_a, port_b) = (free_port(host), free_port(host));
    let mut a = spawn_gateway(host, port_a, &etcd.endpoints());
    let _b = spawn_gateway(host, port_b, &etcd.endpoints());
    let (url_a, url_b) = (
        format!("http://{host}:{port_a}"),
        format!("http://{host}:{port_b}"),
    );
    for url in [&url_a, &url_b] {
        assert!(eventually(WAIT, || get(&format!("{url}/health")).0 != 0));
    }

    // Ten clients that know both gateways, registered and heartbeating through the first.
    let clients: Vec<GatewayClient> = (1..=10u64)
        .map(|id| {
            let client = GatewayClient::builder()
                .gateway(format!("{host}:{port_a}"))
                .gateway(format!("{host}:{port_b}"))
                .heartbeat_interval(Duration::from_millis(200))
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let registration =
                Registration::new(id, "127.0.0.1", 7000 + id as u16).capabilities(["raft"]);
            client
                .register_node(registration)
                .expect("registered through the first gateway");
            client
        })
        .collect();
    // Registrations through the first gateway until it dies: those it acknowledged must stay.
    let storm = {
        let url = url_a.clone();
        std::thread::spawn(move || {
            let client = agent();
            let mut acknowledged = Vec::new();
            for id in 100..10_000u64 {
                let (status, ()) = past_503(|| {
                    let answer = client
                        .post(format!("{url}/register"))
                        .send(registration(id).to_string());
                    (answer.map_or(0, |a| a.status().as_u16()), ())
                });
                if status != 200 {
                    break;
                }
                acknowledged.push(id);
            }
            acknowledged
        })
    };
    assert!(eventually(WAIT, || {
        get(&format!("{url_b}/stats")).1["total_nodes"].as_u64() >= Some(30)
    }));
    a.kill().unwrap();
    a.wait().unwrap();
    let killed_at = Instant::now();
    let acknowledged = join_all(vec![storm], WAIT).pop().unwrap();
    assert!(!acknowledged.is_empty());

    // The second gateway's answer to /nodes?status=all, past a 503, and the ids in it (none if
    // that answer is not a 200).
    let nodes = || past_503(|| get(&format!("{url_b}/nodes?status=all")));
    let ids = || -> BTreeSet<u64> {
        let (status, body) = nodes();
        if status != 200 {
            return BTreeSet::new();
        }
        body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_u64().unwrap())
            .collect()
    };
    // Every registration the dead gateway acknowledged is in the registry.
    let (status, body) = nodes();
    assert_eq!(status, 200, "{body}");
    let shown = ids();
    let lost: Vec<u64> = acknowledged
        .iter()
        .filter(|id| !shown.contains(id))
        .copied()
        .collect();
    assert!(lost.is_empty(), "acknowledged registrations lost: {lost:?}");
    // The clients move to the second gateway and keep their nodes alive past node_timeout (8 s)
    // after the kill: their leases are renewed through it.
    let alive = eventually(WAIT, || {
        let shown = ids();
        killed_at.elapsed() > Duration::from_secs(10)
            && (1..=10).all(|id| shown.contains(&id))
            && clients.iter().all(|c| {
                let status = c.status();
                status.current_gateway.contains(&port_b.to_string())
                    && status.consecutive_failures == 0
            })
    });
    let statuses: Vec<_> = clients.iter().map(|c| c.status()).collect();
    assert!(
        alive,
        "clients did not fail over: {statuses:?}; registry: {:?}",
        ids()
    );
    let (status, nodes) = nodes();
    assert_eq!(status, 200, "{nodes}");
    for node in nodes["nodes"].as_array().unwrap() {
        if node["node_id"].as_u64() <= Some(10) {
            assert_eq!(node["status"], "active", "{node}");
        }
    }
    for client in &clients {
        client.shutdown();
    }
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn one_member_down_gateways_carry_on_quorum_lost_reads_and_writes_503_then_all_recovers() {
    let mut etcd = EtcdCluster::start(host::QUORUM, 3);
    let g = [
        gateway(&etcd.endpoints_from(0), |_| {}),
        gateway(&etcd.endpoints_from(1), |_| {}),
    ];
    register(&g[0], 1);
    register(&g[1], 2);
    assert!(eventually(WAIT, || g
        .iter()
        .all(|g| node_ids(g) == BTreeSet::from([1, 2]))));

    // One member of three gone: both gateways carry on (the first talked to it).
    etcd.kill(0);
    for (i, id) in [(0, 3), (1, 4)] {
        let ok = eventually(WAIT, || {
            g[i].post_json("/register", &registration(id)).0 == 200
        });
        assert!(ok, "gateway {i} refused writes with one member down");
        let (status, beat) = past_503(|| g[i].post_json("/heartbeat", &json!({"node_id": 1})));
        assert_eq!(
            (status, &beat["status"]),
            (200, &json!("acknowledged")),
            "{beat}"
        );
    }
    assert!(eventually(WAIT, || g
        .iter()
        .all(|g| node_ids(g) == BTreeSet::from([1, 2, 3, 4]))));
    for g in &g {
        let (status, health) = past_503(|| g.get("/health"));
        assert_eq!(status, 200, "{health}");
        assert!(health.get("store_error").is_none(), "{health}");
    }

    // Two of three gone: no quorum. Writes 503; reads 503 too (the copy can no longer be
    // shown current: the probe's linearizable read fails); /health and /stats say why.
    etcd.kill(1);
    let killed = Instant::now();
    for g in &g {
        let refused = eventually(WAIT, || g.post_json("/register", &registration(5)).0 == 503);
        assert!(refused, "{} took a write without quorum", g.url);
        let (status, _) = g.post_json("/heartbeat", &json!({"node_id": 1}));
        assert_eq!(status, 503);
        let stale = eventually(WAIT, || g.get("/nodes").0 == 503);
        assert!(stale, "{} still answers reads without quorum", g.url);
        println!("reads refused {:?} after quorum was lost", killed.elapsed());
        let (status, leader) = g.get("/leader");
        assert_eq!(status, 503, "{leader}");
        let health = g.get("/health").1;
        assert!(
            health["store_error"]
                .as_str()
                .is_some_and(|e| e.contains("etcd")),
            "{health}"
        );
        assert_eq!(
            health["status"], "unhealthy",
            "not ready without quorum: {health}"
        );
        let stats = g.get("/stats").1;
        assert!(
            stats["store_error"]
                .as_str()
                .is_some_and(|e| e.contains("stale")),
            "{stats}"
        );
        let metrics = metrics_of(&g.url);
        assert!(
            metrics.contains("cluster_gateway_store_writable 0"),
            "{metrics}"
        );
    }

    // The members come back: both gateways take writes again, without a restart.
    etcd.restart(0);
    etcd.restart(1);
    for (i, id) in [(0, 5), (1, 6)] {
        let ok = eventually(WAIT, || {
            g[i].post_json("/register", &registration(id)).0 == 200
        });
        assert!(ok, "gateway {i} did not recover: {}", g[i].get("/health").1);
    }
    for g in &g {
        let all = BTreeSet::from([1, 2, 3, 4, 5, 6]);
        assert!(
            eventually(WAIT, || node_ids(g) == all),
            "{}: {:?}",
            g.url,
            node_ids(g)
        );
        assert!(eventually(WAIT, || g
            .get("/health")
            .1
            .get("store_error")
            .is_none()));
        assert!(metrics_of(&g.url).contains("cluster_gateway_store_writable 1"));
        let (status, beat) = past_503(|| g.post_json("/heartbeat", &json!({"node_id": 2})));
        assert_eq!(
            (status, &beat["status"]),
            (200, &json!("acknowledged")),
            "{beat}"
        );
    }
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn a_rejoining_node_through_one_gateway_disarms_bootstrap_for_newcomers_through_another() {
    let etcd = EtcdCluster::start(host::REJOIN, 1);
    let (a, b) = (
        gateway(&etcd.endpoints(), |_| {}),
        gateway(&etcd.endpoints(), |_| {}),
    );
    let mut rejoining = registration(1);
    rejoining["previous_epoch"] = json!("an-earlier-gateway-run");
    let (status, answer) = past_503(|| a.post_json("/register", &rejoining));
    assert_eq!(
        (status, &answer["is_bootstrap"]),
        (200, &json!(false)),
        "{answer}"
    );
    assert!(eventually(WAIT, || b.get("/stats").1["bootstrap_armed"] == false));
    let answer = register(&b, 2);
    assert_eq!(answer["is_bootstrap"], false, "{answer}");
    let (status, leader) = past_503(|| b.get("/leader"));
    assert_eq!((status, &leader["leader"]), (200, &Value::Null), "{leader}");
    // Everyone leaves on purpose: the registry is armed again, and the next newcomer
    // bootstraps, through either gateway.
    for (g, id) in [(&a, 1), (&b, 2)] {
        let (_, left) = past_503(|| g.post_json("/remove", &json!({"node_id": id})));
        assert_eq!(left["status"], "removed", "{left}");
    }
    assert!(eventually(WAIT, || a.get("/stats").1["bootstrap_armed"] == true));
    let answer = register(&a, 3);
    assert_eq!(answer["is_bootstrap"], true, "{answer}");
    assert!(eventually(WAIT, || b.get("/leader").1["leader"]["node_id"] == 3));
    // A leader change to a node that is not registered fails and changes nothing.
    let (_, set) = past_503(|| b.post_json("/leader", &json!({"leader_id": 99})));
    assert_eq!(set["status"], "failed", "{set}");
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn a_gateway_started_before_etcd_refuses_reads_and_writes_then_serves_once_etcd_runs() {
    let mut etcd = EtcdCluster::prepare(host::LATE_ETCD, 1);
    // The gateway waits a few seconds for etcd, then serves without it: never an empty
    // registry it has not read (a node told "empty" would bootstrap a second cluster).
    let g = gateway(&etcd.endpoints(), |_| {});
    let (status, body) = g.post_json("/register", &registration(1));
    assert_eq!(status, 503, "{body}");
    let health = g.get("/health");
    assert_eq!(health.0, 503, "not ready: {}", health.1);
    assert_eq!(g.get("/health?live").0, 200);
    assert!(
        health.1["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("etcd")),
        "{}",
        health.1
    );
    for path in ["/nodes", "/leader", "/nodes?index=0&wait=5s"] {
        let (status, body) = g.get(path);
        assert_eq!(status, 503, "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("not read from etcd yet")),
            "{path}: {body}"
        );
    }
    let (status, body) = g.post_json("/heartbeat", &json!({"node_id": 1}));
    assert_eq!(status, 503, "{body}");
    assert_eq!(g.get("/stats").0, 200);

    etcd.start_all();
    let started = Instant::now();
    assert!(eventually(WAIT, || g.get("/nodes").0 == 200));
    println!(
        "reads answered {:?} after etcd was healthy",
        started.elapsed()
    );
    let ok = eventually(WAIT, || g.post_json("/register", &registration(1)).0 == 200);
    assert!(ok, "the gateway never took a write: {}", g.get("/health").1);
    assert_eq!(node_ids(&g), BTreeSet::from([1]));
    assert_eq!(past_503(|| g.get("/leader")).0, 200);
    assert!(eventually(WAIT, || g
        .get("/health")
        .1
        .get("store_error")
        .is_none()));
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn a_gateway_whose_watch_is_blackholed_answers_503_within_seconds_then_recovers() {
    let etcd = EtcdCluster::start(host::BLACKHOLE, 1);
    let upstream = etcd.url(0).trim_start_matches("http://").to_owned();
    let proxy = proxy::Proxy::start(upstream);
    let (behind, direct) = (
        gateway(&proxy.url, |_| {}),
        gateway(&etcd.endpoints(), |_| {}),
    );
    register(&direct, 1);
    assert!(eventually(WAIT, || node_ids(&behind) == BTreeSet::from([1])));

    // The watch's packets are dropped from now on; everything else still passes. Nothing
    // changed yet, so nothing is stale: the copy still is the registry.
    proxy.freeze_watches();
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_millis(4500) {
        let (status, health) = behind.get("/health");
        assert!(
            status == 200 && health.get("store_error").is_none(),
            "stale though nothing changed: {health}"
        );
        assert_eq!(behind.get("/nodes").0, 200);
    }
    let changed = Instant::now();
    register(&direct, 2);
    let mut last = (0, Value::Null);
    let refused = eventually(Duration::from_secs(60), || {
        last = behind.get("/nodes");
        last.0 == 503
    });
    let detected = changed.elapsed();
    println!("a blackholed watch was noticed {detected:?} after a change");
    assert!(
        refused,
        "the gateway behind a blackholed watch still answers after {detected:?}: {last:?}"
    );
    assert!(
        last.1["error"]
            .as_str()
            .is_some_and(|e| e.contains("stale")),
        "{}",
        last.1
    );
    // Not ready (503 unhealthy: a load balancer takes it out), yet alive.
    let (status, health) = behind.get("/health");
    assert_eq!(
        (status, health["status"].as_str()),
        (503, Some("unhealthy")),
        "{health}"
    );
    assert_eq!(behind.get("/health?live").0, 200);
    let why = health["store_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        why.contains("stale") && why.contains('T') && why.contains('Z'),
        "{health}"
    );
    assert_eq!(behind.get("/leader").0, 503);
    assert_eq!(behind.post_json("/register", &registration(3)).0, 503);
    assert_eq!(behind.get("/stats").0, 200);

    // The watch comes back: the change shows, and the mark goes.
    proxy.thaw();
    let recovered = Instant::now();
    let ok = eventually(WAIT, || {
        let (status, _) = behind.get("/nodes");
        status == 200 && node_ids(&behind) == BTreeSet::from([1, 2])
    });
    assert!(ok, "no recovery: {:?}", behind.get("/health"));
    println!("recovered {:?} after the thaw", recovered.elapsed());
    assert!(eventually(WAIT, || behind
        .get("/health")
        .1
        .get("store_error")
        .is_none()));
    assert_eq!(
        past_503(|| behind.post_json("/register", &registration(3))).0,
        200
    );
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn a_long_poll_over_etcd_is_answered_within_milliseconds_of_a_change_through_another_gateway() {
    let etcd = EtcdCluster::start(host::LONG_POLL, 1);
    let (watching, other) = (
        gateway(&etcd.endpoints(), |_| {}),
        gateway(&etcd.endpoints(), |_| {}),
    );
    register(&other, 1);
    assert!(eventually(WAIT, || node_ids(&watching) == BTreeSet::from([1])));
    let mut samples = Vec::new();
    for id in 2..5 {
        let (_, response) = past_503(|| {
            let response = agent()
                .get(format!("{}/nodes", watching.url))
                .call()
                .unwrap();
            (response.status().as_u16(), response)
        });
        let index: u64 = response.headers()["X-Gateway-Index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let url = format!("{}/nodes?index={index}&wait=30s", watching.url);
        let poll = std::thread::spawn(move || {
            let mut response = agent().get(&url).call().unwrap();
            let answered = Instant::now();
            let status = response.status().as_u16();
            let body = response.body_mut().read_to_string().unwrap();
            (status, body, answered)
        });
        assert!(
            eventually(WAIT, || watching.server.watchers_waiting() == 1),
            "the long-poll was not parked"
        );
        let sent = Instant::now();
        let (status, _) = past_503(|| other.post_json("/register", &registration(id)));
        assert_eq!(status, 200);
        let (status, body, answered) = poll.join().unwrap();
        // From the registration's request: etcd's transaction is in the figure.
        let latency = answered.saturating_duration_since(sent);
        println!("long-poll over etcd answered {latency:?} after the registration was sent");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(&format!("\"node_id\":{id}")), "{body}");
        assert!(
            latency < Duration::from_secs(1),
            "answered after {latency:?}"
        );
        samples.push(latency);
    }
    samples.sort();
    println!("long-poll latencies over etcd: {samples:?}");
}
