//! The production recipe of docs/operations.md ("Running in production") run as one, the way
//! an operator runs it: `gateway-server` on loopback with `--data-dir` and `--token-file`,
//! behind the shipped nginx front ending TLS (`scripts/deploy/nginx.conf`) with a certificate
//! from a private CA; nodes embedding the client through the front with that CA; a long-poll
//! through the front; a real Prometheus scraping `/metrics` through the front with a bearer
//! token (and a job without one, refused); the dashboard in headless Chromium through the
//! front with a read token, 1,000 nodes, ten of them suspected, and true heartbeat ages (the
//! README's screenshot); `systemd-analyze verify` on the shipped unit; and, last, writes that
//! fail (a file-size limit on the gateway stands in for a full disk): `/health` through the
//! front turns 503 for the load balancer while `/health?live` stays 200. Each part has tests
//! of its own elsewhere; this one shows that together they do not contradict each other.
//!
//! Needs nginx, openssl, prometheus, chromium with chromedriver and systemd-analyze
//! (`build.rs` sets `has_nginx`, `has_openssl`, `has_prometheus`, `has_chromedriver`,
//! `has_systemd_analyze`): without one of them the test is listed as ignored, with the reason;
//! `.ci/run` installs them and fails if any test was ignored.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use cluster_gateway::api::Registration;
use cluster_gateway::client::GatewayClient;
use serde_json::{Value, json};

use crate::dashboard::{Browser, rows, seconds_of, text};
use crate::front::{Front, LONGEST_LONG_POLL, Tls, nginx_binary, shipped_read_timeout};
use crate::support::{ChildGuard, eventually, gateway_process};
use crate::tls::{Scratch, make_ca, make_server_certificate};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-server");
/// The front's address is on this host (`front.rs`); its certificate names it.
const FRONT_HOST: &str = "127.0.0.9";
const NODES: &str = "recipe-n0des-t0ken-1111111111";
const PROMETHEUS: &str = "recipe-pr0metheus-t0ken-22222";
const DASHBOARD: &str = "recipe-dashb0ard-t0ken-333333";
/// How long any one step may take on a busy machine.
const STEP: Duration = Duration::from_secs(60);
/// Nodes 500 to 509 fall silent and are suspected after this.
const SUSPECT_AFTER: u64 = 20;

#[test]
#[cfg_attr(
    not(all(
        has_nginx,
        has_openssl,
        has_prometheus,
        has_chromedriver,
        has_systemd_analyze
    )),
    ignore = "needs nginx, openssl, prometheus, chromium, chromedriver and systemd-analyze: \
              apt-get install nginx openssl prometheus chromium chromium-driver systemd"
)]
fn the_production_recipe_runs_as_one_behind_the_tls_front() {
    let nginx = nginx_binary().expect("nginx is installed (apt-get install nginx)");
    let dir = std::env::temp_dir().join(format!("gateway-recipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = Scratch(dir.clone());

    // The shipped unit passes `systemd-analyze verify`, with this build's binary in ExecStart.
    let verified = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/deploy/verify-unit.sh"
        ))
        .arg(GATEWAY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        verified.status.success() && said.trim_end().ends_with("\nok"),
        "verify-unit.sh did not verify the unit: {said}"
    );

    // The operator's files: a private CA and the front's certificate, and the token file
    // (mode 600, as the unit's header installs it) with a node token for nodes 1 to 1,000,
    // a read token for Prometheus and one for the people at the dashboard.
    make_ca(&dir, "ca");
    make_server_certificate(&dir, "ca", FRONT_HOST);
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "node=1-1000:nodes:{NODES}\nread:prometheus:{PROMETHEUS}\nread:dashboard:{DASHBOARD}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("prometheus.token"), PROMETHEUS).unwrap();
    let data = dir.join("data");

    // The gateway as the unit starts it (loopback, data directory, token file), on a free
    // port, with an access log and a short suspicion time for the dashboard's suspected rows.
    // Its files may not grow past 2 MiB (SIGXFSZ ignored, so a write past it fails with EFBIG
    // as on a full disk): room for everything below, and a disk to fill at the end.
    let (_gateway, log, address) = gateway_process(Command::new("bash").args([
        "-c",
        "trap '' XFSZ; ulimit -f 2048 && exec \"$0\" \"$@\"",
        GATEWAY,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        data.to_str().unwrap(),
        "--token-file",
        tokens.to_str().unwrap(),
        "--heartbeat-interval",
        "1",
        "--suspect-after",
        &SUSPECT_AFTER.to_string(),
        "--node-timeout",
        "3600",
        "--access-log",
        "--trusted-proxy",
        "127.0.0.1",
    ]));
    let front = Front::start_tls(
        &nginx,
        &address.to_string(),
        Tls {
            certificate: &dir.join("server.crt"),
            key: &dir.join("server.key"),
        },
    );
    let url = format!("https://{}", front.address);
    let ca = dir.join("ca.crt");
    let https = https_agent(&ca);

    // Nodes embed the client and reach the gateway only through the front, with the CA.
    let first = GatewayClient::builder()
        .gateway(&url)
        .ca_file(&ca)
        .token(NODES)
        .build()
        .unwrap();
    let joined = first
        .register_node(Registration::new(1, "10.0.0.1", 7000).capabilities(["raft"]))
        .unwrap();
    assert!(joined.is_bootstrap, "node 1 bootstraps the cluster");
    // Its heartbeat thread beats at the interval the gateway advertises (1 s) from now on.
    register_all(&https, &url, 500..510);

    // Probes: /health is open through the front; the data is not.
    let (status, health) = get(&https, &format!("{url}/health"), None);
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    let (status, _) = get(&https, &format!("{url}/nodes"), None);
    assert_eq!(status, 401);

    // A long-poll through the front: parked, and answered by the next change. The front
    // waits out the longest one the gateway holds.
    for path in ["/nodes", "/leader"] {
        assert!(shipped_read_timeout(path) > LONGEST_LONG_POLL, "{path}");
    }
    let (_, listed) = get(&https, &format!("{url}/nodes"), Some(DASHBOARD));
    let version = listed["registry_version"].as_u64().unwrap();
    let polling = {
        let (https, url) = (https.clone(), url.clone());
        std::thread::spawn(move || {
            get(
                &https,
                &format!("{url}/nodes?index={version}&wait=60"),
                Some(DASHBOARD),
            )
        })
    };
    let second = GatewayClient::builder()
        .gateway(&url)
        .ca_file(&ca)
        .token(NODES)
        .build()
        .unwrap();
    second
        .register_node(Registration::new(2, "10.0.0.2", 7000))
        .unwrap();
    let (status, woken) = polling.join().unwrap();
    assert_eq!(status, 200, "{woken}");
    assert!(woken["registry_version"].as_u64().unwrap() > version);
    assert!(
        woken["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["node_id"] == 2),
        "{woken}"
    );

    // Prometheus scrapes /metrics through the front: with the read token it is up; a job
    // without a token is refused with 401.
    let prometheus = Prometheus::start(&dir, &front.address);
    let up = |job: &str| prometheus.value(&format!("up{{job=\"{job}\"}}"));
    assert!(
        eventually(STEP, || up("gateway") == Some(1.0)
            && up("no-token") == Some(0.0)),
        "up: gateway {:?}, no-token {:?}",
        up("gateway"),
        up("no-token")
    );
    let refused = prometheus.target_error("no-token");
    assert!(refused.contains("401"), "{refused}");
    // The gateway's own metrics are in Prometheus, the data directory's among them.
    let active = "cluster_gateway_nodes{job=\"gateway\",status=\"active\"}";
    assert!(
        eventually(STEP, || prometheus.value(active).is_some_and(|n| n >= 2.0)),
        "{:?}",
        prometheus.value(active)
    );
    assert!(
        prometheus
            .value("cluster_gateway_store_syncs_total{job=\"gateway\"}")
            .is_some_and(|n| n > 0.0),
        "no store figures: is --data-dir in use?"
    );

    // Nodes 500 to 509 have been silent since they registered: suspected within SUSPECT_AFTER
    // plus a sweep. Then the other 988 nodes join, all through the front.
    let suspected = || {
        let (_, all) = get(&https, &format!("{url}/nodes?status=all"), Some(DASHBOARD));
        all["nodes"].as_array().map_or(0, |nodes| {
            nodes.iter().filter(|n| n["status"] == "suspected").count()
        })
    };
    assert!(
        eventually(STEP, || suspected() == 10),
        "{} suspected",
        suspected()
    );
    register_all(&https, &url, (3..500).chain(510..=1000));

    // The dashboard through the front, trusting the front's certificate alone (pinned by its
    // key), with the read token typed in.
    let browser = Browser::start_with(&[format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_hash(&dir.join("server.crt"))
    )]);
    browser.open(&format!("{url}/"));
    assert!(
        eventually(STEP, || text(&browser, "conn") == "token needed"),
        "{}",
        text(&browser, "conn")
    );
    browser.eval(&format!(
        "document.getElementById('token').value = '{DASHBOARD}';
         document.getElementById('token-form').requestSubmit();"
    ));
    assert!(
        eventually(STEP, || rows(&browser).len() == 1000),
        "{} rows",
        rows(&browser).len()
    );
    // Problems first: the suspected rows lead, the ten silent nodes among them, then node 1,
    // the leader, heads the rest; each part by id. On a machine slow enough that the page
    // came more than SUSPECT_AFTER after the other nodes registered once, they are suspected
    // too: which nodes are is real time's business, the order is the page's.
    let shown = rows(&browser);
    let ids: Vec<u64> = shown.iter().map(|(id, _, _)| id.parse().unwrap()).collect();
    let suspected = shown
        .iter()
        .take_while(|(_, status, _)| status == "suspected")
        .count();
    let late = shown[suspected..]
        .iter()
        .position(|(_, status, _)| status != "active");
    assert!(
        late.is_none(),
        "{suspected} suspected rows lead, then {:?} at row {} after active ones",
        late.map(|at| &shown[suspected + at]),
        suspected + late.unwrap_or(0)
    );
    assert!(
        (500..510).all(|id| ids[..suspected].contains(&id)),
        "the silent nodes are not among the {suspected} leading suspected rows: {:?}",
        &ids[..suspected.max(12).min(ids.len())]
    );
    assert!(
        ids[..suspected].is_sorted() && ids[suspected..].is_sorted(),
        "{ids:?}"
    );
    assert_eq!(
        shown[suspected],
        ("1".to_owned(), "active".to_owned(), true)
    );
    // True ages: node 1 beats every second through the front, and while nothing changes the
    // version the page still refreshes at the heartbeat interval: its long-polls wait 1 s
    // (`wait=1s`), each answered after its wait, so the ages it shows are at most a beat and a
    // refresh old. Counted in the access log, not timed: a loaded machine delays a refresh, it
    // does not make one. A page that waited 30 s (or for a change) makes none in the window.
    let window = Instant::now();
    let mut ages = Vec::new();
    while window.elapsed() < Duration::from_secs(8) {
        ages.push(age_of(&browser, 1));
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut lines: Vec<String> = log.try_iter().collect();
    let refreshes = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| {
                l.contains(" GET /nodes?") && l.contains(" 200 ") && l.contains("token=dashboard")
            })
            .filter(|l| {
                // The page's long-poll: `...&wait=1s&epoch=E` (delta answers) or `...&wait=1s`.
                l.split("wait=")
                    .nth(1)
                    .is_some_and(|w| w.starts_with("1s ") || w.starts_with("1s&"))
            })
            .count()
    };
    // The page's long-polls answered since it showed its rows (the first one came before).
    assert!(
        eventually(STEP, || {
            lines.extend(log.try_iter());
            refreshes(&lines) >= 4
        }),
        "the page refreshed {} times with wait=1s; node 1's age on it, every half second: \
         {ages:?}",
        refreshes(&lines)
    );
    eprintln!("node 1's age on the page, every half second: {ages:?}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-front.png");
    browser.screenshot(&shot);
    eprintln!("the dashboard through the front: {}", shot.display());

    // What the gateway logged: access lines for the requests that came through the front,
    // naming the client the front saw, the token's name and the agent; never a token.
    lines.extend(log.try_iter());
    let scrape = lines
        .iter()
        .find(|l| l.contains("GET /metrics 200"))
        .expect("a scrape in the access log");
    assert!(
        scrape.contains(" access: 127.0.0.1 via 127.0.0.1:"),
        "{scrape}"
    );
    assert!(
        scrape.contains(" token=prometheus agent=\"Prometheus/"),
        "{scrape}"
    );
    for token in [NODES, PROMETHEUS, DASHBOARD] {
        assert!(
            !lines.iter().any(|l| l.contains(token)),
            "a token was logged"
        );
    }

    // The disk fills: nodes publish large metadata until a write fails. The gateway answers
    // that write 503 and, until it can write again, `/health` through the front is 503
    // "unhealthy" (a load balancer takes it out), while `/health?live` stays 200 (a liveness
    // probe does not restart it). The log's writer retries once a second and may recover by
    // compacting: each refused write is a fresh chance to see the state, within a deadline.
    let blob = "x".repeat(15_000);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut writes, mut refused, mut seen) = (0, 0, None);
    while seen.is_none() && Instant::now() < deadline {
        writes += 1;
        let metadata = json!({"blob": format!("{writes}{blob}")});
        let (status, said) = register(&https, &url, 1 + writes % 1000, metadata);
        if status == 200 {
            continue;
        }
        assert_eq!(status, 503, "a write on a full disk: {said}");
        refused += 1;
        let (status, health) = get(&https, &format!("{url}/health"), None);
        if status == 503 {
            let (live, _) = get(&https, &format!("{url}/health?live"), None);
            seen = Some((health, live));
        }
    }
    let Some((health, live)) = seen else {
        panic!(
            "/health never answered 503 in {writes} writes ({refused} refused with 503): a \
             gateway that cannot write stays in the load balancer's rotation"
        );
    };
    assert_eq!(health["status"], "unhealthy", "{health}");
    assert!(health["store_error"].is_string(), "{health}");
    assert_eq!(live, 200, "/health?live follows the process, not the store");
    eprintln!("writes refused after {writes} large registrations; /health said {health}");

    drop((first, second, browser, prometheus, front));
    drop(scratch);
}

/// A ureq agent that trusts the private CA alone.
fn https_agent(ca: &Path) -> ureq::Agent {
    use ureq::tls::{PemItem, RootCerts, TlsConfig, parse_pem};
    let pem = std::fs::read(ca).unwrap();
    let certificates: Vec<_> = parse_pem(&pem)
        .filter_map(|item| match item.unwrap() {
            PemItem::Certificate(c) => Some(c.to_owned()),
            _ => None,
        })
        .collect();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(70)))
        .proxy(None)
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::from(certificates))
                .build(),
        )
        .build()
        .into()
}

fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut answer = request.call().expect("the front answers");
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Registers `ids` through the front with the nodes' token, four connections at a time.
fn register_all(agent: &ureq::Agent, url: &str, ids: impl Iterator<Item = u64>) {
    let ids: Vec<u64> = ids.collect();
    std::thread::scope(|scope| {
        for share in ids.chunks(ids.len().div_ceil(4)) {
            scope.spawn(move || {
                for &id in share {
                    let zone = format!("eu-west-1{}", ["a", "b", "c"][id as usize % 3]);
                    let (status, said) = register(agent, url, id, json!({"zone": zone}));
                    assert_eq!(status, 200, "node {id}: {said}");
                }
            });
        }
    });
}

/// Registers node `id` through the front with the nodes' token and `metadata`, asking for no
/// list: the status and the body.
fn register(agent: &ureq::Agent, url: &str, id: u64, metadata: Value) -> (u16, String) {
    let body = json!({
        "node_id": id,
        "ip_address": format!("10.0.{}.{}", id / 250, id % 250),
        "port": 7000,
        "capabilities": ["raft", "gossip"],
        "metadata": metadata,
    });
    let mut answer = agent
        .post(format!("{url}/register"))
        .header("Authorization", format!("Bearer {NODES}"))
        .header("Prefer", "return=minimal")
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .expect("the front answers");
    let status = answer.status().as_u16();
    (status, answer.body_mut().read_to_string().unwrap())
}

/// The base64 SHA-256 of a certificate's public key, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_hash(certificate: &Path) -> String {
    let out = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin \
             -outform der | openssl dgst -sha256 -binary | openssl base64 -A",
            "spki",
        ])
        .arg(certificate)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The age the page shows for `node`, in seconds.
fn age_of(browser: &Browser, node: u64) -> u64 {
    let age = browser.eval(&format!(
        "return document.querySelector(\"tr[data-node='{node}'] td[data-seen]\").textContent;"
    ));
    // Printed, not bounded: past a minute (a stalled page) it reads "1m 3s ago".
    seconds_of(age.as_str().unwrap().trim_end_matches(" ago")) as u64
}

/// A Prometheus server scraping the front every second, with a job that sends the read token
/// and one that sends none; killed when it drops.
struct Prometheus {
    _child: ChildGuard,
    api: String,
    agent: ureq::Agent,
    _log: Receiver<String>,
}

impl Prometheus {
    fn start(dir: &Path, front: &str) -> Prometheus {
        let d = dir.display();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: gateway\n    scheme: https\n\
             \x20   authorization:\n      credentials_file: {d}/prometheus.token\n\
             \x20   tls_config:\n      ca_file: {d}/ca.crt\n\
             \x20   static_configs:\n      - targets: [\"{front}\"]\n\
             \x20 - job_name: no-token\n    scheme: https\n\
             \x20   tls_config:\n      ca_file: {d}/ca.crt\n\
             \x20   static_configs:\n      - targets: [\"{front}\"]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let mut child = ChildGuard::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={d}/prometheus.yml"))
                .arg(format!("--storage.tsdb.path={d}/prometheus-data"))
                .arg("--web.listen-address=127.0.0.1:0")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .expect("prometheus runs (apt-get install prometheus)");
        let stderr = child.stderr.take().unwrap();
        let (lines, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        // `msg="Listening on" address=127.0.0.1:40123`: the port it was given.
        let deadline = Instant::now() + STEP;
        let mut seen = Vec::new();
        let address = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = log
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("prometheus did not start ({e}): {seen:#?}"));
            if let Some((_, rest)) = line.split_once("msg=\"Listening on\" address=") {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            seen.push(line);
        };
        Prometheus {
            _child: child,
            api: format!("http://{address}/api/v1"),
            agent: crate::support::agent(),
            _log: log,
        }
    }

    fn api(&self, path: &str) -> Value {
        let mut answer = self
            .agent
            .get(format!("{}{path}", self.api))
            .call()
            .expect("prometheus answers");
        serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// The value of an instant query with one series, if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let mut answer = self
            .agent
            .get(format!("{}/query", self.api))
            .query("query", query)
            .call()
            .expect("prometheus answers");
        // Not JSON while Prometheus is still starting (503, "Service Unavailable").
        let answer: Value =
            serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).ok()?;
        let result = answer["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// What Prometheus says went wrong with the last scrape of `job`'s target.
    fn target_error(&self, job: &str) -> String {
        let targets = self.api("/targets?state=active");
        targets["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["labels"]["job"] == job)
            .map(|t| t["lastError"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    }
}
