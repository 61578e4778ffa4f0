//! The running server: tiny_http's accept loop feeding a fixed pool of worker threads, and the
//! reaper thread.
//!
//! This is the only server code that touches requests as they come off the wire. It refuses
//! ambiguous framing, reads each request body within the size limit and the body deadline (off
//! the worker when it could be slow), hands the request to [`http::handle`] inside
//! `catch_unwind`, and writes the answer. Everything done only because of a tiny_http defect is
//! in `tiny_http_workarounds.rs`.
//!
//! A long-poll (`GET /nodes?index=V&wait=30s`) that must wait is parked in [`Watchers`] (see
//! `long_polls.rs`): the worker moves on, and the watcher thread hands the request, once the
//! registry changes or its wait ends, to a short-lived answering thread.
//!
//! Shutdown: the accept loops are told to stop and new connections are refused, every parked
//! request is answered, the reaper's channel is dropped, the workers get [`SHUTDOWN_GRACE`] to
//! finish what they are writing, and then every connection still open is closed.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::lock;
use crate::server::config::ServerConfig;
use crate::server::gateway::Gateway;
use crate::server::http::{self};
use crate::server::long_polls::Watchers;
use crate::server::registry::Now;
use crate::server::tiny_http_workarounds::{self as workarounds, Accepting, Nudger, Poisoned};

mod settling;
mod streams;
mod worker;

use settling::Senders;
use streams::Streams;
use worker::{Context, Handler, Peers};

/// A gateway server, configured but not yet listening (the original's `GatewayServer(host,
/// port)`).
#[derive(Debug, Clone)]
pub struct GatewayServer {
    config: ServerConfig,
}

/// Why the server could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The address could not be listened on.
    Listen {
        /// The address it tried to listen on.
        address: String,
        /// What the system said.
        reason: String,
    },
    /// The data directory could not be opened (in use, damaged, unwritable).
    Store(crate::server::store::log::OpenError),
    /// The tokens could not be read (a missing file, a bad line).
    Tokens(crate::server::auth::AuthError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Listen { address, reason } => {
                write!(f, "cannot listen on {address}: {reason}")
            }
            StartError::Store(e) => e.fmt(f),
            StartError::Tokens(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

/// How long shutdown waits for workers to finish what they are doing (at worst, writing to a
/// client that does not read, bounded by the 10 s write timeout) before it returns anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An answer that took longer than this is logged and counted as slow.
const SLOW_ANSWER: Duration = Duration::from_secs(1);

impl GatewayServer {
    /// A server that will run with `config`.
    pub fn new(config: ServerConfig) -> GatewayServer {
        GatewayServer { config }
    }

    /// Binds the port and starts the workers and the reaper.
    pub fn start(self) -> Result<RunningServer, StartError> {
        self.start_with(http::answer)
    }

    fn start_with(self, handler: Handler) -> Result<RunningServer, StartError> {
        self.start_on(handler, Gateway::open)
    }

    /// Starts with `handler` answering requests, over the gateway `open` makes (tests give a
    /// gateway over a disk they control).
    fn start_on(
        self,
        handler: Handler,
        open: impl FnOnce(&ServerConfig) -> Result<Gateway, crate::server::store::log::OpenError>,
    ) -> Result<RunningServer, StartError> {
        let config = self.config;
        let settings = config.summary();
        let address = config.bind_address();
        let start_error = |reason: String| StartError::Listen {
            address: address.clone(),
            reason,
        };
        // The tokens first (a bad file stops the start before anything is written), then the
        // registry: a replay of the data directory finishes before anyone can connect.
        let tokens = config.tokens.load().map_err(StartError::Tokens)?;
        if !tokens.is_empty() {
            log::info!("tokens: {} ({})", tokens.len(), tokens.names());
        }
        let gateway = Arc::new(open(&config).map_err(StartError::Store)?);
        gateway
            .auth()
            .install(config.tokens.clone(), tokens, config.protect_health);
        let listener = workarounds::listen(&address).map_err(|e| start_error(e.to_string()))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| start_error(e.to_string()))?;
        let nudger = Arc::new(Nudger::new(local_addr));
        let watchers = Arc::new(Watchers::new(
            gateway.version(),
            config.max_watchers,
            Arc::clone(&gateway.metrics().watchers_waiting),
        ));
        let streams = Arc::new(Streams::new(
            gateway.version(),
            config.max_watchers,
            Arc::clone(&gateway.metrics().streams_open),
        ));
        {
            let (watchers, streams) = (Arc::clone(&watchers), Arc::clone(&streams));
            gateway.on_change(move |version| {
                watchers.changed(version);
                streams.changed(version);
            });
        }
        let (exit, exits) = mpsc::channel::<()>();
        let context = Arc::new(Context {
            handler,
            gateway: Arc::clone(&gateway),
            max_body_bytes: config.max_body_bytes,
            body_timeout: config.body_timeout,
            slots: Mutex::new(Vec::new()),
            next_slot: AtomicU64::new(0),
            poisoned: Poisoned::new(),
            access_log: config.access_log,
            trusted_proxies: config.trusted_proxies.clone(),
            refusals: Mutex::default(),
            taking: Mutex::new(()),
            nudger: Arc::clone(&nudger),
            counters: Counters::default(),
            watchers: Arc::clone(&watchers),
            exit: Mutex::new(Some(exit.clone())),
            answering: Peers::default(),
            senders: Arc::default(),
            watch_answers: Arc::new(Senders::named("gateway-watch-answer")),
            streams: Arc::clone(&streams),
        });
        let serve = {
            let context = Arc::clone(&context);
            Arc::new(move |request: tiny_http::Request| {
                let taken = context.taken(request);
                Context::dispatch(&context, taken);
            })
        };
        let accepting = Accepting::start(listener, config.workers, serve, exit.clone())
            .map_err(|e| start_error(e.to_string()))?;
        let workers = (0..config.workers)
            .map(|i| {
                let (context, accepting, exit) =
                    (Arc::clone(&context), Arc::clone(&accepting), exit.clone());
                thread::Builder::new()
                    .name(format!("gateway-worker-{i}"))
                    .spawn(move || {
                        let _exit = exit;
                        while let Some(taken) = context.take(&accepting) {
                            Context::dispatch(&context, taken);
                        }
                    })
                    .expect("spawn a worker thread")
            })
            .collect();
        let watching = {
            let (context, exit) = (Arc::clone(&context), exit.clone());
            thread::Builder::new()
                .name("gateway-watchers".to_owned())
                .spawn(move || {
                    context
                        .watchers
                        .run(|due| Context::release(&context, due, &exit));
                })
                .expect("spawn the watcher thread")
        };
        let fanning_out = {
            let (streams, gateway) = (Arc::clone(&streams), Arc::clone(&gateway));
            vec![
                thread::Builder::new()
                    .name("gateway-streams".to_owned())
                    .spawn(move || streams.run(&gateway))
                    .expect("spawn the stream fan-out thread"),
            ]
        };
        drop(exit);

        let (reaper_stop, stop_signal) = mpsc::channel::<()>();
        let reaper = {
            let gateway = Arc::clone(&gateway);
            let interval = config.sweep_interval();
            thread::Builder::new()
                .name("gateway-reaper".to_owned())
                .spawn(move || {
                    // Sweeps every interval until the sender is dropped.
                    while let Err(RecvTimeoutError::Timeout) = stop_signal.recv_timeout(interval) {
                        gateway.sweep(Now::system());
                    }
                })
                .expect("spawn the reaper thread")
        };
        let nudging = {
            let nudger = Arc::clone(&nudger);
            thread::Builder::new()
                .name("gateway-nudger".to_owned())
                .spawn(move || nudger.run())
                .expect("spawn the nudger thread")
        };

        log::debug!(
            "cluster gateway {} listening on http://{local_addr}",
            crate::VERSION
        );
        log::info!("settings: {settings}");
        if let Some(warning) = workarounds::bare_host_warning(local_addr) {
            log::warn!("{warning}");
        }
        Ok(RunningServer {
            local_addr,
            accepting,
            gateway,
            context,
            workers,
            exits: Some(exits),
            reaper: Some((reaper_stop, reaper)),
            nudger: Some((nudger, nudging)),
            watching: Some(watching),
            fanning_out,
            stopped: false,
        })
    }
}

/// What the server counts, for logs and operators (`SIGUSR1` logs them).
#[derive(Debug, Default)]
struct Counters {
    slow_answers: AtomicU64,
    answers_cut_short: AtomicU64,
    framing_errors: AtomicU64,
    bodies_timed_out: AtomicU64,
}

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerCounters {
    /// Answers that took over a second from receipt to the last byte written.
    pub slow_answers: u64,
    /// Answers not written whole: the client closed the connection, or did not read for the
    /// write timeout (refusals of requests with an unread body are not counted).
    pub answers_cut_short: u64,
    /// Requests refused for ambiguous framing, and requests refused after one on the same
    /// connection.
    pub framing_errors: u64,
    /// Bodies that did not arrive within the body timeout.
    pub bodies_timed_out: u64,
    /// Times tiny_http's accept loop died and a new one was started on the same socket.
    pub accept_restarts: u64,
}

/// A server that is accepting requests. Stops on [`RunningServer::stop`] or when dropped.
pub struct RunningServer {
    local_addr: SocketAddr,
    accepting: Arc<Accepting>,
    gateway: Arc<Gateway>,
    context: Arc<Context>,
    workers: Vec<JoinHandle<()>>,
    /// Disconnected once every worker and drainer has returned.
    exits: Option<Receiver<()>>,
    reaper: Option<(Sender<()>, JoinHandle<()>)>,
    nudger: Option<(Arc<Nudger>, JoinHandle<()>)>,
    watching: Option<JoinHandle<()>>,
    /// The stream fan-out thread (`streams.rs`).
    fanning_out: Vec<JoinHandle<()>>,
    stopped: bool,
}

impl RunningServer {
    /// The address the server listens on, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The registry and its derived state, as the handlers see it.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// True until `stop()`, and while the listener can accept (or be brought back).
    pub fn is_serving(&self) -> bool {
        !self.stopped && self.failure().is_none() && self.workers.iter().all(|w| !w.is_finished())
    }

    /// Requests whose body is being read on a thread of its own within the body timeout (at
    /// most 64; past that, such requests are refused with 503).
    pub fn bodies_being_read(&self) -> usize {
        lock(&self.context.slots).len()
    }

    /// Long-poll requests parked until the registry changes or their wait ends.
    pub fn watchers_waiting(&self) -> usize {
        self.context.watchers.waiting()
    }

    /// Event streams open now (`GET /nodes?changes=1&stream=1`).
    pub fn streams_open(&self) -> usize {
        self.context.streams.open_count()
    }

    /// Why the server can no longer serve, once it cannot: the listening socket is gone and
    /// cannot be brought back. Slowness never ends up here. The binary exits non-zero then.
    pub fn failure(&self) -> Option<String> {
        self.accepting.failure()
    }

    /// Sends the failure on `to` when (or if already) the server cannot serve any more.
    pub fn notify_failure(&self, to: Sender<String>) {
        self.accepting.notify_failure(to);
    }

    /// The counters: slow answers, framing errors, body timeouts, accept-loop restarts.
    pub fn counters(&self) -> ServerCounters {
        let c = &self.context.counters;
        ServerCounters {
            slow_answers: c.slow_answers.load(Ordering::Relaxed),
            answers_cut_short: c.answers_cut_short.load(Ordering::Relaxed),
            framing_errors: c.framing_errors.load(Ordering::Relaxed),
            bodies_timed_out: c.bodies_timed_out.load(Ordering::Relaxed),
            accept_restarts: self.accepting.restarts(),
        }
    }

    /// Re-reads what can be changed without a restart (the binary calls it on SIGHUP): the
    /// token file. A file that cannot be used leaves the tokens in use as they were.
    pub fn reload(&self) {
        if let Err(e) = self.gateway.auth().reload() {
            log::error!("reload: keeping the tokens in use: {e}");
        }
    }

    /// Stops accepting, lets in-flight requests finish for up to [`SHUTDOWN_GRACE`], and joins
    /// every thread that finished.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.accepting.stop();
        // Connections with nothing being answered (kept alive, or with a request no worker took)
        // end now. Taken in the queue's order: a request a worker is taking is counted first.
        let answering: HashSet<SocketAddr> = {
            let _in_order = lock(&self.context.taking);
            lock(&self.context.answering).keys().copied().collect()
        };
        let closed = self.accepting.close(&answering);
        // Parked requests are answered now (as usual: they see the registry as it is), and
        // streams end (their bodies closed after what was queued).
        self.context.watchers.stop();
        self.context.streams.stop();
        if let Some((stop, reaper)) = self.reaper.take() {
            drop(stop);
            let _ = reaper.join();
        }
        if let Some((nudger, thread)) = self.nudger.take() {
            nudger.stop();
            let _ = thread.join();
        }
        lock(&self.context.exit).take();
        // Every worker, drainer, body reader and long-poll answerer holds a sender: the channel
        // disconnects when all returned.
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let exits = self.exits.take().expect("shut down once");
        let all_returned = loop {
            match exits.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Err(RecvTimeoutError::Disconnected) => break true,
                Err(RecvTimeoutError::Timeout) => break false,
                Ok(()) => {}
            }
        };
        self.context.senders.stop();
        self.context.watch_answers.stop();
        self.context.streams.stop_writers();
        for thread in self.fanning_out.drain(..) {
            let _ = thread.join();
        }
        // What is still open is ended now: connections whose answer was written meanwhile (with
        // what they pipelined behind it, never taken), and, past the grace, answers still
        // being written.
        let closed = closed + self.accepting.close(&HashSet::new());
        if closed > 0 {
            log::debug!("closed {closed} connections at shutdown");
        }
        if all_returned {
            for worker in self.workers.drain(..) {
                let _ = worker.join();
            }
            if let Some(watching) = self.watching.take() {
                let _ = watching.join();
            }
        } else {
            log::warn!(
                "stopping without waiting for requests still in progress after {} s",
                SHUTDOWN_GRACE.as_secs()
            );
            self.workers.clear();
        }
        log::info!("cluster gateway on {} stopped", self.local_addr);
    }
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("local_addr", &self.local_addr)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
