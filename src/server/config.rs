//! Server configuration: defaults, a JSON file, environment variables and flags, merged in one
//! place ([`ServerConfig::load`]). Flags beat environment beat file beat defaults.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;
use log::LevelFilter;
use serde_json::{Map, Value};

use crate::files::read_small_text;
use crate::logger::LogFormat;
use crate::server::access::TrustedProxies;
use crate::server::auth::{Secret, TokenSource};
use crate::server::registry::Liveness;

/// Everything the server needs to run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    pub port: u16,
    /// Threads that handle requests.
    pub workers: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive, from the end of its headers.
    pub body_timeout: Duration,
    /// The interval clients are told to beat at; also the time between reaper sweeps unless
    /// `cleanup_interval` is set.
    pub heartbeat_interval: Duration,
    /// Time between reaper sweeps, which suspect and remove silent nodes (the original's
    /// `cleanup_interval`); `None`: every `heartbeat_interval`. See [`ServerConfig::sweep_interval`].
    pub cleanup_interval: Option<Duration>,
    /// When silent nodes are suspected and reaped.
    pub liveness: Liveness,
    /// How much to log.
    pub log_level: LevelFilter,
    /// How log lines are laid out: text (the default) or JSON.
    pub log_format: LogFormat,
    /// Where the registry is kept across restarts; `None`: in memory only.
    pub data_dir: Option<PathBuf>,
    /// Most nodes the registry holds; a new node past it is refused.
    pub max_nodes: usize,
    /// The registry's memory budget: the most bytes its nodes may take as a list writes them
    /// (see `registry::node_bytes`); a registration past it is refused with 507. At most
    /// [`crate::api::limits::REGISTRY_BYTES`], so every list fits a client's answer limit.
    /// Not applied with `--store etcd`.
    pub max_registry_bytes: u64,
    /// Where the registry lives: this process (memory, or `data_dir`) or etcd.
    pub store: StoreKind,
    /// The etcd members, `http://host:port` each, for [`StoreKind::Etcd`].
    pub etcd_endpoints: Vec<String>,
    /// Most long-poll requests parked at once, and most event streams open (each its own
    /// count); past it, they are answered at once.
    pub max_watchers: usize,
    /// Where the bearer tokens come from; none at all: the gateway is open.
    pub tokens: TokenSource,
    /// `/health` needs a read token too (when tokens are configured).
    pub protect_health: bool,
    /// One log line for every request answered (target `access`, at INFO).
    pub access_log: bool,
    /// The peers (a front proxy) whose `X-Forwarded-For` names the client in the access log.
    pub trusted_proxies: TrustedProxies,
    /// Settings of the original's configuration that were accepted but are not applied here
    /// (`max_connections`, `log_format`), one message each naming the setting, where it came
    /// from and why: `gateway-server` logs each at WARNING when it starts.
    pub not_applied: Vec<String>,
}

/// Where the registry lives (`--store`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// In this process: in memory, or in `--data-dir`.
    #[default]
    Memory,
    /// In etcd, shared by every gateway that names the same members.
    Etcd,
}

/// The default `--max-registry-bytes`: 128 MiB, half of what a client reads in one answer
/// (more than `--max-nodes` small nodes take, about 210 bytes each as a list; about 5,400
/// nodes at the per-node limits).
pub const DEFAULT_MAX_REGISTRY_BYTES: u64 = 128 * 1024 * 1024;

/// The etcd member `--store etcd` uses when `--etcd-endpoints` is not given.
pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            host: "0.0.0.0".to_owned(),
            port: 8080,
            workers: 8,
            max_body_bytes: 64 * 1024,
            body_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(30),
            cleanup_interval: None,
            liveness: Liveness::default(),
            log_level: LevelFilter::Info,
            log_format: LogFormat::Text,
            data_dir: None,
            max_nodes: 200_000,
            max_registry_bytes: DEFAULT_MAX_REGISTRY_BYTES,
            store: StoreKind::Memory,
            etcd_endpoints: Vec::new(),
            max_watchers: crate::server::long_polls::DEFAULT_MAX_WATCHERS,
            tokens: TokenSource::default(),
            protect_health: false,
            access_log: false,
            trusted_proxies: TrustedProxies::default(),
            not_applied: Vec::new(),
        }
    }
}

/// Run the cluster-gateway discovery server.
#[derive(Debug, Default, FromArgs, PartialEq)]
#[argh(
    help_triggers("-h", "--help"),
    note = "A flag beats its variable, which beats --config's file, which beats the default. \
            Seconds are from 0.01 to 1e9. The original's keys load too, in the file and as \
            variables: cleanup_interval, request_timeout (GATEWAY_CLEANUP_INTERVAL, \
            GATEWAY_REQUEST_TIMEOUT); max_connections (GATEWAY_MAX_CONNECTIONS), and a log_format \
            that is a Python logging format, are checked and not applied, with a WARNING at \
            start. SIGINT and SIGTERM stop the server (exit 0).",
    error_code(
        1,
        "the server cannot start (it cannot listen, or use its token file, data directory \
         or etcd), or its listening socket is gone for good"
    ),
    error_code(
        2,
        "bad usage: a flag, a variable or a config file that does not make sense (named)"
    )
)]
pub struct ServerArgs {
    /// address to listen on (default 0.0.0.0; env GATEWAY_HOST)
    #[argh(option)]
    pub host: Option<String>,
    /// port to listen on, 0 for any free port (default 8080; env GATEWAY_PORT)
    #[argh(option)]
    pub port: Option<String>,
    /// seconds of silence before a node is removed (default 300; env GATEWAY_NODE_TIMEOUT)
    #[argh(option)]
    pub node_timeout: Option<String>,
    /// seconds nodes are told to beat at, and between reaper sweeps unless --cleanup-interval
    /// (default 30; env GATEWAY_HEARTBEAT_INTERVAL)
    #[argh(option)]
    pub heartbeat_interval: Option<String>,
    /// seconds between reaper sweeps, which suspect and remove silent nodes (default: the
    /// heartbeat interval; env GATEWAY_CLEANUP_INTERVAL)
    #[argh(option)]
    pub cleanup_interval: Option<String>,
    /// seconds of silence before a node is suspected (default 3 x heartbeat interval; env
    /// GATEWAY_SUSPECT_AFTER)
    #[argh(option)]
    pub suspect_after: Option<String>,
    /// request-handling threads (default 8; env GATEWAY_WORKERS)
    #[argh(option)]
    pub workers: Option<String>,
    /// largest request body in bytes (default 65536; env GATEWAY_MAX_BODY_BYTES)
    #[argh(option)]
    pub max_body_bytes: Option<String>,
    /// seconds a request body may take to arrive (default 5; env GATEWAY_BODY_TIMEOUT, or
    /// GATEWAY_REQUEST_TIMEOUT as the original named it)
    #[argh(option)]
    pub body_timeout: Option<String>,
    /// DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO; env GATEWAY_LOG_LEVEL)
    #[argh(option)]
    pub log_level: Option<String>,
    /// text (default) or json: one JSON object a line with ts, level, target and msg (env
    /// GATEWAY_LOG_FORMAT)
    #[argh(option)]
    pub log_format: Option<String>,
    /// directory that keeps the registry across restarts (default: none, in memory; env
    /// GATEWAY_DATA_DIR)
    #[argh(option)]
    pub data_dir: Option<String>,
    /// most nodes the registry holds (default 200000; env GATEWAY_MAX_NODES)
    #[argh(option)]
    pub max_nodes: Option<String>,
    /// most bytes the registry's nodes may take as a list writes them; a registration past it
    /// gets 507 (default 134217728, at most 267386880; not applied with --store etcd; env
    /// GATEWAY_MAX_REGISTRY_BYTES)
    #[argh(option)]
    pub max_registry_bytes: Option<String>,
    /// where the registry lives: memory (default; with --data-dir, on disk) or etcd (env
    /// GATEWAY_STORE)
    #[argh(option)]
    pub store: Option<String>,
    /// etcd members for --store etcd, comma-separated (default http://127.0.0.1:2379; env
    /// GATEWAY_ETCD_ENDPOINTS)
    #[argh(option)]
    pub etcd_endpoints: Option<String>,
    /// most long-poll requests waiting at once, and most event streams open; past it they are
    /// answered at once (default 10000; env GATEWAY_MAX_WATCHERS)
    #[argh(option)]
    pub max_watchers: Option<String>,
    /// file of bearer tokens, one role:name:token a line, roles read, node=IDS and write
    /// (default: none, the gateway is open; env GATEWAY_TOKEN_FILE; GATEWAY_TOKENS holds the
    /// same lines)
    #[argh(option)]
    pub token_file: Option<String>,
    /// GET /health needs a read token too (default: open for load-balancer probes; env
    /// GATEWAY_PROTECT_HEALTH=true)
    #[argh(switch)]
    pub protect_health: bool,
    /// log one line for every request answered: peer, method, path, status, time (default:
    /// off; env GATEWAY_ACCESS_LOG=true)
    #[argh(switch)]
    pub access_log: bool,
    /// addresses or ranges of the front proxies whose X-Forwarded-For names the client in the
    /// access log, comma-separated (default: none, the header is ignored; env
    /// GATEWAY_TRUSTED_PROXY)
    #[argh(option)]
    pub trusted_proxy: Option<String>,
    /// JSON file with the same keys as the flags, or the original's (env GATEWAY_CONFIG)
    #[argh(option)]
    pub config: Option<PathBuf>,
}

/// The settings a file or the environment may hold (`GATEWAY_` and the key in capitals).
///
/// Four come from the original's configuration (`gateway_config.py`): `cleanup_interval` is the
/// sweep period (a flag of its own), `request_timeout` is `body_timeout` under the original's
/// name, `max_connections` is checked as the original parsed it, then not applied (see
/// [`NOT_APPLIED`]), and `log_format` is `text` or `json`, or the original's Python logging
/// format, accepted and not applied.
const KEYS: [&str; 23] = [
    "host",
    "port",
    "node_timeout",
    "heartbeat_interval",
    "cleanup_interval",
    "suspect_after",
    "workers",
    "max_body_bytes",
    "request_timeout",
    "body_timeout",
    "log_level",
    "data_dir",
    "max_nodes",
    "max_registry_bytes",
    "store",
    "etcd_endpoints",
    "max_watchers",
    "token_file",
    "protect_health",
    "access_log",
    "trusted_proxy",
    "max_connections",
    "log_format",
];

/// The original's settings that the gateway accepts and does not apply, and why: what an
/// operator reads in the WARNING at start.
const NOT_APPLIED: [(&str, &str); 2] = [
    (
        "max_connections",
        "the gateway has no connection limit of its own (tiny_http takes every connection, \
         a thread each); bound connections in the front proxy (limit_conn in \
         scripts/deploy/nginx.conf), and the request-handling threads with --workers",
    ),
    (
        "log_format",
        "a Python logging format: the gateway writes its own line, `<UTC time> <LEVEL> \
         <target>: <message>` (the fields of the original's default format, in a fixed \
         layout), or a JSON object a line with log_format json",
    ),
];

/// A setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    Invalid {
        /// Where it came from, e.g. `--port` or `GATEWAY_PORT`.
        source: String,
        /// What is wrong.
        reason: String,
    },
    /// A key the config file should not have.
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
    },
    /// The config file could not be read or is not a JSON object.
    File {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Settings that each parse but do not fit together.
    Inconsistent(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Invalid { source, reason } => write!(f, "invalid {source}: {reason}"),
            ConfigError::UnknownKey { file, key } => {
                write!(f, "unknown key {key:?} in {}", file.display())
            }
            ConfigError::File { file, reason } => {
                write!(f, "cannot use config file {}: {reason}", file.display())
            }
            ConfigError::Inconsistent(reason) => write!(f, "inconsistent settings: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// One layer of settings (file, environment or flags): each value as text, with its source.
type Layer = Vec<(&'static str, String, String)>;

impl ServerConfig {
    /// The default settings, listening on `host:port` (port 0: any free port). Every other
    /// field is public: set it after this, or start from [`ServerConfig::default`].
    ///
    /// ```
    /// use cluster_gateway::ServerConfig;
    ///
    /// let mut config = ServerConfig::new("127.0.0.1", 0);
    /// config.workers = 4;
    /// assert_eq!(config.max_nodes, ServerConfig::default().max_nodes);
    /// ```
    pub fn new(host: impl Into<String>, port: u16) -> ServerConfig {
        ServerConfig {
            host: host.into(),
            port,
            ..ServerConfig::default()
        }
    }

    /// Merges defaults, the config file, the environment (read through `env`) and the flags.
    pub fn load(
        args: &ServerArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ServerConfig, ConfigError> {
        let flags: Layer = [
            ("host", &args.host),
            ("port", &args.port),
            ("node_timeout", &args.node_timeout),
            ("heartbeat_interval", &args.heartbeat_interval),
            ("cleanup_interval", &args.cleanup_interval),
            ("suspect_after", &args.suspect_after),
            ("workers", &args.workers),
            ("max_body_bytes", &args.max_body_bytes),
            ("body_timeout", &args.body_timeout),
            ("log_level", &args.log_level),
            ("log_format", &args.log_format),
            ("data_dir", &args.data_dir),
            ("max_nodes", &args.max_nodes),
            ("max_registry_bytes", &args.max_registry_bytes),
            ("store", &args.store),
            ("etcd_endpoints", &args.etcd_endpoints),
            ("max_watchers", &args.max_watchers),
            ("token_file", &args.token_file),
            (
                "protect_health",
                &args.protect_health.then(|| "true".to_owned()),
            ),
            ("access_log", &args.access_log.then(|| "true".to_owned())),
            ("trusted_proxy", &args.trusted_proxy),
        ]
        .into_iter()
        .filter_map(|(key, value)| {
            let value = value.clone()?;
            Some((key, format!("--{}", key.replace('_', "-")), value))
        })
        .collect();
        let environment: Layer = KEYS
            .iter()
            .filter_map(|&key| {
                let name = format!("GATEWAY_{}", key.to_uppercase());
                env(&name).map(|value| (key, name, value))
            })
            .collect();
        let file_path = args
            .config
            .clone()
            .or_else(|| env("GATEWAY_CONFIG").map(PathBuf::from));
        let file = match &file_path {
            Some(path) => read_file(path)?,
            None => Vec::new(),
        };
        for layer in [&file, &environment] {
            same_timeout_under_both_names(layer)?;
        }

        let mut config = ServerConfig::default();
        let mut suspect_after = None;
        // Where the original's Python logging format came from, while it is the value in force.
        let mut python_log_format = None;
        // Later layers win.
        for (key, source, value) in file.iter().chain(&environment).chain(&flags) {
            let invalid = |reason: String| ConfigError::Invalid {
                source: source.clone(),
                reason,
            };
            match *key {
                "host" if value.trim().is_empty() => {
                    return Err(invalid("must not be empty".to_owned()));
                }
                "host" => config.host = listen_host(value.trim()).map_err(invalid)?,
                "port" => config.port = parse_int(value, 0, 65535).map_err(invalid)? as u16,
                "node_timeout" => config.liveness.node_timeout = seconds(value).map_err(invalid)?,
                "heartbeat_interval" => {
                    config.heartbeat_interval = seconds(value).map_err(invalid)?
                }
                "cleanup_interval" => {
                    config.cleanup_interval = Some(seconds(value).map_err(invalid)?)
                }
                "suspect_after" => suspect_after = Some(seconds(value).map_err(invalid)?),
                "workers" => config.workers = parse_int(value, 1, 1024).map_err(invalid)? as usize,
                "max_body_bytes" => {
                    config.max_body_bytes =
                        parse_int(value, 1024, 64 * 1024 * 1024).map_err(invalid)? as usize
                }
                "body_timeout" | "request_timeout" => {
                    config.body_timeout = seconds(value).map_err(invalid)?
                }
                "log_level" => config.log_level = log_level(value).map_err(invalid)?,
                "data_dir" if value.trim().is_empty() => {
                    return Err(invalid("must not be empty".to_owned()));
                }
                "data_dir" => config.data_dir = Some(PathBuf::from(value)),
                "max_nodes" => {
                    config.max_nodes = parse_int(value, 1, 100_000_000).map_err(invalid)? as usize
                }
                "max_registry_bytes" => {
                    config.max_registry_bytes =
                        parse_int(value, 64 * 1024, crate::api::limits::REGISTRY_BYTES)
                            .map_err(invalid)?
                }
                "store" => config.store = store_kind(value).map_err(invalid)?,
                "etcd_endpoints" => config.etcd_endpoints = endpoints(value).map_err(invalid)?,
                "max_watchers" => {
                    config.max_watchers = parse_int(value, 0, 1_000_000).map_err(invalid)? as usize
                }
                "token_file" if value.trim().is_empty() => {
                    return Err(invalid("must not be empty".to_owned()));
                }
                "token_file" => config.tokens.file = Some(PathBuf::from(value)),
                "protect_health" => config.protect_health = boolean(value).map_err(invalid)?,
                "access_log" => config.access_log = boolean(value).map_err(invalid)?,
                "trusted_proxy" => {
                    config.trusted_proxies = TrustedProxies::parse(value).map_err(invalid)?
                }
                // As the original's int(): a whole number, then not applied.
                "max_connections" => {
                    parse_int(value, 1, u64::from(u32::MAX)).map_err(invalid)?;
                }
                "log_format" => match LogFormat::parse(value) {
                    Some(format) => {
                        config.log_format = format;
                        python_log_format = None;
                    }
                    // The original applied no check to its format: `%(message)s` and the like.
                    None if value.contains("%(") => {
                        config.log_format = LogFormat::Text;
                        python_log_format = Some(source.clone());
                    }
                    None => {
                        return Err(invalid(format!(
                            "expected text or json (or the original's Python logging format, \
                             such as %(message)s, which is not applied), got {value:?}"
                        )));
                    }
                },
                _ => unreachable!("only known keys reach here"),
            }
        }
        // One message a key, naming the source that won (the environment beats the file).
        config.not_applied = NOT_APPLIED
            .iter()
            .filter_map(|&(key, why)| {
                if key == "log_format" {
                    let source = python_log_format.as_ref()?;
                    let source = if source.starts_with("GATEWAY_") {
                        format!("{key} ({source})")
                    } else {
                        source.clone()
                    };
                    return Some(format!("{source} is accepted and not applied: {why}"));
                }
                let given = |layer: &Layer| layer.iter().rfind(|(k, ..)| *k == key).cloned();
                let source = match given(&environment) {
                    Some((_, name, _)) => format!("{key} ({name})"),
                    None => given(&file)?.1,
                };
                Some(format!("{source} is accepted and not applied: {why}"))
            })
            .collect();
        check_store(&mut config)?;
        // The tokens themselves only from the environment: never a flag (visible in `ps`).
        config.tokens.inline = env("GATEWAY_TOKENS").map(Secret::new);
        config.liveness.suspect_after = derive_suspect_after(
            suspect_after,
            config.heartbeat_interval,
            config.liveness.node_timeout,
        )?;
        Ok(config)
    }

    /// The effective settings in one line, for the log at start (no token is shown).
    pub fn summary(&self) -> String {
        let store = match (&self.store, &self.data_dir) {
            (StoreKind::Etcd, _) => format!("etcd at {}", self.etcd_endpoints.join(",")),
            (StoreKind::Memory, Some(dir)) => format!("data dir {}", dir.display()),
            (StoreKind::Memory, None) => "memory only".to_owned(),
        };
        let tokens = match (&self.tokens.file, self.tokens.inline.is_some()) {
            (Some(file), true) => format!("{} and GATEWAY_TOKENS", file.display()),
            (Some(file), false) => file.display().to_string(),
            (None, true) => "GATEWAY_TOKENS".to_owned(),
            (None, false) => "none (open)".to_owned(),
        };
        format!(
            "listen {}, heartbeat_interval {}s, cleanup_interval {}s, suspect_after {}s, \
             node_timeout {}s, store {store}, max_nodes {}, max_registry_bytes {}, workers {}, \
             max_body_bytes {}, \
             body_timeout {}s, max_watchers {}, tokens {tokens}{}, access log {}{}, log_level {}, log_format {}",
            self.bind_address(),
            self.heartbeat_interval.as_secs_f64(),
            self.sweep_interval().as_secs_f64(),
            self.liveness.suspect_after.as_secs_f64(),
            self.liveness.node_timeout.as_secs_f64(),
            self.max_nodes,
            self.max_registry_bytes,
            self.workers,
            self.max_body_bytes,
            self.body_timeout.as_secs_f64(),
            self.max_watchers,
            if self.protect_health {
                ", /health protected"
            } else {
                ""
            },
            if self.access_log { "on" } else { "off" },
            if self.trusted_proxies.is_empty() {
                String::new()
            } else {
                format!(" (trusted proxies {})", self.trusted_proxies)
            },
            match self.log_level {
                LevelFilter::Warn => "WARNING".to_owned(),
                level => level.to_string(),
            },
            match self.log_format {
                LogFormat::Json => "json",
                _ => "text",
            },
        )
    }

    /// The address to bind, `host:port`.
    pub fn bind_address(&self) -> String {
        crate::api::host_port(&self.host, self.port)
    }

    /// Time between reaper sweeps: `cleanup_interval`, or else `heartbeat_interval`.
    pub fn sweep_interval(&self) -> Duration {
        self.cleanup_interval.unwrap_or(self.heartbeat_interval)
    }
}

/// An address to listen on as given: a name or an IP address, without a scheme or a port
/// (`0.0.0.0:8080` would be joined into `[0.0.0.0:8080]:8080`, which names nothing).
fn listen_host(host: &str) -> Result<String, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains("://") || (host.contains(':') && bare.parse::<std::net::Ipv6Addr>().is_err()) {
        return Err(format!(
            "expected an address to listen on without a scheme or a port (the port is --port), \
             got {host:?}"
        ));
    }
    Ok(host.to_owned())
}

/// Refuses a layer (the file, or the environment) that gives `request_timeout` (the
/// original's name) and `body_timeout` different values: neither would be what was meant.
fn same_timeout_under_both_names(layer: &Layer) -> Result<(), ConfigError> {
    let find = |key: &str| layer.iter().rfind(|(k, ..)| *k == key);
    let (Some((_, old_source, old)), Some((_, new_source, new))) =
        (find("request_timeout"), find("body_timeout"))
    else {
        return Ok(());
    };
    // A value that does not parse is reported on its own, by the merge.
    match (seconds(old), seconds(new)) {
        (Ok(a), Ok(b)) if a != b => Err(ConfigError::Inconsistent(format!(
            "{old_source} ({}s) and {new_source} ({}s) name the same setting, the time a \
             request body may take: give one, or the same value",
            a.as_secs_f64(),
            b.as_secs_f64()
        ))),
        _ => Ok(()),
    }
}

/// Checks `heartbeat_interval < suspect_after < node_timeout`, choosing `suspect_after` when it
/// was not set: three heartbeats, or halfway to the timeout when three do not fit.
fn derive_suspect_after(
    given: Option<Duration>,
    heartbeat: Duration,
    timeout: Duration,
) -> Result<Duration, ConfigError> {
    if heartbeat >= timeout {
        return Err(ConfigError::Inconsistent(format!(
            "heartbeat_interval ({}s) must be less than node_timeout ({}s), or every node is reaped between two heartbeats",
            heartbeat.as_secs_f64(),
            timeout.as_secs_f64()
        )));
    }
    let suspect = given.unwrap_or_else(|| {
        let three = heartbeat * 3;
        if three < timeout {
            three
        } else {
            (heartbeat + timeout) / 2
        }
    });
    if suspect <= heartbeat || suspect >= timeout {
        return Err(ConfigError::Inconsistent(format!(
            "suspect_after ({}s) must be greater than heartbeat_interval ({}s) and less than node_timeout ({}s)",
            suspect.as_secs_f64(),
            heartbeat.as_secs_f64(),
            timeout.as_secs_f64()
        )));
    }
    Ok(suspect)
}

/// `--store etcd` takes `--etcd-endpoints` (or the default member) and no `--data-dir`.
fn check_store(config: &mut ServerConfig) -> Result<(), ConfigError> {
    match config.store {
        StoreKind::Etcd if config.data_dir.is_some() => Err(ConfigError::Inconsistent(
            "--store etcd keeps the registry in etcd, --data-dir keeps it on this machine's \
             disk: give one or the other"
                .to_owned(),
        )),
        StoreKind::Etcd if config.etcd_endpoints.is_empty() => {
            config.etcd_endpoints = vec![DEFAULT_ETCD_ENDPOINT.to_owned()];
            Ok(())
        }
        StoreKind::Memory if !config.etcd_endpoints.is_empty() => Err(ConfigError::Inconsistent(
            "--etcd-endpoints is for --store etcd, and the store is memory".to_owned(),
        )),
        _ => Ok(()),
    }
}

fn store_kind(text: &str) -> Result<StoreKind, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "memory" => Ok(StoreKind::Memory),
        "etcd" => Ok(StoreKind::Etcd),
        _ => Err(format!("expected memory or etcd, got {text:?}")),
    }
}

/// Comma-separated `http://host:port` URLs (no path: the store adds `/v3/...`).
fn endpoints(text: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = text
        .split(',')
        .map(|e| e.trim().trim_end_matches('/').to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if list.is_empty() {
        return Err("expected http://host:port, comma-separated, got nothing".to_owned());
    }
    for endpoint in &list {
        let authority = endpoint.strip_prefix("http://").ok_or_else(|| {
            format!("expected http://host:port (plain HTTP, etcd's client URL), got {endpoint:?}")
        })?;
        let port = authority
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        if !matches!(port, Some((host, Ok(_))) if !host.is_empty() && !host.contains('/')) {
            return Err(format!("expected http://host:port, got {endpoint:?}"));
        }
    }
    Ok(list)
}

fn read_file(path: &Path) -> Result<Layer, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        file: path.to_owned(),
        reason,
    };
    let text = read_config_text(path).map_err(file_error)?;
    let map: Map<String, Value> = match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(file_error("expected a JSON object".to_owned())),
        Err(e) => return Err(file_error(format!("invalid JSON: {e}"))),
    };
    let mut layer = Layer::new();
    for (key, value) in map {
        let normal = key.replace('-', "_");
        let Some(&known) = KEYS.iter().find(|&&k| k == normal) else {
            return Err(ConfigError::UnknownKey {
                file: path.to_owned(),
                key,
            });
        };
        // `node-timeout` and `node_timeout` both: which one was meant is anyone's guess.
        if let Some((_, other, _)) = layer.iter().find(|(k, ..)| *k == known) {
            return Err(ConfigError::Invalid {
                source: format!("{key} in {}", path.display()),
                reason: format!("the same setting as {other}: give it once"),
            });
        }
        let text = match value {
            // As in the client's config file: a key set to null counts as absent.
            Value::Null => continue,
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ConfigError::Invalid {
                    source: format!("{key} in {}", path.display()),
                    reason: format!("expected a string or a number, got {other}"),
                });
            }
        };
        layer.push((known, format!("{key} in {}", path.display()), text));
    }
    Ok(layer)
}

/// The most a config file may hold. A real one is a few hundred bytes; the bound keeps a
/// wrong path (`/dev/zero`, a log, a disk image) from filling the memory before it is refused.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The text of the config file at `path`, read up to [`MAX_CONFIG_BYTES`]: `Err` says why it
/// cannot be used (unreadable, a directory, larger than that, not UTF-8). Both binaries read
/// their `--config` through it.
pub fn read_config_text(path: &Path) -> Result<String, String> {
    read_small_text(path, MAX_CONFIG_BYTES)
}

fn boolean(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(format!("expected true or false, got {text:?}")),
    }
}

fn parse_int(text: &str, min: u64, max: u64) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from {min} to {max}, got {text:?}"
        )),
    }
}

/// The shortest period a setting may name: shorter, a sweep or a heartbeat comes round so
/// often that an idle gateway (or client) spins, and below a nanosecond it is zero. The
/// client library clamps an advertised heartbeat interval to the same floor.
pub const MIN_SECONDS: f64 = 0.01;
/// The longest: about 31 years, past any sensible setting, and far from overflowing.
pub const MAX_SECONDS: f64 = 1e9;

/// Checks a number of seconds a setting gives: `Err` says the range allowed.
pub fn checked_seconds(seconds: f64) -> Result<Duration, String> {
    if (MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!(
            "expected a number of seconds from {MIN_SECONDS} to {MAX_SECONDS:e}"
        ))
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .map_err(|_| String::new())
        .and_then(checked_seconds)
        .map_err(|_| {
            format!(
                "expected a number of seconds from {MIN_SECONDS} to {MAX_SECONDS:e}, got {text:?}"
            )
        })
}

/// Parses a log level, accepting Python's names (`WARNING`, `CRITICAL`) too.
pub fn log_level(text: &str) -> Result<LevelFilter, String> {
    Ok(match text.trim().to_ascii_uppercase().as_str() {
        "TRACE" => LevelFilter::Trace,
        "DEBUG" => LevelFilter::Debug,
        "INFO" => LevelFilter::Info,
        "WARN" | "WARNING" => LevelFilter::Warn,
        "ERROR" | "CRITICAL" | "FATAL" => LevelFilter::Error,
        "OFF" => LevelFilter::Off,
        _ => {
            return Err(format!(
                "expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {text:?}"
            ));
        }
    })
}

#[cfg(test)]
mod tests;
