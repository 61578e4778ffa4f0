//! The gateway-client binary: the original join command line, operator commands in both output
//! modes, and exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestServer, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-client");

fn client(server: &TestServer, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["--gateway", &server.url])
        .args(args)
        .env_remove("GATEWAY_URL")
        .output()
        .expect("gateway-client runs")
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
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
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
    assert!(
        eventually(Duration::from_secs(10), || {
            status = child.try_wait().unwrap();
            status.is_some()
        }),
        "gateway-client did not stop on SIG{signal}"
    );
    for line in lines.map_while(Result::ok) {
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["--gateway", &format!("127.0.0.1:{port}"), "stats"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&port.to_string()), "{}", stderr(&out));
    // Help: 0.
    let help = Command::new(BIN).arg("--help").output().unwrap();
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
