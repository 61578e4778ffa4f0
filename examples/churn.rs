//! Registrations at a steady rate, for `scripts/bench.sh`'s scale rows.
//!
//! `churn GATEWAY_URL RATE SECONDS MODE`: sends `POST /register` (`Prefer: return=minimal`) RATE
//! times a second for SECONDS from 8 keep-alive connections, each on an open-loop schedule it
//! catches up with when answers are slow (a closed loop would slow down with the gateway it
//! measures). MODE `change`: each registration gives one of nodes 1..=1000 new metadata;
//! `same`: exactly what the scale rows' fill registered (a write that changes nothing). Prints
//! how many were sent. It replaces a Python churner that, on two cores beside 16 readers of a
//! 21 MB list, could not send 2,000 a second.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

const LANES: u64 = 8;

fn body(mode: &str, i: u64) -> String {
    let node = i % 1000 + 1;
    match mode {
        "change" => format!(
            r#"{{"node_id": {node}, "ip_address": "10.9.9.9", "port": 5000, "capabilities": ["raft"], "metadata": {{"churn": {i}}}}}"#
        ),
        _ => format!(
            r#"{{"node_id": {node}, "ip_address": "10.{}.{}.{}", "port": {}, "capabilities": ["raft", "gossip"], "metadata": {{"zone": "z{}", "rack": "r{}"}}}}"#,
            node / 65536 % 256,
            node / 256 % 256,
            node % 256,
            5000 + node % 1000,
            node % 3,
            node % 40
        ),
    }
}

/// Reads one answer off the connection; false if it was not a 2xx or the connection ended.
fn answered(reader: &mut BufReader<TcpStream>) -> bool {
    let mut line = String::new();
    let mut length = 0usize;
    let mut ok = false;
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        let trimmed = line.trim_end();
        if first {
            ok = trimmed
                .split(' ')
                .nth(1)
                .is_some_and(|s| s.starts_with('2'));
            first = false;
            continue;
        }
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut rest = vec![0; length];
    reader.read_exact(&mut rest).is_ok() && ok
}

fn lane(address: String, k: u64, rate: f64, seconds: f64, mode: String) -> u64 {
    let stream = TcpStream::connect(&address).expect("connect to the gateway");
    stream.set_nodelay(true).ok();
    let mut writer = stream.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(stream);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        sent += 1;
        let body = body(&mode, sent * LANES + k);
        let request = format!(
            "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nPrefer: return=minimal\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        writer
            .write_all(request.as_bytes())
            .expect("send a registration");
        assert!(answered(&mut reader), "a registration was not answered 2xx");
        let due = start + Duration::from_secs_f64(sent as f64 * LANES as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
    }
    sent
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, rate, seconds, mode] = &args[..] else {
        eprintln!("usage: churn GATEWAY_URL RATE SECONDS change|same");
        std::process::exit(2);
    };
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let rate: f64 = rate.parse().expect("RATE is a number");
    let seconds: f64 = seconds.parse().expect("SECONDS is a number");
    let lanes: Vec<_> = (0..LANES)
        .map(|k| {
            let (address, mode) = (address.clone(), mode.clone());
            thread::spawn(move || lane(address, k, rate, seconds, mode))
        })
        .collect();
    let sent: u64 = lanes.into_iter().map(|l| l.join().expect("a lane")).sum();
    println!("{sent}");
}
