//! Delta-answer figures for `scripts/bench.sh` (issue 25's watcher targets, issue 21's item 8).
//!
//! `delta_bench watchers GATEWAY_URL N RATE SECONDS GATEWAY_PID`: parks N delta watchers
//! (`GET /nodes?index=V&epoch=E&changes=1&wait=60s`, each on a keep-alive connection of its
//! own, asking again at once with the new index), then changes one node's metadata RATE times
//! a second for SECONDS (`POST /register`, `Prefer: return=minimal`, one at a time: a gateway
//! that cannot keep up shows as a lower rate, printed). Prints the gateway's CPU
//! over that window (from `/proc/GATEWAY_PID/stat`) as a share of one core, the bytes of the
//! watchers' answers per change they carried, and the time from sending a change to each
//! watcher's whole answer carrying it (p50, p99, max over every watcher and change).
//!
//! `delta_bench streams GATEWAY_URL N RATE SECONDS GATEWAY_PID`: the same with N event
//! streams (`GET /nodes?index=V&epoch=E&changes=1&stream=1`) in place of the long-polls.
//!
//! `delta_bench nodes GATEWAY_URL N PERIOD_SECONDS SECONDS GATEWAY_PID`: N `GatewayClient`s
//! in this process, each registered and watching (`ClientBuilder::watch`), each publishing a
//! metadata change every PERIOD_SECONDS (spread evenly); prints the gateway's CPU over SECONDS
//! and this process's CPU divided by N (each node: heartbeat, watch and publishing).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_gateway::GatewayClient;
use cluster_gateway::api::Registration;

#[path = "support/watch.rs"]
mod support;
use support::{agent, index, percentile, wait_until_parked};

/// User plus system CPU seconds of process `pid` (`self` for this one), from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// One answer read off a keep-alive connection: `X-Gateway-Index` and the body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Option<(u64, Vec<u8>)> {
    let (mut length, mut index) = (0usize, 0u64);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok()?;
            } else if name.eq_ignore_ascii_case("x-gateway-index") {
                index = value.parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((index, body))
}

#[derive(serde::Deserialize)]
struct Delta {
    full: bool,
    changes: Vec<Event>,
}

#[derive(serde::Deserialize)]
struct Event {
    registry_version: u64,
}

/// What the watchers saw: per answer, when it arrived, its bytes and its events' versions.
type Seen = Arc<Mutex<Vec<(Instant, usize, Vec<u64>, bool)>>>;

fn watcher(address: String, path_of: impl Fn(u64) -> String, mut index: u64, seen: Seen) {
    let stream = TcpStream::connect(&address).expect("connect");
    stream.set_nodelay(true).ok();
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut mine = Vec::new();
    loop {
        let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", path_of(index));
        if writer.write_all(request.as_bytes()).is_err() {
            break;
        }
        let Some((next, body)) = read_answer(&mut reader) else {
            break;
        };
        let at = Instant::now();
        let delta: Delta = serde_json::from_slice(&body).expect("a delta answer");
        let versions = delta.changes.iter().map(|e| e.registry_version).collect();
        mine.push((at, body.len(), versions, delta.full));
        index = next;
        if mine.len() >= 64 {
            seen.lock().unwrap().append(&mut mine);
        }
    }
    seen.lock().unwrap().append(&mut mine);
}

/// epoll, declared by hand (no crate for a benchmark's three calls).
#[allow(unsafe_code)]
mod epoll {
    #[cfg_attr(target_arch = "x86_64", repr(C, packed))]
    #[cfg_attr(not(target_arch = "x86_64"), repr(C))]
    #[derive(Clone, Copy)]
    pub struct Event {
        pub events: u32,
        pub data: u64,
    }
    pub const IN: u32 = 0x001;
    unsafe extern "C" {
        fn epoll_create1(flags: i32) -> i32;
        fn epoll_ctl(epfd: i32, op: i32, fd: i32, event: *mut Event) -> i32;
        fn epoll_wait(epfd: i32, events: *mut Event, maxevents: i32, timeout: i32) -> i32;
    }
    pub fn create() -> i32 {
        // SAFETY: no pointers.
        let fd = unsafe { epoll_create1(0) };
        assert!(fd >= 0, "epoll_create1");
        fd
    }
    pub fn add(epfd: i32, fd: i32, token: u64) {
        let mut event = Event {
            events: IN,
            data: token,
        };
        // SAFETY: `event` lives across the call.
        assert_eq!(
            unsafe { epoll_ctl(epfd, 1, fd, &mut event) },
            0,
            "epoll_ctl"
        );
    }
    pub fn wait(epfd: i32, events: &mut [Event], timeout_ms: i32) -> usize {
        // SAFETY: the kernel writes at most `events.len()` entries.
        let n = unsafe { epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, timeout_ms) };
        n.max(0) as usize
    }
}

/// N event streams (`GET /nodes?index=V&epoch=E&changes=1&stream=1`) read by one thread over
/// epoll, as watchers on other machines would cost the gateway: a thread per stream on the
/// same two cores makes every write wake a thread, and loopback charges that to the sender.
/// Each chunk's `data:` line is a delta answer (keepalive comments are skipped).
fn streamers(address: &str, path: &str, n: usize, seen: Seen, open: Arc<AtomicUsize>) {
    use std::os::fd::AsRawFd;
    let epfd = epoll::create();
    let mut conns: Vec<(TcpStream, Vec<u8>, bool)> = Vec::with_capacity(n);
    for token in 0..n {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream.set_nodelay(true).ok();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .expect("send the request");
        stream.set_nonblocking(true).expect("non-blocking");
        epoll::add(epfd, stream.as_raw_fd(), token as u64);
        conns.push((stream, Vec::new(), false));
    }
    let mut events = vec![epoll::Event { events: 0, data: 0 }; 256];
    let mut buffer = vec![0u8; 64 * 1024];
    let mut mine = Vec::new();
    let mut ended = 0;
    while ended < n {
        let ready = epoll::wait(epfd, &mut events, 1000);
        let at = Instant::now();
        for event in &events[..ready] {
            let token = event.data as usize;
            let (stream, pending, headed) = &mut conns[token];
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => {
                        ended += 1;
                        break;
                    }
                    Ok(k) => pending.extend_from_slice(&buffer[..k]),
                    Err(_) => break,
                }
            }
            if !*headed {
                let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                pending.drain(..end + 4);
                *headed = true;
                open.fetch_add(1, Ordering::SeqCst);
            }
            // Whole chunks: `SIZE\r\nDATA\r\n`.
            let mut used = 0;
            loop {
                let rest = &pending[used..];
                let Some(line) = rest.windows(2).position(|w| w == b"\r\n") else {
                    break;
                };
                let size = std::str::from_utf8(&rest[..line])
                    .ok()
                    .and_then(|h| usize::from_str_radix(h, 16).ok())
                    .expect("a chunk size");
                if rest.len() < line + 2 + size + 2 {
                    break;
                }
                let text = &rest[line + 2..line + 2 + size];
                used += line + 2 + size + 2;
                if let Some(start) = text.windows(6).position(|w| w == b"data: ") {
                    let body = &text[start + 6..];
                    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
                    let delta: Delta = serde_json::from_slice(&body[..end]).expect("a delta event");
                    let versions = delta.changes.iter().map(|e| e.registry_version).collect();
                    mine.push((at, size, versions, delta.full));
                }
            }
            pending.drain(..used);
        }
        if !mine.is_empty() {
            seen.lock().unwrap().append(&mut mine);
        }
    }
}

/// The floor for the stream row: what writing one event of `size` bytes to `n` loopback
/// connections `rate` times a second costs a thread that does nothing else (no HTTP, no
/// registry), read by the same epoll reader. Returns that thread's CPU over `seconds` as a
/// share of a core: on loopback the sender's `send` also runs the receiver's TCP stack.
fn floor(n: usize, rate: f64, seconds: f64, size: usize) -> f64 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().unwrap().to_string();
    let (seen, open) = (Seen::default(), Arc::new(AtomicUsize::new(0)));
    {
        let (address, seen, open) = (address.clone(), Arc::clone(&seen), Arc::clone(&open));
        std::thread::spawn(move || streamers(&address, "/floor", n, seen, open));
    }
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut socket, _) = listener.accept().expect("accept");
        socket.set_nodelay(true).ok();
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request);
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("head");
        sockets.push(socket);
    }
    let body = format!(
        "{{\"full\":false,\"changes\":[],\"pad\":\"{}\",\"registry_version\":1}}",
        "x".repeat(size.saturating_sub(60))
    );
    let frame = format!("id: 1\ndata: {body}\n\n");
    let chunk = format!("{:x}\r\n{frame}\r\n", frame.len());
    let writer = std::thread::spawn(move || {
        let (cpu0, wall0) = (cpu_seconds("thread-self"), Instant::now());
        let total = (rate * seconds) as u64;
        for i in 0..total {
            let due = wall0 + Duration::from_secs_f64(i as f64 / rate);
            if let Some(pause) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(pause);
            }
            for socket in &mut sockets {
                socket.write_all(chunk.as_bytes()).expect("write");
            }
        }
        (cpu_seconds("thread-self") - cpu0) / wall0.elapsed().as_secs_f64()
    });
    writer.join().expect("the floor's writer")
}

fn watchers(url: &str, n: usize, rate: f64, seconds: f64, pid: &str, streams: bool) {
    let agent = agent();
    let (start, epoch) = index(&agent, url);
    let address = url.trim_start_matches("http://").to_owned();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let open = Arc::new(AtomicUsize::new(0));
    if streams {
        let (address, seen, open) = (address.clone(), Arc::clone(&seen), Arc::clone(&open));
        let path = format!("/nodes?index={start}&epoch={epoch}&changes=1&stream=1");
        std::thread::spawn(move || streamers(&address, &path, n, seen, open));
    }
    for _ in 0..if streams { 0 } else { n } {
        let (address, seen, epoch) = (address.clone(), Arc::clone(&seen), epoch.clone());
        let path =
            move |index: u64| format!("/nodes?index={index}&epoch={epoch}&changes=1&wait=60s");
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || watcher(address, path, start, seen))
            .expect("a watcher thread");
    }
    if streams {
        let deadline = Instant::now() + Duration::from_secs(60);
        while open.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the streams did not open");
            std::thread::sleep(Duration::from_millis(1));
        }
    } else {
        wait_until_parked(&agent, url, n);
    }
    // The changes: one node's metadata each, spread over the 10,000 seeded ones.
    let mut sent: HashMap<u64, Instant> = HashMap::new();
    let (cpu0, wall0) = (cpu_seconds(pid), Instant::now());
    // For SECONDS at most: a gateway that cannot keep up shows as a rate below RATE.
    let total = (rate * seconds) as u64;
    for i in 0..total {
        if wall0.elapsed().as_secs_f64() >= seconds {
            break;
        }
        let due = wall0 + Duration::from_secs_f64(i as f64 / rate);
        if let Some(pause) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(pause);
        }
        let id = i % 10_000 + 1;
        let body = format!(
            r#"{{"node_id": {id}, "ip_address": "10.{}.{}.{}", "port": {}, "capabilities": ["raft", "gossip"], "metadata": {{"round": {i}}}}}"#,
            id >> 16 & 255,
            id >> 8 & 255,
            id & 255,
            5000 + id % 1000
        );
        let at = Instant::now();
        let mut response = agent
            .post(format!("{url}/register"))
            .header("Prefer", "return=minimal")
            .send(body)
            .expect("POST /register");
        let text = response.body_mut().read_to_string().expect("a body");
        let answer: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let version = answer["registry_version"]
            .as_u64()
            .expect("registry_version");
        sent.insert(version, at);
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu0;
    // Let the watchers take the last changes, then read what they saw.
    std::thread::sleep(Duration::from_secs(2));
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let (mut bytes, mut events, mut fulls, mut late) = (0usize, 0usize, 0usize, Vec::new());
    for (at, size, versions, full) in &seen {
        bytes += size;
        events += versions.len();
        fulls += usize::from(*full);
        for version in versions {
            if let Some(sent_at) = sent.get(version) {
                late.push(at.duration_since(*sent_at).as_secs_f64() * 1000.0);
            }
        }
    }
    late.sort_by(f64::total_cmp);
    let expected = n * sent.len();
    let kind = if streams { "streams" } else { "delta watchers" };
    let floor_line = streams.then(|| {
        let size = bytes / events.max(1);
        let floor = floor(n, rate, seconds.min(10.0), size);
        format!(
            "  floor: one thread writing a {size}-byte event to {n} loopback connections \
             {rate:.0} times a second: {:.1} % of a core; the gateway {:.2}x that",
            100.0 * floor,
            cpu / wall / floor
        )
    });
    println!(
        "{n} {kind}, {} changes in {wall:.1} s ({:.0}/s): gateway {:.1} % of a core; \
         {} answers carrying {events} changes ({:.0} % of {expected}), {:.0} bytes a change, \
         {fulls} full; change to watcher p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        sent.len(),
        sent.len() as f64 / wall,
        100.0 * cpu / wall,
        seen.len(),
        100.0 * events as f64 / expected.max(1) as f64,
        bytes as f64 / events.max(1) as f64,
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(0.0)
    );
    if let Some(line) = floor_line {
        println!("{line}");
    }
    std::process::exit(0);
}

fn nodes(url: &str, n: u64, period: f64, seconds: f64, pid: &str) {
    let clients: Vec<GatewayClient> = (1..=n)
        .map(|id| {
            let client = GatewayClient::builder()
                .gateway(url.to_owned())
                .watch(true)
                .build()
                .expect("a client");
            client
                .register_node(
                    Registration::new(id, "127.0.0.1", 7000 + id as u16).capabilities(["raft"]),
                )
                .expect("register");
            client
        })
        .collect();
    // Every client's view lists the others before measuring.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !clients.iter().all(|c| {
        c.cluster_view()
            .is_some_and(|v| v.cluster.nodes.len() as u64 == n - 1)
    }) {
        assert!(Instant::now() < deadline, "the views did not converge");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (done, finished) = mpsc::channel::<()>();
    let (cpu0, own0, wall0) = (cpu_seconds(pid), cpu_seconds("self"), Instant::now());
    let publishers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let done = done.clone();
            std::thread::spawn(move || {
                let offset = Duration::from_secs_f64(period * i as f64 / n as f64);
                std::thread::sleep(offset);
                let mut round = 0u64;
                let started = Instant::now();
                while started.elapsed().as_secs_f64() + offset.as_secs_f64() < seconds {
                    round += 1;
                    let mut metadata = cluster_gateway::Metadata::new();
                    metadata.insert("round".into(), round.into());
                    client.update_metadata(metadata).expect("update_metadata");
                    std::thread::sleep(Duration::from_secs_f64(period));
                }
                drop(done);
                client
            })
        })
        .collect();
    drop(done);
    let _ = finished.recv();
    let wall = wall0.elapsed().as_secs_f64();
    let (cpu, own) = (cpu_seconds(pid) - cpu0, cpu_seconds("self") - own0);
    for publisher in publishers {
        let client = publisher.join().expect("a publisher");
        let _ = client.leave();
    }
    println!(
        "{n} nodes, each watching and publishing metadata every {period} s, {wall:.1} s: \
         gateway {:.2} % of a core; each node {:.3} % (heartbeat, watch and publishing)",
        100.0 * cpu / wall,
        100.0 * own / wall / n as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: delta_bench watchers|streams URL N RATE SECONDS PID | nodes URL N PERIOD SECONDS PID";
    let arg = |i: usize| -> f64 { args.get(i).and_then(|a| a.parse().ok()).expect(usage) };
    let (mode, url, pid) = (
        args.first().expect(usage).as_str(),
        args.get(1).expect(usage),
        args.get(5).expect(usage),
    );
    match mode {
        "watchers" => watchers(url, arg(2) as usize, arg(3), arg(4), pid, false),
        "streams" => watchers(url, arg(2) as usize, arg(3), arg(4), pid, true),
        "nodes" => nodes(url, arg(2) as u64, arg(3), arg(4), pid),
        _ => panic!("{usage}"),
    }
}
