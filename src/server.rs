//! The running server: tiny_http's accept loop feeding a fixed pool of worker threads, and the
//! reaper and watchdog threads.
//!
//! This is the only server code that touches sockets. It reads each request body within the
//! limit (off the worker when it could be slow), hands the request to [`http::handle`] inside
//! `catch_unwind`, and writes the answer. Shutdown: the reaper's and watchdog's channels are
//! dropped, `unblock()` is called once per worker, and every thread is joined.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, Socket, TcpKeepalive, Type};

use tiny_http::{Header, StatusCode};

use crate::config::ServerConfig;
use crate::gateway::Gateway;
use crate::http::{self, Response};
use crate::lock;
use crate::registry::Now;

/// A gateway server, configured but not yet listening (the original's `GatewayServer(host,
/// port)`).
#[derive(Debug, Clone)]
pub struct GatewayServer {
    config: ServerConfig,
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The address could not be listened on.
    Listen {
        /// The address it tried to listen on.
        address: String,
        /// What the system said.
        reason: String,
    },
    /// The data directory could not be opened (in use, damaged, unwritable).
    Store(crate::store::log::OpenError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Listen { address, reason } => {
                write!(f, "cannot listen on {address}: {reason}")
            }
            StartError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl GatewayServer {
    /// A server that will run with `config`.
    pub fn new(config: ServerConfig) -> GatewayServer {
        GatewayServer { config }
    }

    /// Binds the port and starts the workers and the reaper.
    pub fn start(self) -> Result<RunningServer, StartError> {
        self.start_with(http::handle)
    }

    fn start_with(self, handler: Handler) -> Result<RunningServer, StartError> {
        let config = self.config;
        let address = config.bind_address();
        let start_error = |reason: String| StartError::Listen {
            address: address.clone(),
            reason,
        };
        // The registry first: a replay of the data directory finishes before anyone can connect.
        let gateway = Arc::new(Gateway::open(&config).map_err(StartError::Store)?);
        let listener = listen(&address).map_err(|e| start_error(e.to_string()))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| start_error(e.to_string()))?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| start_error(e.to_string()))?;
        let server = Arc::new(server);
        let stopping = Arc::new(AtomicBool::new(false));
        let failure = Arc::new(Mutex::new(None));

        let context = Arc::new(Context {
            handler,
            gateway: Arc::clone(&gateway),
            max_body_bytes: config.max_body_bytes,
            body_readers: AtomicUsize::new(0),
        });
        let workers = (0..config.workers)
            .map(|i| {
                let worker = Worker {
                    context: Arc::clone(&context),
                    server: Arc::clone(&server),
                    stopping: Arc::clone(&stopping),
                    failure: Arc::clone(&failure),
                };
                thread::Builder::new()
                    .name(format!("gateway-worker-{i}"))
                    .spawn(move || worker.run())
                    .expect("spawn a worker thread")
            })
            .collect();

        let (reaper_stop, stop_signal) = mpsc::channel::<()>();
        let reaper = {
            let gateway = Arc::clone(&gateway);
            let interval = config.heartbeat_interval;
            thread::Builder::new()
                .name("gateway-reaper".to_owned())
                .spawn(move || {
                    // Sweeps every interval until the sender is dropped.
                    while let Err(RecvTimeoutError::Timeout) = stop_signal.recv_timeout(interval) {
                        gateway.sweep(Now::system());
                    }
                })
                .expect("spawn the reaper thread")
        };

        let (watchdog_stop, watchdog_signal) = mpsc::channel::<()>();
        let watchdog = {
            let failure = Arc::clone(&failure);
            thread::Builder::new()
                .name("gateway-watchdog".to_owned())
                .spawn(move || watch(local_addr, &watchdog_signal, &failure))
                .expect("spawn the watchdog thread")
        };

        log::info!(
            "cluster gateway {} listening on http://{local_addr}",
            crate::VERSION
        );
        Ok(RunningServer {
            local_addr,
            server,
            gateway,
            stopping,
            failure,
            context,
            workers,
            reaper: Some((reaper_stop, reaper)),
            watchdog: Some((watchdog_stop, watchdog)),
        })
    }
}

/// A server that is accepting requests. Stops on [`RunningServer::stop`] or when dropped.
pub struct RunningServer {
    local_addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    gateway: Arc<Gateway>,
    stopping: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
    context: Arc<Context>,
    workers: Vec<JoinHandle<()>>,
    reaper: Option<(Sender<()>, JoinHandle<()>)>,
    watchdog: Option<(Sender<()>, JoinHandle<()>)>,
}

impl RunningServer {
    /// The address the server listens on, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The registry and its derived state, as the handlers see it.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// True while every worker is alive and the listener answers. A worker only exits on
    /// `stop()`, or when tiny_http's accept loop has died.
    pub fn is_serving(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
            && self.failure().is_none()
            && self.workers.iter().all(|w| !w.is_finished())
    }

    /// Requests whose body is being read on a thread of its own (at most 64; past that, such
    /// requests are refused with 503).
    pub fn bodies_being_read(&self) -> usize {
        self.context.body_readers.load(Ordering::Acquire)
    }

    /// Why the server can no longer serve, once it cannot: tiny_http's accept loop died (it
    /// never restarts, for example after running out of file descriptors), or the listener
    /// stopped answering the watchdog's `/health` probes. The binary exits non-zero then, for
    /// its supervisor to restart it.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Stops accepting, lets in-flight requests finish, and joins every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for (stop, thread) in [self.reaper.take(), self.watchdog.take()]
            .into_iter()
            .flatten()
        {
            drop(stop);
            let _ = thread.join();
        }
        for _ in &self.workers {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        log::info!("cluster gateway on {} stopped", self.local_addr);
    }
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("local_addr", &self.local_addr)
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Answers one request: [`http::handle`], or a stand-in in this module's tests.
type Handler = fn(&Gateway, &http::Request<'_>) -> Response;

struct Worker {
    context: Arc<Context>,
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Worker {
    fn run(self) {
        loop {
            match self.server.recv() {
                Ok(request) => self.serve(request),
                Err(_) if self.stopping.load(Ordering::SeqCst) => return,
                Err(e) => {
                    let why =
                        format!("the accept loop died, no new connection can be accepted: {e}");
                    log::error!("{why}");
                    lock(&self.failure).get_or_insert(why);
                    return;
                }
            }
        }
    }

    fn serve(&self, request: tiny_http::Request) {
        if body_is_buffered(&request) {
            return self.context.serve(request);
        }
        // The body may be slow to come, or never come: read it, and answer, on a thread of
        // its own so no worker waits on a client.
        let Some(permit) = Permit::take(&self.context) else {
            log::warn!("{MAX_BODY_READERS} request bodies are already being read; refusing one");
            let answer = Response::error(503, "Too many requests with large bodies in progress");
            // A chunked body has no declared length, and tiny_http does not drain one on drop.
            let unread = request.body_length().unwrap_or(0) as u64;
            return dispose(request, answer, unread);
        };
        thread::spawn(move || permit.0.serve(request));
    }
}

/// What answering a request needs, shared by the workers and the body-reading threads.
struct Context {
    handler: Handler,
    gateway: Arc<Gateway>,
    max_body_bytes: usize,
    /// Requests whose body is being read on a thread of its own.
    body_readers: AtomicUsize,
}

impl Context {
    /// Reads the body, routes the request inside `catch_unwind`, and answers.
    fn serve(&self, mut request: tiny_http::Request) {
        let body = match read_body(&mut request, self.max_body_bytes) {
            Ok(body) => body,
            Err(Refusal { answer, unread }) => return dispose(request, answer, unread),
        };
        let method = request.method().as_str().to_owned();
        let url = request.url().to_owned();
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().as_str(), h.value.as_str()))
            .collect();
        let routed = catch_unwind(AssertUnwindSafe(|| {
            (self.handler)(
                &self.gateway,
                &http::Request {
                    method: &method,
                    url: &url,
                    body: &body,
                    headers: &headers,
                },
            )
        }));
        drop(headers);
        let answer = routed.unwrap_or_else(|_| {
            log::error!("handler panicked on {method} {url}");
            Response::error(500, "Internal server error")
        });
        respond(request, answer);
    }
}

/// Most request bodies read at once on their own threads. Past it, such requests get a 503:
/// clients that open many slow uploads cannot grow the thread count without bound.
const MAX_BODY_READERS: usize = 64;

/// One of the [`MAX_BODY_READERS`] slots, given back on drop.
struct Permit(Arc<Context>);

impl Permit {
    fn take(context: &Arc<Context>) -> Option<Permit> {
        context
            .body_readers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_BODY_READERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(Arc::clone(context)))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.body_readers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// True if tiny_http read the body with the headers: a known length of at most 1 KiB and no
/// `Expect: 100-continue` (see tiny_http's `new_request`). Reading such a body cannot block.
fn body_is_buffered(request: &tiny_http::Request) -> bool {
    let expects = request.headers().iter().any(|h| h.field.equiv("Expect"));
    let chunked = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Transfer-Encoding"));
    !expects && !chunked && request.body_length().is_none_or(|n| n <= 1024)
}

fn respond(request: tiny_http::Request, answer: Response) {
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
        answer.body,
        Some(length),
        None,
    )
    // We always know the length: never switch to chunked encoding.
    .with_chunked_threshold(usize::MAX);
    if let Err(e) = request.respond(response) {
        log::debug!("could not write an answer: {e}");
    }
}

/// The most unread body bytes tiny_http may be left to drain when a refused request is dropped.
///
/// Its drain allocates the whole remainder at once: up to this much is only address space (the
/// kernel maps pages as bytes arrive), but a remainder larger than memory aborts the process.
const MAX_DRAIN: u64 = 1 << 30;

/// A request refused before its body was read to the end.
struct Refusal {
    answer: Response,
    /// Declared body bytes not read.
    unread: u64,
}

/// Answers a refused request without pinning a worker on its unread body.
///
/// Dropping the request drains the unread body, for as long as the client takes to send or
/// close, so that happens on a short-lived thread of its own. A remainder too large to drain
/// safely is never dropped: the answer is written through `upgrade` and the connection is
/// abandoned (one idle thread and socket, rather than an aborted process).
fn dispose(request: tiny_http::Request, answer: Response, unread: u64) {
    if unread == 0 {
        respond(request, answer);
    } else if unread <= MAX_DRAIN {
        thread::spawn(move || respond(request, answer));
    } else {
        log::warn!(
            "abandoning a connection from {:?} that declared a {unread}-byte body",
            request.remote_addr()
        );
        // `upgrade` writes a head without a length and no body; an interim `100 Continue`
        // (which HTTP/1.1 clients skip) keeps that harmless, and the real answer follows it.
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
}

/// Reads the whole body, refusing one over `limit` before reading it and one shorter than its
/// declared length.
fn read_body(request: &mut tiny_http::Request, limit: usize) -> Result<Vec<u8>, Refusal> {
    let too_large = |unread: u64| Refusal {
        answer: Response::error(
            413,
            format!("Request body too large: the limit is {limit} bytes"),
        ),
        unread,
    };
    let framed_twice = request
        .headers()
        .iter()
        .any(|h| h.field.equiv("Content-Length"))
        && request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Transfer-Encoding"));
    if framed_twice {
        // tiny_http frames the body by Transfer-Encoding; draining it that way keeps the
        // connection in step with what tiny_http reads next, so nothing can be smuggled.
        let mut sink = Vec::new();
        let drained = request
            .as_reader()
            .take(limit as u64 + 1)
            .read_to_end(&mut sink);
        return Err(Refusal {
            answer: Response::error(
                400,
                "Conflicting Content-Length and Transfer-Encoding headers",
            ),
            unread: if drained.is_ok() && sink.len() <= limit {
                0
            } else {
                1
            },
        });
    }
    let declared = request.body_length();
    if let Some(declared) = declared.filter(|&n| n > limit) {
        return Err(too_large(declared as u64));
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let read = request
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body);
    if let Err(e) = read {
        return Err(Refusal {
            answer: Response::error(400, format!("Could not read the request body: {e}")),
            unread: 0,
        });
    }
    if body.len() > limit {
        return Err(too_large(0));
    }
    if let Some(declared) = declared.filter(|&n| body.len() < n) {
        return Err(Refusal {
            answer: Response::error(
                400,
                format!(
                    "Request body shorter than its Content-Length ({} of {declared} bytes)",
                    body.len()
                ),
            ),
            unread: 0,
        });
    }
    Ok(body)
}

/// How long writing an answer may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive probes start after this much silence, so connections to vanished peers end.
const KEEPALIVE_AFTER: Duration = Duration::from_secs(60);
/// Time between watchdog probes, and how long one may take.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Time between the watchdog's empty connections that keep tiny_http's connection queue moving.
const PUMP_INTERVAL: Duration = Duration::from_millis(50);
/// Empty connections per pump: each moves one queued connection along.
const PUMP_CONNECTIONS: usize = 4;
/// Failed probes in a row after which the listener is declared dead.
const PROBE_FAILURES: u32 = 3;

/// Binds `address` with the socket options every accepted connection inherits: a write
/// timeout (tiny_http sets none, so a client that never reads would pin a worker), TCP
/// keep-alive and no Nagle delay. No read timeout: tiny_http treats a timed-out `accept()` as fatal.
fn listen(address: &str) -> std::io::Result<TcpListener> {
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the host resolves to no address"))?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
    socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(KEEPALIVE_AFTER))?;
    // A client that stops reading (a zero window) for the write timeout is cut off: the
    // write timeout alone frees a worker only per answer, and pipelined requests queue answers
    // by the thousand, each to hold a worker for that long.
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(WRITE_TIMEOUT))?;
    // Answers go out in a few writes (head, cached list, tail): without this, Nagle's algorithm
    // holds the last small write until the client's delayed ACK, 40 ms later.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Probes the listener with `GET /health` every [`PROBE_INTERVAL`] until `stop` closes; after
/// [`PROBE_FAILURES`] failures in a row, records why the server cannot serve.
fn watch(addr: SocketAddr, stop: &Receiver<()>, failure: &Mutex<Option<String>>) {
    let target = reachable(addr);
    let mut failures = 0;
    let mut ticks = 0u32;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(PUMP_INTERVAL) {
        pump(target);
        ticks += 1;
        let pumps_per_probe = (PROBE_INTERVAL.as_millis() / PUMP_INTERVAL.as_millis()) as u32;
        if !ticks.is_multiple_of(pumps_per_probe) {
            continue;
        }
        match probe(target) {
            Ok(()) => failures = 0,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // Nothing listens on our own port: the accept loop died and dropped it.
                let why = format!("the listener is gone: {e}");
                log::error!("{why}");
                lock(failure).get_or_insert(why);
                return;
            }
            Err(e) => {
                failures += 1;
                log::warn!("watchdog: /health probe {failures} of {PROBE_FAILURES} failed: {e}");
                if failures >= PROBE_FAILURES {
                    let why = format!("the listener stopped answering: {e}");
                    log::error!("{why}");
                    lock(failure).get_or_insert(why);
                    return;
                }
            }
        }
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

/// Opens and closes a connection to our own listener.
///
/// tiny_http's connection pool can leave an arriving connection queued while every pool thread
/// serves a keep-alive connection (it counts idle threads loosely when connections arrive in a
/// burst); the queue moves only when some connection ends. This short connection ends at once,
/// so the thread that took it moves the queue along: a queued connection waits a pump interval,
/// not until some client hangs up.
fn pump(target: SocketAddr) {
    for _ in 0..PUMP_CONNECTIONS {
        let _ = TcpStream::connect_timeout(&target, PUMP_INTERVAL);
    }
}

fn probe(target: SocketAddr) -> std::io::Result<()> {
    use std::io::Write;
    let mut stream = TcpStream::connect_timeout(&target, PROBE_INTERVAL)?;
    stream.set_read_timeout(Some(PROBE_INTERVAL))?;
    stream.set_write_timeout(Some(PROBE_INTERVAL))?;
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: watchdog\r\nConnection: close\r\n\r\n")?;
    let mut head = [0; 12];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "unexpected answer {:?}",
            String::from_utf8_lossy(&head)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panics_on_boom(gateway: &Gateway, request: &http::Request<'_>) -> Response {
        if request.url == "/boom" {
            panic!("a bug in a handler");
        }
        http::handle(gateway, request)
    }

    fn get(addr: SocketAddr, path: &str) -> u16 {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer[9..12].parse().unwrap()
    }

    #[test]
    fn a_panicking_handler_answers_500_and_every_worker_lives_on() {
        let config = ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            workers: 2,
            ..ServerConfig::default()
        };
        let server = GatewayServer::new(config)
            .start_with(panics_on_boom)
            .unwrap();
        // More panics than workers: a worker that died would leave none to answer.
        for _ in 0..5 {
            assert_eq!(get(server.local_addr(), "/boom"), 500);
        }
        assert!(server.is_serving());
        assert_eq!(get(server.local_addr(), "/health"), 200);
        server.stop();
    }
}
