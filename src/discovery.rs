//! The discovery handle a node type embeds: the Rust form of the original
//! `GatewayDiscoveryMixin`.
//!
//! A node holds a [`Discovery`], implements [`GatewayDiscovery`] by returning it, and gets the
//! mixin's methods. Discovery never fails the node: with no gateway reachable it reports
//! `gateway_available: false` and keeps trying to register in the background.
//!
//! ```
//! use cluster_gateway::discovery::{Discovery, GatewayDiscovery};
//! # let server = cluster_gateway::GatewayServer::new(cluster_gateway::ServerConfig {
//! #     host: "127.0.0.1".into(), port: 0, ..Default::default() }).start()?;
//! # let gateway_port = server.local_addr().port();
//!
//! struct MyNode {
//!     discovery: Discovery,
//! }
//!
//! impl GatewayDiscovery for MyNode {
//!     fn discovery(&self) -> &Discovery {
//!         &self.discovery
//!     }
//! }
//!
//! let node = MyNode { discovery: Discovery::new() };
//! node.initialize_discovery("127.0.0.1", gateway_port, 1, "127.0.0.1", 5001, &["raft", "gossip"], None);
//! if node.is_bootstrap_node() {
//!     println!("bootstrapping a new cluster as its leader");
//! }
//! node.shutdown_discovery();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::api::{Node, NodeId, Registration};
use crate::client::GatewayClient;

/// What a node knows about its discovery, for logs and status pages.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiscoveryInfo {
    /// True if the last exchange with the gateway succeeded.
    pub gateway_available: bool,
    /// The gateway requests go to first.
    pub gateway: String,
    /// This node's id (once initialised).
    pub node_id: Option<NodeId>,
    /// True if this node bootstrapped the cluster.
    pub is_bootstrap: bool,
    /// Why the gateway is not available, if it is not.
    pub error: Option<String>,
    /// Known peers, this node not included.
    pub peers: usize,
    /// The leader's id, as last known.
    pub leader_id: Option<NodeId>,
    /// Registry version of the last known view.
    pub registry_version: Option<u64>,
    /// Age of the last known view.
    pub view_age: Option<Duration>,
}

/// The discovery state a node embeds. Starts uninitialised; see [`Discovery::initialize`].
#[derive(Debug, Default)]
pub struct Discovery {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    client: Option<GatewayClient>,
    is_bootstrap: bool,
    /// The error of the first registration, until the gateway is heard from.
    error: Option<String>,
}

impl Discovery {
    /// An uninitialised handle.
    pub fn new() -> Discovery {
        Discovery::default()
    }

    /// Registers this node with the gateway at `gateway_host:gateway_port` and starts
    /// heartbeating. Never fails: see [`DiscoveryInfo::gateway_available`].
    #[allow(clippy::too_many_arguments)] // The original mixin's signature, argument for argument.
    pub fn initialize(
        &self,
        gateway_host: &str,
        gateway_port: u16,
        node_id: NodeId,
        ip_address: &str,
        port: u16,
        capabilities: &[&str],
        metadata: Option<Map<String, Value>>,
    ) -> DiscoveryInfo {
        let registration = Registration {
            node_id,
            ip_address: ip_address.to_owned(),
            port,
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            metadata,
            previous_epoch: None,
        };
        self.initialize_with(GatewayClient::new(gateway_host, gateway_port), registration)
    }

    /// Like [`Discovery::initialize`], with a client built to taste (several gateways,
    /// timeouts, heartbeat interval).
    pub fn initialize_with(
        &self,
        client: GatewayClient,
        registration: Registration,
    ) -> DiscoveryInfo {
        let node_id = registration.node_id;
        let (is_bootstrap, error) = match client.discover_cluster(registration.clone()) {
            Ok((is_bootstrap, cluster)) => {
                log::info!(
                    "node {node_id} joined through the gateway: bootstrap {is_bootstrap}, {} peers",
                    cluster.nodes.len()
                );
                (is_bootstrap, None)
            }
            Err(e) => {
                log::warn!("node {node_id} runs without the gateway for now: {e}");
                if e.is_transport() {
                    client.keep_registered(registration);
                }
                (false, Some(e.to_string()))
            }
        };
        let mut inner = self.inner();
        if let Some(old) = inner.client.replace(client) {
            old.shutdown();
        }
        inner.is_bootstrap = is_bootstrap;
        inner.error = error;
        drop(inner);
        self.discovery_info()
    }

    /// The current discovery state.
    pub fn discovery_info(&self) -> DiscoveryInfo {
        let inner = self.inner();
        let Some(client) = inner.client.as_ref() else {
            return DiscoveryInfo {
                error: Some("discovery is not initialised".to_owned()),
                ..DiscoveryInfo::default()
            };
        };
        let status = client.status();
        let view = client.cluster_view();
        let error = status.last_error.clone().or_else(|| {
            // Until a heartbeat or registration succeeds, the first failure stands.
            status
                .last_success
                .is_none()
                .then(|| inner.error.clone())
                .flatten()
        });
        DiscoveryInfo {
            gateway_available: error.is_none(),
            gateway: status.current_gateway,
            node_id: status.node_id.or_else(|| client.node_id()),
            is_bootstrap: inner.is_bootstrap,
            error,
            peers: view.as_ref().map_or(0, |v| v.cluster.nodes.len()),
            leader_id: view
                .as_ref()
                .and_then(|v| v.cluster.leader.as_ref().map(|l| l.node_id)),
            registry_version: view.as_ref().map(|v| v.cluster.registry_version),
            view_age: view.as_ref().map(|v| v.age()),
        }
    }

    /// True if this node bootstrapped the cluster (and so should start as its leader).
    pub fn is_bootstrap_node(&self) -> bool {
        self.inner().is_bootstrap
    }

    /// The peers as last known (empty before the first successful registration).
    pub fn cluster_nodes(&self) -> Vec<Node> {
        self.inner()
            .client
            .as_ref()
            .and_then(|c| c.cluster_view())
            .map(|v| v.cluster.nodes)
            .unwrap_or_default()
    }

    /// The leader as last known.
    pub fn cluster_leader(&self) -> Option<Node> {
        self.inner()
            .client
            .as_ref()
            .and_then(|c| c.cluster_view())
            .and_then(|v| v.cluster.leader)
    }

    /// Tells the gateway who leads now (after an election). False if it failed.
    pub fn update_gateway_leader(&self, leader_id: NodeId) -> bool {
        let inner = self.inner();
        let Some(client) = inner.client.as_ref() else {
            return false;
        };
        match client.update_leader(leader_id) {
            Ok(updated) => updated,
            Err(e) => {
                log::warn!("could not tell the gateway that node {leader_id} leads: {e}");
                false
            }
        }
    }

    /// Stops heartbeating; the registration expires on the gateway by itself.
    pub fn shutdown(&self) {
        if let Some(client) = self.inner().client.as_ref() {
            client.shutdown();
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        crate::lock(&self.inner)
    }
}

/// The mixin: a node type that returns its [`Discovery`] gets these methods.
pub trait GatewayDiscovery {
    /// The node's discovery handle.
    fn discovery(&self) -> &Discovery;

    /// See [`Discovery::initialize`].
    #[allow(clippy::too_many_arguments)] // The original mixin's signature, argument for argument.
    fn initialize_discovery(
        &self,
        gateway_host: &str,
        gateway_port: u16,
        node_id: NodeId,
        ip_address: &str,
        port: u16,
        capabilities: &[&str],
        metadata: Option<Map<String, Value>>,
    ) -> DiscoveryInfo {
        self.discovery().initialize(
            gateway_host,
            gateway_port,
            node_id,
            ip_address,
            port,
            capabilities,
            metadata,
        )
    }

    /// See [`Discovery::discovery_info`].
    fn discovery_info(&self) -> DiscoveryInfo {
        self.discovery().discovery_info()
    }

    /// See [`Discovery::is_bootstrap_node`].
    fn is_bootstrap_node(&self) -> bool {
        self.discovery().is_bootstrap_node()
    }

    /// See [`Discovery::cluster_nodes`].
    fn cluster_nodes(&self) -> Vec<Node> {
        self.discovery().cluster_nodes()
    }

    /// See [`Discovery::cluster_leader`].
    fn cluster_leader(&self) -> Option<Node> {
        self.discovery().cluster_leader()
    }

    /// See [`Discovery::update_gateway_leader`].
    fn update_gateway_leader(&self, leader_id: NodeId) -> bool {
        self.discovery().update_gateway_leader(leader_id)
    }

    /// See [`Discovery::shutdown`].
    fn shutdown_discovery(&self) {
        self.discovery().shutdown()
    }
}
