//! Change-to-client latency through the client library, for `scripts/bench.sh` (ONLY=watch).
//!
//! `client_watch_latency GATEWAY_URL ROUNDS`: a `GatewayClient` watches the gateway
//! (`GatewayClient::watch`) and subscribes; each round waits until the watch's long-poll is
//! parked, changes a node's metadata (`POST /register`), and measures the time from sending the
//! change to the subscriber receiving the `ClusterChange` that shows it (the long-poll's answer,
//! the `/leader` read, the view update and the channel). Prints p50, p99 and the largest, in
//! milliseconds, then how long `shutdown()` took with a long-poll parked.

use std::time::{Duration, Instant};

use cluster_gateway::GatewayClient;
use cluster_gateway::serde_json::{self, json};

#[path = "support/watch.rs"]
mod support;
use support::{agent, percentile, wait_until_parked};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: client_watch_latency GATEWAY_URL ROUNDS";
    let url = args.first().expect(usage).trim_end_matches('/').to_owned();
    let rounds: usize = args.get(1).and_then(|n| n.parse().ok()).expect(usage);
    let agent = agent();
    let watcher = GatewayClient::builder()
        .gateway(url.clone())
        .heartbeat_interval(Duration::from_secs(3600))
        .build()
        .expect("a client");
    let changes = watcher.subscribe();
    watcher.watch();
    // Every change differs from what an earlier run left on the same gateway.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut took = Vec::with_capacity(rounds);
    for round in 0..rounds {
        wait_until_parked(&agent, &url, 1);
        let node_id = (round % 16 + 1) as u64;
        let body = json!({
            "node_id": node_id, "ip_address": format!("10.9.9.{node_id}"), "port": 7000,
            "capabilities": ["raft"], "metadata": {"client_round": round, "client_run": run},
        });
        let changed = Instant::now();
        let status = agent
            .post(format!("{url}/register"))
            .header("Prefer", "return=minimal")
            .send(serde_json::to_vec(&body).expect("a body"))
            .expect("POST /register")
            .status();
        assert_eq!(status, 200);
        let shown = |n: &cluster_gateway::api::Node| {
            n.node_id == node_id && n.metadata.get("client_round") == Some(&json!(round))
        };
        loop {
            let change = changes
                .recv_timeout(Duration::from_secs(60))
                .expect("the subscriber hears of the change");
            if change.updated.iter().chain(&change.joined).any(shown) {
                took.push(changed.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    wait_until_parked(&agent, &url, 1);
    let stopping = Instant::now();
    watcher.shutdown();
    let shutdown = stopping.elapsed().as_secs_f64() * 1000.0;
    took.sort_by(f64::total_cmp);
    println!(
        "change to subscriber: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({rounds} changes); \
         shutdown with a parked long-poll {shutdown:.2} ms",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().copied().unwrap_or(0.0)
    );
}
