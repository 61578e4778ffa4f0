//! The client's heartbeat thread: beats on time, registers again when the gateway forgot the
//! node, refreshes the cached cluster view when the registry version moves, and keeps trying
//! while the gateway is away.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crate::api::{
    HeartbeatResponse, HeartbeatStatus, LeaderResponse, NodeRef, NodesResponse, RegisterResponse,
};
use crate::client::{ClusterInfo, ClusterView, Method, Shared, random_unit};
use crate::error::ClientError;

/// A running heartbeat thread. Stop it with [`Heartbeat::stop`].
#[derive(Debug)]
pub(crate) struct Heartbeat {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Heartbeat {
    pub(crate) fn start(shared: Arc<Shared>) -> Heartbeat {
        let (stop, stopped) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("gateway-heartbeat".to_owned())
            .spawn(move || run(&shared, &stopped))
            .expect("spawn the heartbeat thread");
        Heartbeat { stop, thread }
    }

    /// Wakes the thread, which returns at once unless a request is in flight (bounded by the
    /// request timeout), and joins it.
    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(shared: &Shared, stopped: &Receiver<()>) {
    // Waits, returning false once the client asks the thread to stop.
    let pause = |duration: Duration| {
        matches!(
            stopped.recv_timeout(duration),
            Err(RecvTimeoutError::Timeout)
        )
    };
    let interval = shared.heartbeat_interval;
    let mut next = Instant::now() + jittered(interval);
    loop {
        // Beats are scheduled from the previous schedule, not from when the last one finished,
        // so a slow answer does not push every later beat back.
        if !pause(next.saturating_duration_since(Instant::now())) {
            return;
        }
        next += jittered(interval);
        if let Err(e) = beat(shared, &pause) {
            let mut state = shared.state();
            state.status.consecutive_failures += 1;
            state.status.last_error = Some(e.to_string());
            let failures = state.status.consecutive_failures;
            drop(state);
            log::warn!("heartbeat failed ({failures} in a row): {e}");
        }
        if Instant::now() > next {
            next = Instant::now() + jittered(interval);
        }
    }
}

/// One heartbeat, and what follows from its answer.
fn beat(shared: &Shared, pause: &dyn Fn(Duration) -> bool) -> Result<(), ClientError> {
    let Some(registration) = shared.state().registration.clone() else {
        return Ok(());
    };
    let node_id = registration.node_id;
    let answer: HeartbeatResponse = shared.transport.call(
        Method::Post,
        "/heartbeat",
        Some(&NodeRef { node_id }),
        pause,
    )?;
    match answer.status {
        HeartbeatStatus::NotFound => {
            log::warn!(
                "the gateway does not know node {node_id} (it restarted or reaped us): registering again"
            );
            let answer: RegisterResponse =
                shared
                    .transport
                    .call(Method::Post, "/register", Some(&registration), pause)?;
            shared.registered(registration, &answer);
            log::info!("node {node_id} registered again");
        }
        HeartbeatStatus::Acknowledged => {
            let known = shared
                .state()
                .view
                .as_ref()
                .map(|v| v.cluster.registry_version);
            if answer.registry_version.is_some() && answer.registry_version != known {
                refresh_view(shared, node_id, pause)?;
            }
            let mut state = shared.state();
            state.status.last_success = Some(SystemTime::now());
            state.status.consecutive_failures = 0;
            state.status.last_error = None;
            if let Some(view) = state.view.as_mut() {
                view.updated = Instant::now();
            }
        }
    }
    shared.state().status.gateway_epoch = answer.epoch;
    Ok(())
}

fn refresh_view(
    shared: &Shared,
    node_id: u64,
    pause: &dyn Fn(Duration) -> bool,
) -> Result<(), ClientError> {
    let nodes: NodesResponse = shared.transport.call(
        Method::Get,
        &format!("/nodes?node_id={node_id}"),
        None::<&()>,
        pause,
    )?;
    let leader: LeaderResponse =
        shared
            .transport
            .call(Method::Get, "/leader", None::<&()>, pause)?;
    shared.state().view = Some(ClusterView {
        cluster: ClusterInfo {
            nodes: nodes.nodes,
            leader: leader.leader,
            registry_version: nodes.registry_version,
        },
        updated: Instant::now(),
    });
    Ok(())
}

/// The interval, give or take 10%, so nodes started together do not beat in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * random_unit())
}
