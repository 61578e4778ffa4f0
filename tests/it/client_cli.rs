//! The gateway-client binary: the original join command line, operator commands in both output
//! modes, and exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

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
fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
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
    let mut child = Command::new(BIN)
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
        .args(extra)
        .env_remove("GATEWAY_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
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
    let killed = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut status = None;
    let stopped = eventually(Duration::from_secs(10), || {
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
    assert!(stdout(&client(&server, &["health"])).starts_with("healthy"));
    assert_eq!(
        json_of(&client(&server, &["health", "--json"]))["status"],
        "healthy"
    );
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
        .output()
        .unwrap();
    assert_eq!(json_of(&out)["status"], "healthy");
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
        "nodes",
        "set-leader",
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
        .args(["health", "--json"])
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
    assert_eq!(json_of(&out)["status"], "healthy");
    // --gateway-host/--gateway-port win over GATEWAY_URL; the host defaults to localhost.
    let out = health(&["--gateway-port", &port], Some(&closed_url));
    assert_eq!(json_of(&out)["status"], "healthy");
    let out = health(
        &["--gateway-host", "127.0.0.1", "--gateway-port", &port],
        Some(&closed_url),
    );
    assert_eq!(json_of(&out)["status"], "healthy");
    // GATEWAY_URL wins over the default.
    let out = health(&[], Some(&server.url));
    assert_eq!(json_of(&out)["status"], "healthy");
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
    assert_eq!(json_of(&out)["status"], "healthy");
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
