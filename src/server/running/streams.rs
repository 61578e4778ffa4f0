//! Event streams: `GET /nodes?changes=1&stream=1`, a delta answer that stays open.
//!
//! A long-poll watcher costs an HTTP exchange per change (its request read, routed, answered,
//! and the next one asked): about 40 us of the gateway's CPU, so a thousand watchers and a
//! hundred changes a second were more than a core. A stream costs one write per change: the
//! events since the client's index go out as Server-Sent Events (`id: VERSION`, `data:` the
//! delta answer's JSON), in a chunked body that ends only when the client goes away, the
//! gateway stops, or the client sends another request on the connection.
//!
//! The worker that read the request hands the connection here ([`Streams::open`]): no worker
//! is held by an open stream (tiny_http keeps its thread reading the connection, as for any
//! open connection). One thread, the
//! fan-out, wakes on every change: it reads the events once for each index the streams are at
//! (usually one for them all: the changes since the last pass), makes the frame once, and
//! queues it on every stream. The writes of a pass are one job on a [`Senders`] pool, which
//! writes the streams in turn; a stream whose client does not read holds only the thread
//! writing to it (a helper job behind each pass takes the rest once the pool's stall rule
//! says so, see [`Streams::write`]). Frames are shared between the streams they go to (a full
//! list once, whatever the number of streams); those queued behind a write in progress go out
//! with the next write; a stream with more than [`MAX_QUEUED`] bytes waiting is ended (its
//! client reads too slowly to follow the changes; it asks again with its last id). A stream with
//! nothing to say for half of [`KEEPALIVE`] gets a comment line, so that proxies keep it open
//! and a vanished client is noticed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::api::NodeId;
use crate::lock;
use crate::server::gateway::Gateway;
use crate::server::http::{self, StreamStart};
use crate::server::long_polls::{Arrival, Watchers};
use crate::server::store::Delta;

use super::settling::Senders;
use super::worker::Answering;

/// A stream with nothing sent for this long gets a comment line (`:`): under the 60 s idle
/// timeout of common proxies (nginx's `proxy_read_timeout`), and what a client may take as
/// the longest silence of a live stream.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(25);

/// Most bytes queued on one stream behind a write in progress before the stream is ended.
pub(super) const MAX_QUEUED: usize = 1 << 20;

/// One chunk of a stream's body, framed (`SIZE\r\n...\r\n`), shared by every stream it goes to.
type Frame = Arc<[u8]>;

/// The open streams, and the fan-out thread's state.
pub(super) struct Streams {
    state: Mutex<State>,
    wake: Condvar,
    /// Write the frames (`gateway-stream` threads).
    writers: Arc<Senders>,
    /// Most streams open at once (as many as long-polls may be parked, `--max-watchers`);
    /// past it, a request for one gets a delta answer.
    max: usize,
    /// `/metrics`' `streams_open`, kept equal to the number of streams listed.
    gauge: Arc<AtomicUsize>,
    /// [`KEEPALIVE`] in milliseconds (tests shorten it).
    keepalive_ms: AtomicU64,
    /// The keepalive comment line as a chunk, made once.
    keepalive_frame: Frame,
    /// The last full-list event made, by list version and the node left out: streams that
    /// start together (or fall behind together) share it.
    full: Mutex<Option<(u64, Option<NodeId>, Frame)>>,
}

#[derive(Default)]
struct State {
    streams: Vec<Arc<Stream>>,
    /// The peers of `streams`: a request on one of these connections ends its stream.
    peers: HashSet<SocketAddr>,
    /// The registry version the change hook last told of.
    latest: u64,
    /// Set when there is something for the fan-out to do (a change, a stream behind).
    dirty: bool,
    stopping: bool,
}

/// One open stream.
pub(super) struct Stream {
    peer: Option<SocketAddr>,
    exclude: Option<NodeId>,
    out: Mutex<Out>,
    /// Shutdown waits for the stream's last write (and, via it, the connection's end).
    _exit: Sender<()>,
    _answering: Answering,
}

struct Out {
    /// Taken by the thread writing; `None` once the last chunk (or a failed write) is done.
    writer: Option<Box<dyn Write + Send>>,
    /// The registry version the frames handed to the stream reach.
    since: u64,
    /// Frames waiting for the write in progress (or for the one about to start).
    queued: Vec<Frame>,
    queued_bytes: usize,
    writing: bool,
    /// When the last frame was handed over (a keepalive after half the keepalive of nothing).
    last: Instant,
    /// No frame is taken any more: the last chunk is queued (or the write failed).
    ended: bool,
}

/// The body's last chunk.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl Streams {
    pub(super) fn new(version: u64, max: usize, gauge: Arc<AtomicUsize>) -> Streams {
        Streams {
            state: Mutex::new(State {
                latest: version,
                ..State::default()
            }),
            wake: Condvar::new(),
            writers: Arc::new(Senders::named("gateway-stream")),
            max,
            gauge,
            keepalive_ms: AtomicU64::new(KEEPALIVE.as_millis() as u64),
            keepalive_frame: Arc::from(chunk(b": keepalive\n\n")),
            full: Mutex::new(None),
        }
    }

    fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms.load(Ordering::Relaxed))
    }

    /// Sets the keepalive (a test seam: [`KEEPALIVE`] is 25 s).
    #[cfg(test)]
    pub(super) fn set_keepalive(&self, keepalive: Duration) {
        self.keepalive_ms
            .store(keepalive.as_millis() as u64, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Open streams now.
    pub(super) fn open_count(&self) -> usize {
        lock(&self.state).streams.len()
    }

    /// The change hook: the registry is at `version`.
    pub(super) fn changed(&self, version: u64) {
        let mut state = lock(&self.state);
        if version > state.latest {
            state.latest = version;
            state.dirty = true;
            if !state.streams.is_empty() {
                self.wake.notify_one();
            }
        }
    }

    /// A request arrived on connection `peer`: a stream open on it ends (what was queued, then
    /// its last chunk), so that the request's answer can be written after it. Cheap when there
    /// is none.
    pub(super) fn arrived(&self, peer: Option<SocketAddr>) {
        let Some(peer) = peer else { return };
        let mut state = lock(&self.state);
        if !state.peers.remove(&peer) {
            return;
        }
        let (ended, kept) = std::mem::take(&mut state.streams)
            .into_iter()
            .partition(|s| s.peer == Some(peer));
        state.streams = kept;
        self.gauge.store(state.streams.len(), Ordering::Relaxed);
        drop(state);
        for stream in ended {
            stream.end(false, &self.writers);
        }
    }

    /// Starts a stream on `request`'s connection: the head and the first event (the changes
    /// after the client's index, or the whole list), then the events after as they come.
    /// Returns `Err` with the request if it must be answered as a delta answer instead: an
    /// HTTP/1.0 request (its body could only end by closing the connection, which tiny_http
    /// may keep open), as many streams open as `--max-watchers`, stopping, or a later request
    /// of the same connection already arrived (`arrival`: this one's place on it, checked
    /// under the lock `Watchers::arrived` takes, so such a request either is seen here or
    /// arrives after the stream is listed, and ends it).
    pub(super) fn open<W>(
        self: &Arc<Self>,
        gateway: &Gateway,
        request: tiny_http::Request,
        start: StreamStart,
        (answering, exit): (Answering, Sender<()>),
        (watchers, arrival): (&Watchers<W>, Option<Arrival>),
    ) -> Result<(), Box<tiny_http::Request>> {
        if *request.http_version() == tiny_http::HTTPVersion(1, 0) {
            return Err(Box::new(request));
        }
        {
            let state = lock(&self.state);
            if state.stopping || state.streams.len() >= self.max {
                return Err(Box::new(request));
            }
        }
        // The first event, read outside every lock of ours (the change hook takes ours).
        let (since, first) = match start
            .index
            .and_then(|i| gateway.delta(i).filter(|d| d.version >= i))
        {
            Some(delta) if delta.changes.is_empty() => (delta.version, None),
            Some(delta) => (
                delta.version,
                Some(event(
                    delta.version,
                    &http::events_body(&delta, start.exclude),
                )),
            ),
            None => {
                let (version, frame) = self.full_event(gateway, start.exclude);
                (version, Some(frame))
            }
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
             X-Accel-Buffering: no\r\nX-Gateway-Index: {since}\r\nX-Gateway-Epoch: {}\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
            gateway.epoch(),
        );
        let mut queued: Vec<Frame> = vec![Arc::from(head.into_bytes())];
        queued.extend(first);
        let peer = request.remote_addr().copied();
        let mut request = Some(request);
        let (mut answering, mut exit) = (Some(answering), Some(exit));
        let opened = watchers.unless_pipelined(arrival, || {
            let mut state = lock(&self.state);
            if state.stopping || state.streams.len() >= self.max {
                return None;
            }
            let writer = request.take()?.into_writer();
            let stream = Arc::new(Stream {
                peer,
                exclude: start.exclude,
                out: Mutex::new(Out {
                    writer: Some(writer),
                    since,
                    queued_bytes: queued.iter().map(|f| f.len()).sum(),
                    queued: std::mem::take(&mut queued),
                    writing: true,
                    last: Instant::now(),
                    ended: false,
                }),
                _exit: exit.take()?,
                _answering: answering.take()?,
            });
            if state.latest > since {
                state.dirty = true;
            }
            if let Some(peer) = peer {
                state.peers.insert(peer);
            }
            state.streams.push(Arc::clone(&stream));
            self.gauge.store(state.streams.len(), Ordering::Relaxed);
            self.wake.notify_one();
            Some(stream)
        });
        match opened.flatten() {
            Some(stream) => {
                self.writers.send(Box::new(move || stream.write_out()));
                Ok(())
            }
            None => Err(Box::new(
                request.expect("kept when the stream is not opened"),
            )),
        }
    }

    /// The full-list event for a stream that leaves `exclude` out: the last one made if the
    /// list has not moved since (a hundred streams starting together share one), else a new
    /// one. With the version it shows.
    fn full_event(&self, gateway: &Gateway, exclude: Option<NodeId>) -> (u64, Frame) {
        let version = gateway.list().version;
        if let Some((_, _, frame)) = lock(&self.full)
            .as_ref()
            .filter(|(v, e, _)| *v == version && *e == exclude)
        {
            return (version, Arc::clone(frame));
        }
        let (version, body) = http::full_body(gateway, exclude);
        let frame = event(version, &body);
        *lock(&self.full) = Some((version, exclude, Arc::clone(&frame)));
        (version, frame)
    }

    /// The fan-out thread's loop, until [`Streams::stop`].
    pub(super) fn run(&self, gateway: &Gateway) {
        let mut state = lock(&self.state);
        loop {
            if state.stopping {
                return;
            }
            let now = Instant::now();
            if !state.dirty {
                // With streams open, a look every half keepalive: none is silent for longer.
                let timeout = if state.streams.is_empty() {
                    None
                } else {
                    Some(self.keepalive() / 2)
                };
                state = match timeout {
                    None => self.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
                    Some(t) => self
                        .wake
                        .wait_timeout(state, t)
                        .map_or_else(|e| e.into_inner().0, |(s, _)| s),
                };
                if !state.dirty && now.elapsed() < self.keepalive() / 2 {
                    continue;
                }
            }
            state.dirty = false;
            let streams = state.streams.clone();
            drop(state);
            self.pass(gateway, &streams);
            state = lock(&self.state);
            // Streams whose write failed (or that were ended meanwhile) leave the list; the
            // others' peers stay as they are (not rebuilt every pass).
            let State { streams, peers, .. } = &mut *state;
            streams.retain(|s| {
                let open = !lock(&s.out).ended;
                if let Some(peer) = s.peer.filter(|_| !open) {
                    peers.remove(&peer);
                }
                open
            });
            self.gauge.store(state.streams.len(), Ordering::Relaxed);
        }
    }

    /// Hands every stream the events it has not been sent, and a keepalive to those that
    /// have had nothing for half the keepalive; then has them written ([`Streams::write`]).
    fn pass(&self, gateway: &Gateway, streams: &[Arc<Stream>]) {
        // Read once for each index the streams are at (usually one for them all), and the
        // frame made once for the streams at it that leave out no node its events name.
        let mut deltas: HashMap<u64, Option<Arc<Delta>>> = HashMap::new();
        let mut frames: HashMap<u64, Frame> = HashMap::new();
        let mut fulls: HashMap<Option<NodeId>, (u64, Frame)> = HashMap::new();
        let quiet_since = Instant::now() - self.keepalive() / 2;
        let mut due = VecDeque::new();
        for stream in streams {
            let (since, last) = {
                let out = lock(&stream.out);
                if out.ended {
                    continue;
                }
                (out.since, out.last)
            };
            let delta = deltas
                .entry(since)
                .or_insert_with(|| {
                    gateway
                        .delta(since)
                        .filter(|d| d.version >= since)
                        .map(Arc::new)
                })
                .clone();
            let (version, frame) = match delta {
                // The journal does not reach back: the whole list, as a delta answer has it.
                None => fulls
                    .entry(stream.exclude)
                    .or_insert_with(|| self.full_event(gateway, stream.exclude))
                    .clone(),
                Some(delta) if delta.changes.is_empty() => {
                    if last >= quiet_since {
                        continue;
                    }
                    (since, Arc::clone(&self.keepalive_frame))
                }
                Some(delta) => match stream.exclude.filter(|&id| http::mentions(&delta, id)) {
                    Some(id) => (
                        delta.version,
                        event(delta.version, &http::events_body(&delta, Some(id))),
                    ),
                    None => {
                        let frame = frames.entry(since).or_insert_with(|| {
                            event(delta.version, &http::events_body(&delta, None))
                        });
                        (delta.version, Arc::clone(frame))
                    }
                },
            };
            if stream.send(version, frame) {
                due.push_back(Arc::clone(stream));
            }
        }
        self.write(due);
    }

    /// Has what `due` has queued written: one job on the writing pool for the whole pass
    /// (a job, a wake-up and a hand-over per stream cost as much as the writes), which writes
    /// the streams in turn. A stream whose client does not read would hold that thread until
    /// the write timeout, so the job first queues a helper job behind it: the pool's stall rule
    /// has an idle thread take the helper once it has waited
    /// [`STALL`](super::settling::STALL), and the helper writes the streams still due
    /// (queueing a helper of its own first). A pass done in time leaves its helper nothing to
    /// do.
    fn write(&self, due: VecDeque<Arc<Stream>>) {
        if due.is_empty() {
            return;
        }
        Streams::write_pass(&self.writers, Arc::new(Mutex::new(due)));
    }

    /// Queues a job on `writers` that writes the streams `pass` still holds, in turn.
    fn write_pass(writers: &Arc<Senders>, pass: Arc<Mutex<VecDeque<Arc<Stream>>>>) {
        let helpers = Arc::clone(writers);
        writers.send(Box::new(move || {
            if lock(&pass).is_empty() {
                return;
            }
            Streams::write_pass(&helpers, Arc::clone(&pass));
            loop {
                let Some(stream) = lock(&pass).pop_front() else {
                    break;
                };
                stream.write_out();
            }
        }));
    }

    /// Ends every stream (what was queued, then the last chunk) and the fan-out thread.
    pub(super) fn stop(&self) {
        let streams = {
            let mut state = lock(&self.state);
            state.stopping = true;
            state.peers.clear();
            self.wake.notify_all();
            self.gauge.store(0, Ordering::Relaxed);
            std::mem::take(&mut state.streams)
        };
        for stream in streams {
            stream.end(false, &self.writers);
        }
    }

    /// Stops the writing threads once shutdown has waited for the streams' last writes.
    pub(super) fn stop_writers(&self) {
        self.writers.stop();
    }
}

/// `SIZE\r\nTEXT\r\n`.
fn chunk(text: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(text.len() + 16);
    write!(framed, "{:x}\r\n", text.len()).expect("writing to a Vec");
    framed.extend_from_slice(text);
    framed.extend_from_slice(b"\r\n");
    framed
}

/// One Server-Sent Event as a chunk: `id: VERSION`, `data: BODY` (one line of JSON), a blank
/// line; made in one allocation (a full list's body is copied once).
fn event(version: u64, body: &[u8]) -> Frame {
    let id = format!("id: {version}\ndata: ");
    let size = id.len() + body.len() + 2;
    let mut framed = Vec::with_capacity(size + 16);
    write!(framed, "{size:x}\r\n{id}").expect("writing to a Vec");
    framed.extend_from_slice(body);
    framed.extend_from_slice(b"\n\n\r\n");
    Arc::from(framed)
}

impl Stream {
    /// Hands over `frame`, which brings the stream to `version`. True if the caller is to
    /// write it ([`Stream::write_out`]): no write is in progress.
    #[must_use]
    fn send(&self, version: u64, frame: Frame) -> bool {
        let mut out = lock(&self.out);
        out.since = out.since.max(version);
        out.last = Instant::now();
        if out.ended {
            return false;
        }
        if out.writing && out.queued_bytes + frame.len() > MAX_QUEUED {
            // The client reads too slowly to follow: what waits is dropped and the body ends
            // after the write in progress (the client asks again with its last id).
            return Stream::end_locked(&mut out, true);
        }
        out.queued_bytes += frame.len();
        out.queued.push(frame);
        !std::mem::replace(&mut out.writing, true)
    }

    /// Ends the body: the last chunk queued after what waits (or instead of it, if
    /// `drop_queued`); no frame is taken after it. True if the caller is to write it.
    fn end_locked(out: &mut Out, drop_queued: bool) -> bool {
        if out.ended {
            return false;
        }
        out.ended = true;
        if out.writer.is_none() && !out.writing {
            return false;
        }
        if drop_queued {
            out.queued.clear();
            out.queued_bytes = 0;
        }
        out.queued.push(Arc::from(LAST_CHUNK));
        out.queued_bytes += LAST_CHUNK.len();
        !std::mem::replace(&mut out.writing, true)
    }

    /// [`Stream::end_locked`], written by a thread of `writers` if no write is in progress.
    fn end(self: &Arc<Self>, drop_queued: bool, writers: &Arc<Senders>) {
        let due = Stream::end_locked(&mut lock(&self.out), drop_queued);
        if due {
            let stream = Arc::clone(self);
            writers.send(Box::new(move || stream.write_out()));
        }
    }

    /// Writes what is queued until nothing is (on a writing thread). After the last chunk (or
    /// a failed write) the writer is dropped: tiny_http goes on to the connection's next
    /// request, or closes it.
    fn write_out(&self) {
        let mut out = lock(&self.out);
        loop {
            let frames = std::mem::take(&mut out.queued);
            out.queued_bytes = 0;
            let Some(mut writer) = out.writer.take() else {
                out.writing = false;
                return;
            };
            drop(out);
            let written = frames
                .iter()
                .try_for_each(|f| writer.write_all(f))
                .and_then(|()| writer.flush());
            drop(frames);
            out = lock(&self.out);
            if written.is_err() {
                out.ended = true;
                out.queued.clear();
                out.queued_bytes = 0;
                out.writing = false;
                return;
            }
            if out.queued.is_empty() {
                out.writing = false;
                if !out.ended {
                    out.writer = Some(writer);
                }
                return;
            }
            out.writer = Some(writer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_chunk_of_one_line_of_data_with_its_version_as_id() {
        assert_eq!(
            &*event(7, br#"{"a":1}"#),
            b"15\r\nid: 7\ndata: {\"a\":1}\n\n\r\n"
        );
        assert_eq!(chunk(b"hello"), b"5\r\nhello\r\n".to_vec());
    }
}
