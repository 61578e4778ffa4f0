//! The gateway-server binary: flags, environment, config file, port 0, signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{ChildGuard, Guarded};
use crate::support::{agent, answers_unread, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_gateway-server");

/// A gateway-server process, killed on drop if still running (`durable.rs` uses it too).
pub(crate) struct Process {
    child: ChildGuard,
    pub(crate) url: String,
    /// What it logged up to the line with its address (the settings and warnings at start).
    startup: Vec<String>,
}

impl Process {
    /// Starts the binary with `args` and `env` on 127.0.0.1 port 0 (unless they name a host
    /// or a port) and reads the address from its log.
    pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut command = Command::new(BIN);
        let given = |flag: &str, variable: &str| {
            args.contains(&flag) || env.iter().any(|(k, _)| *k == variable)
        };
        if !given("--host", "GATEWAY_HOST") {
            command.args(["--host", "127.0.0.1"]);
        }
        command
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        if !given("--port", "GATEWAY_PORT") {
            command.args(["--port", "0"]);
        }
        let mut child = command.guarded_spawn().expect("gateway-server runs");
        let stderr = child.stderr.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        // Passes the log on line by line, and keeps draining it after nobody listens, so the
        // server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        // Generous: replaying a data directory on a loaded machine has taken over 20 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut startup = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no address logged within 120 s ({e}): {startup:#?}"));
            // The binary's own line, the last of the start (at DEBUG the library logs one
            // before the settings).
            let url = line
                .split_once(" gateway_server: ")
                .and_then(|(_, message)| message.split_once("listening on http://"))
                .map(|(_, url)| format!("http://{}", url.trim()));
            startup.push(line);
            if let Some(url) = url {
                break url;
            }
        };
        Process {
            child,
            url,
            startup,
        }
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        let mut answer = agent().get(format!("{}{path}", self.url)).call().unwrap();
        serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and the exit collected.
    pub(crate) fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        let exited = eventually(Duration::from_secs(60), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(exited, "the server did not exit within 60 s");
        status.unwrap()
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).guarded_output().unwrap()
}

#[test]
fn help_lists_the_flags_and_exits_0() {
    for flag in ["--help", "-h"] {
        let out = run(&[flag]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for option in [
            "--host",
            "--port",
            "--log-level",
            "--node-timeout",
            "--heartbeat-interval",
            "--suspect-after",
            "--workers",
            "--max-body-bytes",
            "--cleanup-interval",
            "--config",
        ] {
            assert!(text.contains(option), "{option} missing from help:\n{text}");
        }
    }
}

#[test]
fn a_bad_value_exits_non_zero_naming_it() {
    let out = run(&["--port", "eighty"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--port"));

    let out = Command::new(BIN)
        .env("GATEWAY_NODE_TIMEOUT", "soon")
        .guarded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEWAY_NODE_TIMEOUT"));

    let out = run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());

    let out = run(&["--suspect-after", "500"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inconsistent"));
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused() {
    let dir = std::env::temp_dir().join(format!("gw-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    std::fs::write(&file, r#"{"port": 0, "colour": "blue"}"#).unwrap();
    let out = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
}

#[test]
fn flags_beat_environment_beat_file() {
    let dir = std::env::temp_dir().join(format!("gw-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.json");
    std::fs::write(
        &file,
        r#"{"node_timeout": 100, "heartbeat_interval": 5, "log-level": "DEBUG"}"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();

    let from_file = Process::start(&["--config", file], &[]);
    assert_eq!(from_file.get("/stats")["node_timeout"], 100.0);
    assert_eq!(from_file.get("/stats")["heartbeat_interval"], 5.0);

    let from_env = Process::start(&["--config", file], &[("GATEWAY_NODE_TIMEOUT", "200")]);
    assert_eq!(from_env.get("/stats")["node_timeout"], 200.0);

    let from_flag = Process::start(
        &["--config", file, "--node-timeout", "300"],
        &[("GATEWAY_NODE_TIMEOUT", "200")],
    );
    assert_eq!(from_flag.get("/stats")["node_timeout"], 300.0);
    assert_eq!(from_flag.get("/stats")["heartbeat_interval"], 5.0);
}

#[test]
fn port_0_logs_the_real_port_and_serves_on_it() {
    let server = Process::start(&["--log-level", "INFO"], &[]);
    assert!(!server.url.ends_with(":0"), "{}", server.url);
    assert_eq!(server.get("/health")["status"], "healthy");
}

#[test]
fn sigterm_and_sigint_stop_it_with_exit_0_even_with_idle_keep_alive_clients() {
    for signal in ["TERM", "INT"] {
        let mut server = Process::start(&[], &[]);
        // An idle keep-alive connection stays open in the agent's pool.
        let client = agent();
        client.get(format!("{}/health", server.url)).call().unwrap();
        server.signal(signal);
        assert!(server.wait_exit().success(), "SIG{signal}");
        drop(client);
    }
}

#[test]
fn the_address_is_printed_at_every_log_level() {
    for level in ["WARNING", "ERROR", "CRITICAL"] {
        let server = Process::start(&["--log-level", level], &[]);
        assert!(!server.url.ends_with(":0"), "{level}: {}", server.url);
        assert_eq!(server.get("/health")["status"], "healthy");
    }
}

#[test]
fn sighup_and_sigusr1_never_stop_it() {
    let mut server = Process::start(&["--log-level", "ERROR"], &[]);
    for signal in ["HUP", "USR1", "USR2", "HUP"] {
        server.signal(signal);
        // A signal that killed the process would have done so on delivery.
        assert_eq!(server.get("/health")["status"], "healthy", "SIG{signal}");
        assert!(server.child.try_wait().unwrap().is_none(), "SIG{signal}");
    }
    server.signal("TERM");
    assert!(server.wait_exit().success());
}

#[test]
fn sigterm_finishes_in_bounded_time_with_a_client_that_pipelines_and_never_reads() {
    use std::io::Write;
    let mut server = Process::start(&["--workers", "2"], &[]);
    // 300 nodes with 8 KiB of metadata: each list is about 2.5 MB.
    let client = agent();
    for id in 0..300u64 {
        let mut node = crate::support::registration(id);
        node["metadata"] = serde_json::json!({"blob": "x".repeat(8 * 1024)});
        let answer = client
            .post(format!("{}/register", server.url))
            .send(node.to_string())
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    let request = "GET /nodes?status=all HTTP/1.1\r\nHost: x\r\n\r\n".repeat(16);
    stream.write_all(request.as_bytes()).unwrap();
    // Wait until the server has answers queued that the client does not read: a socket on the
    // server's port with bytes in its send queue (/proc/net/tcp: local address, tx_queue).
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let blocked = eventually(Duration::from_secs(60), || answers_unread(port));
    assert!(blocked, "the server never had unread answers queued");
    server.signal("TERM");
    // At most SHUTDOWN_GRACE (5 s) plus the exit: `wait_exit` allows 10 s.
    assert!(server.wait_exit().success());
    drop(stream);
}

/// The original's example server configuration (`gateway_config.py`), as shipped.
const ORIGINAL_EXAMPLE: &str = r#"{ "host": "0.0.0.0", "port": 8080, "node_timeout": 300.0,
  "heartbeat_interval": 30.0, "cleanup_interval": 60.0, "request_timeout": 30.0,
  "max_connections": 100, "log_level": "INFO",
  "log_format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s" }"#;

/// A config file with `text` in it, in a directory of this test run.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gw-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// The lines of `log` at WARNING that contain `text`.
fn warnings<'a>(log: &'a [String], text: &str) -> Vec<&'a String> {
    log.iter()
        .filter(|l| l.contains(" WARNING ") && l.contains(text))
        .collect()
}

#[test]
fn the_originals_example_config_starts_the_gateway() {
    let file = config_file("original.json", ORIGINAL_EXAMPLE);
    // The file's 0.0.0.0:8080 is overridden by flags (tests bind 127.0.0.1:0).
    let server = Process::start(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(server.get("/health")["status"], "healthy");
    let stats = server.get("/stats");
    assert_eq!(stats["node_timeout"], 300.0);
    assert_eq!(stats["heartbeat_interval"], 30.0);
    let settings = server
        .startup
        .iter()
        .find(|l| l.contains("settings: "))
        .unwrap_or_else(|| panic!("no settings line: {:#?}", server.startup));
    for applied in [
        "heartbeat_interval 30s",
        "cleanup_interval 60s",
        "node_timeout 300s",
        "body_timeout 30s",
        "log_level INFO",
    ] {
        assert!(settings.contains(applied), "{applied} not in {settings}");
    }
    // One warning for each key not applied, naming the key, the file and why.
    let file = file.display().to_string();
    for (key, why) in [
        ("max_connections", "no connection limit"),
        ("log_format", "its own line"),
    ] {
        let named = warnings(&server.startup, &format!("{key} in {file}"));
        assert_eq!(named.len(), 1, "{key}: {:#?}", server.startup);
        assert!(named[0].contains(why), "{}", named[0]);
    }
    assert_eq!(warnings(&server.startup, "not applied").len(), 2);
}

#[test]
fn each_of_the_originals_environment_variables_is_honoured() {
    let env = [
        ("GATEWAY_HOST", "127.0.0.1"),
        ("GATEWAY_PORT", "0"),
        ("GATEWAY_NODE_TIMEOUT", "120"),
        ("GATEWAY_HEARTBEAT_INTERVAL", "10.0"),
        ("GATEWAY_CLEANUP_INTERVAL", "20"),
        ("GATEWAY_REQUEST_TIMEOUT", "12.5"),
        ("GATEWAY_MAX_CONNECTIONS", "100"),
        ("GATEWAY_LOG_LEVEL", "DEBUG"),
        ("GATEWAY_LOG_FORMAT", "%(levelname)s %(message)s"),
    ];
    let server = Process::start(&[], &env);
    // Not the defaults 0.0.0.0 and 8080: the host and the port came from the environment.
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    assert!(!server.url.ends_with(":8080"), "{}", server.url);
    let stats = server.get("/stats");
    assert_eq!(stats["node_timeout"], 120.0);
    assert_eq!(stats["heartbeat_interval"], 10.0);
    let settings = server
        .startup
        .iter()
        .find(|l| l.contains("settings: "))
        .unwrap_or_else(|| panic!("no settings line: {:#?}", server.startup));
    for applied in [
        "cleanup_interval 20s",
        "body_timeout 12.5s",
        "log_level DEBUG",
    ] {
        assert!(settings.contains(applied), "{applied} not in {settings}");
    }
    assert!(
        server.startup.iter().any(|l| l.contains(" DEBUG ")),
        "nothing at DEBUG: {:#?}",
        server.startup
    );
    for variable in ["GATEWAY_MAX_CONNECTIONS", "GATEWAY_LOG_FORMAT"] {
        let key = variable.trim_start_matches("GATEWAY_").to_lowercase();
        let named = warnings(&server.startup, &format!("{key} ({variable})"));
        assert_eq!(named.len(), 1, "{variable}: {:#?}", server.startup);
    }
}

#[test]
fn nothing_is_warned_about_without_the_originals_keys() {
    let server = Process::start(&["--log-level", "WARNING"], &[]);
    assert!(
        warnings(&server.startup, "not applied").is_empty(),
        "{:#?}",
        server.startup
    );
}

#[test]
fn a_bad_value_of_an_originals_key_exits_2_naming_it_and_its_source() {
    let out = Command::new(BIN)
        .env("GATEWAY_CLEANUP_INTERVAL", "soon")
        .guarded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEWAY_CLEANUP_INTERVAL"));

    let file = config_file("many.json", r#"{"max_connections": "many"}"#);
    let out = run(&["--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_connections") && stderr.contains(file.to_str().unwrap()),
        "{stderr}"
    );

    let out = Command::new(BIN)
        .env("GATEWAY_REQUEST_TIMEOUT", "30")
        .env("GATEWAY_BODY_TIMEOUT", "5")
        .guarded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEWAY_REQUEST_TIMEOUT"));
}

#[test]
fn the_reaper_sweeps_at_the_cleanup_interval_not_the_heartbeat_interval() {
    // Nodes are told to beat hourly, so a sweep every heartbeat interval would not reap within
    // the test's deadline; the cleanup interval's sweeps do.
    let server = crate::support::TestServer::with(|c| {
        c.heartbeat_interval = Duration::from_secs(3600);
        c.cleanup_interval = Some(Duration::from_millis(50));
        c.liveness.suspect_after = Duration::from_millis(100);
        c.liveness.node_timeout = Duration::from_millis(200);
    });
    let answer = agent()
        .post(format!("{}/register", server.url))
        .send(crate::support::registration(1).to_string())
        .unwrap();
    assert_eq!(answer.status(), 200);
    let stats = || {
        let mut answer = agent().get(format!("{}/stats", server.url)).call().unwrap();
        serde_json::from_str::<Value>(&answer.body_mut().read_to_string().unwrap()).unwrap()
    };
    assert!(
        eventually(Duration::from_secs(60), || stats()["reaped_total"] == 1),
        "the node was not reaped: {}",
        stats()
    );
}

#[test]
fn a_period_that_would_spin_the_reaper_or_a_config_that_is_no_file_exits_2_at_once() {
    // 1e-300 s is a positive number and zero nanoseconds: a sweep every zero would spin an
    // idle gateway.
    for (flag, value) in [
        ("--cleanup-interval", "1e-300"),
        ("--heartbeat-interval", "0.000001"),
        ("--body-timeout", "1e308"),
    ] {
        let out = run(&[flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag) && stderr.contains("0.01"), "{stderr}");
    }
    // Under a memory limit: a server that reads it all fails here, not the machine.
    let out = Command::new("sh")
        .args(["-c", "ulimit -v 1000000 && exec \"$0\" \"$@\"", BIN])
        .args(["--config", "/dev/zero"])
        .guarded_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("larger than"), "{stderr}");
}

#[test]
fn help_says_the_precedence_the_originals_variables_and_the_exit_codes() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for wanted in [
        "beats its variable",
        "GATEWAY_CLEANUP_INTERVAL",
        "GATEWAY_REQUEST_TIMEOUT",
        "GATEWAY_MAX_CONNECTIONS",
        "GATEWAY_LOG_FORMAT",
        "0.01",
        "\n  1 ",
        "\n  2 ",
    ] {
        assert!(
            text.contains(wanted),
            "{wanted:?} missing from help:\n{text}"
        );
    }
    // And exit 1 is what it says: an address it cannot listen on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(&["--host", "127.0.0.1", "--port", &port]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}

#[test]
fn a_token_file_that_never_ends_is_refused_not_read_until_memory_runs_out() {
    // Under a memory limit: a server that reads it all fails here, not the machine.
    let out = Command::new("sh")
        .args(["-c", "ulimit -v 1000000 && exec \"$0\" \"$@\"", BIN])
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--token-file",
            "/dev/zero",
        ])
        .guarded_output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/dev/zero") && stderr.contains("larger than"),
        "{stderr}"
    );
}

#[test]
fn a_flag_may_be_written_with_an_equals_sign_as_the_originals_argparse_took_it() {
    let server = Process::start(&["--log-level=DEBUG", "--max-watchers=7"], &[]);
    let settings = server
        .startup
        .iter()
        .find(|l| l.contains("settings: "))
        .unwrap_or_else(|| panic!("no settings line: {:#?}", server.startup));
    assert!(
        settings.contains("max_watchers 7") && settings.contains("log_level DEBUG"),
        "{settings}"
    );
    // A bad value so written is named as any other.
    let out = run(&["--port=eighty"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid --port") && stderr.contains("\"eighty\""),
        "{stderr}"
    );
    let out = run(&["--access-log=yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("switch"));
}

/// A notification socket as systemd binds one for a `Type=notify` service.
struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    path: Option<std::path::PathBuf>,
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl NotifySocket {
    /// The next datagram, as text (or a panic after 20 s).
    fn next(&self) -> String {
        self.socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .expect("a notification within 20 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

#[test]
fn systemd_is_told_ready_once_the_address_is_logged_and_stopping_on_sigterm() {
    let path = std::env::temp_dir().join(format!("gateway-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let notify = NotifySocket {
        socket: std::os::unix::net::UnixDatagram::bind(&path).unwrap(),
        path: Some(path.clone()),
    };
    // Nothing arrives before the server is started; it is ready once its address is logged
    // (Process::start returns after reading that line), and answers on it by then.
    let mut server = Process::start(&[], &[("NOTIFY_SOCKET", path.to_str().unwrap())]);
    assert_eq!(notify.next(), "READY=1");
    assert_eq!(server.get("/health")["status"], "healthy");
    server.signal("TERM");
    assert_eq!(notify.next(), "STOPPING=1");
    assert!(server.wait_exit().success());
}

#[test]
fn an_abstract_notify_socket_written_with_an_at_sign_is_reached() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("cluster-gateway-notify-test-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let notify = NotifySocket {
        socket: std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap(),
        path: None,
    };
    let mut server = Process::start(&[], &[("NOTIFY_SOCKET", &format!("@{name}"))]);
    assert_eq!(notify.next(), "READY=1");
    server.signal("TERM");
    assert_eq!(notify.next(), "STOPPING=1");
    assert!(server.wait_exit().success());
}
