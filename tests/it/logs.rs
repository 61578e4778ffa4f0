//! What the gateway-server binary logs: joins, leaves, reaps, suspicion and leader changes at
//! INFO, and none of them at WARNING.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use serde_json::json;

use crate::support::{ChildGuard, Guarded};
use crate::support::{agent, eventually, free_port, own_host};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-server");

/// A gateway-server process with short liveness settings, its log read line by line.
struct Logged {
    child: ChildGuard,
    url: String,
    lines: Receiver<String>,
}

impl Logged {
    /// Starts the server on a port of `host` (an address of this test's own: at WARNING the
    /// server does not log its address, so the port is chosen here).
    fn start(level: &str, host: &str) -> Logged {
        Logged::start_with(level, host, &[])
    }

    /// [`Logged::start`] with more flags.
    fn start_with(level: &str, host: &str, flags: &[&str]) -> Logged {
        Logged::start_env(level, host, flags, &[])
    }

    /// [`Logged::start_with`] with environment variables too.
    fn start_env(level: &str, host: &str, flags: &[&str], env: &[(&str, &str)]) -> Logged {
        let port = free_port(host);
        let mut child = Command::new(BIN)
            .envs(env.iter().copied())
            .args(["--host", host, "--port", &port.to_string()])
            .args(["--log-level", level])
            .args(flags)
            // Node 1 must live through the four requests that make it leave on purpose: two
            // seconds leave room for a stalled machine, and still end the test soon.
            .args(["--heartbeat-interval", "0.1", "--suspect-after", "1"])
            .args(["--node-timeout", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .guarded_spawn()
            .expect("gateway-server runs");
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let logged = Logged {
            child,
            url: format!("http://{host}:{port}"),
            lines,
        };
        let up = || agent().get(format!("{}/health", logged.url)).call().is_ok();
        assert!(
            eventually(Duration::from_secs(60), up),
            "the server did not start"
        );
        logged
    }

    fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let mut answer = agent()
            .post(format!("{}{path}", self.url))
            .send(body.to_string())
            .unwrap();
        serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
    }

    fn stats(&self) -> serde_json::Value {
        let mut answer = agent().get(format!("{}/stats", self.url)).call().unwrap();
        serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Stops the server with SIGTERM and returns the rest of its log, to the end.
    fn stop(mut self) -> Vec<String> {
        self.signal("TERM");
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("the server did not stop: {rest:#?}"),
            }
        }
        let child = &mut self.child;
        assert!(eventually(Duration::from_secs(60), || child
            .try_wait()
            .unwrap()
            .is_some()));
        rest
    }
}

fn node(id: u64) -> serde_json::Value {
    json!({"node_id": id, "ip_address": "127.0.0.1", "port": 5000 + id, "capabilities": []})
}

/// Joins, a leader change, a leave, then a node left silent until it is reaped.
fn membership_story(server: &Logged) {
    server.post("/register", node(1));
    server.post("/register", node(2));
    server.post("/leader", json!({"leader_id": 2}));
    let left = server.post("/remove", json!({"node_id": 1}));
    assert_eq!(
        left["status"], "removed",
        "node 1 was reaped before it could leave"
    );
    assert!(
        eventually(Duration::from_secs(60), || server.stats()["reaped_total"]
            == 1),
        "node 2 was never reaped"
    );
}

#[test]
fn membership_changes_are_logged_at_info() {
    let server = Logged::start("INFO", own_host::LOG_INFO);
    membership_story(&server);
    let log = server.stop();
    for expected in [
        "settings: listen 127.0.0.9:",
        "node 1 joined at 127.0.0.1:5001",
        "node 1 bootstrapped the cluster",
        "leader is now node 1 (there was none)",
        "node 2 joined at 127.0.0.1:5002",
        "leader is now node 2 (was node 1)",
        "node 1 left",
        "node 2 suspected",
        "node 2 reaped",
        "no leader now (was node 2)",
    ] {
        let line = log
            .iter()
            .find(|l| l.contains(expected))
            .unwrap_or_else(|| panic!("no {expected:?} in the log: {log:#?}"));
        assert!(line.contains(" INFO "), "not at INFO: {line}");
    }
    // No Rust `Some(..)` or `None` in what an operator reads, and no access log unless asked.
    for line in &log {
        assert!(!line.contains("Some(") && !line.contains("None"), "{line}");
        assert!(!line.contains(" access: "), "{line}");
    }
}

#[test]
fn a_re_registration_says_what_changed() {
    let server = Logged::start("INFO", own_host::LOG_CHANGES);
    server.post("/register", node(1));
    let mut moved = node(1);
    moved["port"] = json!(6001);
    moved["metadata"] = json!({"zone": "b"});
    server.post("/register", moved);
    let log = server.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("node 1 re-registered with a new address and metadata")),
        "{log:#?}"
    );
}

#[test]
fn the_access_log_has_a_line_per_request_when_asked() {
    let server = Logged::start_with("INFO", own_host::LOG_ACCESS, &["--access-log"]);
    server.post("/register", node(1));
    server.post("/register", json!({"node_id": 2}));
    let log = server.stop();
    let access: Vec<&String> = log.iter().filter(|l| l.contains(" access: ")).collect();
    assert!(
        access
            .iter()
            .any(|l| l.contains("POST /register 200") && l.contains(" INFO ")),
        "{log:#?}"
    );
    assert!(
        access.iter().any(|l| l.contains("POST /register 400")),
        "a refused request leaves a trace: {log:#?}"
    );
    assert!(log.iter().any(|l| l.contains("access log on")), "{log:#?}");
}

#[test]
fn membership_changes_are_not_logged_at_warning() {
    let server = Logged::start("WARNING", own_host::LOG_WARNING);
    membership_story(&server);
    let log = server.stop();
    for unexpected in ["joined", "left", "suspected", "reaped", "leader"] {
        assert!(
            !log.iter().any(|l| l.contains(unexpected)),
            "{unexpected:?} logged at WARNING: {log:#?}"
        );
    }
}

#[test]
fn json_lines_are_one_object_each_with_time_level_target_and_message() {
    let server = Logged::start_with("INFO", own_host::LOG_CHANGES, &["--log-format", "json"]);
    server.post("/register", node(1));
    let log = server.stop();
    let objects: Vec<serde_json::Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for object in &objects {
        let mut fields: Vec<&str> = object
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["level", "msg", "target", "ts"], "{object}");
        let ts = object["ts"].as_str().unwrap();
        // ISO-8601 UTC with milliseconds: 2026-11-25T18:16:51.648Z.
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
    }
    let find = |text: &str| {
        objects
            .iter()
            .find(|o| o["msg"].as_str().unwrap().contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in {log:#?}"))
    };
    let joined = find("node 1 joined at 127.0.0.1:5001");
    assert_eq!(joined["level"], "INFO");
    let listening = find("listening on http://");
    assert_eq!(listening["target"], "gateway_server");
    assert!(
        find("settings: ")["msg"]
            .as_str()
            .unwrap()
            .contains("log_format json")
    );
}

#[test]
fn under_journald_each_line_starts_with_its_priority() {
    // A setting of the original's that is not applied: one WARNING at start.
    let server = Logged::start_env(
        "DEBUG",
        own_host::LOG_WARNING,
        &[],
        &[
            ("JOURNAL_STREAM", "8:12345"),
            ("GATEWAY_MAX_CONNECTIONS", "100"),
        ],
    );
    server.post("/register", node(1));
    let log = server.stop();
    for line in &log {
        let priority = &line[..3];
        let level = line[3..].split_whitespace().nth(1).unwrap_or_default();
        let expected = match level {
            "ERROR" => "<3>",
            "WARNING" => "<4>",
            "INFO" => "<6>",
            "DEBUG" | "TRACE" => "<7>",
            _ => panic!("no level in {line:?}"),
        };
        assert_eq!(priority, expected, "{line}");
    }
    for priority in ["<4>", "<6>", "<7>"] {
        assert!(
            log.iter().any(|l| l.starts_with(priority)),
            "no line at {priority}: {log:#?}"
        );
    }
}

#[test]
fn without_journald_lines_have_no_priority() {
    let server = Logged::start("INFO", own_host::LOG_ACCESS);
    let log = server.stop();
    assert!(!log.is_empty());
    for line in &log {
        assert!(line.as_bytes()[0].is_ascii_digit(), "{line}");
    }
}

#[test]
fn sigusr1_logs_the_counters_in_words() {
    let server = Logged::start("INFO", own_host::LOG_INFO);
    server.post("/register", node(1));
    server.post("/register", json!({"node_id": "x"}));
    server.signal("USR1");
    let line = loop {
        let line = server
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line after SIGUSR1");
        if line.contains("received signal") {
            break line;
        }
    };
    let log = server.stop();
    assert!(
        line.contains(" INFO ") && line.contains("counters: "),
        "{line}"
    );
    // The three requests: two registrations (one refused) and the health probe at start.
    for words in [
        "requests answered (1 refused with 4xx, 0 failed with 5xx)",
        "0 slow answers",
        "0 answers cut short",
        "0 framing errors",
        "0 bodies timed out",
        "0 accept-loop restarts",
        "0 long-polls waiting",
        "0 bodies being read",
    ] {
        assert!(line.contains(words), "{words:?} not in {line}");
    }
    assert!(
        !line.contains('{') && !line.contains("ServerCounters"),
        "{line}"
    );
    assert!(log.iter().any(|l| l.contains("stopping")), "{log:#?}");
}
