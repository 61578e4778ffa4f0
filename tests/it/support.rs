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
        let mut config = ServerConfig {
            host: "127.0.0.1".into(),
            port: 0,
            workers: 4,
            ..ServerConfig::default()
        };
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

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
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
