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
//! `watch.rs`): the worker moves on, and the watcher thread hands the request, once the
//! registry changes or its wait ends, to a short-lived answering thread.
//!
//! Shutdown: the accept loops are told to stop and new connections are refused, every parked
//! request is answered, the reaper's channel is dropped, the workers get [`SHUTDOWN_GRACE`] to
//! finish what they are writing, and then every connection still open is closed.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::lock;
use crate::server::config::ServerConfig;
use crate::server::gateway::Gateway;
use crate::server::http::{self, Response};
use crate::server::long_polls::{InFlight, Watchers};
use crate::server::metrics;
use crate::server::registry::Now;
use crate::server::tiny_http_workarounds::{
    self as workarounds, Accepting, Deadline, Nudger, Poisoned, Unread,
};

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
        self.start_with(http::handle)
    }

    fn start_with(self, handler: Handler) -> Result<RunningServer, StartError> {
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
        let gateway = Arc::new(Gateway::open(&config).map_err(StartError::Store)?);
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
        {
            let watchers = Arc::clone(&watchers);
            gateway.on_change(move |version| watchers.changed(version));
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
            taking: Mutex::new(()),
            nudger: Arc::clone(&nudger),
            counters: Counters::default(),
            watchers: Arc::clone(&watchers),
            exit: Mutex::new(Some(exit.clone())),
            answering: Peers::default(),
        });
        let serve = {
            let context = Arc::clone(&context);
            Arc::new(move |request: tiny_http::Request| {
                let answering = Answering::new(&context.answering, request.remote_addr());
                Context::dispatch(&context, request, answering);
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
                        while let Some((request, answering)) = context.take(&accepting) {
                            Context::dispatch(&context, request, answering);
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
        // Parked requests are answered now (as usual: they see the registry as it is).
        self.context.watchers.stop();
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

/// Answers one request: [`http::handle`], or a stand-in in this module's tests.
type Handler = fn(&Gateway, &http::Request<'_>) -> Response;

/// Most request bodies read at once on their own threads within the body timeout. Past it,
/// such requests get a 503: clients that open many slow uploads cannot hold every slot for
/// longer than the body timeout.
const MAX_BODY_READERS: usize = 64;

/// What answering a request needs, shared by the workers, the drainers and the body threads.
struct Context {
    handler: Handler,
    gateway: Arc<Gateway>,
    max_body_bytes: usize,
    body_timeout: Duration,
    /// Bodies being read on threads of their own: an id and the body's deadline.
    slots: Mutex<Vec<(u64, Instant)>>,
    next_slot: AtomicU64,
    poisoned: Poisoned,
    /// `--access-log`: a line for every request answered.
    access_log: bool,
    /// Held while a worker takes a request off tiny_http's queue and screens its framing.
    ///
    /// tiny_http parses a connection's next request before the previous one is answered, so
    /// two requests of one connection can be in the queue at once, and two workers would run
    /// them side by side: a request smuggled behind a malformed one could run before the
    /// malformed one poisoned the connection. Taken one at a time, in the queue's order, the
    /// poison is marked before the next request of that connection is even seen.
    taking: Mutex<()>,
    nudger: Arc<Nudger>,
    counters: Counters,
    /// Parked long-polls.
    watchers: Arc<Watchers<Waiting>>,
    /// Connections with a request being answered (see [`Answering`]).
    answering: Peers,
    /// Held by each thread that answers a request whose body it read, so that shutdown waits
    /// for it; taken when shutdown begins.
    exit: Mutex<Option<Sender<()>>>,
}

/// A long-poll request parked until the registry changes or its wait ends, with what routing
/// it again needs.
struct Waiting {
    request: tiny_http::Request,
    /// Keeps the connection open at shutdown until the request is answered.
    _answering: Answering,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Parked requests released together are answered by threads of this many requests each...
const ANSWERS_PER_THREAD: usize = 128;
/// ...and at most this many threads.
const ANSWER_THREADS: usize = 8;

impl Context {
    /// The next request, taken in the queue's order with its framing screened (see
    /// [`Context::taking`]); `None` once the server stops.
    fn take(&self, accepting: &Arc<Accepting>) -> Option<(tiny_http::Request, Answering)> {
        let _in_order = lock(&self.taking);
        let request = accepting.recv()?;
        if workarounds::framing_error(&request).is_some() {
            self.poisoned.mark(request.remote_addr());
        }
        let answering = Answering::new(&self.answering, request.remote_addr());
        Some((request, answering))
    }

    /// Takes a request off the queue: refuses what must be refused, and serves the rest on
    /// this thread (body already read) or on a thread of its own (body still to come).
    fn dispatch(context: &Arc<Context>, request: tiny_http::Request, answering: Answering) {
        let received = Instant::now();
        let peer = request.remote_addr().copied();
        // Answers on a connection go out in order: a request parked on this one is answered
        // now, so that this request's answer does not wait behind it.
        let (in_flight, parked) = context.watchers.arrived(peer);
        if let Some(parked) = parked {
            context.answer_waiting(parked, received);
        }
        context
            .nudger
            .on_request(peer.as_ref(), keeps_alive(&request));
        // Its own framing first: `take` marked the connection poisoned for it already.
        if let Some(why) = workarounds::framing_error(&request) {
            context.count(&context.counters.framing_errors);
            context.poisoned.mark(peer.as_ref());
            let unread = workarounds::unread(&request);
            return context.dispose(request, Response::error(400, why), unread, received);
        }
        if context.poisoned.contains(peer.as_ref()) {
            context.count(&context.counters.framing_errors);
            let answer = Response::error(
                400,
                "An earlier request on this connection was malformed; nothing more on it is \
                 executed: open a new connection",
            );
            let unread = workarounds::unread(&request);
            return context.dispose(request, answer, unread, received);
        }
        if workarounds::body_is_buffered(&request) {
            return context.serve(request, received, None, (in_flight, answering));
        }
        // The body may be slow to come, or never come: read it, and answer, on a thread of
        // its own so no worker waits on a client.
        let Some(slot) = Slot::take(context, received) else {
            log::warn!("{MAX_BODY_READERS} request bodies are already being read; refusing one");
            let answer = Response::error(503, "Too many requests with large bodies in progress");
            if request.body_length().is_none() {
                // A chunked body is not drained on drop: what follows is not a request.
                context.poisoned.mark(peer.as_ref());
            }
            let unread = workarounds::unread(&request);
            return context.dispose(request, answer, unread, received);
        };
        let context = Arc::clone(context);
        thread::spawn(move || context.serve(request, received, Some(slot), (in_flight, answering)));
    }

    /// Writes a refusal (see [`workarounds::dispose`]) and counts it.
    fn dispose(
        &self,
        request: tiny_http::Request,
        answer: Response,
        unread: Unread,
        received: Instant,
    ) {
        let (route, status) = (metrics::route(request.url()), answer.status);
        let access = self.access_log.then(|| access(&request));
        workarounds::dispose(request, answer, unread);
        let took = received.elapsed();
        self.gateway.metrics().answered(route, status, took);
        if let Some(request) = access {
            log::info!(target: "access", "{request} {status} {:.1} ms", took.as_secs_f64() * 1e3);
        }
    }

    /// Runs the handler inside `catch_unwind`: a panic is a 500.
    fn route(&self, request: &http::Request<'_>) -> Response {
        catch_unwind(AssertUnwindSafe(|| (self.handler)(&self.gateway, request))).unwrap_or_else(
            |_| {
                log::error!("handler panicked on {} {}", request.method, request.url);
                Response::error(500, "Internal server error")
            },
        )
    }

    /// Writes `answer`, counts it, and logs it if it was slow.
    fn respond(
        &self,
        request: tiny_http::Request,
        (method, url): (&str, &str),
        answer: Response,
        received: Instant,
    ) {
        let (route, status) = (metrics::route(url), answer.status);
        let access = self.access_log.then(|| access(&request));
        if !workarounds::respond(request, answer) {
            self.count(&self.counters.answers_cut_short);
        }
        let took = received.elapsed();
        self.gateway.metrics().answered(route, status, took);
        if let Some(request) = access {
            log::info!(target: "access", "{request} {status} {:.1} ms", took.as_secs_f64() * 1e3);
        }
        if took > SLOW_ANSWER {
            let n = self.counters.slow_answers.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!("{method} {url} took {took:?} to answer ({n} slow answers so far)");
            }
        }
    }

    /// Answers a parked request as usual (`received`: when it was released).
    fn answer_waiting(&self, waiting: Waiting, received: Instant) {
        let headers: Vec<(&str, &str)> = waiting
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let answer = self.route(&http::Request {
            method: &waiting.method,
            url: &waiting.url,
            body: &waiting.body,
            headers: &headers,
        });
        let what = (waiting.method.as_str(), waiting.url.as_str());
        self.respond(waiting.request, what, answer, received);
    }

    /// Answers parked requests that are due, on short-lived threads (a client that does not
    /// read cannot hold up the watcher thread), each holding `exit` so that shutdown waits
    /// for them.
    fn release(context: &Arc<Context>, due: Vec<Waiting>, exit: &Sender<()>) {
        let released = Instant::now();
        let threads = due
            .len()
            .div_ceil(ANSWERS_PER_THREAD)
            .clamp(1, ANSWER_THREADS);
        let per_thread = due.len().div_ceil(threads);
        let mut due = due.into_iter();
        for _ in 0..threads {
            let share: Vec<Waiting> = due.by_ref().take(per_thread).collect();
            let (context, exit) = (Arc::clone(context), exit.clone());
            let answering = thread::Builder::new()
                .name("gateway-watch-answer".to_owned())
                .spawn(move || {
                    let _exit = exit;
                    for waiting in share {
                        context.answer_waiting(waiting, released);
                    }
                });
            if let Err(e) = answering {
                // Dropped unanswered, the requests get tiny_http's own 500.
                log::error!("cannot start a thread to answer long-polls: {e}");
            }
        }
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the body, routes the request inside `catch_unwind`, and answers, or parks it when
    /// it is a long-poll that must wait.
    fn serve(
        &self,
        mut request: tiny_http::Request,
        received: Instant,
        slot: Option<Slot>,
        (in_flight, answering): (InFlight<Waiting>, Answering),
    ) {
        let deadline = received + self.body_timeout;
        let body = read_body(&mut request, self.max_body_bytes, deadline);
        // On a thread of its own, the request is waited for by shutdown from here on (not
        // while its body may never come).
        let _exit = slot.is_some().then(|| lock(&self.exit).clone());
        // A body that came after its slot was given to another request came too late.
        let late = slot.as_ref().is_some_and(|s| !s.held()) || Instant::now() > deadline;
        drop(slot);
        let body = match body {
            Ok(_) if late => Err(self.timed_out()),
            other => other,
        };
        let body = match body {
            Ok(body) => body,
            Err(refusal) => {
                if refusal.answer.status == 408 {
                    self.count(&self.counters.bodies_timed_out);
                }
                if refusal.poison {
                    self.count(&self.counters.framing_errors);
                    self.poisoned.mark(request.remote_addr());
                }
                return self.dispose(request, *refusal.answer, refusal.unread, received);
            }
        };
        let method = request.method().as_str().to_owned();
        let url = request.url().to_owned();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str(), h.value.as_str()))
            .collect();
        let routing = http::Request {
            method: &method,
            url: &url,
            body: &body,
            headers: &headers,
        };
        let wait = catch_unwind(AssertUnwindSafe(|| http::parks(&self.gateway, &routing)))
            .ok()
            .flatten();
        let Some(wait) = wait else {
            let answer = self.route(&routing);
            drop(headers);
            return self.respond(request, (&method, &url), answer, received);
        };
        let headers = headers
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let peer = request.remote_addr().copied();
        let waiting = Waiting {
            request,
            _answering: answering,
            method,
            url,
            headers,
            body,
        };
        let until = Instant::now() + wait.wait;
        if let Err(refused) = self.watchers.park(waiting, wait.index, until, peer) {
            // Changed meanwhile, too many waiting, stopping, or pipelined: answer now.
            self.answer_waiting(refused.into_inner(), received);
        }
        drop(in_flight);
    }

    fn timed_out(&self) -> Refusal {
        Refusal {
            answer: Box::new(Response::error(
                408,
                format!(
                    "Request body did not arrive within {} s",
                    self.body_timeout.as_secs_f64()
                ),
            )),
            unread: Unread::Nothing,
            poison: false,
        }
    }
}

/// The access log's account of a request: peer, method and path with its query.
fn access(request: &tiny_http::Request) -> String {
    let peer = request
        .remote_addr()
        .map_or_else(|| "-".to_owned(), ToString::to_string);
    format!("{peer} {} {}", request.method(), request.url())
}

/// True if the client may send another request on this connection.
fn keeps_alive(request: &tiny_http::Request) -> bool {
    let connection = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Connection"))
        .map(|h| h.value.as_str().to_ascii_lowercase());
    let http_1_1 = *request.http_version() >= (1, 1);
    match connection {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => http_1_1,
    }
}

/// Requests being answered, counted by peer address (the address of their connection: unique
/// among open connections).
type Peers = Arc<Mutex<HashMap<SocketAddr, usize>>>;

/// A request taken off tiny_http's queue and not yet answered (its body being read, routed,
/// parked, or its answer being written), counted in [`Context::answering`] until dropped.
/// When the server stops, every connection without one is ended at once; those with one get
/// the grace to finish.
struct Answering {
    peers: Peers,
    peer: Option<SocketAddr>,
}

impl Answering {
    fn new(peers: &Peers, peer: Option<&SocketAddr>) -> Answering {
        let peer = peer.copied();
        if let Some(peer) = peer {
            *lock(peers).entry(peer).or_insert(0) += 1;
        }
        Answering {
            peers: Arc::clone(peers),
            peer,
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let Some(peer) = self.peer else { return };
        let mut peers = lock(&self.peers);
        if let Some(n) = peers.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&peer);
            }
        }
    }
}

/// One of the [`MAX_BODY_READERS`] slots, given back on drop. A slot whose body is past its
/// deadline is given to the next request that needs one: its reader may still be blocked on
/// the socket (tiny_http gives no way to interrupt it), but it no longer keeps anyone out,
/// and whatever it reads later is answered 408 and not executed.
struct Slot {
    id: u64,
    context: Arc<Context>,
}

impl Slot {
    fn take(context: &Arc<Context>, received: Instant) -> Option<Slot> {
        let id = context.next_slot.fetch_add(1, Ordering::Relaxed);
        let deadline = received + context.body_timeout;
        let mut slots = lock(&context.slots);
        if slots.len() >= MAX_BODY_READERS {
            let now = Instant::now();
            let expired = slots.iter().position(|&(_, until)| until < now)?;
            slots.swap_remove(expired);
        }
        slots.push((id, deadline));
        context
            .gateway
            .metrics()
            .bodies_being_read
            .store(slots.len(), Ordering::Relaxed);
        Some(Slot {
            id,
            context: Arc::clone(context),
        })
    }

    fn held(&self) -> bool {
        lock(&self.context.slots)
            .iter()
            .any(|&(id, _)| id == self.id)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = lock(&self.context.slots);
        slots.retain(|&(id, _)| id != self.id);
        self.context
            .gateway
            .metrics()
            .bodies_being_read
            .store(slots.len(), Ordering::Relaxed);
    }
}

/// A request refused before its body was used.
struct Refusal {
    answer: Box<Response>,
    /// Declared body bytes not read.
    unread: Unread,
    /// The connection's framing is lost: nothing more on it may be executed.
    poison: bool,
}

/// Reads the whole body by `deadline`, refusing one over `limit` before reading it and one
/// shorter than its declared length.
// A refusal is rare and goes straight out as the answer: not worth a box.
#[allow(clippy::result_large_err)]
fn read_body(
    request: &mut tiny_http::Request,
    limit: usize,
    deadline: Instant,
) -> Result<Vec<u8>, Refusal> {
    let too_large = |unread: Unread, poison: bool| Refusal {
        answer: Box::new(Response::error(
            413,
            format!("Request body too large: the limit is {limit} bytes"),
        )),
        unread,
        poison,
    };
    let declared = request.body_length();
    if let Some(declared) = declared.filter(|&n| n > limit) {
        // tiny_http drains what was declared (see `dispose`), except a length past isize::MAX,
        // after which the connection goes on out of step.
        return Err(too_large(
            Unread::Declared(declared as u64),
            declared as u64 > isize::MAX as u64,
        ));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let read = Deadline {
        inner: request.as_reader().take(limit as u64 + 1),
        deadline,
    }
    .read_to_end(&mut body);
    let left = |body: &Vec<u8>| {
        declared.map_or(Unread::Nothing, |n| {
            Unread::Declared(n.saturating_sub(body.len()) as u64)
        })
    };
    if let Err(e) = read {
        let answer = if e.kind() == std::io::ErrorKind::TimedOut {
            Response::error(408, format!("Request body did not arrive in time: {e}"))
        } else {
            Response::error(400, format!("Could not read the request body: {e}"))
        };
        return Err(Refusal {
            answer: Box::new(answer),
            unread: left(&body),
            poison: declared.is_none(),
        });
    }
    if body.len() > limit {
        // Only a chunked body gets here: the rest of it is not drained.
        return Err(too_large(Unread::Nothing, true));
    }
    if let Some(declared) = declared.filter(|&n| body.len() < n) {
        return Err(Refusal {
            answer: Box::new(Response::error(
                400,
                format!(
                    "Request body shorter than its Content-Length ({} of {declared} bytes)",
                    body.len()
                ),
            )),
            unread: Unread::Nothing,
            poison: true,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
