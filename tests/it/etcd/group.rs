//! Registrations that arrive together go to etcd as one transaction, and each is kept.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{EtcdCluster, WAIT, gateway, host, past_503, register};
use crate::support::{Barrier, agent, eventually, join_all, registration};

/// etcd's revision: every transaction that writes moves it on by one, however many keys it
/// writes.
fn revision(etcd: &EtcdCluster) -> i64 {
    let mut answer = agent()
        .post(format!("{}/v3/kv/range", etcd.url(0)))
        .send(json!({"key": "eA=="}).to_string())
        .unwrap();
    let body: Value = serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
    body["header"]["revision"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn registrations_that_arrive_together_share_a_transaction_and_each_is_kept() {
    const NODES: u64 = 32;
    let etcd = EtcdCluster::start(host::GROUP, 1);
    let server = gateway(&etcd.endpoints(), |c| c.workers = 16);
    for id in 1..=NODES {
        register(&server, id);
    }
    // Each round, every node registers again at once with new metadata. On its own, each
    // registration is one transaction; grouped, fewer transactions write them all. A busy
    // machine may serve a round one at a time: a few rounds are allowed.
    let barrier = Barrier::new(NODES as usize);
    let mut grouped = None;
    for round in 1..=20u64 {
        let before = revision(&etcd);
        let racers: Vec<_> = (1..=NODES)
            .map(|id| {
                let (url, barrier) = (server.url.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let _guard = barrier.guard();
                    let mut body = registration(id);
                    body["metadata"] = json!({"round": round});
                    barrier.wait();
                    let (status, text) = past_503(|| {
                        let mut answer = agent()
                            .post(format!("{url}/register"))
                            .send(body.to_string())
                            .unwrap();
                        let text = answer.body_mut().read_to_string().unwrap();
                        (answer.status().as_u16(), text)
                    });
                    assert_eq!(status, 200, "register {id}: {text}");
                    // Answered only once written and in the gateway's copy: a read through
                    // the same gateway right after the answer shows it.
                    let (status, text) = past_503(|| {
                        let mut read = agent()
                            .get(format!("{url}/nodes?status=all"))
                            .call()
                            .unwrap();
                        let text = read.body_mut().read_to_string().unwrap();
                        (read.status().as_u16(), text)
                    });
                    assert_eq!(status, 200, "{text}");
                    let nodes: Value = serde_json::from_str(&text).unwrap();
                    let node = nodes["nodes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|n| n["node_id"] == id);
                    assert_eq!(
                        node.map(|n| n["metadata"]["round"].clone()),
                        Some(json!(round)),
                        "node {id} answered before its round-{round} registration was shown"
                    );
                })
            })
            .collect();
        join_all(racers, Duration::from_secs(120));
        let transactions = revision(&etcd) - before;
        // Every registration is kept, grouped or not.
        let (status, nodes) = past_503(|| server.get("/nodes?status=all"));
        assert_eq!(status, 200, "{nodes}");
        let nodes = nodes["nodes"].as_array().unwrap().clone();
        assert_eq!(nodes.len(), NODES as usize);
        assert!(
            nodes.iter().all(|n| n["metadata"]["round"] == round),
            "a registration of round {round} is missing: {nodes:?}"
        );
        if transactions < NODES as i64 {
            grouped = Some((round, transactions));
            break;
        }
    }
    let (round, transactions) = grouped.expect("no two registrations ever shared a transaction");
    println!("round {round}: {NODES} registrations in {transactions} etcd transactions");
    // Grouping never bootstraps a second time or loses the leader.
    assert!(eventually(
        WAIT,
        || server.get("/leader").1["leader"]["node_id"] == 1
    ));
}

#[test]
#[cfg_attr(not(has_etcd), ignore = "needs etcd: apt-get install etcd-server")]
fn every_node_registered_twice_at_once_each_registration_is_kept_and_groups_still_form() {
    const NODES: u64 = 16;
    let etcd = EtcdCluster::start(host::GROUP_TWICE, 1);
    let server = gateway(&etcd.endpoints(), |c| c.workers = 32);
    for id in 1..=NODES {
        register(&server, id);
    }
    // Each round, every node registers twice at once. The second registration of a node
    // never shares a transaction with the first: it waits for the first to be written and in
    // the copy, and decides on that (the node is in one group at a time). Every registration
    // is kept, and the others still share transactions. (A correctness guard: timing alone
    // decides how often the old code's stale compares failed, so no count tells it apart.)
    let barrier = Barrier::new(2 * NODES as usize);
    let mut grouped = None;
    for round in 1..=20u64 {
        let before = revision(&etcd);
        let racers: Vec<_> = (1..=2 * NODES)
            .map(|racer| {
                let id = (racer - 1) % NODES + 1;
                let (url, barrier) = (server.url.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let _guard = barrier.guard();
                    let mut body = registration(id);
                    body["metadata"] = json!({"round": round});
                    barrier.wait();
                    let (status, text) = past_503(|| {
                        let mut answer = agent()
                            .post(format!("{url}/register"))
                            .send(body.to_string())
                            .unwrap();
                        let text = answer.body_mut().read_to_string().unwrap();
                        (answer.status().as_u16(), text)
                    });
                    assert_eq!(status, 200, "register {id}: {text}");
                })
            })
            .collect();
        join_all(racers, Duration::from_secs(120));
        let transactions = revision(&etcd) - before;
        let (status, nodes) = past_503(|| server.get("/nodes?status=all"));
        assert_eq!(status, 200, "{nodes}");
        let nodes = nodes["nodes"].as_array().unwrap().clone();
        assert_eq!(nodes.len(), NODES as usize);
        assert!(
            nodes.iter().all(|n| n["metadata"]["round"] == round),
            "a registration of round {round} is missing: {nodes:?}"
        );
        if transactions < NODES as i64 {
            grouped = Some((round, transactions));
            break;
        }
    }
    let (round, transactions) = grouped
        .expect("registering every node twice at once never took fewer transactions than nodes");
    println!("round {round}: {NODES} nodes registered twice in {transactions} etcd transactions");
}
