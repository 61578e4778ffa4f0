//! The client's settings: the original client's defaults, its config file (`--config`), its
//! environment and the flags, merged in one place ([`Settings::load`]). A flag beats its
//! variable, which beats the file, which beats the default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_gateway::api::host_port;
use cluster_gateway::files::read_small_text;
use cluster_gateway::server::config::{checked_seconds, log_level, read_config_text};
use log::LevelFilter;
use serde_json::{Map, Value};

use super::Cli;

/// Everything the client is set up with, whichever command runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The gateways, in the order they are tried: `host:port` or URLs.
    pub gateways: Vec<String>,
    /// How long one try of a request may take.
    pub timeout: Duration,
    /// Time between heartbeats; `None`: what the gateway advertises (the original's 30 s until
    /// it has).
    pub heartbeat_interval: Option<Duration>,
    /// Tries per request when no gateway can be reached.
    pub retry_attempts: u32,
    /// The first pause between rounds of tries; it doubles each round.
    pub retry_delay: Duration,
    /// The node to join as. The original defaulted to 0; here joining needs it said, so that a
    /// bare `gateway-client` never joins as node 0 by accident.
    pub node_id: Option<u64>,
    /// The address peers reach this node at.
    pub ip_address: String,
    /// The port peers reach this node at (required to join, as `node_id`; the original
    /// defaulted to 5000).
    pub port: Option<u16>,
    /// What the node offers.
    pub capabilities: Vec<String>,
    /// Free-form facts about the node.
    pub metadata: Map<String, Value>,
    /// The bearer token sent with every request.
    pub token: Option<String>,
    /// PEM file of the CA that `https://` gateways are checked against.
    pub ca_file: Option<PathBuf>,
    /// How much to log; `None`: the command's default.
    pub log_level: Option<LevelFilter>,
}

impl Default for Settings {
    /// The original client's defaults, but for `node_id` and `port` (see their docs).
    fn default() -> Settings {
        Settings {
            gateways: vec!["localhost:8080".to_owned()],
            timeout: Duration::from_secs(10),
            heartbeat_interval: None,
            retry_attempts: 3,
            retry_delay: Duration::from_secs(1),
            node_id: None,
            ip_address: "127.0.0.1".to_owned(),
            port: None,
            capabilities: vec!["raft".to_owned(), "gossip".to_owned()],
            metadata: Map::new(),
            token: None,
            ca_file: None,
            log_level: None,
        }
    }
}

/// The keys a config file may hold: the original client's example config, then ours.
pub const FILE_KEYS: [&str; 15] = [
    "gateway_host",
    "gateway_port",
    "timeout",
    "heartbeat_interval",
    "retry_attempts",
    "retry_delay",
    "node_id",
    "ip_address",
    "port",
    "capabilities",
    "metadata",
    // Ours.
    "gateways",
    "token_file",
    "ca_file",
    "log_level",
];

impl Settings {
    /// Merges the defaults, the file `cli.config` names, the environment (read through `env`)
    /// and the flags. Every setting given is checked, whether or not a higher layer overrides
    /// it. `Err` is a usage error that names the flag, variable or key (and file) at fault.
    pub fn load(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let flags = Layer::from_flags(cli)?;
        let environment = Layer::from_environment(&env)?;
        let file = match &cli.config {
            Some(path) => Layer::from_file(Path::new(path))?,
            None => Layer::default(),
        };
        let layers = [&flags, &environment, &file];
        // The first layer, highest first, that sets the value.
        macro_rules! merged {
            ($field:ident) => {
                layers.iter().find_map(|layer| layer.$field.clone())
            };
        }
        let defaults = Settings::default();
        let mut metadata = file.metadata.clone().unwrap_or_default();
        metadata.extend(flags.metadata.clone().unwrap_or_default());
        let token = match merged!(token) {
            Some(Token::Inline(token)) => Some(token),
            Some(Token::File { path, source }) => Some(read_token(&path, &source)?),
            None => None,
        };
        Ok(Settings {
            gateways: gateways(&layers).unwrap_or(defaults.gateways),
            timeout: merged!(timeout).unwrap_or(defaults.timeout),
            heartbeat_interval: merged!(heartbeat_interval),
            retry_attempts: merged!(retry_attempts).unwrap_or(defaults.retry_attempts),
            retry_delay: merged!(retry_delay).unwrap_or(defaults.retry_delay),
            node_id: merged!(node_id),
            ip_address: merged!(ip_address).unwrap_or(defaults.ip_address),
            port: merged!(port),
            capabilities: merged!(capabilities).unwrap_or(defaults.capabilities),
            metadata,
            token,
            ca_file: merged!(ca_file),
            log_level: merged!(log_level),
        })
    }
}

/// The settings one source gives: the flags, the environment or the config file.
#[derive(Debug, Default)]
struct Layer {
    /// `--gateway`, `GATEWAY_URL`, `gateways`.
    gateways: Option<Vec<String>>,
    gateway_host: Option<String>,
    gateway_port: Option<u16>,
    timeout: Option<Duration>,
    heartbeat_interval: Option<Duration>,
    retry_attempts: Option<u32>,
    retry_delay: Option<Duration>,
    node_id: Option<u64>,
    ip_address: Option<String>,
    port: Option<u16>,
    capabilities: Option<Vec<String>>,
    metadata: Option<Map<String, Value>>,
    token: Option<Token>,
    ca_file: Option<PathBuf>,
    log_level: Option<LevelFilter>,
}

/// Where the token comes from; only the one that wins is read.
#[derive(Debug, Clone)]
enum Token {
    Inline(String),
    /// The first line of `path`; `source` names the setting in errors.
    File {
        path: PathBuf,
        source: String,
    },
}

impl Layer {
    fn from_flags(cli: &Cli) -> Result<Layer, String> {
        let seconds =
            |value: Option<f64>, flag: &str| value.map(|s| positive_seconds(s, flag)).transpose();
        let metadata = cli
            .metadata
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    Ok((key.to_owned(), Value::String(value.to_owned())))
                }
                _ => Err(format!("invalid --metadata {pair:?}: expected key=value")),
            })
            .collect::<Result<Map<_, _>, _>>()?;
        let token = match (&cli.token, &cli.token_file) {
            (Some(token), _) => Some(Token::Inline(token.clone())),
            (None, Some(path)) => Some(Token::File {
                path: PathBuf::from(path),
                source: "--token-file".to_owned(),
            }),
            (None, None) => None,
        };
        // Each --gateway may name several, comma-separated, as GATEWAY_URL does; one that
        // names none is refused rather than dropped (the default would take its place).
        let mut gateways = Vec::new();
        for value in &cli.gateway {
            let list = comma_list(value);
            if list.is_empty() {
                return Err(format!(
                    "invalid --gateway {value:?}: expected a gateway address (host:port or URL)"
                ));
            }
            gateways.extend(list);
        }
        Ok(Layer {
            gateways: (!gateways.is_empty()).then_some(gateways),
            gateway_host: cli
                .gateway_host
                .as_deref()
                .map(|h| gateway_host(h, "--gateway-host"))
                .transpose()?,
            gateway_port: cli.gateway_port,
            timeout: seconds(cli.timeout, "--timeout")?,
            heartbeat_interval: seconds(cli.heartbeat_interval, "--heartbeat-interval")?,
            retry_attempts: None,
            retry_delay: None,
            node_id: cli.node_id,
            ip_address: match cli.ip.as_deref().map(str::trim) {
                // Sent as it is, the gateway would refuse the registration: exit 1, not 2.
                Some("") => return Err("invalid --ip \"\": expected an address".to_owned()),
                ip => ip.map(str::to_owned),
            },
            port: cli.port,
            capabilities: cli.capabilities.as_deref().map(comma_list),
            metadata: (!metadata.is_empty()).then_some(metadata),
            token,
            ca_file: cli.ca_file.as_ref().map(PathBuf::from),
            log_level: cli
                .log_level
                .as_deref()
                .map(|level| log_level(level).map_err(|e| format!("invalid --log-level: {e}")))
                .transpose()?,
        })
    }

    /// The original client's variables, and ours. An empty variable counts as unset, as the
    /// original's `os.getenv(...) or default` has it.
    fn from_environment(env: &impl Fn(&str) -> Option<String>) -> Result<Layer, String> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        // A number; one that does not parse (or is out of the type's range) is an error
        // naming the variable and what it takes.
        macro_rules! parsed {
            ($name:expr) => {
                parsed!($name, "a number")
            };
            ($name:expr, $what:expr) => {
                var($name)
                    .map(|text| {
                        text.trim().parse().map_err(|_| {
                            format!("invalid {}: expected {}, got {text:?}", $name, $what)
                        })
                    })
                    .transpose()?
            };
        }
        let seconds =
            |name: &str, value: Option<f64>| value.map(|s| positive_seconds(s, name)).transpose();
        let gateways = match var("GATEWAY_URL") {
            Some(urls) if comma_list(&urls).is_empty() => {
                return Err(format!(
                    "invalid GATEWAY_URL: expected gateway addresses, comma-separated, got {urls:?}"
                ));
            }
            urls => urls.as_deref().map(comma_list),
        };
        Ok(Layer {
            gateways,
            gateway_host: var("GATEWAY_HOST")
                .map(|h| gateway_host(h.trim(), "GATEWAY_HOST"))
                .transpose()?,
            gateway_port: parsed!("GATEWAY_PORT", PORT),
            timeout: seconds("GATEWAY_CLIENT_TIMEOUT", parsed!("GATEWAY_CLIENT_TIMEOUT"))?,
            heartbeat_interval: seconds(
                "GATEWAY_CLIENT_HEARTBEAT_INTERVAL",
                parsed!("GATEWAY_CLIENT_HEARTBEAT_INTERVAL"),
            )?,
            retry_attempts: parsed!("GATEWAY_CLIENT_RETRY_ATTEMPTS", TRIES),
            retry_delay: seconds(
                "GATEWAY_CLIENT_RETRY_DELAY",
                parsed!("GATEWAY_CLIENT_RETRY_DELAY"),
            )?,
            node_id: parsed!("NODE_ID", NODE_ID),
            ip_address: var("NODE_IP").map(|ip| ip.trim().to_owned()),
            port: parsed!("NODE_PORT", PORT),
            capabilities: var("GATEWAY_CLIENT_CAPABILITIES")
                .as_deref()
                .map(comma_list),
            metadata: None,
            token: var("GATEWAY_TOKEN").map(Token::Inline),
            ca_file: var("GATEWAY_CA_FILE").map(PathBuf::from),
            log_level: None,
        })
    }

    /// The config file: the original client's keys and ours (`FILE_KEYS`), `-` in a key read
    /// as `_`; a key set to `null` counts as absent. Every value is checked.
    fn from_file(path: &Path) -> Result<Layer, String> {
        let file = File::read(path)?;
        let token = file.path("token_file")?.map(|token_file| Token::File {
            path: token_file,
            source: format!("token_file in {}", path.display()),
        });
        Ok(Layer {
            gateways: file.strings("gateways")?,
            gateway_host: file
                .string("gateway_host")?
                .map(|h| gateway_host(&h, &format!("gateway_host in {}", path.display())))
                .transpose()?,
            gateway_port: file.number("gateway_port", PORT)?,
            timeout: file.seconds("timeout")?,
            heartbeat_interval: file.seconds("heartbeat_interval")?,
            retry_attempts: file.number("retry_attempts", TRIES)?,
            retry_delay: file.seconds("retry_delay")?,
            node_id: file.number("node_id", NODE_ID)?,
            ip_address: file.string("ip_address")?,
            port: file.number("port", PORT)?,
            capabilities: file.strings("capabilities")?,
            metadata: file.object("metadata")?,
            token,
            ca_file: file.path("ca_file")?,
            log_level: file
                .string("log_level")?
                .map(|level| log_level(&level).map_err(|e| file.invalid("log_level", &e)))
                .transpose()?,
        })
    }
}

/// A gateway host as given: a name or an address, without a scheme or a port (those would
/// be joined into an address that names nothing, `[http://gw:8080]:8080`).
fn gateway_host(host: &str, source: &str) -> Result<String, String> {
    let wrong = |what: &str| {
        Err(format!(
            "invalid {source} {host:?}: {what}; a gateway's URL or host:port goes in --gateway \
             (GATEWAY_URL, gateways)"
        ))
    };
    if host.is_empty() {
        return wrong("expected a host name or address");
    }
    if host.contains("://") {
        return wrong("a host, not a URL");
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') && bare.parse::<std::net::Ipv6Addr>().is_err() {
        return wrong("a host without a port (the port is --gateway-port)");
    }
    Ok(host.to_owned())
}

const PORT: &str = "a port number from 0 to 65535";
const TRIES: &str = "a whole number of tries";
const NODE_ID: &str = "a node id (a whole number)";

/// The gateways: a list (`--gateway`, `GATEWAY_URL`, `gateways`) or a host and port
/// (`--gateway-host`/`--gateway-port`, `GATEWAY_HOST`/`GATEWAY_PORT`,
/// `gateway_host`/`gateway_port`). The highest layer that names a gateway decides; within a
/// layer the list beats the host and port, and a host without a port (or the reverse) takes
/// the other from the layers below, else the default (`localhost`, 8080).
fn gateways(layers: &[&Layer]) -> Option<Vec<String>> {
    for (i, layer) in layers.iter().enumerate() {
        if let Some(list) = &layer.gateways {
            return Some(list.clone());
        }
        if layer.gateway_host.is_some() || layer.gateway_port.is_some() {
            let below = &layers[i..];
            let host = below.iter().find_map(|l| l.gateway_host.as_deref());
            let port = below.iter().find_map(|l| l.gateway_port);
            return Some(vec![host_port(
                host.unwrap_or("localhost"),
                port.unwrap_or(8080),
            )]);
        }
    }
    None
}

/// The first non-blank line of `path`. Errors name the file, never what is in it.
fn read_token(path: &Path, source: &str) -> Result<String, String> {
    // A token is a line; the bound keeps a wrong path (/dev/zero) from filling the memory.
    let text = read_small_text(path, 64 * 1024)
        .map_err(|e| format!("cannot read {source} {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| format!("{source} {} holds no token", path.display()))
}

/// Seconds from 0.01 to 1e9, as the server takes them: a shorter period (a heartbeat every
/// 1e-12 s is every 0 ns) would spin, a longer one is no setting.
fn positive_seconds(seconds: f64, source: &str) -> Result<Duration, String> {
    // `{:?}`: 1e308 as `1e308`, not 309 digits.
    checked_seconds(seconds)
        .map_err(|expected| format!("invalid {source}: {expected}, got {seconds:?}"))
}

/// `a, b,,c` as `[a, b, c]`.
fn comma_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A config file: its path and its keys (`-` in a key read as `_`). A key set to `null` counts
/// as absent.
#[derive(Debug)]
struct File {
    path: PathBuf,
    values: Map<String, Value>,
}

impl File {
    fn read(path: &Path) -> Result<File, String> {
        let shown = path.display();
        let text =
            read_config_text(path).map_err(|e| format!("cannot read config file {shown}: {e}"))?;
        let map = match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(format!("config file {shown}: expected a JSON object")),
            Err(e) => return Err(format!("config file {shown}: invalid JSON: {e}")),
        };
        let mut values = Map::new();
        for (key, value) in map {
            let normal = key.replace('-', "_");
            if !FILE_KEYS.contains(&normal.as_str()) {
                return Err(format!(
                    "unknown key {key:?} in config file {shown} (known keys: {})",
                    FILE_KEYS.join(", ")
                ));
            }
            if !value.is_null() && values.insert(normal.clone(), value).is_some() {
                return Err(format!(
                    "{normal} is given twice in config file {shown} (as {normal} and with `-`)"
                ));
            }
        }
        Ok(File {
            path: path.to_owned(),
            values,
        })
    }

    fn invalid(&self, key: &str, reason: &str) -> String {
        format!("invalid {key} in {}: {reason}", self.path.display())
    }

    fn expected(&self, key: &str, what: &str, got: &Value) -> String {
        self.invalid(key, &format!("expected {what}, got {got}"))
    }

    fn string(&self, key: &str) -> Result<Option<String>, String> {
        match self.values.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(self.expected(key, "a non-empty string", other)),
        }
    }

    /// A number, written as a JSON number or a string holding one.
    fn number<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<Option<T>, String> {
        let parsed = match self.values.get(key) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.to_string().parse().ok(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match parsed {
            Some(n) => Ok(Some(n)),
            None => Err(self.expected(key, what, &self.values[key])),
        }
    }

    fn seconds(&self, key: &str) -> Result<Option<Duration>, String> {
        let what = "a number of seconds";
        self.number::<f64>(key, what)?
            .map(|s| {
                checked_seconds(s).map_err(|expected| {
                    self.invalid(key, &format!("{expected}, got {}", self.values[key]))
                })
            })
            .transpose()
    }

    /// A list of strings: a JSON array, or one string of comma-separated items.
    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, String> {
        let what = "a list of strings";
        let list = match self.values.get(key) {
            None => return Ok(None),
            Some(Value::String(s)) => comma_list(s),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                    _ => Err(self.expected(key, what, &self.values[key])),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(self.expected(key, what, other)),
        };
        // An empty list of gateways would leave nothing to talk to.
        if key == "gateways" && list.is_empty() {
            return Err(self.expected(key, "at least one gateway address", &self.values[key]));
        }
        Ok(Some(list))
    }

    fn object(&self, key: &str) -> Result<Option<Map<String, Value>>, String> {
        match self.values.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map.clone())),
            Some(other) => Err(self.expected(key, "a JSON object", other)),
        }
    }

    /// A file named in the config file: a relative path is taken from the config file's
    /// directory, not from wherever the client runs.
    fn path(&self, key: &str) -> Result<Option<PathBuf>, String> {
        Ok(self.string(key)?.map(|name| {
            let dir = self.path.parent().unwrap_or(Path::new(""));
            dir.join(name)
        }))
    }
}

#[cfg(test)]
#[path = "settings/tests.rs"]
mod tests;
