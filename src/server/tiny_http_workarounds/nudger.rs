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
    seen: Mutex<Seen>,
    pending: Mutex<usize>,
    wake: Condvar,
    stopping: AtomicBool,
}

/// Peers remembered in each of the two generations of [`Seen`]: at most twice this many.
pub(super) const SEEN_PEERS: usize = 16_384;

/// The peers seen, in two generations: a peer is looked for in both and recorded in the
/// current one; when the current one is full it becomes the previous one, and the previous one
/// is forgotten. Memory stays bounded, and a connection that sends a request at least once
/// while [`SEEN_PEERS`] new connections arrive is never forgotten (it moves to the current
/// generation each time): past the bound only connections silent that long are nudged again,
/// never nearly every request.
#[derive(Default)]
struct Seen {
    current: HashSet<SocketAddr>,
    previous: HashSet<SocketAddr>,
}

impl Seen {
    /// Records `peer`; true if it was not seen before.
    fn first(&mut self, peer: SocketAddr) -> bool {
        if self.current.contains(&peer) {
            return false;
        }
        let known = self.previous.remove(&peer);
        if self.current.len() >= SEEN_PEERS {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(peer);
        !known
    }
}

impl Nudger {
    pub(crate) fn new(listening: SocketAddr) -> Nudger {
        Nudger {
            target: reachable(listening),
            seen: Mutex::new(Seen::default()),
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
        let first = lock(&self.seen).first(*peer);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_connections_that_keep_sending_are_nudged_for_once_each() {
        let nudger = Nudger::new(SocketAddr::from(([127, 0, 0, 1], 9)));
        // Before: past 4,096 the memory started over, and nearly every request nudged.
        let peers: Vec<SocketAddr> = (0..10_000u32)
            .map(|i| SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000)))
            .collect();
        for peer in &peers {
            nudger.on_request(Some(peer), true);
        }
        let first = *lock(&nudger.pending);
        assert_eq!(first, peers.len(), "one nudge for each new connection");
        for _ in 0..3 {
            for peer in &peers {
                nudger.on_request(Some(peer), true);
            }
        }
        let again = *lock(&nudger.pending) - first;
        assert_eq!(again, 0, "requests of connections already seen");
        // New connections without end: memory stays within the two generations.
        for i in 0..3 * SEEN_PEERS as u32 {
            let peer = SocketAddr::from(([11, (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000));
            nudger.on_request(Some(&peer), true);
        }
        let seen = lock(&nudger.seen);
        assert!(seen.current.len() + seen.previous.len() <= 2 * SEEN_PEERS);
    }
}
