//! The client's watch thread: keeps the cached view current within moments of a change by
//! following the gateway's event stream, `GET /nodes?status=all&changes=1&stream=1&index=V&
//! epoch=E` (`stream.rs`), or, from a gateway without streams, by long-polling
//! `GET /nodes?status=all&changes=1&index=V&epoch=E&wait=W` (as Consul's blocking queries); and
//! feeding what it reads to the view (and so to subscribers). Each event of a stream is taken
//! exactly as a long-poll's answer would be ([`Watcher::take`]).
//!
//! - Delta answers: the gateway sends the events since `V` (a few hundred bytes a change,
//!   whatever the cluster's size) with the leader's id, and the thread applies them to every
//!   node it holds (`delta.rs`). It starts over from the full list on a `full` answer, an
//!   answer from another gateway run or address, or an event it cannot apply.
//! - A gateway without streams (older builds; a proxy that strips them) ignores `stream=1` and
//!   answers at once: the thread takes that answer and long-polls that gateway, asking for a
//!   stream again after 10 minutes or once another gateway answers.
//! - A gateway that does not know `changes=1` ignores it and answers the list: told by the
//!   body, the thread then watches lists (`/nodes?status=all`, then `/leader` on a change),
//!   until another gateway answers.
//! - It sends back the `X-Gateway-Index` and `X-Gateway-Epoch` of the last answer (of a
//!   stream: the `id` of its last event, and the epoch of its head). An answer from another
//!   run (a new epoch, or an index that went backwards) resets the index to that answer's, as
//!   Consul's clients do; the view's carry logic handles the restart itself.
//! - A gateway that does not long-poll (the original: no `X-Gateway-Index`) answers at once;
//!   the thread then polls once per heartbeat interval.
//! - A failure (gateway down, an error answer, a stream that broke or stayed silent 60 s)
//!   pauses with the client's backoff before the next try, and the transport rotates through
//!   the gateways as for any call. An answer that comes back at once unchanged (a gateway full
//!   of parked requests) pauses too, and so do a stream that ends without an event and the
//!   second answer in a row from yet another gateway run (gateways that do not share a
//!   registry, taken in turn behind one address): never a spin. A stream that ends after
//!   events is opened again at once from the last index.
//! - Idle, it costs one open stream (a keepalive line each 25 s), or one parked request per
//!   wait period when long-polling. No lock is held across a request.
//! - Its long-polls and streams go through an agent of its own ([`WatchAgent`]). Stopping shuts
//!   that agent down: the parked request or the stream being read fails at once, the thread
//!   ends, and records nothing after. Stopping does not wait for the gateway; it waits for the
//!   thread [`PARKED_GRACE`] at most then. A request between changes (`/health`, `/leader`) is
//!   not cut: the thread is left to end with it (within the deadline).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::api::{Health, LeaderResponse, NodesResponse};
use crate::client::error::ClientError;
use crate::client::session::Shared;
use crate::client::transport::{Method, Reply, WatchAgent, backoff};
use crate::client::view::ClusterInfo;
use crate::client::view::split;

mod delta;
mod stream;

use delta::{Answer, Mirror, Mode};

/// How long a long-poll waits unless the builder says otherwise (Consul's default is 5 min;
/// 30 s stays under the read timeouts of common proxies, nginx's 60 s among them).
pub const DEFAULT_WATCH_WAIT: Duration = Duration::from_secs(30);
/// The gateway holds a long-poll at most this long (its own cap).
const MAX_WAIT: Duration = Duration::from_secs(300);
/// How long stopping waits for a thread that was parked (on a long-poll or a stream) to end,
/// its connection shut down: it takes microseconds; this bounds a surprise.
const PARKED_GRACE: Duration = Duration::from_millis(500);
/// The shortest wait asked for: an idle watch sends a request per wait, and a wait of a
/// millisecond (or zero) would be a request a millisecond.
const MIN_WAIT: Duration = Duration::from_millis(100);

/// A running watch thread. Stop it with [`Watch::stop`].
#[derive(Debug)]
pub(crate) struct Watch {
    stop: Sender<()>,
    /// Disconnected when the thread ends.
    done: Receiver<()>,
    /// True while the thread waits for a long-poll's answer or a stream's next event.
    parked: Arc<AtomicBool>,
    /// The thread's long-polls and streams go through it: shut down to stop.
    agent: WatchAgent,
    thread: JoinHandle<()>,
}

/// A watch thread told to stop, not yet waited for.
#[derive(Debug)]
pub(crate) struct Stopping {
    done: Receiver<()>,
    parked: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Watch {
    /// Starts watching through `shared`, each long-poll waiting up to `wait`.
    pub(crate) fn start(shared: Arc<Shared>, wait: Duration) -> Watch {
        let wait = wait.clamp(MIN_WAIT, MAX_WAIT);
        let (stop, stopped) = mpsc::channel();
        let (finished, done) = mpsc::channel::<()>();
        let parked = Arc::new(AtomicBool::new(false));
        let agent = shared.transport.watch_agent();
        let thread = {
            let parked = Arc::clone(&parked);
            let agent = agent.clone();
            thread::Builder::new()
                .name("gateway-watch".to_owned())
                .spawn(move || {
                    let _finished = finished;
                    run(&shared, &stopped, &parked, &agent, wait);
                })
                .expect("spawn the watch thread")
        };
        Watch {
            stop,
            done,
            parked,
            agent,
            thread,
        }
    }

    /// True until the thread has ended.
    pub(crate) fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    /// Tells the thread to stop, and shuts its connection down (a parked long-poll or an open
    /// stream fails at once); [`Stopping::wait`] waits for it.
    pub(crate) fn signal(self) -> Stopping {
        drop(self.stop);
        self.agent.shutdown();
        Stopping {
            done: self.done,
            parked: self.parked,
            thread: self.thread,
        }
    }
}

impl Stopping {
    /// Waits until `until` at most for the thread to end. A thread in the middle of a request
    /// is left to end with it in the background; it records nothing after. One waiting for a
    /// long-poll's answer or a stream's next event had its connection shut down under it and
    /// ends at once: it is waited for [`PARKED_GRACE`] at most, never for the answer.
    pub(crate) fn wait(self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        let left = match self.parked.load(Ordering::SeqCst) {
            true => left.min(PARKED_GRACE),
            false => left,
        };
        match self.done.recv_timeout(left) {
            Err(RecvTimeoutError::Disconnected) => {
                let _ = self.thread.join();
            }
            _ => log::debug!("the watch thread ends its parked request in the background"),
        }
    }
}

/// Where the watch stands, from the answers so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// Nothing seen yet: ask for the list as it is.
    Start,
    /// Long-poll from `index` of run `epoch`.
    At { index: u64, epoch: String },
    /// The gateway does not long-poll: ask once per heartbeat interval.
    Polling,
}

/// What an answer says, against the cursor it was asked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// The registry moved on (or this is the first answer): read and feed the view.
    Changed,
    /// Another gateway run answered (a new epoch, or an index that went backwards): the index
    /// starts over from this answer's; read and feed the view, which carries peers over.
    Restarted,
    /// The wait ended with nothing new.
    Unchanged,
}

/// The cursor after an answer that carried `index` and `epoch` (its `X-Gateway-*` headers).
fn advance(cursor: &Cursor, index: Option<u64>, epoch: Option<&str>) -> (Cursor, Seen) {
    let Some(index) = index else {
        return (Cursor::Polling, Seen::Changed);
    };
    let epoch = epoch.unwrap_or_default().to_owned();
    let seen = match cursor {
        Cursor::At {
            index: old,
            epoch: old_epoch,
        } => {
            if *old_epoch != epoch || index < *old {
                Seen::Restarted
            } else if index == *old {
                Seen::Unchanged
            } else {
                Seen::Changed
            }
        }
        Cursor::Start | Cursor::Polling => Seen::Changed,
    };
    (Cursor::At { index, epoch }, seen)
}

/// The request for `cursor`: every peer, suspected ones included (so that a suspicion is
/// seen), without this node when it is registered.
fn path(cursor: &Cursor, node_id: Option<u64>, wait: Duration) -> String {
    let mut path = "/nodes?status=all".to_owned();
    if let Some(id) = node_id {
        path.push_str(&format!("&node_id={id}"));
    }
    push_cursor(&mut path, cursor, wait);
    path
}

/// The delta request for `cursor`: every node (suspected ones, and this node, whose record the
/// leader may need), the events since the index, or everything from the start.
fn delta_path(cursor: &Cursor, wait: Duration) -> String {
    let mut path = "/nodes?status=all&changes=1".to_owned();
    push_cursor(&mut path, cursor, wait);
    path
}

/// Adds the long-poll's index, epoch and wait to `path`, once there is an index to wait past.
fn push_cursor(path: &mut String, cursor: &Cursor, wait: Duration) {
    if let Cursor::At { index, epoch } = cursor {
        path.push_str(&format!(
            "&index={index}&epoch={}&wait={}ms",
            escape(epoch),
            wait.as_millis().max(1)
        ));
    }
}

/// Feeds the view from a list answer (a gateway without delta answers): reads `/leader`, as a
/// list does not name it.
fn feed_list(
    shared: &Shared,
    pause: &dyn Fn(Duration) -> bool,
    seen: Seen,
    list: NodesResponse,
    view_epoch: Option<String>,
) -> Result<(), ClientError> {
    if seen == Seen::Restarted {
        // Another run: its settings (the carry period) may differ too.
        learn_settings(shared, pause);
    }
    let leader: LeaderResponse = shared.call(Method::Get, "/leader", None::<&()>, pause)?;
    if !pause(Duration::ZERO) {
        return Ok(()); // Stopped meanwhile: record nothing.
    }
    let (nodes, suspected) = split(list.nodes, shared.node_id());
    shared.update_view(
        ClusterInfo {
            nodes,
            leader: leader.leader,
            registry_version: list.registry_version,
        },
        Some(suspected),
        view_epoch,
    );
    Ok(())
}

/// Percent-encodes all but RFC 3986's unreserved characters (an epoch is hex and dashes, but a
/// gateway is not to be trusted to keep it so).
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn run(
    shared: &Shared,
    stopped: &Receiver<()>,
    parked: &AtomicBool,
    agent: &WatchAgent,
    wait: Duration,
) {
    // Waits, returning false once the client asks the thread to stop; `pause(ZERO)` asks
    // whether it has.
    let pause = |duration: Duration| {
        matches!(
            stopped.recv_timeout(duration),
            Err(RecvTimeoutError::Timeout)
        )
    };
    if shared.state().settings == Default::default() {
        learn_settings(shared, &pause);
    }
    // The gateway adds up to wait/16 of jitter; the request may take that long on purpose.
    let held = wait + wait / 16 + Duration::from_millis(100);
    let mut watcher = Watcher {
        shared,
        pause: &pause,
        wait,
        cursor: Cursor::Start,
        mode: Mode::Ask,
        mirror: Mirror::default(),
        gateway: String::new(),
        no_streams: None,
        failures: 0,
        quick: 0,
        restarts: 0,
        resyncs: 0,
    };
    loop {
        if !pause(Duration::ZERO) {
            return;
        }
        let rest = if watcher.streams() {
            stream::follow(&mut watcher, agent, parked)
        } else {
            let me = shared.node_id();
            let asked = Instant::now();
            let request = match watcher.mode {
                Mode::Ask => delta_path(&watcher.cursor, wait),
                Mode::Lists => path(&watcher.cursor, me, wait),
            };
            parked.store(
                matches!(watcher.cursor, Cursor::At { .. }),
                Ordering::SeqCst,
            );
            let answer = shared.call_held::<Answer>(agent, &request, &pause, held);
            parked.store(false, Ordering::SeqCst);
            let answered_by = shared.transport.current().to_owned();
            watcher.take(answer, &answered_by, Some(asked))
        };
        match rest {
            None => return,
            Some(rest) if !rest.is_zero() && !pause(rest) => return,
            Some(_) => {}
        }
    }
}

/// What the watch holds between requests, and what it does with an answer.
struct Watcher<'a> {
    shared: &'a Shared,
    pause: &'a dyn Fn(Duration) -> bool,
    wait: Duration,
    cursor: Cursor,
    /// Delta answers until the gateway shows it does not know them; what they built.
    mode: Mode,
    mirror: Mirror,
    /// The gateway the cursor and the mode belong to: versions are per gateway.
    gateway: String,
    /// The gateway that answered a stream request with something else, and when: it is
    /// long-polled instead (see `stream.rs`).
    no_streams: Option<(String, Instant)>,
    /// Failed rounds in a row.
    failures: u32,
    /// Unchanged answers in a row that came back well before the wait ended (and streams
    /// that ended at once without an event).
    quick: u32,
    /// Answers in a row that each came from another gateway run.
    restarts: u32,
    /// Delta answers in a row that could not be applied (each asks for a full one at once).
    resyncs: u32,
}

impl Watcher<'_> {
    /// True if the next request is for an event stream: the gateway in use sends delta
    /// answers (or has not said), and has not answered a stream request with something else
    /// lately.
    fn streams(&self) -> bool {
        let refused = self.no_streams.as_ref().is_some_and(|(gateway, when)| {
            gateway == self.shared.transport.current() && when.elapsed() < stream::RETRY_STREAMS
        });
        self.mode == Mode::Ask && self.cursor != Cursor::Polling && !refused
    }

    /// Takes `answer` (a long-poll's answer, asked at `asked`; or an event of a stream, or an
    /// answer given at once, without it) from gateway `from`: feeds the view and moves the
    /// cursor. Returns how long to pause before the next request, or `None` once the watch is
    /// stopped.
    fn take(
        &mut self,
        answer: Result<Reply<Answer>, ClientError>,
        from: &str,
        asked: Option<Instant>,
    ) -> Option<Duration> {
        let (shared, pause) = (self.shared, self.pause);
        let switched = from != self.gateway;
        if switched {
            // Another gateway: its versions and its support for delta answers are its own.
            self.gateway = from.to_owned();
            self.mode = Mode::Ask;
        }
        let result = match answer.and_then(|reply| self.read(reply, switched, from)) {
            Ok(Some(step)) => {
                self.resyncs = 0;
                Ok(step)
            }
            Ok(None) => {
                // Start over from a full answer, at once the first time.
                self.resyncs += 1;
                log::debug!("the watch starts over from the full list");
                self.cursor = Cursor::Start;
                return Some(match self.resyncs {
                    1 => Duration::ZERO,
                    resyncs => retry_pause(shared, resyncs - 1),
                });
            }
            Err(e) => Err(e),
        };
        if !pause(Duration::ZERO) {
            return None;
        }
        let (next, seen) = match result {
            Ok(step) => step,
            Err(e) => {
                self.failures += 1;
                log::warn!(
                    "watching the gateway failed ({} in a row): {e}",
                    self.failures
                );
                return Some(retry_pause(shared, self.failures));
            }
        };
        self.failures = 0;
        self.restarts = match seen {
            Seen::Restarted => self.restarts + 1,
            _ => 0,
        };
        if self.restarts == 2 {
            log::warn!(
                "the gateway's run changed on two answers in a row: are the gateways behind \
                 one address each with a registry of its own? The watch slows down until it \
                 settles"
            );
        }
        if seen == Seen::Changed && matches!(self.cursor, Cursor::At { .. }) {
            log::debug!("the watch saw a change");
        }
        self.cursor = next;
        Some(match (&self.cursor, seen) {
            (Cursor::Polling, _) => shared.current_interval(),
            (_, Seen::Unchanged) => {
                shared.confirm_view();
                // Back at once with the index it was sent: the gateway holds as many requests
                // as it will, or is stopping. Ask again after a pause that grows while this
                // goes on. (An answer not held on purpose is not one of those.)
                if asked.is_some_and(|asked| asked.elapsed() < self.wait / 2) {
                    self.quick += 1;
                    retry_pause(shared, self.quick)
                } else {
                    self.quick = 0;
                    Duration::ZERO
                }
            }
            // One restart is read at once; every answer from another run (gateways that do not
            // share a registry, taken in turn behind one address) would be a loop that never
            // waits: from the second in a row, pause.
            (_, Seen::Restarted) if self.restarts > 1 => {
                self.quick = 0;
                retry_pause(shared, self.restarts - 1)
            }
            _ => {
                self.quick = 0;
                Duration::ZERO
            }
        })
    }

    /// Reads `reply` into the view: `Ok(None)` when it is a delta that cannot be applied (ask
    /// for a full answer).
    fn read(
        &mut self,
        reply: Reply<Answer>,
        switched: bool,
        from: &str,
    ) -> Result<Option<(Cursor, Seen)>, ClientError> {
        let (shared, pause) = (self.shared, self.pause);
        let me = shared.node_id();
        let value = reply.value.ok_or_else(|| ClientError::InvalidResponse {
            address: from.to_owned(),
            reason: "304 Not Modified to a request that was not conditional".to_owned(),
        })?;
        let (next, seen) = advance(&self.cursor, reply.index, reply.epoch.as_deref());
        let view_epoch = reply.index.and(reply.epoch);
        let changes = match value {
            Answer::Changes(changes) => changes,
            Answer::List(list) => {
                // A gateway that does not know `changes=1` answers the list it would have
                // without it (every node: `status=all` is sent): use it, and ask for lists
                // from now on.
                if self.mode == Mode::Ask {
                    log::debug!("the gateway sends no delta answers: watching lists");
                    self.mode = Mode::Lists;
                }
                if seen != Seen::Unchanged {
                    feed_list(shared, pause, seen, list, view_epoch)?;
                }
                return Ok(Some((next, seen)));
            }
        };
        // A delta applies only to what this gateway run answered before.
        let applies = changes.full
            || (!switched && seen != Seen::Restarted && matches!(self.cursor, Cursor::At { .. }));
        let patch = match applies.then(|| self.mirror.apply(changes, me)) {
            Some(Ok(patch)) => patch,
            None | Some(Err(_)) => return Ok(None),
        };
        if seen == Seen::Restarted {
            learn_settings(shared, pause);
        }
        if seen != Seen::Unchanged && pause(Duration::ZERO) {
            // A delta patches the view the previous answer made (a few records, not the whole
            // cluster copied and compared); when the view moved on meanwhile (the heartbeat
            // thread or a registration fed it), it is described whole.
            let patched = patch.is_some_and(|patch| shared.patch_view(patch, &view_epoch));
            if !patched {
                let (cluster, suspected) = self.mirror.view(me);
                shared.update_view(cluster, Some(suspected), view_epoch);
            }
        }
        Ok(Some((next, seen)))
    }
}

/// The pause after `failures` failed (or fruitless) rounds in a row: the client's backoff
/// (full jitter, from its base delay, doubling), at least half the base delay and at most the
/// heartbeat interval, so that the watch neither spins nor falls further behind than the
/// heartbeat would.
fn retry_pause(shared: &Shared, failures: u32) -> Duration {
    let base = shared.transport.base_delay();
    let floor = (base / 2).max(Duration::from_millis(1));
    let ceiling = shared.current_interval().max(floor);
    backoff(base, failures.saturating_sub(1)).clamp(floor, ceiling)
}

/// Learns the gateway's liveness settings (the heartbeat interval paces polling; the suspect
/// period is how long peers are carried over a restart). A failure is left to the next try.
fn learn_settings(shared: &Shared, pause: &dyn Fn(Duration) -> bool) {
    if let Ok(health) = shared.call::<Health>(Method::Get, "/health?live", None::<&()>, pause) {
        shared.learn_settings(health.settings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(index: u64, epoch: &str) -> Cursor {
        Cursor::At {
            index,
            epoch: epoch.to_owned(),
        }
    }

    #[test]
    fn the_index_follows_the_gateway_and_resets_on_another_run() {
        let (cursor, seen) = advance(&Cursor::Start, Some(5), Some("a"));
        assert_eq!((cursor.clone(), seen), (at(5, "a"), Seen::Changed));
        assert_eq!(advance(&cursor, Some(5), Some("a")).1, Seen::Unchanged);
        assert_eq!(
            advance(&cursor, Some(9), Some("a")),
            (at(9, "a"), Seen::Changed)
        );
        // A restart without a data directory: the version went backwards, or the epoch moved.
        assert_eq!(
            advance(&cursor, Some(2), Some("a")),
            (at(2, "a"), Seen::Restarted)
        );
        assert_eq!(
            advance(&cursor, Some(7), Some("b")),
            (at(7, "b"), Seen::Restarted)
        );
    }

    #[test]
    fn an_answer_without_an_index_means_polling() {
        assert_eq!(
            advance(&Cursor::Start, None, None),
            (Cursor::Polling, Seen::Changed)
        );
        assert_eq!(
            advance(&at(4, "a"), None, None),
            (Cursor::Polling, Seen::Changed)
        );
    }

    #[test]
    fn the_request_asks_for_suspected_nodes_and_sends_the_cursor_back() {
        let wait = Duration::from_secs(30);
        assert_eq!(path(&Cursor::Start, None, wait), "/nodes?status=all");
        assert_eq!(
            path(&Cursor::Polling, Some(3), wait),
            "/nodes?status=all&node_id=3"
        );
        assert_eq!(
            path(&at(42, "18c3f-1f2"), Some(3), wait),
            "/nodes?status=all&node_id=3&index=42&epoch=18c3f-1f2&wait=30000ms"
        );
        assert_eq!(
            path(&at(1, "a b&c"), None, Duration::from_millis(250)),
            "/nodes?status=all&index=1&epoch=a%20b%26c&wait=250ms"
        );
    }
}
