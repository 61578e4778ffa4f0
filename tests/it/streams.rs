//! Event streams (`GET /nodes?changes=1&stream=1`) over the wire: each change as a
//! Server-Sent Event in order, the full list first without an index, a node's own events left
//! out, refusals (tokens before anything is sent, bad queries, the limit), the stream ended by a
//! request on its connection and by shutdown, and a stream that is not read holding up no
//! other.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cluster_gateway::server::auth::Secret;
use serde_json::{Value, json};

use crate::support::{TestServer, eventually, get, registration, within};

const LIMIT: Duration = Duration::from_secs(60);

/// A stream read by hand: the head, then one chunk at a time.
struct EventStream {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    status: u16,
    head: String,
}

impl EventStream {
    fn open(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let stream = TcpStream::connect(server.addr()).expect("connect");
        stream.set_read_timeout(Some(LIMIT)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        writer.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "head cut: {head}");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head[9..12].parse().unwrap();
        EventStream {
            reader,
            writer,
            status,
            head,
        }
    }

    /// A stream from `index` (`GET /nodes?index=V&changes=1&stream=1` and `more`).
    fn from(server: &TestServer, index: u64, more: &str) -> EventStream {
        let path = format!("/nodes?index={index}&changes=1&stream=1{more}");
        EventStream::open(server, &path, &[])
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }

    /// The next chunk's text, or `None` at the body's end (the last chunk, or the connection
    /// closed).
    fn chunk(&mut self) -> Option<String> {
        let mut size = String::new();
        if self.reader.read_line(&mut size).ok()? == 0 {
            return None;
        }
        let size = usize::from_str_radix(size.trim_end(), 16).expect("a chunk size");
        let mut data = vec![0; size + 2];
        self.reader.read_exact(&mut data).expect("a whole chunk");
        if size == 0 {
            return None;
        }
        data.truncate(size);
        Some(String::from_utf8(data).unwrap())
    }

    /// The next event: its `id` and its `data` as JSON (keepalive comments skipped).
    fn event(&mut self) -> Option<(u64, Value)> {
        loop {
            let chunk = self.chunk()?;
            if chunk.starts_with(':') {
                continue;
            }
            let mut lines = chunk.lines();
            let id = lines
                .next()?
                .strip_prefix("id: ")
                .expect("id")
                .parse()
                .unwrap();
            let data = lines.next()?.strip_prefix("data: ").expect("data");
            assert!(
                chunk.ends_with("\n\n"),
                "an event ends with a blank line: {chunk:?}"
            );
            return Some((id, serde_json::from_str(data).expect("JSON data")));
        }
    }

    /// Events until one reaches `version`.
    fn events_until(&mut self, version: u64) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let (id, event) = self.event().expect("the stream goes on");
            assert_eq!(id, event["registry_version"].as_u64().unwrap(), "{event}");
            events.push(event);
            if id >= version {
                return events;
            }
        }
    }
}

/// `(event, node_id or leader_id)` of each change of `events`.
fn kinds(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .flat_map(|e| e["changes"].as_array().unwrap().clone())
        .map(|c| {
            let who = match c["event"].as_str().unwrap() {
                "leader" => c["leader_id"].as_u64().unwrap_or(0),
                _ => c["node_id"].as_u64().unwrap(),
            };
            (c["event"].as_str().unwrap().to_owned(), who)
        })
        .collect()
}

fn version_of(body: &Value) -> u64 {
    body["registry_version"].as_u64().unwrap()
}

#[test]
fn a_stream_sends_every_change_as_an_event_in_order() {
    let server = TestServer::start();
    let index = version_of(&server.register(1));
    let mut stream = EventStream::from(&server, index, "");
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert_eq!(stream.header("Content-Type").unwrap(), "text/event-stream");
    assert_eq!(stream.header("Transfer-Encoding").unwrap(), "chunked");
    assert_eq!(stream.header("X-Accel-Buffering").unwrap(), "no");
    assert_eq!(stream.header("X-Gateway-Index").unwrap(), index.to_string());
    assert!(eventually(LIMIT, || server.server.streams_open() == 1));
    let metrics = crate::support::metrics_text(&server.url);
    assert!(
        metrics.contains("\ncluster_gateway_streams_open 1\n"),
        "{metrics}"
    );

    server.register(2);
    let mut changed = registration(2);
    changed["metadata"] = json!({"round": 7});
    let (status, _) = server.post_json("/register", &changed);
    assert_eq!(status, 200);
    let (status, body) = server.post_json("/leader", &json!({"leader_id": 2}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post_json("/remove", &json!({"node_id": 2}));
    assert_eq!(status, 200, "{body}");
    let last = get(&server.url, "/nodes", &[]).index.unwrap();

    let events = stream.events_until(last);
    assert!(events.iter().all(|e| e["full"] == false));
    // Removing the leader clears it: a leader event with no id (0 here).
    assert_eq!(
        kinds(&events),
        [
            ("joined".to_owned(), 2),
            ("updated".to_owned(), 2),
            ("leader".to_owned(), 2),
            ("left".to_owned(), 2),
            ("leader".to_owned(), 0),
        ]
    );
    let updated = events
        .iter()
        .flat_map(|e| e["changes"].as_array().unwrap().clone())
        .find(|c| c["event"] == "updated")
        .expect("an updated event");
    assert_eq!(updated["node"]["metadata"]["round"], 7);
}

#[test]
fn a_stream_without_an_index_starts_with_the_full_list() {
    let server = TestServer::start();
    server.register(1);
    server.register(2);
    let mut stream = EventStream::open(&server, "/nodes?changes=1&stream=1", &[]);
    assert_eq!(stream.status, 200, "{}", stream.head);
    let (id, first) = stream.event().expect("the first event");
    assert_eq!(first["full"], true, "{first}");
    assert_eq!(first["nodes"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(id, version_of(&first));
    let after = version_of(&server.register(3));
    let events = stream.events_until(after);
    assert_eq!(kinds(&events), [("joined".to_owned(), 3)]);
}

#[test]
fn a_stream_from_another_run_starts_with_the_full_list() {
    let server = TestServer::start();
    let index = version_of(&server.register(1));
    let mut stream = EventStream::from(&server, index, "&epoch=another-run");
    let (_, first) = stream.event().expect("the first event");
    assert_eq!(first["full"], true, "{first}");
}

#[test]
fn a_stream_that_names_a_node_leaves_its_own_events_out() {
    let server = TestServer::start();
    let index = version_of(&server.register(1));
    let mut stream = EventStream::from(&server, index, "&node_id=2");
    server.register(2);
    let last = version_of(&server.register(3));
    let events = stream.events_until(last);
    assert_eq!(kinds(&events), [("joined".to_owned(), 3)]);
}

#[test]
fn bad_stream_queries_are_refused_with_a_json_error() {
    let server = TestServer::start();
    for (path, needle) in [
        ("/nodes?stream=1", "stream=1 needs changes=1"),
        (
            "/nodes?changes=1&stream=1&wait=5s",
            "wait cannot be combined",
        ),
        ("/nodes?changes=1&stream=1&status=active", "status=active"),
        ("/nodes?changes=1&stream=1&capability=raft", "capability"),
        ("/nodes?changes=1&stream=yes", "Invalid stream"),
    ] {
        let answer = get(&server.url, path, &[]);
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        let error = answer.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(needle), "{path}: {error}");
    }
    assert_eq!(server.server.streams_open(), 0);
}

#[test]
fn with_tokens_a_stream_is_refused_before_anything_is_sent() {
    const READ: &str = "r3ad-t0ken-aaaaaaaaaaaa";
    let server = TestServer::with(|c| {
        c.tokens.inline = Some(Secret::new(format!("read:dash:{READ}\n")));
    });
    let refused = EventStream::open(&server, "/nodes?changes=1&stream=1", &[]);
    assert_eq!(refused.status, 401, "{}", refused.head);
    assert_eq!(server.server.streams_open(), 0);
    let bearer = format!("Bearer {READ}");
    let mut stream = EventStream::open(
        &server,
        "/nodes?changes=1&stream=1",
        &[("Authorization", &bearer)],
    );
    assert_eq!(stream.status, 200, "{}", stream.head);
    let (_, first) = stream.event().unwrap();
    assert_eq!(first["full"], true);
}

#[test]
fn past_the_watcher_limit_a_stream_request_gets_a_delta_answer() {
    let server = TestServer::with(|c| c.max_watchers = 1);
    let index = version_of(&server.register(1));
    let path = format!("/nodes?index={index}&changes=1&stream=1");
    let _first = EventStream::open(&server, &path, &[]);
    assert!(eventually(LIMIT, || server.server.streams_open() == 1));
    // As from a gateway that does not stream: the events since index, at once.
    let second = get(&server.url, &path, &[]);
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["full"], false, "{}", second.body);
    assert_eq!(second.body["registry_version"], index, "{}", second.body);
    assert_eq!(server.server.streams_open(), 1);
}

#[test]
fn a_request_on_the_streams_connection_ends_the_stream_and_is_answered() {
    let server = TestServer::start();
    let index = version_of(&server.register(1));
    let mut stream = EventStream::from(&server, index, "");
    assert!(eventually(LIMIT, || server.server.streams_open() == 1));
    stream
        .writer
        .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .unwrap();
    // The stream's body ends, then the next answer follows on the same connection.
    let ended = within(LIMIT, move || {
        while stream.chunk().is_some() {}
        let mut status = String::new();
        stream.reader.read_line(&mut status).unwrap();
        status
    });
    assert!(ended.starts_with("HTTP/1.1 200"), "{ended}");
    assert!(eventually(LIMIT, || server.server.streams_open() == 0));
}

#[test]
fn stopping_the_gateway_ends_every_stream_with_the_last_chunk() {
    let server = TestServer::start();
    let index = version_of(&server.register(1));
    let mut streams: Vec<EventStream> = (0..3)
        .map(|_| EventStream::from(&server, index, ""))
        .collect();
    assert!(eventually(LIMIT, || server.server.streams_open() == 3));
    let started = Instant::now();
    drop(server);
    let stopped = started.elapsed();
    for stream in &mut streams {
        let mut size = String::new();
        stream.reader.read_line(&mut size).unwrap();
        assert_eq!(size, "0\r\n", "the last chunk, not a cut connection");
    }
    assert!(stopped < LIMIT, "stop took {stopped:?}");
}

#[test]
fn a_stream_that_is_not_read_holds_up_no_other_stream() {
    let server = TestServer::start();
    let index = version_of(&server.register(1));
    let path = format!("/nodes?index={index}&changes=1&stream=1");
    // A client that never reads, with a small receive buffer: its socket fills after a few
    // large events.
    let stuck = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    stuck.set_recv_buffer_size(4096).unwrap();
    stuck.connect(&server.addr().into()).unwrap();
    let mut stuck: TcpStream = stuck.into();
    write!(stuck, "GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n").unwrap();
    let mut reader = EventStream::open(&server, &path, &[]);
    assert!(eventually(LIMIT, || server.server.streams_open() == 2));
    // Events of about 15 KB each (metadata's limit is 16 KiB): the stuck stream's socket is
    // full after a few, then over a MiB queues for it.
    let big = "x".repeat(15_000);
    let mut heard = Vec::new();
    for round in 0..400u64 {
        if server.server.streams_open() == 1 {
            break;
        }
        let mut changed = registration(1);
        changed["metadata"] = json!({"round": round, "pad": big});
        let (status, body) = server.post_json("/register", &changed);
        assert_eq!(status, 200, "{body}");
        let version = version_of(&body);
        let at = Instant::now();
        reader.events_until(version);
        heard.push(at.elapsed());
    }
    // Every event reached the reading stream while the other's writes were stuck: none
    // waited for the write timeout (10 s).
    let slowest = heard.iter().max().unwrap();
    assert!(
        *slowest < Duration::from_secs(5),
        "an event waited {slowest:?} behind a stream that is not read"
    );
    // The stuck stream is ended once over a MiB is queued for it.
    assert!(eventually(LIMIT, || server.server.streams_open() == 1));
    drop(stuck);
}

/// Reads one chunk off `reader`: its size, or `None` for the last chunk.
fn next_chunk(reader: &mut BufReader<TcpStream>) -> Option<usize> {
    let mut size = String::new();
    reader.read_line(&mut size).unwrap();
    let size = usize::from_str_radix(size.trim_end(), 16)
        .unwrap_or_else(|_| panic!("a chunk size, not {size:?}"));
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data).unwrap();
    (size > 0).then_some(size)
}

/// Reads one answer off `reader` (a stream read to its last chunk, or a body of
/// `Content-Length`): its status line and whether it was a stream.
fn read_answer(reader: &mut BufReader<TcpStream>) -> (String, bool) {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if lower.starts_with("transfer-encoding: chunked") {
            chunked = true;
        }
    }
    if chunked {
        while next_chunk(reader).is_some() {}
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
    }
    (status, chunked)
}

#[test]
fn a_request_behind_a_stream_request_is_answered_after_the_streams_last_chunk_under_churn() {
    let server = TestServer::with(|c| c.workers = 8);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn: Vec<_> = (0..3u64)
        .map(|churner| {
            let (url, stop) = (server.url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut id = 1000 + churner * 1_000_000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    id += 1;
                    let body = registration(id).to_string();
                    let _ = crate::support::agent()
                        .post(format!("{url}/register"))
                        .send(body);
                }
            })
        })
        .collect();
    let (mut streams, mut answered_as_delta) = (0, 0);
    for round in 0..400 {
        let mut socket = TcpStream::connect(server.addr()).unwrap();
        socket.set_read_timeout(Some(LIMIT)).unwrap();
        // Both requests in one write: the second may come off the queue before the stream
        // is open, or after.
        let both = if round % 2 == 0 {
            "GET /nodes?changes=1&stream=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        } else {
            "GET /nodes?changes=1&stream=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        };
        socket.write_all(both.as_bytes()).unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        if round % 2 == 1 {
            // The stream is open and events flow: a request sent now ends it.
            let mut line = String::new();
            while line != "\r\n" {
                line.clear();
                reader.read_line(&mut line).unwrap();
            }
            socket
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            while next_chunk(&mut reader).is_some() {}
            streams += 1;
        } else {
            let (status, stream) = read_answer(&mut reader);
            assert!(
                status.starts_with("HTTP/1.1 200"),
                "round {round}: {status}"
            );
            if stream {
                streams += 1;
            } else {
                answered_as_delta += 1;
            }
        }
        // Right after the stream's last chunk (or the delta answer): the health answer, never
        // an event.
        let (status, _) = read_answer(&mut reader);
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "round {round}: after the stream came {status:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for churner in churn {
        churner.join().unwrap();
    }
    assert!(
        streams > 0,
        "no stream opened ({answered_as_delta} delta answers)"
    );
    assert!(eventually(LIMIT, || server.server.streams_open() == 0));
}

#[test]
fn a_stream_ended_for_reading_too_slowly_gets_its_last_chunk() {
    let server = TestServer::start();
    let index = version_of(&server.register(1));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let mut socket: TcpStream = socket.into();
    socket.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        socket,
        "GET /nodes?index={index}&changes=1&stream=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    assert!(eventually(LIMIT, || server.server.streams_open() == 1));
    // Not read while over a MiB of events waits for it: the stream ends.
    let big = "x".repeat(15_000);
    for round in 0..400u64 {
        if server.server.streams_open() == 0 {
            break;
        }
        let mut changed = registration(1);
        changed["metadata"] = json!({"round": round, "pad": big});
        assert_eq!(server.post_json("/register", &changed).0, 200);
    }
    assert!(eventually(LIMIT, || server.server.streams_open() == 0));
    // Read now: whole events, then the last chunk; the client knows to ask again.
    let mut reader = BufReader::new(socket);
    let (status, stream) = read_answer(&mut reader);
    assert!(status.starts_with("HTTP/1.1 200") && stream, "{status}");
}

#[test]
fn an_http_1_0_stream_request_and_a_head_get_a_delta_answer_at_once() {
    let server = TestServer::start();
    let index = version_of(&server.register(1));
    for request in [
        format!(
            "GET /nodes?index={index}&changes=1&stream=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        ),
        format!("HEAD /nodes?index={index}&changes=1&stream=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ] {
        let answer = within(LIMIT, {
            let addr = server.addr();
            move || crate::support::raw(addr, request.as_bytes(), Duration::from_secs(5))
        });
        assert!(answer.contains(" 200 OK"), "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(!answer.contains("text/event-stream"), "{answer}");
    }
    assert_eq!(server.server.streams_open(), 0);
}

#[test]
fn metrics_count_the_streams_open_as_they_open_and_end() {
    // No change before the stream: nothing but the stream's own opening and end can move
    // the gauge.
    let server = TestServer::start();
    let gauge = || {
        crate::support::metrics_text(&server.url)
            .lines()
            .find_map(|l| l.strip_prefix("cluster_gateway_streams_open "))
            .map(str::to_owned)
    };
    assert_eq!(gauge().as_deref(), Some("0"));
    let mut stream = EventStream::open(&server, "/nodes?changes=1&stream=1", &[]);
    stream.event().expect("the first event");
    assert_eq!(gauge().as_deref(), Some("1"));
    stream
        .writer
        .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .unwrap();
    assert!(eventually(LIMIT, || gauge().as_deref() == Some("0")));
}
