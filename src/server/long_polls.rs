//! Parked long-poll requests (`GET /nodes?index=V&wait=30s`): held off the worker pool until
//! the registry changes or their wait ends.
//!
//! [`Watchers`] is the parked set, with no sockets in it (the server parks its own request type
//! in it). One thread runs [`Watchers::run`]: it sleeps on a condition variable until a change
//! is announced ([`Watchers::changed`], called from the one place the store announces changes,
//! after the registry lock is released), the earliest wait ends, or [`Watchers::stop`]; then it
//! hands the requests that are due to its caller to be answered. An idle gateway with parked
//! watchers uses no CPU: there is no polling.
//!
//! A request is parked only while the registry is still at the version the client saw: a change
//! announced in between (the announced version is past the request's index) refuses the parking
//! and the request is answered at once. The set is bounded: past the bound, a request is
//! answered at once too (a normal answer, not an error).
//!
//! HTTP/1.1 answers on a connection go out in order, and tiny_http blocks the thread that
//! answers a later request until the earlier one is answered. So a request that arrives on the
//! connection of a parked request ([`Watchers::arrived`]) releases it at once, and a request is
//! not parked once a later request of its connection has arrived (even one already answered
//! and no longer counted: its answer waits behind this one): no worker ever waits behind a
//! parked request.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::lock;

/// Default number of requests that may wait at once (`--max-watchers`).
pub const DEFAULT_MAX_WATCHERS: usize = 10_000;

/// How long a long-poll waits when it gives `index` without `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest wait a long-poll may ask for; longer ones are shortened to it.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The parked set: requests of type `T` waiting for a change or their deadline.
pub struct Watchers<T> {
    state: Mutex<State<T>>,
    wake: Condvar,
    max: usize,
    /// How many are parked (read without the lock, for metrics and the fast path of
    /// [`Watchers::arrived`]).
    waiting: Arc<AtomicUsize>,
    /// Requests being served, by connection (peer address), to keep pipelined requests from
    /// waiting behind a parked one.
    in_flight: Mutex<HashMap<SocketAddr, Connection>>,
}

/// The requests of one connection being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Connection {
    /// How many: the entry goes when the last one is done.
    serving: u32,
    /// The arrival number of the latest (numbered from 1 while the entry lives).
    latest: u64,
}

/// A request's place on its connection: later arrivals there have greater numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    peer: SocketAddr,
    number: u64,
}

struct State<T> {
    /// The last version announced.
    version: u64,
    /// A change was announced since the parked set was last looked through.
    changed: bool,
    stopping: bool,
    /// By deadline (and a sequence number, so that keys are unique).
    parked: BTreeMap<(Instant, u64), Parked<T>>,
    /// The parked request of each connection.
    peers: HashMap<SocketAddr, (Instant, u64)>,
    next: u64,
    /// How often the run went to sleep with a request parked (tests wait for it, so that a
    /// wake they check is the one they cause).
    #[cfg(test)]
    sleeps: usize,
}

struct Parked<T> {
    item: T,
    index: u64,
    peer: Option<SocketAddr>,
}

/// Why a request was not parked: it is handed back, to be answered at once.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused<T> {
    /// The registry changed past the request's index.
    Changed(T),
    /// As many requests as the bound allows are waiting already.
    Full(T),
    /// The server is stopping.
    Stopping(T),
    /// A later request of the same connection is being served.
    Pipelined(T),
}

impl<T> Refused<T> {
    /// The request that was not parked.
    pub fn into_inner(self) -> T {
        match self {
            Refused::Changed(t)
            | Refused::Full(t)
            | Refused::Stopping(t)
            | Refused::Pipelined(t) => t,
        }
    }
}

impl<T> std::fmt::Debug for Watchers<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchers")
            .field("waiting", &self.waiting())
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<T> Watchers<T> {
    /// An empty set for a registry at `version`, holding at most `max` requests; `waiting` is
    /// kept equal to the number parked (a metrics gauge).
    pub fn new(version: u64, max: usize, waiting: Arc<AtomicUsize>) -> Watchers<T> {
        waiting.store(0, Ordering::Relaxed);
        Watchers {
            state: Mutex::new(State {
                version,
                changed: false,
                stopping: false,
                parked: BTreeMap::new(),
                peers: HashMap::new(),
                next: 0,
                #[cfg(test)]
                sleeps: 0,
            }),
            wake: Condvar::new(),
            max,
            waiting,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// How many requests are parked.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The registry changed to `version`: every request parked at an older one is due.
    /// Called after the registry lock is released.
    pub fn changed(&self, version: u64) {
        let mut state = lock(&self.state);
        if version > state.version {
            state.version = version;
            if !state.parked.is_empty() {
                state.changed = true;
                self.wake.notify_one();
            }
        }
    }

    /// Parks `item`, which saw the registry at `index`, until a change past it or `until`.
    /// `arrival` is its place on its connection ([`InFlight::arrival`]), still counted.
    pub fn park(
        &self,
        item: T,
        index: u64,
        until: Instant,
        arrival: Option<Arrival>,
    ) -> Result<(), Refused<T>> {
        // The in-flight lock is held while parking, so that a request of the same connection
        // either has arrived already (and is seen here even if it is answered and no longer
        // served: its answer waits behind this one), or finds this one parked when it arrives.
        let in_flight = lock(&self.in_flight);
        let later = |a: Arrival| in_flight.get(&a.peer).is_some_and(|c| c.latest > a.number);
        if arrival.is_some_and(later) {
            return Err(Refused::Pipelined(item));
        }
        let peer = arrival.map(|a| a.peer);
        let mut state = lock(&self.state);
        if state.stopping {
            return Err(Refused::Stopping(item));
        }
        if index < state.version {
            return Err(Refused::Changed(item));
        }
        if state.parked.len() >= self.max {
            return Err(Refused::Full(item));
        }
        let key = (until, state.next);
        state.next += 1;
        if let Some(peer) = peer {
            state.peers.insert(peer, key);
        }
        let earliest = state.parked.first_key_value().is_none_or(|(k, _)| key < *k);
        state.parked.insert(key, Parked { item, index, peer });
        self.waiting.store(state.parked.len(), Ordering::Relaxed);
        drop(in_flight);
        if earliest {
            // The watcher thread sleeps until the earliest deadline: this one is sooner.
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Runs `f` unless a later request of `arrival`'s connection has arrived (`None` then),
    /// under the lock [`Watchers::arrived`] takes: a later request either is seen here or
    /// arrives after `f` has run (and finds what `f` did). What an event stream opens under
    /// (the server's `streams.rs`), as [`Watchers::park`] parks under it.
    pub fn unless_pipelined<R>(
        &self,
        arrival: Option<Arrival>,
        f: impl FnOnce() -> R,
    ) -> Option<R> {
        let in_flight = lock(&self.in_flight);
        let later = |a: Arrival| in_flight.get(&a.peer).is_some_and(|c| c.latest > a.number);
        if arrival.is_some_and(later) {
            return None;
        }
        Some(f())
    }

    /// A request from `peer` is being served: counts it until the guard is dropped, and hands
    /// back the request parked on the same connection, if any, to be answered at once. Call it
    /// in the order requests come off the connection (the server does, under its taking lock):
    /// the arrival numbers [`Watchers::park`] compares follow that order.
    pub fn arrived(self: &Arc<Self>, peer: Option<SocketAddr>) -> (InFlight<T>, Option<T>) {
        let Some(peer) = peer else {
            let guard = InFlight {
                watchers: Arc::clone(self),
                arrival: None,
            };
            return (guard, None);
        };
        let number = {
            let mut in_flight = lock(&self.in_flight);
            let connection = in_flight.entry(peer).or_insert(Connection {
                serving: 0,
                latest: 0,
            });
            connection.serving += 1;
            connection.latest += 1;
            connection.latest
        };
        let guard = InFlight {
            watchers: Arc::clone(self),
            arrival: Some(Arrival { peer, number }),
        };
        if self.waiting() == 0 {
            return (guard, None);
        }
        let mut state = lock(&self.state);
        let released = state.peers.remove(&peer).and_then(|key| {
            let parked = state.parked.remove(&key)?;
            self.waiting.store(state.parked.len(), Ordering::Relaxed);
            Some(parked.item)
        });
        (guard, released)
    }

    /// Answers everything parked and refuses what comes later; [`Watchers::run`] returns.
    pub fn stop(&self) {
        let mut state = lock(&self.state);
        state.stopping = true;
        self.wake.notify_all();
    }

    /// The watcher thread: hands `release` every request that is due (changed past, past its
    /// deadline), sleeping in between, until [`Watchers::stop`], when it hands over the rest
    /// and returns. `release` is called without the lock held.
    pub fn run(&self, mut release: impl FnMut(Vec<T>)) {
        let mut state = lock(&self.state);
        loop {
            let due = self.due(&mut state, Instant::now());
            let stopping = state.stopping;
            if !due.is_empty() {
                drop(state);
                release(due);
                state = lock(&self.state);
                continue;
            }
            if stopping {
                return;
            }
            let next = state.parked.first_key_value().map(|((until, _), _)| *until);
            state = match next {
                None => self
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(until) => {
                    #[cfg(test)]
                    {
                        state.sleeps += 1;
                    }
                    let timeout = until.saturating_duration_since(Instant::now());
                    self.wake
                        .wait_timeout(state, timeout.max(Duration::from_millis(1)))
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }

    /// Takes the requests that are due at `now`: all of them when stopping.
    fn due(&self, state: &mut MutexGuard<'_, State<T>>, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        if state.stopping {
            due.extend(std::mem::take(&mut state.parked).into_values());
        } else {
            if std::mem::take(&mut state.changed) {
                let version = state.version;
                let (changed, waiting) = std::mem::take(&mut state.parked)
                    .into_iter()
                    .partition(|(_, p)| p.index < version);
                state.parked = waiting;
                let changed: BTreeMap<_, _> = changed;
                due.extend(changed.into_values());
            }
            while let Some(entry) = state.parked.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
        }
        if due.is_empty() {
            return Vec::new();
        }
        for parked in &due {
            if let Some(peer) = parked.peer {
                state.peers.remove(&peer);
            }
        }
        self.waiting.store(state.parked.len(), Ordering::Relaxed);
        due.into_iter().map(|p| p.item).collect()
    }
}

/// A request being served, counted by connection until dropped. The server drops it once the
/// request is routed or parked, before its answer is written: a request the client sends after
/// reading that answer never finds it still counted (and is never taken for a pipelined one).
pub struct InFlight<T> {
    watchers: Arc<Watchers<T>>,
    arrival: Option<Arrival>,
}

impl<T> InFlight<T> {
    /// The request's place on its connection, for [`Watchers::park`].
    pub fn arrival(&self) -> Option<Arrival> {
        self.arrival
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        if let Some(Arrival { peer, .. }) = self.arrival {
            let mut in_flight = lock(&self.watchers.in_flight);
            if let Some(connection) = in_flight.get_mut(&peer) {
                connection.serving -= 1;
                if connection.serving == 0 {
                    in_flight.remove(&peer);
                }
            }
        }
    }
}

/// Parses a `wait` value: `30s`, `1m`, `500ms`, `1h` or bare seconds (`30`, `1.5`).
pub fn parse_wait(text: &str) -> Option<Duration> {
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * scale).ok()
}

/// A little jitter, up to `wait / 16`, so that watchers parked together do not all come back
/// together when nothing changes.
pub fn jitter(wait: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // Each RandomState has keys of its own: the hash of nothing is a fresh random number.
    let hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let spread = (wait / 16).as_nanos() as u64;
    if spread == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(hasher.finish() % spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watchers(version: u64, max: usize) -> Arc<Watchers<u32>> {
        Arc::new(Watchers::new(version, max, Arc::new(AtomicUsize::new(0))))
    }

    fn peer(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn later(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    #[test]
    fn wait_values() {
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_wait("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("12"), Some(Duration::from_secs(12)));
        assert_eq!(parse_wait("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_wait("0"), Some(Duration::ZERO));
        for bad in [
            "",
            "s",
            "-1",
            "1x",
            "1 s",
            "1.",
            ".5",
            "1e9",
            "10S",
            "1.2.3",
            "99999999999999999999999h",
        ] {
            assert_eq!(parse_wait(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn jitter_stays_within_a_sixteenth() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_secs(16)) < Duration::from_secs(1));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_change_releases_what_was_parked_at_an_older_version() {
        let w = watchers(5, 10);
        w.park(1, 5, later(60), None).unwrap();
        w.park(2, 5, later(60), None).unwrap();
        assert_eq!(w.waiting(), 2);
        w.changed(6);
        let mut state = lock(&w.state);
        let due = w.due(&mut state, Instant::now());
        assert_eq!(due, vec![1, 2]);
        assert!(state.parked.is_empty());
        drop(state);
        assert_eq!(w.waiting(), 0);
    }

    #[test]
    fn parking_behind_the_announced_version_is_refused() {
        let w = watchers(5, 10);
        assert_eq!(w.park(1, 4, later(60), None), Err(Refused::Changed(1)));
        // Ahead of the announced version (the announcement is on its way): parked.
        assert_eq!(w.park(2, 6, later(60), None), Ok(()));
        w.changed(6);
        let mut state = lock(&w.state);
        assert!(w.due(&mut state, Instant::now()).is_empty());
    }

    #[test]
    fn the_bound_refuses_the_excess() {
        let w = watchers(0, 2);
        w.park(1, 0, later(60), None).unwrap();
        w.park(2, 0, later(60), None).unwrap();
        assert_eq!(w.park(3, 0, later(60), None), Err(Refused::Full(3)));
    }

    #[test]
    fn deadlines_release_in_order() {
        let w = watchers(0, 10);
        let now = Instant::now();
        w.park(1, 0, now + Duration::from_secs(2), None).unwrap();
        w.park(2, 0, now + Duration::from_secs(1), None).unwrap();
        w.park(3, 0, now + Duration::from_secs(3), None).unwrap();
        let mut state = lock(&w.state);
        assert_eq!(w.due(&mut state, now), Vec::<u32>::new());
        assert_eq!(w.due(&mut state, now + Duration::from_secs(2)), vec![2, 1]);
        assert_eq!(state.parked.len(), 1);
    }

    #[test]
    fn a_request_on_the_same_connection_releases_the_parked_one() {
        let w = watchers(0, 10);
        let (first, _) = w.arrived(peer(1000));
        let (other, _) = w.arrived(peer(1001));
        w.park(1, 0, later(60), first.arrival()).unwrap();
        w.park(2, 0, later(60), other.arrival()).unwrap();
        drop((first, other));
        let (guard, released) = w.arrived(peer(1000));
        assert_eq!(released, Some(1));
        assert_eq!(w.waiting(), 1);
        drop(guard);
        assert!(lock(&w.in_flight).is_empty());
    }

    #[test]
    fn a_request_is_not_parked_while_a_later_one_of_its_connection_is_served() {
        let w = watchers(0, 10);
        let (first, _) = w.arrived(peer(1000));
        let (_second, _) = w.arrived(peer(1000));
        assert_eq!(
            w.park(1, 0, later(60), first.arrival()),
            Err(Refused::Pipelined(1))
        );
    }

    #[test]
    fn a_request_is_not_parked_once_a_later_one_of_its_connection_was_answered() {
        // The later request routed and answered (its answer queued behind this one) before
        // this one parks: parking would hold that answer for the whole wait.
        let w = watchers(0, 10);
        let (first, _) = w.arrived(peer(1000));
        let (second, _) = w.arrived(peer(1000));
        drop(second);
        assert_eq!(
            w.park(1, 0, later(60), first.arrival()),
            Err(Refused::Pipelined(1))
        );
        drop(first);
        assert!(lock(&w.in_flight).is_empty());
    }

    #[test]
    fn a_request_sent_after_the_last_answer_parks() {
        let w = watchers(0, 10);
        let (first, _) = w.arrived(peer(1000));
        drop(first);
        let (next, _) = w.arrived(peer(1000));
        assert_eq!(w.park(1, 0, later(60), next.arrival()), Ok(()));
    }

    #[test]
    fn stop_hands_everything_over_and_ends_the_run() {
        let w = watchers(0, 10);
        w.park(1, 0, later(60), None).unwrap();
        w.park(2, 0, later(60), None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let runner = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.run(|batch| tx.send(batch).unwrap()))
        };
        w.stop();
        runner.join().unwrap();
        let released: Vec<u32> = rx.iter().flatten().collect();
        assert_eq!(released, vec![1, 2]);
        assert_eq!(w.park(3, 0, later(60), None), Err(Refused::Stopping(3)));
    }

    #[test]
    fn the_run_wakes_on_a_change() {
        let w = watchers(0, 10);
        let (tx, rx) = std::sync::mpsc::channel();
        let runner = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.run(|batch| tx.send(batch).unwrap()))
        };
        w.park(7, 0, later(600), None).unwrap();
        // The run asleep until the request's wait ends, ten minutes from now: only the change
        // can wake it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&w.state).sleeps == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(lock(&w.state).sleeps > 0, "the run never went to sleep");
        w.changed(1);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(vec![7]));
        w.stop();
        runner.join().unwrap();
    }
}
