//! What a [`GatewayClient`](crate::GatewayClient) and its heartbeat thread share: the cached
//! state behind one lock that is held briefly and never across a request (registration,
//! membership epoch, bootstrap role, advertised settings, view, status, subscribers), calls
//! through the transport recorded in the status, and the condvar `initialize*` waits on.

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{Node, NodeId, RegisterResponse, Registration, Settings};
use crate::client::error::ClientError;
use crate::client::transport::{Method, Reply, Transport, retryable};
use crate::client::view::ViewState;
use crate::client::view::{ClusterChange, ClusterInfo};
use crate::lock;

/// The heartbeat interval until the gateway advertises its own (the original's 30 s).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// How the heartbeat is going, for the embedding node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientStatus {
    /// The node this client registered, if any (`None` again after `leave()`).
    pub node_id: Option<NodeId>,
    /// True while the heartbeat thread runs.
    pub heartbeat_running: bool,
    /// When an exchange with a gateway last succeeded.
    pub last_success: Option<SystemTime>,
    /// Exchanges that failed in a row since the last success.
    pub consecutive_failures: u32,
    /// Why the last exchange failed, if it did.
    pub last_error: Option<String>,
    /// The gateway requests go to first.
    pub current_gateway: String,
    /// The `epoch` of the gateway last heard from.
    pub gateway_epoch: Option<String>,
    /// True if the last exchange succeeded and no request has waited for an answer longer than
    /// 2 s (or the request timeout, if shorter): a frozen gateway shows here within seconds,
    /// not once a request times out.
    pub gateway_available: bool,
    /// True if this node bootstrapped the cluster, learned from any registration, the heartbeat
    /// thread's included. It stays true across re-registrations (which the gateway answers
    /// with `false`, since the cluster exists) until `leave()`.
    pub is_bootstrap: bool,
    /// The heartbeat interval in use: pinned, or the gateway's.
    pub heartbeat_interval: Duration,
}

/// Longest a request may stay unanswered before the gateway counts as unavailable (or the
/// request timeout, if shorter). A gateway answers in milliseconds; this only affects what
/// `gateway_available` reports, never a request.
const UNANSWERED_LIMIT: Duration = Duration::from_secs(2);
/// Bounds on an advertised heartbeat interval, against a gateway that says something absurd.
const ADVERTISED_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(10), Duration::from_secs(3600));
/// Sent as `previous_epoch` by a node that registered with a gateway that gave no epoch (the
/// original): it is still a member of an existing cluster.
const UNKNOWN_EPOCH: &str = "unknown";

/// What the client and its heartbeat thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) transport: Transport,
    pub(crate) pinned_interval: Option<Duration>,
    pub(crate) deadline: Duration,
    pub(crate) state: Mutex<State>,
    /// Signalled when a registration ends or the client shuts down.
    pub(crate) changed: Condvar,
}

/// Everything cached; locked briefly, never across a request.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// What to register (without `previous_epoch`, which is added when sent).
    pub(crate) registration: Option<Registration>,
    /// True until the heartbeat thread has registered `registration`.
    pub(crate) must_register: bool,
    pub(crate) view: ViewState,
    pub(crate) status: ClientStatus,
    pub(crate) is_bootstrap: bool,
    /// The epoch of the gateway this node last registered with; `Some` once it is a member.
    pub(crate) member_of: Option<String>,
    pub(crate) settings: Settings,
    /// The `ETag`s of the last `/nodes` and `/leader` answers the view was built from.
    pub(crate) view_tags: (Option<String>, Option<String>),
    pub(crate) subscribers: Vec<Sender<ClusterChange>>,
    /// Registrations that ended, in success or failure.
    pub(crate) outcomes: u64,
    pub(crate) stopped: bool,
    /// Requests waiting for an answer, by call number, with their start.
    pub(crate) pending: BTreeMap<u64, Instant>,
    pub(crate) calls: u64,
}

impl State {
    /// `registration` as it is sent: with `previous_epoch` once this node is a member.
    pub(crate) fn to_send(&self, mut registration: Registration) -> Registration {
        if let Some(epoch) = &self.member_of {
            registration.previous_epoch = Some(epoch.clone());
        }
        registration
    }

    /// Exchanges that failed in a row.
    pub(crate) fn status_failures(&self) -> u32 {
        self.status.consecutive_failures
    }

    pub(crate) fn available(&self, unanswered_limit: Duration) -> bool {
        self.status.last_success.is_some()
            && self.status.last_error.is_none()
            && self
                .pending
                .values()
                .min()
                .is_none_or(|since| since.elapsed() < unanswered_limit)
    }

    fn publish(&mut self, change: Option<ClusterChange>) {
        if let Some(change) = change {
            self.subscribers
                .retain(|subscriber| subscriber.send(change.clone()).is_ok());
        }
    }
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The heartbeat interval in use: pinned, else the gateway's, else the default.
    pub(crate) fn interval(&self, state: &State) -> Duration {
        self.pinned_interval.unwrap_or_else(|| {
            state
                .settings
                .heartbeat_interval
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .map_or(DEFAULT_HEARTBEAT_INTERVAL, |d| {
                    d.clamp(ADVERTISED_INTERVAL.0, ADVERTISED_INTERVAL.1)
                })
        })
    }

    pub(crate) fn unanswered_limit(&self) -> Duration {
        UNANSWERED_LIMIT.min(self.transport.timeout())
    }

    /// How long peers are carried over a gateway restart: the gateway's `suspect_after`, else
    /// three heartbeats.
    fn carry_for(&self, state: &State) -> Duration {
        state
            .settings
            .suspect_after
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .unwrap_or_else(|| self.interval(state) * 3)
    }

    /// One call through the transport within the deadline, recorded in the status.
    pub(crate) fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        pause: &dyn Fn(Duration) -> bool,
    ) -> Result<T, ClientError> {
        self.call_with(method, path, body, &[], pause)?
            .unconditional(self.transport.current())
    }

    /// [`Shared::call`] with extra request headers; no value for a `304 Not Modified`.
    pub(crate) fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        headers: &[(&str, &str)],
        pause: &dyn Fn(Duration) -> bool,
    ) -> Result<Reply<T>, ClientError> {
        self.exchange(method, path, body, headers, pause, None)
    }

    /// A `GET` the gateway may hold for up to `wait` (a long-poll), within the deadline plus
    /// `wait`. It is recorded in the status like any call, but not as a request waiting for an
    /// answer: a parked long-poll says nothing about the gateway's health.
    pub(crate) fn call_held<T: DeserializeOwned>(
        &self,
        path: &str,
        pause: &dyn Fn(Duration) -> bool,
        wait: Duration,
    ) -> Result<Reply<T>, ClientError> {
        self.exchange(Method::Get, path, None::<&()>, &[], pause, Some(wait))
    }

    fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        headers: &[(&str, &str)],
        pause: &dyn Fn(Duration) -> bool,
        held: Option<Duration>,
    ) -> Result<Reply<T>, ClientError> {
        let started = Instant::now();
        let id = {
            let mut state = self.state();
            state.calls += 1;
            let id = state.calls;
            if held.is_none() {
                state.pending.insert(id, started);
            }
            id
        };
        let held = held.unwrap_or_default();
        let result = self.transport.call_with(
            method,
            path,
            body,
            headers,
            pause,
            started + self.deadline + held,
            held,
        );
        let mut state = self.state();
        state.pending.remove(&id);
        match &result {
            Ok(_) => {
                state.status.last_success = Some(SystemTime::now());
                state.status.consecutive_failures = 0;
                state.status.last_error = None;
            }
            Err(e)
                if retryable(e)
                    || matches!(
                        e,
                        ClientError::InvalidResponse { .. } | ClientError::InvalidAddress(_)
                    ) =>
            {
                state.status.consecutive_failures += 1;
                state.status.last_error = Some(e.to_string());
            }
            // A 4xx is the gateway's answer: it is there.
            Err(_) => {}
        }
        result
    }

    /// The registration the heartbeat thread should send, if it should.
    pub(crate) fn registration_to_send(&self) -> Option<Registration> {
        let state = self.state();
        let registration = state.registration.clone()?;
        Some(state.to_send(registration))
    }

    /// The registered node's id.
    pub(crate) fn node_id(&self) -> Option<NodeId> {
        self.state().registration.as_ref().map(|r| r.node_id)
    }

    /// Records a successful registration: what to repeat, the membership, the bootstrap role,
    /// the gateway's settings and the view it returned (with the suspected peers, when they
    /// were read too). `forgotten`: the gateway had forgotten this node (it restarted or
    /// reaped it).
    pub(crate) fn registered(
        &self,
        mut sent: Registration,
        answer: &RegisterResponse,
        suspected: Option<Vec<Node>>,
        forgotten: bool,
    ) {
        let mut state = self.state();
        let was_bootstrap = state.is_bootstrap;
        state.is_bootstrap |= answer.is_bootstrap;
        if answer.is_bootstrap && !was_bootstrap {
            log::info!("node {} bootstrapped the cluster", sent.node_id);
        }
        state.member_of = Some(
            answer
                .epoch
                .clone()
                .unwrap_or_else(|| UNKNOWN_EPOCH.to_owned()),
        );
        if answer.epoch.is_some() {
            state.status.gateway_epoch = answer.epoch.clone();
        }
        if answer.settings != Settings::default() {
            state.settings = answer.settings;
        }
        state.status.node_id = Some(sent.node_id);
        sent.previous_epoch = None;
        state.registration = Some(sent);
        state.must_register = false;
        state.outcomes += 1;
        let carry_for = self.carry_for(&state);
        let mut change = state.view.update(
            ClusterInfo {
                nodes: answer.nodes.clone(),
                leader: answer.leader.clone(),
                registry_version: answer.registry_version,
            },
            suspected,
            answer.epoch.clone(),
            forgotten,
            carry_for,
            Instant::now(),
        );
        if answer.is_bootstrap && !was_bootstrap {
            let view = state.view.shown().cloned().expect("a view was just set");
            change
                .get_or_insert_with(|| ClusterChange {
                    view,
                    joined: Vec::new(),
                    left: Vec::new(),
                    updated: Vec::new(),
                    suspected: Vec::new(),
                    recovered: Vec::new(),
                    leader_changed: false,
                    bootstrapped: false,
                    epoch_changed: false,
                })
                .bootstrapped = true;
        }
        state.publish(change);
        drop(state);
        self.changed.notify_all();
    }

    /// Records a registration that failed.
    pub(crate) fn register_failed(&self, error: &ClientError) {
        let mut state = self.state();
        state.outcomes += 1;
        state.status.last_error = Some(error.to_string());
        drop(state);
        self.changed.notify_all();
    }

    /// Records a fresh view from the gateway: active peers and leader in `cluster`, suspected
    /// peers if the answer listed them.
    pub(crate) fn update_view(
        &self,
        cluster: ClusterInfo,
        suspected: Option<Vec<Node>>,
        epoch: Option<String>,
    ) {
        let mut state = self.state();
        let carry_for = self.carry_for(&state);
        if epoch.is_some() {
            state.status.gateway_epoch = epoch.clone();
        }
        let change = state
            .view
            .update(cluster, suspected, epoch, false, carry_for, Instant::now());
        state.publish(change);
    }

    /// The gateway confirmed the view (a heartbeat whose `(epoch, registry_version)` matched).
    pub(crate) fn confirm_view(&self) {
        let mut state = self.state();
        let change = state.view.confirm(Instant::now());
        state.publish(change);
    }

    /// True if `(epoch, version)` is not the key of the view the gateway last gave.
    pub(crate) fn view_is_stale(&self, epoch: Option<&str>, version: Option<u64>) -> bool {
        let state = self.state();
        match (state.view.fresh_key(), version) {
            (Some((known_epoch, known_version)), Some(version)) => {
                known_epoch != epoch || known_version != version
            }
            (None, _) => true,
            (Some((known_epoch, _)), None) => known_epoch != epoch,
        }
    }

    /// Learns liveness settings from an answer that carried them.
    pub(crate) fn learn_settings(&self, settings: Settings) {
        if settings != Settings::default() {
            self.state().settings = settings;
        }
    }

    /// The heartbeat interval in use.
    pub(crate) fn current_interval(&self) -> Duration {
        let state = self.state();
        self.interval(&state)
    }
}
