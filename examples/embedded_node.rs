//! A node that embeds the client, as "Embedding the client" in docs/embedding.md shows. Builds
//! with the `client` feature alone (CI checks that). Run it against a gateway:
//! `cargo run --example embedded_node -- 127.0.0.1:8080 1 5001`.

use std::time::Duration;

use cluster_gateway::api::Registration;
use cluster_gateway::client::discovery::{Discovery, GatewayDiscovery};
use cluster_gateway::{GatewayClient, Metadata, serde_json};

struct MyNode {
    node_id: u64,
    discovery: Discovery,
}

impl GatewayDiscovery for MyNode {
    fn discovery(&self) -> &Discovery {
        &self.discovery
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let gateway = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let node_id: u64 = args.next().map_or(Ok(1), |a| a.parse())?;
    let port: u16 = args.next().map_or(Ok(5001), |a| a.parse())?;

    let node = MyNode {
        node_id,
        discovery: Discovery::new(),
    };
    let client = GatewayClient::builder()
        .gateway(gateway)
        .deadline(Duration::from_secs(5))
        .build()?;
    let mut metadata = Metadata::new();
    metadata.insert("zone".into(), serde_json::json!("a"));
    let changes = node.discovery().subscribe();
    let info = node.discovery().initialize_with(
        client,
        Registration::new(node.node_id, "127.0.0.1", port)
            .capabilities(["raft", "gossip"])
            .metadata(metadata),
    );
    println!("{info:?}");
    if node.is_bootstrap_node() {
        println!("node {} starts a new cluster as its leader", node.node_id);
    }
    // Print changes for a while, then leave.
    while let Ok(change) = changes.recv_timeout(Duration::from_secs(10)) {
        println!(
            "joined {:?}, left {:?}, leader {:?}, bootstrapped {}",
            change.joined.iter().map(|n| n.node_id).collect::<Vec<_>>(),
            change.left,
            change.view.cluster.leader.map(|l| l.node_id),
            change.bootstrapped
        );
    }
    node.discovery().leave()?;
    Ok(())
}
