//! What the gateway-server binary logs about requests, read from its log as it runs: the
//! access line (`--access-log`: the client, through a trusted front only, the bytes sent, the
//! user agent, the token's name, the true time of a long-poll) and the refusal lines, at INFO
//! and rate-limited.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::support::{ChildGuard, agent, gateway_process};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-server");
const READ: &str = "acc3ss-r3ad-t0ken-4444444444";

/// A gateway-server on 127.0.0.1 with `flags` and, if given, `tokens` (`GATEWAY_TOKENS`).
fn gateway(flags: &[&str], tokens: Option<&str>) -> (ChildGuard, Receiver<String>, SocketAddr) {
    let mut command = Command::new(BIN);
    command
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(flags)
        .env_remove("GATEWAY_TOKENS")
        .env_remove("GATEWAY_TRUSTED_PROXY");
    if let Some(tokens) = tokens {
        command.env("GATEWAY_TOKENS", tokens);
    }
    gateway_process(&mut command)
}

/// The next line of `log` that contains `needle` (within 120 s); the lines passed over go
/// into `seen`.
fn line_with(log: &Receiver<String>, needle: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no line with {needle:?} ({e}): {seen:#?}"));
        if line.contains(needle) {
            return line;
        }
        seen.push(line);
    }
}

/// `GET path` with `headers`: the status and the body's bytes.
fn get(address: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let mut request = agent().get(format!("http://{address}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut answer = request.call().unwrap();
    let status = answer.status().as_u16();
    (status, answer.body_mut().read_to_vec().unwrap())
}

#[test]
fn behind_a_trusted_front_the_access_line_names_the_client_bytes_agent_and_token() {
    let tokens = format!("read:dashboard:{READ}\n");
    let bearer = format!("Bearer {READ}");
    let headers = [
        ("Authorization", bearer.as_str()),
        // What a client wrote itself, then what the front appended.
        ("X-Forwarded-For", "6.6.6.6, 203.0.113.7"),
        ("User-Agent", "access-probe/1.0 (\"quoted\")"),
        // The bytes sent are the bytes on the wire: plain here, to compare with the body.
        ("Accept-Encoding", "identity"),
    ];
    let (_trusting, log, address) = gateway(
        &["--access-log", "--trusted-proxy", "127.0.0.0/8, ::1"],
        Some(&tokens),
    );
    let mut seen = Vec::new();
    let (status, body) = get(address, "/nodes?status=all", &headers);
    assert_eq!(status, 200);
    let line = line_with(&log, "GET /nodes?status=all 200", &mut seen);
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains(" access: 203.0.113.7 via 127.0.0.1:"),
        "{line}"
    );
    assert!(!line.contains("6.6.6.6"), "{line}");
    assert!(
        line.contains(&format!(" 200 {} bytes ", body.len())),
        "{} bytes sent: {line}",
        body.len()
    );
    assert!(line.contains(" token=dashboard "), "{line}");
    assert!(
        line.ends_with(r#" agent="access-probe/1.0 (\"quoted\")""#),
        "{line}"
    );
    assert!(!line.contains(READ), "{line}");
    // No token, no user agent: dashes.
    let answer = crate::support::raw(
        address,
        b"GET /nodes?bare HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(crate::support::status_of(&answer), 401, "{answer}");
    let line = line_with(&log, "GET /nodes?bare 401", &mut seen);
    assert!(line.contains(" token=- agent=-"), "{line}");

    // Without --trusted-proxy the header is anyone's to write, and is ignored.
    let (_plain, log, address) = gateway(&["--access-log"], Some(&tokens));
    get(address, "/nodes?status=all", &headers);
    let line = line_with(&log, "GET /nodes?status=all 200", &mut seen);
    assert!(line.contains(" access: 127.0.0.1:"), "{line}");
    assert!(!line.contains("203.0.113.7"), "{line}");
    // Nor from a peer outside the trusted ranges.
    let (_elsewhere, log, address) = gateway(
        &["--access-log", "--trusted-proxy", "10.0.0.0/8"],
        Some(&tokens),
    );
    get(address, "/nodes?status=all", &headers);
    let line = line_with(&log, "GET /nodes?status=all 200", &mut seen);
    assert!(line.contains(" access: 127.0.0.1:"), "{line}");
    assert!(!line.contains("203.0.113.7"), "{line}");
}

#[test]
fn a_long_poll_is_logged_with_the_time_it_was_parked() {
    let (_gateway, log, address) = gateway(&["--access-log"], None);
    let (_, body) = get(address, "/nodes", &[]);
    let listed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let version = listed["registry_version"].as_u64().unwrap();
    // Nothing changes: the answer comes when the second's wait ends.
    let path = format!("/nodes?index={version}&wait=1");
    let (status, _) = get(address, &path, &[]);
    assert_eq!(status, 200);
    let line = line_with(&log, &format!("GET {path} 200"), &mut Vec::new());
    let ms: f64 = line
        .split(" bytes ")
        .nth(1)
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line}"));
    assert!(
        ms >= 1000.0,
        "parked for its 1 s wait, logged as {ms} ms: {line}"
    );
}

#[test]
fn refusals_are_logged_at_info_without_the_access_log_and_a_flood_is_rate_limited() {
    let tokens = format!("read:dashboard:{READ}\n");
    let (_gateway, log, address) = gateway(&[], Some(&tokens));
    let mut seen = Vec::new();
    // A read token on a write: 403, named.
    let answer = agent()
        .post(format!("http://{address}/remove"))
        .header("Authorization", format!("Bearer {READ}"))
        .send(r#"{"node_id": 7}"#)
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403);
    let line = line_with(&log, "403 for POST /remove from 127.0.0.1:", &mut seen);
    assert!(line.contains(" INFO "), "{line}");
    assert!(
        line.contains(r#"token=dashboard: token "dashboard" may only read"#),
        "{line}"
    );
    assert!(!line.contains(READ), "{line}");

    // A flood of requests without a token: a burst of lines, then one a second, and the next
    // line logged says how many were left out.
    let flood: u64 = 300;
    let started = Instant::now();
    let client = agent();
    for _ in 0..flood {
        let answer = client
            .get(format!("http://{address}/nodes"))
            .call()
            .unwrap();
        assert_eq!(answer.status().as_u16(), 401);
    }
    // How long the accounting may take on a loaded machine; the bound on lines below is
    // measured against the time it really took.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut logged, mut left_out, mut probes) = (0, 0, 0);
    let mut summaries = Vec::new();
    // Every refusal is either logged or counted by a later line: read until the flood is
    // accounted for, sending one more refusal whenever the log is quiet for a quarter
    // second (the line that is let through says how many were left out before it).
    while summaries.is_empty() || logged + left_out < flood {
        assert!(
            Instant::now() < deadline,
            "{logged} logged and {left_out} said left out of {flood}: {summaries:#?} {seen:#?}"
        );
        match log.recv_timeout(Duration::from_millis(250)) {
            Ok(line) if line.contains("401 for GET /nodes from 127.0.0.1:") => {
                assert!(line.contains(" INFO "), "{line}");
                assert!(
                    line.contains("token=-: a bearer token is required"),
                    "{line}"
                );
                match line.split_once(" (") {
                    Some((_, more)) => {
                        let n: u64 = more.split(' ').next().unwrap().parse().unwrap();
                        left_out += n;
                        summaries.push(line);
                    }
                    None => logged += 1,
                }
            }
            Ok(line) => seen.push(line),
            Err(_) => {
                probes += 1;
                let _ = client.get(format!("http://{address}/nodes")).call();
            }
        }
    }
    let seconds = started.elapsed().as_secs();
    let lines = logged + summaries.len() as u64;
    let allowed = 10 + seconds + 1;
    assert!(
        lines <= allowed,
        "{lines} refusal lines in {seconds} s for {flood} refusals (at most {allowed})"
    );
    assert!(
        logged + left_out <= flood + probes,
        "{logged} logged and {left_out} said left out, of {flood} and {probes} probes"
    );
    let summary = summaries.last().unwrap();
    eprintln!("{flood} refusals in {seconds} s: {lines} lines; the last: {summary}");
}
