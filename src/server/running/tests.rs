use super::*;
use crate::server::http::Response;
use std::io::Read;

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

/// A stream on `addr` read by hand: returns the socket after the head and the first event.
fn open_stream(addr: SocketAddr) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /nodes?changes=1&stream=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut reader = std::io::BufReader::new(stream);
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    chunk(&mut reader); // the first event: the full list
    reader
}

/// The next chunk's text.
fn chunk(reader: &mut std::io::BufReader<std::net::TcpStream>) -> String {
    use std::io::BufRead;
    let mut size = String::new();
    reader.read_line(&mut size).unwrap();
    let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data).unwrap();
    data.truncate(size);
    String::from_utf8(data).unwrap()
}

#[test]
fn a_silent_stream_gets_a_keepalive_and_a_vanished_client_is_noticed_by_it() {
    let server = GatewayServer::new(ServerConfig::new("127.0.0.1", 0))
        .start()
        .unwrap();
    server
        .context
        .streams
        .set_keepalive(std::time::Duration::from_millis(200));
    let mut reader = open_stream(server.local_addr());
    // Nothing changes: a comment line comes within the keepalive (the read times out at 20 s).
    assert_eq!(chunk(&mut reader), ": keepalive\n\n");
    // A client that went away is found by the keepalive writes and the stream dropped.
    drop(reader);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while server.streams_open() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a stream whose client went away stays open"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    server.stop();
}

mod durable;
