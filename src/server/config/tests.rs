use super::*;

fn load(args: &[&str], env: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
    let args = ServerArgs::from_args(&["gateway-server"], args).expect("flags parse");
    ServerConfig::load(&args, |name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
}

/// A config file with `text` in it, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        // Tests run at once, some with the same name: a number of its own for each file.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "gateway-config-{}-{n}-{name}.json",
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

#[test]
fn token_settings_merge_like_the_others_and_the_tokens_come_only_from_the_environment() {
    let config = load(&[], &[]).unwrap();
    assert_eq!(config.tokens, TokenSource::default());
    assert!(!config.protect_health);
    let file = TempFile::new(
        "tokens",
        r#"{"token_file": "/from/file", "protect_health": true}"#,
    );
    let env = [
        ("GATEWAY_TOKEN_FILE", "/from/env"),
        ("GATEWAY_TOKENS", "read:a:t0ken"),
    ];
    let config = load(&["--config", file.path()], &env).unwrap();
    assert_eq!(config.tokens.file, Some(PathBuf::from("/from/env")));
    assert_eq!(config.tokens.inline, Some(Secret::new("read:a:t0ken")));
    assert!(config.protect_health);
    assert!(!format!("{config:?}").contains("t0ken"));
    let config = load(&["--token-file", "/from/flag", "--protect-health"], &env).unwrap();
    assert_eq!(config.tokens.file, Some(PathBuf::from("/from/flag")));
    assert!(config.protect_health);
    let bad = load(&[], &[("GATEWAY_PROTECT_HEALTH", "maybe")]).unwrap_err();
    assert!(bad.to_string().contains("GATEWAY_PROTECT_HEALTH"), "{bad}");
    assert!(load(&["--token-file", " "], &[]).is_err());
}

#[test]
fn defaults_match_the_original() {
    // The README's configuration table, number for number.
    let config = load(&[], &[]).unwrap();
    assert_eq!(config.host, "0.0.0.0");
    assert_eq!(config.port, 8080);
    assert_eq!(config.liveness.node_timeout, Duration::from_secs(300));
    assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(config.liveness.suspect_after, Duration::from_secs(90));
    assert_eq!(config.workers, 8);
    assert_eq!(config.max_body_bytes, 65536);
    assert_eq!(config.log_level, LevelFilter::Info);
}

#[test]
fn gateway_config_names_the_file_and_hyphenated_keys_take_effect() {
    let file = TempFile::new(
        "hyphens",
        r#"{"node-timeout": 120, "heartbeat-interval": "10", "max-body-bytes": 2048, "workers": 3, "log-level": "DEBUG", "suspect-after": 40}"#,
    );
    let config = load(&[], &[("GATEWAY_CONFIG", file.path())]).unwrap();
    assert_eq!(config.liveness.node_timeout, Duration::from_secs(120));
    assert_eq!(config.heartbeat_interval, Duration::from_secs(10));
    assert_eq!(config.liveness.suspect_after, Duration::from_secs(40));
    assert_eq!(config.max_body_bytes, 2048);
    assert_eq!(config.workers, 3);
    assert_eq!(config.log_level, LevelFilter::Debug);
    // --config beats GATEWAY_CONFIG.
    let other = TempFile::new("other", r#"{"workers": 5}"#);
    let config = load(
        &["--config", other.path()],
        &[("GATEWAY_CONFIG", file.path())],
    )
    .unwrap();
    assert_eq!(config.workers, 5);
    assert_eq!(config.liveness.node_timeout, Duration::from_secs(300));
}

#[test]
fn a_bad_value_in_the_file_names_the_key_and_the_file() {
    for (name, text, key) in [
        ("badworkers", r#"{"workers": 0}"#, "workers"),
        ("badport", r#"{"port": "eighty"}"#, "port"),
        ("badtimeout", r#"{"node-timeout": true}"#, "node-timeout"),
    ] {
        let file = TempFile::new(name, text);
        let err = load(&[], &[("GATEWAY_CONFIG", file.path())]).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{message}");
        assert!(message.contains(key), "{message}");
        assert!(message.contains(file.path()), "{message}");
    }
    let err = load(&[], &[("GATEWAY_CONFIG", "/no/such/gateway.json")]).unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err}");
}

#[test]
fn workers_and_max_body_bytes_follow_flags_then_environment_then_file() {
    let file = TempFile::new("precedence", r#"{"workers": 2, "max_body_bytes": 4096}"#);
    let config = |args: &[&str], env: &[(&str, &str)]| {
        let mut env = env.to_vec();
        env.push(("GATEWAY_CONFIG", file.path()));
        let config = load(args, &env).unwrap();
        (config.workers, config.max_body_bytes)
    };
    assert_eq!(config(&[], &[]), (2, 4096));
    let env = [("GATEWAY_WORKERS", "3"), ("GATEWAY_MAX_BODY_BYTES", "8192")];
    assert_eq!(config(&[], &env), (3, 8192));
    let flags = ["--workers", "4", "--max-body-bytes", "16384"];
    assert_eq!(config(&flags, &env), (4, 16384));
    assert_eq!(config(&["--workers", "4"], &env), (4, 8192));
}

#[test]
fn flags_beat_environment() {
    let config = load(
        &["--port", "9000"],
        &[("GATEWAY_PORT", "9100"), ("GATEWAY_HOST", "127.0.0.1")],
    )
    .unwrap();
    assert_eq!(config.port, 9000);
    assert_eq!(config.host, "127.0.0.1");
}

#[test]
fn a_bad_value_names_its_source() {
    let err = load(&[], &[("GATEWAY_PORT", "eighty")]).unwrap_err();
    assert!(err.to_string().contains("GATEWAY_PORT"), "{err}");
    let err = load(&["--node-timeout", "-1"], &[]).unwrap_err();
    assert!(err.to_string().contains("--node-timeout"), "{err}");
    let err = load(&["--log-level", "LOUD"], &[]).unwrap_err();
    assert!(err.to_string().contains("--log-level"), "{err}");
}

#[test]
fn store_etcd_takes_endpoints_and_refuses_a_data_dir() {
    let config = load(&[], &[]).unwrap();
    assert_eq!(
        (config.store, config.etcd_endpoints.len()),
        (StoreKind::Memory, 0)
    );
    let config = load(&["--store", "etcd"], &[]).unwrap();
    assert_eq!(config.store, StoreKind::Etcd);
    assert_eq!(config.etcd_endpoints, [DEFAULT_ETCD_ENDPOINT]);
    let env = [
        ("GATEWAY_STORE", "etcd"),
        (
            "GATEWAY_ETCD_ENDPOINTS",
            "http://10.0.0.1:2379/, http://[::1]:2379",
        ),
    ];
    let config = load(&[], &env).unwrap();
    assert_eq!(
        config.etcd_endpoints,
        ["http://10.0.0.1:2379", "http://[::1]:2379"]
    );
    let file = TempFile::new(
        "store",
        r#"{"store": "etcd", "etcd-endpoints": "http://a:1"}"#,
    );
    let config = load(&[], &[("GATEWAY_CONFIG", file.path())]).unwrap();
    assert_eq!(
        (config.store, &config.etcd_endpoints[..]),
        (StoreKind::Etcd, &["http://a:1".to_owned()][..])
    );

    let err = load(&["--store", "etcd", "--data-dir", "/tmp/x"], &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Inconsistent(_)), "{err}");
    assert!(err.to_string().contains("--data-dir"), "{err}");
    let err = load(&["--etcd-endpoints", "http://a:1"], &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Inconsistent(_)), "{err}");
    for bad in [
        "https://a:1",
        "a:1",
        "http://a",
        "http://a:port",
        "http://a:1/v3",
        ",",
    ] {
        let err = load(&["--store", "etcd", "--etcd-endpoints", bad], &[]).unwrap_err();
        assert!(err.to_string().contains("--etcd-endpoints"), "{bad}: {err}");
    }
    let err = load(&["--store", "disk"], &[]).unwrap_err();
    assert!(err.to_string().contains("--store"), "{err}");
}

/// The original's example server configuration (`gateway_config.py`), as shipped.
const ORIGINAL_EXAMPLE: &str = r#"{ "host": "0.0.0.0", "port": 8080, "node_timeout": 300.0,
    "heartbeat_interval": 30.0, "cleanup_interval": 60.0, "request_timeout": 30.0,
    "max_connections": 100, "log_level": "INFO",
    "log_format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s" }"#;

#[test]
fn the_originals_example_config_loads_with_each_key_mapped_or_reported() {
    let file = TempFile::new("original", ORIGINAL_EXAMPLE);
    let config = load(&["--config", file.path()], &[]).unwrap();
    assert_eq!((config.host.as_str(), config.port), ("0.0.0.0", 8080));
    assert_eq!(config.liveness.node_timeout, Duration::from_secs(300));
    assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(config.cleanup_interval, Some(Duration::from_secs(60)));
    assert_eq!(config.sweep_interval(), Duration::from_secs(60));
    assert_eq!(config.body_timeout, Duration::from_secs(30));
    assert_eq!(config.log_level, LevelFilter::Info);
    // The keys not applied, one message each, naming the key, the file and why.
    assert_eq!(config.not_applied.len(), 2, "{:#?}", config.not_applied);
    for (message, key, why) in [
        (
            &config.not_applied[0],
            "max_connections",
            "connection limit",
        ),
        (&config.not_applied[1], "log_format", "its own line"),
    ] {
        assert!(
            message.contains(&format!("{key} in {}", file.path())),
            "{message}"
        );
        assert!(message.contains(why), "{message}");
    }
    assert!(config.summary().contains("cleanup_interval 60s"));
    assert!(config.summary().contains("body_timeout 30s"));
}

/// Loads `key: value` from a file, then `GATEWAY_KEY=value` from the environment.
fn file_and_env(key: &str, value: &str) -> [Result<ServerConfig, ConfigError>; 2] {
    let json = serde_json::json!({ key: value }).to_string();
    let file = TempFile::new(&format!("one-{key}"), &json);
    let from_file = load(&["--config", file.path()], &[]);
    let name = format!("GATEWAY_{}", key.to_uppercase());
    let from_env = load(&[], &[(name.as_str(), value)]);
    [from_file, from_env]
}

#[test]
fn each_key_of_the_original_means_the_same_in_the_file_and_the_environment() {
    type Applied = fn(&ServerConfig) -> bool;
    let check: [(&str, &str, Applied); 9] = [
        ("host", "127.0.0.5", |c| c.host == "127.0.0.5"),
        ("port", "9090", |c| c.port == 9090),
        ("node_timeout", "120.5", |c| {
            c.liveness.node_timeout == Duration::from_secs_f64(120.5)
        }),
        ("heartbeat_interval", "10", |c| {
            c.heartbeat_interval == Duration::from_secs(10) && c.cleanup_interval.is_none()
        }),
        ("cleanup_interval", "45.0", |c| {
            c.sweep_interval() == Duration::from_secs(45)
                && c.heartbeat_interval == Duration::from_secs(30)
        }),
        ("request_timeout", "12", |c| {
            c.body_timeout == Duration::from_secs(12)
        }),
        ("max_connections", "100", |c| {
            c.not_applied.len() == 1 && c.not_applied[0].contains("max_connections")
        }),
        ("log_level", "WARNING", |c| c.log_level == LevelFilter::Warn),
        ("log_format", "%(message)s", |c| {
            c.not_applied.len() == 1 && c.not_applied[0].contains("log_format")
        }),
    ];
    for (key, value, applied) in check {
        let [from_file, from_env] = file_and_env(key, value);
        let (from_file, from_env) = (from_file.unwrap(), from_env.unwrap());
        assert!(applied(&from_file), "{key} in a file: {from_file:#?}");
        assert!(applied(&from_env), "GATEWAY_{key}: {from_env:#?}");
        let default = ServerConfig::default();
        assert_ne!(from_file, default, "{key} in a file changed nothing");
        let same = |c: ServerConfig| ServerConfig {
            not_applied: Vec::new(),
            ..c
        };
        assert_eq!(same(from_file), same(from_env), "{key}");
    }
}

#[test]
fn a_bad_value_of_an_originals_key_names_the_key_and_its_source_in_both() {
    for (key, bad) in [
        ("cleanup_interval", "soon"),
        ("cleanup_interval", "0"),
        ("request_timeout", "-1"),
        ("max_connections", "many"),
        ("max_connections", "0"),
        ("max_connections", "1.5"),
        ("node_timeout", "nan"),
    ] {
        let [from_file, from_env] = file_and_env(key, bad);
        let env_name = format!("GATEWAY_{}", key.to_uppercase());
        for (err, source) in [(from_file, key), (from_env, env_name.as_str())] {
            let err = err.expect_err(&format!("{source}={bad} was accepted"));
            assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
            assert!(err.to_string().contains(source), "{err}");
        }
    }
}

#[test]
fn numbers_parse_as_the_original_parsed_them() {
    // float(): "30" and "30.0"; int(): "100", with spaces around.
    for text in ["30", "30.0", " 30 "] {
        let config = load(&[], &[("GATEWAY_CLEANUP_INTERVAL", text)]).unwrap();
        assert_eq!(config.sweep_interval(), Duration::from_secs(30), "{text}");
        let config = load(&[], &[("GATEWAY_REQUEST_TIMEOUT", text)]).unwrap();
        assert_eq!(config.body_timeout, Duration::from_secs(30), "{text}");
    }
    let file = TempFile::new("floats", r#"{"port": 8081, "cleanup_interval": 2.5}"#);
    let config = load(&["--config", file.path()], &[]).unwrap();
    assert_eq!(config.sweep_interval(), Duration::from_millis(2500));
    assert!(load(&[], &[("GATEWAY_MAX_CONNECTIONS", " 100 ")]).is_ok());
}

#[test]
fn cleanup_interval_sets_the_sweep_apart_from_the_advertised_heartbeat() {
    let config = load(&["--heartbeat-interval", "5"], &[]).unwrap();
    assert_eq!(config.sweep_interval(), Duration::from_secs(5));
    assert!(config.summary().contains("cleanup_interval 5s"));
    let env = [("GATEWAY_CLEANUP_INTERVAL", "60")];
    let config = load(&["--heartbeat-interval", "5"], &env).unwrap();
    assert_eq!(config.heartbeat_interval, Duration::from_secs(5));
    assert_eq!(config.sweep_interval(), Duration::from_secs(60));
    let config = load(&["--cleanup-interval", "0.5"], &env).unwrap();
    assert_eq!(config.sweep_interval(), Duration::from_millis(500));
    let err = load(&["--cleanup-interval", "never"], &[]).unwrap_err();
    assert!(err.to_string().contains("--cleanup-interval"), "{err}");
}

#[test]
fn request_timeout_is_body_timeout_under_the_originals_name() {
    // Across layers, the later layer wins whichever name it uses.
    let file = TempFile::new("bodytimeout", r#"{"body_timeout": 7}"#);
    let env = [("GATEWAY_REQUEST_TIMEOUT", "9")];
    let config = load(&["--config", file.path()], &env).unwrap();
    assert_eq!(config.body_timeout, Duration::from_secs(9));
    let config = load(&["--config", file.path(), "--body-timeout", "3"], &env).unwrap();
    assert_eq!(config.body_timeout, Duration::from_secs(3));
    // In one layer, both names with one value are fine; two values are refused.
    let both = [
        ("GATEWAY_REQUEST_TIMEOUT", "9"),
        ("GATEWAY_BODY_TIMEOUT", "9.0"),
    ];
    assert_eq!(
        load(&[], &both).unwrap().body_timeout,
        Duration::from_secs(9)
    );
    let both = [
        ("GATEWAY_REQUEST_TIMEOUT", "9"),
        ("GATEWAY_BODY_TIMEOUT", "4"),
    ];
    let err = load(&[], &both).unwrap_err();
    assert!(matches!(err, ConfigError::Inconsistent(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("GATEWAY_REQUEST_TIMEOUT") && message.contains("GATEWAY_BODY_TIMEOUT")
    );
    let file = TempFile::new(
        "bothtimeouts",
        r#"{"request_timeout": 30, "body-timeout": 5}"#,
    );
    let err = load(&["--config", file.path()], &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Inconsistent(_)), "{err}");
    assert!(err.to_string().contains(file.path()), "{err}");
}

#[test]
fn a_key_not_applied_is_reported_once_from_the_source_that_won() {
    let file = TempFile::new("twice", r#"{"max_connections": 100}"#);
    let env = [("GATEWAY_MAX_CONNECTIONS", "200")];
    let config = load(&["--config", file.path()], &env).unwrap();
    assert_eq!(config.not_applied.len(), 1, "{:#?}", config.not_applied);
    assert!(
        config.not_applied[0].starts_with("max_connections (GATEWAY_MAX_CONNECTIONS) "),
        "{:#?}",
        config.not_applied
    );
    assert!(load(&[], &[]).unwrap().not_applied.is_empty());
}

#[test]
fn python_log_level_names_are_accepted() {
    assert_eq!(log_level("WARNING"), Ok(LevelFilter::Warn));
    assert_eq!(log_level("critical"), Ok(LevelFilter::Error));
}

#[test]
fn suspect_after_follows_the_heartbeat_and_must_fit() {
    let config = load(&["--heartbeat-interval", "1", "--node-timeout", "10"], &[]).unwrap();
    assert_eq!(config.liveness.suspect_after, Duration::from_secs(3));
    let config = load(&["--heartbeat-interval", "30", "--node-timeout", "60"], &[]).unwrap();
    assert_eq!(config.liveness.suspect_after, Duration::from_secs(45));
    let err = load(&["--suspect-after", "400"], &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Inconsistent(_)), "{err}");
    let err = load(&["--heartbeat-interval", "300"], &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Inconsistent(_)), "{err}");
}

#[test]
fn a_period_too_short_to_sleep_on_or_too_long_is_refused_in_every_source() {
    // Each of these would pass a "positive number" check; 1e-300 s is zero nanoseconds,
    // and a sweep every zero (or every microsecond) spins an idle gateway.
    for bad in [
        "1e-300", "0.000001", "0.009", "1e10", "1e308", "NaN", "inf", "-0",
    ] {
        for key in [
            "cleanup_interval",
            "heartbeat_interval",
            "node_timeout",
            "suspect_after",
            "body_timeout",
            "request_timeout",
        ] {
            let [from_file, from_env] = file_and_env(key, bad);
            for err in [from_file, from_env] {
                let err = err.expect_err(&format!("{key}={bad} was accepted"));
                assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
                assert!(err.to_string().contains("0.01"), "{err}");
            }
        }
        let flag = load(&["--cleanup-interval", bad], &[]).unwrap_err();
        assert!(flag.to_string().contains("--cleanup-interval"), "{flag}");
    }
    // The floor itself is allowed.
    let config = load(&["--cleanup-interval", "0.01"], &[]).unwrap();
    assert_eq!(config.sweep_interval(), Duration::from_millis(10));
}

#[test]
fn a_config_file_that_is_not_a_small_file_is_refused_without_reading_it_all() {
    let big = TempFile::new("big", &format!("{{\"host\": \"{}\"}}", "a".repeat(2 << 20)));
    let err = load(&["--config", big.path()], &[]).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    // /dev/zero never ends: read whole, it would fill the memory (checked after the big
    // file, so that without the bound this test fails there instead).
    let err = load(&["--config", "/dev/zero"], &[]).unwrap_err();
    assert!(
        matches!(err, ConfigError::File { .. }) && err.to_string().contains("larger than"),
        "{err}"
    );
    let dir = std::env::temp_dir();
    let err = load(&["--config", dir.to_str().unwrap()], &[]).unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }), "{err}");
    let deep = TempFile::new(
        "deep",
        &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
    );
    let err = load(&["--config", deep.path()], &[]).unwrap_err();
    assert!(err.to_string().contains("invalid JSON"), "{err}");
    let binary = dir.join(format!("gateway-config-{}-binary.json", std::process::id()));
    std::fs::write(&binary, b"{\"host\": \"\xff\"}").unwrap();
    let err = load(&["--config", binary.to_str().unwrap()], &[]).unwrap_err();
    let _ = std::fs::remove_file(&binary);
    assert!(err.to_string().contains("UTF-8"), "{err}");
}

#[test]
fn a_key_given_twice_in_the_file_with_a_dash_and_an_underscore_is_refused() {
    let file = TempFile::new("twice", r#"{"node-timeout": 60, "node_timeout": 600}"#);
    let err = load(&["--config", file.path()], &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("node-timeout") && text.contains("node_timeout"),
        "{text}"
    );
}

#[test]
fn a_key_set_to_null_counts_as_absent_as_in_the_clients_file() {
    let file = TempFile::new("null", r#"{"cleanup_interval": null, "port": 9091}"#);
    let config = load(&["--config", file.path()], &[]).unwrap();
    assert_eq!(config.cleanup_interval, None);
    assert_eq!(config.port, 9091);
}

#[test]
fn a_host_with_a_scheme_or_a_port_is_refused_and_ipv6_is_a_host() {
    for bad in ["0.0.0.0:8080", "http://localhost", "localhost:80"] {
        let err = load(&["--host", bad], &[]).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { .. }) && err.to_string().contains("--host"),
            "{err}"
        );
        let err = load(&[], &[("GATEWAY_HOST", bad)]).unwrap_err();
        assert!(err.to_string().contains("GATEWAY_HOST"), "{err}");
    }
    for good in ["::", "::1", "[::1]", "0.0.0.0", "localhost"] {
        assert_eq!(load(&["--host", good], &[]).unwrap().host, good);
    }
}

#[test]
fn log_format_is_text_by_default_and_json_from_a_flag_the_environment_or_a_file() {
    assert_eq!(load(&[], &[]).unwrap().log_format, LogFormat::Text);
    assert_eq!(
        load(&["--log-format", "json"], &[]).unwrap().log_format,
        LogFormat::Json
    );
    assert_eq!(
        load(&[], &[("GATEWAY_LOG_FORMAT", "JSON")])
            .unwrap()
            .log_format,
        LogFormat::Json
    );
    let file = TempFile::new("log-format-json", r#"{"log_format": "json"}"#);
    let config = load(&["--config", file.path()], &[]).unwrap();
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(config.not_applied.is_empty(), "{:#?}", config.not_applied);
    assert!(
        config.summary().contains("log_format json"),
        "{}",
        config.summary()
    );
    // The flag beats the variable.
    assert_eq!(
        load(&["--log-format", "text"], &[("GATEWAY_LOG_FORMAT", "json")])
            .unwrap()
            .log_format,
        LogFormat::Text
    );
}

#[test]
fn a_log_format_that_is_neither_text_json_nor_pythons_is_refused() {
    let err = load(&["--log-format", "xml"], &[]).unwrap_err();
    assert!(
        err.to_string().contains("--log-format") && err.to_string().contains("text or json"),
        "{err}"
    );
    let err = load(&[], &[("GATEWAY_LOG_FORMAT", "")]).unwrap_err();
    assert!(err.to_string().contains("GATEWAY_LOG_FORMAT"), "{err}");
}

#[test]
fn the_originals_python_log_format_is_not_applied_unless_a_later_layer_names_a_format() {
    let file = TempFile::new("log-format-python", ORIGINAL_EXAMPLE);
    let config = load(
        &["--config", file.path()],
        &[("GATEWAY_LOG_FORMAT", "json")],
    )
    .unwrap();
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(
        config.not_applied.iter().all(|m| !m.contains("log_format")),
        "{:#?}",
        config.not_applied
    );
    let config = load(&["--config", file.path()], &[]).unwrap();
    assert_eq!(config.log_format, LogFormat::Text);
}

#[test]
fn max_registry_bytes_merges_like_the_others_and_stays_within_what_a_client_reads() {
    assert_eq!(
        load(&[], &[]).unwrap().max_registry_bytes,
        DEFAULT_MAX_REGISTRY_BYTES
    );
    let file = TempFile::new("budget", r#"{"max_registry_bytes": 1000000}"#);
    let config = load(&["--config", file.path()], &[]).unwrap();
    assert_eq!(config.max_registry_bytes, 1_000_000);
    let env = [("GATEWAY_MAX_REGISTRY_BYTES", "2000000")];
    assert_eq!(
        load(&["--config", file.path()], &env)
            .unwrap()
            .max_registry_bytes,
        2_000_000
    );
    let flag = ["--max-registry-bytes", "3000000"];
    assert_eq!(load(&flag, &env).unwrap().max_registry_bytes, 3_000_000);
    // The largest list a budget admits, with what an answer adds, is within the client's
    // answer limit: a larger budget is refused, naming its source.
    let most = crate::api::limits::REGISTRY_BYTES;
    assert!(most + crate::api::limits::ANSWER_MARGIN_BYTES <= crate::api::limits::ANSWER_BYTES);
    let at_most = most.to_string();
    assert_eq!(
        load(&["--max-registry-bytes", &at_most], &[])
            .unwrap()
            .max_registry_bytes,
        most
    );
    let past = (most + 1).to_string();
    let refused = load(&["--max-registry-bytes", &past], &[]).unwrap_err();
    assert!(
        refused.to_string().contains("--max-registry-bytes"),
        "{refused}"
    );
    assert!(load(&[], &[("GATEWAY_MAX_REGISTRY_BYTES", "1000")]).is_err());
}
