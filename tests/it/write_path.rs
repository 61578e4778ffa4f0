//! The answer write path (answers written through a buffer in front of tiny_http's writer):
//! framing as a client reads it, over raw sockets, with requests pipelined behind each other so
//! that an answer cut short or running long shows up in the next one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{TestServer, eventually};

/// One answer read off `reader` as a client frames it: its status, headers (names in lower
/// case) and body (by `Content-Length`, or by chunks; none for `HEAD`, 204 and 304).
fn answer(reader: &mut impl BufRead, head_only: bool) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header");
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if head_only || matches!(status, 204 | 304) {
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).expect("a chunk size");
            let size = usize::from_str_radix(size.trim(), 16)
                .unwrap_or_else(|_| panic!("not a chunk size: {size:?}"));
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).expect("a chunk");
            assert!(chunk.ends_with(b"\r\n"), "a chunk not ended by CRLF");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        let length: usize = header("content-length")
            .expect("a Content-Length")
            .parse()
            .expect("a number");
        body.resize(length, 0);
        reader.read_exact(&mut body).expect("the whole body");
    }
    (status, headers, body)
}

fn connect(server: &TestServer) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(body)))
}

#[test]
fn a_request_asking_te_chunked_gets_answers_a_client_can_frame() {
    let server = TestServer::start();
    server.register(1);
    let (mut stream, mut reader) = connect(&server);
    stream
        .write_all(
            b"GET /nodes HTTP/1.1\r\nHost: x\r\nTE: chunked\r\n\r\n\
              GET /health HTTP/1.1\r\nHost: x\r\nTE: chunked\r\n\r\n",
        )
        .unwrap();
    let (status, _, body) = answer(&mut reader, false);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["nodes"].as_array().map(Vec::len), Some(1));
    let (status, _, body) = answer(&mut reader, false);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["status"], "healthy");
}

#[test]
fn pipelined_head_304_errors_and_lists_come_back_in_order_each_whole() {
    let server = TestServer::start();
    for id in 1..=3 {
        server.register(id);
    }
    let (mut stream, mut reader) = connect(&server);
    stream
        .write_all(b"GET /nodes HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (_, headers, full) = answer(&mut reader, false);
    let etag = headers
        .iter()
        .find(|(n, _)| n == "etag")
        .map(|(_, v)| v.clone())
        .expect("an ETag");
    let pipelined = format!(
        "HEAD /nodes HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /nodes HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n\
         GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{{bad}}\
         GET /nodes HTTP/1.1\r\nHost: x\r\n\r\n\
         HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    stream.write_all(pipelined.as_bytes()).unwrap();
    let (status, headers, _) = answer(&mut reader, true);
    assert_eq!(status, 200);
    let length = headers.iter().find(|(n, _)| n == "content-length");
    assert_eq!(
        length.map(|(_, v)| v.as_str()),
        Some(full.len().to_string().as_str()),
        "HEAD announces the length a GET sends"
    );
    let (status, headers, _) = answer(&mut reader, false);
    assert_eq!(status, 304);
    assert!(
        headers
            .iter()
            .all(|(n, v)| n != "content-length" || v == "0")
    );
    let (status, _, body) = answer(&mut reader, false);
    assert_eq!(status, 404);
    assert!(json(&body)["error"].is_string());
    let (status, _, body) = answer(&mut reader, false);
    assert_eq!(status, 400);
    assert!(json(&body)["error"].is_string());
    let (status, _, body) = answer(&mut reader, false);
    assert_eq!(status, 200);
    assert_eq!(body, full);
    let (status, _, _) = answer(&mut reader, true);
    assert_eq!(status, 200);
    let (status, _, body) = answer(&mut reader, false);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["status"], "healthy");
    // Nothing more: no answer ran long into the next one.
    stream.set_nonblocking(true).unwrap();
    assert!(reader.buffer().is_empty());
    let mut extra = [0; 1];
    assert!(
        stream.read(&mut extra).is_err(),
        "bytes after the last answer"
    );
}

/// A long-poll to `/nodes`, parked until the registry changes.
fn long_poll(server: &TestServer) -> (TcpStream, BufReader<TcpStream>) {
    let (mut stream, mut reader) = connect(server);
    stream
        .write_all(b"GET /nodes HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (_, headers, _) = answer(&mut reader, false);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .expect(name)
    };
    let (index, epoch) = (header("x-gateway-index"), header("x-gateway-epoch"));
    let poll =
        format!("GET /nodes?index={index}&epoch={epoch}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(poll.as_bytes()).unwrap();
    (stream, reader)
}

#[test]
fn an_answer_to_a_client_that_reset_its_connection_is_counted_as_cut_short() {
    let server = TestServer::start();
    server.register(1);
    let (_stays, mut stays_reader) = long_poll(&server);
    let (gone, _) = long_poll(&server);
    assert!(eventually(Duration::from_secs(60), || {
        server.server.watchers_waiting() == 2
    }));
    // Closed with a reset: the answer's first write fails.
    socket2::SockRef::from(&gone)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(gone);
    server.register(2);
    let (status, _, body) = answer(&mut stays_reader, false);
    assert_eq!(status, 200);
    assert_eq!(json(&body)["nodes"].as_array().map(Vec::len), Some(2));
    assert!(
        eventually(Duration::from_secs(60), || {
            server.server.counters().answers_cut_short == 1
        }),
        "{:?}",
        server.server.counters()
    );
    assert_eq!(server.server.watchers_waiting(), 0);
    // The worker lives on.
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(server.server.counters().answers_cut_short, 1);
}
