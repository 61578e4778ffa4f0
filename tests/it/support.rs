//! Helpers: a server on 127.0.0.1:0 that stops on drop, a small HTTP client, raw sockets and
//! polling with a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cluster_gateway::{GatewayServer, RunningServer, ServerConfig};
use serde_json::Value;

/// A running gateway on a free loopback port; stops when dropped.
pub struct TestServer {
    pub server: RunningServer,
    pub url: String,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        // The suite opens thousands of sockets at once; the default soft limit is too low.
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        let mut config = ServerConfig::new("127.0.0.1", 0);
        config.workers = 4;
        configure(&mut config);
        let server = GatewayServer::new(config)
            .start()
            .expect("test server starts");
        let url = format!("http://{}", server.local_addr());
        TestServer { server, url }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        exchange(agent().get(format!("{}{path}", self.url)).call())
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        exchange(agent().post(format!("{}{path}", self.url)).send(body))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, &body.to_string())
    }

    pub fn register(&self, node_id: u64) -> Value {
        let (status, body) = self.post_json("/register", &registration(node_id));
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Loopback addresses owned by one test each. A test that frees a port and binds it again, or
/// needs a port to stay closed, uses its own address, so that no other test's server (all bind
/// `127.0.0.1:0`) can take that port in between.
pub mod own_host {
    pub const CLIENT_RESTART: &str = "127.0.0.2";
    pub const CLOSED: &str = "127.0.0.3";
    pub const STARTED_BEFORE_GATEWAY: &str = "127.0.0.4";
    pub const FAILOVER: &str = "127.0.0.5";
    pub const SIGKILL: &str = "127.0.0.6";
    pub const GONE: &str = "127.0.0.7";
    pub const BACKGROUND: &str = "127.0.0.8";
    pub const LOG_INFO: &str = "127.0.0.9";
    pub const LOG_WARNING: &str = "127.0.0.10";
    pub const LOG_CHANGES: &str = "127.0.0.11";
    pub const LOG_ACCESS: &str = "127.0.0.12";
    pub const LEAKS_HEALTH: &str = "127.0.0.13";
}

/// A port on `host` that nothing listens on.
pub fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn registration(node_id: u64) -> Value {
    serde_json::json!({
        "node_id": node_id,
        "ip_address": "127.0.0.1",
        "port": 5000 + node_id % 60000,
        "capabilities": ["raft", "gossip"],
        "metadata": {"zone": "a"},
    })
}

/// An agent for the tests' requests: its bound is generous (no test times an answer with it),
/// so an answer a loaded machine delays is not a failure.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .proxy(None)
        .build()
        .into()
}

fn exchange(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = result.expect("the gateway answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("a body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON body ({e}): {text}"));
    (status, body)
}

/// Sends raw bytes, half-closes, and returns everything the server wrote before closing
/// (or before `timeout`).
pub fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if complete(&answer) {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// True once a whole response with a Content-Length body is in `bytes`.
fn complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = final_response(&text).split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .is_some_and(|n| body.len() >= n)
}

/// A raw HTTP answer without the interim `1xx` responses before it.
pub fn final_response(mut answer: &str) -> &str {
    while answer.starts_with("HTTP/1.1 1") {
        match answer.split_once("\r\n\r\n") {
            Some((_, rest)) => answer = rest,
            None => break,
        }
    }
    answer
}

/// The status code of a raw HTTP answer (after any interim `1xx`).
pub fn status_of(answer: &str) -> u16 {
    final_response(answer)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// Polls `condition` until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port nothing can connect to, and no other test can take: a socket is bound to it (on an
/// address of its own) for as long as this lives, and never listens, so connections are refused.
pub struct ClosedPort {
    _bound: socket2::Socket,
    pub host: &'static str,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        let host = own_host::CLOSED;
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let addr: SocketAddr = format!("{host}:0").parse().unwrap();
        socket.bind(&addr.into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        ClosedPort {
            _bound: socket,
            host,
            port,
        }
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// A barrier that cannot hang the suite: once any party panics (see [`Barrier::guard`]) every
/// wait fails at once, and a wait that is not joined by everyone within its limit fails too.
pub struct Barrier {
    parties: usize,
    limit: Duration,
    state: std::sync::Mutex<BarrierState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct BarrierState {
    arrived: usize,
    generation: u64,
    broken: bool,
}

impl Barrier {
    pub fn new(parties: usize) -> std::sync::Arc<Barrier> {
        std::sync::Arc::new(Barrier {
            parties,
            // Only how long a broken party may hang the others: generous, for a loaded machine
            // on which one party's request took over a minute.
            limit: Duration::from_secs(300),
            state: std::sync::Mutex::new(BarrierState::default()),
            changed: std::sync::Condvar::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BarrierState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn break_it(&self) {
        self.state().broken = true;
        self.changed.notify_all();
    }

    /// Waits for every party; panics if one failed or they do not all come within the limit.
    pub fn wait(&self) {
        let mut state = self.state();
        assert!(!state.broken, "another party failed");
        let generation = state.generation;
        state.arrived += 1;
        if state.arrived == self.parties {
            state.arrived = 0;
            state.generation += 1;
            self.changed.notify_all();
            return;
        }
        let deadline = Instant::now() + self.limit;
        while state.generation == generation && !state.broken {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let arrived = state.arrived;
                drop(state);
                self.break_it();
                panic!(
                    "only {arrived} of {} parties reached the barrier within {:?}",
                    self.parties, self.limit
                );
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        assert!(state.generation != generation, "another party failed");
    }

    /// Held by a party for as long as it runs: if it panics, the barrier breaks.
    pub fn guard(self: &std::sync::Arc<Barrier>) -> BarrierGuard {
        BarrierGuard(std::sync::Arc::clone(self))
    }
}

pub struct BarrierGuard(std::sync::Arc<Barrier>);

impl Drop for BarrierGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.break_it();
        }
    }
}

/// Joins `threads`, failing (not hanging) if they do not all end within `limit`.
pub fn join_all<T: Send + 'static>(
    threads: Vec<std::thread::JoinHandle<T>>,
    limit: Duration,
) -> Vec<T> {
    let deadline = Instant::now() + limit;
    threads
        .into_iter()
        .map(|t| {
            assert!(
                eventually(deadline.saturating_duration_since(Instant::now()), || t
                    .is_finished()),
                "a thread did not end within {limit:?}"
            );
            t.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
        .collect()
}

/// A stand-in gateway on 127.0.0.1:0 that answers every request with one fixed status and body
/// (or, if `status` is `None`, reads the request and never answers), counting the requests.
pub struct FakeGateway {
    pub addr: SocketAddr,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// `CONNECT` requests: the fake used as a proxy.
    pub tunnels: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGateway {
    pub fn start(status: Option<u16>, body: &str) -> FakeGateway {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(AtomicUsize::new(0));
        let tunnels = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let body = body.to_owned();
        let thread = {
            let (requests, tunnels, stop) = (requests.clone(), tunnels.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(mut stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let Some(head) = read_request(&mut stream) else {
                        continue;
                    };
                    // As a proxy: accept the tunnel, then answer the request sent through it.
                    if head.starts_with("CONNECT ") {
                        tunnels.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
                        if read_request(&mut stream).is_none() {
                            continue;
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    match status {
                        Some(status) => {
                            let answer = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = stream.write_all(answer.as_bytes());
                        }
                        None => held.push(stream),
                    }
                }
            })
        };
        FakeGateway {
            addr,
            requests,
            tunnels,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn tunnels(&self) -> usize {
        self.tunnels.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        if let Some(thread) = self.thread.take() {
            let _ = join_all(vec![thread], Duration::from_secs(20));
        }
    }
}

/// Reads one request (head and Content-Length body) off `stream`; returns its head.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut bytes = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&bytes);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= length {
                return Some(head.to_owned());
            }
        }
    }
}

/// Runs `f` on a thread of its own and returns its result, failing (not hanging) if it takes
/// longer than `limit`. For calls that could block forever if the behaviour under test broke.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match result.recv_timeout(limit) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no result within {limit:?}"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the call panicked"),
    }
}

/// True once a socket on `port` has bytes in its send queue (`/proc/net/tcp`): an answer the
/// client does not read.
pub fn answers_unread(port: u16) -> bool {
    let port = format!(":{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 4
            && fields[1].ends_with(&port)
            && fields[4]
                .split(':')
                .next()
                .is_some_and(|tx| u64::from_str_radix(tx, 16).unwrap_or(0) > 0)
    })
}

/// A child process that is killed, with every process it started (nginx's workers, chromium
/// under chromedriver), when the guard drops: when the test ends, passed or failed. The child
/// leads a process group of its own, and the whole group gets SIGKILL.
#[derive(Debug)]
pub struct ChildGuard(std::process::Child);

impl ChildGuard {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut std::process::Command) -> std::io::Result<ChildGuard> {
        use std::os::unix::process::CommandExt;
        command.process_group(0).spawn().map(ChildGuard)
    }
}

impl ChildGuard {
    /// Waits for the child to end and collects what it printed, as `Child::wait_with_output`
    /// does (the guard still kills the group when it drops).
    pub fn wait_with_output(&mut self) -> std::io::Result<std::process::Output> {
        use std::io::Read;
        fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        }
        drop(self.0.stdin.take());
        let stdout = drain(self.0.stdout.take());
        let stderr = drain(self.0.stderr.take());
        let status = self.0.wait()?;
        Ok(std::process::Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }
}

/// `spawn` and `output` for a test's commands, with the child in a [`ChildGuard`]: it and
/// whatever it started are killed when the test ends, passed or failed (a command that hangs
/// in a test that gives up on it, a script's server left behind).
pub trait Guarded {
    /// As `Command::spawn`, guarded.
    fn guarded_spawn(&mut self) -> std::io::Result<ChildGuard>;
    /// As `Command::output` (stdin closed, stdout and stderr captured), guarded: what the
    /// child started and left running is killed once it has ended.
    fn guarded_output(&mut self) -> std::io::Result<std::process::Output>;
}

impl Guarded for std::process::Command {
    fn guarded_spawn(&mut self) -> std::io::Result<ChildGuard> {
        ChildGuard::spawn(self)
    }

    fn guarded_output(&mut self) -> std::io::Result<std::process::Output> {
        use std::process::Stdio;
        let mut child = ChildGuard::spawn(
            self.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )?;
        child.wait_with_output()
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;

    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // The group: what the child started dies with it, even if the child is gone already.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gateway-server under a hard descriptor limit of `limit` (one it cannot raise), with the
/// lines it logs and the address it listens on; killed when the guard drops.
pub fn gateway_with_fd_limit(
    limit: u32,
) -> (
    ChildGuard,
    std::sync::mpsc::Receiver<String>,
    std::net::SocketAddr,
) {
    let bin = env!("CARGO_BIN_EXE_gateway-server");
    gateway_process(std::process::Command::new("bash").args([
        "-c",
        &format!("ulimit -n {limit} && exec {bin} --host 127.0.0.1 --port 0"),
    ]))
}

/// Starts `command` (a gateway-server, or a shell that execs one) and returns it with the
/// lines it logs, as they come, and the address its log says it listens on (within 120 s);
/// killed, with its group, when the guard drops.
pub fn gateway_process(
    command: &mut std::process::Command,
) -> (
    ChildGuard,
    std::sync::mpsc::Receiver<String>,
    std::net::SocketAddr,
) {
    use std::io::BufRead;
    let mut child = ChildGuard::spawn(
        command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    )
    .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, log) = std::sync::mpsc::channel();
    // Drains the log after nobody listens too, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let address = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log.recv_timeout(left).expect("the server starts");
        if let Some((_, url)) = line.split_once("listening on http://") {
            break url.trim().parse().unwrap();
        }
    };
    (child, log, address)
}

/// An answer read whole: status, `X-Gateway-Index`, `X-Gateway-Epoch`, `ETag`, the body's
/// length and the body as JSON (`null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub index: Option<u64>,
    pub epoch: Option<String>,
    pub etag: Option<String>,
    pub bytes: usize,
    pub body: Value,
}

/// `GET url + path` with `headers`, read whole.
pub fn get(url: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = agent().get(format!("{url}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().expect("the gateway answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (index, epoch, etag) = (
        header("X-Gateway-Index").map(|v| v.parse().unwrap()),
        header("X-Gateway-Epoch"),
        header("ETag"),
    );
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON ({e}): {text}"))
    };
    Answer {
        status,
        index,
        epoch,
        etag,
        bytes: text.len(),
        body,
    }
}

/// The `/metrics` text of the gateway at `url`.
pub fn metrics_text(url: &str) -> String {
    agent()
        .get(format!("{url}/metrics"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

/// Requests the gateway answered on `route`, whatever their status (from `/metrics`).
pub fn requests_to(server: &TestServer, route: &str) -> usize {
    let prefix = format!("cluster_gateway_requests_total{{route=\"{route}\",");
    metrics_text(&server.url)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// The request lines a fake gateway or a proxy in a test saw, in order (clones share them).
#[derive(Clone, Default)]
pub struct RequestLines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl RequestLines {
    pub fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    /// The ones that asked for `/nodes`.
    pub fn nodes(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.starts_with("GET /nodes"))
            .cloned()
            .collect()
    }
}
