//! Registry micro-benchmark, no HTTP: register, heartbeat, sweep, a list built from a snapshot,
//! and a new version's list made from the change (plain, and with a gzip answer), at 10,000 and
//! 100,000 nodes. Prints time per operation.
//!
//! `cargo run --release --example registry_bench`

use std::time::{Duration, Instant};

use cluster_gateway::api::Registration;
use cluster_gateway::server::gateway::{Filter, Gateway, NodeList};
use cluster_gateway::server::registry::{Liveness, Now, Registry};
use cluster_gateway::server::store::Snapshot;

fn registration(node_id: u64) -> Registration {
    let metadata = serde_json::json!({"zone": format!("z{}", node_id % 3), "rack": format!("r{}", node_id % 40)});
    Registration::new(
        node_id,
        format!(
            "10.{}.{}.{}",
            node_id >> 16 & 255,
            node_id >> 8 & 255,
            node_id & 255
        ),
        5000,
    )
    .capabilities(["raft", "gossip"])
    .metadata(metadata.as_object().cloned().unwrap_or_default())
}

/// A registration of node `round % 1000 + 1` with new metadata: a change.
fn changed(round: u64) -> Registration {
    let node_id = round % 1000 + 1;
    let metadata = serde_json::json!({"round": round});
    Registration::new(node_id, "10.9.9.9", 5000)
        .capabilities(["raft"])
        .metadata(metadata.as_object().cloned().unwrap_or_default())
}

fn per_op(started: Instant, ops: u64) -> String {
    let ns = started.elapsed().as_nanos() as f64 / ops as f64;
    if ns > 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns > 1e4 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    for n in [10_000u64, 100_000] {
        let liveness = Liveness {
            suspect_after: Duration::from_secs(3600),
            node_timeout: Duration::from_secs(7200),
        };
        let mut registry = Registry::new(liveness);
        let started = Instant::now();
        for id in 1..=n {
            registry.register(registration(id), Now::system()).unwrap();
        }
        let register = per_op(started, n);
        let started = Instant::now();
        for id in 1..=n {
            registry.heartbeat(id, Now::system());
        }
        let heartbeat = per_op(started, n);
        let started = Instant::now();
        for _ in 0..10 {
            registry.sweep(Now::system());
        }
        let sweep = per_op(started, 10);
        // What every version cost before deltas, and still costs once every LIST_MAX_AGE: a
        // snapshot of every node compared with the previous list.
        let snapshot = |registry: &Registry| Snapshot {
            version: registry.version(),
            touches: registry.touches(),
            leader: registry.leader_id(),
            records: registry.nodes().cloned().collect(),
        };
        let rounds = 10;
        let mut list = NodeList::build(snapshot(&registry), None);
        let started = Instant::now();
        for id in 0..rounds {
            registry.register(changed(id), Now::system()).unwrap();
            list = NodeList::build(snapshot(&registry), Some(&list));
        }
        let rebuild = per_op(started, rounds);
        drop(list);
        let gateway = Gateway::new(registry, Duration::from_secs(30));
        drop(gateway.list());
        // A change, then the list of its version (from the previous list and the delta).
        let rounds = 1000;
        let started = Instant::now();
        for id in 0..rounds {
            gateway.register(changed(id)).unwrap();
            drop(gateway.list());
        }
        let version = per_op(started, rounds);
        // The same, with a gzip answer's parts and checksum for each version (the changed
        // chunk compressed, O(log chunks) combinations).
        let gzip = Filter {
            exclude: Some(1),
            ..Filter::default()
        };
        drop(gateway.list().select_gzip(gzip, b"", b""));
        let started = Instant::now();
        for id in 0..rounds {
            gateway.register(changed(id)).unwrap();
            drop(gateway.list().select_gzip(gzip, b"", b""));
        }
        let version_gzip = per_op(started, rounds);
        println!(
            "{n:>7} nodes: register {register}/op, heartbeat {heartbeat}/op, sweep {sweep}/sweep, list from a snapshot {rebuild}/build, new version from a change {version}/change ({version_gzip} with a gzip answer's parts)"
        );
    }
}
