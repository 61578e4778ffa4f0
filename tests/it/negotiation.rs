//! The headers that make large clusters cheap: `Prefer: return=minimal`, `ETag` and
//! `If-None-Match`, and gzip, decoded by the clients people use (curl, Python's `requests` and
//! `urllib3`).

use std::process::Command;

use serde_json::{Value, json};

use crate::support::Guarded;
use crate::support::{TestServer, registration};

/// A raw exchange through ureq with extra request headers: status, headers, body bytes.
fn exchange(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let mut answer = if method == "POST" {
        let mut request = agent.post(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send(body.unwrap().to_string()).unwrap()
    } else {
        let mut request = agent.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.call().unwrap()
    };
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = answer.body_mut().read_to_vec().unwrap();
    (status, headers, bytes)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn cluster(nodes: u64) -> TestServer {
    let server = TestServer::start();
    for id in 1..=nodes {
        server.register(id);
    }
    server
}

#[test]
fn prefer_return_minimal_leaves_the_list_out_and_says_so() {
    let server = cluster(3);
    let url = format!("{}/register", server.url);
    let (status, headers, body) = exchange(
        "POST",
        &url,
        &[("Prefer", "return=minimal")],
        Some(&registration(4)),
    );
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "Preference-Applied"),
        Some("return=minimal")
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body.get("nodes").is_none(), "{body}");
    assert_eq!(body["status"], "registered");
    assert_eq!(body["leader"]["node_id"], 1);
    assert!(body["registry_version"].as_u64().is_some());

    // Without the header the answer is the contract's, list included.
    let (_, headers, body) = exchange("POST", &url, &[], Some(&registration(5)));
    assert_eq!(header(&headers, "Preference-Applied"), None);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["nodes"].as_array().unwrap().len(), 4);
}

#[test]
fn a_fresh_etag_answers_304_and_a_stale_one_the_new_list() {
    let server = cluster(2);
    let url = format!("{}/nodes?node_id=1", server.url);
    let (status, headers, _) = exchange("GET", &url, &[], None);
    assert_eq!(status, 200);
    let tag = header(&headers, "ETag").expect("an ETag").to_owned();

    let (status, headers, body) = exchange("GET", &url, &[("If-None-Match", &tag)], None);
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "ETag"), Some(tag.as_str()));
    // A 304 carries the Vary the 200 would have (RFC 9110 15.4.5): a cache keyed on
    // Accept-Encoding must not answer a gzip asker with the plain list it validated.
    assert_eq!(
        header(&headers, "Vary"),
        Some("Accept-Encoding"),
        "{headers:?}"
    );

    // Another question about the same version has another tag.
    let (_, headers, _) = exchange("GET", &format!("{}/nodes", server.url), &[], None);
    assert_ne!(header(&headers, "ETag"), Some(tag.as_str()));

    server.register(3);
    let (status, headers, body) = exchange("GET", &url, &[("If-None-Match", &tag)], None);
    assert_eq!(status, 200, "the tag went stale with the change");
    assert_ne!(header(&headers, "ETag"), Some(tag.as_str()));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["nodes"].as_array().unwrap().len(), 2);
}

#[test]
fn leader_answers_carry_an_etag_too() {
    let server = cluster(1);
    let url = format!("{}/leader", server.url);
    let (_, headers, _) = exchange("GET", &url, &[], None);
    let tag = header(&headers, "ETag").unwrap().to_owned();
    assert_eq!(
        exchange("GET", &url, &[("If-None-Match", &tag)], None).0,
        304
    );
    server.post_json("/leader", &json!({"leader_id": 1}));
    server.register(2);
    assert_eq!(
        exchange("GET", &url, &[("If-None-Match", &tag)], None).0,
        200
    );
}

/// A GET over a raw socket (ureq would decode gzip on its own): headers and body bytes.
fn raw_get(server: &TestServer, path: &str, extra: &str) -> (String, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    (head, bytes[split + 4..].to_vec())
}

#[test]
fn gzip_is_sent_to_those_who_ask_and_is_at_least_five_times_smaller() {
    let server = cluster(200);
    let path = "/nodes?node_id=7";
    let (plain_head, plain) = raw_get(&server, path, "");
    assert!(!plain_head.contains("content-encoding"), "{plain_head}");
    assert!(plain_head.contains("vary: accept-encoding"), "{plain_head}");
    let (head, gzip) = raw_get(&server, path, "Accept-Encoding: gzip, deflate\r\n");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    assert!(
        gzip.len() * 5 <= plain.len(),
        "{} bytes compressed, {} plain",
        gzip.len(),
        plain.len()
    );
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut decoded).unwrap();
    assert!(decoded == plain, "the same answer once decoded");
    let etag = |head: &str| {
        head.lines()
            .find(|l| l.starts_with("etag:"))
            .map(str::to_owned)
    };
    assert_ne!(
        etag(&head),
        etag(&plain_head),
        "each encoding has its own tag"
    );
    let (head, _) = raw_get(&server, path, "Accept-Encoding: gzip;q=0\r\n");
    assert!(
        !head.contains("content-encoding"),
        "q=0 refuses gzip: {head}"
    );
}

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .guarded_output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
#[cfg_attr(not(has_curl), ignore = "needs curl: apt-get install curl")]
fn curl_decodes_gzip_answers_that_leave_the_asker_out() {
    let server = cluster(150);
    for path in ["/nodes?node_id=70", "/nodes?status=all", "/nodes"] {
        let url = format!("{}{path}", server.url);
        let plain: Value = serde_json::from_slice(&exchange("GET", &url, &[], None).2).unwrap();
        let decoded: Value =
            serde_json::from_str(&run("curl", &["--silent", "--fail", "--compressed", &url]))
                .unwrap();
        assert_eq!(decoded, plain, "{path}");
    }
    let registered = run(
        "curl",
        &[
            "--silent",
            "--fail",
            "--compressed",
            "--data",
            &registration(70).to_string(),
            &format!("{}/register", server.url),
        ],
    );
    let registered: Value = serde_json::from_str(&registered).unwrap();
    assert_eq!(registered["nodes"].as_array().unwrap().len(), 149);
}

#[test]
#[cfg_attr(
    not(has_python_requests),
    ignore = "needs python3 with requests and urllib3: pip install requests urllib3"
)]
fn python_requests_and_urllib3_decode_gzip_answers() {
    let server = cluster(150);
    let script = r#"
import json, sys, requests, urllib3
base = sys.argv[1]
r = requests.get(base + "/nodes?node_id=3")
assert r.headers["Content-Encoding"] == "gzip", r.headers
nodes = r.json()["nodes"]
assert len(nodes) == 149 and all(n["node_id"] != 3 for n in nodes)
r = requests.post(base + "/register", json={"node_id": 3, "ip_address": "127.0.0.1",
                  "port": 5003, "capabilities": ["raft"]})
assert r.headers["Content-Encoding"] == "gzip", r.headers
assert len(r.json()["nodes"]) == 149 and r.json()["leader"]["node_id"] == 1
h = urllib3.PoolManager().request("GET", base + "/nodes?node_id=149",
                                  headers={"Accept-Encoding": "gzip"})
assert h.headers["Content-Encoding"] == "gzip"
assert len(json.loads(h.data)["nodes"]) == 149
print("ok")
"#;
    assert_eq!(run("python3", &["-c", script, &server.url]).trim(), "ok");
}

#[test]
fn a_list_filtered_by_capability_is_sent_plain_even_to_a_gzip_asker() {
    let server = cluster(200);
    let (head, body) = raw_get(
        &server,
        "/nodes?capability=raft",
        "Accept-Encoding: gzip\r\n",
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    let body: Value = serde_json::from_slice(&body).expect("plain JSON");
    assert_eq!(body["nodes"].as_array().unwrap().len(), 200);
    // The same asker gets gzip for the whole list.
    let (head, _) = raw_get(&server, "/nodes", "Accept-Encoding: gzip\r\n");
    assert!(head.contains("content-encoding: gzip"), "{head}");
}
