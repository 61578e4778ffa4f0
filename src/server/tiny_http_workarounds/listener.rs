//! The listening socket and tiny_http's accept loops: socket options every accepted
//! connection inherits, and accept loops that die (#283) brought back on the same socket.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, Once, Weak};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};

use crate::lock;

/// How long writing an answer may block on a client that does not read.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive probes start after this much silence, so connections to vanished peers end.
pub(super) const KEEPALIVE_AFTER: Duration = Duration::from_secs(60);

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

/// One `tiny_http::Server` (its accept thread, connection pool and request queue) accepting
/// on a duplicate of our listening socket.
pub(super) struct AcceptLoop {
    /// Taken when the server stops: dropped with the last worker's handle, tiny_http's own
    /// close ends its accept thread (see [`Accepting::close`]).
    pub(super) server: Mutex<Option<Arc<tiny_http::Server>>>,
    /// The duplicate's descriptor number: it is closed when the accept thread ends.
    pub(super) fd: i32,
    /// Workers waiting in this loop's `recv()`.
    pub(super) attached: AtomicUsize,
}

impl AcceptLoop {
    pub(super) fn start(listener: &TcpListener) -> io::Result<AcceptLoop> {
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
    pub(super) fn server(&self) -> Option<Arc<tiny_http::Server>> {
        lock(&self.server).clone()
    }

    /// Wakes one thread waiting in this loop's `recv()`.
    pub(super) fn unblock(&self) {
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

    pub(super) fn current(&self) -> Arc<AcceptLoop> {
        Arc::clone(&lock(&self.current))
    }

    pub(super) fn stopping(&self) -> bool {
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

    pub(super) fn fail(&self, why: String) {
        log::error!("{why}");
        lock(&self.failure).get_or_insert_with(|| why.clone());
        if let Some(to) = lock(&self.on_failure).as_ref() {
            let _ = to.send(why);
        }
    }

    /// True while the accept thread of `accept_loop` runs: its duplicate of the listener is
    /// still open on the same socket.
    pub(super) fn is_accepting(&self, accept_loop: &AcceptLoop) -> bool {
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

    pub(super) fn restart(self: &Arc<Self>, dead: &Arc<AcceptLoop>, why: &str) {
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
            // The dead loop's connections, taken before the new loop accepts any: its drainer
            // ends once they are all closed (unknown when `/proc` cannot be read: it never
            // ends, as it did before).
            let start = headroom(&self.listener).and_then(|()| {
                let connections = self.listening.and_then(|l| accepted_sockets(l).ok());
                AcceptLoop::start(&self.listener).map(|fresh| (fresh, connections))
            });
            match start {
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
        let (fresh, connections) = fresh;
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
                    accepting.drain(&dead_loop, connections.as_ref());
                });
        }
        for _ in 0..self.workers {
            dead.unblock();
        }
    }

    /// Serves the requests of a dead accept loop's connections until they are all closed
    /// (`connections`, their sockets' inodes; `None`: until the server stops), then lets go of
    /// the loop.
    pub(super) fn drain(&self, dead: &Arc<AcceptLoop>, connections: Option<&HashSet<u64>>) {
        loop {
            let Some(server) = dead.server() else { return };
            let received = server.recv_timeout(DRAIN_CHECK);
            drop(server);
            match received {
                Ok(Some(request)) => (self.serve)(request),
                Ok(None) => {
                    if connections.is_some_and(|c| !any_open(c)) && !self.stopping() {
                        // No connection can send it anything any more.
                        lock(&self.retired).retain(|l| !Arc::ptr_eq(l, dead));
                        return;
                    }
                }
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

/// How often a drainer looks whether its dead loop's connections are all closed.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// The inodes of the sockets of this process accepted on `listening` (Linux: from
/// `/proc/self/fd`).
#[allow(unsafe_code)]
pub(super) fn accepted_sockets(listening: SocketAddr) -> io::Result<HashSet<u64>> {
    let mut found = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
        let Some(inode) = socket_inode(&entry.path()) else {
            continue;
        };
        let Some(number) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: as in `close_accepted`: the borrow lives only for the duplication.
        let duplicate = unsafe { BorrowedFd::borrow_raw(number) }.try_clone_to_owned();
        let Ok(duplicate) = duplicate else { continue };
        let socket = SockRef::from(&duplicate);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let connected = socket.peer_addr().is_ok();
        if connected && local.is_some_and(|l| accepted_on(listening, l)) {
            found.insert(inode);
        }
    }
    Ok(found)
}

/// True while any of the sockets `inodes` is still open in this process (or when that cannot
/// be read).
fn any_open(inodes: &HashSet<u64>) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return true;
    };
    entries
        .flatten()
        .any(|entry| socket_inode(&entry.path()).is_some_and(|i| inodes.contains(&i)))
}

/// The inode of the socket `/proc/self/fd/N` links to (`socket:[inode]`).
fn socket_inode(fd: &std::path::Path) -> Option<u64> {
    let link = std::fs::read_link(fd).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// How long [`Accepting::close`] waits for tiny_http's accept threads to end (they do at once:
/// dropping the `Server` connects to wake them).
pub(super) const ACCEPT_THREAD_EXIT: Duration = Duration::from_secs(1);

/// Shuts both ways every socket of this process accepted on `listening` but those connected to
/// a peer in `except` (see [`Accepting::close`]); returns how many. Linux: the sockets are
/// found in `/proc/self/fd`.
#[allow(unsafe_code)]
pub(super) fn close_accepted(listening: SocketAddr, except: &HashSet<SocketAddr>) -> usize {
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
pub(super) fn accepted_on(listening: SocketAddr, local: SocketAddr) -> bool {
    local.port() == listening.port()
        && (listening.ip().is_unspecified() || local.ip() == listening.ip())
}

/// A few spare descriptors, or the new accept loop would die (or panic) on the first
/// connection it accepts.
pub(super) fn headroom(listener: &TcpListener) -> io::Result<()> {
    let spare: io::Result<Vec<TcpListener>> = (0..8).map(|_| listener.try_clone()).collect();
    spare.map(drop)
}

/// Out of descriptors or memory: worth waiting for.
pub(super) fn is_shortage(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOMEM, ENOBUFS on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 12 | 105))
}

/// Servers whose accept loops the panic hook checks.
pub(super) static SUPERVISED: Mutex<Vec<Weak<Accepting>>> = Mutex::new(Vec::new());

/// Name of threads whose panics are expected (see [`dispose`]) and not printed.
pub(super) const QUIET_THREAD: &str = "gateway-huge-body";

pub(super) fn supervise(accepting: &Arc<Accepting>) {
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
