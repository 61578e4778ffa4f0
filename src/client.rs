//! The blocking client a node embeds: typed calls to the gateway, retries with backoff across
//! several gateway addresses, and a heartbeat thread that keeps the node registered.
//!
//! ```no_run
//! use cluster_gateway::api::Registration;
//! use cluster_gateway::client::GatewayClient;
//!
//! let client = GatewayClient::new("localhost", 8080);
//! let (is_bootstrap, cluster) = client.discover_cluster(Registration {
//!     node_id: 1,
//!     ip_address: "127.0.0.1".into(),
//!     port: 5001,
//!     capabilities: vec!["raft".into(), "gossip".into()],
//!     metadata: None,
//!     previous_epoch: None,
//! })?;
//! println!("bootstrap: {is_bootstrap}, peers: {}", cluster.nodes.len());
//! // The heartbeat thread now runs until `shutdown()`, `leave()` or drop.
//! # Ok::<(), cluster_gateway::ClientError>(())
//! ```

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    ErrorBody, Health, HeartbeatResponse, LeaderResponse, Node, NodeId, NodeRef, NodesResponse,
    RegisterResponse, Registration, RemoveResponse, RemoveStatus, SetLeader, SetLeaderResponse,
    SetLeaderStatus, Stats,
};
use crate::error::ClientError;
use crate::heartbeat::Heartbeat;
use crate::lock;

/// Largest answer the client reads (a peer list of 100,000 nodes is about 20 MB).
const MAX_ANSWER_BYTES: u64 = 256 * 1024 * 1024;
/// Longest pause between two tries of one request.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A blocking client for one node. Dropping it stops the heartbeat thread.
#[derive(Debug)]
pub struct GatewayClient {
    shared: Arc<Shared>,
    heartbeat: Mutex<Option<Heartbeat>>,
}

/// Settings for a [`GatewayClient`], with the original client's defaults.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    gateways: Vec<String>,
    timeout: Duration,
    heartbeat_interval: Duration,
    retry_attempts: u32,
    retry_base_delay: Duration,
    proxy_from_env: bool,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            gateways: Vec::new(),
            timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(30),
            retry_attempts: 3,
            retry_base_delay: Duration::from_secs(1),
            proxy_from_env: false,
        }
    }
}

impl ClientBuilder {
    /// Adds a gateway: `host:port`, or an `http://` or `https://` URL. Requests go to the first
    /// that answers; the others are tried in order when it does not.
    pub fn gateway(mut self, address: impl Into<String>) -> ClientBuilder {
        self.gateways.push(address.into());
        self
    }

    /// How long one request may take, connection included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// Time between heartbeats (default 30 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> ClientBuilder {
        self.heartbeat_interval = interval;
        self
    }

    /// Tries per request when gateways cannot be reached (default 3; at least one per address).
    pub fn retry_attempts(mut self, attempts: u32) -> ClientBuilder {
        self.retry_attempts = attempts;
        self
    }

    /// The first backoff's upper bound; it doubles with each round (default 1 s).
    pub fn retry_base_delay(mut self, delay: Duration) -> ClientBuilder {
        self.retry_base_delay = delay;
        self
    }

    /// Use the proxy named by `HTTP_PROXY` and friends (default: ignore them; a gateway is
    /// usually on the local network).
    pub fn proxy_from_env(mut self, yes: bool) -> ClientBuilder {
        self.proxy_from_env = yes;
        self
    }

    /// Checks the addresses and builds the client.
    pub fn build(self) -> Result<GatewayClient, ClientError> {
        if self.gateways.is_empty() {
            return Err(ClientError::InvalidAddress(
                "no gateway address given".to_owned(),
            ));
        }
        let gateways = self
            .gateways
            .iter()
            .map(|a| base_url(a))
            .collect::<Result<Vec<_>, _>>()?;
        let proxy = if self.proxy_from_env {
            ureq::Proxy::try_from_env()
        } else {
            None
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.timeout))
            .timeout_connect(Some(self.timeout.min(Duration::from_secs(5))))
            .proxy(proxy)
            // A fresh connection per request: a pooled one can outlive the gateway process it
            // was made to and hang the next heartbeat until the timeout. At one request per
            // heartbeat interval the extra handshake costs nothing that matters.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent(format!("cluster-gateway-client/{}", crate::VERSION))
            .build()
            .into();
        let transport = Transport {
            agent,
            gateways,
            current: AtomicUsize::new(0),
            attempts: self.retry_attempts.max(1),
            base_delay: self.retry_base_delay,
        };
        Ok(GatewayClient {
            shared: Arc::new(Shared {
                transport,
                heartbeat_interval: self.heartbeat_interval,
                state: Mutex::new(State::default()),
            }),
            heartbeat: Mutex::new(None),
        })
    }
}

/// The cluster as the gateway last described it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterInfo {
    /// Active peers, without this node.
    pub nodes: Vec<Node>,
    /// The leader, if any.
    pub leader: Option<Node>,
    /// The registry version this view reflects.
    pub registry_version: u64,
}

/// The last known view of the cluster, kept fresh by the heartbeat thread; still there while the
/// gateway is down.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// Peers and leader.
    pub cluster: ClusterInfo,
    /// When the gateway last confirmed this view.
    pub updated: Instant,
}

impl ClusterView {
    /// How old the view is.
    pub fn age(&self) -> Duration {
        self.updated.elapsed()
    }
}

/// How the heartbeat is going, for the embedding node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientStatus {
    /// The node this client registered, if any.
    pub node_id: Option<NodeId>,
    /// True while the heartbeat thread runs.
    pub heartbeat_running: bool,
    /// When a heartbeat (or registration) last succeeded.
    pub last_success: Option<SystemTime>,
    /// Heartbeats that failed in a row since the last success.
    pub consecutive_failures: u32,
    /// Why the last heartbeat failed, if it did.
    pub last_error: Option<String>,
    /// The gateway requests go to first.
    pub current_gateway: String,
    /// The `epoch` of the gateway last heard from.
    pub gateway_epoch: Option<String>,
}

impl GatewayClient {
    /// A client for the gateway at `host:port`, with default settings (as the original's
    /// `GatewayClient(host, port)`). A host that cannot form a URL fails at the first call.
    pub fn new(host: &str, port: u16) -> GatewayClient {
        GatewayClient::builder()
            .gateway(crate::api::host_port(host, port))
            .build()
            .unwrap_or_else(|_| {
                // Keep the original's infallible constructor: the error surfaces on use.
                GatewayClient::builder()
                    .gateway("invalid-host:1")
                    .build()
                    .expect("a fixed address is valid")
            })
    }

    /// Settings beyond the defaults: several gateways, timeouts, retries, heartbeat interval.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// `GET /health`.
    pub fn health_check(&self) -> Result<Health, ClientError> {
        self.shared.transport.get("/health")
    }

    /// True if some gateway answers `/health` (one try per address, no backoff).
    pub fn is_gateway_available(&self) -> bool {
        self.shared
            .transport
            .call::<Health>(Method::Get, "/health", None::<&()>, &|_| false)
            .is_ok()
    }

    /// `POST /register`. Remembers the registration and starts the heartbeat thread.
    pub fn register_node(
        &self,
        registration: Registration,
    ) -> Result<RegisterResponse, ClientError> {
        let answer: RegisterResponse = self.shared.transport.post("/register", &registration)?;
        self.shared.registered(registration, &answer);
        self.start_heartbeat();
        Ok(answer)
    }

    /// Remembers `registration` and starts heartbeating without registering now: the first
    /// heartbeat the gateway answers `not_found` registers the node. For a node that starts
    /// while no gateway is reachable.
    pub fn keep_registered(&self, registration: Registration) {
        let mut state = self.shared.state();
        state.status.node_id = Some(registration.node_id);
        state.registration = Some(registration);
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
            answer.is_bootstrap,
            ClusterInfo {
                nodes: answer.nodes,
                leader: answer.leader,
                registry_version: answer.registry_version,
            },
        ))
    }

    /// `GET /nodes`: active nodes, without this one if `exclude_self` and it is registered.
    pub fn get_nodes(&self, exclude_self: bool) -> Result<Vec<Node>, ClientError> {
        let path = match self.node_id().filter(|_| exclude_self) {
            Some(id) => format!("/nodes?node_id={id}"),
            None => "/nodes".to_owned(),
        };
        Ok(self.shared.transport.get::<NodesResponse>(&path)?.nodes)
    }

    /// `GET /nodes`, whole answer: active nodes, and suspected ones too if `include_suspected`.
    pub fn list_nodes(&self, include_suspected: bool) -> Result<NodesResponse, ClientError> {
        let path = if include_suspected {
            "/nodes?status=all"
        } else {
            "/nodes"
        };
        self.shared.transport.get(path)
    }

    /// `GET /leader`.
    pub fn get_leader(&self) -> Result<Option<Node>, ClientError> {
        Ok(self.leader()?.leader)
    }

    /// `GET /leader`, the whole answer.
    pub fn leader(&self) -> Result<LeaderResponse, ClientError> {
        self.shared.transport.get("/leader")
    }

    /// `POST /leader`. False if the gateway does not know `leader_id`.
    pub fn update_leader(&self, leader_id: NodeId) -> Result<bool, ClientError> {
        Ok(self.set_leader(leader_id)?.status == SetLeaderStatus::Updated)
    }

    /// `POST /leader`, the whole answer (`failed` with the gateway's message included).
    pub fn set_leader(&self, leader_id: NodeId) -> Result<SetLeaderResponse, ClientError> {
        self.shared
            .transport
            .post("/leader", &SetLeader { leader_id })
    }

    /// One `POST /heartbeat` for this node, now. The heartbeat thread does this on its own.
    pub fn heartbeat(&self) -> Result<HeartbeatResponse, ClientError> {
        let node_id = self.node_id().ok_or(ClientError::NotRegistered)?;
        self.shared
            .transport
            .post("/heartbeat", &NodeRef { node_id })
    }

    /// `POST /remove`. False if the gateway did not know the node.
    pub fn remove_node(&self, node_id: NodeId) -> Result<bool, ClientError> {
        Ok(self.remove(node_id)?.status == RemoveStatus::Removed)
    }

    /// `POST /remove`, the whole answer.
    pub fn remove(&self, node_id: NodeId) -> Result<RemoveResponse, ClientError> {
        self.shared.transport.post("/remove", &NodeRef { node_id })
    }

    /// `GET /stats`.
    pub fn get_stats(&self) -> Result<Stats, ClientError> {
        self.shared.transport.get("/stats")
    }

    /// The last known cluster view (kept fresh by the heartbeat thread), or `None` before the
    /// first registration.
    pub fn cluster_view(&self) -> Option<ClusterView> {
        self.shared.state().view.clone()
    }

    /// How the heartbeat is going.
    pub fn status(&self) -> ClientStatus {
        let mut status = self.shared.state().status.clone();
        status.heartbeat_running = lock(&self.heartbeat).is_some();
        status.current_gateway = self.shared.transport.current().to_owned();
        status
    }

    /// The registered node's id.
    pub fn node_id(&self) -> Option<NodeId> {
        self.shared.state().registration.as_ref().map(|r| r.node_id)
    }

    /// Stops the heartbeat thread and waits for it. The registration stays on the gateway until
    /// it is reaped (as the original did); see [`GatewayClient::leave`].
    pub fn shutdown(&self) {
        if let Some(heartbeat) = lock(&self.heartbeat).take() {
            heartbeat.stop();
        }
    }

    /// Stops heartbeating and deregisters this node: a graceful departure.
    pub fn leave(&self) -> Result<(), ClientError> {
        self.shutdown();
        let node_id = self.node_id().ok_or(ClientError::NotRegistered)?;
        self.remove_node(node_id)?;
        self.shared.state().registration = None;
        Ok(())
    }

    fn start_heartbeat(&self) {
        let mut heartbeat = lock(&self.heartbeat);
        if heartbeat.is_none() {
            *heartbeat = Some(Heartbeat::start(Arc::clone(&self.shared)));
        }
    }
}

impl Drop for GatewayClient {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What the client and its heartbeat thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) transport: Transport,
    pub(crate) heartbeat_interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) registration: Option<Registration>,
    pub(crate) view: Option<ClusterView>,
    pub(crate) status: ClientStatus,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Records a successful registration: the registration to repeat, and the view it returned.
    pub(crate) fn registered(&self, registration: Registration, answer: &RegisterResponse) {
        let mut state = self.state();
        state.status.node_id = Some(registration.node_id);
        state.registration = Some(registration);
        state.view = Some(ClusterView {
            cluster: ClusterInfo {
                nodes: answer.nodes.clone(),
                leader: answer.leader.clone(),
                registry_version: answer.registry_version,
            },
            updated: Instant::now(),
        });
        state.status.last_success = Some(SystemTime::now());
        state.status.consecutive_failures = 0;
        state.status.last_error = None;
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Method {
    Get,
    Post,
}

/// Sends requests to the gateways in turn, with retries.
#[derive(Debug)]
pub(crate) struct Transport {
    agent: ureq::Agent,
    /// Base URLs, e.g. `http://10.0.0.1:8080`.
    gateways: Vec<String>,
    /// Index of the gateway that answered last: requests start there.
    current: AtomicUsize,
    attempts: u32,
    base_delay: Duration,
}

impl Transport {
    fn current(&self) -> &str {
        &self.gateways[self.current.load(Ordering::Relaxed) % self.gateways.len()]
    }

    pub(crate) fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::Get, path, None::<&()>, &sleep)
    }

    pub(crate) fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        self.call(Method::Post, path, Some(body), &sleep)
    }

    /// Sends one request, trying the gateways in turn from the one that answered last.
    ///
    /// A connection failure or a 5xx moves on to the next address at once; once every address
    /// failed, the next round waits a random time up to `base_delay * 2^round` (full jitter).
    /// `pause` does the waiting and returns false to give up (the heartbeat thread stops that
    /// way). A 4xx is the gateway's answer and is returned at once.
    pub(crate) fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        pause: &dyn Fn(Duration) -> bool,
    ) -> Result<T, ClientError> {
        let count = self.gateways.len();
        let first = self.current.load(Ordering::Relaxed);
        let tries = (self.attempts as usize).max(count);
        let mut last_error = None;
        for attempt in 0..tries {
            if attempt > 0 && attempt % count == 0 {
                let round = (attempt / count - 1) as u32;
                if !pause(backoff(self.base_delay, round)) {
                    break;
                }
            }
            let index = (first + attempt) % count;
            match self.once(&self.gateways[index], method, path, body) {
                Ok(answer) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) if retryable(&e) => {
                    log::debug!("{e}");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| ClientError::Unreachable {
            address: self.current().to_owned(),
            reason: "stopped before the first try".to_owned(),
        }))
    }

    fn once<T: DeserializeOwned>(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let url = format!("{base}{path}");
        let sent = match (method, body) {
            (Method::Get, _) => self.agent.get(&url).call(),
            (Method::Post, Some(body)) => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(&serde_json::to_vec(body).expect("request bodies serialise")[..]),
            (Method::Post, None) => self.agent.post(&url).send_empty(),
        };
        let mut response = sent.map_err(|e| transport_error(base, e))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| transport_error(base, e))?;
        if status >= 400 {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| text.chars().take(200).collect());
            return Err(ClientError::Gateway {
                address: base.to_owned(),
                status,
                message,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::InvalidResponse {
            address: base.to_owned(),
            reason: e.to_string(),
        })
    }
}

fn retryable(error: &ClientError) -> bool {
    error.is_transport() || matches!(error, ClientError::Gateway { status, .. } if *status >= 500)
}

fn transport_error(address: &str, error: ureq::Error) -> ClientError {
    match error {
        ureq::Error::Timeout(_) => ClientError::Timeout {
            address: address.to_owned(),
        },
        ureq::Error::BodyExceedsLimit(limit) => ClientError::InvalidResponse {
            address: address.to_owned(),
            reason: format!("answer larger than {limit} bytes"),
        },
        other => ClientError::Unreachable {
            address: address.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// `host:port` or an http(s) URL, as a base URL without a trailing slash.
fn base_url(address: &str) -> Result<String, ClientError> {
    let address = address.trim();
    let invalid = |why: &str| ClientError::InvalidAddress(format!("{address:?}: {why}"));
    if address.is_empty() {
        return Err(invalid("empty"));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains spaces or control characters"));
    }
    let url = if address.starts_with("http://") || address.starts_with("https://") {
        address.trim_end_matches('/').to_owned()
    } else if address.contains("://") {
        return Err(invalid("only http:// and https:// are supported"));
    } else {
        format!("http://{address}")
    };
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err(invalid("no host"));
    }
    Ok(url)
}

/// A random pause up to `base * 2^round`, capped (full jitter).
pub(crate) fn backoff(base: Duration, round: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << round.min(16)).min(MAX_BACKOFF);
    ceiling.mul_f64(random_unit())
}

/// A random number in [0, 1) without a dependency: std's hasher keys are random per instance.
pub(crate) fn random_unit() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn sleep(duration: Duration) -> bool {
    std::thread::sleep(duration);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_base_urls() {
        assert_eq!(base_url("localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(
            base_url("https://gw.example/").unwrap(),
            "https://gw.example"
        );
        assert!(base_url("").is_err());
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("a b:1").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for round in 0..40 {
            let ceiling = Duration::from_millis(100 << round.min(16)).min(MAX_BACKOFF);
            let pauses: Vec<Duration> = (0..200)
                .map(|_| backoff(Duration::from_millis(100), round))
                .collect();
            assert!(pauses.iter().all(|&d| d <= ceiling), "round {round}");
            // Full jitter spreads pauses over the whole range: with 200 draws, the chance that
            // none is above half the ceiling, or none below it, is 2^-200. A backoff of zero, or
            // one that does not grow with the round, fails here.
            assert!(
                pauses.iter().any(|&d| d > ceiling / 2),
                "round {round}: {pauses:?}"
            );
            assert!(
                pauses.iter().any(|&d| d < ceiling / 2),
                "round {round}: {pauses:?}"
            );
        }
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let samples: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }
}
