//! The operator's rough edges: `--version`, `?pretty`, the dashboard's content type.

use std::process::Command;

use serde_json::{Value, json};

use crate::support::Guarded;
use crate::support::{TestServer, agent, registration};

#[test]
fn both_binaries_print_their_name_and_version() {
    for (name, bin) in [
        ("gateway-server", env!("CARGO_BIN_EXE_gateway-server")),
        ("gateway-client", env!("CARGO_BIN_EXE_gateway-client")),
    ] {
        let out = Command::new(bin).arg("--version").guarded_output().unwrap();
        assert!(out.status.success(), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{name} {}\n", cluster_gateway::VERSION)
        );
        let help = Command::new(bin).arg("--help").guarded_output().unwrap();
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("\n  --version "),
            "{name} --help lists --version"
        );
    }
}

/// `(status, headers by lower-case name, body text)`.
fn get(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut answer = request.call().unwrap();
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    (
        status,
        headers,
        answer.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn pretty_indents_every_json_answer_with_the_same_content() {
    let server = TestServer::start();
    server.register(1);
    server.register(2);
    for path in [
        "/nodes",
        "/nodes?status=all&node_id=1",
        "/leader",
        "/health",
    ] {
        let (_, _, compact) = get(&format!("{}{path}", server.url), &[]);
        let joiner = if path.contains('?') { '&' } else { '?' };
        let (status, _, pretty) = get(&format!("{}{path}{joiner}pretty", server.url), &[]);
        assert_eq!(status, 200);
        assert!(!compact.contains('\n'), "{path}: {compact}");
        assert!(pretty.starts_with("{\n  \""), "{path}: {pretty}");
        let compact: Value = serde_json::from_str(&compact).unwrap();
        let pretty: Value = serde_json::from_str(&pretty).unwrap();
        if path == "/health" {
            assert_eq!(pretty["epoch"], compact["epoch"]);
        } else {
            assert_eq!(pretty, compact, "{path}");
        }
    }
    // The order of the fields is kept.
    let (_, _, text) = get(&format!("{}/nodes?pretty=1", server.url), &[]);
    assert!(text.find("\"nodes\"").unwrap() < text.find("\"registry_version\"").unwrap());
    // pretty=false and pretty=0 leave it compact.
    for off in ["false", "0"] {
        let (_, _, text) = get(&format!("{}/nodes?pretty={off}", server.url), &[]);
        assert!(!text.contains('\n'), "{text}");
    }
    // A registration, and an error.
    let answer = agent()
        .post(format!("{}/register?pretty", server.url))
        .send(registration(3).to_string())
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        answer.contains("\n  \"status\": \"registered\",\n"),
        "{answer}"
    );
    let (status, _, text) = get(&format!("{}/nodes?status=x&pretty", server.url), &[]);
    assert_eq!(status, 400);
    assert!(text.contains("\n  \"status_code\": 400,\n"), "{text}");
}

#[test]
fn a_pretty_list_is_sent_plain_with_a_weak_etag_that_still_matches() {
    let server = TestServer::start();
    server.register(1);
    let url = format!("{}/nodes?pretty", server.url);
    let (status, headers, body) = get(&url, &[("Accept-Encoding", "gzip")]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), None);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["nodes"][0]["node_id"],
        json!(1)
    );
    let etag = header(&headers, "etag").unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let (status, _, _) = get(&url, &[("If-None-Match", &etag)]);
    assert_eq!(status, 304);
    // The compact, uncompressed answer's tag is the same entity's.
    let (_, headers, _) = get(
        &format!("{}/nodes", server.url),
        &[("Accept-Encoding", "identity")],
    );
    let strong = header(&headers, "etag").unwrap();
    assert_eq!(etag, format!("W/{strong}"));
    let (status, _, _) = get(&url, &[("If-None-Match", strong)]);
    assert_eq!(status, 304);
}

#[test]
fn the_dashboard_is_html_and_the_api_is_json() {
    let server = TestServer::start();
    let (status, headers, body) = get(&format!("{}/", server.url), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(body.contains("<title>cluster-gateway</title>"));
    // ?pretty leaves the page alone.
    let (_, _, pretty) = get(&format!("{}/?pretty", server.url), &[]);
    assert_eq!(pretty, body);
    for path in ["/health", "/stats", "/nodes", "/leader", "/nowhere"] {
        let (_, headers, _) = get(&format!("{}{path}", server.url), &[]);
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/json"),
            "{path}"
        );
    }
    let answer = agent().post(format!("{}/", server.url)).send("").unwrap();
    assert_eq!(answer.status(), 405);
    assert_eq!(answer.headers()["allow"], "GET, HEAD");
}

#[test]
fn behind_tokens_the_dashboard_page_and_the_openapi_document_load_and_the_data_does_not() {
    let server = TestServer::with(|config| {
        config.tokens.inline = Some(cluster_gateway::server::auth::Secret::new(
            "read:dashboard:r3ad-t0ken-aaaaaaaaaaaa\n",
        ));
        config.protect_health = true;
    });
    let (status, headers, page) = get(&format!("{}/", server.url), &[]);
    assert_eq!(
        status, 200,
        "a browser loads the page before it has a token: {page}"
    );
    assert!(
        header(&headers, "content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.contains("id=\"token\""), "the page asks for a token");
    let (status, _, document) = get(&format!("{}/openapi.json", server.url), &[]);
    assert_eq!(status, 200, "{document}");
    for path in ["/nodes", "/leader", "/stats", "/health", "/metrics"] {
        let (status, _, body) = get(&format!("{}{path}", server.url), &[]);
        assert_eq!(status, 401, "{path} without a token: {body}");
    }
    let (status, _, body) = get(
        &format!("{}/nodes", server.url),
        &[("Authorization", "Bearer r3ad-t0ken-aaaaaaaaaaaa")],
    );
    assert_eq!(status, 200, "{body}");
}
