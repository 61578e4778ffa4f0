//! Answers to durable writes through the real server, over a disk whose syncs the test holds:
//! no answer leaves before the sync that covers it, and writes waiting for the disk hold no
//! worker.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::*;
use crate::server::registry::Liveness;
use crate::server::store::LocalStore;
use crate::server::store::log::{Disk, LogFile, RealDisk};

/// The file system, with the log's syncs held while the test says so.
#[derive(Default)]
struct HeldDisk {
    held: Mutex<bool>,
    released: Condvar,
    /// True while a sync waits to be released.
    waiting: AtomicBool,
    /// Syncs of the log done.
    syncs: AtomicUsize,
}

impl HeldDisk {
    /// Holds every sync until [`Held::release`] or the guard's drop (also when a test fails:
    /// the server's stop waits for the log's writer).
    fn hold(self: &Arc<Self>) -> Held {
        *lock(&self.held) = true;
        Held(Arc::clone(self))
    }
}

struct Held(Arc<HeldDisk>);

impl Held {
    fn release(&self) {
        *lock(&self.0.held) = false;
        self.0.released.notify_all();
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

struct HeldFile {
    disk: Arc<HeldDisk>,
    real: Box<dyn LogFile>,
}

impl Disk for Arc<HeldDisk> {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(HeldFile {
            disk: Arc::clone(self),
            real: RealDisk.open_append(path)?,
        }))
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        RealDisk.write_synced(path, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealDisk.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir)
    }
}

impl LogFile for HeldFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.real.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut held = lock(&self.disk.held);
        while *held {
            self.disk.waiting.store(true, Ordering::SeqCst);
            held = self.disk.released.wait(held).unwrap();
        }
        self.disk.waiting.store(false, Ordering::SeqCst);
        drop(held);
        self.real.sync_data()?;
        self.disk.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.real.truncate(len)
    }
}

/// A data directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server with `workers` workers over a data directory on `disk`.
fn durable_server(workers: usize, disk: &Arc<HeldDisk>) -> (RunningServer, TempDir) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = TempDir(std::env::temp_dir().join(format!(
        "gateway-running-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    let config = ServerConfig {
        host: "127.0.0.1".into(),
        port: 0,
        workers,
        ..ServerConfig::default()
    };
    let disk: Arc<dyn Disk> = Arc::new(Arc::clone(disk));
    let path = dir.0.clone();
    let server = GatewayServer::new(config)
        .start_on(http::answer, move |config| {
            let liveness = Liveness {
                suspect_after: Duration::from_secs(90),
                node_timeout: Duration::from_secs(300),
            };
            let store = LocalStore::open_on(&path, liveness, 1000, Now::system(), 1 << 30, disk)?;
            Ok(Gateway::local(store, config.heartbeat_interval))
        })
        .unwrap();
    (server, dir)
}

/// Sends `POST /register` for `node_id` on a connection of its own, and returns it.
fn register(addr: SocketAddr, node_id: u64) -> TcpStream {
    let body = format!(
        r#"{{"node_id": {node_id}, "ip_address": "10.0.0.{node_id}", "port": 5000, "capabilities": []}}"#
    );
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /register HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
}

/// The whole answer on `stream` (its server closes it), or what came before the read timeout.
fn answer(mut stream: TcpStream) -> String {
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether any byte of an answer arrived on `stream` yet (without waiting for one).
fn answered_yet(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0; 1];
    let arrived = match stream.peek(&mut byte) {
        Ok(n) => n > 0,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("reading the answer: {e}"),
    };
    stream.set_nonblocking(false).unwrap();
    arrived
}

/// `GET /health?live` (which waits for no disk) on a connection of its own, within 5 s.
fn live(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET /health?live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.get(9..12)?.parse().ok()
}

/// Polls `condition` for 10 s at most.
fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_durable_write_is_answered_only_after_the_sync_that_covers_it() {
    let disk = Arc::new(HeldDisk::default());
    let (server, _dir) = durable_server(2, &disk);
    let addr = server.local_addr();
    let held = disk.hold();
    let first = register(addr, 1);
    assert!(
        eventually(|| disk.waiting.load(Ordering::SeqCst)),
        "the writer never synced the registration"
    );
    // The server has routed it (its record is in the sync being held) and goes on serving: a
    // request sent after it is answered, and still nothing came back for the registration.
    assert_eq!(live(addr), Some(200));
    assert!(
        !answered_yet(&first),
        "the registration was answered before its sync: {:?}",
        answer(first)
    );
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 0);
    held.release();
    let answer = answer(first);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""is_bootstrap":true"#), "{answer}");
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 1);
    server.stop();
}

#[test]
fn writes_waiting_for_the_disk_hold_no_worker_and_share_the_next_sync() {
    let disk = Arc::new(HeldDisk::default());
    let (server, _dir) = durable_server(2, &disk);
    let addr = server.local_addr();
    let held = disk.hold();
    let first = register(addr, 1);
    assert!(
        eventually(|| disk.waiting.load(Ordering::SeqCst)),
        "the writer never synced the registration"
    );
    // More writes than workers while the first sync is held: each is routed and handed over,
    // and no worker waits for the disk.
    let gateway = Arc::clone(server.gateway());
    let before = gateway.version();
    let others: Vec<TcpStream> = (2..=5).map(|id| register(addr, id)).collect();
    assert!(
        eventually(|| gateway.version() >= before + 4),
        "the writes behind the held sync were not all routed: version {before} -> {}",
        gateway.version()
    );
    assert_eq!(
        live(addr),
        Some(200),
        "a request behind writes waiting for the disk was not answered: workers wait on it"
    );
    assert!(!answered_yet(&first));
    assert!(others.iter().all(|stream| !answered_yet(stream)));
    held.release();
    for stream in std::iter::once(first).chain(others) {
        let answer = answer(stream);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(
        disk.syncs.load(Ordering::SeqCst),
        2,
        "the first registration's sync, then one for the four that waited behind it"
    );
    server.stop();
}

/// Bytes the server's socket from `server` to the client at `client` has not sent yet
/// (`/proc/net/tcp`'s transmit queue).
fn unsent(server: SocketAddr, client: SocketAddr) -> u64 {
    let (local, remote) = (
        format!(":{:04X} ", server.port()),
        format!(":{:04X} ", client.port()),
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mine = fields.len() > 4
                && format!("{} ", fields[1]).ends_with(&local)
                && format!("{} ", fields[2]).ends_with(&remote);
            let tx = fields.get(4)?.split(':').next()?;
            mine.then(|| u64::from_str_radix(tx, 16).unwrap_or(0))
        })
        .sum()
}

/// A durable answer to a client that does not read holds the sending thread writing it, and
/// nothing else: an answer settled while that write is stuck is sent by another thread, long
/// before the stuck write's 10 s timeout would free the first.
#[test]
fn a_client_that_does_not_read_its_durable_answers_holds_up_no_other_answer() {
    let disk = Arc::new(HeldDisk::default());
    // One worker: once it answers a request sent after a registration, it is done routing
    // the registration (and, its sync held, has handed its answer to the sending threads).
    let (server, _dir) = durable_server(1, &disk);
    let addr = server.local_addr();
    let post = |stream: &mut TcpStream, id: u64, extra: &str, headers: &str| {
        let body = format!(
            r#"{{"node_id": {id}, "ip_address": "10.0.0.1", "port": 5000, "capabilities": []{extra}}}"#
        );
        write!(
            stream,
            "POST /register HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    };
    // About 9.6 MB of list, more than a connection's buffers: an answer with it blocks on a
    // client that does not read.
    let blob = format!(r#", "metadata": {{"blob": "{}"}}"#, "m".repeat(16_000));
    for id in 1..=600 {
        let mut stream = TcpStream::connect(addr).unwrap();
        post(
            &mut stream,
            id,
            &blob,
            "Connection: close\r\nPrefer: return=minimal\r\n",
        );
        assert!(answer(stream).starts_with("HTTP/1.1 200"));
    }
    // The other client's connection is made (and taken by a connection thread) first.
    let mut other = TcpStream::connect(addr).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(live(addr), Some(200));
    let gateway = Arc::clone(server.gateway());
    let before = gateway.version();
    // A client with a small receive buffer registers, answered with the whole list, and
    // never reads. Its answer waits for a held sync, so a sending thread writes it.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stuck: TcpStream = socket.into();
    let held = disk.hold();
    post(&mut stuck, 1001, "", "");
    assert!(
        eventually(|| gateway.version() > before),
        "the non-reader's registration was not routed"
    );
    assert_eq!(live(addr), Some(200));
    drop(held);
    let client = stuck.local_addr().unwrap();
    assert!(
        eventually(|| unsent(addr, client) > 0),
        "the answer to the non-reader never filled its connection"
    );
    // While that write is stuck, the other client registers; its answer, too, waits for a
    // held sync, then is queued behind the stuck one.
    let held = disk.hold();
    post(&mut other, 2000, "", "Connection: close\r\n");
    assert!(
        eventually(|| gateway.version() > before + 1),
        "the other registration was not routed"
    );
    assert_eq!(live(addr), Some(200));
    drop(held);
    let started = Instant::now();
    let answer = answer(other);
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200"), "{took:?}: {answer:.80}");
    assert!(unsent(addr, client) > 0, "the stuck write ended first");
    assert!(
        took < Duration::from_secs(5),
        "the answer waited {took:?} behind a send to a client that does not read"
    );
    drop(stuck);
    server.stop();
}
