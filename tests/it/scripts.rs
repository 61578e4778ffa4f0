//! The curl scripts in `scripts/`, run as a person would.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::support::Guarded;
use crate::support::{ClosedPort, FakeGateway, TestServer};

#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl: apt-get install curl")]
fn demo_registers_three_nodes_shows_them_and_what_the_gateway_logged() {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env("GATEWAY_SERVER_BIN", env!("CARGO_BIN_EXE_gateway-server"))
        .guarded_output()
        .expect("bash runs demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo.sh failed:\n{stdout}\n{stderr}");
    let answers: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("the answers are JSON");
    // health, three registrations, a heartbeat, nodes, nodes without 1, leader, stats.
    assert_eq!(answers.len(), 9, "{stdout}");
    assert_eq!(answers[1]["is_bootstrap"], true);
    assert_eq!(answers[5]["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(answers[6]["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(answers[7]["leader"]["node_id"], 1);
    assert_eq!(answers[8]["total_nodes"], 3);
    // Readable: indented, one field a line.
    assert!(stdout.contains("\n  \"total_nodes\": 3,\n"), "{stdout}");
    assert!(stderr.contains("gateway stopped"), "{stderr}");
    // The gateway's own log lines, as it wrote them.
    for logged in [
        "listening on http://127.0.0.1:",
        "node 1 joined",
        "node 3 joined",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("  | ") && l.contains(logged)),
            "{logged:?} not shown:\n{stderr}"
        );
    }
}

fn script(name: &str, gateway: &str, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR")))
        .args(args)
        .env("GATEWAY_URL", gateway)
        .guarded_output()
        .expect("bash runs the script")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl: apt-get install curl")]
fn scripts_print_indented_json_and_exit_zero_on_success() {
    let server = TestServer::start();
    let out = script(
        "register.sh",
        &server.url,
        &["7", "10.0.0.7", "7007", "raft,http"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["status"], "registered");
    assert!(
        stdout.starts_with("{\n  \"status\": \"registered\",\n"),
        "{stdout}"
    );
    let (_, nodes) = server.get("/nodes");
    assert_eq!(nodes["nodes"][0]["capabilities"], json!(["raft", "http"]));
    assert_eq!(nodes["nodes"][0]["port"], 7007);
    for (name, args) in [
        ("health.sh", &[][..]),
        ("heartbeat.sh", &["7"][..]),
        ("nodes.sh", &["7", "all"][..]),
        ("nodes.sh", &["all"][..]),
        ("leader.sh", &[][..]),
        ("set-leader.sh", &["7"][..]),
        ("stats.sh", &[][..]),
        ("remove.sh", &["7"][..]),
    ] {
        let out = script(name, &server.url, args);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        serde_json::from_str::<Value>(&stdout).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            stdout.contains("\n  \""),
            "{name} is not indented: {stdout}"
        );
    }
}

#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl: apt-get install curl")]
fn scripts_fail_on_an_error_answer_and_show_the_gateways_error() {
    let server = TestServer::start();
    let out = script("register.sh", &server.url, &["7", "not an address"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "register.sh: the gateway answered 400: Invalid ip_address: \"not an address\""
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(server.get("/stats").1["total_nodes"], 0);

    // A 5xx, from a stand-in gateway.
    let fake = FakeGateway::start(
        Some(503),
        r#"{"error": "Registry full", "status_code": 503, "timestamp": 1}"#,
    );
    let out = script("health.sh", &fake.url(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("answered 503"), "{stderr}");
    assert!(stderr.contains("Registry full"), "{stderr}");

    let closed = ClosedPort::new();
    let out = script("stats.sh", &format!("http://{}", closed.address()), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("stats.sh: cannot reach the gateway at"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl: apt-get install curl")]
fn scripts_check_their_arguments_and_say_what_is_wrong() {
    // Nothing listens here: a bad call must fail before any request.
    let closed = ClosedPort::new();
    let nowhere = format!("http://{}", closed.address());
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "register.sh",
            &["abc"],
            "NODE_ID must be a non-negative integer, got \"abc\"",
        ),
        ("register.sh", &[], "missing arguments"),
        (
            "register.sh",
            &["1", "10.0.0.1", "http"],
            "PORT must be a non-negative integer",
        ),
        (
            "register.sh",
            &["1", "10.0.0.1", "70000"],
            "PORT must be from 1 to 65535",
        ),
        (
            "register.sh",
            &["1", "10.0.0.1", "5001", "raft,,x"],
            "CAPABILITIES has an empty entry",
        ),
        (
            "register.sh",
            &["1", "a", "1", "b", "c"],
            "too many arguments",
        ),
        (
            "register.sh",
            &["1", "a\tb"],
            "control characters are not allowed",
        ),
        ("heartbeat.sh", &[], "missing arguments"),
        (
            "heartbeat.sh",
            &["-3"],
            "NODE_ID must be a non-negative integer",
        ),
        (
            "remove.sh",
            &["x"],
            "NODE_ID must be a non-negative integer",
        ),
        ("set-leader.sh", &["1", "2"], "too many arguments"),
        (
            "nodes.sh",
            &["some"],
            "EXCLUDE_NODE_ID must be a non-negative integer",
        ),
        ("nodes.sh", &["all", "1"], "unexpected argument \"1\""),
        ("health.sh", &["x"], "too many arguments"),
        ("leader.sh", &["x"], "too many arguments"),
        ("stats.sh", &["x"], "too many arguments"),
    ];
    for &(name, args, says) in cases {
        let out = script(name, &nowhere, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{name}: {says}")),
            "{name} {args:?}: {stderr}"
        );
        assert!(stderr.contains(&format!("usage: {name}")), "{stderr}");
        assert!(!stderr.contains("unbound variable"), "{stderr}");
        assert!(
            !stderr.contains("cannot reach"),
            "{name} sent a request: {stderr}"
        );
    }
    let out = script("register.sh", &nowhere, &["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("usage: register.sh NODE_ID"));
}

#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl: apt-get install curl")]
fn demo_cluster_shows_a_stopped_node_suspected_then_reaped() {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_gateway-client"))
        .parent()
        .unwrap()
        .to_owned();
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/demo-cluster.sh"
        ))
        .env("GATEWAY_BIN_DIR", bin_dir)
        .env_remove("GATEWAY_URL")
        .guarded_output()
        .expect("bash runs demo-cluster.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo-cluster.sh failed:\n{stdout}\n{stderr}"
    );
    let suspected = stdout
        .find("== node 3 is suspected")
        .expect("node 3 turned suspected");
    let reaped = stdout
        .find("== node 3 was reaped")
        .expect("node 3 disappeared");
    assert!(suspected < reaped);
    assert!(
        stdout[suspected..reaped]
            .lines()
            .any(|l| l.starts_with("3 ") && l.contains("suspected")),
        "{stdout}"
    );
    assert!(
        !stdout[reaped..].lines().any(|l| l.starts_with("3 ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("reaped_total:        1")
            || stdout
                .lines()
                .any(|l| l.starts_with("reaped_total:") && l.ends_with(" 1")),
        "{stdout}"
    );
}
