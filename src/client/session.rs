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
use crate::client::transport::{Method, Opened, Reply, Transport, WatchAgent, retryable};
use crate::client::view::{ClusterChange, ClusterInfo};
use crate::client::view::{NotPatched, Patch, ViewState};
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
    /// Whether this node is a member now: joining, registered, cut off from the gateway, or
    /// gone for good ([`GatewayClient::leave`](crate::GatewayClient::leave)).
    pub membership: Membership,
}

/// Where this node stands with the gateway: the one answer to "am I registered?".
/// [`GatewayClient::membership`](crate::GatewayClient::membership) polls it;
/// [`GatewayClient::subscribe_membership`](crate::GatewayClient::subscribe_membership) sends
/// every change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Membership {
    /// No registration has landed yet (or the gateway forgot this node and it registers again).
    #[default]
    Joining,
    /// The gateway of run `epoch` took this node's registration at `since`, and answers.
    Registered {
        /// The gateway run the node registered with (`None` from the original gateway).
        epoch: Option<String>,
        /// When that registration landed.
        since: SystemTime,
    },
    /// The node registered, but no gateway has answered since `since` (a failed exchange, or
    /// a request unanswered for 2 s). Heartbeats go on; calls fail fast meanwhile.
    GatewayLost {
        /// When the first exchange failed (or now, for a request still unanswered).
        since: SystemTime,
    },
    /// `leave()` was called: this client registers, heartbeats and publishes nothing again
    /// (until a new `register_node` or `keep_registered` starts a new membership).
    Left,
}

/// Longest a request may stay unanswered before the gateway counts as unavailable (or the
/// request timeout, if shorter). A gateway answers in milliseconds; this only affects what
/// `gateway_available` reports, never a request.
const UNANSWERED_LIMIT: Duration = Duration::from_secs(2);
/// Bounds on an advertised heartbeat interval: outside them the gateway's value is refused
/// (with a warning) and the client keeps its own, against a gateway that says something absurd.
pub(crate) const ADVERTISED_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(24 * 3600));
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
    /// Requests waiting for an answer, by call number, with the start of their current try
    /// (a retry pause is not waiting for an answer).
    pub(crate) pending: BTreeMap<u64, Instant>,
    pub(crate) calls: u64,
    /// The membership this state belongs to: `leave()` ends it, `register_node` and
    /// `keep_registered` after a `leave()` start the next one. A write carries the membership
    /// it was made for and is refused once that one has ended.
    pub(crate) life: u64,
    /// True once `leave()` has ended `life`: no write for it goes out again.
    pub(crate) leaving: bool,
    /// Writes (registrations, heartbeats, metadata) on the wire; `leave()` waits for them.
    pub(crate) writes: u32,
    /// Writes that ended without an answer (timed out, connection lost): the gateway may
    /// still take them later (a frozen gateway resumes), so `leave()` cannot count on its
    /// removal coming after them.
    pub(crate) writes_unanswered: u64,
    /// When an exchange last failed for want of a gateway, until one succeeds.
    pub(crate) lost_since: Option<SystemTime>,
    /// When the current registration landed, with the run it landed in.
    pub(crate) registered_at: Option<(Option<String>, SystemTime)>,
    pub(crate) membership_subscribers: Vec<Sender<Membership>>,
    /// The membership last sent to subscribers.
    pub(crate) membership_sent: Membership,
    /// Metadata merges so far; the merge a publish carried; whether one is on the wire; the
    /// outcome of the last, for the calls it carried.
    pub(crate) metadata_version: u64,
    pub(crate) metadata_published: u64,
    pub(crate) publishing: bool,
    pub(crate) last_publish: Option<Result<RegisterResponse, ClientError>>,
}

impl State {
    /// `registration` as it is sent: with `previous_epoch` once this node is a member.
    pub(crate) fn to_send(&self, mut registration: Registration) -> Registration {
        if let Some(epoch) = &self.member_of {
            registration.previous_epoch = Some(epoch.clone());
        }
        registration
    }

    /// Starts a new membership if `leave()` ended the last one; the current one otherwise.
    pub(crate) fn begin_life(&mut self) -> u64 {
        if self.leaving {
            self.leaving = false;
            self.life += 1;
            self.membership_sent = Membership::Joining;
        }
        self.life
    }

    /// Exchanges that failed in a row.
    pub(crate) fn status_failures(&self) -> u32 {
        self.status.consecutive_failures
    }

    pub(crate) fn available(&self, unanswered_limit: Duration) -> bool {
        self.status.last_success.is_some()
            && self.lost_since.is_none()
            && !self.unanswered(unanswered_limit)
    }

    /// True if a request has waited longer than `limit` for an answer (its current try).
    fn unanswered(&self, limit: Duration) -> bool {
        self.pending
            .values()
            .min()
            .is_some_and(|since| since.elapsed() >= limit)
    }

    /// True if the client knows that no gateway answers: an exchange failed for want of one,
    /// or a request has gone unanswered past `limit`, since the last success.
    pub(crate) fn known_down(&self, limit: Duration) -> bool {
        self.lost_since.is_some() || (self.status.last_success.is_some() && self.unanswered(limit))
    }

    /// The membership as it stands.
    pub(crate) fn membership(&self, limit: Duration) -> Membership {
        if self.leaving {
            return Membership::Left;
        }
        match &self.registered_at {
            None => Membership::Joining,
            Some(_) if self.known_down(limit) => Membership::GatewayLost {
                since: self.lost_since.unwrap_or_else(SystemTime::now),
            },
            Some((epoch, since)) => Membership::Registered {
                epoch: epoch.clone(),
                since: *since,
            },
        }
    }

    /// Tells membership subscribers if it changed.
    pub(crate) fn publish_membership(&mut self, limit: Duration) {
        let now = self.membership(limit);
        if now != self.membership_sent {
            self.membership_sent = now.clone();
            self.membership_subscribers
                .retain(|subscriber| subscriber.send(now.clone()).is_ok());
        }
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
                .filter(|d| sane_interval(*d))
                .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL)
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
        self.exchange(method, path, body, headers, pause)
    }

    /// A `GET` the gateway may hold for up to `wait` (a long-poll), on the watch's `agent`,
    /// within the deadline plus `wait`. It is recorded in the status like any call, but not as
    /// a request waiting for an answer: a parked long-poll says nothing about the gateway's
    /// health. A failure once `pause` says stop (the watch's agent shut down under it) is not
    /// recorded.
    pub(crate) fn call_held<T: DeserializeOwned>(
        &self,
        agent: &WatchAgent,
        path: &str,
        pause: &dyn Fn(Duration) -> bool,
        wait: Duration,
    ) -> Result<Reply<T>, ClientError> {
        self.recorded(pause, wait, true, |pause, deadline| {
            self.transport.call_with(
                Method::Get,
                path,
                None::<&()>,
                &[],
                pause,
                deadline,
                Some((agent, wait)),
            )
        })
    }

    /// Opens an event stream (`GET path`, see [`Transport::open_stream`]) on the watch's
    /// `agent`, or reads the answer that is not one. Recorded in the status like any call, and
    /// as a request waiting for an answer until the answer's head comes (a gateway sends it at
    /// once); the stream read after is not a request waiting. A failure once `pause` says stop
    /// is not recorded.
    pub(crate) fn open_stream<T: DeserializeOwned>(
        &self,
        agent: &WatchAgent,
        path: &str,
        pause: &dyn Fn(Duration) -> bool,
        silence: Duration,
    ) -> Result<Opened<T>, ClientError> {
        self.recorded(pause, Duration::ZERO, true, |pause, deadline| {
            self.transport
                .open_stream(agent, path, pause, deadline, silence)
        })
    }

    fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        headers: &[(&str, &str)],
        pause: &dyn Fn(Duration) -> bool,
    ) -> Result<Reply<T>, ClientError> {
        self.recorded(pause, Duration::ZERO, false, |pause, deadline| {
            self.transport
                .call_with(method, path, body, headers, pause, deadline, None)
        })
    }

    /// Runs `send` (a call through the transport, given the pause between its tries and its
    /// deadline) and records how it went in the status. `held` is how long the gateway may
    /// hold the request on purpose: such a request is not one waiting for an answer. A
    /// failure of a `watch` call once `pause` says stop (the watch's agent was shut down under
    /// it) is not recorded.
    fn recorded<R>(
        &self,
        pause: &dyn Fn(Duration) -> bool,
        held: Duration,
        watch: bool,
        send: impl FnOnce(&dyn Fn(Duration) -> bool, Instant) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        let started = Instant::now();
        let id = {
            let mut state = self.state();
            state.calls += 1;
            let id = state.calls;
            if held.is_zero() {
                state.pending.insert(id, started);
            }
            id
        };
        let is_held = !held.is_zero();
        // A retry pause is not a request waiting for an answer: the entry leaves `pending` for
        // the pause and comes back with the next try, so a gateway that just came back is not
        // reported away because of a call still in its pause.
        let paused = |duration: Duration| {
            if !is_held {
                self.state().pending.remove(&id);
            }
            let go_on = pause(duration);
            if !is_held && go_on && !duration.is_zero() {
                self.state().pending.insert(id, Instant::now());
            }
            go_on
        };
        let result = send(&paused, started + self.deadline + held);
        if watch && result.is_err() && !pause(Duration::ZERO) {
            self.state().pending.remove(&id);
            return result;
        }
        let mut state = self.state();
        state.pending.remove(&id);
        match &result {
            Ok(_) => {
                state.status.last_success = Some(SystemTime::now());
                state.status.consecutive_failures = 0;
                state.status.last_error = None;
                state.lost_since = None;
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
                if retryable(e) && state.lost_since.is_none() {
                    state.lost_since = Some(SystemTime::now());
                }
            }
            // A 4xx is the gateway's answer: it is there.
            Err(_) => {
                state.lost_since = None;
            }
        }
        state.publish_membership(self.unanswered_limit());
        drop(state);
        self.changed.notify_all();
        result
    }

    /// A write for membership `life` (a registration, a heartbeat, a leader restored): sent
    /// only while that membership lasts, counted while on the wire so that `leave()` can wait
    /// for it, and refused with [`ClientError::NotRegistered`] once `leave()` has begun. The
    /// check and the count are made under the lock `leave()` takes, so no write slips between.
    pub(crate) fn write<T: DeserializeOwned>(
        &self,
        life: u64,
        path: &str,
        body: &impl Serialize,
        headers: &[(&str, &str)],
        pause: &dyn Fn(Duration) -> bool,
    ) -> Result<Reply<T>, ClientError> {
        {
            let mut state = self.state();
            if state.leaving || state.life != life {
                return Err(ClientError::NotRegistered);
            }
            state.writes += 1;
        }
        // A `leave()` that begins meanwhile ends the retry pauses at once.
        let pause = |duration: Duration| {
            let state = self.state();
            if state.leaving || state.life != life {
                return false;
            }
            drop(state);
            pause(duration)
        };
        let result = self.exchange(Method::Post, path, Some(body), headers, &pause);
        let mut state = self.state();
        state.writes -= 1;
        if result.as_ref().is_err_and(ClientError::is_transport) {
            state.writes_unanswered += 1;
        }
        drop(state);
        self.changed.notify_all();
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
    ///
    /// Returns true if this node should give the gateway its leader back: the gateway names
    /// none, and the view this node had before it registered again (after the gateway forgot
    /// it, or in another run) named this node.
    pub(crate) fn registered(
        &self,
        life: u64,
        mut sent: Registration,
        answer: &RegisterResponse,
        suspected: Option<Vec<Node>>,
        forgotten: bool,
    ) -> bool {
        let mut state = self.state();
        if state.leaving || state.life != life {
            return false; // `leave()` began meanwhile: record nothing.
        }
        let new_run =
            state.member_of.as_ref() != answer.epoch.as_ref() && state.member_of.is_some();
        let restore_leader = (forgotten || new_run)
            && answer.leader.is_none()
            && state
                .view
                .shown()
                .and_then(|v| v.cluster.leader.as_ref())
                .is_some_and(|l| l.node_id == sent.node_id);
        let rejoined_same_run = state
            .registered_at
            .as_ref()
            .is_some_and(|(epoch, _)| *epoch == answer.epoch)
            && !forgotten;
        if !rejoined_same_run {
            state.registered_at = Some((answer.epoch.clone(), SystemTime::now()));
        }
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
            state.settings = checked(answer.settings);
        }
        state.status.node_id = Some(sent.node_id);
        sent.previous_epoch = None;
        // What is held may be newer (metadata merged meanwhile): it stays.
        if state.registration.is_none() {
            state.registration = Some(sent);
        }
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
        state.publish_membership(self.unanswered_limit());
        drop(state);
        self.changed.notify_all();
        restore_leader
    }

    /// Merges `metadata` into the registration of the current membership; returns the
    /// membership and the merge's number.
    pub(crate) fn merge_metadata(
        &self,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(u64, u64), ClientError> {
        let mut state = self.state();
        if state.leaving {
            return Err(ClientError::NotRegistered);
        }
        let registration = state
            .registration
            .as_mut()
            .ok_or(ClientError::NotRegistered)?;
        registration
            .metadata
            .get_or_insert_with(Default::default)
            .extend(metadata);
        state.metadata_version += 1;
        Ok((state.life, state.metadata_version))
    }

    /// Publishes the registration with merge `version` (or a later one) in it, as a rejoining
    /// member: at most one such write on the wire, the calls that wait for it sharing its
    /// outcome.
    pub(crate) fn publish_metadata(
        &self,
        life: u64,
        version: u64,
        deadline: Instant,
    ) -> Result<RegisterResponse, ClientError> {
        loop {
            let mut state = self.state();
            loop {
                if state.leaving || state.life != life {
                    return Err(ClientError::NotRegistered);
                }
                if state.metadata_published >= version
                    && let Some(outcome) = &state.last_publish
                {
                    return outcome.clone();
                }
                if !state.publishing {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Timeout {
                        address: self.transport.current().to_owned(),
                    });
                }
                state = match self.changed.wait_timeout(state, left) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            let Some(registration) = state.registration.clone() else {
                return Err(ClientError::NotRegistered);
            };
            if state.member_of.is_none() {
                return Err(ClientError::NotRegistered); // Never a first registration.
            }
            let carried = state.metadata_version;
            let sent = state.to_send(registration);
            state.publishing = true;
            drop(state);
            let result = self
                .write::<RegisterResponse>(
                    life,
                    "/register",
                    &sent,
                    &[],
                    &crate::client::transport::sleep,
                )
                .and_then(|reply| reply.unconditional(self.transport.current()));
            if let Ok(answer) = &result {
                self.registered(life, sent, answer, None, false);
            }
            let mut state = self.state();
            state.publishing = false;
            state.metadata_published = state.metadata_published.max(carried);
            state.last_publish = Some(result.clone());
            drop(state);
            self.changed.notify_all();
            if carried >= version {
                return result;
            }
        }
    }

    /// Waits until no write is on the wire, or `deadline`; true if none is.
    pub(crate) fn wait_for_writes(&self, deadline: Instant) -> bool {
        let mut state = self.state();
        while state.writes > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// The gateway forgot this node (a `not_found` heartbeat): it is joining again.
    pub(crate) fn forgotten(&self) {
        let mut state = self.state();
        state.registered_at = None;
        state.publish_membership(self.unanswered_limit());
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

    /// Applies a delta answer's `patch` to the view (see [`ViewState::patch`]); false if it
    /// does not apply, and the view is as it was.
    pub(crate) fn patch_view(&self, patch: Patch, epoch: &Option<String>) -> bool {
        let mut state = self.state();
        let report = !state.subscribers.is_empty();
        match state.view.patch(patch, epoch, report, Instant::now()) {
            Ok(change) => {
                if epoch.is_some() {
                    state.status.gateway_epoch.clone_from(epoch);
                }
                state.publish(change);
                true
            }
            Err(NotPatched) => false,
        }
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
            self.state().settings = checked(settings);
        }
    }

    /// The heartbeat interval in use.
    pub(crate) fn current_interval(&self) -> Duration {
        let state = self.state();
        self.interval(&state)
    }
}

/// True for a heartbeat interval a client may follow: 100 ms to a day.
pub(crate) fn sane_interval(interval: Duration) -> bool {
    (ADVERTISED_INTERVAL.0..=ADVERTISED_INTERVAL.1).contains(&interval)
}

/// `settings` with an absurd advertised heartbeat interval refused (logged): the client keeps
/// its own.
fn checked(mut settings: Settings) -> Settings {
    if let Some(seconds) = settings.heartbeat_interval
        && !Duration::try_from_secs_f64(seconds).is_ok_and(sane_interval)
    {
        log::warn!(
            "the gateway advertises a heartbeat interval of {seconds} s, outside 0.1 s to a day: \
             refused, the client keeps its own"
        );
        settings.heartbeat_interval = None;
    }
    settings
}

#[cfg(test)]
mod tests;
