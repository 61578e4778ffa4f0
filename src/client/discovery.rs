//! The discovery handle a node type embeds: the Rust form of the original
//! `GatewayDiscoveryMixin`.
//!
//! A node holds a [`Discovery`], implements [`GatewayDiscovery`] by returning it, and gets the
//! mixin's methods. Discovery never fails the node: with no gateway reachable it reports
//! `gateway_available: false` and keeps trying to register in the background.
//!
//! ```
//! use cluster_gateway::discovery::{Discovery, GatewayDiscovery};
//! # let config = cluster_gateway::ServerConfig::new("127.0.0.1", 0);
//! # let server = cluster_gateway::GatewayServer::new(config).start()?;
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

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::api::{Node, NodeId, Registration};
use crate::client::error::ClientError;
use crate::client::gateway_client::GatewayClient;
use crate::client::session::{ClientStatus, Membership};
use crate::client::view::{ClusterChange, ClusterView};

/// What a node knows about its discovery, for logs and status pages.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct DiscoveryInfo {
    /// True if the last exchange with the gateway succeeded and no request has waited long
    /// for an answer (see [`ClientStatus::gateway_available`]).
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
    /// Registry version of the last known view (meaningful with `epoch`).
    pub registry_version: Option<u64>,
    /// Age of the last known view.
    pub view_age: Option<Duration>,
    /// The `epoch` of the gateway run the view comes from.
    pub epoch: Option<String>,
}

/// Everything a node may want to know, taken at one moment: [`Discovery::snapshot`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DiscoverySnapshot {
    /// The summary.
    pub info: DiscoveryInfo,
    /// The whole cached view (peers and leader), if any.
    pub view: Option<ClusterView>,
    /// The client's status, once initialised.
    pub status: Option<ClientStatus>,
}

/// The discovery state a node embeds. Starts uninitialised; see [`Discovery::initialize`].
///
/// Reads ([`Discovery::discovery_info`], [`Discovery::is_bootstrap_node`],
/// [`Discovery::cluster_nodes`], [`Discovery::cluster_leader`], [`Discovery::snapshot`]) never
/// wait for the network: no lock is held across a request.
#[derive(Debug, Default)]
pub struct Discovery {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    client: Option<Arc<GatewayClient>>,
    /// Why initialisation could not even start (an invalid gateway address), with the node.
    failed: Option<(NodeId, String)>,
    /// Subscribers, handed to every client this handle makes.
    subscribers: Vec<Sender<ClusterChange>>,
}

impl Discovery {
    /// An uninitialised handle.
    pub fn new() -> Discovery {
        Discovery::default()
    }

    /// Registers this node with the gateway at `gateway_host:gateway_port` and starts
    /// heartbeating: the original mixin's signature. Never fails: see
    /// [`DiscoveryInfo::gateway_available`]. Blocks at most the client's default deadline
    /// (15 s). A host that cannot form an address is reported in [`DiscoveryInfo::error`] at
    /// once, and nothing runs. Prefer [`Discovery::initialize_with`] with a builder-made
    /// client: no positional ports to swap, and every setting at hand.
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
        match GatewayClient::try_new(gateway_host, gateway_port) {
            Ok(client) => self.initialize_with(client, registration),
            Err(e) => {
                log::error!("node {node_id} cannot use the gateway: {e}");
                let old = {
                    let mut inner = self.inner();
                    inner.failed = Some((node_id, e.to_string()));
                    inner.client.take()
                };
                if let Some(old) = old {
                    old.shutdown();
                }
                self.discovery_info()
            }
        }
    }

    /// Registers `registration` through `client` (built to taste: several gateways, timeouts,
    /// deadline, a pinned heartbeat interval) and keeps it registered.
    ///
    /// The registration is made by the client's heartbeat thread; this waits for its outcome
    /// at most the client's deadline ([`crate::client::ClientBuilder::deadline`], default
    /// 15 s), and returns at once when [`Discovery::shutdown`] is called meanwhile. A gateway
    /// that is down or frozen is reported in the answer, and the node registers in the
    /// background once one answers; [`Discovery::is_bootstrap_node`] then says whether it
    /// bootstrapped, and subscribers hear of it. Initialising again for the same node keeps
    /// its membership: it registers as rejoining, and stays the bootstrap node if it was.
    pub fn initialize_with(
        &self,
        client: GatewayClient,
        registration: Registration,
    ) -> DiscoveryInfo {
        let node_id = registration.node_id;
        let client = Arc::new(client);
        let old = {
            let mut inner = self.inner();
            let old = inner.client.replace(Arc::clone(&client));
            inner.failed = None;
            if let Some(old) = &old {
                client.adopt(old, node_id);
            }
            // They know the view so far (adopted from the old client): changes only.
            for subscriber in &inner.subscribers {
                client.add_subscriber(subscriber.clone(), false);
            }
            old
        };
        if let Some(old) = old {
            old.shutdown();
        }
        let deadline = Instant::now() + client.deadline();
        let outcomes = client.register_in_background(registration);
        client.wait_for_registration(outcomes, deadline);
        let info = self.discovery_info();
        if info.gateway_available {
            log::info!(
                "node {node_id} joined through the gateway: bootstrap {}, {} peers",
                info.is_bootstrap,
                info.peers
            );
        } else {
            log::warn!(
                "node {node_id} runs without the gateway for now: {}",
                info.error.as_deref().unwrap_or("no answer yet")
            );
        }
        info
    }

    /// The current discovery state. Never waits for the network.
    pub fn discovery_info(&self) -> DiscoveryInfo {
        self.snapshot().info
    }

    /// Status, view and summary, taken at one moment. Never waits for the network.
    pub fn snapshot(&self) -> DiscoverySnapshot {
        let (client, failed) = {
            let inner = self.inner();
            (inner.client.clone(), inner.failed.clone())
        };
        let Some(client) = client else {
            let (node_id, error) = match failed {
                Some((node_id, error)) => (Some(node_id), error),
                None => (None, "discovery is not initialised".to_owned()),
            };
            return DiscoverySnapshot {
                info: DiscoveryInfo {
                    node_id,
                    error: Some(error),
                    ..DiscoveryInfo::default()
                },
                view: None,
                status: None,
            };
        };
        let (status, view) = client.snapshot();
        let error = if status.gateway_available {
            None
        } else {
            Some(
                status
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the gateway has not answered (yet)".to_owned()),
            )
        };
        let info = DiscoveryInfo {
            gateway_available: status.gateway_available,
            gateway: status.current_gateway.clone(),
            node_id: status.node_id,
            is_bootstrap: status.is_bootstrap,
            error,
            peers: view.as_ref().map_or(0, |v| v.cluster.nodes.len()),
            leader_id: view
                .as_ref()
                .and_then(|v| v.cluster.leader.as_ref().map(|l| l.node_id)),
            registry_version: view.as_ref().map(|v| v.cluster.registry_version),
            view_age: view.as_ref().map(|v| v.age()),
            epoch: view.as_ref().and_then(|v| v.epoch.clone()),
        };
        DiscoverySnapshot {
            info,
            view,
            status: Some(status),
        }
    }

    /// True if this node bootstrapped the cluster (and so should start as its leader), learned
    /// from whichever registration told it, the background ones included. Never waits for the
    /// network.
    pub fn is_bootstrap_node(&self) -> bool {
        self.client().is_some_and(|c| c.is_bootstrap())
    }

    /// The peers as last known (empty before the first successful registration). Never waits
    /// for the network.
    pub fn cluster_nodes(&self) -> Vec<Node> {
        self.cluster_view()
            .map(|v| v.cluster.nodes)
            .unwrap_or_default()
    }

    /// The leader as last known. Never waits for the network. It may be this node, and it may
    /// be a suspected node that [`Discovery::cluster_nodes`] does not list (the gateway keeps a
    /// suspected leader until it is reaped or replaced): check `status`.
    pub fn cluster_leader(&self) -> Option<Node> {
        self.cluster_view().and_then(|v| v.cluster.leader)
    }

    /// The whole cached view. Never waits for the network.
    pub fn cluster_view(&self) -> Option<ClusterView> {
        self.client().and_then(|c| c.cluster_view())
    }

    /// The client's status, once initialised. Never waits for the network.
    pub fn status(&self) -> Option<ClientStatus> {
        self.client().map(|c| c.status())
    }

    /// The client under this handle, for everything else (`leave`, `get_stats`, ...).
    pub fn client(&self) -> Option<Arc<GatewayClient>> {
        self.inner().client.clone()
    }

    /// A channel of changes to the cached view (see [`GatewayClient::subscribe`]); it carries
    /// on across re-initialisation. The first message is the current view, if there is one.
    pub fn subscribe(&self) -> Receiver<ClusterChange> {
        let (sender, receiver) = mpsc::channel();
        let client = {
            let mut inner = self.inner();
            inner.subscribers.push(sender.clone());
            inner.client.clone()
        };
        if let Some(client) = client {
            client.add_subscriber(sender, true);
        }
        receiver
    }

    /// Calls `on_change` with every change to the view (see [`Discovery::subscribe`]; the first
    /// call is the current view, if there is one), in order, on a thread of its own
    /// (`gateway-on-change`), so that a slow callback holds up neither the client nor the
    /// node. The thread sleeps until a change, and ends when this handle (and its client) is
    /// dropped or the callback panics. For changes as they happen rather than at heartbeat
    /// pace, build the client with [`crate::client::ClientBuilder::watch`].
    ///
    /// ```no_run
    /// # let discovery = cluster_gateway::client::discovery::Discovery::new();
    /// discovery.on_change(|change| {
    ///     for event in change.events() {
    ///         println!("{event}"); // joined 3 10.0.0.3:5003, suspected 3 ..., back 3 ..., left 3
    ///     }
    /// });
    /// ```
    ///
    /// Dropping the returned [`Subscription`] (or calling [`Subscription::cancel`]) stops the
    /// calls; [`Subscription::detach`] keeps them coming for as long as the handle lives.
    pub fn on_change(
        &self,
        mut on_change: impl FnMut(&ClusterChange) + Send + 'static,
    ) -> Subscription {
        let changes = self.subscribe();
        let subscription = Subscription::new();
        let gate = Arc::clone(&subscription.gate);
        std::thread::Builder::new()
            .name("gateway-on-change".to_owned())
            .spawn(move || {
                loop {
                    let change = match changes.recv_timeout(Duration::from_millis(250)) {
                        Ok(change) => Some(change),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => return,
                    };
                    // The gate is held while the callback runs: `cancel()` waits for it.
                    let cancelled = crate::lock(&gate);
                    if *cancelled {
                        return;
                    }
                    if let Some(change) = change {
                        on_change(&change);
                    }
                    if CANCEL_AFTER_CALL.with(|c| c.replace(false)) {
                        return; // The callback cancelled its own subscription.
                    }
                }
            })
            .expect("spawn the change callback's thread");
        subscription
    }

    /// Calls `on_leader_change` with the leader (or `None`) each time the view names another
    /// one (the first call is the current leader, if there is one), on a thread of its own, as
    /// [`Discovery::on_change`] does. The leader may be carried over a gateway restart
    /// ([`ClusterView::leader_carried`]).
    pub fn on_leader_change(
        &self,
        mut on_leader_change: impl FnMut(Option<&Node>) + Send + 'static,
    ) -> Subscription {
        self.on_change(move |change| {
            if change.leader_changed {
                on_leader_change(change.view.cluster.leader.as_ref());
            }
        })
    }

    /// Waits until the view lists at least `peers` active peers, this node not counted (see
    /// [`GatewayClient::wait_for_peers`]); `NotRegistered` before initialisation.
    pub fn wait_for_peers(
        &self,
        peers: usize,
        timeout: Duration,
    ) -> Result<ClusterView, ClientError> {
        let client = self.client().ok_or(ClientError::NotRegistered)?;
        client.wait_for_peers(peers, timeout)
    }

    /// Where this node stands with the gateway ([`Membership::Joining`] before
    /// initialisation). Never waits for the network.
    pub fn membership(&self) -> Membership {
        self.client()
            .map_or(Membership::Joining, |c| c.membership())
    }

    /// Tells the gateway who leads now (after an election). False if it failed: the gateway
    /// does not know the node, or cannot be reached (both logged). Blocks at most the client's
    /// deadline; readers are not held up meanwhile.
    pub fn update_gateway_leader(&self, leader_id: NodeId) -> bool {
        let Some(client) = self.client() else {
            log::warn!(
                "cannot tell the gateway that node {leader_id} leads: discovery is not initialised"
            );
            return false;
        };
        match client.set_leader(leader_id) {
            Ok(answer) if answer.status == crate::api::SetLeaderStatus::Updated => true,
            Ok(answer) => {
                log::warn!(
                    "the gateway refused node {leader_id} as leader: {}",
                    answer.message.as_deref().unwrap_or("no reason given")
                );
                false
            }
            Err(e) => {
                log::warn!("could not tell the gateway that node {leader_id} leads: {e}");
                false
            }
        }
    }

    /// Changes this node's metadata after joining (merged key by key) and registers again at
    /// once, as a rejoining member: the bootstrap role is kept. Blocks at most the deadline.
    pub fn update_metadata(&self, metadata: Map<String, Value>) -> Result<(), ClientError> {
        let client = self.client().ok_or(ClientError::NotRegistered)?;
        client.update_metadata(metadata).map(|_| ())
    }

    /// [`Discovery::update_metadata`] with a value that serialises to a JSON object (see
    /// [`GatewayClient::update_metadata_typed`]).
    pub fn update_metadata_typed<T: serde::Serialize + ?Sized>(
        &self,
        metadata: &T,
    ) -> Result<(), ClientError> {
        let client = self.client().ok_or(ClientError::NotRegistered)?;
        client.update_metadata_typed(metadata).map(|_| ())
    }

    /// Stops heartbeating and deregisters this node: a graceful departure (see
    /// [`GatewayClient::leave`]).
    pub fn leave(&self) -> Result<(), ClientError> {
        let client = self.client().ok_or(ClientError::NotRegistered)?;
        client.leave()
    }

    /// Stops heartbeating; the registration expires on the gateway by itself. Returns promptly,
    /// even mid-request, and wakes an `initialize*` waiting on another thread.
    pub fn shutdown(&self) {
        if let Some(client) = self.client() {
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

/// A change callback ([`Discovery::on_change`], [`Discovery::on_leader_change`]): dropping it,
/// or [`Subscription::cancel`], stops the calls; [`Subscription::detach`] lets them run for as
/// long as the discovery handle does.
#[derive(Debug)]
#[must_use = "dropping the subscription stops its callback; call .detach() to keep it"]
pub struct Subscription {
    /// True once cancelled; held while the callback runs.
    gate: Arc<Mutex<bool>>,
    detached: bool,
}

impl Subscription {
    fn new() -> Subscription {
        Subscription {
            gate: Arc::new(Mutex::new(false)),
            detached: false,
        }
    }

    /// Stops the calls: none starts after this returns (a call under way on another thread is
    /// waited for; from inside the callback itself, the next call is the one that does not
    /// happen). The callback's thread ends within moments.
    pub fn cancel(self) {
        drop(self);
    }

    /// Keeps the callback running until the discovery handle and its client are dropped.
    pub fn detach(mut self) {
        self.detached = true;
    }

    fn stop(&self) {
        // Inside the callback the gate is held by this very thread: waiting would deadlock,
        // so the thread is told to end after the call instead.
        match self.gate.try_lock() {
            Ok(mut cancelled) => *cancelled = true,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => *poisoned.into_inner() = true,
            Err(std::sync::TryLockError::WouldBlock) => {
                if std::thread::current().name() == Some("gateway-on-change") {
                    CANCEL_AFTER_CALL.with(|c| c.set(true));
                } else {
                    *crate::lock(&self.gate) = true;
                }
            }
        }
    }
}

thread_local! {
    /// Set when a callback cancels its own subscription.
    static CANCEL_AFTER_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
        }
    }
}
