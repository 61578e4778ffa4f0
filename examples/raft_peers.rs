//! A RAFT node's peer list fed from the gateway's view (docs/embedding.md, "A RAFT peer list").
//! Builds with the `client` feature alone. Run it against a gateway:
//! `cargo run --example raft_peers -- 127.0.0.1:8080 1 5001`.

use std::collections::BTreeMap;
use std::time::Duration;

use cluster_gateway::GatewayClient;
use cluster_gateway::api::Registration;
use cluster_gateway::client::discovery::Discovery;

/// What the RAFT library wants: peer id -> address.
type Peers = BTreeMap<u64, String>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let gateway = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let node_id: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let port: u16 = args.next().map_or(Ok(5001), |a| a.parse())?;

    let discovery = Discovery::new();
    let client = GatewayClient::builder()
        .gateway(gateway)
        .watch(true)
        .build()?;
    let registration = Registration::new(node_id, "127.0.0.1", port).capabilities(["raft"]);
    discovery.initialize_with(client, registration);

    // Feed the RAFT configuration: every active peer that speaks raft, and the leader.
    let changes = discovery.on_change(|change| {
        let peers: Peers = change
            .view
            .cluster
            .nodes
            .iter()
            .filter(|n| n.capabilities.iter().any(|c| c == "raft"))
            .map(|n| (n.node_id, n.address()))
            .collect();
        println!("raft peers now {peers:?}");
    });
    let leaders = discovery.on_leader_change(|leader| match leader {
        Some(leader) => println!("leader {} at {}", leader.node_id, leader.address()),
        None => println!("no leader"),
    });

    // A RAFT cluster needs a quorum before it elects: wait for two peers (three voters).
    match discovery.wait_for_peers(2, Duration::from_secs(30)) {
        Ok(view) => println!("quorum possible with {} peers", view.cluster.nodes.len()),
        Err(e) => println!("still alone: {e}"),
    }
    if discovery.is_bootstrap_node() {
        // This node formed the cluster: it leads the first term and says so.
        discovery.update_gateway_leader(node_id);
    }
    std::thread::sleep(Duration::from_secs(5));
    changes.cancel();
    leaders.cancel();
    discovery.leave()?;
    Ok(())
}
