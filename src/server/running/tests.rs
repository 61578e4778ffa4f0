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

mod durable;
