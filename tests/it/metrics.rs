//! `GET /metrics`: the Prometheus text format, checked by `promtool check metrics`, and counters
//! that follow what the gateway does.
//!
//! The promtool test needs promtool (Debian package `prometheus`; `build.rs` sets `has_promtool`):
//! without it the test is listed as ignored, with the reason; `.ci/run` installs it and fails if
//! any test was ignored.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::Guarded;
use crate::support::{TestServer, agent, eventually};

/// The `/metrics` text and its `Content-Type`.
fn scrape(server: &TestServer) -> (String, String) {
    let mut response = agent()
        .get(format!("{}/metrics", server.url))
        .call()
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("Content-Type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    (response.body_mut().read_to_string().unwrap(), content_type)
}

/// The value of the sample `name` (with its labels, as written), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .guarded_output()
        .is_ok_and(|out| out.status.success());
    found.then_some("promtool")
}

#[test]
#[cfg_attr(
    not(has_promtool),
    ignore = "needs promtool: apt-get install prometheus"
)]
fn promtool_accepts_the_metrics_of_a_live_gateway() {
    let Some(promtool) = promtool() else {
        panic!("promtool is not installed (apt-get install prometheus)");
    };
    let dir = std::env::temp_dir().join(format!("gateway-metrics-{}", std::process::id()));
    let server = TestServer::with(|c| c.data_dir = Some(dir.clone()));
    // Something in every family: requests on several routes and statuses, a durable store.
    server.register(1);
    server.register(1);
    server.post("/heartbeat", r#"{"node_id": 1}"#);
    server.post("/heartbeat", r#"{"node_id": 2}"#);
    server.get("/nodes?index=nope");
    server.get("/nowhere");
    let (text, content_type) = scrape(&server);
    assert_eq!(content_type, "text/plain; version=0.0.4");
    let said = promtool_check(promtool, &text);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(said.is_ok(), "promtool: {said:?}\n{text}");
    assert!(text.contains("cluster_gateway_store_syncs_total"), "{text}");
}

/// What `promtool check metrics` says of `text`: `Err` with its words if it exits non-zero or
/// prints anything (lint problems).
fn promtool_check(promtool: &str, text: &str) -> Result<(), String> {
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .guarded_spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

#[test]
#[cfg_attr(
    not(has_promtool),
    ignore = "needs promtool: apt-get install prometheus"
)]
fn gateway_server_exports_its_process_and_its_limits() {
    let Some(promtool) = promtool() else {
        panic!("promtool is not installed (apt-get install prometheus)");
    };
    let server = crate::server_cli::Process::start(
        &[
            "--max-nodes",
            "1234",
            "--max-watchers",
            "56",
            "--workers",
            "3",
        ],
        &[],
    );
    let scrape = || crate::support::metrics_text(&server.url);
    // The process as /proc shows it from outside. Threads come and go with connections (and
    // on a loaded machine start-up's threads may still be ending), so a scrape and a count
    // taken right after it are read again until they agree within a few.
    let pid = server.pid();
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .unwrap()
            .count() as f64
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = scrape();
        let (threads, fds) = (count("task"), count("fd"));
        let near = |name: &str, n: f64| sample(&text, name).is_some_and(|v| (v - n).abs() <= 4.0);
        if near("process_threads", threads) && near("process_open_fds", fds) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{threads} threads and {fds} descriptors in /proc, not what it says: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
    assert_eq!(value("cluster_gateway_max_nodes"), 1234.0);
    assert_eq!(value("cluster_gateway_max_watchers"), 56.0);
    // Three workers at least.
    assert!(value("process_threads") >= 4.0, "{text}");
    assert!(value("process_open_fds") >= 3.0, "{text}");
    // gateway-server raises its soft limit to the hard one.
    assert!(value("process_max_fds") >= 1024.0, "{text}");
    let resident = value("process_resident_memory_bytes");
    assert!((100_000.0..2e9).contains(&resident), "{text}");
    assert!(value("process_virtual_memory_bytes") >= resident, "{text}");
    assert!(value("process_cpu_seconds_total") >= 0.0, "{text}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "started {started}, now {now}"
    );
    // Same start as the gateway's own figure, within a clock tick and the start-up.
    assert!((started - value("cluster_gateway_process_start_time_seconds")).abs() < 5.0);
    // CPU time only grows.
    let cpu = value("process_cpu_seconds_total");
    let later = scrape();
    assert!(sample(&later, "process_cpu_seconds_total").unwrap() >= cpu);
    assert_eq!(promtool_check(promtool, &later), Ok(()), "{later}");
}

#[test]
fn the_counters_follow_what_the_gateway_does() {
    let server = TestServer::start();
    server.register(1);
    server.register(1);
    server.register(2);
    server.post("/heartbeat", r#"{"node_id": 2}"#);
    server.post("/heartbeat", r#"{"node_id": 3}"#);
    server.post("/heartbeat", r#"{"node_id": 3}"#);
    server.get("/nodes?index=nope");
    let (text, _) = scrape(&server);
    let value = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));
    assert_eq!(
        value("cluster_gateway_registrations_total{result=\"created\"}"),
        2.0
    );
    assert_eq!(
        value("cluster_gateway_registrations_total{result=\"updated\"}"),
        1.0
    );
    assert_eq!(value("cluster_gateway_bootstraps_total"), 1.0);
    assert_eq!(value("cluster_gateway_leader_present"), 1.0);
    assert_eq!(
        value("cluster_gateway_heartbeats_total{result=\"acknowledged\"}"),
        1.0
    );
    assert_eq!(
        value("cluster_gateway_heartbeats_total{result=\"not_found\"}"),
        2.0
    );
    assert_eq!(
        value("cluster_gateway_requests_total{route=\"/register\",code=\"200\"}"),
        3.0
    );
    assert_eq!(
        value("cluster_gateway_requests_total{route=\"/nodes\",code=\"400\"}"),
        1.0
    );
    assert_eq!(
        value("cluster_gateway_request_duration_seconds_count{route=\"/heartbeat\"}"),
        3.0
    );
    assert_eq!(
        value("cluster_gateway_request_duration_seconds_bucket{route=\"/heartbeat\",le=\"+Inf\"}"),
        3.0
    );
    assert_eq!(value("cluster_gateway_watchers_waiting"), 0.0);
    assert_eq!(value("cluster_gateway_bodies_being_read"), 0.0);
    assert!(value("cluster_gateway_process_start_time_seconds") > 1.6e9);
    assert!(text.contains(&format!(
        "cluster_gateway_build_info{{version=\"{}\"}} 1",
        cluster_gateway::VERSION
    )));
    // In memory: no log families, and the store takes writes.
    assert!(
        !text.contains("cluster_gateway_store_syncs_total"),
        "{text}"
    );
    assert_eq!(value("cluster_gateway_store_writable"), 1.0);
    let version = value("cluster_gateway_registry_version");
    assert!(version >= 3.0);
}

#[test]
fn suspicions_and_reaps_are_counted() {
    let server = TestServer::with(|c| {
        c.liveness.suspect_after = Duration::from_millis(100);
        c.liveness.node_timeout = Duration::from_secs(2);
        c.heartbeat_interval = Duration::from_millis(50);
    });
    server.register(1);
    server.register(2);
    let value = |name: &str| sample(&scrape(&server).0, name);
    assert_eq!(value("cluster_gateway_leader_present"), Some(1.0));
    // Silence: both nodes are suspected...
    assert!(eventually(Duration::from_secs(60), || {
        value("cluster_gateway_suspicions_total") == Some(2.0)
    }));
    assert_eq!(value("cluster_gateway_nodes{status=\"active\"}"), Some(0.0));
    // ...then reaped.
    assert!(eventually(Duration::from_secs(60), || {
        value("cluster_gateway_reaps_total") == Some(2.0)
    }));
    let (text, _) = scrape(&server);
    assert_eq!(
        sample(&text, "cluster_gateway_nodes{status=\"suspected\"}"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "cluster_gateway_leader_present"), Some(0.0));
}

#[test]
fn parked_watchers_are_a_gauge() {
    let server = TestServer::start();
    let url = format!("{}/nodes?index=0&wait=5m", server.url);
    let watcher = std::thread::spawn(move || agent().get(url).call().unwrap().status());
    assert!(eventually(Duration::from_secs(60), || {
        let (text, _) = scrape(&server);
        sample(&text, "cluster_gateway_watchers_waiting") == Some(1.0)
    }));
    server.register(1);
    assert_eq!(watcher.join().unwrap(), 200);
    let (text, _) = scrape(&server);
    assert_eq!(sample(&text, "cluster_gateway_watchers_waiting"), Some(0.0));
}
