//! The wire format: every request and response body, shared by the server and the client.
//!
//! Field names, shapes and status strings are those of the original Python gateway, which
//! existing nodes rely on. Our answers may carry extra fields (`epoch`, `suspected_nodes`, ...);
//! they never drop or rename one of the original's. Parsing of untrusted request bodies lives
//! here too, so that every limit on what a node may send is stated in one place.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod changes;

pub use changes::{ChangeKind, ChangesResponse, NodeChange};

/// A node's id. Any unsigned 64-bit integer, 0 included.
pub type NodeId = u64;

/// Limits on what a registration may carry.
pub mod limits {
    /// Longest `ip_address` (a DNS name's maximum length).
    pub const ADDRESS_BYTES: usize = 253;
    /// Most entries in `capabilities`.
    pub const CAPABILITIES: usize = 64;
    /// Longest single capability.
    pub const CAPABILITY_BYTES: usize = 128;
    /// Longest `previous_epoch`.
    pub const EPOCH_BYTES: usize = 64;
    /// Most keys a node's metadata may hold (after merging).
    pub const METADATA_KEYS: usize = 64;
    /// Most bytes a node's metadata may take as compact JSON (after merging).
    pub const METADATA_BYTES: usize = 16 * 1024;
    /// Largest answer the client reads, once decompressed (256 MiB): every answer a gateway
    /// can send fits, since a gateway's budget is at most [`REGISTRY_BYTES`].
    pub const ANSWER_BYTES: u64 = 256 * 1024 * 1024;
    /// What an answer that carries nodes (`/nodes`, `/register`, `/leader`) holds beside the
    /// nodes a gateway's budget counts, at most: its other fields and, in a `/register`
    /// answer, the leader's record a second time (a record at the limits above is under
    /// 64 KiB, its worst escaping included).
    pub const ANSWER_MARGIN_BYTES: u64 = 1024 * 1024;
    /// The most a gateway's memory budget (`--max-registry-bytes`) may be: a list of every
    /// node it admits, plus [`ANSWER_MARGIN_BYTES`], is within [`ANSWER_BYTES`].
    pub const REGISTRY_BYTES: u64 = ANSWER_BYTES - ANSWER_MARGIN_BYTES;
}

/// Whether a node is heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeStatus {
    /// Heard from within `suspect_after`.
    Active,
    /// Silent for `suspect_after`; reaped after `node_timeout`.
    Suspected,
}

impl NodeStatus {
    /// The wire name: `active` or `suspected`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Active => "active",
            NodeStatus::Suspected => "suspected",
        }
    }
}

/// A node record as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Node {
    /// The node's id.
    pub node_id: NodeId,
    /// Address peers reach it at.
    pub ip_address: String,
    /// Port peers reach it at.
    pub port: u16,
    /// What it offers, e.g. `raft`, `gossip`.
    pub capabilities: Vec<String>,
    /// `active` or `suspected`.
    pub status: NodeStatus,
    /// Unix seconds of the last registration or heartbeat.
    pub last_seen: f64,
    /// Unix seconds of the first registration.
    pub join_timestamp: f64,
    /// Free-form data the node registered with.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl Node {
    /// `ip:port`, with brackets around an IPv6 address.
    pub fn address(&self) -> String {
        host_port(&self.ip_address, self.port)
    }
}

/// Joins a host and a port as `host:port`, bracketing an IPv6 address (`[::1]:8080`).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `POST /register`: who a node is and where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Registration {
    /// The node's id.
    pub node_id: NodeId,
    /// Address peers reach it at: an IP address or a host name.
    pub ip_address: String,
    /// Port peers reach it at, 1 to 65535.
    pub port: u16,
    /// What it offers.
    pub capabilities: Vec<String>,
    /// Merged key by key into what is stored; `None` keeps what is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The `epoch` of the gateway this node last registered with. Sent on every registration
    /// after a node's first successful one: the node belongs to a cluster that already exists,
    /// so it never bootstraps, and its registration disarms bootstrap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_epoch: Option<String>,
}

/// `registered` for a new node, `updated` for a known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterStatus {
    /// The node was not known.
    Registered,
    /// The node was known; its record was refreshed.
    Updated,
}

/// Answer to `POST /register`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegisterResponse {
    /// `registered` or `updated`.
    pub status: RegisterStatus,
    /// The registrant's id.
    pub node_id: NodeId,
    /// True if the registrant bootstrapped the cluster and is its leader.
    pub is_bootstrap: bool,
    /// Version of the registry this answer reflects.
    pub registry_version: u64,
    /// Active nodes other than the registrant, by node id.
    pub nodes: Vec<Node>,
    /// The leader, if any.
    pub leader: Option<Node>,
    /// Id of this gateway run (absent from the original gateway): send it back as
    /// `previous_epoch` when registering again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The gateway's liveness settings (absent from the original gateway).
    #[serde(flatten)]
    pub settings: Settings,
}

/// The liveness settings a gateway advertises in `/register` and `/health` answers, in seconds.
///
/// Each is absent when the gateway is the original one, which did not advertise them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Settings {
    /// How often nodes should heartbeat (and how often the gateway sweeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<f64>,
    /// Silence after which a node is marked suspected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspect_after: Option<f64>,
    /// Silence after which a node is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_timeout: Option<f64>,
}

/// Answer to `GET /nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodesResponse {
    /// The matching nodes, by node id.
    pub nodes: Vec<Node>,
    /// Version of the registry this answer reflects.
    pub registry_version: u64,
}

/// Answer to `GET /leader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LeaderResponse {
    /// The leader's record, or null.
    pub leader: Option<Node>,
    /// Version of the registry (present when there is a leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_version: Option<u64>,
    /// `No leader currently registered` when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /leader`: who should lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetLeader {
    /// A registered node's id.
    pub leader_id: NodeId,
}

/// `updated` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetLeaderStatus {
    /// The leader is now `leader_id`.
    Updated,
    /// The node is not registered; nothing changed.
    Failed,
}

/// Answer to `POST /leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SetLeaderResponse {
    /// `updated` or `failed`.
    pub status: SetLeaderStatus,
    /// The new leader (on success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<NodeId>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /heartbeat` and `POST /remove`: which node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// The node's id.
    pub node_id: NodeId,
}

/// `acknowledged` or `not_found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeartbeatStatus {
    /// The node is registered and its heartbeat counted.
    Acknowledged,
    /// The node is not registered (never was, reaped, or the gateway restarted): register again.
    NotFound,
}

/// Answer to `POST /heartbeat` (always 200, as the original client expects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HeartbeatResponse {
    /// `acknowledged` or `not_found`.
    pub status: HeartbeatStatus,
    /// Version of the registry: refresh the peer list when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_version: Option<u64>,
    /// Id of this gateway run: it changes when the gateway restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `removed` or `not_found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveStatus {
    /// The node was registered and is gone now.
    Removed,
    /// The node was not registered.
    NotFound,
}

/// Answer to `POST /remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoveResponse {
    /// `removed` or `not_found`.
    pub status: RemoveStatus,
    /// The node asked about.
    pub node_id: NodeId,
}

/// Answer to `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Health {
    /// Always `healthy` when the gateway answers.
    pub status: String,
    /// Unix seconds on the gateway.
    pub timestamp: f64,
    /// The gateway's version.
    pub version: String,
    /// Id of this gateway run.
    #[serde(default)]
    pub epoch: String,
    /// The gateway's liveness settings (absent from the original gateway).
    #[serde(flatten)]
    pub settings: Settings,
    /// Why the registry's store takes no writes (etcd cut off, a data directory that cannot be
    /// written); reads then answer from what the gateway holds, which may be stale. Absent
    /// while all is well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

/// Answer to `GET /stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Registered nodes, active or suspected.
    pub total_nodes: usize,
    /// Nodes heard from within `suspect_after`.
    pub active_nodes: usize,
    /// Nodes silent for `suspect_after`, not yet reaped.
    #[serde(default)]
    pub suspected_nodes: usize,
    /// The leader's id, or null.
    pub leader_id: Option<NodeId>,
    /// Version of the registry.
    pub registry_version: u64,
    /// True once a node has bootstrapped the cluster.
    pub bootstrap_initiated: bool,
    /// True if the next node to join an empty registry will bootstrap.
    #[serde(default)]
    pub bootstrap_armed: bool,
    /// Seconds since the gateway started.
    pub uptime: f64,
    /// Registrations that created a node, since start.
    #[serde(default)]
    pub joins_total: u64,
    /// Nodes removed on request, since start.
    #[serde(default)]
    pub removed_total: u64,
    /// Nodes removed for silence, since start.
    #[serde(default)]
    pub reaped_total: u64,
    /// Heartbeats acknowledged, since start.
    #[serde(default)]
    pub heartbeats_total: u64,
    /// Seconds of silence before a node is suspected.
    #[serde(default)]
    pub suspect_after: f64,
    /// Seconds of silence before a node is reaped.
    #[serde(default)]
    pub node_timeout: f64,
    /// Seconds between reaper sweeps.
    #[serde(default)]
    pub heartbeat_interval: f64,
    /// The gateway's version.
    #[serde(default)]
    pub version: String,
    /// Id of this gateway run.
    #[serde(default)]
    pub epoch: String,
    /// True when the registry is kept in a data directory across restarts.
    #[serde(default)]
    pub durable: bool,
    /// The data directory, if any.
    #[serde(default)]
    pub data_dir: Option<String>,
    /// Bytes in the data directory's log since its last compaction.
    #[serde(default)]
    pub log_bytes: u64,
    /// Bytes in the data directory's last snapshot.
    #[serde(default)]
    pub snapshot_bytes: u64,
    /// Unix seconds of the last compaction since start, if any.
    #[serde(default)]
    pub last_compaction: Option<f64>,
    /// Syncs of the data directory's log since start; changes that arrive together share one.
    #[serde(default)]
    pub log_syncs: u64,
    /// Why the registry cannot be written, if it cannot (writes answer 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
}

/// The body of every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// The HTTP status again.
    pub status_code: u16,
    /// Unix seconds on the gateway.
    pub timestamp: f64,
}

/// A request body the gateway refuses, with the reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Parses a request body as a JSON object. Any `Content-Type` is accepted.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Invalid(format!(
            "Invalid JSON: the body must be an object, got {}",
            describe(&other)
        ))),
        Err(_) => Err(Invalid("Invalid JSON".to_owned())),
    }
}

impl Registration {
    /// A registration of `node_id`, reachable at `ip_address:port`, with no capabilities and no
    /// metadata; add them with [`Registration::capabilities`] and [`Registration::metadata`].
    ///
    /// ```
    /// use cluster_gateway::api::Registration;
    ///
    /// let mut round = cluster_gateway::Metadata::new();
    /// round.insert("round".into(), 3.into());
    /// let registration = Registration::new(7, "10.0.0.7", 5001)
    ///     .capabilities(["raft", "gossip"])
    ///     .metadata(round);
    /// assert_eq!(registration.capabilities, ["raft", "gossip"]);
    /// ```
    ///
    /// The struct is `#[non_exhaustive]`: it gains fields as the protocol grows, so it is built
    /// this way, never with a struct literal.
    ///
    /// ```compile_fail
    /// use cluster_gateway::api::Registration;
    ///
    /// let registration = Registration {
    ///     node_id: 7,
    ///     ip_address: "10.0.0.7".into(),
    ///     port: 5001,
    ///     capabilities: Vec::new(),
    ///     metadata: None,
    ///     previous_epoch: None,
    /// };
    /// ```
    pub fn new(node_id: NodeId, ip_address: impl Into<String>, port: u16) -> Registration {
        Registration {
            node_id,
            ip_address: ip_address.into(),
            port,
            ..Registration::default()
        }
    }

    /// The same registration offering `capabilities` (e.g. `raft`, `gossip`).
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Registration
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// The same registration carrying `metadata`, merged key by key into what the gateway holds.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Registration {
        self.metadata = Some(metadata);
        self
    }

    /// The same registration naming the `epoch` of the gateway this node last registered with:
    /// the node belongs to a cluster that exists, so it never bootstraps.
    pub fn previous_epoch(mut self, epoch: impl Into<String>) -> Registration {
        self.previous_epoch = Some(epoch.into());
        self
    }

    /// Validates a `POST /register` body. Unknown fields are ignored.
    pub fn from_body(body: &Map<String, Value>) -> Result<Registration, Invalid> {
        for name in ["node_id", "ip_address", "port", "capabilities"] {
            if !body.contains_key(name) {
                return Err(Invalid(format!("Missing required field: {name}")));
            }
        }
        Ok(Registration {
            node_id: node_id(&body["node_id"], "node_id")?,
            ip_address: ip_address(&body["ip_address"])?,
            port: port(&body["port"])?,
            capabilities: capabilities(&body["capabilities"])?,
            metadata: metadata(body.get("metadata"))?,
            previous_epoch: previous_epoch(body.get("previous_epoch"))?,
        })
    }
}

/// Reads an id field that the original reported as `Missing <name>` when absent or null.
pub fn required_id(body: &Map<String, Value>, name: &str) -> Result<NodeId, Invalid> {
    match body.get(name) {
        None | Some(Value::Null) => Err(Invalid(format!("Missing {name}"))),
        Some(value) => node_id(value, name),
    }
}

/// Parses a node id from a query string value.
pub fn node_id_from_query(text: &str) -> Result<NodeId, Invalid> {
    node_id(&Value::String(text.to_owned()), "node_id")
}

/// A node id: a JSON integer, or a string of decimal digits (the original accepted both).
fn node_id(value: &Value, name: &str) -> Result<NodeId, Invalid> {
    integer(value).ok_or_else(|| {
        Invalid(format!(
            "Invalid {name}: must be an integer from 0 to {}, got {}",
            u64::MAX,
            describe(value)
        ))
    })
}

fn port(value: &Value) -> Result<u16, Invalid> {
    integer(value)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n != 0)
        .ok_or_else(|| {
            Invalid(format!(
                "Invalid port: must be an integer from 1 to 65535, got {}",
                describe(value)
            ))
        })
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        // Digits only: no sign, no spaces, no newline.
        Value::String(digits) => {
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                digits.parse().ok()
            } else {
                None
            }
        }
        _ => None,
    }
}

fn ip_address(value: &Value) -> Result<String, Invalid> {
    let bad = |why: &str| Invalid(format!("Invalid ip_address: {why}"));
    let Value::String(text) = value else {
        return Err(bad(&format!(
            "must be an IP address or host name, got {}",
            describe(value)
        )));
    };
    if text.is_empty() {
        return Err(bad("must not be empty"));
    }
    if text.len() > limits::ADDRESS_BYTES {
        return Err(bad(&format!("longer than {} bytes", limits::ADDRESS_BYTES)));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        // `::ffff:0.0.0.0` (and `::0.0.0.0`) is 0.0.0.0 to a peer that connects to it.
        let unspecified = match ip {
            IpAddr::V6(v6) => {
                v6.is_unspecified() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_unspecified())
            }
            IpAddr::V4(v4) => v4.is_unspecified(),
        };
        if unspecified {
            return Err(bad(&format!(
                "{} is the unspecified address, which no peer can reach",
                quoted(text)
            )));
        }
        return Ok(text.clone());
    }
    // All digits and dots: meant as IPv4 (and resolvers would take it as one), so it must be a
    // valid one, not a host name.
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad(&format!(
            "{} is not a valid IPv4 address",
            quoted(text)
        )));
    }
    // A name whose last label is a number (decimal, or `0x` hex) is read as an IPv4 address
    // by resolvers and URL parsers (`0x7f.1`, `2130706433`, `0x0`: 127.0.0.1 or 0.0.0.0), and
    // WHATWG URLs refuse it as a host name: only dotted decimal is taken as IPv4.
    let last = text.rsplit('.').next().unwrap_or("");
    let hex = last
        .strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex || (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad(&format!(
            "{} ends in a number, which resolvers read as an IPv4 address: give a dotted \
             decimal IPv4 address (four numbers 0-255 without leading zeros) or a host name",
            quoted(text)
        )));
    }
    if !text.split('.').all(is_host_label) {
        return Err(bad(&format!(
            "{} is neither an IP address nor a host name (RFC 1123: labels of 1 to 63 letters, \
             digits and inner hyphens, separated by dots)",
            quoted(text)
        )));
    }
    Ok(text.clone())
}

/// A host name label (RFC 1123): 1 to 63 letters, digits and hyphens, not starting or ending
/// with a hyphen.
fn is_host_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Unicode format characters (general category Cf): invisible, and able to reorder or hide
/// text (U+202E right-to-left override, U+200B zero width space, U+FEFF byte order mark).
fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

fn capabilities(value: &Value) -> Result<Vec<String>, Invalid> {
    let bad = |why: String| Invalid(format!("Invalid capabilities: {why}"));
    let Value::Array(items) = value else {
        return Err(bad(format!(
            "must be an array of strings, got {}",
            describe(value)
        )));
    };
    if items.len() > limits::CAPABILITIES {
        return Err(bad(format!(
            "at most {} entries, got {}",
            limits::CAPABILITIES,
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) if s.is_empty() => Err(bad("entries must not be empty".to_owned())),
            Value::String(s) if s.len() > limits::CAPABILITY_BYTES => Err(bad(format!(
                "entries must be at most {} bytes",
                limits::CAPABILITY_BYTES
            ))),
            Value::String(s) if s.chars().any(char::is_control) => {
                Err(bad("entries must not contain control characters".to_owned()))
            }
            Value::String(s) if s.chars().any(is_format_char) => Err(bad(
                "entries must not contain invisible format characters (such as U+202E, \
                 U+200B, U+FEFF)"
                    .to_owned(),
            )),
            Value::String(s) => Ok(s.clone()),
            other => Err(bad(format!(
                "entries must be strings, got {}",
                describe(other)
            ))),
        })
        .collect()
}

fn metadata(value: Option<&Value>) -> Result<Option<Map<String, Value>>, Invalid> {
    let bad = |why: String| Invalid(format!("Invalid metadata: {why}"));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            if map.len() > limits::METADATA_KEYS {
                return Err(bad(format!("at most {} keys", limits::METADATA_KEYS)));
            }
            if map.values().any(inexact_number) {
                return Err(bad(format!(
                    "numbers must be exact: integers from {} to {}, or fractions",
                    i64::MIN,
                    u64::MAX
                )));
            }
            let size = serde_json::to_string(map).map(|s| s.len()).unwrap_or(0);
            if size > limits::METADATA_BYTES {
                return Err(bad(format!(
                    "at most {} bytes as JSON, got {size}",
                    limits::METADATA_BYTES
                )));
            }
            Ok(Some(map.clone()))
        }
        Some(other) => Err(bad(format!(
            "must be an object or null, got {}",
            describe(other)
        ))),
    }
}

/// True if `value` holds a number that could only be kept as a rounded float: an integer
/// beyond 64 bits (2^70 would be stored as 1.1805916207174113e21).
fn inexact_number(value: &Value) -> bool {
    match value {
        Value::Number(n) => n
            .as_f64()
            .is_some_and(|f| !n.is_i64() && !n.is_u64() && f.abs() >= 9_007_199_254_740_992.0),
        Value::Array(items) => items.iter().any(inexact_number),
        Value::Object(map) => map.values().any(inexact_number),
        _ => false,
    }
}

/// `previous_epoch`: absent, null, or an epoch as a gateway gave it (short printable ASCII).
fn previous_epoch(value: Option<&Value>) -> Result<Option<String>, Invalid> {
    let bad = |why: String| Invalid(format!("Invalid previous_epoch: {why}"));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() || s.len() > limits::EPOCH_BYTES => {
            Err(bad(format!("must be 1 to {} bytes", limits::EPOCH_BYTES)))
        }
        Some(Value::String(s)) if !s.bytes().all(|b| b.is_ascii_graphic()) => {
            Err(bad("must be printable ASCII".to_owned()))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(format!(
            "must be a string or null, got {}",
            describe(other)
        ))),
    }
}

/// Names a JSON value in an error message without echoing much of it.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            let text = n.to_string();
            if text.len() > 32 {
                "a number out of range".to_owned()
            } else {
                text
            }
        }
        Value::String(s) => format!("the string {}", quoted(s)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A short, printable rendering of untrusted text for an error message.
fn quoted(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    format!("{short:?}")
}

#[cfg(test)]
mod tests;
