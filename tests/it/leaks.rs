//! No request, answered or refused, leaves a thread or a descriptor behind: a gateway-server
//! process takes 1,000 of each kind, and its thread and descriptor counts (from /proc) return
//! to what they were before.

use std::io::{BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{ChildGuard, Guarded};
use crate::support::{eventually, own_host};

/// A gateway-server process, killed on drop.
pub struct Server {
    child: ChildGuard,
    pub address: String,
}

impl Server {
    pub fn start() -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-server"))
            .args(["--host", "127.0.0.1", "--port", "0", "--workers", "4"])
            .args(["--max-body-bytes", "4096", "--log-level", "ERROR"])
            .stderr(Stdio::piped())
            .guarded_spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines.send(line);
            }
        });
        let address = loop {
            let line = log
                .recv_timeout(Duration::from_secs(20))
                .expect("the server starts");
            if let Some((_, url)) = line.split_once("listening on http://") {
                break url.trim().to_owned();
            }
        };
        Server { child, address }
    }

    /// Threads and open descriptors of the server process.
    pub fn threads_and_fds(&self) -> (usize, usize) {
        let pid = self.child.id();
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
        (threads, fds)
    }

    /// `GET /health` from an address of this test's own. The attacks' connections poison
    /// their peer addresses for a while, and on loopback a new connection may take the port
    /// of one just closed: from the attacks' address, a health probe could land on a poisoned
    /// one and be refused for a reason that is not the one this test is about.
    pub fn health(&self) -> bool {
        let probe = || -> std::io::Result<String> {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            let source: std::net::SocketAddr = format!("{}:0", own_host::LEAKS_HEALTH)
                .parse()
                .expect("an address");
            socket.bind(&source.into())?;
            let target: std::net::SocketAddr = self.address.parse().expect("an address");
            socket.connect_timeout(&target.into(), Duration::from_secs(10))?;
            let mut stream: TcpStream = socket.into();
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            stream.shutdown(Shutdown::Write)?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer)?;
            Ok(String::from_utf8_lossy(&answer).into_owned())
        };
        probe().is_ok_and(|answer| answer.starts_with("HTTP/1.1 200"))
    }
}

/// Sends `bytes`, half-closes, and reads until the server closes (or 10 s).
pub fn exchange(address: &str, bytes: &[u8]) -> String {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `bytes` `n` times, 8 connections at a time.
fn send_many(address: &str, bytes: &[u8], n: usize) {
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..n / 8 {
                    exchange(address, bytes);
                }
            });
        }
    });
}

const HIDDEN: &str =
    "POST /remove HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"node_id\":1}";

#[test]
fn a_thousand_of_each_refused_request_leave_no_thread_or_descriptor_behind() {
    let server = Server::start();
    assert!(server.health());
    let before = server.threads_and_fds();
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "a declared body of 2^64-1 bytes",
            b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n"
                .to_vec(),
        ),
        (
            "a declared body of 1 MiB, not sent",
            b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n{".to_vec(),
        ),
        (
            "a body cut short of its Content-Length",
            [
                &b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"[..],
                &[b' '; 100],
            ]
            .concat(),
        ),
        (
            "a chunked body cut off mid-chunk",
            [
                &b"POST /register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d0\r\n"[..],
                &[b' '; 100],
            ]
            .concat(),
        ),
        (
            "Content-Length with chunked, and a hidden request",
            format!(
                "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
            )
            .into_bytes(),
        ),
        (
            "two Content-Lengths, and a hidden request",
            format!(
                "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 60\r\n\r\n{HIDDEN}"
            )
            .into_bytes(),
        ),
    ];
    for (what, bytes) in &attacks {
        send_many(&server.address, bytes, 1000);
        assert!(server.health(), "the server stopped answering after {what}");
        eprintln!("after 1,000 x {what}: {:?}", server.threads_and_fds());
    }
    // Pool threads above tiny_http's minimum end after 5 s idle.
    let mut now = server.threads_and_fds();
    let back = eventually(Duration::from_secs(60), || {
        now = server.threads_and_fds();
        now.0 <= before.0 && now.1 <= before.1
    });
    assert!(
        back,
        "threads and descriptors {now:?}, before the attacks {before:?}"
    );
}
