//! The client's heartbeat thread: registers the node when it must (at start, and whenever the
//! gateway forgot it), beats on time at the gateway's interval, refreshes the cached view when
//! its `(epoch, registry_version)` key moves, and keeps trying while the gateway is away.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::api::{
    Health, HeartbeatResponse, HeartbeatStatus, LeaderResponse, Node, NodeId, NodeRef,
    NodesResponse, RegisterResponse, RegisterStatus, SetLeader, SetLeaderResponse, SetLeaderStatus,
    Settings,
};
use crate::client::error::ClientError;
use crate::client::session::Shared;
use crate::client::transport::{Method, Reply, random_unit};
use crate::client::view::ClusterInfo;
use crate::client::view::split;
use serde::Deserialize;

/// A running heartbeat thread. Stop it with [`Heartbeat::stop`].
#[derive(Debug)]
pub(crate) struct Heartbeat {
    stop: Sender<()>,
    /// Disconnected when the thread ends.
    done: Receiver<()>,
    thread: JoinHandle<()>,
}

impl Heartbeat {
    /// Starts the thread for membership `life` (see `State::life`): its writes are refused
    /// once `leave()` ends that membership.
    pub(crate) fn start(shared: Arc<Shared>, life: u64) -> Heartbeat {
        let (stop, stopped) = mpsc::channel();
        let (finished, done) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("gateway-heartbeat".to_owned())
            .spawn(move || {
                let _finished = finished;
                run(&shared, &stopped, life);
            })
            .expect("spawn the heartbeat thread");
        Heartbeat { stop, done, thread }
    }

    /// True until the thread has ended (it ends by itself when the gateway refuses the
    /// registration).
    pub(crate) fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Wakes the thread and waits up to `wait` for it to end. A thread in the middle of a
    /// request is left to finish it in the background (bounded by the client's deadline); it
    /// records nothing after it and ends.
    pub(crate) fn stop(self, wait: Duration) {
        drop(self.stop);
        match self.done.recv_timeout(wait) {
            Err(RecvTimeoutError::Disconnected) => {
                let _ = self.thread.join();
            }
            _ => log::debug!("the heartbeat thread ends its request in flight in the background"),
        }
    }
}

/// The first pause after a failure while the node is not registered or no gateway answers;
/// it doubles up to [`RETRY_MOST`] (or the heartbeat interval, if shorter), with jitter, so
/// that a node joins (and sees a gateway again) within a second of one answering, however
/// long it waited, not a heartbeat interval later.
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between those tries: one connection attempt a second from a node that
/// waits for its gateway costs the gateway's host nothing it would notice.
const RETRY_MOST: Duration = Duration::from_secs(1);

fn run(shared: &Shared, stopped: &Receiver<()>, life: u64) {
    // Waits, returning false once the client asks the thread to stop; `pause(ZERO)` asks
    // whether it has.
    let pause = |duration: Duration| {
        matches!(
            stopped.recv_timeout(duration),
            Err(RecvTimeoutError::Timeout)
        )
    };
    let mut next = if shared.state().must_register {
        Instant::now()
    } else {
        Instant::now() + jittered(shared.current_interval())
    };
    // One round of tries per attempt (every gateway once, no backoff inside the call): the
    // backoff between attempts is this thread's own, so it stays short while nobody answers.
    let one_round = |duration: Duration| duration.is_zero() && pause(duration);
    let mut failed_rounds: u32 = 0;
    loop {
        // Beats are scheduled from the previous schedule, not from when the last one finished,
        // so a slow answer does not push every later beat back.
        if !pause(next.saturating_duration_since(Instant::now())) {
            return;
        }
        let must_register = shared.state().must_register;
        let result = if must_register {
            register(shared, &one_round, false, life)
        } else {
            beat(shared, &one_round, life)
        };
        if !pause(Duration::ZERO) {
            return;
        }
        match result {
            Ok(()) => {}
            Err(e) if refused(&e) && shared.state().must_register => {
                log::error!("the gateway refused this node's registration, heartbeats stop: {e}");
                return;
            }
            Err(e) => {
                let failures = shared.state().status_failures();
                log::warn!("heartbeat failed ({failures} in a row): {e}");
            }
        }
        // The interval may just have been learned from the gateway.
        let interval = shared.current_interval();
        let retry_soon = {
            let state = shared.state();
            state.must_register || state.lost_since.is_some()
        };
        if retry_soon {
            // Not registered, or no gateway answers: try again on a backoff of its own.
            let ceiling = RETRY_FIRST
                .saturating_mul(1 << failed_rounds.min(16))
                .min(RETRY_MOST)
                .min(interval);
            failed_rounds = failed_rounds.saturating_add(1);
            next = Instant::now() + ceiling.mul_f64(0.5 + 0.5 * random_unit());
            continue;
        }
        failed_rounds = 0;
        next += jittered(interval);
        if Instant::now() > next {
            next = Instant::now() + jittered(interval);
        }
    }
}

/// A 4xx that says the gateway will not take this node as it is (not one that says "later":
/// 408, 429). Only a registration refused so stops the thread; any other answer is retried.
fn refused(error: &ClientError) -> bool {
    matches!(error, ClientError::Gateway { status, .. } if *status < 500 && *status != 408 && *status != 429)
}

/// Registers the node (with `previous_epoch` once it is a member). `forgotten`: the gateway
/// answered a heartbeat with `not_found`.
fn register(
    shared: &Shared,
    pause: &dyn Fn(Duration) -> bool,
    forgotten: bool,
    life: u64,
) -> Result<(), ClientError> {
    let Some(registration) = shared.registration_to_send() else {
        return Ok(());
    };
    let node_id = registration.node_id;
    // The thread fetches the list itself (conditional, compressed): the registration's answer
    // need not carry it (RFC 7240; a gateway that ignores the preference sends it anyway).
    let result = shared
        .write::<MinimalRegistration>(
            life,
            "/register",
            &registration,
            &[("Prefer", "return=minimal")],
            pause,
        )
        .and_then(|reply| reply.unconditional(shared.transport.current()))
        .and_then(|answer| answer.with_nodes(shared, node_id, pause));
    if !pause(Duration::ZERO) {
        return Ok(()); // Stopped meanwhile: record nothing.
    }
    match result {
        Ok((answer, suspected)) => {
            let restore_leader =
                shared.registered(life, registration, &answer, suspected, forgotten);
            log::info!("node {node_id} registered");
            if restore_leader {
                restore_leadership(shared, node_id, pause, life);
            }
            Ok(())
        }
        Err(e) => {
            shared.register_failed(&e);
            Err(e)
        }
    }
}

/// One heartbeat, and what follows from its answer.
fn beat(shared: &Shared, pause: &dyn Fn(Duration) -> bool, life: u64) -> Result<(), ClientError> {
    let Some(node_id) = shared.node_id() else {
        return Ok(());
    };
    let answer: HeartbeatResponse = shared
        .write(life, "/heartbeat", &NodeRef { node_id }, &[], pause)?
        .unconditional(shared.transport.current())?;
    if !pause(Duration::ZERO) {
        return Ok(());
    }
    match answer.status {
        HeartbeatStatus::NotFound => {
            log::warn!(
                "the gateway does not know node {node_id} (it restarted or reaped us): registering again"
            );
            shared.state().must_register = true;
            shared.forgotten();
            register(shared, pause, true, life)
        }
        HeartbeatStatus::Acknowledged => {
            let epoch = answer.epoch.as_deref();
            let new_run = shared.view_is_stale(epoch, None);
            if new_run {
                // Another gateway run (a restart with its registry kept, a failover): its
                // settings may differ too.
                if let Ok(health) =
                    shared.call::<Health>(Method::Get, "/health?live", None::<&()>, pause)
                {
                    shared.learn_settings(health.settings);
                }
            }
            if shared.view_is_stale(epoch, answer.registry_version) {
                refresh_view(shared, node_id, answer.epoch, pause)
            } else {
                shared.confirm_view();
                Ok(())
            }
        }
    }
}

/// Gives the gateway its leader back after it forgot it (an in-memory restart): this node led
/// before, and the gateway names no leader now. Logged either way; the next heartbeat's view
/// shows the outcome.
fn restore_leadership(
    shared: &Shared,
    node_id: NodeId,
    pause: &dyn Fn(Duration) -> bool,
    life: u64,
) {
    let result = shared
        .write::<SetLeaderResponse>(
            life,
            "/leader",
            &SetLeader { leader_id: node_id },
            &[],
            pause,
        )
        .and_then(|reply| reply.unconditional(shared.transport.current()));
    match result {
        Ok(answer) if answer.status == SetLeaderStatus::Updated => {
            log::info!("node {node_id} led before the gateway forgot it: leader restored");
        }
        Ok(answer) => log::warn!(
            "node {node_id} could not restore itself as leader: {}",
            answer.message.as_deref().unwrap_or("refused")
        ),
        Err(e) => log::warn!("node {node_id} could not restore itself as leader: {e}"),
    }
}

/// A `/register` answer that may leave the list out (`Prefer: return=minimal`).
#[derive(Debug, Deserialize)]
struct MinimalRegistration {
    #[serde(flatten)]
    answer: RegisterResponseWithoutNodes,
    #[serde(default)]
    nodes: Option<Vec<Node>>,
}

#[derive(Debug, Deserialize)]
struct RegisterResponseWithoutNodes {
    status: RegisterStatus,
    node_id: NodeId,
    is_bootstrap: bool,
    registry_version: u64,
    leader: Option<Node>,
    #[serde(default)]
    epoch: Option<String>,
    #[serde(flatten)]
    settings: Settings,
}

impl MinimalRegistration {
    /// The whole answer, the list fetched when the gateway left it out (suspected peers
    /// included: they are returned apart).
    fn with_nodes(
        self,
        shared: &Shared,
        node_id: NodeId,
        pause: &dyn Fn(Duration) -> bool,
    ) -> Result<(RegisterResponse, Option<Vec<Node>>), ClientError> {
        let a = self.answer;
        let (nodes, suspected, registry_version) = match self.nodes {
            Some(nodes) => (nodes, None, a.registry_version),
            None => {
                let list: NodesResponse =
                    shared.call(Method::Get, &nodes_path(node_id), None::<&()>, pause)?;
                let (nodes, suspected) = split(list.nodes, Some(node_id));
                (
                    nodes,
                    Some(suspected),
                    list.registry_version.max(a.registry_version),
                )
            }
        };
        let answer = RegisterResponse {
            status: a.status,
            node_id: a.node_id,
            is_bootstrap: a.is_bootstrap,
            registry_version,
            nodes,
            leader: a.leader,
            epoch: a.epoch,
            settings: a.settings,
        };
        Ok((answer, suspected))
    }
}

/// The list the view is built from: every peer, suspected ones included, without this node.
pub(crate) fn nodes_path(node_id: NodeId) -> String {
    format!("/nodes?node_id={node_id}&status=all")
}

fn refresh_view(
    shared: &Shared,
    node_id: NodeId,
    epoch: Option<String>,
    pause: &dyn Fn(Duration) -> bool,
) -> Result<(), ClientError> {
    // Conditional reads: a list that did not change since the view was built costs a 304.
    let (nodes_tag, leader_tag) = shared.state().view_tags.clone();
    let nodes_path = nodes_path(node_id);
    let nodes: Reply<NodesResponse> = conditional(shared, &nodes_path, &nodes_tag, pause)?;
    let leader: Reply<LeaderResponse> = conditional(shared, "/leader", &leader_tag, pause)?;
    if !pause(Duration::ZERO) {
        return Ok(());
    }
    if nodes.value.is_none() && leader.value.is_none() {
        shared.confirm_view();
        return Ok(());
    }
    // One of the two did not change: read it again without a condition (rare).
    let nodes_etag = nodes.etag;
    let leader_etag = leader.etag;
    let nodes = match nodes.value {
        Some(nodes) => nodes,
        None => shared.call(Method::Get, &nodes_path, None::<&()>, pause)?,
    };
    let leader = match leader.value {
        Some(leader) => leader,
        None => shared.call(Method::Get, "/leader", None::<&()>, pause)?,
    };
    shared.state().view_tags = (nodes_etag, leader_etag);
    let (active, suspected) = split(nodes.nodes, Some(node_id));
    shared.update_view(
        ClusterInfo {
            nodes: active,
            leader: leader.leader,
            registry_version: nodes.registry_version,
        },
        Some(suspected),
        epoch,
    );
    Ok(())
}

/// A GET with `If-None-Match: tag` when there is one.
fn conditional<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    path: &str,
    tag: &Option<String>,
    pause: &dyn Fn(Duration) -> bool,
) -> Result<Reply<T>, ClientError> {
    let headers: Vec<(&str, &str)> = tag.iter().map(|t| ("If-None-Match", t.as_str())).collect();
    shared.call_with(Method::Get, path, None::<&()>, &headers, pause)
}

/// The interval, give or take 10%, so nodes started together do not beat in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * random_unit())
}
