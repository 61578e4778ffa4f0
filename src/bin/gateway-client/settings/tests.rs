use super::*;
use argh::FromArgs;

/// A config file holding `text`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "gateway-client-settings-{}-{name}.json",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, String> {
    let cli = Cli::from_args(&["gateway-client"], args).expect("flags parse");
    Settings::load(&cli, |name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

#[test]
fn defaults_are_the_original_clients_but_for_node_id_and_port() {
    let settings = load(&[], &[]).unwrap();
    assert_eq!(settings, Settings::default());
    assert_eq!(settings.gateways, ["localhost:8080"]);
    assert_eq!(settings.timeout, Duration::from_secs(10));
    assert_eq!(settings.retry_attempts, 3);
    assert_eq!(settings.retry_delay, Duration::from_secs(1));
    assert_eq!(settings.ip_address, "127.0.0.1");
    assert_eq!(settings.capabilities, ["raft", "gossip"]);
    assert!(settings.metadata.is_empty());
    assert_eq!((settings.node_id, settings.port), (None, None));
}

#[test]
fn every_key_of_the_original_example_config_takes_effect() {
    let file = TempFile::new(
        "example",
        r#"{"gateway_host": "gw", "gateway_port": 9000, "timeout": 2.5,
            "heartbeat_interval": 7, "retry_attempts": 5, "retry_delay": 0.5,
            "node_id": 4, "ip_address": "10.0.0.4", "port": 5004,
            "capabilities": ["raft"], "metadata": {"role": "worker", "n": 1}}"#,
    );
    let settings = load(&["--config", file.path()], &[]).unwrap();
    assert_eq!(settings.gateways, ["gw:9000"]);
    assert_eq!(settings.timeout, Duration::from_millis(2500));
    assert_eq!(settings.heartbeat_interval, Some(Duration::from_secs(7)));
    assert_eq!(settings.retry_attempts, 5);
    assert_eq!(settings.retry_delay, Duration::from_millis(500));
    assert_eq!(settings.node_id, Some(4));
    assert_eq!(settings.ip_address, "10.0.0.4");
    assert_eq!(settings.port, Some(5004));
    assert_eq!(settings.capabilities, ["raft"]);
    assert_eq!(
        Value::Object(settings.metadata),
        serde_json::json!({"role": "worker", "n": 1})
    );
}

#[test]
fn each_setting_follows_flag_then_environment_then_file() {
    let file = TempFile::new(
        "layers",
        r#"{"timeout": 1, "heartbeat-interval": 1, "retry_attempts": 1, "retry_delay": 1,
            "node_id": 1, "ip_address": "10.0.0.1", "port": 1, "capabilities": "a,b",
            "log_level": "ERROR"}"#,
    );
    let env = [
        ("GATEWAY_CLIENT_TIMEOUT", "2"),
        ("GATEWAY_CLIENT_HEARTBEAT_INTERVAL", "2"),
        ("GATEWAY_CLIENT_RETRY_ATTEMPTS", "2"),
        ("GATEWAY_CLIENT_RETRY_DELAY", "2"),
        ("NODE_ID", "2"),
        ("NODE_IP", "10.0.0.2"),
        ("NODE_PORT", "2"),
        ("GATEWAY_CLIENT_CAPABILITIES", "c"),
    ];
    let config = ["--config", file.path()];
    let from_file = load(&config, &[]).unwrap();
    assert_eq!(
        (from_file.timeout, from_file.heartbeat_interval),
        (Duration::from_secs(1), Some(Duration::from_secs(1)))
    );
    assert_eq!((from_file.retry_attempts, from_file.node_id), (1, Some(1)));
    assert_eq!(from_file.capabilities, ["a", "b"]);
    assert_eq!(from_file.log_level, Some(LevelFilter::Error));
    let from_env = load(&config, &env).unwrap();
    assert_eq!(from_env.timeout, Duration::from_secs(2));
    assert_eq!(from_env.heartbeat_interval, Some(Duration::from_secs(2)));
    assert_eq!(from_env.retry_attempts, 2);
    assert_eq!(from_env.retry_delay, Duration::from_secs(2));
    assert_eq!((from_env.node_id, from_env.port), (Some(2), Some(2)));
    assert_eq!(from_env.ip_address, "10.0.0.2");
    assert_eq!(from_env.capabilities, ["c"]);
    let flags = [
        &config[..],
        &[
            "--timeout",
            "3",
            "--heartbeat-interval",
            "3",
            "--node-id",
            "3",
            "--ip",
            "10.0.0.3",
            "--port",
            "3",
            "--capabilities",
            "d",
            "--log-level",
            "DEBUG",
        ],
    ]
    .concat();
    let from_flags = load(&flags, &env).unwrap();
    assert_eq!(from_flags.timeout, Duration::from_secs(3));
    assert_eq!(from_flags.heartbeat_interval, Some(Duration::from_secs(3)));
    assert_eq!((from_flags.node_id, from_flags.port), (Some(3), Some(3)));
    assert_eq!(from_flags.ip_address, "10.0.0.3");
    assert_eq!(from_flags.capabilities, ["d"]);
    assert_eq!(from_flags.log_level, Some(LevelFilter::Debug));
}

#[test]
fn a_value_a_higher_layer_overrides_is_still_checked() {
    let file = TempFile::new("overridden", r#"{"node_id": "seven"}"#);
    let err = load(&["--config", file.path(), "--node-id", "1"], &[]).unwrap_err();
    assert!(
        err.contains("node_id") && err.contains(file.path()),
        "{err}"
    );
    let err = load(&["--node-id", "1"], &[("NODE_ID", "seven")]).unwrap_err();
    assert!(err.contains("NODE_ID"), "{err}");
}

#[test]
fn the_token_and_ca_files_of_the_config_file_are_found_beside_it() {
    let token = std::env::temp_dir().join(format!("gateway-client-token-{}", std::process::id()));
    std::fs::write(&token, "\n  s3cret  \n").unwrap();
    let name = token.file_name().unwrap().to_str().unwrap();
    let file = TempFile::new(
        "token",
        &format!(r#"{{"token_file": "{name}", "ca_file": "ca.pem"}}"#),
    );
    let settings = load(&["--config", file.path()], &[]).unwrap();
    assert_eq!(settings.token.as_deref(), Some("s3cret"));
    assert_eq!(settings.ca_file, Some(std::env::temp_dir().join("ca.pem")));
    // GATEWAY_TOKEN beats the file's token_file, --token beats both.
    let settings = load(&["--config", file.path()], &[("GATEWAY_TOKEN", "env")]).unwrap();
    assert_eq!(settings.token.as_deref(), Some("env"));
    let args = ["--config", file.path(), "--token", "flag"];
    let settings = load(&args, &[("GATEWAY_TOKEN", "env")]).unwrap();
    assert_eq!(settings.token.as_deref(), Some("flag"));
    std::fs::remove_file(&token).unwrap();
    let err = load(&["--config", file.path()], &[]).unwrap_err();
    assert!(err.contains("token_file") && err.contains(name), "{err}");
}

#[test]
fn a_key_twice_or_unknown_is_refused() {
    let file = TempFile::new("twice", r#"{"node-id": 1, "node_id": 2}"#);
    let err = load(&["--config", file.path()], &[]).unwrap_err();
    assert!(err.contains("node_id") && err.contains("twice"), "{err}");
    let file = TempFile::new("unknown", r#"{"cleanup_interval": 60}"#);
    let err = load(&["--config", file.path()], &[]).unwrap_err();
    assert!(err.contains("unknown key \"cleanup_interval\""), "{err}");
}

#[test]
fn a_period_that_would_spin_or_never_come_is_refused_from_every_source() {
    // 1e-12 s passes as positive and is zero nanoseconds: a heartbeat every 0 ns.
    for bad in ["1e-12", "0.001", "1e308", "NaN", "0", "-1"] {
        for flag in ["--timeout", "--heartbeat-interval"] {
            let err = load(&[flag, bad], &[]).unwrap_err();
            assert!(err.contains(flag) && err.contains("0.01"), "{err}");
            // The number as written, not 309 digits.
            assert!(err.len() < 200, "{err}");
        }
        for var in [
            "GATEWAY_CLIENT_TIMEOUT",
            "GATEWAY_CLIENT_HEARTBEAT_INTERVAL",
            "GATEWAY_CLIENT_RETRY_DELAY",
        ] {
            let err = load(&[], &[(var, bad)]).unwrap_err();
            assert!(err.contains(var) && err.contains("0.01"), "{err}");
        }
        for key in ["timeout", "heartbeat_interval", "retry_delay"] {
            let file = TempFile::new(
                &format!("period-{key}"),
                &format!(r#"{{"{key}": "{bad}"}}"#),
            );
            let err = load(&["--config", file.path()], &[]).unwrap_err();
            assert!(err.contains(key) && err.contains("0.01"), "{err}");
        }
    }
    let settings = load(&["--heartbeat-interval", "0.01"], &[]).unwrap();
    assert_eq!(settings.heartbeat_interval, Some(Duration::from_millis(10)));
}

#[test]
fn a_port_out_of_range_says_what_a_port_is() {
    for var in ["GATEWAY_PORT", "NODE_PORT"] {
        let err = load(&[], &[(var, "70000")]).unwrap_err();
        assert!(err.contains(var) && err.contains("0 to 65535"), "{err}");
    }
}

#[test]
fn a_config_file_that_is_not_a_small_file_is_refused_without_reading_it_all() {
    let big = TempFile::new(
        "big",
        &format!(r#"{{"gateway_host": "{}"}}"#, "a".repeat(2 << 20)),
    );
    let err = load(&["--config", big.path()], &[]).unwrap_err();
    assert!(
        err.contains("larger than") && err.contains(big.path()),
        "{err}"
    );
    // Without the bound, /dev/zero is read until the memory runs out.
    let err = load(&["--config", "/dev/zero"], &[]).unwrap_err();
    assert!(err.contains("larger than"), "{err}");
    let dir = std::env::temp_dir();
    let err = load(&["--config", dir.to_str().unwrap()], &[]).unwrap_err();
    assert!(err.contains("cannot read config file"), "{err}");
    let deep = TempFile::new(
        "deep",
        &format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000)),
    );
    let err = load(&["--config", deep.path()], &[]).unwrap_err();
    assert!(err.contains("invalid JSON"), "{err}");
}

#[test]
fn a_gateway_flag_may_name_several_comma_separated_as_the_variable_does() {
    let settings = load(&["--gateway", "g1:1, g2:2", "--gateway", "g3:3"], &[]).unwrap();
    assert_eq!(settings.gateways, ["g1:1", "g2:2", "g3:3"]);
    let from_env = load(&[], &[("GATEWAY_URL", "g1:1, g2:2")]).unwrap();
    assert_eq!(from_env.gateways, ["g1:1", "g2:2"]);
    for empty in ["", " , "] {
        let err = load(&["--gateway", empty], &[]).unwrap_err();
        assert!(err.contains("--gateway"), "{err}");
    }
}

#[test]
fn a_gateway_host_with_a_scheme_or_a_port_is_refused_naming_the_setting() {
    for bad in ["http://gw:8080", "gw:8080", "127.0.0.1:18431"] {
        let err = load(&["--gateway-host", bad], &[]).unwrap_err();
        assert!(
            err.contains("--gateway-host") && err.contains("--gateway"),
            "{err}"
        );
        let err = load(&[], &[("GATEWAY_HOST", bad)]).unwrap_err();
        assert!(err.contains("GATEWAY_HOST"), "{err}");
        let file = TempFile::new("host", &format!(r#"{{"gateway_host": "{bad}"}}"#));
        let err = load(&["--config", file.path()], &[]).unwrap_err();
        assert!(err.contains("gateway_host"), "{err}");
    }
    // An IPv6 address, bracketed or not, and a name are hosts.
    for host in ["::1", "[::1]", "gw.example", "10.0.0.1"] {
        let settings = load(&["--gateway-host", host, "--gateway-port", "9"], &[]).unwrap();
        assert_eq!(settings.gateways.len(), 1, "{host}");
    }
    let settings = load(&["--gateway-host", "::1", "--gateway-port", "9"], &[]).unwrap();
    assert_eq!(settings.gateways, ["[::1]:9"]);
}

#[test]
fn an_empty_ip_flag_is_refused_here_not_by_the_gateway() {
    let err = load(&["--ip", " "], &[]).unwrap_err();
    assert!(err.contains("--ip"), "{err}");
    let settings = load(&["--ip", " 10.0.0.9 "], &[]).unwrap();
    assert_eq!(settings.ip_address, "10.0.0.9");
}
