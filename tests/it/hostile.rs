//! Hostile input: every case gets a 4xx JSON error, stores nothing, and the server keeps
//! answering.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{TestServer, raw, registration, status_of};

/// Posts `body` to `path` over a raw socket and checks the refusal: its status, a JSON body
/// whose `error` starts with `error`, an unchanged registry, and a server that still answers.
fn refused(path: &str, body: Vec<u8>, status: u16, error: &str) {
    let server = TestServer::with(|c| c.workers = 2);
    server.register(1);
    let before = server.get("/nodes?status=all").1;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let answer = raw(server.addr(), &request, Duration::from_secs(20));
    check_answer(&answer, status, error);
    assert_eq!(
        server.get("/nodes?status=all").1,
        before,
        "the registry changed"
    );
    assert_eq!(server.get("/health").0, 200);
}

/// Checks a raw HTTP answer: status, JSON error body with `status_code`, error prefix.
fn check_answer(answer: &str, status: u16, error: &str) {
    assert_eq!(status_of(answer), status, "{answer}");
    let body = crate::support::final_response(answer)
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    // The first JSON value: what follows may be tiny_http's answer to leftover bytes.
    let body: Value = serde_json::Deserializer::from_str(body)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no body: {answer}"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    assert_eq!(body["status_code"], status);
    let text = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {body}"));
    assert!(text.starts_with(error), "expected {error:?}, got {text:?}");
}

fn with(field: &str, value: Value) -> Vec<u8> {
    let mut body = registration(2);
    body[field] = value;
    body.to_string().into_bytes()
}

fn without(field: &str) -> Vec<u8> {
    let mut body = registration(2);
    body.as_object_mut().unwrap().remove(field);
    body.to_string().into_bytes()
}

/// A registration with raw JSON text for one field (for numbers JSON can say but `json!` can't).
fn with_raw(field: &str, text: &str) -> Vec<u8> {
    let marker = "\"__raw__\"";
    with(field, json!("__raw__"))
        .iter()
        .map(|&b| b as char)
        .collect::<String>()
        .replace(marker, text)
        .into_bytes()
}

fn deep(levels: usize) -> Vec<u8> {
    let mut body = registration(2);
    body["metadata"] = json!({"x": "__deep__"});
    let nested = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
    body.to_string()
        .replace("\"__deep__\"", &nested)
        .into_bytes()
}

macro_rules! refuse {
    ($($name:ident: $path:expr, $body:expr => $status:expr, $error:expr;)*) => {$(
        #[test]
        fn $name() {
            refused($path, $body, $status, $error);
        }
    )*};
}

refuse! {
    // Not JSON, or not an object.
    invalid_json: "/register", b"{".to_vec() => 400, "Invalid JSON";
    truncated_json: "/register", b"{\"node_id\": 1,".to_vec() => 400, "Invalid JSON";
    non_utf8_json: "/register", b"{\"node_id\": \"\xff\xfe\"}".to_vec() => 400, "Invalid JSON";
    empty_body: "/register", Vec::new() => 400, "Invalid JSON";
    whitespace_body: "/register", b"   \n ".to_vec() => 400, "Invalid JSON";
    json_array: "/register", b"[1, 2]".to_vec() => 400, "Invalid JSON";
    json_string: "/register", b"\"register me\"".to_vec() => 400, "Invalid JSON";
    json_number: "/register", b"42".to_vec() => 400, "Invalid JSON";
    json_null: "/register", b"null".to_vec() => 400, "Invalid JSON";
    trailing_garbage: "/register", [registration(2).to_string().as_bytes(), b"}"].concat() => 400, "Invalid JSON";
    nesting_10000_deep: "/register", deep(10_000) => 400, "Invalid JSON";
    // Missing fields.
    missing_node_id: "/register", without("node_id") => 400, "Missing required field: node_id";
    missing_ip_address: "/register", without("ip_address") => 400, "Missing required field: ip_address";
    missing_port: "/register", without("port") => 400, "Missing required field: port";
    missing_capabilities: "/register", without("capabilities") => 400, "Missing required field: capabilities";
    // Null fields.
    null_node_id: "/register", with("node_id", Value::Null) => 400, "Invalid node_id";
    null_ip_address: "/register", with("ip_address", Value::Null) => 400, "Invalid ip_address";
    null_port: "/register", with("port", Value::Null) => 400, "Invalid port";
    null_capabilities: "/register", with("capabilities", Value::Null) => 400, "Invalid capabilities";
    // Wrong types.
    node_id_bool: "/register", with("node_id", json!(true)) => 400, "Invalid node_id";
    node_id_array: "/register", with("node_id", json!([1])) => 400, "Invalid node_id";
    node_id_object: "/register", with("node_id", json!({"id": 1})) => 400, "Invalid node_id";
    ip_address_number: "/register", with("ip_address", json!(10)) => 400, "Invalid ip_address";
    ip_address_array: "/register", with("ip_address", json!(["10.0.0.1"])) => 400, "Invalid ip_address";
    port_word: "/register", with("port", json!("http")) => 400, "Invalid port";
    port_bool: "/register", with("port", json!(false)) => 400, "Invalid port";
    capabilities_string: "/register", with("capabilities", json!("raft")) => 400, "Invalid capabilities";
    capabilities_object: "/register", with("capabilities", json!({"raft": true})) => 400, "Invalid capabilities";
    capability_number: "/register", with("capabilities", json!(["raft", 7])) => 400, "Invalid capabilities";
    capability_null: "/register", with("capabilities", json!([null])) => 400, "Invalid capabilities";
    metadata_string: "/register", with("metadata", json!("zone=a")) => 400, "Invalid metadata";
    metadata_array: "/register", with("metadata", json!([["zone", "a"]])) => 400, "Invalid metadata";
    metadata_number: "/register", with("metadata", json!(1)) => 400, "Invalid metadata";
    // Out of range, negative, fractional, huge.
    node_id_negative: "/register", with("node_id", json!(-1)) => 400, "Invalid node_id";
    node_id_fractional: "/register", with("node_id", json!(1.5)) => 400, "Invalid node_id";
    node_id_float_notation: "/register", with_raw("node_id", "1e3") => 400, "Invalid node_id";
    node_id_2_pow_64: "/register", with_raw("node_id", "18446744073709551616") => 400, "Invalid node_id";
    node_id_2_pow_70: "/register", with_raw("node_id", "1180591620717411303424") => 400, "Invalid node_id";
    node_id_negative_string: "/register", with("node_id", json!("-1")) => 400, "Invalid node_id";
    node_id_empty_string: "/register", with("node_id", json!("")) => 400, "Invalid node_id";
    node_id_fractional_string: "/register", with("node_id", json!("1.5")) => 400, "Invalid node_id";
    node_id_huge_string: "/register", with("node_id", json!("9".repeat(1000))) => 400, "Invalid node_id";
    port_zero: "/register", with("port", json!(0)) => 400, "Invalid port";
    port_too_large: "/register", with("port", json!(65536)) => 400, "Invalid port";
    port_negative: "/register", with("port", json!(-80)) => 400, "Invalid port";
    port_fractional: "/register", with("port", json!(80.5)) => 400, "Invalid port";
    port_2_pow_70: "/register", with_raw("port", "1180591620717411303424") => 400, "Invalid port";
    // Addresses.
    ip_address_empty: "/register", with("ip_address", json!("")) => 400, "Invalid ip_address";
    ip_address_space: "/register", with("ip_address", json!("10.0.0.1 evil")) => 400, "Invalid ip_address";
    ip_address_newline: "/register", with("ip_address", json!("10.0.0.1\nX-Injected: 1")) => 400, "Invalid ip_address";
    ip_address_nul: "/register", with("ip_address", json!("host\u{0}name")) => 400, "Invalid ip_address";
    ip_address_254_bytes: "/register", with("ip_address", json!("a".repeat(254))) => 400, "Invalid ip_address";
    ip_address_60_kb: "/register", with("ip_address", json!("a".repeat(60_000))) => 400, "Invalid ip_address";
    ip_address_1_mb: "/register", with("ip_address", json!("a".repeat(1 << 20))) => 413, "Request body too large";
    ip_address_non_ascii: "/register", with("ip_address", json!("nöde.local")) => 400, "Invalid ip_address";
    ip_address_empty_label: "/register", with("ip_address", json!("node..local")) => 400, "Invalid ip_address";
    // Capabilities and metadata beyond their bounds.
    capability_empty: "/register", with("capabilities", json!([""])) => 400, "Invalid capabilities";
    capability_control_character: "/register", with("capabilities", json!(["raft\u{1b}[31m"])) => 400, "Invalid capabilities";
    capability_too_long: "/register", with("capabilities", json!(["r".repeat(129)])) => 400, "Invalid capabilities";
    capabilities_65: "/register", with("capabilities", json!((0..65).map(|i| format!("c{i}")).collect::<Vec<_>>())) => 400, "Invalid capabilities";
    capabilities_100_000: "/register", with("capabilities", json!(vec!["c"; 100_000])) => 413, "Request body too large";
    metadata_65_keys: "/register", with("metadata", Value::Object((0..65).map(|i| (format!("k{i}"), json!(i))).collect())) => 400, "Invalid metadata";
    metadata_over_16_kib: "/register", with("metadata", json!({"blob": "x".repeat(17 * 1024)})) => 400, "Invalid metadata";
    metadata_over_the_body_limit: "/register", with("metadata", json!({"blob": "x".repeat(100 * 1024)})) => 413, "Request body too large";
    // The other endpoints.
    heartbeat_missing_node_id: "/heartbeat", b"{}".to_vec() => 400, "Missing node_id";
    heartbeat_node_id_word: "/heartbeat", br#"{"node_id": "abc"}"#.to_vec() => 400, "Invalid node_id";
    heartbeat_node_id_negative: "/heartbeat", br#"{"node_id": -5}"#.to_vec() => 400, "Invalid node_id";
    heartbeat_array: "/heartbeat", b"[1]".to_vec() => 400, "Invalid JSON";
    remove_node_id_fractional: "/remove", br#"{"node_id": 1.0}"#.to_vec() => 400, "Invalid node_id";
    remove_node_id_huge: "/remove", br#"{"node_id": 1180591620717411303424}"#.to_vec() => 400, "Invalid node_id";
    leader_missing: "/leader", br#"{"leader": 1}"#.to_vec() => 400, "Missing leader_id";
    leader_id_bool: "/leader", br#"{"leader_id": true}"#.to_vec() => 400, "Invalid leader_id";
    unknown_path_post: "/registers", registration(2).to_string().into_bytes() => 404, "Not Found";
    // Lenient input, round two (issue 9, item 12).
    node_id_with_whitespace: "/register", with("node_id", json!(" 7\n")) => 400, "Invalid node_id";
    port_with_spaces: "/register", with("port", json!(" 8080 ")) => 400, "Invalid port";
    ip_address_dash: "/register", with("ip_address", json!("-")) => 400, "Invalid ip_address";
    ip_address_bad_ipv4: "/register", with("ip_address", json!("999.1.1.1")) => 400, "Invalid ip_address";
    ip_address_unspecified_v4: "/register", with("ip_address", json!("0.0.0.0")) => 400, "Invalid ip_address";
    ip_address_unspecified_v6: "/register", with("ip_address", json!("::")) => 400, "Invalid ip_address";
    capability_right_to_left_override: "/register", with("capabilities", json!(["raft\u{202E}"])) => 400, "Invalid capabilities";
    capability_zero_width_space: "/register", with("capabilities", json!(["ra\u{200B}ft"])) => 400, "Invalid capabilities";
    metadata_integer_2_pow_70: "/register", with_raw("metadata", r#"{"n": 1180591620717411303424}"#) => 400, "Invalid metadata";
}

#[test]
fn a_repeated_query_parameter() {
    refused_raw(
        b"GET /nodes?node_id=1&node_id=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        400,
        "Repeated query parameter: node_id",
    );
}

/// Sends a raw request and checks the refusal, an unchanged registry and a live server.
fn refused_raw(request: &[u8], status: u16, error: &str) {
    let server = TestServer::with(|c| {
        c.workers = 2;
        c.max_body_bytes = 4096;
    });
    server.register(1);
    let before = server.get("/nodes?status=all").1;
    let answer = raw(server.addr(), request, Duration::from_secs(20));
    check_answer(&answer, status, error);
    assert_eq!(
        server.get("/nodes?status=all").1,
        before,
        "the registry changed"
    );
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn declared_body_over_the_limit() {
    refused_raw(
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        413,
        "Request body too large",
    );
}

#[test]
fn chunked_body_over_the_limit() {
    let chunk = "x".repeat(5000);
    let request = format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    refused_raw(request.as_bytes(), 413, "Request body too large");
}

#[test]
fn chunked_invalid_json() {
    refused_raw(b"POST /register HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"n\r\n0\r\n\r\n", 400, "Invalid JSON");
}

#[test]
fn content_length_u64_max() {
    refused_raw(
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n",
        413,
        "Request body too large",
    );
}

#[test]
fn content_length_beyond_memory() {
    refused_raw(
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\n{}",
        413,
        "Request body too large",
    );
}

#[test]
fn content_length_not_a_number() {
    // tiny_http ignores a Content-Length it cannot parse (no body): refused as framing.
    refused_raw(
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
        400,
        "Invalid Content-Length",
    );
}

#[test]
fn conflicting_content_length_and_transfer_encoding() {
    let body = registration(2).to_string();
    let request = format!(
        "POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len(),
        body.len()
    );
    refused_raw(
        request.as_bytes(),
        400,
        "Conflicting Content-Length and Transfer-Encoding",
    );
}

#[test]
fn expect_continue_with_a_body_over_the_limit_is_refused_without_continue() {
    let server = TestServer::with(|c| c.max_body_bytes = 4096);
    let answer = raw(server.addr(), b"POST /register HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n", Duration::from_secs(20));
    assert!(!answer.contains("100 Continue"), "{answer}");
    check_answer(&answer, 413, "Request body too large");
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn a_body_shorter_than_declared() {
    let server = TestServer::start();
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    std::io::Write::write_all(
        &mut stream,
        b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n{\"node_id\": 1}",
    )
    .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    check_answer(&answer, 400, "Request body shorter than its Content-Length");
    assert_eq!(server.get("/stats").1["total_nodes"], 0);
}

#[test]
fn unknown_method() {
    refused_raw(
        b"PATCH /register HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
        405,
        "Method PATCH not allowed",
    );
}

#[test]
fn unknown_path_with_a_200_kb_url() {
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(200_000)
    );
    refused_raw(request.as_bytes(), 404, "Not Found");
}

#[test]
fn bad_node_id_in_a_200_kb_query() {
    let request = format!(
        "GET /nodes?node_id={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "9".repeat(200_000)
    );
    refused_raw(request.as_bytes(), 400, "Invalid node_id");
}

#[test]
fn bad_node_id_in_the_query() {
    refused_raw(
        b"GET /nodes?node_id=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        400,
        "Invalid node_id",
    );
}

#[test]
fn bad_percent_encoding_in_the_query() {
    refused_raw(
        b"GET /nodes?node_id=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        400,
        "Invalid node_id",
    );
}

#[test]
fn bodies_that_never_come_free_their_slot_after_the_body_timeout() {
    use std::io::Write;
    let server = TestServer::with(|c| c.body_timeout = Duration::from_secs(1));
    // 64 connections declare a body over 1 KiB (read on a thread of its own) and send nothing:
    // every slot is taken.
    let silent: Vec<std::net::TcpStream> = (0..64)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
            s.write_all(b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    assert!(crate::support::eventually(Duration::from_secs(60), || {
        server.server.bodies_being_read() == 64
    }));
    // Once their deadline has passed, a registration over 1 KiB takes a slot again.
    let mut large = registration(2);
    large["metadata"] = json!({"blob": "x".repeat(2000)});
    let registered = crate::support::eventually(Duration::from_secs(60), || {
        server.post_json("/register", &large).0 == 200
    });
    assert!(registered, "large registrations stayed refused");
    drop(silent);
}

#[test]
fn a_body_trickled_past_the_body_timeout_is_answered_408_and_not_stored() {
    use std::io::{Read, Write};
    let server = TestServer::with(|c| c.body_timeout = Duration::from_secs(1));
    let mut body = registration(9);
    body["metadata"] = json!({"blob": "x".repeat(2000)});
    let body = body.to_string();
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    // A byte at a time until the deadline has passed, then the rest at once.
    let bytes = body.as_bytes();
    let start = std::time::Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        stream.write_all(&bytes[sent..=sent]).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = stream.write_all(&bytes[sent..]);
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 408");
    let (_, nodes) = server.get("/nodes?status=all");
    assert_eq!(
        nodes["nodes"],
        json!([]),
        "the late registration was stored"
    );
    assert_eq!(server.server.counters().bodies_timed_out, 1);
}
