//! The dashboard at `GET /`, driven in headless Chromium through chromedriver (WebDriver over
//! HTTP, spoken with ureq): a node that registers appears, a node that goes silent turns
//! suspected, and the page is kept as a screenshot in `target/dashboard.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (CI installs them).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_gateway::server::registry::{Liveness, Now, unix_now};
use serde_json::{Value, json};

use crate::support::{ChildGuard, TestServer, agent, eventually, free_port};

/// A chromedriver process with one headless Chromium session; both end on drop.
pub(crate) struct Browser {
    // Killed, with chromium, when the browser drops (after the session is closed).
    _driver: ChildGuard,
    session: String,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

/// A chromedriver on a loopback port, and that port. On a loaded machine chromedriver has
/// exited before saying its port (its stderr was not kept then): it is started again, on a
/// port of our choosing, until it says it listens, up to five times within [`DRIVER_START`]; a
/// panic then shows what each try printed on stderr and how it ended.
fn start_driver() -> (ChildGuard, u16) {
    let deadline = Instant::now() + DRIVER_START;
    let mut tries = Vec::new();
    loop {
        let port = free_port("127.0.0.1");
        let mut driver = ChildGuard::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .expect("chromedriver runs (Debian package chromium-driver)");
        // Its output is read for as long as it runs, so it never blocks on a full pipe.
        let (tell, said) = std::sync::mpsc::channel();
        let stdout = BufReader::new(driver.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tell.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let reading = {
            let (mut pipe, stderr) = (driver.stderr.take().unwrap(), Arc::clone(&stderr));
            std::thread::spawn(move || {
                let mut buf = [0; 4096];
                while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut buf) {
                    stderr.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        // "ChromeDriver was started successfully on port 46307."
        let started = format!("started successfully on port {port}");
        let ended = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match said.recv_timeout(left) {
                Ok(line) if line.contains(&started) => return (driver, port),
                Ok(_) => continue,
                // Its stdout closed: it exited (or closed it, which is as bad).
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let mut status = None;
                    eventually(Duration::from_secs(10), || {
                        status = driver.try_wait().ok().flatten();
                        status.is_some()
                    });
                    break status.map_or("stdout closed, still running".to_owned(), |s| {
                        // All it wrote on stderr, once it has ended.
                        eventually(Duration::from_secs(10), || reading.is_finished());
                        format!("ended, {s}")
                    });
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    break "silent until the deadline".to_owned();
                }
            }
        };
        drop(driver);
        let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        tries.push(format!("port {port}: {ended}; stderr: {stderr:?}"));
        assert!(
            tries.len() < 5 && Instant::now() < deadline,
            "chromedriver did not start in {} tries within {DRIVER_START:?}: {tries:#?}",
            tries.len()
        );
        eprintln!(
            "chromedriver did not start, trying again: {}",
            tries.last().unwrap()
        );
    }
}

/// How long chromedriver may take to say it listens, over every try.
const DRIVER_START: Duration = Duration::from_secs(120);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    fn start() -> Browser {
        Browser::start_with(&[])
    }

    /// A browser started with Chromium's `extra` flags as well.
    pub(crate) fn start_with(extra: &[String]) -> Browser {
        let (driver, port) = start_driver();
        let profile = TempDir(
            std::env::temp_dir().join(format!("gateway-dashboard-{}-{port}", std::process::id())),
        );
        let mut browser = Browser {
            _driver: driver,
            session: String::new(),
            _profile: profile,
        };
        let base = format!("http://127.0.0.1:{port}");
        let args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--window-size=1280,720",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--user-data-dir={}", browser._profile.0.display())])
        .chain(extra.iter().cloned())
        .collect();
        let created = browser.call(
            "POST",
            &format!("{base}/session"),
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": args,
                },
            }}}),
        );
        browser.session = format!(
            "{base}/session/{}",
            created["sessionId"].as_str().expect("a WebDriver session")
        );
        browser
    }

    fn call(&self, method: &str, url: &str, body: Value) -> Value {
        // Chromium starting (a new session) or laying out 1,000 rows on a loaded machine has
        // taken over 20 s: a generous bound for every WebDriver call, none of which is timed.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(180)))
            .proxy(None)
            .build()
            .into();
        let answer = if method == "GET" {
            agent.get(url).call()
        } else {
            agent.post(url).send(body.to_string())
        };
        let text = answer
            .expect("chromedriver answers")
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap();
        let value: Value = serde_json::from_str(&text).expect("WebDriver answers JSON");
        assert!(
            value["value"]["error"].is_null(),
            "WebDriver {method} {url}: {}",
            value["value"]
        );
        value["value"].clone()
    }

    pub(crate) fn open(&self, url: &str) {
        self.call(
            "POST",
            &format!("{}/url", self.session),
            json!({ "url": url }),
        );
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub(crate) fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &format!("{}/execute/sync", self.session),
            json!({"script": script, "args": []}),
        )
    }

    pub(crate) fn screenshot(&self, path: &std::path::Path) {
        let png = self.call("GET", &format!("{}/screenshot", self.session), json!(null));
        let bytes = base64(png.as_str().expect("a base64 PNG"));
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, bytes).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = agent().delete(&self.session).call();
        }
        // The driver's group goes when `_driver` drops: chromium with it.
    }
}

fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    digits
        .chunks(4)
        .flat_map(|chunk| {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
            let bytes = n.to_be_bytes();
            bytes[1..chunk.len()].to_vec()
        })
        .collect()
}

/// The rows the page shows: `(node id, status, leader?)`.
pub(crate) fn rows(browser: &Browser) -> Vec<(String, String, bool)> {
    let rows = browser.eval(
        "return Array.from(document.querySelectorAll('tr[data-node]'))
             .map(r => [r.dataset.node, r.dataset.status, r.dataset.leader === 'true']);",
    );
    serde_json::from_value(rows).unwrap()
}

pub(crate) fn text(browser: &Browser, id: &str) -> String {
    browser
        .eval(&format!(
            "return document.getElementById('{id}').textContent;"
        ))
        .as_str()
        .unwrap()
        .to_owned()
}

fn register(server: &TestServer, node_id: u64, caps: &[&str], metadata: Value) {
    let (status, body) = server.post_json(
        "/register",
        &json!({
            "node_id": node_id,
            "ip_address": format!("10.0.0.{node_id}"),
            "port": 7000 + node_id,
            "capabilities": caps,
            "metadata": metadata,
        }),
    );
    assert_eq!(status, 200, "{body}");
}

const WAIT: Duration = Duration::from_secs(60);

/// The seconds in a duration as the page writes it ("42s", "1m 3s", "2h 5m", "1d 2h").
pub(crate) fn seconds_of(shown: &str) -> f64 {
    shown
        .split_whitespace()
        .map(|part| {
            let (number, unit) = part.split_at(part.len() - 1);
            let scale = match unit {
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => panic!("not a duration: {shown:?}"),
            };
            number.parse::<f64>().unwrap() * scale
        })
        .sum()
}

#[test]
#[cfg_attr(
    not(has_chromedriver),
    ignore = "needs chromedriver and chromium: apt-get install chromium chromium-driver"
)]
fn the_dashboard_shows_nodes_appear_and_turn_suspected() {
    // Nodes stay active for an hour of real time: suspicion comes from a sweep with injected
    // time, so no stall of the machine changes a status behind the test's back.
    let server = TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_secs(30);
        c.liveness = Liveness {
            suspect_after: Duration::from_secs(3600),
            node_timeout: Duration::from_secs(36000),
        };
    });
    // Node 1 bootstraps and leads.
    register(
        &server,
        1,
        &["raft", "gossip"],
        json!({"zone": "eu-west-1a"}),
    );

    let browser = Browser::start();
    browser.open(&format!("{}/", server.url));
    // The checks below count the page's requests in its resource timings: keep them all, not
    // the first 250 (the default), however long a loaded machine makes the test.
    browser.eval("performance.setResourceTimingBufferSize(1000000);");
    assert_eq!(browser.eval("return document.title;"), "cluster-gateway");
    assert!(
        eventually(WAIT, || rows(&browser)
            == vec![("1".to_owned(), "active".to_owned(), true)]),
        "node 1 never appeared: {:?}",
        rows(&browser)
    );
    assert!(
        eventually(WAIT, || text(&browser, "version")
            == cluster_gateway::VERSION),
        "version: {}",
        text(&browser, "version")
    );
    let (_, stats) = server.get("/stats");
    assert_eq!(text(&browser, "epoch"), stats["epoch"]);
    assert!(text(&browser, "uptime").ends_with('s'), "uptime");
    assert_eq!(text(&browser, "leader"), "1");

    // Nodes that register while the page is open appear.
    register(
        &server,
        2,
        &["raft"],
        json!({"zone": "eu-west-1b", "disk": "ssd"}),
    );
    register(
        &server,
        3,
        &["gossip", "http"],
        json!({"zone": "eu-west-1c"}),
    );
    register(
        &server,
        4,
        &["raft", "gossip", "metrics"],
        json!({"rack": 7}),
    );
    assert!(
        eventually(WAIT, || rows(&browser).len() == 4),
        "nodes 2 to 4 never appeared: {:?}",
        rows(&browser)
    );
    assert!(eventually(WAIT, || text(&browser, "count-total") == "4"));

    // An hour later, node 1 has been silent and the others heartbeated: it turns suspected,
    // still marked as the leader.
    server.server.gateway().sweep(Now {
        instant: Instant::now() + Duration::from_secs(3601),
        unix: unix_now() + 3601.0,
    });
    for id in 2..=4 {
        let (_, ack) = server.post_json("/heartbeat", &json!({ "node_id": id }));
        assert_eq!(ack["status"], "acknowledged");
    }
    let expected = |rows: &[(String, String, bool)]| {
        rows.len() == 4
            && rows[0] == ("1".to_owned(), "suspected".to_owned(), true)
            && rows[1..]
                .iter()
                .all(|(_, status, leader)| status == "active" && !leader)
    };
    assert!(
        eventually(WAIT, || expected(&rows(&browser))),
        "node 1 never turned suspected: {:?}",
        rows(&browser)
    );
    assert_eq!(text(&browser, "count-suspected"), "1");
    assert_eq!(text(&browser, "count-active"), "3");
    // The page followed with delta answers: every /nodes request asked for changes=1, and
    // node 2 to 4's arrival and node 1's suspicion came as events, from an index.
    let urls: Vec<String> = serde_json::from_value(browser.eval(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name))
                   .filter(u => u.pathname === '/nodes').map(u => u.search);",
    ))
    .unwrap();
    assert!(urls.iter().all(|u| u.contains("changes=1")), "{urls:?}");
    assert!(urls.iter().any(|u| u.contains("index=")), "{urls:?}");
    // Suspected rows look plainly different from active ones.
    let backgrounds = browser.eval(
        "return ['1', '2'].map(id => getComputedStyle(
             document.querySelector(`tr[data-node='${id}']`)).backgroundColor);",
    );
    assert_ne!(backgrounds[0], backgrounds[1], "{backgrounds}");
    let row = browser.eval("return document.querySelector(\"tr[data-node='2']\").innerText;");
    let row = row.as_str().unwrap();
    for shown in ["10.0.0.2:7002", "raft", "zone", "eu-west-1b", "ago"] {
        assert!(row.contains(shown), "{shown} in {row:?}");
    }

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard.png");
    browser.screenshot(&shot);

    // The gateway goes away: the page says so and backs off.
    // Never a tight loop: backing off on errors, the page makes at most one request to /nodes
    // per second once the gateway is gone (counted from then: while it ran, one long-poll per
    // change is expected, and a stopped gateway ends its connections at once, so the page
    // finds out within moments).
    let requests_to_nodes = "return [performance.getEntriesByType('resource')
                    .filter(e => new URL(e.name).pathname === '/nodes').length,
                 performance.now() / 1000];";
    let (before, gone_at) =
        serde_json::from_value::<(u64, f64)>(browser.eval(requests_to_nodes)).unwrap();
    drop(server);
    assert!(
        eventually(WAIT, || text(&browser, "conn") == "unreachable"),
        "{}",
        text(&browser, "conn")
    );
    assert!(text(&browser, "error").contains("retrying in"));
    // A second failure, after the first backoff: the error path has run at least twice.
    assert!(
        eventually(WAIT, || text(&browser, "error").contains("retrying in 2 s")),
        "{}",
        text(&browser, "error")
    );
    let (after, now) =
        serde_json::from_value::<(u64, f64)>(browser.eval(requests_to_nodes)).unwrap();
    let (requests, seconds) = (after - before, now - gone_at);
    assert!(
        requests as f64 <= seconds + 1.0,
        "{requests} requests to /nodes in the {seconds:.1} s since the gateway went away"
    );
}

/// A stand-in gateway that serves the dashboard and answers every `/nodes` at once with
/// `X-Gateway-Index: 7` (a long-poll that never has to wait), recording each `/nodes` URL.
fn long_polling_fake() -> (String, Arc<Mutex<Vec<String>>>, Arc<tiny_http::Server>) {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (serving, log) = (Arc::clone(&server), Arc::clone(&seen));
    std::thread::spawn(move || {
        for request in serving.incoming_requests() {
            let path = request.url().to_owned();
            let header = |text: &str| tiny_http::Header::from_bytes(&b"Content-Type"[..], text);
            let (body, content_type) = if path == "/" {
                (
                    include_str!("../../src/server/dashboard.html").to_owned(),
                    "text/html",
                )
            } else if path.starts_with("/nodes") {
                log.lock().unwrap().push(path);
                let node = json!({"node_id": 9, "ip_address": "10.0.0.9", "port": 7009,
                    "capabilities": ["raft"], "status": "active", "last_seen": unix_now(),
                    "join_timestamp": unix_now(), "metadata": {}});
                (
                    json!({"nodes": [node], "registry_version": 7}).to_string(),
                    "application/json",
                )
            } else if path == "/health" {
                (
                    json!({"status": "healthy", "timestamp": unix_now()}).to_string(),
                    "application/json",
                )
            } else {
                let stats = json!({"leader_id": 9, "version": "fake", "epoch": "e", "uptime": 1.0,
                    "registry_version": 7});
                (stats.to_string(), "application/json")
            };
            let answer = tiny_http::Response::from_string(body)
                .with_header(header(content_type).unwrap())
                .with_header(
                    tiny_http::Header::from_bytes(&b"X-Gateway-Index"[..], &b"7"[..]).unwrap(),
                );
            let _ = request.respond(answer);
        }
    });
    (url, seen, server)
}

#[test]
#[cfg_attr(
    not(has_chromedriver),
    ignore = "needs chromedriver and chromium: apt-get install chromium chromium-driver"
)]
fn the_dashboard_long_polls_with_the_index_it_was_given_and_never_loops_tightly() {
    let (url, seen, server) = long_polling_fake();
    let browser = Browser::start();
    browser.open(&format!("{url}/"));
    assert!(
        eventually(WAIT, || seen.lock().unwrap().len() >= 4),
        "{:?}",
        seen.lock().unwrap()
    );
    assert_eq!(text(&browser, "conn"), "live");
    assert_eq!(
        rows(&browser),
        vec![("9".to_owned(), "active".to_owned(), true)]
    );
    let urls = seen.lock().unwrap().clone();
    // It asks for delta answers; this gateway answers lists (older than delta answers), which
    // the page reads as lists.
    assert_eq!(
        urls[0], "/nodes?status=all&changes=1",
        "the first request has no index"
    );
    for later in &urls[1..] {
        assert_eq!(
            later,
            "/nodes?status=all&changes=1&index=7&wait=30s&epoch=e"
        );
    }
    // Answers that come at once without a change (the same index) are spaced a second apart:
    // the page may ask again at once only after its first answer, which started the long-poll.
    let starts: Vec<f64> = serde_json::from_value(browser.eval(
        "return performance.getEntriesByType('resource')
                   .filter(e => new URL(e.name).pathname === '/nodes').map(e => e.startTime);",
    ))
    .unwrap();
    assert!(starts.len() >= 4, "{starts:?}");
    for pair in starts[1..].windows(2) {
        assert!(pair[1] - pair[0] >= 900.0, "requests at {starts:?} ms");
    }
    server.unblock();
}

#[test]
#[cfg_attr(
    not(has_chromedriver),
    ignore = "needs chromedriver and chromium: apt-get install chromium chromium-driver"
)]
fn behind_tokens_with_a_thousand_nodes_the_page_asks_for_a_token_and_shows_problems_first_with_true_ages()
 {
    const READ: &str = "r3ad-t0ken-aaaaaaaaaaaa";
    let server = TestServer::with(|c| {
        c.tokens.inline = Some(cluster_gateway::server::auth::Secret::new(format!(
            "read:dashboard:{READ}\nwrite:nodes:wr1te-t0ken-bbbbbbbbbbb\n"
        )));
        c.heartbeat_interval = Duration::from_secs(1);
        c.liveness = Liveness {
            suspect_after: Duration::from_secs(3600),
            node_timeout: Duration::from_secs(36000),
        };
    });
    let gateway = server.server.gateway();
    for id in 1..=1000u64 {
        let metadata = json!({"zone": format!("eu-west-1{}", ["a", "b", "c"][id as usize % 3]),
                              "round": id % 17, "disk": "ssd"});
        gateway
            .register(
                cluster_gateway::api::Registration::new(
                    id,
                    format!("10.0.{}.{}", id / 250, id % 250),
                    7000,
                )
                .capabilities(["raft", "gossip"])
                .metadata(metadata.as_object().unwrap().clone()),
            )
            .unwrap();
    }
    // Nodes 500 to 509 fall silent; the others beat.
    gateway.sweep(Now {
        instant: Instant::now() + Duration::from_secs(3601),
        unix: unix_now() + 3601.0,
    });
    for id in (1..=1000u64).filter(|id| !(500..510).contains(id)) {
        gateway.heartbeat(id).unwrap();
    }

    let browser = Browser::start();
    browser.open(&format!("{}/", server.url));
    // The page loads without a token (it holds no data) and asks for one.
    assert!(
        eventually(WAIT, || text(&browser, "conn") == "token needed"),
        "{}",
        text(&browser, "conn")
    );
    assert!(rows(&browser).is_empty());
    assert_eq!(text(&browser, "empty"), "Loading...");
    browser.eval(&format!(
        "window.tokenAt = performance.now();
         document.getElementById('token').value = '{READ}';
         document.getElementById('token-form').requestSubmit();"
    ));
    assert!(
        eventually(WAIT, || rows(&browser).len() == 1000),
        "{} rows",
        rows(&browser).len()
    );
    let first_rows_ms = browser.eval("return window.firstRowsAt - window.tokenAt;");
    eprintln!("1,000 nodes: rows shown {first_rows_ms} ms after the token was given");
    // Problems first: the ten silent nodes lead, then the rest by id.
    let shown = rows(&browser);
    let ids: Vec<u64> = shown.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    assert_eq!(
        ids[..10],
        (500..510).collect::<Vec<_>>(),
        "{:?}",
        &ids[..12]
    );
    assert!(
        shown[..10]
            .iter()
            .all(|(_, status, _)| status == "suspected")
    );
    assert!(shown[10..].iter().all(|(_, status, _)| status == "active"));
    assert_eq!(ids[10], 1, "the leader, node 1, first of the active");
    // A row is one line tall, metadata included.
    let heights: Vec<f64> = serde_json::from_value(browser.eval(
        "return Array.from(document.querySelectorAll('tr[data-node]')).slice(0, 20)
             .map(r => r.getBoundingClientRect().height);",
    ))
    .unwrap();
    assert!(heights.iter().all(|h| *h < 40.0), "row heights {heights:?}");
    // The filter box narrows the rows.
    browser.eval(
        "const f = document.getElementById('filter'); f.value = '10.0.2.';
         f.dispatchEvent(new Event('input'));",
    );
    assert!(
        eventually(WAIT, || rows(&browser).len() == 250),
        "{}",
        rows(&browser).len()
    );
    browser.eval(
        "const f = document.getElementById('filter'); f.value = '';
         f.dispatchEvent(new Event('input'));",
    );
    // True ages: node 2 beats every half second. Heartbeats move no index and no event
    // carries them: the page learns them only by reading every node afresh. How fast a loaded machine lets the page go is not the question, so
    // the bounds are what the test itself observed: the page comes to hold a heartbeat sent
    // well after beating began, it reads every node afresh after at most a few long-polls of
    // one heartbeat interval each, and the age it shows is the time since the heartbeat it
    // holds, by the test's clock read after the page was.
    // Every request from now on is kept in the page's resource timings (250 by default).
    browser.eval(
        "performance.setResourceTimingBufferSize(1000000); window.beatAt = performance.now();",
    );
    let began = unix_now();
    let mut beat_at = Instant::now() - Duration::from_secs(1);
    let seen_node_2 = || {
        browser
            .eval("return Number(document.querySelector(\"tr[data-node='2'] td[data-seen]\").dataset.seen);")
            .as_f64()
            .unwrap()
    };
    let fresh = eventually(Duration::from_secs(120), || {
        if beat_at.elapsed() >= Duration::from_millis(500) {
            gateway.heartbeat(2).unwrap();
            beat_at = Instant::now();
        }
        seen_node_2() >= began + 5.0
    });
    assert!(
        fresh,
        "node 2 beat for 2 minutes from {began} and the page still holds last_seen {}",
        seen_node_2()
    );
    // The /nodes requests made while node 2 beat, in order: `true` for a long-poll (with an
    // index), `false` for a fresh read of every node; and each long-poll's wait.
    let (polls, waits): (Vec<bool>, Vec<String>) = serde_json::from_value(browser.eval(
        "const urls = performance.getEntriesByType('resource')
             .filter(e => e.startTime >= window.beatAt).map(e => new URL(e.name))
             .filter(u => u.pathname === '/nodes');
         return [urls.map(u => u.searchParams.has('index')),
                 urls.filter(u => u.searchParams.has('index')).map(u => u.searchParams.get('wait'))];",
    ))
    .unwrap();
    assert!(
        waits.iter().all(|wait| wait == "1s"),
        "long-polls wait the heartbeat interval: {waits:?}"
    );
    // A long-poll ends at its wait (nothing moves the index while node 2 beats), and once an
    // interval has passed since the last fresh read the next request is one: one long-poll
    // between fresh reads, two when an answer came a little early, never more than three.
    let longest_run = polls
        .split(|poll| !poll)
        .map(<[bool]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        polls.contains(&false) && longest_run <= 3,
        "fresh reads (false) among long-polls (true): {polls:?}"
    );
    // The age as the page's once-a-second tick writes it, ticked now, read against the test's
    // clock after the read.
    let (age, seen): (String, f64) = serde_json::from_value(browser.eval(
        "tick();
         const cell = document.querySelector(\"tr[data-node='2'] td[data-seen]\");
         return [cell.textContent, Number(cell.dataset.seen)];",
    ))
    .unwrap();
    let read_at = unix_now();
    let seconds = seconds_of(age.trim_end_matches(" ago"));
    // The page's clock is the gateway's, set from /health (never ahead of it by more than
    // the rounding of Date.now() to a millisecond).
    assert!(
        seconds <= read_at - seen + 0.01,
        "node 2's last_seen {seen} shown as {age} at {read_at}"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-1000.png");
    browser.screenshot(&shot);

    // The gateway goes away: the rows stay, greyed, with the time since the last update.
    drop(server);
    assert!(
        eventually(WAIT, || text(&browser, "updated")
            .starts_with("last update")),
        "{}",
        text(&browser, "updated")
    );
    let stale =
        browser.eval("return document.getElementById('table').classList.contains('stale');");
    assert_eq!(stale, true);
    assert_eq!(rows(&browser).len(), 1000, "the last rows stay");
    // "last update" moves every second while the page is stale: once it has moved twice,
    // more than a second has passed on the page's clock, and a running uptime would show it.
    let uptime = text(&browser, "uptime");
    for _ in 0..2 {
        let updated = text(&browser, "updated");
        assert!(
            eventually(WAIT, || text(&browser, "updated") != updated),
            "{updated}"
        );
    }
    assert_eq!(text(&browser, "uptime"), uptime, "the uptime stopped");
}
