//! The blocking client a node embeds: typed calls to the gateway, retries with backoff across
//! several gateway addresses, and a heartbeat thread that keeps the node registered and the
//! cached cluster view fresh.
//!
//! ```no_run
//! use cluster_gateway::api::Registration;
//! use cluster_gateway::client::GatewayClient;
//!
//! let client = GatewayClient::new("localhost", 8080);
//! let registration = Registration::new(1, "127.0.0.1", 5001).capabilities(["raft", "gossip"]);
//! let (is_bootstrap, cluster) = client.discover_cluster(registration)?;
//! println!("bootstrap: {is_bootstrap}, peers: {}", cluster.nodes.len());
//! // The heartbeat thread now runs until `shutdown()`, `leave()` or drop.
//! # Ok::<(), cluster_gateway::ClientError>(())
//! ```
//!
//! Locks are never held across a request: every read of the cached state ([`GatewayClient::status`],
//! [`GatewayClient::cluster_view`], [`GatewayClient::is_bootstrap`], ...) answers at once, whatever
//! the network does. Every blocking call returns within the client's deadline
//! ([`ClientBuilder::deadline`]), retries and pauses included.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::api::{
    Health, HeartbeatResponse, LeaderResponse, Node, NodeId, NodeRef, NodesResponse,
    RegisterResponse, Registration, RemoveResponse, RemoveStatus, SetLeader, SetLeaderResponse,
    SetLeaderStatus, Settings, Stats,
};
use crate::client::error::ClientError;
use crate::client::heartbeat_thread::Heartbeat;
use crate::client::session::Shared;
use crate::client::session::{ClientStatus, Membership};
use crate::client::transport::{Method, Transport, retryable, sleep};
use crate::client::view::{ClusterChange, ClusterInfo, ClusterView};
use crate::client::watch_thread::Watch;
use crate::lock;

mod builder;

pub use builder::ClientBuilder;

/// The deadline of every blocking call unless the builder sets one (or the timeout is longer).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(15);
/// How long `shutdown()` waits for the heartbeat thread before leaving a request in flight to
/// finish in the background.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(200);

/// A blocking client for one node. Dropping it stops the heartbeat thread.
#[derive(Debug)]
pub struct GatewayClient {
    shared: Arc<Shared>,
    heartbeat: Mutex<Option<Heartbeat>>,
    watch: Mutex<Option<Watch>>,
    /// Start the watch thread with the heartbeat thread ([`ClientBuilder::watch`]).
    watch_with_heartbeat: bool,
    watch_wait: Duration,
    fail_fast_wait: Duration,
}

impl GatewayClient {
    /// A client for the gateway at `host:port`, with default settings (as the original's
    /// `GatewayClient(host, port)`). A host that cannot form a URL is logged, and every call
    /// then fails at once with [`ClientError::InvalidAddress`]; see [`GatewayClient::try_new`].
    pub fn new(host: &str, port: u16) -> GatewayClient {
        let builder = GatewayClient::builder().gateway(crate::api::host_port(host, port));
        match Transport::new(builder.transport_config()) {
            Ok(transport) => builder.client(transport),
            Err(e) => {
                log::error!("{e}");
                let transport = Transport::invalid(e, builder.transport_config());
                builder.client(transport)
            }
        }
    }

    /// Like [`GatewayClient::new`], with an error at once for an address that cannot be used.
    pub fn try_new(host: &str, port: u16) -> Result<GatewayClient, ClientError> {
        GatewayClient::builder()
            .gateway(crate::api::host_port(host, port))
            .build()
    }

    /// Settings beyond the defaults: several gateways, timeouts, deadline, retries, heartbeat
    /// interval.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// `GET /health`. Also learns the gateway's liveness settings.
    pub fn health_check(&self) -> Result<Health, ClientError> {
        self.fail_fast()?;
        let health: Health = self
            .shared
            .call(Method::Get, "/health", None::<&()>, &sleep)?;
        self.shared.learn_settings(health.settings);
        Ok(health)
    }

    /// True if some gateway answers `/health` (one try per address, no backoff).
    pub fn is_gateway_available(&self) -> bool {
        self.shared
            .call::<Health>(Method::Get, "/health", None::<&()>, &|_| false)
            .is_ok()
    }

    /// `POST /register`. Remembers the registration and starts the heartbeat thread. After
    /// this client's first successful registration, every later one carries `previous_epoch`
    /// (the node rejoins an existing cluster, so the gateway never makes it bootstrap).
    pub fn register_node(
        &self,
        registration: Registration,
    ) -> Result<RegisterResponse, ClientError> {
        self.fail_fast()?;
        let (life, sent) = {
            let mut state = self.shared.state();
            let life = state.begin_life();
            state.registration = Some(registration.clone());
            (life, state.to_send(registration))
        };
        let answer: RegisterResponse = self
            .shared
            .write(life, "/register", &sent, &[], &sleep)?
            .unconditional(self.shared.transport.current())?;
        self.shared.registered(life, sent, &answer, None, false);
        self.start_heartbeat();
        Ok(answer)
    }

    /// Remembers `registration` and starts the heartbeat thread, which registers the node at
    /// once and keeps trying while no gateway answers. Returns without waiting. For a node
    /// that starts while no gateway is reachable.
    pub fn keep_registered(&self, registration: Registration) {
        if let Some(invalid) = self.shared.transport.invalid_error() {
            self.shared.register_failed(&invalid.clone());
            return;
        }
        let mut state = self.shared.state();
        state.begin_life();
        state.status.node_id = Some(registration.node_id);
        state.registration = Some(registration);
        state.must_register = true;
        drop(state);
        self.start_heartbeat();
    }

    /// Registers and returns whether this node bootstraps the cluster, with the cluster it
    /// joined.
    pub fn discover_cluster(
        &self,
        registration: Registration,
    ) -> Result<(bool, ClusterInfo), ClientError> {
        let answer = self.register_node(registration)?;
        Ok((
            self.is_bootstrap(),
            ClusterInfo {
                nodes: answer.nodes,
                leader: answer.leader,
                registry_version: answer.registry_version,
            },
        ))
    }

    /// Changes this node's metadata: merged key by key into what it registered with (as the
    /// gateway merges it), and registered again as a rejoining member (`previous_epoch`).
    /// Never bootstraps anything.
    ///
    /// Publishing is coalesced: at most one such write is on the wire per client, and calls
    /// made meanwhile wait for the next one, which carries every value merged so far (the last
    /// value of a key wins). Before this node's first registration has landed, nothing is
    /// sent: the metadata is merged into the pending registration (the heartbeat thread's
    /// first registration carries it), and the call waits for that registration within the
    /// deadline, then publishes; if none lands in time it fails with
    /// [`ClientError::NotRegistered`], the metadata still pending. After `leave()` it fails
    /// with [`ClientError::NotRegistered`] and sends nothing, whatever it raced.
    pub fn update_metadata(
        &self,
        metadata: Map<String, Value>,
    ) -> Result<RegisterResponse, ClientError> {
        let deadline = Instant::now() + self.shared.deadline;
        let (life, version) = self.shared.merge_metadata(metadata)?;
        self.wait_until_member(life, deadline)?;
        self.fail_fast()?;
        self.shared.publish_metadata(life, version, deadline)
    }

    /// [`GatewayClient::update_metadata`] with any value that serialises to a JSON object
    /// (a struct deriving [`serde::Serialize`]): its fields become
    /// metadata keys. Anything else is [`ClientError::InvalidSetting`].
    pub fn update_metadata_typed<T: serde::Serialize + ?Sized>(
        &self,
        metadata: &T,
    ) -> Result<RegisterResponse, ClientError> {
        self.update_metadata(metadata_map(metadata)?)
    }

    /// Where this node stands with the gateway (see [`Membership`]). Never waits for the
    /// network.
    pub fn membership(&self) -> Membership {
        self.shared
            .state()
            .membership(self.shared.unanswered_limit())
    }

    /// A channel of membership changes (see [`Membership`]), starting with the current one.
    /// A change that comes from a request left unanswered (a frozen gateway) is sent when
    /// that request ends; [`GatewayClient::membership`] shows it within 2 s.
    pub fn subscribe_membership(&self) -> Receiver<Membership> {
        let (sender, receiver) = mpsc::channel();
        let mut state = self.shared.state();
        let now = state.membership(self.shared.unanswered_limit());
        if sender.send(now).is_ok() {
            state.membership_subscribers.push(sender);
        }
        receiver
    }

    /// Waits until the cached view lists at least `peers` active peers (this node not
    /// counted), and returns that view; [`ClientError::Timeout`] if `timeout` passes first.
    /// Never sends a request: the heartbeat (or watch) thread feeds the view.
    pub fn wait_for_peers(
        &self,
        peers: usize,
        timeout: Duration,
    ) -> Result<ClusterView, ClientError> {
        let until = Instant::now() + timeout;
        let changes = self.subscribe();
        if let Some(view) = self
            .cluster_view()
            .filter(|v| v.cluster.nodes.len() >= peers)
        {
            return Ok(view);
        }
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match changes.recv_timeout(left) {
                Ok(change) if change.view.cluster.nodes.len() >= peers => return Ok(change.view),
                Ok(_) => {}
                Err(_) => {
                    return Err(ClientError::Timeout {
                        address: self.shared.transport.current().to_owned(),
                    });
                }
            }
        }
    }

    /// `GET /nodes`: active nodes, without this one if `exclude_self` and it is registered.
    pub fn get_nodes(&self, exclude_self: bool) -> Result<Vec<Node>, ClientError> {
        self.fail_fast()?;
        let path = match self.node_id().filter(|_| exclude_self) {
            Some(id) => format!("/nodes?node_id={id}"),
            None => "/nodes".to_owned(),
        };
        Ok(self
            .shared
            .call::<NodesResponse>(Method::Get, &path, None::<&()>, &sleep)?
            .nodes)
    }

    /// `GET /nodes`, whole answer: active nodes, and suspected ones too if `include_suspected`.
    pub fn list_nodes(&self, include_suspected: bool) -> Result<NodesResponse, ClientError> {
        self.fail_fast()?;
        let path = if include_suspected {
            "/nodes?status=all"
        } else {
            "/nodes"
        };
        self.shared.call(Method::Get, path, None::<&()>, &sleep)
    }

    /// `GET /leader`.
    pub fn get_leader(&self) -> Result<Option<Node>, ClientError> {
        Ok(self.leader()?.leader)
    }

    /// `GET /leader`, the whole answer.
    pub fn leader(&self) -> Result<LeaderResponse, ClientError> {
        self.fail_fast()?;
        self.shared
            .call(Method::Get, "/leader", None::<&()>, &sleep)
    }

    /// `GET /nodes/{node_id}`: that node's record, active or suspected; `None` if the gateway
    /// does not know it (404). A gateway of this project only: the original has no such route.
    pub fn node(&self, node_id: NodeId) -> Result<Option<Node>, ClientError> {
        self.fail_fast()?;
        let path = format!("/nodes/{node_id}");
        match self.shared.call(Method::Get, &path, None::<&()>, &sleep) {
            Ok(node) => Ok(Some(node)),
            Err(ClientError::Gateway { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /leader`. False if the gateway does not know `leader_id`.
    pub fn update_leader(&self, leader_id: NodeId) -> Result<bool, ClientError> {
        Ok(self.set_leader(leader_id)?.status == SetLeaderStatus::Updated)
    }

    /// `POST /leader`, the whole answer (`failed` with the gateway's message included).
    pub fn set_leader(&self, leader_id: NodeId) -> Result<SetLeaderResponse, ClientError> {
        self.fail_fast()?;
        self.shared.call(
            Method::Post,
            "/leader",
            Some(&SetLeader { leader_id }),
            &sleep,
        )
    }

    /// One `POST /heartbeat` for this node, now. The heartbeat thread does this on its own.
    pub fn heartbeat(&self) -> Result<HeartbeatResponse, ClientError> {
        let node_id = self.node_id().ok_or(ClientError::NotRegistered)?;
        self.fail_fast()?;
        let life = self.shared.state().life;
        self.shared
            .write(life, "/heartbeat", &NodeRef { node_id }, &[], &sleep)?
            .unconditional(self.shared.transport.current())
    }

    /// `POST /remove`. False if the gateway did not know the node.
    pub fn remove_node(&self, node_id: NodeId) -> Result<bool, ClientError> {
        Ok(self.remove(node_id)?.status == RemoveStatus::Removed)
    }

    /// `POST /remove`, the whole answer.
    pub fn remove(&self, node_id: NodeId) -> Result<RemoveResponse, ClientError> {
        self.fail_fast()?;
        self.shared
            .call(Method::Post, "/remove", Some(&NodeRef { node_id }), &sleep)
    }

    /// `GET /stats`.
    pub fn get_stats(&self) -> Result<Stats, ClientError> {
        self.fail_fast()?;
        self.shared.call(Method::Get, "/stats", None::<&()>, &sleep)
    }

    /// The last known cluster view (kept fresh by the heartbeat thread), or `None` before the
    /// first registration. Never waits for the network.
    pub fn cluster_view(&self) -> Option<ClusterView> {
        self.shared.state().view.shown().cloned()
    }

    /// How the heartbeat is going. Never waits for the network.
    pub fn status(&self) -> ClientStatus {
        self.snapshot().0
    }

    /// Status and view, taken together (one consistent moment). Never waits for the network.
    pub fn snapshot(&self) -> (ClientStatus, Option<ClusterView>) {
        let running = lock(&self.heartbeat)
            .as_ref()
            .is_some_and(Heartbeat::is_running);
        let state = self.shared.state();
        let mut status = state.status.clone();
        status.heartbeat_running = running;
        status.current_gateway = self.shared.transport.current().to_owned();
        status.gateway_available = state.available(self.shared.unanswered_limit());
        status.is_bootstrap = state.is_bootstrap;
        status.heartbeat_interval = self.shared.interval(&state);
        status.membership = state.membership(self.shared.unanswered_limit());
        (status, state.view.shown().cloned())
    }

    /// True if this node bootstrapped the cluster (see [`ClientStatus::is_bootstrap`]). Never
    /// waits for the network.
    pub fn is_bootstrap(&self) -> bool {
        self.shared.state().is_bootstrap
    }

    /// The liveness settings the gateway advertised (all `None` until it has, and with the
    /// original gateway).
    pub fn gateway_settings(&self) -> Settings {
        self.shared.state().settings
    }

    /// A channel of changes to the cached view, fed by the view refresh: at the pace of
    /// heartbeats, or as they happen while the watch runs ([`GatewayClient::watch`]). The first
    /// message is the current view, if there is one. Changes queue up until read; drop the
    /// receiver to unsubscribe. The receiver is an iterator; [`ClusterChange::events`] lists
    /// each change fact by fact.
    pub fn subscribe(&self) -> Receiver<ClusterChange> {
        let (sender, receiver) = mpsc::channel();
        self.add_subscriber(sender, true);
        receiver
    }

    /// Sends changes to `sender` too (see [`GatewayClient::subscribe`]), starting with the
    /// current view if `send_current`.
    pub(crate) fn add_subscriber(&self, sender: Sender<ClusterChange>, send_current: bool) {
        let mut state = self.shared.state();
        if let Some(view) = state.view.shown().filter(|_| send_current) {
            let current = ClusterChange {
                view: view.clone(),
                joined: view
                    .cluster
                    .nodes
                    .iter()
                    .chain(&view.suspected)
                    .cloned()
                    .collect(),
                left: Vec::new(),
                updated: Vec::new(),
                suspected: view.suspected.clone(),
                recovered: Vec::new(),
                leader_changed: view.cluster.leader.is_some(),
                bootstrapped: state.is_bootstrap,
                epoch_changed: false,
            };
            if sender.send(current).is_err() {
                return;
            }
        }
        state.subscribers.push(sender);
    }

    /// The registered node's id.
    pub fn node_id(&self) -> Option<NodeId> {
        self.shared.state().registration.as_ref().map(|r| r.node_id)
    }

    /// Stops the heartbeat thread. Returns promptly (within about 200 ms) even while a request
    /// is in flight: that request then ends in the background, within the deadline, and nothing
    /// after it is recorded. Wakes a `Discovery::initialize*` waiting on this client. The
    /// registration stays on the gateway until it is reaped (as the original did); see
    /// [`GatewayClient::leave`].
    pub fn shutdown(&self) {
        let until = Instant::now() + SHUTDOWN_WAIT;
        // The waiter first: an `initialize*` returns at once, not after the thread's wait.
        self.shared.state().stopped = true;
        self.shared.changed.notify_all();
        let watch = self.signal_watch();
        self.stop_heartbeat(SHUTDOWN_WAIT);
        if let Some(watch) = watch {
            watch.wait(until);
        }
    }

    /// Starts the watch thread now, if it is not running: it keeps the cached view
    /// ([`GatewayClient::cluster_view`]) current within moments of a change, and tells
    /// subscribers as it happens: joins, departures, suspicions, recoveries, a new leader.
    /// No registration is needed (an operator tool can watch); once this client registers a
    /// node, that node is left out of the view. [`ClientBuilder::watch`] starts it with the
    /// heartbeat instead.
    ///
    /// It asks the gateway for an event stream of the changes after the last index it saw
    /// (`GET /nodes?status=all&changes=1&stream=1`), so an idle watch costs one open
    /// connection; against a gateway without streams it long-polls instead, one request parked
    /// on the gateway per wait ([`ClientBuilder::watch_wait`]). After a gateway restart it
    /// starts over from the new run's index (the view carries peers over as usual). While no
    /// gateway answers it backs off as the client's retries do (at most a heartbeat interval
    /// apart), moving through the configured gateways; against a gateway that does not
    /// long-poll (the original) it reads once per heartbeat interval.
    /// [`GatewayClient::shutdown`], `leave()` and drop stop it without waiting for the gateway:
    /// they shut the stream's (or the parked request's) connection down.
    pub fn watch(&self) {
        let mut watch = lock(&self.watch);
        if watch.as_ref().is_some_and(Watch::is_running) {
            return;
        }
        *watch = Some(Watch::start(Arc::clone(&self.shared), self.watch_wait));
    }

    /// True while the watch thread runs.
    pub fn is_watching(&self) -> bool {
        lock(&self.watch).as_ref().is_some_and(Watch::is_running)
    }

    /// Stops heartbeating and deregisters this node: a graceful departure, and a final one.
    ///
    /// From the moment it begins, no thread of this client registers, heartbeats or publishes
    /// metadata for this membership again, whatever raced it: every such write checks under
    /// the client's lock whether `leave()` has begun, and `leave()` waits (within the
    /// deadline) for the writes already on the wire before it removes the node. Afterwards
    /// the client is no longer a member: `status().node_id` is `None`,
    /// [`GatewayClient::membership`] is [`Membership::Left`], and a later `register_node` is a
    /// first registration (a new membership).
    ///
    /// When no gateway confirms the removal (it is down or frozen, or a write was still on the
    /// wire at the deadline or ended without an answer, which the gateway may still take
    /// later), the error says so and a thread (`gateway-leave`) goes on removing
    /// the node in the background until a gateway confirms it twice, a second apart (a
    /// registration a frozen gateway still held may land when it resumes), for at most five
    /// minutes. When the client already knows no gateway answers, it returns
    /// [`ClientError::GatewayUnavailable`] at once and leaves the removal to that thread.
    pub fn leave(&self) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.shared.deadline;
        let limit = self.shared.unanswered_limit();
        let (node_id, known_down, life, unanswered) = {
            let mut state = self.shared.state();
            state.leaving = true;
            state.stopped = true;
            let node_id = state.registration.as_ref().map(|r| r.node_id);
            state.publish_membership(limit);
            let known_down = state.known_down(limit);
            (node_id, known_down, state.life, state.writes_unanswered)
        };
        self.shared.changed.notify_all();
        let watch = self.signal_watch();
        self.stop_heartbeat(SHUTDOWN_WAIT);
        if let Some(watch) = watch {
            watch.wait(Instant::now() + SHUTDOWN_WAIT);
        }
        let node_id = node_id.ok_or(ClientError::NotRegistered)?;
        // Settled: no write of this membership can land after the removal. A write that ended
        // unanswered meanwhile may still be taken by the gateway later (one that was frozen
        // resumes), after the removal: then only the background removal makes it final.
        let settled = !known_down
            && self.shared.wait_for_writes(deadline)
            && self.shared.state().writes_unanswered == unanswered;
        {
            let mut state = self.shared.state();
            state.registration = None;
            state.must_register = false;
            state.member_of = None;
            state.is_bootstrap = false;
            state.status.node_id = None;
            state.registered_at = None;
        }
        let result = if known_down {
            Err(self.unavailable())
        } else {
            self.shared.call::<RemoveResponse>(
                Method::Post,
                "/remove",
                Some(&NodeRef { node_id }),
                &sleep,
            )
        };
        match result {
            Ok(_) if settled && self.shared.state().writes == 0 => Ok(()),
            Ok(_) => {
                remove_in_background(Arc::clone(&self.shared), node_id, life);
                Err(ClientError::Timeout {
                    address: self.shared.transport.current().to_owned(),
                })
            }
            Err(e) if !retryable(&e) => Err(e),
            Err(e) => {
                log::warn!(
                    "node {node_id} left, but no gateway confirmed its removal: retrying in the background ({e})"
                );
                remove_in_background(Arc::clone(&self.shared), node_id, life);
                Err(e)
            }
        }
    }

    /// Registers `registration` from the heartbeat thread, at once and then in the background
    /// until it succeeds. Returns the count of registration outcomes to wait past.
    pub(crate) fn register_in_background(&self, registration: Registration) -> u64 {
        let outcomes = self.shared.state().outcomes;
        self.keep_registered(registration);
        outcomes
    }

    /// Waits until a registration ended (after `outcomes` of them), the client is shut down, or
    /// `deadline` passes, whichever comes first.
    pub(crate) fn wait_for_registration(&self, outcomes: u64, deadline: Instant) {
        let mut state = self.shared.state();
        while state.outcomes == outcomes && !state.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Takes over what `old` knew of this node's membership: the epoch it registered with (so
    /// the next registration says it rejoins), its bootstrap role, the view and settings.
    pub(crate) fn adopt(&self, old: &GatewayClient, node_id: NodeId) {
        let old = old.shared.state();
        if old.registration.as_ref().map(|r| r.node_id) != Some(node_id) {
            return;
        }
        let mut state = self.shared.state();
        state.member_of = old.member_of.clone();
        state.is_bootstrap = old.is_bootstrap;
        state.view = old.view.clone();
        state.settings = old.settings;
        state.status.gateway_epoch = old.status.gateway_epoch.clone();
    }

    /// The client's deadline for one blocking call.
    pub(crate) fn deadline(&self) -> Duration {
        self.shared.deadline
    }

    /// Fails with [`ClientError::GatewayUnavailable`] if the heartbeat thread runs and the
    /// client knows that no gateway answers, after waiting up to the builder's
    /// `fail_fast_wait` for one to answer again.
    fn fail_fast(&self) -> Result<(), ClientError> {
        if !lock(&self.heartbeat)
            .as_ref()
            .is_some_and(Heartbeat::is_running)
        {
            return Ok(()); // Nothing else probes the gateway: this call must.
        }
        let limit = self.shared.unanswered_limit();
        let until = Instant::now() + self.fail_fast_wait;
        let mut state = self.shared.state();
        loop {
            if !state.known_down(limit) {
                return Ok(());
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                return Err(self.unavailable());
            }
            // Polled too: a request going unanswered is noticed by no one.
            state = match self
                .shared
                .changed
                .wait_timeout(state, left.min(Duration::from_millis(50)))
            {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn unavailable(&self) -> ClientError {
        let reason = self
            .shared
            .state()
            .status
            .last_error
            .clone()
            .unwrap_or_else(|| "a request has gone unanswered".to_owned());
        ClientError::GatewayUnavailable {
            address: self.shared.transport.current().to_owned(),
            reason,
        }
    }

    /// Waits until this node is a member (its first registration landed) in membership
    /// `life`; `NotRegistered` if that does not happen by `deadline`, or the membership ends.
    fn wait_until_member(&self, life: u64, deadline: Instant) -> Result<(), ClientError> {
        let mut state = self.shared.state();
        loop {
            if state.leaving || state.life != life {
                return Err(ClientError::NotRegistered);
            }
            if state.member_of.is_some() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || state.stopped {
                return Err(ClientError::NotRegistered);
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn start_heartbeat(&self) {
        let mut heartbeat = lock(&self.heartbeat);
        if heartbeat.as_ref().is_some_and(Heartbeat::is_running) {
            return;
        }
        let life = {
            let mut state = self.shared.state();
            if state.leaving {
                return; // `leave()` began: nothing of this membership starts again.
            }
            state.stopped = false;
            state.life
        };
        *heartbeat = Some(Heartbeat::start(Arc::clone(&self.shared), life));
        drop(heartbeat);
        if self.watch_with_heartbeat {
            self.watch();
        }
    }

    /// Tells the watch thread to stop, if it runs.
    fn signal_watch(&self) -> Option<crate::client::watch_thread::Stopping> {
        // Taken out of the lock first: `is_watching()` must not wait while it ends.
        let watch = lock(&self.watch).take();
        watch.map(Watch::signal)
    }

    fn stop_heartbeat(&self, wait: Duration) {
        // Taken out of the lock first: `status()` must not wait while the thread is joined.
        let heartbeat = lock(&self.heartbeat).take();
        if let Some(heartbeat) = heartbeat {
            heartbeat.stop(wait);
        }
    }
}

/// `metadata` as a metadata map: it must serialise to a JSON object.
pub(crate) fn metadata_map<T: serde::Serialize + ?Sized>(
    metadata: &T,
) -> Result<Map<String, Value>, ClientError> {
    match serde_json::to_value(metadata) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ClientError::InvalidSetting(format!(
            "metadata must serialise to a JSON object, not {other}"
        ))),
        Err(e) => Err(ClientError::InvalidSetting(format!(
            "metadata cannot be serialised: {e}"
        ))),
    }
}

/// How long `leave()`'s removal is retried in the background at most.
const LEAVE_RETRY_FOR: Duration = Duration::from_secs(300);

/// Removes `node_id` until a gateway has confirmed it twice, a second apart, after every write
/// of membership `life` has ended; gives up after [`LEAVE_RETRY_FOR`], or when a new
/// membership starts (the node registers again on purpose).
fn remove_in_background(shared: Arc<Shared>, node_id: NodeId, life: u64) {
    let spawned = std::thread::Builder::new()
        .name("gateway-leave".to_owned())
        .spawn(move || {
            let until = Instant::now() + LEAVE_RETRY_FOR;
            let mut confirmed = 0;
            let mut round = 0;
            while Instant::now() < until {
                {
                    let state = shared.state();
                    if state.life != life || !state.leaving {
                        return;
                    }
                }
                if !shared.wait_for_writes(Instant::now() + Duration::from_secs(1)) {
                    continue;
                }
                let answer = shared.call::<RemoveResponse>(
                    Method::Post,
                    "/remove",
                    Some(&NodeRef { node_id }),
                    &|_| false,
                );
                let pause = match answer {
                    Ok(_) => {
                        confirmed += 1;
                        if confirmed >= 2 {
                            log::info!("node {node_id}: the gateway confirmed its departure");
                            return;
                        }
                        round = 0;
                        Duration::from_secs(1)
                    }
                    Err(e) if !retryable(&e) => {
                        log::warn!("node {node_id}: the gateway refused its removal: {e}");
                        return;
                    }
                    Err(_) => {
                        round += 1;
                        crate::client::transport::backoff(Duration::from_millis(200), round)
                            .min(Duration::from_secs(5))
                    }
                };
                std::thread::sleep(pause);
            }
            log::warn!("node {node_id}: no gateway confirmed its departure within 5 minutes");
        });
    if let Err(e) = spawned {
        log::warn!("node {node_id}: cannot retry its removal in the background: {e}");
    }
}

impl Drop for GatewayClient {
    fn drop(&mut self) {
        self.shutdown();
    }
}
