//! CPU cost of the client heartbeat thread: registers with a running gateway, heartbeats every
//! second for a while, and prints the CPU time the process used as a share of one core.
//!
//! `cargo run --release --example client_cpu -- GATEWAY_URL SECONDS`

use std::time::{Duration, Instant};

use cluster_gateway::GatewayClient;
use cluster_gateway::api::Registration;

/// User plus system CPU seconds of this process, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args.first().expect("usage: client_cpu GATEWAY_URL SECONDS");
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let client = GatewayClient::builder()
        .gateway(url.clone())
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .expect("client");
    client
        .register_node(Registration::new(999_999, "127.0.0.1", 9999).capabilities(["raft"]))
        .expect("register");
    let (cpu_start, wall_start) = (cpu_seconds(), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = cpu_seconds() - cpu_start;
    let wall = wall_start.elapsed().as_secs_f64();
    let status = client.status();
    client.leave().expect("leave");
    println!(
        "client_cpu {:.4} % of a core ({cpu:.2} s CPU in {wall:.1} s, heartbeat failures {})",
        100.0 * cpu / wall,
        status.consecutive_failures
    );
}
