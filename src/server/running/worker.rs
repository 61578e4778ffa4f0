//! What the workers do with a request: take it off tiny_http's queue with its framing screened,
//! read its body (off the worker when it could be slow), route it inside `catch_unwind`, park a
//! long-poll or answer at once, and count and log what happened.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{self};
use std::time::{Duration, Instant};

use crate::lock;
use crate::server::access::{AccessLine, Client, Refusals, TrustedProxies};
use crate::server::auth::{Need, Role, Verdict};
use crate::server::gateway::Gateway;
use crate::server::http::{self, Response};
use crate::server::long_polls::{InFlight, Watchers};
use crate::server::metrics;
use crate::server::tiny_http_workarounds::{
    self as workarounds, Accepting, Deadline, Nudger, Poisoned, Unread,
};

use super::settling::Senders;
use super::streams::Streams;
use super::{Counters, SLOW_ANSWER};

/// Answers one request: [`http::answer`] (an answer to a durable write may come back before
/// the write is on disk, to be sent once it is), or a stand-in in this module's tests.
pub(super) type Handler = fn(&Gateway, &http::Request<'_>) -> Response;

/// Most request bodies read at once on their own threads within the body timeout. Past it,
/// such requests get a 503: clients that open many slow uploads cannot hold every slot for
/// longer than the body timeout.
pub(super) const MAX_BODY_READERS: usize = 64;

/// What answering a request needs, shared by the workers, the drainers and the body threads.
pub(super) struct Context {
    pub(super) handler: Handler,
    pub(super) gateway: Arc<Gateway>,
    pub(super) max_body_bytes: usize,
    pub(super) body_timeout: Duration,
    /// Bodies being read on threads of their own: an id and the body's deadline.
    pub(super) slots: Mutex<Vec<(u64, Instant)>>,
    pub(super) next_slot: AtomicU64,
    pub(super) poisoned: Poisoned,
    /// `--access-log`: a line for every request answered.
    pub(super) access_log: bool,
    /// `--trusted-proxy`: whose `X-Forwarded-For` the log believes.
    pub(super) trusted_proxies: TrustedProxies,
    /// Refusal lines written, rate-limited.
    pub(super) refusals: Mutex<Refusals>,
    /// Held while a worker takes a request off tiny_http's queue and screens its framing.
    ///
    /// tiny_http parses a connection's next request before the previous one is answered, so
    /// two requests of one connection can be in the queue at once, and two workers would run
    /// them side by side: a request smuggled behind a malformed one could run before the
    /// malformed one poisoned the connection. Taken one at a time, in the queue's order, the
    /// poison is marked before the next request of that connection is even seen.
    pub(super) taking: Mutex<()>,
    pub(super) nudger: Arc<Nudger>,
    pub(super) counters: Counters,
    /// Parked long-polls.
    pub(super) watchers: Arc<Watchers<Waiting>>,
    /// Connections with a request being answered (see [`Answering`]).
    pub(super) answering: Peers,
    /// Held by each thread that answers a request whose body it read, and by each answer
    /// waiting for the disk, so that shutdown waits for them; taken when shutdown begins.
    pub(super) exit: Mutex<Option<Sender<()>>>,
    /// Send the answers to durable writes once they are on disk (see `settling.rs`).
    pub(super) senders: Arc<Senders>,
    /// Send the answers to released long-polls (see [`Context::release`]).
    pub(super) watch_answers: Arc<Senders>,
    /// Open event streams (see `streams.rs`).
    pub(super) streams: Arc<Streams>,
}

/// A long-poll request parked until the registry changes or its wait ends, with what routing
/// it again needs.
pub(super) struct Waiting {
    pub(super) request: tiny_http::Request,
    /// Keeps the connection open at shutdown until the request is answered.
    pub(super) _answering: Answering,
    pub(super) method: String,
    pub(super) url: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    /// When it arrived: the access log's time includes the time parked.
    pub(super) arrived: Instant,
}

impl Context {
    /// The next request, taken in the queue's order with its framing screened (see
    /// [`Context::taking`]) and its arrival on its connection numbered in that order (see
    /// [`Watchers::arrived`]); `None` once the server stops.
    pub(super) fn take(&self, accepting: &Arc<Accepting>) -> Option<Taken> {
        let _in_order = lock(&self.taking);
        let request = accepting.recv()?;
        Some(self.taken(request))
    }

    /// What a request taken off the queue carries into [`Context::dispatch`]. Called in the
    /// queue's order: a later request of a connection gets a later arrival number, whichever
    /// worker gets to it first.
    pub(super) fn taken(&self, request: tiny_http::Request) -> Taken {
        if workarounds::framing_error(&request).is_some() {
            self.poisoned.mark(request.remote_addr());
        }
        let answering = Answering::new(&self.answering, request.remote_addr());
        let (in_flight, parked) = self.watchers.arrived(request.remote_addr().copied());
        // A stream open on the connection ends: this request's answer goes after it.
        self.streams.arrived(request.remote_addr().copied());
        Taken {
            request,
            answering,
            in_flight,
            parked,
        }
    }

    /// Takes a request off the queue: refuses what must be refused, and serves the rest on
    /// this thread (body already read) or on a thread of its own (body still to come).
    pub(super) fn dispatch(context: &Arc<Context>, taken: Taken) {
        let received = Instant::now();
        let Taken {
            request,
            answering,
            in_flight,
            parked,
        } = taken;
        let peer = request.remote_addr().copied();
        // Answers on a connection go out in order: a request parked on this one is answered
        // now, so that this request's answer does not wait behind it.
        if let Some(parked) = parked {
            context.answer_waiting(parked, received);
        }
        context
            .nudger
            .on_request(peer.as_ref(), keeps_alive(&request));
        // Its own framing first: `take` marked the connection poisoned for it already.
        // The connection's in-flight count ends before any answer is written (see
        // `InFlight`): every return below that answers drops it first.
        if let Some(why) = workarounds::framing_error(&request) {
            drop(in_flight);
            context.count(&context.counters.framing_errors);
            context.poisoned.mark(peer.as_ref());
            let unread = workarounds::unread(&request);
            return context.dispose(request, Response::error(400, why), unread, received);
        }
        if context.poisoned.contains(peer.as_ref()) {
            drop(in_flight);
            context.count(&context.counters.framing_errors);
            let answer = Response::error(
                400,
                "An earlier request on this connection was malformed; nothing more on it is \
                 executed: open a new connection",
            );
            let unread = workarounds::unread(&request);
            return context.dispose(request, answer, unread, received);
        }
        // Authorisation before its body is read or it is parked: a refused request costs what
        // a `/health` costs.
        if let Some(refusal) = context.unauthorised(&request) {
            drop(in_flight);
            let unread = workarounds::unread(&request);
            return context.dispose(request, refusal, unread, received);
        }
        if workarounds::body_is_buffered(&request) {
            return context.serve(request, received, None, (in_flight, answering));
        }
        // The body may be slow to come, or never come: read it, and answer, on a thread of
        // its own so no worker waits on a client.
        let Some(slot) = Slot::take(context, received) else {
            drop(in_flight);
            // Logged as a refusal (rate-limited), as every refusal is.
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

    /// The 401 or 403 `request` gets from its headers alone, if any.
    fn unauthorised(&self, request: &tiny_http::Request) -> Option<Response> {
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str(), h.value.as_str()))
            .collect();
        let routing = http::Request {
            method: request.method().as_str(),
            url: request.url(),
            body: &[],
            headers: &headers,
        };
        catch_unwind(AssertUnwindSafe(|| {
            http::unauthorised(&self.gateway, &routing)
        }))
        .unwrap_or_else(|_| Some(Response::error(500, "Internal server error")))
    }

    /// Writes a refusal (see [`workarounds::dispose`]) and counts it.
    pub(super) fn dispose(
        &self,
        request: tiny_http::Request,
        answer: Response,
        unread: Unread,
        received: Instant,
    ) {
        let (route, status) = (metrics::route(request.url()), answer.status);
        let told = self.tell(&request, &answer, true);
        workarounds::dispose(request, answer, unread);
        let took = received.elapsed();
        self.gateway.metrics().answered(route, status, took);
        told.log(status, took);
    }

    /// Runs the handler inside `catch_unwind`: a panic is a 500.
    pub(super) fn route(&self, request: &http::Request<'_>) -> Response {
        catch_unwind(AssertUnwindSafe(|| (self.handler)(&self.gateway, request))).unwrap_or_else(
            |_| {
                log::error!("handler panicked on {} {}", request.method, request.url);
                Response::error(500, "Internal server error")
            },
        )
    }

    /// Writes `answer` (waiting first, if it must, until what it shows is on disk), counts it,
    /// and logs it if it was slow. `received`: when the request was taken, or released for a
    /// long-poll (the metrics' start); `arrived`: when it came (the access log's).
    pub(super) fn respond(
        &self,
        request: tiny_http::Request,
        (method, url): (&str, &str),
        answer: Response,
        (received, arrived): (Instant, Instant),
    ) {
        let answer = http::settled(&self.gateway, answer);
        let (route, status) = (metrics::route(url), answer.status);
        let told = self.tell(&request, &answer, REFUSALS.contains(&status));
        if !workarounds::respond(request, answer) {
            self.count(&self.counters.answers_cut_short);
        }
        let took = received.elapsed();
        self.gateway.metrics().answered(route, status, took);
        told.log(status, arrived.elapsed());
        if took > SLOW_ANSWER {
            let n = self.counters.slow_answers.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                log::warn!("{method} {url} took {took:?} to answer ({n} slow answers so far)");
            }
        }
    }

    /// Answers a parked request as usual (`received`: when it was released).
    pub(super) fn answer_waiting(&self, waiting: Waiting, received: Instant) {
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
        self.respond(waiting.request, what, answer, (received, waiting.arrived));
    }

    /// Answers parked requests that are due, each on a thread of the long-poll answer pool
    /// ([`Context::watch_answers`]: up to [`MAX_SENDERS`](super::settling::MAX_SENDERS) threads, started when none is free and
    /// ended when idle), so a client that does not read holds one of them, never the watcher
    /// thread or another watcher's answer while a thread is free. Each answer holds `exit`,
    /// so that shutdown waits for it. The threads outlive a release: a change that wakes a
    /// thousand watchers a hundred times a second starts no thread once they are running.
    pub(super) fn release(context: &Arc<Context>, due: Vec<Waiting>, exit: &Sender<()>) {
        let released = Instant::now();
        for waiting in due {
            let (answering, exit) = (Arc::clone(context), exit.clone());
            context.watch_answers.send(Box::new(move || {
                answering.answer_waiting(waiting, released);
                // What shutdown waits for goes last: nothing of the server outlives it.
                drop(answering);
                drop(exit);
            }));
        }
    }

    pub(super) fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the body, routes the request inside `catch_unwind`, and answers, or parks it when
    /// it is a long-poll that must wait.
    pub(super) fn serve(
        self: &Arc<Self>,
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
                drop(in_flight);
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
        let stream = catch_unwind(AssertUnwindSafe(|| http::streams(&self.gateway, &routing)))
            .ok()
            .flatten();
        if let Some(start) = stream {
            let start = match start {
                Ok(start) => start,
                Err(refused) => {
                    drop(in_flight);
                    drop(headers);
                    return self.respond(request, (&method, &url), refused, (received, received));
                }
            };
            let Some(exit) = lock(&self.exit).clone() else {
                // Stopping: the events as one delta answer.
                drop(in_flight);
                let answer = self.route(&routing);
                drop(headers);
                return self.respond(request, (&method, &url), answer, (received, received));
            };
            // Kept for the delta answer if the stream cannot be opened.
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|&(n, v)| (n.to_owned(), v.to_owned()))
                .collect();
            let opened = self.streams.open(
                &self.gateway,
                request,
                start,
                (answering, exit),
                (&self.watchers, in_flight.arrival()),
            );
            // Counted until the stream is listed: a later request of the connection either
            // ended it, or came first and the request is answered as a delta answer.
            drop(in_flight);
            let Err(request) = opened else {
                let route = metrics::route(&url);
                let took = received.elapsed();
                self.gateway.metrics().answered(route, 200, took);
                return;
            };
            // Past `--max-watchers`, stopping, HTTP/1.0 or pipelined: a delta answer, as from a
            // gateway that does not stream (long-polls past the limit are answered at once too).
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let answer = self.route(&http::Request {
                method: &method,
                url: &url,
                body: &body,
                headers: &headers,
            });
            return self.respond(*request, (&method, &url), answer, (received, received));
        }
        let wait = catch_unwind(AssertUnwindSafe(|| http::parks(&self.gateway, &routing)))
            .ok()
            .flatten();
        let Some(wait) = wait else {
            let answer = self.route(&routing);
            drop(headers);
            // Counted no longer once routed: the client may send its next request as soon as
            // the answer is written, and a long-poll then must not find this one in flight
            // and be refused as pipelined.
            drop(in_flight);
            if answer.after.is_some() {
                return self.send_when_settled(request, (method, url), answer, received, answering);
            }
            return self.respond(request, (&method, &url), answer, (received, received));
        };
        let headers = headers
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let waiting = Waiting {
            request,
            _answering: answering,
            method,
            url,
            headers,
            body,
            arrived: received,
        };
        let until = Instant::now() + wait.wait;
        let parked = self
            .watchers
            .park(waiting, wait.index, until, in_flight.arrival());
        drop(in_flight);
        if let Err(refused) = parked {
            // Changed meanwhile, too many waiting, stopping, or pipelined: answer now.
            self.answer_waiting(refused.into_inner(), received);
        }
    }

    /// Hands an answer that must wait for the disk to the log's writer and returns at once:
    /// once the sync that covers it is done, a sending thread writes it (or the 503 its write
    /// ended in). The worker goes on with the next request meanwhile, so every write that
    /// arrives during a sync joins the next one, however few the workers.
    fn send_when_settled(
        self: &Arc<Self>,
        request: tiny_http::Request,
        (method, url): (String, String),
        mut answer: Response,
        received: Instant,
        answering: Answering,
    ) {
        let Some(unsettled) = answer.after.take() else {
            return self.respond(request, (&method, &url), answer, (received, received));
        };
        // Shutdown waits for the answer as it waits for a worker; once it has begun, the
        // worker waits for the disk itself.
        let Some(exit) = lock(&self.exit).clone() else {
            answer.after = Some(unsettled);
            return self.respond(request, (&method, &url), answer, (received, received));
        };
        let context = Arc::clone(self);
        self.gateway.when_settled(
            *unsettled,
            Box::new(move |settled| {
                // On the log writer's thread: only queue the answer here.
                let senders = Arc::clone(&context.senders);
                senders.send(Box::new(move || {
                    let answer = match settled {
                        Ok(()) => answer,
                        Err(e) => Response::from(e),
                    };
                    context.respond(request, (&method, &url), answer, (received, received));
                    // What shutdown waits for goes last: the server (its data directory's
                    // lock above all) must not outlive `stop`, or a restart on the same
                    // directory finds it locked.
                    drop(context);
                    drop((exit, answering));
                }));
            }),
        );
    }

    pub(super) fn timed_out(&self) -> Refusal {
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

/// The statuses of routed answers that are logged as refusals: the ones refused before
/// routing (framing, tokens, bodies) are all logged.
const REFUSALS: [u16; 4] = [401, 403, 429, 503];

impl Context {
    /// What the log will say about `request` once `answer` is written: the access line
    /// (`--access-log`), and a refusal line if `refusal` and the rate allows one.
    fn tell(&self, request: &tiny_http::Request, answer: &Response, refusal: bool) -> Told {
        let left_out = if refusal {
            lock(&self.refusals).admit(Instant::now())
        } else {
            None
        };
        if !self.access_log && left_out.is_none() {
            return Told::default();
        }
        let header = |name: &'static str| {
            request
                .headers()
                .iter()
                .filter(move |h| h.field.equiv(name))
                .map(|h| h.value.as_str())
        };
        let client = self
            .trusted_proxies
            .client(request.remote_addr().copied(), header("X-Forwarded-For"));
        // The token's name, whatever it may do; never the token.
        let token = match self
            .gateway
            .auth()
            .check(header("Authorization"), Need::Role(Role::Read))
        {
            Verdict::Allowed(name) => name,
            Verdict::Forbidden(name) => Some(name),
            Verdict::Unauthenticated(_) => None,
        };
        let head_only = *request.method() == tiny_http::Method::Head;
        let bytes = match answer.status {
            100..=199 | 204 | 304 => 0,
            _ if head_only => 0,
            _ => answer.body.len(),
        };
        Told {
            facts: Some(Facts {
                client,
                method: request.method().to_string(),
                url: request.url().to_owned(),
                token,
                user_agent: header("User-Agent").next().map(str::to_owned),
                bytes,
            }),
            access: self.access_log,
            refusal: left_out.map(|left_out| (left_out, error_text(answer))),
        }
    }
}

/// The `error` of an error answer's body.
fn error_text(answer: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&answer.body.to_vec())
        .ok()
        .and_then(|body| body["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What [`Context::tell`] found out, logged once the answer is written.
#[derive(Default)]
struct Told {
    facts: Option<Facts>,
    access: bool,
    /// How many refusals were left out before this one, and why it was refused.
    refusal: Option<(u64, String)>,
}

struct Facts {
    client: Client,
    method: String,
    url: String,
    token: Option<String>,
    user_agent: Option<String>,
    bytes: usize,
}

impl Told {
    /// Writes the lines: `took` is from the request's arrival to its answer written.
    fn log(self, status: u16, took: Duration) {
        let Some(facts) = self.facts else { return };
        if self.access {
            let line = AccessLine {
                client: facts.client,
                method: &facts.method,
                url: &facts.url,
                status,
                bytes: facts.bytes,
                took,
                token: facts.token.as_deref(),
                user_agent: facts.user_agent.as_deref(),
            };
            log::info!(target: "access", "{line}");
        }
        if let Some((left_out, why)) = self.refusal {
            let path = facts.url.split('?').next().unwrap_or_default();
            let token = facts.token.as_deref().unwrap_or("-");
            let more = match left_out {
                0 => String::new(),
                n => format!(" ({n} more refusals not logged before this one)"),
            };
            log::info!(
                "{status} for {} {path} from {} token={token}: {why}{more}",
                facts.method,
                facts.client
            );
        }
    }
}

/// True if the client may send another request on this connection.
pub(super) fn keeps_alive(request: &tiny_http::Request) -> bool {
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

/// A request taken off tiny_http's queue, with what was noted of it in the queue's order.
pub(super) struct Taken {
    request: tiny_http::Request,
    answering: Answering,
    /// Its arrival on its connection, counted until routed or parked.
    in_flight: InFlight<Waiting>,
    /// The request parked on the same connection, released by this one's arrival.
    parked: Option<Waiting>,
}

/// Requests being answered, counted by peer address (the address of their connection: unique
/// among open connections).
pub(super) type Peers = Arc<Mutex<HashMap<SocketAddr, usize>>>;

/// A request taken off tiny_http's queue and not yet answered (its body being read, routed,
/// parked, or its answer being written), counted in [`Context::answering`] until dropped.
/// When the server stops, every connection without one is ended at once; those with one get
/// the grace to finish.
pub(super) struct Answering {
    pub(super) peers: Peers,
    pub(super) peer: Option<SocketAddr>,
}

impl Answering {
    pub(super) fn new(peers: &Peers, peer: Option<&SocketAddr>) -> Answering {
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
pub(super) struct Slot {
    pub(super) id: u64,
    pub(super) context: Arc<Context>,
}

impl Slot {
    pub(super) fn take(context: &Arc<Context>, received: Instant) -> Option<Slot> {
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

    pub(super) fn held(&self) -> bool {
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
pub(super) struct Refusal {
    pub(super) answer: Box<Response>,
    /// Declared body bytes not read.
    pub(super) unread: Unread,
    /// The connection's framing is lost: nothing more on it may be executed.
    pub(super) poison: bool,
}

/// Reads the whole body by `deadline`, refusing one over `limit` before reading it and one
/// shorter than its declared length.
// A refusal is rare and goes straight out as the answer: not worth a box.
#[allow(clippy::result_large_err)]
pub(super) fn read_body(
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
