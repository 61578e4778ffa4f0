//! Routing: one HTTP request in, one answer out, with no sockets involved.
//!
//! [`handle`] is the single entry point for every request the server reads, and the fuzz target
//! drives it directly. It maps paths to [`Gateway`] calls, turns bad input into a 4xx JSON error,
//! and is the one place where requests are authorised.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::api::{
    self, Health, HeartbeatResponse, HeartbeatStatus, NodeId, Registration, RemoveResponse,
    RemoveStatus, SetLeaderResponse, SetLeaderStatus,
};
use crate::server::auth::{Need, Role, Verdict};
use crate::server::gateway::{Filter, Gateway, NodeList, Part};
use crate::server::long_polls;
use crate::server::registry::{NodeRecord, Registered, unix_now};

mod changes;
mod query;
mod response;

pub use changes::{StreamStart, events_body, full_body, mentions};
use query::{Query, query_pairs, wants_pretty};
pub use response::{Body, JSON, Response};

/// A request, as far as routing needs it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// Path and query, e.g. `/nodes?node_id=1`.
    pub url: &'a str,
    /// The whole body, already read within the size limit.
    pub body: &'a [u8],
    /// The request's headers, as sent (names in any case).
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> Request<'a> {
    /// The values of every header called `name` (case-insensitively), in order.
    pub fn header(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }

    /// The comma-separated items of every header called `name`, trimmed.
    fn items(&self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header(name)
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
    }

    /// True if the client takes gzip (`Accept-Encoding: gzip`, not with `q=0`).
    fn accepts_gzip(&self) -> bool {
        self.items("Accept-Encoding").any(|item| {
            let mut params = item.split(';').map(str::trim);
            let coding = params.next().unwrap_or("");
            let refused = params.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q")
                        && v.trim().parse::<f32>().is_ok_and(|q| q == 0.0)
                })
            });
            (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip"))
                && !refused
        })
    }

    /// True if the client asked for an answer without the peer list (RFC 7240).
    fn prefers_minimal(&self) -> bool {
        self.items("Prefer").any(|item| {
            item.split(';')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("return=minimal"))
        })
    }

    /// True if `If-None-Match` names `etag` (or is `*`); weak tags compare by their value.
    fn matches(&self, etag: &str) -> bool {
        self.items("If-None-Match")
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    }
}

/// An answer holding a list of nodes between `prefix` and `suffix`: gzip-compressed when the
/// client takes it (from the compressed chunks), plain otherwise.
fn list_answer(
    request: &Request<'_>,
    list: Arc<NodeList>,
    prefix: &[u8],
    filter: Filter<'_>,
    suffix: &[u8],
) -> Response {
    let gzip = if request.accepts_gzip() {
        list.select_gzip(filter, prefix, suffix)
    } else {
        None
    };
    let response = match gzip {
        Some(parts) => Response::list(list, parts).with_header("Content-Encoding", "gzip"),
        None => {
            let mut parts = vec![Part::Owned(prefix.to_vec())];
            parts.extend(list.select(filter));
            parts.push(Part::Owned(suffix.to_vec()));
            Response::list(list, parts)
        }
    };
    response.with_header("Vary", "Accept-Encoding")
}

/// The entity tag of a read answer: the gateway run, the registry version, what was asked and
/// how it is encoded.
fn etag(gateway: &Gateway, version: u64, what: &str, gzip: bool) -> String {
    let hash = crc32fast::hash(what.as_bytes());
    let coding = if gzip { "-gz" } else { "" };
    format!("\"{}-{version}-{hash:08x}{coding}\"", gateway.epoch())
}

/// Answers one request, waiting (for a write, with a data directory) until what the answer
/// shows is on disk.
pub fn handle(gateway: &Gateway, request: &Request<'_>) -> Response {
    settled(gateway, answer(gateway, request))
}

/// Waits until `response` may be sent (see [`Response::after`]): the answer itself, or the
/// 503 its write ended in.
pub fn settled(gateway: &Gateway, mut response: Response) -> Response {
    match gateway.settle_answer(response.after.take().map(|after| *after)) {
        Ok(()) => response,
        Err(e) => Response::from(e),
    }
}

/// [`handle`] without the wait: an answer with [`Response::after`] set must not be sent before
/// that is settled (the workers hand it to a thread that sends it once the log's writer says
/// so, and go on with other requests meanwhile).
pub fn answer(gateway: &Gateway, request: &Request<'_>) -> Response {
    let query = request.url.split_once('?').map_or("", |(_, query)| query);
    if !wants_pretty(query) {
        return route(gateway, request).unwrap_or_else(|refusal| refusal);
    }
    // An indented answer is sent plain: the compressed lists are compact JSON.
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("Accept-Encoding"))
        .copied()
        .collect();
    let plain = Request {
        headers: &headers,
        ..*request
    };
    route(gateway, &plain)
        .unwrap_or_else(|refusal| refusal)
        .pretty()
}

fn route(gateway: &Gateway, request: &Request<'_>) -> Result<Response, Response> {
    let (path, query) = match request.url.split_once('?') {
        Some((path, query)) => (path, query),
        None => (request.url, ""),
    };
    // Authorisation comes first: a 404 or 405 would list the routes to anyone.
    let known = Endpoint::of(path);
    authorise(gateway, request, known)?;
    let endpoint = known.ok_or_else(|| Response::error(404, "Not Found"))?;
    let method = request.method;
    if !endpoint.allows(method) {
        return Err(
            Response::error(405, format!("Method {method} not allowed on {path}"))
                .with_header("Allow", endpoint.allow()),
        );
    }
    let is_get = matches!(method, "GET" | "HEAD");
    match endpoint {
        Endpoint::Health => Ok(health(gateway, query)),
        Endpoint::Register => register(gateway, request, &body(request)?),
        Endpoint::Nodes => nodes(gateway, request, query),
        Endpoint::Node => node(gateway, path),
        Endpoint::Leader if is_get => leader(gateway, request, query),
        Endpoint::Leader => set_leader(gateway, &body(request)?),
        Endpoint::Heartbeat => heartbeat(gateway, &body(request)?),
        Endpoint::Remove => remove(gateway, &body(request)?),
        Endpoint::Stats => Ok(Response::json(&gateway.stats())),
        Endpoint::Dashboard => Ok(Response::embedded(
            "text/html; charset=utf-8",
            include_str!("dashboard.html"),
        )),
        Endpoint::OpenApi => Ok(Response::embedded(JSON, OPENAPI)),
        Endpoint::Metrics => Ok(Response {
            content_type: crate::server::metrics::CONTENT_TYPE,
            body: Body::owned(gateway.metrics_text().into_bytes()),
            ..Response::json(&())
        }),
    }
}

/// The OpenAPI 3 document of this HTTP API, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every path the gateway serves, with the methods it accepts there (as in `Allow`).
pub fn routes() -> impl Iterator<Item = (&'static str, &'static str)> {
    Endpoint::ALL.iter().map(|e| (e.path(), e.allow()))
}

/// The paths the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Health,
    Register,
    Nodes,
    /// `/nodes/{node_id}`: one node.
    Node,
    Leader,
    Heartbeat,
    Remove,
    Stats,
    Dashboard,
    OpenApi,
    Metrics,
}

impl Endpoint {
    /// Every endpoint: a path is served only if its endpoint is listed here.
    const ALL: [Endpoint; 11] = [
        Endpoint::Health,
        Endpoint::Register,
        Endpoint::Nodes,
        Endpoint::Node,
        Endpoint::Leader,
        Endpoint::Heartbeat,
        Endpoint::Remove,
        Endpoint::Stats,
        Endpoint::Dashboard,
        Endpoint::OpenApi,
        Endpoint::Metrics,
    ];

    fn of(path: &str) -> Option<Endpoint> {
        if path
            .strip_prefix("/nodes/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        {
            return Some(Endpoint::Node);
        }
        Endpoint::ALL.into_iter().find(|e| e.path() == path)
    }

    fn path(self) -> &'static str {
        match self {
            Endpoint::Health => "/health",
            Endpoint::Register => "/register",
            Endpoint::Nodes => "/nodes",
            Endpoint::Node => "/nodes/{node_id}",
            Endpoint::Leader => "/leader",
            Endpoint::Heartbeat => "/heartbeat",
            Endpoint::Remove => "/remove",
            Endpoint::Stats => "/stats",
            Endpoint::Dashboard => "/",
            Endpoint::OpenApi => "/openapi.json",
            Endpoint::Metrics => "/metrics",
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Endpoint::Health
            | Endpoint::Nodes
            | Endpoint::Node
            | Endpoint::Stats
            | Endpoint::Dashboard
            | Endpoint::OpenApi
            | Endpoint::Metrics => "GET, HEAD",
            Endpoint::Leader => "GET, HEAD, POST",
            Endpoint::Register | Endpoint::Heartbeat | Endpoint::Remove => "POST",
        }
    }

    fn allows(self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

/// The refusal (401, 403) `request` gets from its headers alone, if any: the server asks
/// before anything that costs (reading its body, parking it, looking up its path), so an
/// unauthorised request costs what a `/health` costs.
pub fn unauthorised(gateway: &Gateway, request: &Request<'_>) -> Option<Response> {
    let path = path_of(request);
    check(gateway, request, Endpoint::of(path)).err()
}

/// The one place a request is allowed or refused before it reaches the registry.
///
/// With tokens configured (`--token-file`, `GATEWAY_TOKENS`), `GET` and `HEAD` need a token of
/// any role and every other method a write token, whatever the path: a route added later is
/// covered by its method. `/register`, `/heartbeat` and `/remove` take a node token too, for a
/// `node_id` among the ids it names. `/health` stays open unless `--protect-health`. A path that is not a
/// route, or a method a route does not take, needs a token of either role before it is
/// answered 404 or 405. With no token the gateway is open. A write is logged with the name of
/// the token that made it (the token itself never reaches a log).
fn authorise(
    gateway: &Gateway,
    request: &Request<'_>,
    endpoint: Option<Endpoint>,
) -> Result<(), Response> {
    let name = check(gateway, request, endpoint)?;
    let is_read = matches!(request.method, "GET" | "HEAD");
    if let (Some(name), false) = (&name, is_read) {
        own_node(gateway, request, name)?;
    }
    if let (Some(name), false, Some(endpoint)) = (name, is_read, endpoint) {
        log_write(&name, request, endpoint);
    }
    Ok(())
}

/// The verdict on `request`'s `Authorization` header for `endpoint` (`None`: no such path).
fn check(
    gateway: &Gateway,
    request: &Request<'_>,
    endpoint: Option<Endpoint>,
) -> Result<Option<String>, Response> {
    let is_read = matches!(request.method, "GET" | "HEAD");
    let need = match endpoint.filter(|e| e.allows(request.method)) {
        // The page and the API's description hold no registry data: a browser loads the page
        // before it can be given a token, and a client generator reads the schema. Every call
        // the page makes needs a token like any other.
        Some(Endpoint::Dashboard | Endpoint::OpenApi) if is_read => return Ok(None),
        Some(Endpoint::Health) => Need::Health,
        // A 404 or a 405: any valid token.
        None => Need::Role(Role::Read),
        Some(_) if is_read => Need::Role(Role::Read),
        // What a node does for itself: a node token may, for its own ids (see `authorise`).
        Some(Endpoint::Register | Endpoint::Heartbeat | Endpoint::Remove) => Need::Role(Role::Node),
        Some(_) => Need::Role(Role::Write),
    };
    match gateway.auth().check(request.header("Authorization"), need) {
        Verdict::Allowed(name) => Ok(name),
        // Refusals are logged where they are answered (`running/worker.rs`), rate-limited.
        Verdict::Unauthenticated(why) => Err(Response::error(401, why).with_header(
            "WWW-Authenticate",
            if request.header("Authorization").next().is_some() {
                r#"Bearer realm="cluster-gateway", error="invalid_token""#
            } else {
                r#"Bearer realm="cluster-gateway""#
            },
        )),
        Verdict::Forbidden(name) => {
            let (method, path) = (request.method, path_of(request));
            let needs = match need {
                Need::Role(Role::Node) => "a node token for its node id, or a write token",
                _ => "a write token",
            };
            let message = match gateway.auth().node_ids(request.header("Authorization")) {
                Some(ids) => format!(
                    "token {name:?} is a node token (node ids {ids}): it may register, \
                     heartbeat and remove those nodes only; {method} {path} needs {needs}"
                ),
                None => format!("token {name:?} may only read; {method} {path} needs {needs}"),
            };
            Err(forbidden(message))
        }
    }
}

fn forbidden(message: String) -> Response {
    Response::error(403, message).with_header(
        "WWW-Authenticate",
        r#"Bearer realm="cluster-gateway", error="insufficient_scope""#,
    )
}

/// A node token's write must name one of its ids as `node_id`: checked once the body is read
/// (a body whose `node_id` is missing or not a number is the handler's 400).
fn own_node(gateway: &Gateway, request: &Request<'_>, name: &str) -> Result<(), Response> {
    let Some(ids) = gateway.auth().node_ids(request.header("Authorization")) else {
        return Ok(());
    };
    let node_id = serde_json::from_slice::<Value>(request.body)
        .ok()
        .and_then(|body| body.get("node_id").and_then(Value::as_u64));
    match node_id {
        Some(id) if !ids.contains(id) => Err(forbidden(format!(
            "token {name:?} may act for node ids {ids} only; node_id {id} is not one of them"
        ))),
        _ => Ok(()),
    }
}

fn path_of<'r>(request: &Request<'r>) -> &'r str {
    request.url.split('?').next().unwrap_or("")
}

/// "ops: POST /remove node_id=7": who changed what. Heartbeats, the steady traffic, at DEBUG.
fn log_write(name: &str, request: &Request<'_>, endpoint: Endpoint) {
    let level = if endpoint == Endpoint::Heartbeat {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    if !log::log_enabled!(level) {
        return;
    }
    #[derive(serde::Deserialize)]
    struct Target {
        node_id: Option<Value>,
        leader_id: Option<Value>,
    }
    let target = serde_json::from_slice::<Target>(request.body).ok();
    let id = |v: Option<Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "?".to_owned());
    let what = match target {
        Some(Target {
            leader_id: Some(leader),
            ..
        }) => format!(" leader_id={leader}"),
        Some(Target { node_id, .. }) => format!(" node_id={}", id(node_id)),
        None => String::new(),
    };
    log::log!(
        level,
        "{name}: {} {}{what}",
        request.method,
        path_of(request)
    );
}

fn body(request: &Request<'_>) -> Result<Map<String, Value>, Response> {
    Ok(api::parse_object(request.body)?)
}

/// `GET /health`: 200 `healthy` only while the gateway can take writes; otherwise 503
/// `unhealthy` with the reason in `store_error`, so a load balancer takes a gateway whose
/// writes fail out of rotation. `GET /health?live` is the liveness probe: 200 whenever the
/// process answers, with the same body.
fn health(gateway: &Gateway, query: &str) -> Response {
    let live = query_pairs(query).any(|(name, _)| name == "live");
    let store_error = gateway.durability().failed;
    let ready = store_error.is_none();
    let answer = Response::json(&Health {
        status: if ready || live {
            "healthy"
        } else {
            "unhealthy"
        }
        .to_owned(),
        timestamp: unix_now(),
        version: crate::VERSION.to_owned(),
        epoch: gateway.epoch().to_owned(),
        settings: gateway.settings(),
        store_error,
    });
    if ready || live {
        answer
    } else {
        Response {
            status: 503,
            ..answer
        }
        .with_header("Retry-After", response::RETRY_AFTER)
    }
}

fn register(
    gateway: &Gateway,
    request: &Request<'_>,
    body: &Map<String, Value>,
) -> Result<Response, Response> {
    let registration = Registration::from_body(body)?;
    let node_id = registration.node_id;
    // One wait for the disk covers the change and what the answer shows.
    if request.prefers_minimal() {
        // No list: the answer costs the registrant and the leader, whatever the cluster's size.
        let (registered, version, leader, after) =
            gateway.register_unsettled_leader(registration)?;
        return Ok(Response {
            after: after.map(Box::new),
            ..minimal_answer(
                register_head(&registered, node_id, version),
                register_tail(gateway, &leader_json(leader)),
            )
        });
    }
    let (registered, list, after) = gateway.register_unsettled(registration)?;
    let leader = match list.leader.and_then(|id| list.node(id)) {
        Some(Part::Cached { chunk, range }) => list.bytes(chunk, range).to_vec(),
        _ => b"null".to_vec(),
    };
    let tail = register_tail(gateway, &leader);
    let mut prefix = register_head(&registered, node_id, list.version).into_bytes();
    prefix.extend_from_slice(br#","nodes":"#);
    let filter = Filter {
        exclude: Some(node_id),
        ..Filter::default()
    };
    Ok(Response {
        after: after.map(Box::new),
        ..list_answer(request, list, &prefix, filter, &tail)
    })
}

/// A `/register` answer up to its list: status, id, bootstrap role, version.
fn register_head(registered: &Registered, node_id: NodeId, version: u64) -> String {
    let status = if registered.created {
        "registered"
    } else {
        "updated"
    };
    format!(
        r#"{{"status":"{status}","node_id":{node_id},"is_bootstrap":{},"registry_version":{version}"#,
        registered.is_bootstrap
    )
}

/// A `/register` answer after its list: the leader (JSON), the epoch and the settings.
fn register_tail(gateway: &Gateway, leader: &[u8]) -> Vec<u8> {
    let mut tail = br#","leader":"#.to_vec();
    tail.extend_from_slice(leader);
    write!(tail, r#","epoch":"{}","#, gateway.epoch()).expect("writing to a Vec");
    let settings = serde_json::to_vec(&gateway.settings()).expect("settings serialise");
    // `{"heartbeat_interval":..}` joins the answer object without its braces.
    tail.extend_from_slice(&settings[1..]);
    tail
}

fn leader_json(leader: Option<NodeRecord>) -> Vec<u8> {
    match leader {
        Some(record) => serde_json::to_vec(&record).expect("a node record serialises"),
        None => b"null".to_vec(),
    }
}

/// A `/register` answer without the list (`Prefer: return=minimal`).
fn minimal_answer(head: String, tail: Vec<u8>) -> Response {
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&tail);
    Response {
        body: Body::owned(bytes),
        ..Response::json(&())
    }
    .with_header("Preference-Applied", "return=minimal")
}

/// How long a long-poll may be held, and the version it waits to see change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// The registry version the client has; a change past it answers the request.
    pub index: u64,
    /// How long to hold the request at most (jitter included).
    pub wait: Duration,
}

/// Whether `request` asks for an event stream (`GET /nodes?changes=1&stream=1`): `None` if
/// not (or if it will be refused anyway: routing answers it as usual), else where the stream
/// starts, or the answer that refuses it.
pub fn streams(gateway: &Gateway, request: &Request<'_>) -> Option<Result<StreamStart, Response>> {
    if request.method != "GET" || unauthorised(gateway, request).is_some() {
        return None;
    }
    let (path, query) = request.url.split_once('?')?;
    if Endpoint::of(path) != Some(Endpoint::Nodes) {
        return None;
    }
    let query = Query::parse(query, Endpoint::Nodes).ok()?;
    query.stream.then(|| changes::stream_start(gateway, &query))
}

/// Whether `request` is a long-poll to hold until the registry changes: a `GET /nodes` or
/// `GET /leader` with `index` (or `wait` and an `If-None-Match`) that describes what the
/// registry shows now. `None`: answer at once with [`handle`] (a bad query, a registry already
/// past the client's index, another gateway run's index or epoch or tag, `wait=0`, a store
/// that cannot be read, a request that will be refused 401 or 403).
pub fn parks(gateway: &Gateway, request: &Request<'_>) -> Option<Wait> {
    if !matches!(request.method, "GET" | "HEAD") {
        return None;
    }
    // Never park what will be refused: the wait would give away the version and its changes.
    if unauthorised(gateway, request).is_some() {
        return None;
    }
    let (path, query) = request.url.split_once('?')?;
    let endpoint =
        Endpoint::of(path).filter(|e| matches!(e, Endpoint::Nodes | Endpoint::Leader))?;
    let query = Query::parse(query, endpoint).ok()?;
    // A stream is never parked: a GET is opened (`streams`), a HEAD answered at once.
    if query.stream {
        return None;
    }
    // A delta answer has no entity tag: only its index says what the client has.
    let tagged = !query.changes && request.header("If-None-Match").next().is_some();
    if query.index.is_none() && !(tagged && query.wait.is_some()) {
        return None;
    }
    let wait = query
        .wait
        .unwrap_or(long_polls::DEFAULT_WAIT)
        .min(long_polls::MAX_WAIT);
    // A store that cannot be read answers 503 at once rather than holding the request.
    if wait.is_zero()
        || query.epoch.as_deref().is_some_and(|e| e != gateway.epoch())
        || gateway.readable().is_err()
    {
        return None;
    }
    let version = gateway.version();
    if query.index.is_some_and(|index| index != version) {
        return None;
    }
    if tagged {
        let tag = match endpoint {
            Endpoint::Nodes => nodes_tag(gateway, request, &query, version),
            _ => etag(gateway, version, "leader", false),
        };
        if !request.matches(&tag) {
            return None;
        }
    }
    Some(Wait {
        index: version,
        wait: wait + long_polls::jitter(wait),
    })
}

/// The entity tag of a `/nodes` answer at `version`.
fn nodes_tag(gateway: &Gateway, request: &Request<'_>, query: &Query, version: u64) -> String {
    let asked = format!(
        "nodes;{:?};{};{:?}",
        query.exclude,
        query.include_suspected,
        query.capability.as_deref()
    );
    let gzip = request.accepts_gzip() && query.capability.is_none();
    etag(gateway, version, &asked, gzip)
}

/// `X-Gateway-Index` and `X-Gateway-Epoch`: what a long-poll sends next time.
fn with_index(response: Response, gateway: &Gateway, version: u64) -> Response {
    response
        .with_header("X-Gateway-Index", version.to_string())
        .with_header("X-Gateway-Epoch", gateway.epoch())
}

/// `GET /nodes/{node_id}`: that node's record, as `/nodes` lists it (suspected or not), or 404.
fn node(gateway: &Gateway, path: &str) -> Result<Response, Response> {
    let id = path.strip_prefix("/nodes/").unwrap_or_default();
    let node_id = api::node_id_from_query(id)?;
    gateway.readable()?;
    let list = gateway.list();
    match list.node(node_id) {
        Some(Part::Cached { chunk, range }) => {
            let answer = Response {
                body: Body::owned(list.bytes(chunk, range).to_vec()),
                ..Response::json(&())
            };
            Ok(with_index(answer, gateway, list.version))
        }
        _ => Err(Response::error(
            404,
            format!("node {node_id} is not registered"),
        )),
    }
}

fn nodes(gateway: &Gateway, request: &Request<'_>, query: &str) -> Result<Response, Response> {
    let query = Query::parse(query, Endpoint::Nodes)?;
    if query.changes {
        return changes::answer(gateway, request, &query);
    }
    gateway.readable()?;
    let list = gateway.list();
    let version = list.version;
    let tag = nodes_tag(gateway, request, &query, version);
    if request.matches(&tag) {
        let answer = Response::not_modified(tag).with_header("Vary", "Accept-Encoding");
        return Ok(with_index(answer, gateway, version));
    }
    let suffix = format!(r#","registry_version":{version}}}"#);
    let answer = list_answer(
        request,
        list,
        br#"{"nodes":"#,
        query.filter(),
        suffix.as_bytes(),
    )
    .with_header("ETag", tag);
    Ok(with_index(answer, gateway, version))
}

fn leader(gateway: &Gateway, request: &Request<'_>, query: &str) -> Result<Response, Response> {
    Query::parse(query, Endpoint::Leader)?;
    gateway.readable()?;
    let list = gateway.list();
    let version = list.version;
    let tag = etag(gateway, version, "leader", false);
    if request.matches(&tag) {
        return Ok(with_index(Response::not_modified(tag), gateway, version));
    }
    let answer = match list.leader.and_then(|id| list.node(id)) {
        Some(leader) => {
            let parts = vec![
                Part::Static(br#"{"leader":"#),
                leader,
                Part::Owned(format!(r#","registry_version":{version}}}"#).into_bytes()),
            ];
            Response::list(list, parts)
        }
        None => Response::json(&api::LeaderResponse {
            leader: None,
            registry_version: None,
            message: Some("No leader currently registered".to_owned()),
        }),
    };
    Ok(with_index(
        answer.with_header("ETag", tag),
        gateway,
        version,
    ))
}

fn set_leader(gateway: &Gateway, body: &Map<String, Value>) -> Result<Response, Response> {
    let leader_id = api::required_id(body, "leader_id")?;
    let answer = if gateway.set_leader(leader_id)? {
        SetLeaderResponse {
            status: SetLeaderStatus::Updated,
            leader_id: Some(leader_id),
            message: None,
        }
    } else {
        SetLeaderResponse {
            status: SetLeaderStatus::Failed,
            leader_id: None,
            message: Some("Leader not found in registry".to_owned()),
        }
    };
    Ok(Response::json(&answer))
}

fn heartbeat(gateway: &Gateway, body: &Map<String, Value>) -> Result<Response, Response> {
    let node_id: NodeId = api::required_id(body, "node_id")?;
    let answer = match gateway.heartbeat(node_id)? {
        Some(version) => HeartbeatResponse {
            status: HeartbeatStatus::Acknowledged,
            registry_version: Some(version),
            epoch: Some(gateway.epoch().to_owned()),
        },
        None => HeartbeatResponse {
            status: HeartbeatStatus::NotFound,
            registry_version: None,
            epoch: Some(gateway.epoch().to_owned()),
        },
    };
    Ok(Response::json(&answer))
}

fn remove(gateway: &Gateway, body: &Map<String, Value>) -> Result<Response, Response> {
    let node_id = api::required_id(body, "node_id")?;
    let status = if gateway.remove(node_id)? {
        RemoveStatus::Removed
    } else {
        RemoveStatus::NotFound
    };
    Ok(Response::json(&RemoveResponse { status, node_id }))
}

#[cfg(test)]
mod tests;
