//! The curl scripts in `scripts/`, run as a person would.

use std::process::Command;

#[test]
fn demo_registers_three_nodes_shows_them_and_stops_the_server() {
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env("GATEWAY_SERVER_BIN", env!("CARGO_BIN_EXE_gateway-server"))
        .output()
        .expect("bash runs demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo.sh failed:\n{stdout}\n{stderr}");
    let answers: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each answer is JSON"))
        .collect();
    // health, three registrations, a heartbeat, nodes, nodes without 1, leader, stats.
    assert_eq!(answers.len(), 9, "{stdout}");
    assert_eq!(answers[1]["is_bootstrap"], true);
    assert_eq!(answers[5]["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(answers[6]["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(answers[7]["leader"]["node_id"], 1);
    assert_eq!(answers[8]["total_nodes"], 3);
    assert!(stderr.contains("gateway stopped"), "{stderr}");
}

#[test]
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
        .output()
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
