//! Registry micro-benchmark, no HTTP: register, heartbeat, list (serialise the cached peer
//! list) and sweep, at 10,000 and 100,000 nodes. Prints time per operation.
//!
//! `cargo run --release --example registry_bench`

use std::time::{Duration, Instant};

use cluster_gateway::api::Registration;
use cluster_gateway::server::gateway::Gateway;
use cluster_gateway::server::registry::{Liveness, Now, Registry};

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

fn per_op(started: Instant, ops: u64) -> String {
    let ns = started.elapsed().as_nanos() as f64 / ops as f64;
    if ns > 1e6 {
        format!("{:.2} ms", ns / 1e6)
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
        let gateway = Gateway::new(registry, Duration::from_secs(30));
        let started = Instant::now();
        let rounds = 10;
        for id in 0..rounds {
            // A heartbeat between lists would not force a rebuild within a second; a
            // registration does: measure the rebuild.
            gateway.register(registration(n + 1 + id)).unwrap();
            drop(gateway.list());
        }
        let list = per_op(started, rounds);
        println!(
            "{n:>7} nodes: register {register}/op, heartbeat {heartbeat}/op, sweep {sweep}/sweep, list rebuild {list}/build"
        );
    }
}
