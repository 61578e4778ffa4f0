//! The gateway-client binary: the original join command line, operator commands in both output
//! modes, and exit codes.
//!
//! Longer than ~800 lines on purpose: one test a command line, each short, sharing the helpers
//! that run the binary and read its output; the file is a catalogue to search, not to read
//! through.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Guarded;
use crate::support::{ClosedPort, FakeGateway, TestServer, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-client");

fn client(server: &TestServer, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["--gateway", &server.url])
        .args(args)
        .env_remove("GATEWAY_URL");
    run(&mut command)
}

/// Runs `command` to the end and returns what it printed, failing (not hanging) if it does not
/// end within a minute.
pub(crate) fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .guarded_spawn()
        .expect("gateway-client runs");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut status = None;
    let ended = eventually(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        ended,
        "gateway-client did not end within a minute: {command:?}"
    );
    Output {
        status: status.unwrap(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

/// Runs the original join command line until it says it is heartbeating, then sends `signal`.
fn join_and_stop(
    server: &TestServer,
    extra: &[&str],
    signal: &str,
) -> (String, std::process::ExitStatus) {
    let port = server.addr().port().to_string();
    let mut command = Command::new(BIN);
    command
        .args([
            "--gateway-host",
            "127.0.0.1",
            "--gateway-port",
            &port,
            "--node-id",
            "1",
            "--ip",
            "127.0.0.1",
            "--port",
            "5001",
        ])
        .args(extra);
    join_until_heartbeating_then(&mut command, || (), signal)
}

/// Runs `command`, a join, until it says it is heartbeating, then calls `meanwhile` and sends
/// `signal`; returns what it printed and how it ended.
fn join_until_heartbeating_then(
    command: &mut Command,
    meanwhile: impl FnOnce(),
    signal: &str,
) -> (String, std::process::ExitStatus) {
    let mut child = command
        .env_remove("GATEWAY_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .guarded_spawn()
        .unwrap();
    // Read on a thread of its own, so that a client that never prints fails the test instead
    // of hanging it.
    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    loop {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gateway-client never said it was heartbeating:\n{printed}");
        };
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Heartbeating") {
            break;
        }
    }
    meanwhile();
    let killed = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    let stopped = eventually(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(stopped, "gateway-client did not stop on SIG{signal}");
    // It has exited: the rest of its output is there, or the pipe is closed.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
        printed.push_str(&line);
        printed.push('\n');
    }
    (printed, status.unwrap())
}

#[test]
fn the_original_command_line_joins_prints_and_stops_on_sigterm() {
    let server = TestServer::start();
    let (printed, status) = join_and_stop(&server, &[], "TERM");
    assert!(status.success(), "{printed}");
    assert!(
        printed.contains("Node 1 is the bootstrap node"),
        "{printed}"
    );
    assert!(
        printed.contains("Leader: node 1 at 127.0.0.1:5001"),
        "{printed}"
    );
    assert!(
        printed.contains("Gateway stats:") && printed.contains("total_nodes:"),
        "{printed}"
    );
    // Without --leave-on-exit the registration stays, to expire by itself.
    assert_eq!(server.get("/stats").1["total_nodes"], 1);
}

#[test]
fn leave_on_exit_deregisters_on_sigint() {
    let server = TestServer::start();
    let (printed, status) = join_and_stop(
        &server,
        &[
            "--leave-on-exit",
            "--capabilities",
            "raft",
            "--metadata",
            "zone=a",
            "--metadata",
            "rack=r1",
            "--heartbeat-interval",
            "0.1",
        ],
        "INT",
    );
    assert!(status.success(), "{printed}");
    assert_eq!(server.get("/stats").1["total_nodes"], 0);
    assert!(printed.contains("left the cluster"), "{printed}");
}

#[test]
fn nodes_in_both_output_modes() {
    let server = TestServer::start();
    server.register(1);
    server.register(2);
    let table = client(&server, &["nodes"]);
    assert!(table.status.success());
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("LAST SEEN"),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].starts_with("1 ") && lines[1].contains("active") && lines[1].contains("s ago"),
        "{text}"
    );
    // Columns line up.
    assert_eq!(lines[0].find("STATUS"), lines[1].find("active"), "{text}");

    let answer = json_of(&client(&server, &["nodes", "--all", "--json"]));
    assert_eq!(answer["nodes"].as_array().unwrap().len(), 2);
    assert!(answer["registry_version"].is_u64());
}

#[test]
fn leader_and_set_leader_in_both_output_modes() {
    let server = TestServer::start();
    let none = client(&server, &["leader"]);
    assert!(none.status.success());
    assert!(stdout(&none).contains("No leader"));
    server.register(1);
    server.register(2);
    assert!(stdout(&client(&server, &["leader"])).contains("Leader: node 1"));
    assert_eq!(
        json_of(&client(&server, &["leader", "--json"]))["leader"]["node_id"],
        1
    );

    let set = client(&server, &["set-leader", "2"]);
    assert!(set.status.success());
    assert!(stdout(&set).contains("Node 2 is now the leader"));
    assert_eq!(
        json_of(&client(&server, &["set-leader", "1", "--json"])),
        json!({"status": "updated", "leader_id": 1})
    );

    let refused = client(&server, &["set-leader", "99"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("not registered"));
    let refused = client(&server, &["set-leader", "99", "--json"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        serde_json::from_slice::<Value>(&refused.stdout).unwrap()["status"],
        "failed"
    );
}

#[test]
fn remove_in_both_output_modes() {
    let server = TestServer::start();
    server.register(1);
    server.register(2);
    let removed = client(&server, &["remove", "1"]);
    assert!(removed.status.success());
    assert!(stdout(&removed).contains("Node 1 removed"));
    assert_eq!(
        json_of(&client(&server, &["remove", "2", "--json"])),
        json!({"status": "removed", "node_id": 2})
    );
    let missing = client(&server, &["remove", "2"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("not registered"));
}

#[test]
fn stats_and_health_in_both_output_modes() {
    let server = TestServer::start();
    server.register(1);
    let stats = client(&server, &["stats"]);
    assert!(stats.status.success());
    assert!(
        stdout(&stats)
            .lines()
            .any(|l| l.starts_with("total_nodes:") && l.trim_end().ends_with(" 1")),
        "{}",
        stdout(&stats)
    );
    assert_eq!(
        json_of(&client(&server, &["stats", "--json"]))["total_nodes"],
        1
    );
    let health = client(&server, &["health"]);
    assert!(health.status.success(), "{}", stderr(&health));
    let line = format!("{} is healthy: took ", server.url);
    assert!(stdout(&health).starts_with(&line), "{}", stdout(&health));
    let health = json_of(&client(&server, &["health", "--json"]));
    assert_eq!(health[0]["address"], server.url.as_str(), "{health}");
    assert_eq!(health[0]["healthy"], true, "{health}");
    assert_eq!(health[0]["answer"]["status"], "healthy", "{health}");
}

#[test]
fn gateway_url_sets_the_default_gateway_and_http_proxy_is_ignored() {
    let server = TestServer::start();
    let out = Command::new(BIN)
        .args(["health", "--json"])
        .env("GATEWAY_URL", &server.url)
        // A proxy that does not exist: the client must not use it.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
        .guarded_output()
        .unwrap();
    assert_eq!(json_of(&out)[0]["healthy"], true);
}

#[test]
fn exit_codes_say_what_went_wrong() {
    let server = TestServer::start();
    // Bad usage: 2, with the reason on stderr.
    for args in [
        &["--no-such-flag"][..],
        &["set-leader", "abc"],
        &["--node-id", "1"],
        &["--node-id", "1", "--port", "5001", "--metadata", "novalue"],
        &["--gateway", "ftp://x", "health"],
    ] {
        let out = client(&server, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{args:?}");
    }
    // Unreachable: 1, naming the address.
    let closed = ClosedPort::new();
    let mut command = Command::new(BIN);
    command.args(["--gateway", &closed.address(), "stats"]);
    let out = run(&mut command);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&closed.address()), "{}", stderr(&out));
    // An error status: 1, with the gateway's reason.
    for status in [400, 500] {
        let fake = FakeGateway::start(
            Some(status),
            &format!(r#"{{"error": "refused with {status}", "status_code": {status}}}"#),
        );
        let mut command = Command::new(BIN);
        command.args(["--gateway", &fake.url(), "stats"]);
        let out = run(&mut command);
        assert_eq!(out.status.code(), Some(1), "{status}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("refused with {status}")),
            "{}",
            stderr(&out)
        );
    }
    // Help: 0.
    let mut command = Command::new(BIN);
    command.arg("--help");
    let help = run(&mut command);
    assert!(help.status.success());
    for word in [
        "--gateway-host",
        "--gateway-port",
        "--node-id",
        "--leave-on-exit",
        "--config",
        "--json",
        "nodes",
        "set-leader",
        // Where global flags go, the variables, the config keys, the exit codes.
        "before or after the command",
        "GATEWAY_CLIENT_RETRY_DELAY",
        "NODE_PORT",
        "retry_attempts",
        "token_file",
        "  2 bad usage",
    ] {
        assert!(stdout(&help).contains(word), "{word}");
    }
}

#[test]
fn capabilities_and_metadata_flags_reach_the_gateway() {
    let server = TestServer::start();
    let (printed, status) = join_and_stop(
        &server,
        &[
            "--capabilities",
            "raft, storage",
            "--metadata",
            "zone=a",
            "--metadata",
            "rack=r1",
        ],
        "TERM",
    );
    assert!(status.success(), "{printed}");
    let node = server.get("/nodes").1["nodes"][0].clone();
    assert_eq!(node["node_id"], 1, "{node}");
    assert_eq!(node["capabilities"], json!(["raft", "storage"]));
    assert_eq!(node["metadata"], json!({"zone": "a", "rack": "r1"}));
}

#[test]
fn timeout_flag_bounds_each_request() {
    let silent = FakeGateway::start(None, "");
    let mut command = Command::new(BIN);
    command.args(["--gateway", &silent.url(), "--timeout", "0.3", "health"]);
    let out = run(&mut command);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert!(silent.requests() >= 1);
    let mut command = Command::new(BIN);
    command.args(["--gateway", &silent.url(), "--timeout", "0", "health"]);
    assert_eq!(
        run(&mut command).status.code(),
        Some(2),
        "a zero timeout is bad usage"
    );
}

#[test]
fn log_level_flag_sets_what_is_logged() {
    // A gateway that fails with 503: the client logs each failed try at DEBUG.
    let busy = FakeGateway::start(Some(503), r#"{"error": "busy"}"#);
    let with_level = |level: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(["--gateway", &busy.url()]);
        if let Some(level) = level {
            command.args(["--log-level", level]);
        }
        run(command.arg("health"))
    };
    let debug = with_level(Some("DEBUG"));
    assert_eq!(debug.status.code(), Some(1));
    assert!(stderr(&debug).contains("DEBUG"), "{}", stderr(&debug));
    let quiet = with_level(None);
    assert_eq!(quiet.status.code(), Some(1));
    assert!(!stderr(&quiet).contains("DEBUG"), "{}", stderr(&quiet));
    let mut command = Command::new(BIN);
    command.args(["--log-level", "LOUD", "health"]);
    let bad = run(&mut command);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--log-level"), "{}", stderr(&bad));
}

#[test]
fn a_repeated_gateway_flag_fails_over_to_the_next() {
    let server = TestServer::start();
    let closed = ClosedPort::new();
    let mut command = Command::new(BIN);
    command
        .args(["--gateway", &closed.address(), "--gateway", &server.url])
        .args(["stats", "--json"])
        .env_remove("GATEWAY_URL");
    let out = run(&mut command);
    assert_eq!(json_of(&out)["epoch"], server.get("/health").1["epoch"]);
}

#[test]
fn gateway_beats_host_and_port_beat_gateway_url_beats_the_default() {
    let server = TestServer::start();
    let closed = ClosedPort::new();
    let port = server.addr().port().to_string();
    let closed_port = closed.port.to_string();
    let health = |args: &[&str], url: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(args).args(["health", "--json"]);
        match url {
            Some(url) => command.env("GATEWAY_URL", url),
            None => command.env_remove("GATEWAY_URL"),
        };
        run(&mut command)
    };
    let closed_url = format!("http://{}", closed.address());
    // --gateway wins over both.
    let out = health(
        &[
            "--gateway",
            &server.url,
            "--gateway-host",
            closed.host,
            "--gateway-port",
            &closed_port,
        ],
        Some(&closed_url),
    );
    assert_eq!(json_of(&out)[0]["healthy"], true);
    // --gateway-host/--gateway-port win over GATEWAY_URL; the host defaults to localhost.
    let out = health(&["--gateway-port", &port], Some(&closed_url));
    assert_eq!(json_of(&out)[0]["healthy"], true);
    let out = health(
        &["--gateway-host", "127.0.0.1", "--gateway-port", &port],
        Some(&closed_url),
    );
    assert_eq!(json_of(&out)[0]["healthy"], true);
    // GATEWAY_URL wins over the default.
    let out = health(&[], Some(&server.url));
    assert_eq!(json_of(&out)[0]["healthy"], true);
    // The port defaults to 8080 (nothing listens on this test's own address).
    let out = health(&["--gateway-host", closed.host], Some(&server.url));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("{}:8080", closed.host)),
        "{}",
        stderr(&out)
    );
    // The default is localhost:8080 (whatever may run there on this machine).
    let out = health(&[], None);
    assert!(
        out.status.success() || stderr(&out).contains("localhost:8080"),
        "{}",
        stderr(&out)
    );
}

/// The client binary with the original client's environment and nothing else of ours.
fn original_environment(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args);
    for name in [
        "GATEWAY_URL",
        "GATEWAY_HOST",
        "GATEWAY_PORT",
        "GATEWAY_CLIENT_TIMEOUT",
        "NODE_ID",
        "NODE_IP",
        "NODE_PORT",
    ] {
        command.env_remove(name);
    }
    for (name, value) in vars {
        command.env(name, value);
    }
    run(&mut command)
}

#[test]
fn the_original_clients_environment_is_honoured() {
    let server = TestServer::start();
    let port = server.addr().port().to_string();
    let out = original_environment(
        &[
            ("GATEWAY_HOST", "127.0.0.1"),
            ("GATEWAY_PORT", &port),
            ("GATEWAY_CLIENT_TIMEOUT", "5"),
        ],
        &["health", "--json"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json_of(&out)[0]["healthy"], true);
}

#[test]
fn a_bad_value_in_the_environment_is_a_usage_error_that_names_it() {
    let server = TestServer::start();
    let port = server.addr().port().to_string();
    for (name, value) in [
        ("GATEWAY_PORT", "eighty"),
        ("GATEWAY_CLIENT_TIMEOUT", "soon"),
        ("GATEWAY_CLIENT_TIMEOUT", "-1"),
    ] {
        let mut vars = vec![
            ("GATEWAY_HOST", "127.0.0.1"),
            ("GATEWAY_PORT", port.as_str()),
        ];
        vars.retain(|(n, _)| *n != name);
        vars.push((name, value));
        let out = original_environment(&vars, &["health"]);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
    // A node id that is not a number, when joining.
    let out = original_environment(
        &[
            ("GATEWAY_HOST", "127.0.0.1"),
            ("GATEWAY_PORT", &port),
            ("NODE_ID", "seven"),
            ("NODE_PORT", "5007"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NODE_ID"));
}

/// Every variable the client reads, so that a test's command sees only the ones it sets.
const CLIENT_VARIABLES: [&str; 13] = [
    "GATEWAY_URL",
    "GATEWAY_HOST",
    "GATEWAY_PORT",
    "GATEWAY_TOKEN",
    "GATEWAY_CA_FILE",
    "GATEWAY_CLIENT_TIMEOUT",
    "GATEWAY_CLIENT_HEARTBEAT_INTERVAL",
    "GATEWAY_CLIENT_RETRY_ATTEMPTS",
    "GATEWAY_CLIENT_RETRY_DELAY",
    "GATEWAY_CLIENT_CAPABILITIES",
    "NODE_ID",
    "NODE_IP",
    "NODE_PORT",
];

/// The client binary with `args`, `vars` and none of the client's other variables.
fn clean_command(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    for name in CLIENT_VARIABLES {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    command
}

/// A client config file holding `json`, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn new(name: &str, json: &str) -> ConfigFile {
        let path =
            std::env::temp_dir().join(format!("gateway-client-{name}-{}.json", std::process::id()));
        std::fs::write(&path, json).unwrap();
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_config_file_with_the_original_clients_keys_joins_with_them() {
    let server = TestServer::start();
    let file = ConfigFile::new(
        "original-keys",
        &json!({
            "gateway_host": "127.0.0.1", "gateway_port": server.addr().port(), "timeout": 5.0,
            "heartbeat_interval": 0.2, "retry_attempts": 2, "retry_delay": 0.5, "node_id": 7,
            "ip_address": "127.0.0.7", "port": 5007, "capabilities": ["raft", "storage"],
            "metadata": {"role": "worker"}
        })
        .to_string(),
    );
    // The file's heartbeat_interval (0.2 s) is in use: without it the client would follow the
    // gateway's 30 s, and not beat again within the deadline.
    let beats = || server.get("/stats").1["heartbeats_total"].as_u64().unwrap();
    let mut beat = false;
    let (printed, status) = join_until_heartbeating_then(
        &mut clean_command(&["--config", file.path()], &[]),
        || beat = eventually(Duration::from_secs(60), || beats() >= 2),
        "TERM",
    );
    assert!(status.success(), "{printed}");
    assert!(beat, "no heartbeats at the file's interval");
    assert!(
        printed.contains("Node 7 is the bootstrap node"),
        "{printed}"
    );
    let node = server.get("/nodes").1["nodes"][0].clone();
    assert_eq!(node["node_id"], 7, "{node}");
    assert_eq!(node["ip_address"], "127.0.0.7", "{node}");
    assert_eq!(node["port"], 5007, "{node}");
    assert_eq!(node["capabilities"], json!(["raft", "storage"]), "{node}");
    assert_eq!(node["metadata"], json!({"role": "worker"}), "{node}");
}

#[test]
fn the_shipped_example_client_config_loads() {
    let server = TestServer::start();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/client-config.json");
    // Its gateway is localhost:8080; --gateway wins over the file.
    let out = run(&mut clean_command(
        &[
            "--config",
            example,
            "--gateway",
            &server.url,
            "stats",
            "--json",
        ],
        &[],
    ));
    assert_eq!(json_of(&out)["total_nodes"], 0);
}

#[test]
fn flag_beats_environment_beats_config_file_beats_default() {
    let server = TestServer::start();
    let closed = ClosedPort::new();
    let port = server.addr().port().to_string();
    let closed_port = closed.port.to_string();
    let health = |file: &ConfigFile, flags: &[&str], vars: &[(&str, &str)]| {
        let mut args = vec!["--config", file.path()];
        args.extend_from_slice(flags);
        args.push("health");
        run(&mut clean_command(&args, vars))
    };
    let up = |out: &Output, why: &str| {
        assert!(out.status.success(), "{why}: {}", stderr(out));
        assert!(stdout(out).contains("is healthy"), "{why}: {}", stdout(out));
    };
    let down = |out: &Output, why: &str| {
        assert_eq!(out.status.code(), Some(1), "{why}: {}", stdout(out));
        assert!(
            stderr(out).contains(&closed.address()),
            "{why}: {}",
            stderr(out)
        );
    };

    // The file's gateway beats the default (localhost:8080).
    let to_server = ConfigFile::new(
        "precedence-server",
        &format!(r#"{{"gateway_host": "127.0.0.1", "gateway_port": {port}}}"#),
    );
    up(&health(&to_server, &[], &[]), "file");
    // The environment beats the file; a variable for the port alone takes the file's host.
    let to_closed = ConfigFile::new(
        "precedence-closed",
        &format!(
            r#"{{"gateway_host": "{}", "gateway_port": {closed_port}}}"#,
            closed.host
        ),
    );
    let closed_url = format!("http://{}", closed.address());
    down(
        &health(&to_server, &[], &[("GATEWAY_URL", &closed_url)]),
        "GATEWAY_URL over the file",
    );
    up(
        &health(&to_closed, &[], &[("GATEWAY_URL", &server.url)]),
        "GATEWAY_URL over the file",
    );
    let out = health(&to_server, &[], &[("GATEWAY_PORT", &closed_port)]);
    assert_eq!(out.status.code(), Some(1), "GATEWAY_PORT over the file");
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{closed_port}")),
        "{}",
        stderr(&out)
    );
    // A flag beats both.
    up(
        &health(
            &to_closed,
            &["--gateway", &server.url],
            &[("GATEWAY_URL", &closed_url)],
        ),
        "--gateway over both",
    );
    down(
        &health(
            &to_server,
            &[
                "--gateway-port",
                &closed_port,
                "--gateway-host",
                closed.host,
            ],
            &[("GATEWAY_PORT", &port)],
        ),
        "--gateway-host/--gateway-port over both",
    );
    // The file's `gateways` list, ours.
    let list = ConfigFile::new(
        "precedence-list",
        &json!({"gateways": [closed.address(), server.url]}).to_string(),
    );
    let out = health(&list, &["--json"], &[]);
    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports.as_array().map(Vec::len), Some(2), "{reports}");

    // The node's settings: NODE_ID beats the file, --node-id beats NODE_ID; NODE_PORT beats
    // the file; --metadata adds to the file's metadata, key by key.
    let file = ConfigFile::new(
        "precedence-node",
        &json!({
            "gateway_host": "127.0.0.1", "gateway_port": server.addr().port(),
            "node_id": 7, "port": 5007, "ip_address": "127.0.0.7",
            "capabilities": ["raft", "storage"], "metadata": {"role": "worker", "zone": "x"}
        })
        .to_string(),
    );
    let (printed, status) = join_until_heartbeating_then(
        &mut clean_command(
            &[
                "--config",
                file.path(),
                "--node-id",
                "9",
                "--metadata",
                "zone=a",
            ],
            &[("NODE_ID", "8"), ("NODE_PORT", "5008")],
        ),
        || (),
        "TERM",
    );
    assert!(status.success(), "{printed}");
    let node = server.get("/nodes").1["nodes"][0].clone();
    assert_eq!(node["node_id"], 9, "{node}");
    assert_eq!(node["port"], 5008, "{node}");
    assert_eq!(node["ip_address"], "127.0.0.7", "{node}");
    assert_eq!(node["capabilities"], json!(["raft", "storage"]), "{node}");
    assert_eq!(
        node["metadata"],
        json!({"role": "worker", "zone": "a"}),
        "{node}"
    );
}

#[test]
fn config_file_errors_are_usage_errors_that_name_the_key_and_file() {
    let server = TestServer::start();
    let cases = [
        ("unknown", r#"{"gateway_hots": "x"}"#, "gateway_hots"),
        ("port", r#"{"gateway_port": "eighty"}"#, "gateway_port"),
        ("bigport", r#"{"gateway_port": 70000}"#, "gateway_port"),
        ("timeout", r#"{"timeout": -1}"#, "timeout"),
        ("retries", r#"{"retry_attempts": 1.5}"#, "retry_attempts"),
        ("delay", r#"{"retry_delay": "soon"}"#, "retry_delay"),
        ("node", r#"{"node_id": "seven"}"#, "node_id"),
        ("caps", r#"{"capabilities": [1]}"#, "capabilities"),
        ("meta", r#"{"metadata": "role=worker"}"#, "metadata"),
        ("gateways", r#"{"gateways": []}"#, "gateways"),
        ("level", r#"{"log_level": "LOUD"}"#, "log_level"),
        ("json", r#"{"timeout": 10,"#, "invalid JSON"),
        ("array", r#"["timeout"]"#, "JSON object"),
    ];
    for (name, text, named) in cases {
        let file = ConfigFile::new(&format!("bad-{name}"), text);
        // A join that would register node 1 if the file were accepted.
        let out = run(&mut clean_command(
            &[
                "--config",
                file.path(),
                "--gateway",
                &server.url,
                "--node-id",
                "1",
                "--port",
                "5001",
            ],
            &[],
        ));
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(file.path()),
            "{name}: {}",
            stderr(&out)
        );
    }
    assert_eq!(server.get("/stats").1["total_nodes"], 0, "nothing changed");
    // A file that is not there: 2, with its path.
    let missing = std::env::temp_dir().join("gateway-client-no-such-config.json");
    let missing = missing.to_str().unwrap();
    let out = run(&mut clean_command(
        &["--config", missing, "--gateway", &server.url, "stats"],
        &[],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(missing), "{}", stderr(&out));
}

#[test]
fn global_flags_work_after_the_command_too() {
    let server = TestServer::start();
    server.register(1);
    let url = server.url.as_str();
    let url_flag = format!("--gateway={url}");
    for args in [
        &["nodes", "--json", "--gateway", url][..],
        &["--gateway", url, "nodes", "--json"],
        &["nodes", "--all", "--timeout=5", &url_flag, "--json"],
        &["--json", "nodes", "--gateway", url, "--log-level", "ERROR"],
    ] {
        let answer = json_of(&run(&mut clean_command(args, &[])));
        assert_eq!(answer["nodes"][0]["node_id"], 1, "{args:?}: {answer}");
    }
    let answer = json_of(&run(&mut clean_command(
        &["set-leader", "1", "--json", "--gateway", url],
        &[],
    )));
    assert_eq!(answer, json!({"status": "updated", "leader_id": 1}));
    // A global flag without its value, or a switch with one: 2, naming the flag.
    for (args, named) in [
        (&["--gateway", url, "nodes", "--timeout"][..], "--timeout"),
        (&["--gateway", url, "nodes", "--json=yes"], "--json"),
        (
            &[
                "--gateway",
                url,
                "--node-id",
                "1",
                "--port",
                "5001",
                "--json",
            ],
            "--json",
        ),
    ] {
        let out = run(&mut clean_command(args, &[]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(named), "{args:?}: {}", stderr(&out));
    }
    // Nothing after `--` moves: here `--json` is not a flag, and set-leader says so.
    let out = run(&mut clean_command(
        &["--gateway", url, "set-leader", "--", "--json"],
        &[],
    ));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn health_reports_every_gateway_and_exits_1_if_any_is_down() {
    let up = TestServer::start();
    let closed = ClosedPort::new();
    let both = [
        "--gateway",
        &up.url,
        "--gateway",
        &closed.address(),
        "health",
    ];
    let out = run(&mut clean_command(&both, &[]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = format!("{} is healthy: took ", up.url);
    assert!(stdout(&out).starts_with(&line), "{}", stdout(&out));
    let line = format!("{} is unhealthy: took ", closed.address());
    assert!(stderr(&out).starts_with(&line), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 of 2 gateways"), "{}", stderr(&out));

    // With --json: an array, in the order given; the same through GATEWAY_URL.
    let urls = format!("{},{}", up.url, closed.address());
    for out in [
        run(&mut clean_command(&[&both[..], &["--json"]].concat(), &[])),
        run(&mut clean_command(
            &["health", "--json"],
            &[("GATEWAY_URL", &urls)],
        )),
    ] {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reports[0]["address"], up.url.as_str(), "{reports}");
        assert_eq!(reports[0]["healthy"], true, "{reports}");
        assert_eq!(reports[0]["error"], Value::Null, "{reports}");
        assert!(reports[0]["took_ms"].is_number(), "{reports}");
        assert_eq!(reports[1]["address"], closed.address(), "{reports}");
        assert_eq!(reports[1]["healthy"], false, "{reports}");
        let error = reports[1]["error"].as_str().unwrap_or_default();
        assert!(error.contains(&closed.address()), "{reports}");
        assert_eq!(reports.as_array().unwrap().len(), 2, "{reports}");
    }

    // All up: 0, one line each.
    let other = TestServer::start();
    let out = run(&mut clean_command(
        &["--gateway", &up.url, "--gateway", &other.url, "health"],
        &[],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
}

#[test]
fn nodes_capability_lists_the_nodes_offering_every_capability_given() {
    let server = TestServer::start();
    for (id, capabilities) in [
        (1, json!(["raft", "gossip"])),
        (2, json!(["raft", "storage"])),
        (3, json!(["gossip"])),
    ] {
        let mut node = crate::support::registration(id);
        node["capabilities"] = capabilities;
        assert_eq!(server.post_json("/register", &node).0, 200);
    }
    let ids = |capabilities: &[&str]| {
        let mut args = vec!["nodes", "--json"];
        for c in capabilities {
            args.extend(["--capability", c]);
        }
        let answer = json_of(&client(&server, &args));
        assert!(answer["registry_version"].is_u64(), "{answer}");
        answer["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&[]), [1, 2, 3]);
    assert_eq!(ids(&["raft"]), [1, 2]);
    assert_eq!(ids(&["gossip"]), [1, 3]);
    assert_eq!(ids(&["raft", "storage"]), [2]);
    assert_eq!(ids(&["raft", "storage", "gossip"]), Vec::<u64>::new());
    let table = client(&server, &["nodes", "--capability", "storage"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("2 "), "{text}");
    let none = client(&server, &["nodes", "--capability=none"]);
    assert!(stdout(&none).contains("(no nodes)"), "{}", stdout(&none));
}

#[test]
fn odd_arguments_are_usage_errors_not_a_quiet_success() {
    let server = TestServer::start();
    server.register(1);
    // An empty capability matched no node, and said so with exit 0.
    for args in [
        &["nodes", "--capability="][..],
        &["nodes", "--capability", " "],
    ] {
        let out = client(&server, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--capability"), "{}", stderr(&out));
        assert!(out.stdout.is_empty(), "{}", stdout(&out));
    }
    // After `--`, --version is a (bad) node id, not a request for the version.
    let out = client(&server, &["set-leader", "--", "--version"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(!stdout(&out).contains("gateway-client"), "{}", stdout(&out));
    // The gateway given a thousand times: still one answer (from the first).
    let mut args: Vec<&str> = Vec::new();
    for _ in 0..1000 {
        args.extend(["--gateway", &server.url]);
    }
    args.extend(["nodes", "--json"]);
    let mut command = Command::new(BIN);
    command.args(&args).env_remove("GATEWAY_URL");
    let answer = json_of(&run(&mut command));
    assert_eq!(answer["nodes"][0]["node_id"], 1, "{answer}");
}

#[test]
fn a_token_or_ca_file_that_never_ends_is_refused_not_read_until_memory_runs_out() {
    let server = TestServer::start();
    for flag in ["--token-file", "--ca-file"] {
        // Under a memory limit: a client that reads it all fails here, not the machine.
        let mut command = Command::new("sh");
        command
            .args(["-c", "ulimit -v 1000000 && exec \"$0\" \"$@\"", BIN])
            .args(["--gateway", &server.url, flag, "/dev/zero", "nodes"])
            .env_remove("GATEWAY_URL");
        let out = run(&mut command);
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains("/dev/zero") && text.contains("larger than"),
            "{text}"
        );
    }
}

#[test]
fn a_joining_flag_with_a_command_is_a_usage_error_not_ignored() {
    let server = TestServer::start();
    // `--port` here reads as the gateway's port: it was ignored, and the default gateway asked.
    for args in [
        &["--port", "8081", "nodes"][..],
        &["--node-id", "1", "leader"],
        &["--leave-on-exit", "--metadata", "a=b", "stats"],
    ] {
        let out = client(&server, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
        let text = stderr(&out);
        assert!(text.contains(args[0]) && text.contains("joining"), "{text}");
        assert!(out.stdout.is_empty(), "{}", stdout(&out));
    }
}

#[test]
fn a_reader_that_goes_away_ends_a_command_quietly_and_never_a_joining_node() {
    let server = TestServer::start();
    // More than a pipe holds (64 KiB), so that some write comes after the reader is gone.
    for id in 1..=400 {
        server.register(id);
    }
    let mut child = Command::new(BIN)
        .args(["--gateway", &server.url, "nodes", "--json"])
        .env_remove("GATEWAY_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .guarded_spawn()
        .unwrap();
    drop(child.stdout.take()); // As `| head -n 0`.
    let mut status = None;
    let ended = eventually(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(ended, "gateway-client nodes did not end");
    // println! panicked here: exit 101 and a backtrace.
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));

    // Joining, what it prints is a courtesy: with nobody reading, it keeps heartbeating.
    let mut child = Command::new(BIN)
        .args([
            "--gateway",
            &server.url,
            "--node-id",
            "900",
            "--port",
            "5900",
        ])
        .args(["--heartbeat-interval", "0.05"])
        .env_remove("GATEWAY_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .guarded_spawn()
        .unwrap();
    drop(child.stdout.take());
    let beats = || {
        server.get("/stats").1["heartbeats_total"]
            .as_u64()
            .unwrap_or(0)
    };
    // Beats well after the lines it printed on joining (the stats are read before them).
    let beating = eventually(Duration::from_secs(60), || beats() >= 5);
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        beating && alive,
        "the joining node stopped: beats {}",
        beats()
    );
}

#[test]
fn help_and_version_to_a_reader_that_went_away_are_no_panic() {
    for flag in ["--help", "--version"] {
        let mut child = Command::new(BIN)
            .arg(flag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .guarded_spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{flag}: {}", stderr(&out));
    }
}

#[test]
fn output_modes_print_tables_wide_tables_ids_and_json() {
    let server = TestServer::start();
    server.register(1);
    server.register(2);
    let text = |args: &[&str]| {
        let output = client(&server, args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let table = text(&["nodes"]);
    assert!(table.lines().next().unwrap().contains("ROLE"), "{table}");
    let leader_row = table.lines().find(|l| l.starts_with("1 ")).unwrap();
    assert!(
        leader_row.contains("leader"),
        "the leader is marked: {table}"
    );
    let wide = text(&["nodes", "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("METADATA"), "{wide}");
    assert!(
        wide.contains("zone=a"),
        "metadata in the wide table: {wide}"
    );
    assert_eq!(text(&["nodes", "-o", "ids"]), "1\n2\n");
    assert_eq!(text(&["-o", "ids", "leader"]), "1\n");
    let json: serde_json::Value =
        serde_json::from_str(&text(&["nodes", "--output", "json"])).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(text(&["nodes", "--json"]), text(&["nodes", "-o", "json"]));
    let stats = text(&["stats"]);
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("node_timeout:") && l.ends_with("5m 0s")),
        "{stats}"
    );
    for bad in [
        &["nodes", "-o", "yaml"][..],
        &["stats", "-o", "ids"],
        &["nodes", "--json", "-o", "wide"],
    ] {
        let output = client(&server, bad);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {output:?}");
        assert!(!output.stderr.is_empty());
    }
}

#[test]
fn node_shows_one_node_and_fails_for_an_unknown_one() {
    let server = TestServer::start();
    server.register(3);
    let output = client(&server, &["node", "3"]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("127.0.0.1:5003") && text.contains("leader"),
        "{text}"
    );
    let output = client(&server, &["node", "3", "-o", "json"]);
    let node: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(node["node_id"], 3);
    let output = client(&server, &["node", "4"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("node 4 is not registered"));
}
