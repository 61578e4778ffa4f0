//! Long-polls (`GET /nodes?index=V&wait=30s`): held until the registry changes or the wait
//! ends, parked off the worker pool, bounded, answered on shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{Answer, TestServer, agent, eventually, get, registration, within};

const LIMIT: Duration = Duration::from_secs(60);

/// An answer: status, `X-Gateway-Index`, `X-Gateway-Epoch`, `ETag`, body.
/// Starts `GET path` on a thread of its own; its answer comes through the handle.
fn watch(url: &str, path: &str) -> std::thread::JoinHandle<Answer> {
    let (url, path) = (url.to_owned(), path.to_owned());
    std::thread::spawn(move || get(&url, &path, &[]))
}

fn answer_within(handle: std::thread::JoinHandle<Answer>) -> Answer {
    within(LIMIT, move || handle.join().expect("the watcher thread"))
}

fn index_of(server: &TestServer) -> u64 {
    get(&server.url, "/nodes", &[])
        .index
        .expect("X-Gateway-Index")
}

fn parked(server: &TestServer, n: usize) {
    assert!(
        eventually(LIMIT, || server.server.watchers_waiting() == n),
        "{} parked, not {n}",
        server.server.watchers_waiting()
    );
}

#[test]
fn a_watcher_is_answered_when_a_node_registers() {
    let server = TestServer::start();
    let index = index_of(&server);
    // A wait far longer than the test's limit: only the change can answer it in time.
    let watcher = watch(&server.url, &format!("/nodes?index={index}&wait=5m"));
    parked(&server, 1);
    server.register(7);
    let answer = answer_within(watcher);
    assert_eq!(answer.status, 200);
    assert!(answer.index.unwrap() > index);
    assert_eq!(answer.body["nodes"][0]["node_id"], 7);
    assert_eq!(answer.body["registry_version"], answer.index.unwrap());
    assert_eq!(server.server.watchers_waiting(), 0);
}

#[test]
fn a_leader_watcher_is_answered_when_the_leader_changes() {
    let server = TestServer::start();
    server.register(1);
    server.register(2);
    let index = index_of(&server);
    let watcher = watch(&server.url, &format!("/leader?index={index}&wait=5m"));
    parked(&server, 1);
    let (status, _) = server.post("/leader", r#"{"leader_id": 2}"#);
    assert_eq!(status, 200);
    let answer = answer_within(watcher);
    assert_eq!(answer.body["leader"]["node_id"], 2);
    assert!(answer.index.unwrap() > index);
}

#[test]
fn a_watcher_behind_the_registry_is_answered_at_once() {
    let server = TestServer::start();
    server.register(1);
    let index = index_of(&server);
    assert!(index > 0);
    let answer = answer_within(watch(
        &server.url,
        &format!("/nodes?index={}&wait=5m", index - 1),
    ));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.index, Some(index));
    assert_eq!(answer.body["nodes"][0]["node_id"], 1);
}

#[test]
fn a_watcher_is_answered_when_its_wait_ends_with_nothing_changed() {
    let server = TestServer::start();
    server.register(1);
    let index = index_of(&server);
    let started = Instant::now();
    let answer = answer_within(watch(
        &server.url,
        &format!("/nodes?index={index}&wait=200ms"),
    ));
    // It was held for its wait, then answered as usual.
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.index, Some(index));
    assert_eq!(answer.body["nodes"][0]["node_id"], 1);
}

#[test]
fn index_without_wait_waits_by_default_and_bare_seconds_are_a_wait() {
    let server = TestServer::start();
    let index = index_of(&server);
    let defaulted = watch(&server.url, &format!("/nodes?index={index}"));
    let bare = watch(&server.url, &format!("/nodes?index={index}&wait=120"));
    parked(&server, 2);
    server.register(3);
    for watcher in [defaulted, bare] {
        assert_eq!(answer_within(watcher).body["nodes"][0]["node_id"], 3);
    }
}

#[test]
fn every_nodes_and_leader_answer_carries_the_index_and_the_epoch() {
    let server = TestServer::start();
    let (_, health) = server.get("/health");
    let epoch = health["epoch"].as_str().unwrap();
    let empty = get(&server.url, "/leader", &[]);
    assert_eq!(empty.index, Some(0));
    assert_eq!(empty.epoch.as_deref(), Some(epoch));
    server.register(1);
    for path in ["/nodes", "/nodes?status=all&node_id=2", "/leader"] {
        let answer = get(&server.url, path, &[]);
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(
            answer.index,
            answer.body["registry_version"].as_u64(),
            "{path}"
        );
        assert_eq!(answer.epoch.as_deref(), Some(epoch), "{path}");
        let tag = answer.etag.unwrap();
        let again = get(&server.url, path, &[("If-None-Match", &tag)]);
        assert_eq!(again.status, 304, "{path}");
        assert_eq!(again.index, answer.index, "{path}");
        assert_eq!(again.epoch.as_deref(), Some(epoch), "{path}");
    }
}

#[test]
fn bad_long_poll_parameters_are_refused() {
    let server = TestServer::start();
    for path in ["/nodes", "/leader"] {
        for query in [
            "index=abc",
            "index=-1",
            "index=1.5",
            "index=99999999999999999999999",
            "index=1&wait=soon",
            "index=1&wait=-1s",
            "index=1&wait=10x",
            "index=1&index=2",
            "wait=1s&wait=2s",
        ] {
            let (status, body) = server.get(&format!("{path}?{query}"));
            assert_eq!(status, 400, "{path}?{query}: {body}");
            assert!(body["error"].as_str().is_some(), "{body}");
        }
    }
    assert_eq!(server.server.watchers_waiting(), 0);
}

#[test]
fn a_stale_index_from_an_earlier_gateway_run_is_answered_at_once() {
    // A gateway in memory saw a few changes...
    let first = TestServer::start();
    for id in 1..=3 {
        first.register(id);
    }
    let before = get(&first.url, "/nodes", &[]);
    drop(first);
    // ...and a new one (a restart without a data directory) starts over from version 0.
    let second = TestServer::start();
    let index = before.index.unwrap();
    let epoch = before.epoch.unwrap();
    let answer = answer_within(watch(
        &second.url,
        &format!("/nodes?index={index}&epoch={epoch}&wait=5m"),
    ));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.index, Some(0));
    assert_ne!(answer.epoch.as_deref(), Some(epoch.as_str()));
    // Without the epoch: an index the registry has not reached is answered at once too.
    let answer = answer_within(watch(&second.url, &format!("/nodes?index={index}&wait=5m")));
    assert_eq!(answer.index, Some(0));
    // The same index in another run (given the epoch it came from) is answered at once.
    second.register(9);
    let now = index_of(&second);
    let answer = answer_within(watch(
        &second.url,
        &format!("/nodes?index={now}&epoch={epoch}&wait=5m"),
    ));
    assert_eq!(answer.body["nodes"][0]["node_id"], 9);
    // As is an ETag from another run.
    let old_tag = before.etag.unwrap();
    let url = second.url.clone();
    let answer = within(LIMIT, move || {
        get(&url, "/nodes?wait=5m", &[("If-None-Match", &old_tag)])
    });
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["nodes"][0]["node_id"], 9);
}

#[test]
fn an_etag_and_a_wait_hold_until_a_change() {
    let server = TestServer::start();
    server.register(1);
    let tag = get(&server.url, "/nodes", &[]).etag.unwrap();
    let unchanged = {
        let (url, tag) = (server.url.clone(), tag.clone());
        within(LIMIT, move || {
            get(&url, "/nodes?wait=200ms", &[("If-None-Match", &tag)])
        })
    };
    assert_eq!(unchanged.status, 304);
    let watcher = {
        let (url, tag) = (server.url.clone(), tag.clone());
        std::thread::spawn(move || get(&url, "/nodes?wait=5m", &[("If-None-Match", &tag)]))
    };
    parked(&server, 1);
    server.register(2);
    let answer = answer_within(watcher);
    assert_eq!(answer.status, 200);
    assert_ne!(answer.etag, Some(tag));
    assert_eq!(answer.body["nodes"].as_array().unwrap().len(), 2);
}

/// Sends a long-poll on a socket of its own, to be read later.
fn park_raw(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream
}

fn read_all(mut stream: TcpStream) -> String {
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn a_thousand_parked_watchers_leave_the_workers_free() {
    let server = TestServer::with(|c| c.workers = 2);
    server.register(1);
    let index = index_of(&server);
    let path = format!("/nodes?index={index}&wait=5m");
    let streams: Vec<TcpStream> = (0..1000).map(|_| park_raw(server.addr(), &path)).collect();
    parked(&server, 1000);
    // Two workers, a thousand requests waiting: heartbeats and health checks are still served.
    let url = server.url.clone();
    within(LIMIT, move || {
        let agent = agent();
        for _ in 0..100 {
            let answer = agent
                .post(format!("{url}/heartbeat"))
                .send(r#"{"node_id": 1}"#)
                .unwrap();
            assert_eq!(answer.status(), 200);
        }
        let health = agent.get(format!("{url}/health")).call().unwrap();
        assert_eq!(health.status(), 200);
    });
    // Heartbeats change nothing a watcher sees.
    assert_eq!(server.server.watchers_waiting(), 1000);
    let (status, _) = server.post("/remove", r#"{"node_id": 1}"#);
    assert_eq!(status, 200);
    let answers = within(LIMIT, move || {
        streams.into_iter().map(read_all).collect::<Vec<_>>()
    });
    for answer in answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#"{"nodes":[]"#), "{answer}");
    }
    assert_eq!(server.server.watchers_waiting(), 0);
}

#[test]
fn past_the_bound_a_watcher_is_answered_at_once() {
    let server = TestServer::with(|c| c.max_watchers = 2);
    let index = index_of(&server);
    let path = format!("/nodes?index={index}&wait=5m");
    let _held: Vec<TcpStream> = (0..2).map(|_| park_raw(server.addr(), &path)).collect();
    parked(&server, 2);
    let answer = answer_within(watch(&server.url, &path));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.index, Some(index));
    assert_eq!(server.server.watchers_waiting(), 2);
}

#[test]
fn stopping_answers_every_parked_watcher() {
    let server = TestServer::start();
    let index = index_of(&server);
    let path = format!("/nodes?index={index}&wait=5m");
    let streams: Vec<TcpStream> = (0..20).map(|_| park_raw(server.addr(), &path)).collect();
    parked(&server, 20);
    let TestServer { server, .. } = server;
    within(LIMIT, move || server.stop());
    // Their wait is five minutes: only the shutdown can have answered them.
    let answers = within(LIMIT, move || {
        streams.into_iter().map(read_all).collect::<Vec<_>>()
    });
    for answer in answers {
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains(&format!("X-Gateway-Index: {index}")),
            "{answer}"
        );
    }
}

#[test]
fn a_request_pipelined_behind_a_parked_watcher_releases_it() {
    let server = TestServer::start();
    let index = index_of(&server);
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    // One write: the second request is read while the first may wait five minutes.
    write!(
        stream,
        "GET /nodes?index={index}&wait=5m HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let answer = within(LIMIT, move || read_all(stream));
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2, "{answer}");
    assert!(answer.contains(r#""status":"healthy""#), "{answer}");
    assert_eq!(server.server.watchers_waiting(), 0);
}

#[test]
fn a_watcher_that_registration_arrives_for_sees_the_same_answer_as_everyone() {
    // The answer to a released watcher is the usual one: filters and gzip apply.
    let server = TestServer::start();
    let index = index_of(&server);
    let url = server.url.clone();
    let filtered = std::thread::spawn(move || {
        get(
            &url,
            &format!("/nodes?index={index}&wait=5m&capability=none-has-it"),
            &[],
        )
    });
    parked(&server, 1);
    server.post_json("/register", &registration(4));
    let answer = answer_within(filtered);
    assert_eq!(answer.body["nodes"], serde_json::json!([]));
    assert!(answer.index.unwrap() > index);
}

#[test]
fn max_watchers_comes_from_the_flag_the_environment_or_the_default() {
    use cluster_gateway::server::config::ServerArgs;
    let load = |flag: Option<&str>, env: Option<&str>| {
        let args = ServerArgs {
            max_watchers: flag.map(str::to_owned),
            ..ServerArgs::default()
        };
        let env = env.map(str::to_owned);
        cluster_gateway::ServerConfig::load(&args, |name| {
            (name == "GATEWAY_MAX_WATCHERS")
                .then(|| env.clone())
                .flatten()
        })
    };
    assert_eq!(load(None, None).unwrap().max_watchers, 10_000);
    assert_eq!(load(None, Some("50")).unwrap().max_watchers, 50);
    assert_eq!(load(Some("0"), Some("50")).unwrap().max_watchers, 0);
    assert!(load(Some("many"), None).is_err());
}

#[test]
fn with_max_watchers_zero_nothing_waits() {
    let server = TestServer::with(|c| c.max_watchers = 0);
    let index = index_of(&server);
    let answer = answer_within(watch(&server.url, &format!("/nodes?index={index}&wait=5m")));
    assert_eq!(answer.status, 200);
    assert_eq!(server.server.watchers_waiting(), 0);
}

#[test]
fn a_wait_longer_than_five_minutes_is_cut_to_five_with_at_most_a_sixteenth_of_jitter() {
    use cluster_gateway::server::gateway::Gateway;
    use cluster_gateway::server::http::{Request, parks};
    use cluster_gateway::server::registry::{Liveness, Registry};

    let gateway = Gateway::new(
        Registry::new(Liveness {
            suspect_after: Duration::from_secs(90),
            node_timeout: Duration::from_secs(300),
        }),
        Duration::from_secs(30),
    );
    let park = |url: &str| {
        parks(
            &gateway,
            &Request {
                method: "GET",
                url,
                body: b"",
                headers: &[],
            },
        )
        .unwrap_or_else(|| panic!("{url} parks"))
        .wait
    };
    let five_minutes = Duration::from_secs(300);
    for url in [
        "/nodes?index=0&wait=10m",
        "/nodes?index=0&wait=86400s",
        "/leader?index=0&wait=1h",
    ] {
        for _ in 0..50 {
            let wait = park(url);
            assert!(wait >= five_minutes, "{url}: {wait:?}");
            assert!(wait <= five_minutes + five_minutes / 16, "{url}: {wait:?}");
        }
    }
    let short = park("/nodes?index=0&wait=2s");
    assert!(
        short >= Duration::from_secs(2) && short <= Duration::from_millis(2125),
        "{short:?}"
    );
}
