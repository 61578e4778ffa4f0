//! Event streams: `GET /nodes?changes=1&stream=1`, a delta answer that stays open.
//!
//! A long-poll watcher costs an HTTP exchange per change (its request read, routed, answered,
//! and the next one asked): about 40 us of the gateway's CPU, so a thousand watchers and a
//! hundred changes a second were more than a core. A stream costs one write per change: the
//! events since the client's index go out as Server-Sent Events (`id: VERSION`, `data:` the
//! delta answer's JSON), in a chunked body that ends only when the client goes away, the
//! gateway stops, or the client sends another request on the connection.
//!
//! The worker that read the request writes the head and hands the connection here
//! ([`Streams::open`]): no worker or thread is held by an open stream. One thread, the
//! fan-out, wakes on every change: it reads the events once for each index the streams are at
//! (usually one for them all: the changes since the last pass), makes the frame once, and
//! queues it on every stream. The writes of a pass are one job on a [`Senders`] pool, which
//! writes the streams in turn; a stream whose client does not read holds only the thread
//! writing to it (a helper job behind each pass takes the rest once the pool's stall rule
//! says so, see [`Streams::write`]). Frames queued behind a write in progress are joined into
//! the next write; a stream with more than [`MAX_QUEUED`] bytes waiting is ended (its client
//! reads too slowly to follow the changes; it asks again with its index). A stream with
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
use crate::server::store::Delta;

use super::settling::Senders;
use super::worker::Answering;

/// A stream with nothing sent for this long gets a comment line (`:`): under the 60 s idle
/// timeout of common proxies (nginx's `proxy_read_timeout`), and what a client may take as
/// the longest silence of a live stream.
pub(crate) const KEEPALIVE: Duration = Duration::from_secs(25);

/// Most bytes queued on one stream behind a write in progress before the stream is ended.
pub(super) const MAX_QUEUED: usize = 1 << 20;

/// The open streams, and the fan-out thread's state.
pub(super) struct Streams {
    state: Mutex<State>,
    wake: Condvar,
    /// Write the frames (`gateway-stream` threads).
    writers: Arc<Senders>,
    /// Most streams open at once (the long-polls' `--max-watchers`); past it, a request for
    /// one gets a delta answer.
    max: usize,
    /// `/metrics`' `streams_open`, kept equal to the number of streams listed.
    gauge: Arc<AtomicUsize>,
    /// [`KEEPALIVE`] in milliseconds (tests shorten it).
    keepalive_ms: AtomicU64,
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
    /// HTTP/1.1: chunks; HTTP/1.0: the frames as they are, the end told by closing.
    chunked: bool,
    out: Mutex<Out>,
    /// Shutdown waits for the stream's last write (and, via it, the connection's end).
    _exit: Sender<()>,
    _answering: Answering,
}

struct Out {
    /// Taken by the thread writing; `None` once the stream ended.
    writer: Option<Box<dyn Write + Send>>,
    /// The registry version the frames handed to the stream reach.
    since: u64,
    /// Frames waiting for the write in progress.
    queued: Vec<u8>,
    writing: bool,
    /// When the last frame was handed over (a keepalive after [`KEEPALIVE`] of nothing).
    last: Instant,
    ended: bool,
}

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

    /// A request arrived on connection `peer`: a stream open on it ends (its chunked body is
    /// closed), so that the request's answer can be written after it. Cheap when there is none.
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
            stream.end(&self.writers);
        }
    }

    /// Starts a stream on `request`'s connection: writes the head and the first event (the
    /// changes after the client's index, or the whole list), and keeps the connection open for
    /// the events after. Returns `Err` with the request if it must be answered as a delta
    /// answer instead (as many streams open as `--max-watchers`, or stopping).
    pub(super) fn open(
        self: &Arc<Self>,
        gateway: &Gateway,
        request: tiny_http::Request,
        start: StreamStart,
        (answering, exit): (Answering, Sender<()>),
    ) -> Result<(), Box<tiny_http::Request>> {
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
                Some(http::events_body(&delta, start.exclude)),
            ),
            None => {
                let (version, body) = http::full_body(gateway, start.exclude);
                (version, Some(body))
            }
        };
        let chunked = *request.http_version() != tiny_http::HTTPVersion(1, 0);
        let mut head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
             X-Accel-Buffering: no\r\nX-Gateway-Index: {since}\r\nX-Gateway-Epoch: {}\r\n{}\r\n",
            gateway.epoch(),
            if chunked {
                "Transfer-Encoding: chunked\r\n"
            } else {
                "Connection: close\r\n"
            }
        )
        .into_bytes();
        if let Some(body) = first {
            frame_into(&mut head, chunked, &event(since, &body));
        }
        let peer = request.remote_addr().copied();
        let stream = Arc::new(Stream {
            peer,
            exclude: start.exclude,
            chunked,
            out: Mutex::new(Out {
                writer: Some(request.into_writer()),
                since,
                queued: Vec::new(),
                writing: false,
                last: Instant::now(),
                ended: false,
            }),
            _exit: exit,
            _answering: answering,
        });
        {
            let mut state = lock(&self.state);
            if state.latest > since {
                state.dirty = true;
            }
            if let Some(peer) = peer {
                state.peers.insert(peer);
            }
            state.streams.push(Arc::clone(&stream));
            self.gauge.store(state.streams.len(), Ordering::Relaxed);
            self.wake.notify_one();
        }
        stream.queue(&head, &self.writers);
        Ok(())
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
            state.streams.retain(|s| !lock(&s.out).ended);
            self.gauge.store(state.streams.len(), Ordering::Relaxed);
            let peers = state.streams.iter().filter_map(|s| s.peer).collect();
            state.peers = peers;
        }
    }

    /// Hands every stream the events it has not been sent, and a keepalive to those that
    /// have had nothing for [`KEEPALIVE`].
    fn pass(&self, gateway: &Gateway, streams: &[Arc<Stream>]) {
        // Read once for each index the streams are at (usually one for them all), and the
        // frame made once for the streams at it that leave out no node its events name.
        let mut deltas: HashMap<u64, Option<Arc<Delta>>> = HashMap::new();
        let mut frames: HashMap<u64, Arc<Vec<u8>>> = HashMap::new();
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
            match delta {
                // The journal does not reach back: the whole list, as a delta answer has it.
                None => {
                    let (version, body) = http::full_body(gateway, stream.exclude);
                    if stream.send(version, &event(version, &body)) {
                        due.push_back(Arc::clone(stream));
                    }
                }
                Some(delta) if delta.changes.is_empty() => {
                    if last < quiet_since && stream.send(since, b": keepalive\n\n") {
                        due.push_back(Arc::clone(stream));
                    }
                }
                Some(delta) => match stream.exclude.filter(|&id| http::mentions(&delta, id)) {
                    Some(id) => {
                        let body = http::events_body(&delta, Some(id));
                        if stream.send(delta.version, &event(delta.version, &body)) {
                            due.push_back(Arc::clone(stream));
                        }
                    }
                    None => {
                        let frame = frames.entry(since).or_insert_with(|| {
                            Arc::new(event(delta.version, &http::events_body(&delta, None)))
                        });
                        if stream.send(delta.version, frame) {
                            due.push_back(Arc::clone(stream));
                        }
                    }
                },
            }
        }
        self.write(due);
    }

    /// Has what `due` has queued written: one job on the writing pool for the whole pass
    /// (a job, a wake-up and a hand-over per stream cost as much as the writes), which writes
    /// the streams in turn. A stream whose client does not read would hold that thread until
    /// the write timeout, so the job first queues a helper job behind it: the pool's stall rule
    /// has an idle thread take the helper once it has waited
    /// [`STALL`](super::settling::STALL), and the helper writes
    /// the streams still due (queueing a helper of its own first). A pass done in time leaves
    /// its helper nothing to do.
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

    /// Ends every stream (its body closed after what was queued) and the fan-out thread.
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
            stream.end(&self.writers);
        }
    }

    /// Stops the writing threads once shutdown has waited for the streams' last writes.
    pub(super) fn stop_writers(&self) {
        self.writers.stop();
    }
}

/// `id: VERSION` and `data: BODY`, one Server-Sent Event (the body is one line of JSON).
fn event(version: u64, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(body.len() + 32);
    write!(frame, "id: {version}\ndata: ").expect("writing to a Vec");
    frame.extend_from_slice(body);
    frame.extend_from_slice(b"\n\n");
    frame
}

/// Appends `frame` to `out`, as a chunk if `chunked`.
fn frame_into(out: &mut Vec<u8>, chunked: bool, frame: &[u8]) {
    if chunked {
        write!(out, "{:x}\r\n", frame.len()).expect("writing to a Vec");
        out.extend_from_slice(frame);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(frame);
    }
}

impl Stream {
    /// Hands over `frame`, which brings the stream to `version`. True if the caller is to
    /// write it ([`Stream::write_out`]): no write is in progress.
    #[must_use]
    fn send(&self, version: u64, frame: &[u8]) -> bool {
        let mut out = lock(&self.out);
        out.since = out.since.max(version);
        out.last = Instant::now();
        self.queue_locked(&mut out, frame)
    }

    /// Queues `frame` (framed here) after what was queued before; true if the caller is to
    /// write it.
    fn queue_locked(&self, out: &mut Out, frame: &[u8]) -> bool {
        if out.ended && out.writer.is_none() && !out.writing {
            return false;
        }
        if out.queued.len() + frame.len() > MAX_QUEUED && out.writing {
            // The client reads too slowly to follow: end the stream (it asks again).
            out.ended = true;
            out.queued = Vec::new();
            return false;
        }
        frame_into(&mut out.queued, self.chunked, frame);
        if out.writing {
            return false;
        }
        out.writing = true;
        true
    }

    /// Queues `bytes` (already framed: a head, the last chunk) and has a writing thread of
    /// `writers` write them if no write is in progress.
    fn queue(self: &Arc<Self>, bytes: &[u8], writers: &Arc<Senders>) {
        let due = {
            let mut out = lock(&self.out);
            if out.ended && out.writer.is_none() && !out.writing {
                return;
            }
            out.queued.extend_from_slice(bytes);
            !std::mem::replace(&mut out.writing, true)
        };
        if due {
            let stream = Arc::clone(self);
            writers.send(Box::new(move || stream.write_out()));
        }
    }

    /// Writes what is queued until nothing is (on a writing thread).
    fn write_out(&self) {
        let mut out = lock(&self.out);
        loop {
            let bytes = std::mem::take(&mut out.queued);
            let Some(mut writer) = out.writer.take() else {
                out.writing = false;
                return;
            };
            drop(out);
            let written = writer.write_all(&bytes).and_then(|()| writer.flush());
            out = lock(&self.out);
            if written.is_err() {
                out.ended = true;
                out.queued = Vec::new();
            }
            if out.ended && out.queued.is_empty() {
                out.writing = false;
                drop(out);
                // The connection's end: tiny_http goes on to its next request (or closes it).
                drop(writer);
                return;
            }
            out.writer = Some(writer);
            if out.queued.is_empty() {
                out.writing = false;
                return;
            }
        }
    }

    /// Ends the stream: the body's last chunk is queued and the writer dropped after it.
    fn end(self: &Arc<Self>, writers: &Arc<Senders>) {
        if lock(&self.out).ended {
            return;
        }
        if self.chunked {
            self.queue(b"0\r\n\r\n", writers);
        }
        let mut out = lock(&self.out);
        out.ended = true;
        if !out.writing {
            out.writer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_line_of_data_with_its_version_as_id() {
        assert_eq!(
            event(7, br#"{"a":1}"#),
            b"id: 7\ndata: {\"a\":1}\n\n".to_vec()
        );
    }

    #[test]
    fn a_frame_is_a_chunk_over_http_1_1_and_as_it_is_over_1_0() {
        let mut out = Vec::new();
        frame_into(&mut out, true, b"hello");
        assert_eq!(out, b"5\r\nhello\r\n".to_vec());
        let mut out = Vec::new();
        frame_into(&mut out, false, b"hello");
        assert_eq!(out, b"hello".to_vec());
    }
}
