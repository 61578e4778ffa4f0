//! The gateway server with its registry filled in-process, for `scripts/bench.sh`.
//!
//! Filling a registry over HTTP costs O(n^2) bytes: every `/register` answer carries the whole
//! peer list, as the wire contract requires. So the nodes are registered straight through
//! `Gateway::register` (what the handler calls), and everything measured afterwards goes over
//! HTTP to the very same server code as `gateway-server`.
//!
//! `cargo run --release --example bench_server -- PORT WORKERS NODES SWEEP_SECONDS [DATA_DIR]`
//! Prints `rss_before`, `rss_after` (bytes) and `ready`, then serves until stdin closes.

use std::io::BufRead;
use std::time::Duration;

use cluster_gateway::api::Registration;
use cluster_gateway::{GatewayServer, ServerConfig};

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn main() {
    // The allocator policy gateway-server runs with, so the figures are the product's.
    cluster_gateway::server::allocator::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> f64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .expect("usage: bench_server PORT WORKERS NODES SWEEP_SECONDS [DATA_DIR]")
    };
    let (port, workers, nodes, sweep) = (arg(0) as u16, arg(1) as usize, arg(2) as u64, arg(3));
    let heartbeat_interval = Duration::from_secs_f64(sweep);
    let mut config = ServerConfig::new("127.0.0.1", port);
    config.workers = workers;
    config.heartbeat_interval = heartbeat_interval;
    config.data_dir = args.get(4).map(Into::into);
    // Nobody heartbeats the seeded nodes: keep them all active for the whole run.
    config.liveness.suspect_after = Duration::from_secs(3600);
    config.liveness.node_timeout = Duration::from_secs(7200);
    let server = GatewayServer::new(config).start().expect("start");
    let rss_before = rss();
    let gateway = server.gateway();
    for node_id in 1..=nodes {
        let metadata = serde_json::json!({"zone": format!("z{}", node_id % 3), "rack": format!("r{}", node_id % 40)});
        gateway
            .register(
                Registration::new(
                    node_id,
                    format!(
                        "10.{}.{}.{}",
                        node_id >> 16 & 255,
                        node_id >> 8 & 255,
                        node_id & 255
                    ),
                    5000 + (node_id % 1000) as u16,
                )
                .capabilities(["raft", "gossip"])
                .metadata(metadata.as_object().cloned().unwrap_or_default()),
            )
            .expect("register");
    }
    // The first list request builds the cached list; count it in.
    let list = gateway.list();
    drop(list);
    println!("rss_before {rss_before}");
    println!("rss_after {}", rss());
    println!("ready http://{}", server.local_addr());
    // Serve until the benchmark closes our stdin.
    for _ in std::io::stdin().lock().lines() {}
    server.stop();
}
