//! Every workaround for a defect of tiny_http 0.12, in one place, each with the reason and the
//! upstream issue. Policy (limits, what is refused, how answers look) lives in `server.rs`; what
//! is here exists only because tiny_http does something it should not, and should shrink when
//! tiny_http is fixed.
//!
//! What cannot be worked around from outside tiny_http (it happens before our code sees a
//! request) is listed in `RELIABILITY.md` with the front-proxy setting that closes it:
//! `HTTP/2.0` and `HTTP/3.0` request lines (no upstream issue found: the 505 is written through
//! the next response writer while the request holding the previous one is alive, so the
//! connection thread waits on itself forever), unbounded header size (#56), a thread per
//! connection (#221), no read timeouts (#143), and its own empty 400/417/505 answers.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, Once, Weak};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tiny_http::{Header, StatusCode};

use crate::lock;
use crate::server::http::{self, Response};

// ------------------------------------------------------------------------------------------
// The listening socket.

/// How long writing an answer may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive probes start after this much silence, so connections to vanished peers end.
const KEEPALIVE_AFTER: Duration = Duration::from_secs(60);

/// Binds `address` with the socket options every accepted connection inherits.
///
/// tiny_http sets no timeout on its sockets (#143) and gives us no access to them, so what an
/// accepted socket needs is set on the listener: a write timeout (a client that never reads
/// would pin a worker), TCP keep-alive (peers that vanish without a FIN), and TCP_NODELAY (an
/// answer goes out in a few writes; Nagle's algorithm would hold the last one 40 ms). Never a
/// read timeout: `accept()` would time out too, and tiny_http's accept loop ends on any error.
pub(crate) fn listen(address: &str) -> io::Result<TcpListener> {
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("the host resolves to no address"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
    socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(KEEPALIVE_AFTER))?;
    // A client that stops reading (a zero window) for the write timeout is cut off: the
    // write timeout alone frees a worker only per answer, and pipelined requests queue answers
    // by the thousand, each to hold a worker for that long.
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(WRITE_TIMEOUT))?;
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

// ------------------------------------------------------------------------------------------
// Accept loops that die (#283), brought back on the same socket.

/// One `tiny_http::Server` (its accept thread, connection pool and request queue) accepting
/// on a duplicate of our listening socket.
struct AcceptLoop {
    /// Taken when the server stops: dropped with the last worker's handle, tiny_http's own
    /// close ends its accept thread (see [`Accepting::close`]).
    server: Mutex<Option<Arc<tiny_http::Server>>>,
    /// The duplicate's descriptor number: it is closed when the accept thread ends.
    fd: i32,
    /// Workers waiting in this loop's `recv()`.
    attached: AtomicUsize,
}

impl AcceptLoop {
    fn start(listener: &TcpListener) -> io::Result<AcceptLoop> {
        let duplicate = listener.try_clone()?;
        let fd = duplicate.as_raw_fd();
        let server = tiny_http::Server::from_listener(duplicate, None).map_err(io::Error::other)?;
        Ok(AcceptLoop {
            server: Mutex::new(Some(Arc::new(server))),
            fd,
            attached: AtomicUsize::new(0),
        })
    }

    /// tiny_http's server, until the server stops.
    fn server(&self) -> Option<Arc<tiny_http::Server>> {
        lock(&self.server).clone()
    }

    /// Wakes one thread waiting in this loop's `recv()`.
    fn unblock(&self) {
        if let Some(server) = self.server() {
            server.unblock();
        }
    }
}

/// Feeds the workers from tiny_http's accept loop, and starts a new accept loop on the same
/// socket when the old one dies.
///
/// tiny_http's accept loop ends for good on any `accept()` error (EMFILE when descriptors run
/// out), and panics when cloning an accepted socket fails (`try_clone().unwrap()`): issue #283.
/// Either way the listening socket stays open (we hold the original and give tiny_http a
/// duplicate), connections wait in its backlog, and the registry is untouched: a new
/// `tiny_http::Server` on a fresh duplicate takes over once descriptors are free again. The old
/// one keeps serving the connections it already has, through a drainer thread.
pub(crate) struct Accepting {
    listener: TcpListener,
    /// The listener's address, taken at the start (a shut listener may no longer tell it).
    listening: Option<SocketAddr>,
    /// `/proc/self/fd/N` of the listener (`socket:[inode]`), to tell whether a duplicate is
    /// still open on the same socket.
    link: Option<PathBuf>,
    current: Mutex<Arc<AcceptLoop>>,
    retired: Mutex<Vec<Arc<AcceptLoop>>>,
    restarting: Mutex<()>,
    stopping: AtomicBool,
    restarts: AtomicU64,
    workers: usize,
    /// Serves a request that arrived through a retired accept loop.
    serve: Arc<dyn Fn(tiny_http::Request) + Send + Sync>,
    /// Told (once) when the listener cannot be brought back.
    failure: Mutex<Option<String>>,
    on_failure: Mutex<Option<Sender<String>>>,
    /// Held by each drainer thread: the server's shutdown waits for them.
    exits: Mutex<Option<Sender<()>>>,
}

impl Accepting {
    pub(crate) fn start(
        listener: TcpListener,
        workers: usize,
        serve: Arc<dyn Fn(tiny_http::Request) + Send + Sync>,
        exits: Sender<()>,
    ) -> io::Result<Arc<Accepting>> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).ok();
        let first = AcceptLoop::start(&listener)?;
        let accepting = Arc::new(Accepting {
            listening: listener.local_addr().ok(),
            listener,
            link,
            current: Mutex::new(Arc::new(first)),
            retired: Mutex::new(Vec::new()),
            restarting: Mutex::new(()),
            stopping: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            workers,
            serve,
            failure: Mutex::new(None),
            on_failure: Mutex::new(None),
            exits: Mutex::new(Some(exits)),
        });
        supervise(&accepting);
        Ok(accepting)
    }

    fn current(&self) -> Arc<AcceptLoop> {
        Arc::clone(&lock(&self.current))
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Times a dead accept loop was replaced.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    pub(crate) fn notify_failure(&self, to: Sender<String>) {
        if let Some(why) = self.failure() {
            let _ = to.send(why);
        }
        *lock(&self.on_failure) = Some(to);
    }

    fn fail(&self, why: String) {
        log::error!("{why}");
        lock(&self.failure).get_or_insert_with(|| why.clone());
        if let Some(to) = lock(&self.on_failure).as_ref() {
            let _ = to.send(why);
        }
    }

    /// True while the accept thread of `accept_loop` runs: its duplicate of the listener is
    /// still open on the same socket.
    fn is_accepting(&self, accept_loop: &AcceptLoop) -> bool {
        match &self.link {
            Some(link) => std::fs::read_link(format!("/proc/self/fd/{}", accept_loop.fd))
                .is_ok_and(|l| &l == link),
            None => true,
        }
    }

    /// The next request, from whichever accept loop is current; `None` once stopping (or when
    /// the listener is gone for good).
    pub(crate) fn recv(self: &Arc<Self>) -> Option<tiny_http::Request> {
        loop {
            if self.stopping() || self.failure().is_some() {
                return None;
            }
            let accept_loop = self.current();
            accept_loop.attached.fetch_add(1, Ordering::SeqCst);
            if !Arc::ptr_eq(&accept_loop, &self.current()) {
                accept_loop.attached.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            // `None` once `stop` took it: the loop's next turn returns.
            let received = accept_loop.server().map(|server| server.recv());
            accept_loop.attached.fetch_sub(1, Ordering::SeqCst);
            let Some(received) = received else { continue };
            let error = match received {
                Ok(request) => return Some(request),
                Err(e) => e,
            };
            if self.stopping() || !Arc::ptr_eq(&accept_loop, &self.current()) {
                continue;
            }
            // `unblock()` answers "thread unblocked"; anything else is the accept loop's own
            // error, after which it has ended.
            let unblocked = error.to_string() == "thread unblocked";
            if unblocked && self.is_accepting(&accept_loop) {
                continue;
            }
            self.restart(&accept_loop, &error.to_string());
        }
    }

    fn restart(self: &Arc<Self>, dead: &Arc<AcceptLoop>, why: &str) {
        let _one_at_a_time = lock(&self.restarting);
        if !Arc::ptr_eq(dead, &self.current()) {
            return;
        }
        log::error!(
            "tiny_http's accept loop died ({why}); starting a new one on the same socket \
             once descriptors are available"
        );
        let mut pause = Duration::from_millis(20);
        let mut said = Instant::now();
        let fresh = loop {
            if self.stopping() {
                return;
            }
            match headroom(&self.listener).and_then(|()| AcceptLoop::start(&self.listener)) {
                Ok(fresh) => break fresh,
                Err(e) if is_shortage(&e) => {
                    if said.elapsed() > Duration::from_secs(10) {
                        log::warn!("still waiting for descriptors to accept connections: {e}");
                        said = Instant::now();
                    }
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    self.fail(format!(
                        "the listener is gone and cannot be brought back: {e}"
                    ));
                    return;
                }
            }
        };
        if self.stopping() {
            return;
        }
        *lock(&self.current) = Arc::new(fresh);
        let restarts = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        log::warn!("accepting connections again ({restarts} accept loop restarts so far)");
        lock(&self.retired).push(Arc::clone(dead));
        // The dead loop's connections still send requests to its queue: a drainer serves them.
        // Workers still waiting there are woken and move to the new loop; a wake-up the drainer
        // takes instead is handed back while a worker still waits there.
        let exit = lock(&self.exits).clone();
        let (accepting, dead_loop) = (Arc::clone(self), Arc::clone(dead));
        if let Some(exit) = exit {
            let _ = thread::Builder::new()
                .name("gateway-drainer".to_owned())
                .spawn(move || {
                    let _exit = exit;
                    accepting.drain(&dead_loop);
                });
        }
        for _ in 0..self.workers {
            dead.unblock();
        }
    }

    fn drain(&self, dead: &AcceptLoop) {
        loop {
            let Some(server) = dead.server() else { return };
            let received = server.recv();
            drop(server);
            match received {
                Ok(request) => (self.serve)(request),
                Err(_) if self.stopping() => return,
                Err(_) => {
                    if dead.attached.load(Ordering::SeqCst) > 0 {
                        dead.unblock();
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
    }

    /// Stops accepting: every accept loop's workers and drainers return from `recv()`, and
    /// new connections are refused from here on.
    ///
    /// Dropping a `tiny_http::Server` (the last of its workers lets go of it once woken) ends
    /// its accept thread, but does not close the listening socket: we hold the original, and
    /// connections would wait in its backlog, unanswered. Once the accept threads have ended
    /// (waited for, briefly, so that no `accept()` in progress fails, which tiny_http logs as
    /// an error), the listening socket is shut: its backlog is reset and new connections are
    /// refused. What the accept threads took meanwhile is ended by [`Accepting::close`].
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        lock(&self.exits).take();
        let loops: Vec<Arc<AcceptLoop>> = lock(&self.retired)
            .iter()
            .cloned()
            .chain([self.current()])
            .collect();
        for accept_loop in &loops {
            if let Some(server) = lock(&accept_loop.server).take() {
                for _ in 0..=self.workers {
                    server.unblock();
                }
            }
        }
        let deadline = Instant::now() + ACCEPT_THREAD_EXIT;
        while loops.iter().any(|l| self.is_accepting(l)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let _ = SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read);
    }

    /// Ends every connection still open on the listener but those from the peers `except`
    /// (requests being answered, given the grace), and returns how many.
    ///
    /// tiny_http keeps a connection's thread reading after its `Server` is dropped, and pushes
    /// what it reads to a queue no one takes from any more: a request on a kept-alive
    /// connection, or one that came in as the workers stopped, is neither answered nor closed,
    /// and its client waits out its own timeout (upstream #244; tiny_http gives no access to
    /// its sockets). So every socket accepted on our listener is shut both ways: its client
    /// sees the connection end at once, and tiny_http's thread reads EOF and ends.
    pub(crate) fn close(&self, except: &HashSet<SocketAddr>) -> usize {
        self.listening
            .map_or(0, |listening| close_accepted(listening, except))
    }
}

/// How long [`Accepting::close`] waits for tiny_http's accept threads to end (they do at once:
/// dropping the `Server` connects to wake them).
const ACCEPT_THREAD_EXIT: Duration = Duration::from_secs(1);

/// Shuts both ways every socket of this process accepted on `listening` but those connected to
/// a peer in `except` (see [`Accepting::close`]); returns how many. Linux: the sockets are
/// found in `/proc/self/fd`.
#[allow(unsafe_code)]
fn close_accepted(listening: SocketAddr, except: &HashSet<SocketAddr>) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut closed = 0;
    for entry in entries.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        let number = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok());
        let Some(number) = number.filter(|_| is_socket) else {
            continue;
        };
        // SAFETY: the borrow lives only for the one call that duplicates the descriptor
        // (`fcntl(F_DUPFD_CLOEXEC)`). If another thread closed the number meanwhile the call
        // fails; if the number was reused, the duplicate is of that other descriptor, which the
        // address check below judges on its own. Everything after acts on our duplicate.
        let duplicate = unsafe { BorrowedFd::borrow_raw(number) }.try_clone_to_owned();
        let Ok(duplicate) = duplicate else { continue };
        let socket = SockRef::from(&duplicate);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
        // The listening socket has no peer; a connection we made has another local port.
        let open = peer.is_some_and(|p| !except.contains(&p));
        if open && local.is_some_and(|l| accepted_on(listening, l)) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
            closed += 1;
        }
    }
    closed
}

/// True if a socket with local address `local` was accepted by a listener on `listening`.
fn accepted_on(listening: SocketAddr, local: SocketAddr) -> bool {
    local.port() == listening.port()
        && (listening.ip().is_unspecified() || local.ip() == listening.ip())
}

/// A few spare descriptors, or the new accept loop would die (or panic) on the first
/// connection it accepts.
fn headroom(listener: &TcpListener) -> io::Result<()> {
    let spare: io::Result<Vec<TcpListener>> = (0..8).map(|_| listener.try_clone()).collect();
    spare.map(drop)
}

/// Out of descriptors or memory: worth waiting for.
fn is_shortage(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOMEM, ENOBUFS on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 12 | 105))
}

/// Servers whose accept loops the panic hook checks.
static SUPERVISED: Mutex<Vec<Weak<Accepting>>> = Mutex::new(Vec::new());

/// Name of threads whose panics are expected (see [`dispose`]) and not printed.
const QUIET_THREAD: &str = "gateway-huge-body";

fn supervise(accepting: &Arc<Accepting>) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_accept_loop = info.location().is_some_and(|l| {
                l.file().contains("tiny_http") && l.file().contains("refined_tcp_stream")
            });
            if thread::current().name() != Some(QUIET_THREAD) {
                previous(info);
            }
            if in_accept_loop {
                // The accept thread is unwinding and has not closed its listener yet: look a
                // moment later, from a thread of our own, and wake a worker of each server
                // whose accept loop has stopped.
                let _ = thread::Builder::new()
                    .name("gateway-accept-check".to_owned())
                    .spawn(|| {
                        thread::sleep(Duration::from_millis(100));
                        let servers: Vec<_> =
                            lock(&SUPERVISED).iter().filter_map(Weak::upgrade).collect();
                        for accepting in servers {
                            let current = accepting.current();
                            if !accepting.is_accepting(&current) {
                                current.unblock();
                            }
                        }
                    });
            }
        }));
    });
    let mut supervised = lock(&SUPERVISED);
    supervised.retain(|w| w.strong_count() > 0);
    supervised.push(Arc::downgrade(accepting));
}

// ------------------------------------------------------------------------------------------
// Connections queued behind busy pool threads.

/// Lets connections through that tiny_http's connection pool left queued.
///
/// The pool (`util/task_pool.rs`) queues a new connection instead of starting a thread when
/// it counts an idle thread; a thread it has just woken still counts as idle until it runs, so
/// connections arriving in a burst are queued behind threads that each take one connection.
/// A queued connection then waits until some connection of the pool *ends*, which, with
/// keep-alive clients, can be never (no upstream issue found; #221 is the thread per
/// connection behind it).
///
/// Any connection that ends at once moves the queue by one: the thread that took it takes the
/// next queued one. So when a keep-alive connection sends its first request (a burst is
/// under way, and a connection of it may be queued behind this one), one empty connection
/// is made to our own port; each connection let through that way does the same for the next.
/// Nothing is sent while idle, nor for connections that end after their request (their end
/// moves the queue), nor for the later requests of a connection.
pub(crate) struct Nudger {
    target: SocketAddr,
    seen: Mutex<HashSet<SocketAddr>>,
    pending: Mutex<usize>,
    wake: Condvar,
    stopping: AtomicBool,
}

/// Peers remembered as already seen; past it, the memory starts over (a few extra nudges).
const SEEN_PEERS: usize = 4096;

impl Nudger {
    pub(crate) fn new(listening: SocketAddr) -> Nudger {
        Nudger {
            target: reachable(listening),
            seen: Mutex::new(HashSet::new()),
            pending: Mutex::new(0),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Called for every request: nudges for the first request of a kept-alive connection.
    pub(crate) fn on_request(&self, peer: Option<&SocketAddr>, keeps_alive: bool) {
        let Some(peer) = peer.filter(|_| keeps_alive) else {
            return;
        };
        let first = {
            let mut seen = lock(&self.seen);
            if seen.len() >= SEEN_PEERS {
                seen.clear();
            }
            seen.insert(*peer)
        };
        if first {
            *lock(&self.pending) += 1;
            self.wake.notify_one();
        }
    }

    /// Runs until [`Nudger::stop`]: waits (no timer) for nudges to send.
    pub(crate) fn run(&self) {
        loop {
            {
                let mut pending = lock(&self.pending);
                while *pending == 0 && !self.stopping.load(Ordering::SeqCst) {
                    pending = self
                        .wake
                        .wait(pending)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                if self.stopping.load(Ordering::SeqCst) {
                    return;
                }
                *pending -= 1;
            }
            let _ = TcpStream::connect_timeout(&self.target, Duration::from_secs(1));
        }
    }

    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _pending = lock(&self.pending);
        self.wake.notify_all();
    }
}

/// The address to reach our own listener at (loopback for a wildcard bind).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

// ------------------------------------------------------------------------------------------
// Framing: what tiny_http accepts leniently, and connections it keeps reading.

/// Why the request's framing is ambiguous, if it is.
///
/// tiny_http frames a body by the first `Content-Length` it finds, parsed leniently (`+13` is
/// 13; `abc` or a value past `usize` means no body at all, so the body is read as the next
/// request), and by `Transfer-Encoding`, whatever its value, as chunked, ignoring
/// `Content-Length` (issue #173). A front proxy that frames the request differently would let
/// a request hidden in the body through: such requests are refused.
pub(crate) fn framing_error(request: &tiny_http::Request) -> Option<&'static str> {
    let values = |name: &'static str| -> Vec<&str> {
        request
            .headers()
            .iter()
            .filter(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().trim())
            .collect()
    };
    let lengths = values("Content-Length");
    let encodings = values("Transfer-Encoding");
    if !encodings.is_empty() {
        if !lengths.is_empty() {
            return Some("Conflicting Content-Length and Transfer-Encoding headers");
        }
        if encodings.len() > 1 || !encodings[0].eq_ignore_ascii_case("chunked") {
            return Some("Unsupported Transfer-Encoding: only a single chunked is accepted");
        }
        return None;
    }
    if lengths
        .iter()
        .any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("Invalid Content-Length: it must be a decimal number");
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Some("Conflicting Content-Length headers");
    }
    if !lengths.is_empty() && request.body_length().is_none() {
        return Some("Invalid Content-Length: too large");
    }
    None
}

/// Connections whose framing was lost, by peer address.
///
/// tiny_http reads the next request on a connection whatever our answer says: it drops a
/// `Connection: close` header from answers, only the request's own headers end the connection,
/// and no request gives us its socket to shut (no upstream issue found). After a framing error, what
/// follows on the connection may be the rest of a body, or a hidden request. So every later
/// request from the same peer address (the same connection: a peer address is unique among
/// open connections) is refused, until the peer has been quiet for [`POISON_TTL`].
pub(crate) struct Poisoned {
    count: AtomicUsize,
    peers: Mutex<HashMap<SocketAddr, Instant>>,
}

/// How long a poisoned connection stays poisoned after its last request.
const POISON_TTL: Duration = Duration::from_secs(30);

impl Poisoned {
    pub(crate) fn new() -> Poisoned {
        Poisoned {
            count: AtomicUsize::new(0),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses everything that comes after this request on its connection.
    pub(crate) fn mark(&self, peer: Option<&SocketAddr>) {
        let Some(peer) = peer else { return };
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        peers.retain(|_, until| *until > now);
        peers.insert(*peer, now + POISON_TTL);
        self.count.store(peers.len(), Ordering::Release);
    }

    /// True if the request comes from a poisoned connection (which stays poisoned).
    pub(crate) fn contains(&self, peer: Option<&SocketAddr>) -> bool {
        let Some(peer) = peer else { return false };
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        match peers.get_mut(peer) {
            Some(until) if *until > now => {
                *until = now + POISON_TTL;
                true
            }
            Some(_) => {
                peers.remove(peer);
                self.count.store(peers.len(), Ordering::Release);
                false
            }
            None => false,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Bodies.

/// True if tiny_http read the body with the headers: a known length of at most 1 KiB and no
/// `Expect: 100-continue` (see tiny_http's `new_request`). Reading such a body cannot block.
pub(crate) fn body_is_buffered(request: &tiny_http::Request) -> bool {
    let expects = request.headers().iter().any(|h| h.field.equiv("Expect"));
    let chunked = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Transfer-Encoding"));
    !expects && !chunked && request.body_length().is_none_or(|n| n <= 1024)
}

/// The most unread body bytes tiny_http may be left to drain when a refused request is dropped.
///
/// Its drain (`util/equal_reader.rs`, #252) allocates the whole remainder at once: up to this
/// much is only address space (the kernel maps pages as bytes arrive), but a remainder larger
/// than memory aborts the process.
const MAX_DRAIN: u64 = 1 << 30;

/// What is left of a refused request's body.
pub(crate) enum Unread {
    /// Nothing: the connection is in step.
    Nothing,
    /// This many declared bytes.
    Declared(u64),
}

/// The declared body bytes tiny_http will drain when `request` is dropped unread (a chunked
/// body is not drained: what is left of it would be read as requests).
pub(crate) fn unread(request: &tiny_http::Request) -> Unread {
    match request.body_length() {
        Some(n) if !body_is_buffered(request) => Unread::Declared(n as u64),
        _ => Unread::Nothing,
    }
}

/// Answers a refused request without pinning a worker on its unread body, and without
/// aborting the process on tiny_http's drain (#252).
///
/// Dropping a request drains its unread body for as long as the client takes to send it or
/// close, so that happens on a short-lived thread of its own. A declared remainder larger than
/// `isize::MAX` makes the drain's allocation panic ("capacity overflow") instead of abort: the
/// request is dropped inside `catch_unwind` on a thread of its own, the connection goes on
/// (poisoned by the caller) and ends when the client closes. A remainder in between cannot be
/// drained safely: the answer is written through `upgrade` and the connection is abandoned (a
/// thread and two descriptors held until the process ends; the front proxy's
/// `client_max_body_size` keeps such requests away).
pub(crate) fn dispose(request: tiny_http::Request, answer: Response, unread: Unread) {
    match unread {
        Unread::Nothing => {
            respond(request, answer);
        }
        Unread::Declared(n) if n <= MAX_DRAIN => {
            thread::spawn(move || respond_then_drain(request, answer));
        }
        Unread::Declared(n) if n > isize::MAX as u64 => {
            let _ = thread::Builder::new()
                .name(QUIET_THREAD.to_owned())
                .spawn(move || {
                    let _ = catch_unwind(AssertUnwindSafe(|| respond_then_drain(request, answer)));
                });
        }
        Unread::Declared(n) => abandon(request, answer, n),
    }
}

fn abandon(request: tiny_http::Request, answer: Response, unread: u64) {
    log::warn!(
        "abandoning a connection from {:?} that declared a {unread}-byte body",
        request.remote_addr()
    );
    // `upgrade` writes a head without a length and no body; an interim `100 Continue` (which
    // HTTP/1.1 clients skip) keeps that harmless, and the real answer follows it.
    let mut stream = request.upgrade("close", tiny_http::Response::empty(100));
    let body = answer.body.to_vec();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.status,
        StatusCode(answer.status).default_reason_phrase(),
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .and_then(|()| stream.flush());
    std::mem::forget(stream);
}

/// The most an answer's writes are gathered into before they go to the socket.
const WRITE_BUFFER: usize = 64 * 1024;

/// Writes `answer`, with its length (never chunked), to a request whose body was read (or is
/// not drained: no length, chunked, or buffered by tiny_http). tiny_http drops a `Connection`
/// header from answers (`Response::add_header`), so an answer cannot even ask the client to
/// close.
///
/// tiny_http writes an answer through a 1 KiB `BufWriter` with `io::copy`, which reads the body
/// 8 KiB at a time: every write of 1 KiB or more goes straight to the socket, and with
/// `TCP_NODELAY` each one is a packet of its own. A list answer made of many cached pieces
/// took one `send` per piece (314 for a gzipped list of 10,000 nodes), most of its time
/// (upstream: tiny-http/tiny-http#263, closed unmerged, on the 1 KiB buffer and 8 KiB copy).
/// So the answer is written as `Request::respond` does (the same head, `HEAD` without a body,
/// the same errors ignored), but into a buffer of up to [`WRITE_BUFFER`] in front of
/// tiny_http's writer: a few large writes per answer, one for a small answer with its head.
///
/// `Request::into_writer` drops the request, and so drains an unread body, before the answer
/// is written: a request with declared bytes left unread goes through [`respond_then_drain`].
///
/// Returns whether the answer was written whole (false: the client closed the connection, or
/// did not read for the write timeout).
pub(crate) fn respond(request: tiny_http::Request, answer: Response) -> bool {
    let status = answer.status;
    let (head, body, length) = response_of(answer);
    let head_only = *request.method() == tiny_http::Method::Head;
    let version = request.http_version().clone();
    let head_size: usize = head
        .headers()
        .iter()
        .map(|h| h.field.as_str().as_str().len() + h.value.as_str().len() + 4)
        .sum::<usize>()
        + 256;
    // What `Response::raw_print` sends a body with.
    let sends_body = !head_only && !matches!(status, 100..=199 | 204 | 304);
    let capacity = (head_size + if sends_body { length } else { 0 }).min(WRITE_BUFFER);
    // Dropping the writer (after the flush) lets tiny_http go on to the connection's next
    // request, as `respond` does.
    let mut writer = io::BufWriter::with_capacity(capacity, request.into_writer());
    // tiny_http prints the head (with the length); the body's pieces go straight into the
    // buffer, not through `io::copy`'s own 8 KiB buffer first. The request's headers are not
    // passed: tiny_http reads only `TE` from them, and `TE: chunked` would make it announce a
    // chunked body (whatever the length and threshold) that is then written unframed, as is.
    let written = head
        .raw_print(&mut writer, version, &[], true, None)
        .and_then(|()| {
            if sends_body {
                body.write_to(&mut writer)
            } else {
                Ok(())
            }
        })
        .and_then(|()| writer.flush());
    match &written {
        Ok(()) => {}
        // What `Request::respond` ignores: the client went away.
        Err(e) if client_closed(e) => {}
        Err(e) => log::debug!("could not write an answer: {e}"),
    }
    // Whatever a failed write left in the buffer is dropped, not tried again (a `BufWriter`
    // flushes when dropped: another wait of the write timeout on a client that does not read).
    drop(writer.into_parts());
    written.is_ok()
}

/// Writes `answer` through `Request::respond` (unbuffered, see [`respond`]), then drops the
/// request, which drains its unread body: for refusals, whose answers are small.
fn respond_then_drain(request: tiny_http::Request, answer: Response) {
    let (head, body, length) = response_of(answer);
    if let Err(e) = request.respond(head.with_data(body, Some(length))) {
        log::debug!("could not write an answer: {e}");
    }
}

/// `answer` as a tiny_http response without its body but with its length, the body, and that
/// length.
fn response_of(answer: Response) -> (tiny_http::Response<io::Empty>, http::Body, usize) {
    let content_type = Header::from_bytes(&b"Content-Type"[..], answer.content_type.as_bytes());
    let mut headers = vec![content_type.expect("valid header")];
    if let Some(allow) = answer.allow {
        headers.push(Header::from_bytes(&b"Allow"[..], allow.as_bytes()).expect("valid header"));
    }
    for (name, value) in &answer.headers {
        match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            Ok(header) => headers.push(header),
            Err(()) => log::error!("not a valid header value for {name}: {value:?}"),
        }
    }
    let length = answer.body.len();
    let response = tiny_http::Response::new(
        StatusCode(answer.status),
        headers,
        io::empty(),
        Some(length),
        None,
    )
    // We always know the length: never switch to chunked encoding.
    .with_chunked_threshold(usize::MAX);
    (response, answer.body, length)
}

/// True for the errors `Request::respond` treats as the client closing the connection.
fn client_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
    )
}

/// A body reader that fails with `TimedOut` once a read ends past `deadline`.
///
/// tiny_http gives no access to the socket, so a read that blocks cannot be interrupted
/// (#143); this bounds a body trickled in a byte at a time, and the server stops waiting for
/// a read that blocks past the deadline (see `server.rs`).
pub(crate) struct Deadline<R> {
    pub(crate) inner: R,
    pub(crate) deadline: Instant,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the body did not arrive in time",
            ));
        }
        self.inner.read(buf)
    }
}
