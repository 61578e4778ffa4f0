//! Every workaround for a defect of tiny_http 0.12, in one place, each with the reason and the
//! upstream issue. Policy (limits, what is refused, how answers look) lives in `running.rs`; what
//! is here exists only because tiny_http does something it should not, and should shrink when
//! tiny_http is fixed.
//!
//! What cannot be worked around from outside tiny_http (it happens before our code sees a
//! request) is listed in `RELIABILITY.md` with the front-proxy setting that closes it:
//! `HTTP/2.0` and `HTTP/3.0` request lines (no upstream issue found: the 505 is written through
//! the next response writer while the request holding the previous one is alive, so the
//! connection thread waits on itself forever), unbounded header size (#56), a thread per
//! connection (#221), no read timeouts (#143), and its own empty 400/417/505 answers.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tiny_http::{Header, StatusCode};

use crate::lock;
use crate::server::http::{self, Response};

mod listener;
mod nudger;

pub(crate) use listener::*;
pub(crate) use nudger::*;

// ------------------------------------------------------------------------------------------
// Framing: what tiny_http accepts leniently, and connections it keeps reading.

/// The warning for a gateway listening on `addr` off loopback, where anyone who can reach it
/// meets tiny_http directly: what only the front proxy closes (an `HTTP/2.0` request line
/// holds a thread and two descriptors for good, headers are unbounded, a thread a
/// connection) cannot be closed from inside the process, since tiny_http reads and answers
/// those before the gateway sees a request.
pub(crate) fn bare_host_warning(addr: SocketAddr) -> Option<String> {
    (!addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr}, off loopback: tiny_http-internal weaknesses (an HTTP/2.0 \
             request line holds a thread and two descriptors for good; unbounded headers; a \
             thread per connection) are closed only by a front proxy: on any network others \
             can reach, bind 127.0.0.1 and put scripts/deploy/nginx.conf in front \
             (RELIABILITY.md)"
        )
    })
}

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
/// a read that blocks past the deadline (see `running/worker.rs`).
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_gateway_off_loopback_is_told_to_use_the_front() {
        let warning = |addr: &str| super::bare_host_warning(addr.parse().unwrap());
        let any = warning("0.0.0.0:8080").unwrap();
        assert!(
            any.contains("0.0.0.0:8080") && any.contains("nginx.conf"),
            "{any}"
        );
        assert!(warning("10.1.2.3:80").is_some());
        assert!(warning("[::]:80").is_some());
        assert_eq!(warning("127.0.0.1:8080"), None);
        assert_eq!(warning("[::1]:8080"), None);
    }
}
