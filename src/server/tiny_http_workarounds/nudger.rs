//! Connections queued behind busy pool threads: the keep-alive nudger.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::lock;

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
pub(super) const SEEN_PEERS: usize = 4096;

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
pub(super) fn reachable(addr: SocketAddr) -> SocketAddr {
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
