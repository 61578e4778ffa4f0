//! How the client reaches its gateways: one request at a time over a fresh connection (a
//! watch's long-polls keep their one connection, on an agent of the watch's own that stopping
//! the watch shuts down: [`WatchAgent`]), the gateways in turn from the one in use, retries with
//! full-jitter backoff, and an overall deadline that bounds every call, retries and pauses
//! included. An event stream ([`Transport::open_stream`]) is opened the same way; its body is
//! then read without a deadline, bounded by the silence between reads.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{ErrorBody, limits};
use crate::client::error::ClientError;
#[cfg(feature = "tls")]
use ureq::tls::{PemItem, RootCerts, TlsConfig, parse_pem};
/// Without the `tls` feature there are no roots to hold: `https://` is refused earlier.
#[cfg(not(feature = "tls"))]
type RootCerts = ();

/// Largest answer the client reads (a peer list of 100,000 nodes is about 20 MB): above the
/// largest list a gateway's budget lets it send (see [`limits::REGISTRY_BYTES`]).
const MAX_ANSWER_BYTES: u64 = limits::ANSWER_BYTES;
/// Longest pause between two tries of one request.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub(crate) enum Method {
    Get,
    Post,
}

/// Sends requests to the gateways in turn, with retries.
#[derive(Debug)]
pub(crate) struct Transport {
    agent: ureq::Agent,
    /// What [`Transport::watch_agent`] builds an agent from.
    proxy: Option<ureq::Proxy>,
    roots: Option<RootCerts>,
    /// Base URLs, e.g. `http://10.0.0.1:8080`. Empty when `invalid` says why.
    gateways: Vec<String>,
    /// Why no gateway can be used (an address that does not form a URL): every call fails
    /// with it at once.
    invalid: Option<ClientError>,
    /// Index of the gateway that answered last: requests start there.
    current: AtomicUsize,
    attempts: u32,
    base_delay: Duration,
    /// Longest single try, connection included.
    timeout: Duration,
    /// `Authorization: Bearer <token>` on every request, when set.
    authorization: Option<Redacted>,
}

/// Header text that holds a token: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Redacted(pub(crate) String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a [`Transport`] is built from.
pub(crate) struct TransportConfig<'a> {
    pub(crate) gateways: &'a [String],
    pub(crate) timeout: Duration,
    pub(crate) attempts: u32,
    pub(crate) base_delay: Duration,
    pub(crate) proxy_from_env: bool,
    /// The bearer token, as given.
    pub(crate) token: Option<&'a Redacted>,
    /// PEM file of the CA certificates that `https://` gateways are checked against, instead of
    /// the bundled public roots.
    pub(crate) ca_file: Option<&'a Path>,
}

impl Transport {
    /// Checks the addresses; `Err` names the first that cannot be used.
    pub(crate) fn new(config: TransportConfig<'_>) -> Result<Transport, ClientError> {
        if config.gateways.is_empty() {
            return Err(ClientError::InvalidAddress(
                "no gateway address given".to_owned(),
            ));
        }
        let gateways = config
            .gateways
            .iter()
            .map(|a| base_url(a))
            .collect::<Result<Vec<_>, _>>()?;
        let roots = match config.ca_file {
            Some(file) => Some(root_certs(file)?),
            None => None,
        };
        let authorization = match config.token {
            Some(token) => Some(authorization(token)?),
            None => None,
        };
        let mut transport = Transport::with(gateways, None, &config, roots);
        transport.authorization = authorization;
        Ok(transport)
    }

    /// A transport whose every call fails with `error`.
    pub(crate) fn invalid(error: ClientError, config: TransportConfig<'_>) -> Transport {
        Transport::with(Vec::new(), Some(error), &config, None)
    }

    fn with(
        gateways: Vec<String>,
        invalid: Option<ClientError>,
        config: &TransportConfig<'_>,
        roots: Option<RootCerts>,
    ) -> Transport {
        let proxy = if config.proxy_from_env {
            ureq::Proxy::try_from_env()
        } else {
            None
        };
        // A fresh connection per request (idle 0): a pooled one can outlive the gateway
        // process it was made to and hang the next heartbeat until the timeout. At one request
        // per heartbeat interval the extra handshake costs nothing that matters.
        let agent = build_agent(config.timeout, &proxy, &roots, 0);
        Transport {
            agent,
            proxy,
            roots,
            gateways,
            invalid,
            current: AtomicUsize::new(0),
            attempts: config.attempts.max(1),
            base_delay: config.base_delay,
            timeout: config.timeout,
            authorization: None,
        }
    }

    /// An agent for one watch thread's requests (see [`WatchAgent`]).
    pub(crate) fn watch_agent(&self) -> WatchAgent {
        WatchAgent(build_agent(self.timeout, &self.proxy, &self.roots, 1))
    }

    /// The gateway in use: requests start there.
    pub(crate) fn current(&self) -> &str {
        if self.gateways.is_empty() {
            return "";
        }
        &self.gateways[self.current.load(Ordering::Relaxed) % self.gateways.len()]
    }

    /// Why no gateway can be used, if that is so.
    pub(crate) fn invalid_error(&self) -> Option<&ClientError> {
        self.invalid.as_ref()
    }

    /// Longest single try.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The first backoff's upper bound.
    pub(crate) fn base_delay(&self) -> Duration {
        self.base_delay
    }

    /// Sends one request, trying the gateways in turn from the one in use, and gives up at
    /// `deadline`.
    ///
    /// A connection failure or a 5xx moves on to the next address at once; once every address
    /// failed, the next round waits a random time up to `base_delay * 2^round` (full jitter).
    /// No try runs past `deadline`: each gets the time left, at most the timeout. `pause` does
    /// the waiting and returns false to give up (the heartbeat thread stops that way). A 4xx
    /// is the gateway's answer and is returned at once. When every try failed, the error is
    /// that of the gateway in use, not of the last one tried.
    ///
    /// Extra request headers (`Prefer`, `If-None-Match`) go with every try; the reply carries
    /// the answer's `ETag` (and `X-Gateway-Index`, `X-Gateway-Epoch`), and no value for a
    /// `304 Not Modified`. `held` is a watch's agent and how long the gateway may hold the
    /// request on purpose (a long-poll's wait): each try may take that much longer than the
    /// timeout.
    #[allow(clippy::too_many_arguments)] // One call, every part of it; a struct would be noise.
    pub(crate) fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        headers: &[(&str, &str)],
        pause: &dyn Fn(Duration) -> bool,
        deadline: Instant,
        held: Option<(&WatchAgent, Duration)>,
    ) -> Result<Reply<T>, ClientError> {
        let (agent, wait) = match held {
            Some((agent, wait)) => (&agent.0, wait),
            None => (&self.agent, Duration::ZERO),
        };
        let tries = (self.attempts as usize).max(self.gateways.len());
        self.in_turn(pause, deadline, tries, |base, left| {
            let timeout = left.min(self.timeout + wait);
            self.once(agent, base, method, path, body, headers, timeout)
        })
    }

    /// `GET path` as an event stream (`Accept: text/event-stream`) on a watch's agent, the
    /// gateways tried in turn as [`Transport::call_with`] does, but each once: no round of
    /// retries after a pause (the watch paces its own rounds). An answer that is an event stream is
    /// returned open: its body has no deadline, but a read that waits more than `silence` for
    /// a byte fails (a gateway sends a keepalive well within it). Any other answer (a gateway
    /// that ignores the request for a stream) is read as `call_with` reads it.
    pub(crate) fn open_stream<T: DeserializeOwned>(
        &self,
        agent: &WatchAgent,
        path: &str,
        pause: &dyn Fn(Duration) -> bool,
        deadline: Instant,
        silence: Duration,
    ) -> Result<Opened<T>, ClientError> {
        self.in_turn(pause, deadline, self.gateways.len(), |base, left| {
            let timeout = left.min(self.timeout);
            let url = format!("{base}{path}");
            let bearer = self.authorization.as_ref().map(|a| a.0.as_str());
            // The try's time for everything up to the answer's head; then only silence.
            let request = with_token(agent.0.get(&url), bearer)
                .header("Accept", "text/event-stream")
                .config()
                .timeout_global(None)
                .timeout_resolve(Some(timeout))
                .timeout_send_request(Some(timeout))
                .timeout_recv_response(Some(timeout))
                .timeout_recv_body(None)
                .timeout_per_read(Some(silence))
                .build();
            let response = request.call().map_err(|e| transport_error(base, e))?;
            let head = Head::of(&response);
            let events = response.status().as_u16() == 200
                && head.content_type.as_deref().is_some_and(|t| {
                    t.trim()
                        .to_ascii_lowercase()
                        .starts_with("text/event-stream")
                });
            if !events {
                return read_answer(base, response, head).map(Opened::Answer);
            }
            Ok(Opened::Events(Events {
                base: base.to_owned(),
                index: head.index,
                epoch: head.epoch,
                body: response.into_body().into_reader(),
            }))
        })
    }

    /// Runs `once` on the gateways in turn from the one in use (see [`Transport::call_with`]),
    /// with the address and the time left until `deadline`, `tries` times at most.
    fn in_turn<R>(
        &self,
        pause: &dyn Fn(Duration) -> bool,
        deadline: Instant,
        tries: usize,
        mut once: impl FnMut(&str, Duration) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        if let Some(invalid) = &self.invalid {
            return Err(invalid.clone());
        }
        let count = self.gateways.len();
        let first = self.current.load(Ordering::Relaxed) % count;
        let mut in_use_error = None;
        let mut last_error = None;
        for attempt in 0..tries {
            if attempt > 0 && attempt % count == 0 {
                let round = (attempt / count - 1) as u32;
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !pause(backoff(self.base_delay, round).min(left)) {
                    break;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let index = (first + attempt) % count;
            match once(&self.gateways[index], left) {
                Ok(answer) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) if retryable(&e) => {
                    log::debug!("{e}");
                    if index == first {
                        in_use_error = Some(e.clone());
                    }
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(in_use_error
            .or(last_error)
            .unwrap_or_else(|| ClientError::Timeout {
                address: self.current().to_owned(),
            }))
    }

    #[allow(clippy::too_many_arguments)] // `call_with`'s parts, the agent and the try's time.
    fn once<T: DeserializeOwned>(
        &self,
        agent: &ureq::Agent,
        base: &str,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply<T>, ClientError> {
        let url = format!("{base}{path}");
        let bearer = self.authorization.as_ref().map(|a| a.0.as_str());
        let sent = match (method, body) {
            (Method::Get, _) => {
                let mut request = with_token(agent.get(&url), bearer)
                    .config()
                    .timeout_global(Some(timeout))
                    .build();
                for &(name, value) in headers {
                    request = request.header(name, value);
                }
                request.call()
            }
            (Method::Post, body) => {
                let mut request = with_token(agent.post(&url), bearer)
                    .config()
                    .timeout_global(Some(timeout))
                    .build();
                for &(name, value) in headers {
                    request = request.header(name, value);
                }
                match body {
                    Some(body) => request
                        .header("Content-Type", "application/json")
                        .send(&serde_json::to_vec(body).expect("request bodies serialise")[..]),
                    None => request.send_empty(),
                }
            }
        };
        let response = sent.map_err(|e| transport_error(base, e))?;
        let head = Head::of(&response);
        read_answer(base, response, head)
    }
}

/// What the client reads from an answer's head.
struct Head {
    etag: Option<String>,
    content_type: Option<String>,
    index: Option<u64>,
    epoch: Option<String>,
}

impl Head {
    fn of(response: &ureq::http::Response<ureq::Body>) -> Head {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Head {
            etag: header("ETag"),
            content_type: header("Content-Type"),
            index: header("X-Gateway-Index").and_then(|v| v.trim().parse().ok()),
            epoch: header("X-Gateway-Epoch"),
        }
    }
}

/// Reads the JSON answer `response` (from `base`), whose head says `head`: a 4xx or 5xx is an
/// error with the gateway's message, a 304 has no value.
fn read_answer<T: DeserializeOwned>(
    base: &str,
    mut response: ureq::http::Response<ureq::Body>,
    head: Head,
) -> Result<Reply<T>, ClientError> {
    let status = response.status().as_u16();
    let Head {
        etag,
        content_type,
        index,
        epoch,
    } = head;
    if status == 304 {
        return Ok(Reply {
            value: None,
            etag,
            index,
            epoch,
        });
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .map_err(|e| transport_error(base, e))?;
    if status >= 400 {
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                html_page(content_type.as_deref(), &text)
                    .unwrap_or_else(|| text.chars().take(200).collect())
            });
        return Err(ClientError::Gateway {
            address: base.to_owned(),
            status,
            message,
        });
    }
    let value = serde_json::from_str(&text).map_err(|e| ClientError::InvalidResponse {
        address: base.to_owned(),
        reason: html_page(content_type.as_deref(), &text).unwrap_or_else(|| e.to_string()),
    })?;
    Ok(Reply {
        value: Some(value),
        etag,
        index,
        epoch,
    })
}

/// Builds an agent: `idle` connections kept between requests, `timeout` for each (a call
/// narrows it), through `proxy`, `https://` checked against `roots` (else the public roots).
fn build_agent(
    timeout: Duration,
    proxy: &Option<ureq::Proxy>,
    roots: &Option<RootCerts>,
    idle: usize,
) -> ureq::Agent {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
        .proxy(proxy.clone())
        .max_idle_connections(idle)
        .max_idle_connections_per_host(idle)
        .user_agent(format!("cluster-gateway-client/{}", crate::VERSION));
    #[cfg(feature = "tls")]
    let agent = agent.tls_config(
        TlsConfig::builder()
            .root_certs(roots.clone().unwrap_or(RootCerts::WebPki))
            .build(),
    );
    #[cfg(not(feature = "tls"))]
    let _: &Option<RootCerts> = roots;
    ureq::Agent::with_parts(
        agent.build(),
        ureq::unversioned::transport::DefaultConnector::new(),
        LiteralFirst::default(),
    )
}

/// One watch thread's agent: its long-polls keep their one connection between requests (a
/// watch under churn asks again at once after every answer, and a fresh connection for each
/// cost the gateway and the node several times the answer itself; a connection the gateway
/// dropped fails its try, and the next try opens a new one), and its event stream. Stopping
/// the watch shuts it down ([`WatchAgent::shutdown`]): the request parked or the stream being
/// read ends at once, and every request after fails at once.
#[derive(Debug, Clone)]
pub(crate) struct WatchAgent(ureq::Agent);

impl WatchAgent {
    /// Closes the agent's connections, those in use included, for good.
    pub(crate) fn shutdown(&self) {
        self.0.clone().shutdown();
    }
}

/// What [`Transport::open_stream`] got.
#[derive(Debug)]
pub(crate) enum Opened<T> {
    /// An event stream, open.
    Events(Events),
    /// An answer that is not an event stream, read.
    Answer(Reply<T>),
}

/// An open event stream: the body, read as it comes.
pub(crate) struct Events {
    /// The gateway that answered.
    pub(crate) base: String,
    /// `X-Gateway-Index` and `X-Gateway-Epoch`: where the stream starts.
    pub(crate) index: Option<u64>,
    pub(crate) epoch: Option<String>,
    pub(crate) body: ureq::BodyReader<'static>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("base", &self.base)
            .field("index", &self.index)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// For an answer that is an HTML page (a proxy's error page, a web server's default page),
/// what to say instead of a JSON parse error: that it is one, with its title.
fn html_page(content_type: Option<&str>, text: &str) -> Option<String> {
    let start = text.trim_start();
    let html = content_type.is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("text/html"))
        || start.starts_with('<');
    if !html {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|open| {
        let from = open + "<title>".len();
        let len = lower[from..].find("</title>")?;
        let title: String = text[from..from + len]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Some(title.chars().take(80).collect::<String>())
    });
    let page = match title {
        Some(title) if !title.is_empty() => format!("an HTML page titled {title:?}"),
        _ => "an HTML page".to_owned(),
    };
    Some(format!(
        "{page}, not the gateway's JSON: a proxy's error page, or an address that is not a \
         cluster-gateway"
    ))
}

/// Resolves a gateway's address for ureq: an IP address as it is, a name as ureq does.
/// ureq's own resolver runs the lookup on a thread of its own whenever a timeout bounds the
/// request (always, here), and does so for every request, an IP address's and one over a kept
/// connection included: a thread started and ended for each answer a watch takes, most of a
/// node's CPU under churn. A name still goes through that thread, so that a lookup never runs
/// past the deadline.
#[derive(Debug, Default)]
struct LiteralFirst(ureq::unversioned::resolver::DefaultResolver);

impl ureq::unversioned::resolver::Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let literal = uri.host().and_then(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .ok()
        });
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        });
        match (literal, port) {
            (Some(ip), Some(port)) => {
                let mut addresses = self.empty();
                addresses.push(std::net::SocketAddr::new(ip, port));
                Ok(addresses)
            }
            _ => self.0.resolve(uri, config, timeout),
        }
    }
}

/// An answer, with its entity tag.
#[derive(Debug)]
pub(crate) struct Reply<T> {
    /// `None` for a `304 Not Modified`.
    pub(crate) value: Option<T>,
    /// The answer's `ETag`, if it had one.
    pub(crate) etag: Option<String>,
    /// `X-Gateway-Index`: the registry version a long-poll sends back (none from the original
    /// gateway, which does not long-poll).
    pub(crate) index: Option<u64>,
    /// `X-Gateway-Epoch`: the gateway run the index belongs to.
    pub(crate) epoch: Option<String>,
}

impl<T> Reply<T> {
    /// The answer to a request that was not conditional: a 304 is not one.
    pub(crate) fn unconditional(self, address: &str) -> Result<T, ClientError> {
        self.value.ok_or_else(|| ClientError::InvalidResponse {
            address: address.to_owned(),
            reason: "304 Not Modified to a request that was not conditional".to_owned(),
        })
    }
}

fn with_token<B>(
    request: ureq::RequestBuilder<B>,
    bearer: Option<&str>,
) -> ureq::RequestBuilder<B> {
    match bearer {
        Some(header) => request.header("Authorization", header),
        None => request,
    }
}

/// `Bearer <token>`, once the token is known to fit in a header as it is.
fn authorization(token: &Redacted) -> Result<Redacted, ClientError> {
    let token = token.0.trim();
    if token.is_empty() {
        return Err(ClientError::InvalidSetting("the token is empty".to_owned()));
    }
    if !token.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(ClientError::InvalidSetting(
            "the token must be visible ASCII characters, without spaces".to_owned(),
        ));
    }
    Ok(Redacted(format!("Bearer {token}")))
}

/// The CA certificates in a PEM file.
#[cfg(not(feature = "tls"))]
fn root_certs(file: &Path) -> Result<RootCerts, ClientError> {
    Err(ClientError::InvalidSetting(format!(
        "CA file {}: a CA file is for https://, which needs the `tls` feature",
        file.display()
    )))
}

#[cfg(feature = "tls")]
fn root_certs(file: &Path) -> Result<RootCerts, ClientError> {
    let invalid =
        |why: String| ClientError::InvalidSetting(format!("CA file {}: {why}", file.display()));
    // Bounded: a wrong path (/dev/zero) is refused, not read until the memory runs out. A
    // system's whole bundle of public roots is about 200 KiB.
    const MAX_PEM_BYTES: u64 = 16 * 1024 * 1024;
    let pem = crate::files::read_small(file, MAX_PEM_BYTES).map_err(invalid)?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(invalid(e.to_string())),
        }
    }
    if certs.is_empty() {
        return Err(invalid("no PEM certificate in it".to_owned()));
    }
    Ok(RootCerts::from(certs))
}

/// True for failures worth another try or another gateway: the connection, or a 5xx. A 401 or
/// a 403 is a 4xx: the token is wrong wherever the request goes, and is never retried.
pub(crate) fn retryable(error: &ClientError) -> bool {
    error.is_transport() || matches!(error, ClientError::Gateway { status, .. } if *status >= 500)
}

fn transport_error(address: &str, error: ureq::Error) -> ClientError {
    match error {
        ureq::Error::Timeout(_) => ClientError::Timeout {
            address: address.to_owned(),
        },
        ureq::Error::BodyExceedsLimit(limit) => ClientError::InvalidResponse {
            address: address.to_owned(),
            reason: format!("answer larger than {limit} bytes"),
        },
        other => ClientError::Unreachable {
            address: address.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// `host:port` or an http(s) URL, as a base URL without a trailing slash.
pub(crate) fn base_url(address: &str) -> Result<String, ClientError> {
    let address = address.trim();
    let invalid = |why: &str| ClientError::InvalidAddress(format!("{address:?}: {why}"));
    if address.is_empty() {
        return Err(invalid("empty"));
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("contains spaces or control characters"));
    }
    if address.starts_with("https://") && !cfg!(feature = "tls") {
        return Err(invalid(
            "https:// needs the client's TLS support: build cluster-gateway with the `tls` feature",
        ));
    }
    let url = if address.starts_with("http://") || address.starts_with("https://") {
        address.trim_end_matches('/').to_owned()
    } else if address.contains("://") {
        return Err(invalid("only http:// and https:// are supported"));
    } else {
        format!("http://{address}")
    };
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    if authority.is_empty() || authority.starts_with(':') {
        return Err(invalid("no host"));
    }
    Ok(url)
}

/// A random pause up to `base * 2^round`, capped (full jitter).
pub(crate) fn backoff(base: Duration, round: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << round.min(16)).min(MAX_BACKOFF);
    ceiling.mul_f64(random_unit())
}

/// A random number in [0, 1) without a dependency: std's hasher keys are random per instance.
pub(crate) fn random_unit() -> f64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The caller's pause between retry rounds: a plain sleep (bounded by the call's deadline).
pub(crate) fn sleep(duration: Duration) -> bool {
    std::thread::sleep(duration);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_base_urls() {
        assert_eq!(base_url("localhost:8080").unwrap(), "http://localhost:8080");
        assert_eq!(
            base_url("https://gw.example/").unwrap(),
            "https://gw.example"
        );
        assert!(base_url("").is_err());
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("a b:1").is_err());
        assert!(base_url("gw host:8080").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for round in 0..40 {
            let ceiling = Duration::from_millis(100 << round.min(16)).min(MAX_BACKOFF);
            let pauses: Vec<Duration> = (0..200)
                .map(|_| backoff(Duration::from_millis(100), round))
                .collect();
            assert!(pauses.iter().all(|&d| d <= ceiling), "round {round}");
            // Full jitter spreads pauses over the whole range: with 200 draws, the chance that
            // none is above half the ceiling, or none below it, is 2^-200. A backoff of zero, or
            // one that does not grow with the round, fails here.
            assert!(
                pauses.iter().any(|&d| d > ceiling / 2),
                "round {round}: {pauses:?}"
            );
            assert!(
                pauses.iter().any(|&d| d < ceiling / 2),
                "round {round}: {pauses:?}"
            );
        }
    }

    #[test]
    fn random_unit_is_in_range_and_varies() {
        let samples: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }
}
