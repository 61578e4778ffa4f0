//! Request smuggling: a request hidden in what one parser takes for a body and another for the
//! next request. Each shape is refused with a JSON 400 (or 413), and the hidden request, a
//! `/remove` of a registered node, never runs: the node is still there.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::support::TestServer;

/// The request hidden after the first one's framing: removes node 1.
const HIDDEN: &str =
    "POST /remove HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"node_id\":1}";

/// Sends `bytes` on one connection, half-closes, and reads until the server closes (or 10 s).
fn exchange(server: &TestServer, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn node_1_is_registered(server: &TestServer) -> bool {
    server.get("/nodes?status=all").1["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["node_id"] == 1)
}

/// Sends `attack`, then checks the first answer and that node 1 survived.
fn hidden_remove_does_not_run(attack: &[u8], status: &str, error: &str) {
    let server = TestServer::with(|c| c.max_body_bytes = 4096);
    server.register(1);
    let answer = exchange(&server, attack);
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "expected {status} first, got {answer:?}"
    );
    assert!(answer.contains(error), "expected {error:?} in {answer:?}");
    assert!(
        answer.contains("application/json"),
        "a JSON answer: {answer:?}"
    );
    assert!(
        !answer.contains("\"status\":\"removed\""),
        "the hidden request ran: {answer:?}"
    );
    assert!(node_1_is_registered(&server), "the hidden /remove ran");
}

#[test]
fn the_hidden_remove_runs_when_it_is_sent_plainly() {
    // The control: the same bytes as a second pipelined request do remove the node, so the
    // tests below would see it if a hidden one ran.
    let server = TestServer::start();
    server.register(1);
    let plain = format!("GET /health HTTP/1.1\r\nHost: x\r\n\r\n{HIDDEN}");
    let answer = exchange(&server, plain.as_bytes());
    assert!(answer.contains("\"status\":\"removed\""), "{answer:?}");
    assert!(!node_1_is_registered(&server));
}

#[test]
fn content_length_with_chunked() {
    let attack = format!(
        "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
    );
    hidden_remove_does_not_run(
        attack.as_bytes(),
        "400",
        "Conflicting Content-Length and Transfer-Encoding",
    );
}

#[test]
fn two_different_content_lengths() {
    let attack = format!(
        "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{HIDDEN}",
        HIDDEN.len()
    );
    hidden_remove_does_not_run(
        attack.as_bytes(),
        "400",
        "Conflicting Content-Length headers",
    );
}

#[test]
fn content_length_not_a_number() {
    let attack =
        format!("POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{HIDDEN}");
    hidden_remove_does_not_run(attack.as_bytes(), "400", "Invalid Content-Length");
}

#[test]
fn content_length_with_a_plus_sign() {
    let attack = format!(
        "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: +13\r\n\r\n{{\"node_id\":1}}{HIDDEN}"
    );
    hidden_remove_does_not_run(attack.as_bytes(), "400", "Invalid Content-Length");
}

#[test]
fn transfer_encoding_other_than_chunked() {
    let attack = format!(
        "POST /heartbeat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{HIDDEN}"
    );
    hidden_remove_does_not_run(attack.as_bytes(), "400", "Unsupported Transfer-Encoding");
}

#[test]
fn a_chunk_over_the_limit_with_a_request_in_its_rest() {
    // The limit is 4096: the first 4097 bytes of the chunk are read, the rest is the request.
    let padding = " ".repeat(4097);
    let chunk = format!("{padding}{HIDDEN}");
    let attack = format!(
        "POST /heartbeat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    hidden_remove_does_not_run(attack.as_bytes(), "413", "Request body too large");
}

#[test]
fn a_content_length_past_isize_max_with_a_request_after_it() {
    let attack = format!(
        "POST /heartbeat HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n{HIDDEN}"
    );
    hidden_remove_does_not_run(attack.as_bytes(), "413", "Request body too large");
}
