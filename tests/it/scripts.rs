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
