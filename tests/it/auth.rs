//! Bearer tokens: 401, 403 and 200 per role on every route, the malformed headers, a reload
//! that adds and revokes tokens while clients run, and no token text in any log line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_gateway::server::auth::Secret;
use serde_json::{Value, json};

use cluster_gateway::ClientError;
use cluster_gateway::client::GatewayClient;

use crate::support::Guarded;
use crate::support::{FakeGateway, TestServer, agent, eventually, registration, within};

const READ: &str = "r3ad-t0ken-aaaaaaaaaaaa";
const WRITE: &str = "wr1te-t0ken-bbbbbbbbbbb";
const TABLE: &str =
    "# test tokens\nread:dashboard:r3ad-t0ken-aaaaaaaaaaaa\nwrite:ops:wr1te-t0ken-bbbbbbbbbbb\n";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_tokens(protect_health: bool) -> TestServer {
    TestServer::with(|config| {
        config.tokens.inline = Some(Secret::new(TABLE));
        config.protect_health = protect_health;
    })
}

/// Status, `WWW-Authenticate` and JSON body of one request with `authorization` (if any).
fn call(
    url: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    authorization: Option<&str>,
) -> (u16, Option<String>, Value) {
    let agent = agent();
    let url = format!("{url}{path}");
    let result = match (method, body) {
        ("GET", _) => {
            let mut request = agent.get(&url);
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            request.call()
        }
        (_, body) => {
            let mut request = agent.post(&url);
            if let Some(a) = authorization {
                request = request.header("Authorization", a);
            }
            request.send(body.map(Value::to_string).unwrap_or_default())
        }
    };
    let mut response = result.expect("the gateway answers");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("WWW-Authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.body_mut().read_to_string().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON ({e}): {text}"));
    (status, challenge, body)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn assert_refused(answer: &(u16, Option<String>, Value), status: u16, what: &str) {
    let (got, challenge, body) = answer;
    assert_eq!(*got, status, "{what}: {body}");
    assert_eq!(body["status_code"], status, "{what}: {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: {body}"
    );
    let challenge = challenge.as_deref().unwrap_or("");
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
    for token in [READ, WRITE] {
        assert!(!body.to_string().contains(token), "{what}: {body}");
    }
}

/// Every route, in an order where each write succeeds with a write token.
fn routes() -> Vec<(&'static str, &'static str, Option<Value>, bool)> {
    vec![
        ("POST", "/register", Some(registration(7)), true),
        ("POST", "/heartbeat", Some(json!({"node_id": 7})), true),
        ("POST", "/leader", Some(json!({"leader_id": 7})), true),
        ("GET", "/nodes", None, false),
        ("GET", "/leader", None, false),
        ("GET", "/stats", None, false),
        ("GET", "/health", None, false),
        ("POST", "/remove", Some(json!({"node_id": 7})), true),
    ]
}

#[test]
fn each_route_answers_401_without_a_token_403_to_a_read_token_on_writes_and_200_by_role() {
    let server = with_tokens(true);
    for (method, path, body, write) in routes() {
        let what = format!("{method} {path}");
        let none = call(&server.url, method, path, body.as_ref(), None);
        assert_refused(&none, 401, &format!("{what} without a token"));
        let unknown = call(
            &server.url,
            method,
            path,
            body.as_ref(),
            Some("Bearer nope-nope"),
        );
        assert_refused(&unknown, 401, &format!("{what} with an unknown token"));

        let read = call(
            &server.url,
            method,
            path,
            body.as_ref(),
            Some(&bearer(READ)),
        );
        if write {
            assert_refused(&read, 403, &format!("{what} with a read token"));
            assert!(read.2["error"].as_str().unwrap().contains("dashboard"));
        } else {
            assert_eq!(read.0, 200, "{what} with a read token: {}", read.2);
        }
        let written = call(
            &server.url,
            method,
            path,
            body.as_ref(),
            Some(&bearer(WRITE)),
        );
        assert_eq!(written.0, 200, "{what} with a write token: {}", written.2);
    }
    // What the refused writes did: nothing. The write token's removal left no node.
    let (_, _, nodes) = call(&server.url, "GET", "/nodes", None, Some(&bearer(READ)));
    assert_eq!(nodes["nodes"], json!([]), "{nodes}");
}

#[test]
fn refused_writes_change_nothing() {
    let server = with_tokens(false);
    let write = Some(bearer(WRITE));
    let (status, _, _) = call(
        &server.url,
        "POST",
        "/register",
        Some(&registration(3)),
        write.as_deref(),
    );
    assert_eq!(status, 200);
    for auth in [None, Some(bearer(READ)), Some("Bearer x".to_owned())] {
        for (path, body) in [
            ("/remove", json!({"node_id": 3})),
            ("/register", registration(4)),
            ("/leader", json!({"leader_id": 4})),
        ] {
            let (status, _, _) = call(&server.url, "POST", path, Some(&body), auth.as_deref());
            assert!(status == 401 || status == 403, "{path}: {status}");
        }
    }
    let (_, _, nodes) = call(&server.url, "GET", "/nodes", None, Some(&bearer(READ)));
    let ids: Vec<&Value> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["node_id"])
        .collect();
    assert_eq!(ids, [&json!(3)], "{nodes}");
    let (_, _, leader) = call(&server.url, "GET", "/leader", None, Some(&bearer(READ)));
    assert_eq!(leader["leader"]["node_id"], 3, "{leader}");
}

#[test]
fn health_is_open_to_probes_unless_protected() {
    let open = with_tokens(false);
    assert_eq!(call(&open.url, "GET", "/health", None, None).0, 200);
    assert_eq!(call(&open.url, "GET", "/stats", None, None).0, 401);
    let protected = with_tokens(true);
    assert_refused(
        &call(&protected.url, "GET", "/health", None, None),
        401,
        "/health",
    );
}

#[test]
fn a_wrong_scheme_an_empty_token_and_a_token_with_spaces_are_401() {
    let server = with_tokens(false);
    for header in [
        format!("Basic {READ}"),
        format!("Token {READ}"),
        READ.to_owned(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer    ".to_owned(),
        format!("Bearer {READ} {READ}"),
        format!("Bearer {} {}", &READ[..5], &READ[5..]),
        format!("Bearer {}", &READ[..READ.len() - 1]),
        format!("Bearer {READ}x"),
    ] {
        let answer = call(&server.url, "GET", "/nodes", None, Some(&header));
        assert_refused(&answer, 401, &format!("{header:?}"));
        assert!(
            answer.1.as_deref().unwrap().contains("invalid_token"),
            "{header:?}: {:?}",
            answer.1
        );
    }
    // The scheme is case-insensitive (RFC 7235).
    let answer = call(
        &server.url,
        "GET",
        "/nodes",
        None,
        Some(&format!("bearer {READ}")),
    );
    assert_eq!(answer.0, 200);
}

#[test]
fn with_no_tokens_the_gateway_is_open() {
    let server = TestServer::start();
    for (method, path, body, _) in routes() {
        let answer = call(&server.url, method, path, body.as_ref(), None);
        assert_eq!(answer.0, 200, "{method} {path}: {}", answer.2);
    }
}

#[test]
fn a_bad_token_file_stops_the_start_naming_the_line_not_the_token() {
    let dir = scratch("bad-start");
    let file = dir.join("tokens");
    std::fs::write(&file, "read:a:s3cr3t-one\nwrite:b:s3cr3t two\n").unwrap();
    let mut config = cluster_gateway::ServerConfig::new("127.0.0.1", 0);
    config.tokens.file = Some(file.clone());
    let Err(error) = cluster_gateway::GatewayServer::new(config).start() else {
        panic!("the start succeeded with a bad token file");
    };
    let error = error.to_string();
    assert!(error.contains("line 2"), "{error}");
    assert!(!error.contains("s3cr3t"), "{error}");

    // A file with no token at all: refused too, rather than an open gateway.
    std::fs::write(&file, "# to do\n").unwrap();
    let mut config = cluster_gateway::ServerConfig::new("127.0.0.1", 0);
    config.tokens.file = Some(file.clone());
    let Err(error) = cluster_gateway::GatewayServer::new(config).start() else {
        panic!("the start succeeded with an empty token file");
    };
    assert!(error.to_string().contains("holds no token"), "{error}");
}

#[test]
fn a_reload_adds_and_revokes_tokens_while_clients_run_and_a_bad_file_keeps_them() {
    let dir = scratch("reload");
    let file = dir.join("tokens");
    std::fs::write(&file, "write:old:0ld-t0ken-cccccccccc\n").unwrap();
    let server = TestServer::with(|config| {
        config.tokens.file = Some(file.clone());
    });
    let url = server.url.clone();
    // Clients registering with the old token until they are refused: 200 until the reload,
    // 401 after, nothing else.
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let auth = Some("Bearer 0ld-t0ken-cccccccccc");
                let body = registration(100 + i);
                let mut seen = Vec::new();
                let until = Instant::now() + Duration::from_secs(60);
                while seen.last() != Some(&401) && Instant::now() < until {
                    let (status, _, _) = call(&url, "POST", "/register", Some(&body), auth);
                    if seen.last() != Some(&status) {
                        seen.push(status);
                    }
                }
                seen
            })
        })
        .collect();
    let old = Some("Bearer 0ld-t0ken-cccccccccc");
    let new = Some("Bearer n3w-t0ken-dddddddddd");
    assert_eq!(call(&url, "GET", "/stats", None, old).0, 200);
    assert_eq!(
        call(&url, "GET", "/stats", None, new).0,
        401,
        "new, before the reload"
    );

    std::fs::write(&file, "write:new:n3w-t0ken-dddddddddd\n").unwrap();
    server.server.reload();
    assert_eq!(call(&url, "GET", "/stats", None, new).0, 200, "added");
    let body = registration(9);
    assert_eq!(call(&url, "POST", "/register", Some(&body), new).0, 200);
    assert_eq!(call(&url, "GET", "/stats", None, old).0, 401, "revoked");
    for client in clients {
        let seen = client.join().unwrap();
        assert!(
            seen == [200, 401] || seen == [401],
            "a client saw {seen:?}: 200 until the reload, 401 after, nothing else"
        );
    }

    // A bad file on reload: the tokens in use stay.
    std::fs::write(&file, "write:new\n").unwrap();
    server.server.reload();
    assert_eq!(call(&url, "GET", "/stats", None, new).0, 200, "kept");
    // An empty one (all revoked by mistake) would open the gateway: refused the same way.
    std::fs::write(&file, "# nothing\n").unwrap();
    server.server.reload();
    assert_eq!(call(&url, "GET", "/stats", None, new).0, 200, "kept");
    assert_eq!(
        call(&url, "GET", "/stats", None, None).0,
        401,
        "still closed"
    );
    std::fs::remove_file(&file).unwrap();
    server.server.reload();
    assert_eq!(call(&url, "GET", "/stats", None, new).0, 200, "kept");
}

/// Runs gateway-server at DEBUG with tokens from a file and the environment, drives every kind
/// of request and refusal, reloads (good file, bad file), and returns its whole log.
fn server_log(dir: &std::path::Path) -> String {
    let file = dir.join("tokens");
    std::fs::write(&file, "read:dashboard:r3ad-t0ken-aaaaaaaaaaaa\n").unwrap();
    // Readable by all: the start warns (naming the file, not the tokens).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway-server"))
        .args(["--host", "127.0.0.1", "--port", "0", "--log-level", "DEBUG"])
        .arg("--token-file")
        .arg(&file)
        .env("GATEWAY_TOKENS", "write:ops:wr1te-t0ken-bbbbbbbbbbb")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .guarded_spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (found, address) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, url)) = line.split_once("listening on http://") {
                let _ = found.send(format!("http://{}", url.trim()));
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let url = address
        .recv_timeout(Duration::from_secs(20))
        .expect("started");
    let read = Some("Bearer r3ad-t0ken-aaaaaaaaaaaa");
    let write = Some("Bearer wr1te-t0ken-bbbbbbbbbbb");
    for auth in [
        None,
        read,
        write,
        Some("Bearer wr1te-t0ken-bbbbbbbbbbX"),
        Some("Basic wr1te-t0ken-bbbbbbbbbbb"),
    ] {
        for (method, path, body, _) in routes() {
            call(&url, method, path, body.as_ref(), auth);
        }
    }
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args(["-s", name, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // A good reload: the read token goes, another comes.
    std::fs::write(&file, "read:probe:pr0be-t0ken-eeeeeeeeee\n").unwrap();
    signal("HUP");
    let probe = Some("Bearer pr0be-t0ken-eeeeeeeeee");
    assert!(eventually(Duration::from_secs(60), || {
        call(&url, "GET", "/nodes", None, probe).0 == 200
    }));
    // A bad one: a line whose token has a space.
    std::fs::write(
        &file,
        "read:probe:pr0be-t0ken-eeeeeeeeee\nwrite:x:ba4d t0ken-ffff\n",
    )
    .unwrap();
    signal("HUP");
    assert_eq!(call(&url, "GET", "/nodes", None, probe).0, 200);
    signal("TERM");
    let exited = eventually(Duration::from_secs(60), || {
        child.try_wait().unwrap().is_some()
    });
    assert!(exited, "the server stopped");
    reader.join().unwrap()
}

#[test]
fn no_log_line_at_any_level_holds_token_text_and_writes_name_their_token() {
    let dir = scratch("logs");
    let log = server_log(&dir);
    for secret in [
        "r3ad-t0ken",
        "wr1te-t0ken",
        "bbbbbbbbbbX",
        "pr0be-t0ken",
        "ba4d",
        "t0ken-ffff",
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    let has = |text: &str| log.lines().any(|l| l.contains(text));
    assert!(has("ops: POST /remove node_id=7"), "{log}");
    assert!(has("ops: POST /leader leader_id=7"), "{log}");
    assert!(has("ops: POST /heartbeat node_id=7"), "{log}");
    assert!(has("can be read by others than its owner"), "{log}");
    assert!(has("keeping the tokens in use") && has("line 2"), "{log}");
    assert!(has("tokens reloaded: 2 (read:probe, write:ops)"), "{log}");
    // Refusals at INFO, the first ten at once (then one a second: access_log.rs).
    assert!(
        has("401 for POST /register from 127.0.0.1:")
            && has(" token=-: a bearer token is required"),
        "{log}"
    );
    assert!(
        has("403 for POST /register from 127.0.0.1:")
            && has(" token=dashboard: token \"dashboard\" may only read"),
        "{log}"
    );
    // The open-gateway warning is for non-loopback addresses only, and there are tokens here.
    assert!(!has("no tokens"), "{log}");
}

// The client and the CLI.

fn builder(server: &TestServer) -> cluster_gateway::client::ClientBuilder {
    GatewayClient::builder()
        .gateway(&server.url)
        .retry_attempts(5)
        .retry_base_delay(Duration::from_millis(10))
}

#[test]
fn the_client_sends_its_token_and_says_which_refusal_it_met() {
    let server = with_tokens(false);
    let writer = builder(&server).token(WRITE).build().unwrap();
    let registration =
        cluster_gateway::api::Registration::new(5, "127.0.0.1", 5005).capabilities(["raft"]);
    writer.register_node(registration).unwrap();
    writer.heartbeat().unwrap();
    let reader = builder(&server).token(READ).build().unwrap();
    assert_eq!(reader.get_nodes(false).unwrap().len(), 1);
    let forbidden = reader.remove(5).unwrap_err();
    assert!(forbidden.is_forbidden(), "{forbidden:?}");
    assert!(
        forbidden.to_string().contains("403 Forbidden"),
        "{forbidden}"
    );
    let anonymous = builder(&server).build().unwrap();
    let unauthorized = anonymous.get_nodes(false).unwrap_err();
    assert!(unauthorized.is_unauthorized(), "{unauthorized:?}");
    assert!(
        unauthorized.to_string().contains("401 Unauthorized"),
        "{unauthorized}"
    );
    for error in [&forbidden, &unauthorized] {
        assert!(!error.to_string().contains(READ) && !format!("{error:?}").contains(READ));
    }
    // The node is still there: the refused removal changed nothing.
    assert_eq!(writer.get_nodes(false).unwrap().len(), 1);
}

#[test]
fn a_401_or_a_403_is_never_retried() {
    for status in [401, 403] {
        let body = format!(r#"{{"error":"no","status_code":{status},"timestamp":1.0}}"#);
        let fake = FakeGateway::start(Some(status), &body);
        let client = GatewayClient::builder()
            .gateway(fake.url())
            .gateway(fake.url())
            .retry_attempts(5)
            .retry_base_delay(Duration::from_millis(10))
            .token("some-token")
            .build()
            .unwrap();
        let error = client.get_stats().unwrap_err();
        assert_eq!(
            error,
            ClientError::Gateway {
                address: fake.url(),
                status,
                message: "no".to_owned()
            }
        );
        assert_eq!(fake.requests(), 1, "{status} was sent again");
    }
}

#[test]
fn a_token_that_cannot_be_sent_is_refused_by_the_builder_without_echoing_it() {
    for token in ["", "   ", "two w0rds", "tab\tt0ken"] {
        let error = GatewayClient::builder()
            .gateway("127.0.0.1:1")
            .token(token)
            .build()
            .err()
            .map(|e| e.to_string())
            .expect("refused");
        assert!(error.contains("token"), "{error}");
        assert!(
            !error.contains("w0rds") && !error.contains("t0ken"),
            "{error}"
        );
    }
    let debug = format!("{:?}", GatewayClient::builder().token("s3cr3t-t0ken"));
    assert!(!debug.contains("s3cr3t"), "{debug}");
}

fn cli(server: &TestServer, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway-client"));
    command
        .args(["--gateway", &server.url])
        .args(args)
        .env_remove("GATEWAY_URL")
        .env_remove("GATEWAY_TOKEN")
        .env_remove("GATEWAY_CA_FILE")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    within(Duration::from_secs(60), move || {
        command.guarded_output().unwrap()
    })
}

#[test]
fn the_cli_takes_its_token_from_a_flag_a_file_or_the_environment() {
    let server = with_tokens(false);
    let dir = scratch("cli");
    let file = dir.join("token");
    std::fs::write(&file, format!("{WRITE}\n")).unwrap();
    let file = file.to_str().unwrap();
    let written = call(
        &server.url,
        "POST",
        "/register",
        Some(&registration(0)),
        Some(&bearer(WRITE)),
    );
    assert_eq!(written.0, 200);

    let out = cli(&server, &["nodes"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");

    let out = cli(&server, &["--token", READ, "nodes"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&server, &["nodes"], &[("GATEWAY_TOKEN", READ)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cli(&server, &["remove", "7"], &[("GATEWAY_TOKEN", READ)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("403 Forbidden"), "{stderr}");
    assert!(!stderr.contains(READ), "{stderr}");

    // The file beats the environment.
    let out = cli(
        &server,
        &["--token-file", file, "set-leader", "0"],
        &[("GATEWAY_TOKEN", READ)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = cli(
        &server,
        &["--token-file", "/nonexistent/token", "nodes"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let out = cli(&server, &["--token", "a b", "nodes"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_discovery_handle_without_a_write_token_is_told_why_at_once_and_joins_with_one() {
    use cluster_gateway::client::discovery::Discovery;
    let server = with_tokens(false);
    let registration = |node_id| {
        cluster_gateway::api::Registration::new(node_id, "127.0.0.1", 6100 + node_id as u16)
            .capabilities(["raft"])
    };
    for (token, status) in [(None, "401"), (Some(READ), "403")] {
        let mut builder = builder(&server).deadline(Duration::from_secs(30));
        if let Some(token) = token {
            builder = builder.token(token);
        }
        let discovery = Discovery::new();
        let info = within(Duration::from_secs(60), move || {
            let info = discovery.initialize_with(builder.build().unwrap(), registration(21));
            discovery.shutdown();
            info
        });
        let error = info.error.unwrap_or_default();
        assert!(error.contains(status), "{token:?}: {error:?}");
        assert!(
            info.node_id.is_none() || !info.gateway_available,
            "{token:?}"
        );
    }
    let (_, _, nodes) = call(&server.url, "GET", "/nodes", None, Some(&bearer(READ)));
    assert_eq!(
        nodes["nodes"],
        json!([]),
        "a refused node was registered: {nodes}"
    );

    let discovery = Discovery::new();
    let info = discovery.initialize_with(
        builder(&server).token(WRITE).build().unwrap(),
        registration(22),
    );
    assert!(info.gateway_available, "{:?}", info.error);
    assert!(info.is_bootstrap);
    discovery.shutdown();
}

// The `node` role.

#[test]
fn a_node_token_registers_heartbeats_and_removes_its_own_ids_only_and_never_sets_the_leader() {
    const RACK: &str = "n0de-t0ken-rack1-cccccccccc";
    let server = TestServer::with(|c| {
        c.tokens.inline = Some(Secret::new(format!("{TABLE}node=1-3,7:rack1:{RACK}\n")));
    });
    let url = server.url.clone();
    let node = bearer(RACK);
    let write = bearer(WRITE);
    let post =
        |path: &str, body: Value, token: &str| call(&url, "POST", path, Some(&body), Some(token));
    // Its own ids: register (and re-register, the update), heartbeat, remove.
    for id in [1, 2, 7] {
        let answer = post("/register", registration(id), &node);
        assert_eq!(answer.0, 200, "node {id}: {answer:?}");
    }
    let answer = post("/register", registration(2), &node);
    assert_eq!(
        (answer.0, answer.2["status"].as_str()),
        (200, Some("updated"))
    );
    let answer = post("/heartbeat", json!({"node_id": 2}), &node);
    assert_eq!(answer.2["status"], "acknowledged", "{answer:?}");
    // It reads, as nodes must.
    let answer = call(&url, "GET", "/nodes", None, Some(&node));
    assert_eq!(answer.0, 200, "{answer:?}");
    // Another id: refused, and nothing changed.
    assert_eq!(post("/register", registration(5), &write).0, 200);
    for (path, body) in [
        ("/register", registration(4)),
        ("/heartbeat", json!({"node_id": 5})),
        ("/remove", json!({"node_id": 5})),
    ] {
        let answer = post(path, body, &node);
        assert_refused(&answer, 403, path);
        let error = answer.2["error"].as_str().unwrap();
        assert!(
            error.contains("\"rack1\" may act for node ids 1-3,7 only"),
            "{path}: {error}"
        );
    }
    let ids: Vec<u64> = call(&url, "GET", "/nodes", None, Some(&write)).2["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [1, 2, 5, 7],
        "node 4 was not registered, node 5 not removed"
    );
    // The leader is a write token's.
    let answer = post("/leader", json!({"leader_id": 2}), &node);
    assert_refused(&answer, 403, "POST /leader");
    assert!(
        answer.2["error"]
            .as_str()
            .unwrap()
            .contains("is a node token (node ids 1-3,7)"),
        "{answer:?}"
    );
    assert_eq!(post("/leader", json!({"leader_id": 2}), &write).0, 200);
    // Its own node it may remove; a write token may remove any.
    assert_eq!(
        post("/remove", json!({"node_id": 7}), &node).2["status"],
        "removed"
    );
    assert_eq!(
        post("/remove", json!({"node_id": 1}), &write).2["status"],
        "removed"
    );
    // A read token may not do what a node token may.
    let answer = post("/heartbeat", json!({"node_id": 2}), &bearer(READ));
    assert_refused(&answer, 403, "a read token's heartbeat");
    assert!(
        answer.2["error"]
            .as_str()
            .unwrap()
            .contains("needs a node token for its node id, or a write token"),
        "{answer:?}"
    );
}

#[test]
fn a_node_token_line_must_name_its_ids() {
    use cluster_gateway::server::auth::Tokens;
    for (line, says) in [
        ("node:rack:t0ken-1234567890", "names the node ids"),
        ("node=:rack:t0ken-1234567890", "not a node id"),
        ("node=9-2:rack:t0ken-1234567890", "ends before it starts"),
        ("node=a-b:rack:t0ken-1234567890", "not a node id"),
        ("admin:rack:t0ken-1234567890", "read, node=IDS or write"),
    ] {
        let error = Tokens::parse(line, "test").expect_err(line).to_string();
        assert!(error.contains(says), "{line}: {error}");
        assert!(!error.contains("t0ken-1234567890"), "{error}");
    }
    let tokens = Tokens::parse("node=1-3, 7:rack:t0ken-1234567890\n", "test").unwrap();
    assert_eq!(tokens.names(), "node:rack");
    let ids = tokens.node_ids(b"t0ken-1234567890").unwrap();
    assert!(ids.contains(1) && ids.contains(3) && ids.contains(7));
    assert!(!ids.contains(0) && !ids.contains(4) && !ids.contains(8));
    assert_eq!(ids.to_string(), "1-3,7");
}
