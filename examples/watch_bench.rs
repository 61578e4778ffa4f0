//! Long-poll figures for `scripts/bench.sh`.
//!
//! `watch_bench latency GATEWAY_URL ROUNDS`: parks one watcher (`GET /nodes?index=V&wait=60s`),
//! waits until the gateway counts it as parked, changes the registry (`POST /register` with new
//! metadata), and measures the time from sending the change to the watcher's whole answer
//! arriving; prints p50, p99 and the largest, in milliseconds.
//!
//! `watch_bench park GATEWAY_URL N`: parks N watchers on connections of their own (waiting up
//! to five minutes), prints `parked N` once the gateway counts them, and holds them until stdin
//! closes.

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "support/watch.rs"]
mod support;
use support::{agent, index, percentile, wait_until_parked};

fn latency(url: &str, rounds: usize) {
    let agent = agent();
    let mut took = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (index, epoch) = index(&agent, url);
        let (done, arrived) = mpsc::channel();
        let watcher = {
            let (agent, url) = (agent.clone(), url.to_owned());
            std::thread::spawn(move || {
                let path = format!("{url}/nodes?index={index}&epoch={epoch}&wait=60s");
                let mut response = agent.get(path).call().expect("the watcher's answer");
                let body = response.body_mut().read_to_vec().expect("a body");
                let _ = done.send((Instant::now(), body.len()));
            })
        };
        wait_until_parked(&agent, url, 1);
        let node_id = round % 16 + 1;
        let body = format!(
            r#"{{"node_id": {node_id}, "ip_address": "10.9.9.{node_id}", "port": 7000, "capabilities": ["raft"], "metadata": {{"round": {round}}}}}"#
        );
        let changed = Instant::now();
        let status = agent
            .post(format!("{url}/register"))
            .header("Prefer", "return=minimal")
            .send(body)
            .expect("POST /register")
            .status();
        assert_eq!(status, 200);
        let (at, _bytes) = arrived
            .recv_timeout(Duration::from_secs(60))
            .expect("the watcher is answered after a change");
        watcher.join().expect("the watcher thread");
        took.push(at.duration_since(changed).as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    println!(
        "change to watcher: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({rounds} changes)",
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().copied().unwrap_or(0.0)
    );
}

fn park(url: &str, n: usize) {
    let agent = agent();
    let (index, epoch) = index(&agent, url);
    let address = url.trim_start_matches("http://");
    let streams: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut stream = TcpStream::connect(address).expect("connect");
            write!(
                stream,
                "GET /nodes?index={index}&epoch={epoch}&wait=5m HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .expect("send");
            stream
        })
        .collect();
    wait_until_parked(&agent, url, n);
    println!("parked {n}");
    // Hold them until the benchmark closes our stdin.
    for _ in std::io::stdin().lock().lines() {}
    drop(streams);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: watch_bench latency GATEWAY_URL ROUNDS | park GATEWAY_URL N";
    let (mode, url) = (
        args.first().expect(usage).as_str(),
        args.get(1).expect(usage),
    );
    let n: usize = args.get(2).and_then(|n| n.parse().ok()).expect(usage);
    match mode {
        "latency" => latency(url, n),
        "park" => park(url, n),
        _ => panic!("{usage}"),
    }
}
