//! The recommended front (`scripts/deploy/nginx.conf`) in front of a gateway-server: the
//! attacks tiny_http cannot be protected from by the gateway itself are stopped there.
//!
//! Needs nginx (`build.rs` sets `has_nginx`): without it the test is listed as ignored, with the
//! reason; `.ci/run` installs it and fails if any test was ignored.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::leaks::Server;
use crate::support::{ChildGuard, eventually};

/// nginx listens on its own loopback address, so no test server can take its port.
const FRONT_HOST: &str = "127.0.0.9";

pub(crate) struct Front {
    // Read by no one: killed, with its workers, when the front drops.
    _nginx: ChildGuard,
    pub(crate) address: String,
    _dir: TempDir,
}

/// The server certificate and key for the shipped TLS lines (tests/it/tls.rs).
pub(crate) struct Tls<'a> {
    pub(crate) certificate: &'a std::path::Path,
    pub(crate) key: &'a std::path::Path,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn nginx_binary() -> Option<String> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_owned)
}

impl Front {
    /// nginx with the shipped configuration, proxying to `upstream`, over plain HTTP: the TLS
    /// lines are taken out.
    fn start(nginx: &str, upstream: &str) -> Front {
        Front::start_with(nginx, upstream, None, &|site| site)
    }

    /// [`Front::start`] with the shipped configuration changed by `edit` first.
    fn start_edited(nginx: &str, upstream: &str, edit: &dyn Fn(String) -> String) -> Front {
        Front::start_with(nginx, upstream, None, edit)
    }

    /// nginx with the shipped configuration, TLS included, proxying to `upstream`.
    pub(crate) fn start_tls(nginx: &str, upstream: &str, tls: Tls<'_>) -> Front {
        Front::start_with(nginx, upstream, Some(tls), &|site| site)
    }

    fn start_with(
        nginx: &str,
        upstream: &str,
        tls: Option<Tls<'_>>,
        edit: &dyn Fn(String) -> String,
    ) -> Front {
        static FRONTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gateway-front-{}-{}-{}",
            if tls.is_some() { "tls" } else { "plain" },
            std::process::id(),
            FRONTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind((FRONT_HOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("{FRONT_HOST}:{port}");
        let shipped = include_str!("../../scripts/deploy/nginx.conf");
        let certificate = "/etc/ssl/cluster-gateway/gateway.crt;";
        let key = "/etc/ssl/cluster-gateway/gateway.key;";
        assert!(
            shipped.contains("server 127.0.0.1:8080;")
                && shipped.contains("listen 443 ssl;")
                && shipped.contains(certificate)
                && shipped.contains(key)
        );
        let site = edit(shipped.to_owned())
            .replace("server 127.0.0.1:8080;", &format!("server {upstream};"));
        let site = match tls {
            Some(tls) => site
                .replace("listen 443 ssl;", &format!("listen {address} ssl;"))
                .replace(certificate, &format!("{};", tls.certificate.display()))
                .replace(key, &format!("{};", tls.key.display())),
            None => site
                .replace("listen 443 ssl;", &format!("listen {address};"))
                .lines()
                .filter(|line| !line.trim_start().starts_with("ssl_"))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        std::fs::write(dir.join("gateway.conf"), site).unwrap();
        let d = dir.display();
        let main = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/gateway.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let nginx = ChildGuard::spawn(
            Command::new(nginx)
                .args(["-p", &dir.display().to_string(), "-c"])
                .arg(dir.join("nginx.conf"))
                .stderr(Stdio::inherit()),
        )
        .expect("nginx runs");
        let front = Front {
            _nginx: nginx,
            address,
            _dir: TempDir(dir),
        };
        assert!(
            eventually(Duration::from_secs(60), || TcpStream::connect(
                &front.address
            )
            .is_ok()),
            "nginx did not start"
        );
        front
    }

    /// Sends `bytes` and reads until nginx closes or one whole answer has come (or 10 s).
    /// No half-close: nginx takes it for a client that went away.
    fn send(&self, bytes: &[u8]) -> String {
        let Ok(mut stream) = TcpStream::connect(&self.address) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.write_all(bytes);
        let mut answer = Vec::new();
        let mut buf = [0; 65536];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if whole(&answer) {
                break;
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    }
}

/// True once `bytes` hold a head and the body its Content-Length announces.
fn whole(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        })
        .is_some_and(|n| body.len() >= n)
}

fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn register(front: &Front, id: u64) -> String {
    let body = crate::support::registration(id).to_string();
    front.send(
        format!(
            "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

fn node_1_is_registered(front: &Front) -> bool {
    front
        .send(b"GET /nodes?status=all HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .contains("\"node_id\":1,")
}

const HIDDEN: &str =
    "POST /remove HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"node_id\":1}";

#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx: apt-get install nginx")]
fn the_recommended_front_stops_what_tiny_http_cannot() {
    let Some(nginx) = nginx_binary() else {
        panic!("nginx is not installed (apt-get install nginx)");
    };
    let gateway = Server::start();
    let front = Front::start(&nginx, &gateway.address);
    let ok = register(&front, 1);
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(node_1_is_registered(&front));
    let (threads, fds) = gateway.threads_and_fds();

    // What tiny_http answers with an empty body, with nothing, or with a thread stuck forever:
    // nginx refuses it with a JSON error, or (a header line without a colon, which it drops;
    // HTTP/1.2, which it takes as 1.1) passes on a clean request.
    let cases: [(&str, &[u8], bool); 11] = [
        ("HTTP/0.9", b"GET /health HTTP/0.9\r\n\r\n", true),
        (
            "a non-ASCII header",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: \xc3\xa9\r\nConnection: close\r\n\r\n",
            true,
        ),
        (
            "LF-only line ends",
            b"GET /health HTTP/1.1\nHost: x\nConnection: close\n\n",
            false,
        ),
        ("HTTP/2.0", b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", true),
        ("HTTP/3.0", b"GET /health HTTP/3.0\r\nHost: x\r\n\r\n", true),
        (
            "the HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            true,
        ),
        ("a bad request line", b"GET\r\n\r\n", true),
        (
            "a non-ASCII path",
            "GET /h\u{e9}alth HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes(),
            true,
        ),
        (
            "Expect: foo",
            b"POST /register HTTP/1.1\r\nHost: x\r\nExpect: foo\r\nContent-Length: 2\r\n\r\n{}",
            true,
        ),
        (
            "a header without a colon",
            b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            "HTTP/1.2",
            b"GET /health HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n",
            false,
        ),
    ];
    for (what, bytes, refused) in cases {
        let answer = front.send(bytes);
        let code = status(&answer);
        if refused {
            assert!((400..=505).contains(&code), "{what}: {answer:?}");
            assert!(
                answer.contains("\"error\""),
                "{what}: a JSON error: {answer:?}"
            );
        } else {
            assert_eq!(code, 200, "{what}: {answer:?}");
            assert!(answer.contains("\"healthy\""), "{what}: {answer:?}");
        }
    }
    // 1,000 HTTP/2.0 request lines: each would hold a gateway thread and two descriptors.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..125 {
                    front.send(b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n");
                }
            });
        }
    });

    // Absolute-form request lines, which HTTP/1.1 servers must accept.
    let absolute =
        front.send(b"GET http://gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&absolute), 200, "{absolute}");

    // Header memory: 2 MiB of tiny headers is refused at the front.
    let mut flood = b"GET /health HTTP/1.1\r\nHost: x\r\n".to_vec();
    flood.extend("a:b\r\n".repeat(400_000).as_bytes());
    flood.extend(b"\r\n");
    let answer = front.send(&flood);
    assert!(matches!(status(&answer), 400 | 431 | 494), "{answer:?}");

    // Smuggling: the hidden /remove never reaches the gateway.
    let smuggled = [
        format!(
            "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
        ),
        format!(
            "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 60\r\n\r\n{HIDDEN}"
        ),
        format!("POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{HIDDEN}"),
        format!(
            "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: +13\r\n\r\n{{\"node_id\":1}}{HIDDEN}"
        ),
    ];
    for attack in &smuggled {
        let answer = front.send(attack.as_bytes());
        assert!(!answer.contains("\"removed\""), "{attack:?}: {answer:?}");
        assert!(
            node_1_is_registered(&front),
            "{attack:?}: the hidden /remove ran"
        );
    }

    // A chunked body cut off mid-chunk never reaches the gateway.
    let body = crate::support::registration(7).to_string();
    let cut = format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}",
        body.len() + 10
    );
    front.send(cut.as_bytes());
    let nodes =
        front.send(b"GET /nodes?status=all HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        !nodes.contains("\"node_id\":7,"),
        "the cut body was registered: {nodes}"
    );

    // Body slowloris: 60 connections that declare a body and send nothing (`limit_conn` allows
    // 64 per client address) hold nothing in the gateway; a large registration goes through.
    let silent: Vec<TcpStream> = (0..60)
        .filter_map(|_| {
            let mut s = TcpStream::connect(&front.address).ok()?;
            s.write_all(b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
                .ok()?;
            Some(s)
        })
        .collect();
    let mut large = crate::support::registration(2);
    large["metadata"] = serde_json::json!({"blob": "x".repeat(2000)});
    let large = large.to_string();
    let answer = front.send(
        format!(
            "POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{large}",
            large.len()
        )
        .as_bytes(),
    );
    assert_eq!(status(&answer), 200, "{answer}");
    drop(silent);

    // A client that pipelines and never reads holds nginx's memory, not a gateway worker.
    let mut greedy = TcpStream::connect(&front.address).unwrap();
    greedy
        .write_all(
            "GET /nodes?status=all HTTP/1.1\r\nHost: x\r\n\r\n"
                .repeat(64)
                .as_bytes(),
        )
        .unwrap();
    assert!(gateway.health());
    let _ = greedy.shutdown(Shutdown::Both);

    // Nothing of all this is left in the gateway.
    let mut now = gateway.threads_and_fds();
    let back = eventually(Duration::from_secs(60), || {
        now = gateway.threads_and_fds();
        now.0 <= threads && now.1 <= fds + 2
    });
    assert!(
        back,
        "gateway threads and descriptors {now:?}, before {:?}",
        (threads, fds)
    );
    let mut buf = [0; 1];
    let _ = greedy.read(&mut buf);
}

/// `Transfer-Encoding` values that are `chunked` only once trimmed of whitespace other than
/// spaces and tabs: tiny_http trims a header value of any Unicode whitespace before the gateway
/// sees it, so straight to the gateway each of them frames the body as chunked.
const OBFUSCATED_CHUNKED: [&str; 4] = [
    "\x0bchunked",
    "\x0cchunked",
    "chunked\x0b",
    "\x0b \x0cchunked",
];

/// A chunked registration of node 7 whose `Transfer-Encoding` header says `te`.
fn chunked_registration(te: &str) -> String {
    let body = crate::support::registration(7).to_string();
    format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: {te}\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
}

fn node_7_is_registered(front: &Front) -> bool {
    front
        .send(b"GET /nodes?status=all HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .contains("\"node_id\":7,")
}

#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx: apt-get install nginx")]
fn an_obfuscated_transfer_encoding_is_refused_at_the_front_and_never_reaches_the_gateway() {
    let Some(nginx) = nginx_binary() else {
        panic!("nginx is not installed (apt-get install nginx)");
    };
    let gateway = Server::start();
    let front = Front::start(&nginx, &gateway.address);
    let ok = register(&front, 1);
    assert_eq!(status(&ok), 200, "{ok}");

    for te in OBFUSCATED_CHUNKED {
        // A chunked registration: refused by the front, with a JSON error, and not stored.
        let answer = front.send(chunked_registration(te).as_bytes());
        assert!(
            matches!(status(&answer), 400 | 501),
            "TE {te:?}: the front let it through: {answer:?}"
        );
        assert!(answer.contains("\"error\""), "TE {te:?}: {answer:?}");
        assert!(!node_7_is_registered(&front), "TE {te:?}: node 7 stored");

        // Smuggling with it: a length for the front, chunks for the gateway. The hidden
        // /remove never runs.
        let attack = format!(
            "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\
             Transfer-Encoding: {te}\r\n\r\n0\r\n\r\n{HIDDEN}",
            5 + HIDDEN.len()
        );
        let answer = front.send(attack.as_bytes());
        assert!(
            matches!(status(&answer), 400 | 501),
            "TE {te:?} with a length: the front let it through: {answer:?}"
        );
        assert!(!answer.contains("\"removed\""), "TE {te:?}: {answer:?}");
        assert!(
            node_1_is_registered(&front),
            "TE {te:?}: the hidden /remove ran"
        );
    }

    // The control, and the limitation RELIABILITY.md lists: sent straight to the gateway, the
    // same bytes are taken as chunked and register node 7.
    let direct: std::net::SocketAddr = gateway.address.parse().unwrap();
    let answer = crate::support::raw(
        direct,
        chunked_registration(OBFUSCATED_CHUNKED[0]).as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(status(&answer), 200, "straight to the gateway: {answer:?}");
    assert!(node_7_is_registered(&front));
}

/// The longest a long-poll is held: `wait` is cut to 5 minutes, plus up to a sixteenth of
/// jitter (docs/http-api.md).
pub(crate) const LONGEST_LONG_POLL: Duration = Duration::from_millis(300_000 + 300_000 / 16);

/// The `proxy_read_timeout` the shipped front applies to `path`: the location nginx picks for
/// it (an exact `=` location, else the first regular expression that matches, else the longest
/// prefix), or the server's own. Understands the forms the file uses; anything else fails the
/// test rather than being misread.
pub(crate) fn shipped_read_timeout(path: &str) -> Duration {
    let conf = include_str!("../../scripts/deploy/nginx.conf");
    // (location pattern, its proxy_read_timeout); the server's own under the pattern "".
    let mut blocks: Vec<(String, Option<Duration>)> = vec![(String::new(), None)];
    let mut depth = 0;
    let mut current = 0;
    for line in conf.lines() {
        let line = line.split('#').next().unwrap().trim();
        if depth == 1 && line.starts_with("location ") {
            let pattern = line
                .trim_start_matches("location ")
                .trim_end_matches('{')
                .trim();
            blocks.push((pattern.to_owned(), None));
            current = blocks.len() - 1;
        }
        if let Some(value) = line.strip_prefix("proxy_read_timeout ") {
            let value = value.trim_end_matches(';').trim();
            let seconds: u64 = value
                .strip_suffix('s')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("proxy_read_timeout in seconds, got {value:?}"));
            let at = if depth == 1 { 0 } else { current };
            blocks[at].1 = Some(Duration::from_secs(seconds));
        }
        depth += line.matches('{').count();
        depth -= line.matches('}').count();
        if depth == 1 {
            current = 0;
        }
    }
    let matches = |pattern: &str| -> Option<(u8, usize)> {
        if let Some(exact) = pattern.strip_prefix("= ") {
            return (exact == path).then_some((0, 0));
        }
        if let Some(regex) = pattern.strip_prefix("~ ") {
            // Only `^/(a|b)$` is understood.
            let inner = regex
                .strip_prefix("^/(")
                .and_then(|r| r.strip_suffix(")$"))
                .unwrap_or_else(|| panic!("a location regex this test understands: {regex}"));
            let hit = inner.split('|').any(|name| path == format!("/{name}"));
            return hit.then_some((1, 0));
        }
        path.starts_with(pattern)
            .then_some((2, usize::MAX - pattern.len()))
    };
    let chosen = blocks[1..]
        .iter()
        .enumerate()
        .filter_map(|(i, (pattern, timeout))| matches(pattern).map(|rank| (rank, i, *timeout)))
        .min_by_key(|(rank, i, _)| (*rank, *i))
        .unwrap_or_else(|| panic!("no location of the front serves {path}"));
    chosen.2.or(blocks[0].1).unwrap_or(Duration::from_secs(60))
}

#[test]
fn the_shipped_front_waits_out_the_longest_long_poll() {
    for path in ["/nodes", "/leader"] {
        let timeout = shipped_read_timeout(path);
        assert!(
            timeout > LONGEST_LONG_POLL,
            "proxy_read_timeout for {path} is {timeout:?}: a long-poll may take {LONGEST_LONG_POLL:?}"
        );
    }
    // The parser reads what it should: other routes keep the short timeout.
    assert_eq!(shipped_read_timeout("/health"), Duration::from_secs(90));
}

#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx: apt-get install nginx")]
fn a_long_poll_passes_through_the_front_and_gets_its_200() {
    let Some(nginx) = nginx_binary() else {
        panic!("nginx is not installed (apt-get install nginx)");
    };
    let gateway = Server::start();
    let front = Front::start(&nginx, &gateway.address);
    let ok = register(&front, 1);
    assert_eq!(status(&ok), 200, "{ok}");
    let nodes = front.send(b"GET /nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let body = &nodes[nodes.find("\r\n\r\n").unwrap() + 4..];
    let version = serde_json::from_str::<serde_json::Value>(body).unwrap()["registry_version"]
        .as_u64()
        .unwrap();
    let started = std::time::Instant::now();
    let answer = front.send(
        format!(
            "GET /nodes?index={version}&wait=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let took = started.elapsed();
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(answer.contains("\"node_id\":1,"), "{answer}");
    assert!(
        took >= Duration::from_millis(2900),
        "answered after {took:?}: no wait"
    );
}

#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx: apt-get install nginx")]
fn the_front_says_timed_out_for_a_gateway_that_does_not_answer_in_time() {
    let Some(nginx) = nginx_binary() else {
        panic!("nginx is not installed (apt-get install nginx)");
    };
    // A gateway that takes connections and never answers; a front that waits 1 s for it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = silent.local_addr().unwrap().to_string();
    let front = Front::start_edited(&nginx, &upstream, &|site| {
        assert!(site.contains("proxy_read_timeout 90s;"));
        site.replace("proxy_read_timeout 90s;", "proxy_read_timeout 1s;")
    });
    let answer = front.send(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&answer), 504, "{answer}");
    assert!(answer.contains("timed out"), "{answer}");
    assert!(answer.contains("\"status_code\":504"), "{answer}");
    drop(silent);
    // Nothing listens any more: 502, which says so.
    let answer = front.send(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(answer.contains("could not reach the gateway"), "{answer}");
}

#[test]
#[cfg_attr(not(has_nginx), ignore = "needs nginx: apt-get install nginx")]
fn an_event_stream_passes_through_the_front_as_each_change_happens() {
    let Some(nginx) = nginx_binary() else {
        panic!("nginx is not installed (apt-get install nginx)");
    };
    let gateway = Server::start();
    let front = Front::start(&nginx, &gateway.address);
    let mut stream = TcpStream::connect(&front.address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(b"GET /nodes?changes=1&stream=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut read_until = |needle: &str, seen: &mut Vec<u8>| {
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(seen).contains(needle) {
            let n = stream.read(&mut buffer).unwrap_or_else(|e| {
                panic!(
                    "{needle} did not come through the front: {e}; read {}",
                    String::from_utf8_lossy(seen)
                )
            });
            assert!(
                n > 0,
                "the front closed the stream: {}",
                String::from_utf8_lossy(seen)
            );
            seen.extend_from_slice(&buffer[..n]);
        }
    };
    // The head and the first event (the full list) come at once...
    read_until("\"full\":true", &mut seen);
    let head = String::from_utf8_lossy(&seen).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    // ...and a change while the stream is open comes as it happens, not when the front's
    // buffers fill or the stream ends.
    let ok = register(&front, 1);
    assert_eq!(status(&ok), 200, "{ok}");
    read_until("\"event\":\"joined\"", &mut seen);
}
