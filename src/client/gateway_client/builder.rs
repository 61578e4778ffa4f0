//! [`ClientBuilder`]: every setting of a [`GatewayClient`], with the original client's defaults.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::client::error::ClientError;
use crate::client::session::{Shared, State};
use crate::client::transport::{Redacted, Transport, TransportConfig};
use crate::client::watch_thread::DEFAULT_WATCH_WAIT;

use super::*;

/// Settings for a [`GatewayClient`], with the original client's defaults.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    gateways: Vec<String>,
    timeout: Duration,
    heartbeat_interval: Option<Duration>,
    deadline: Option<Duration>,
    retry_attempts: u32,
    retry_base_delay: Duration,
    proxy_from_env: bool,
    token: Option<Redacted>,
    ca_file: Option<PathBuf>,
    watch: bool,
    watch_wait: Duration,
    fail_fast_wait: Duration,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            gateways: Vec::new(),
            timeout: Duration::from_secs(10),
            heartbeat_interval: None,
            deadline: None,
            retry_attempts: 3,
            retry_base_delay: Duration::from_secs(1),
            proxy_from_env: false,
            token: None,
            ca_file: None,
            watch: false,
            watch_wait: DEFAULT_WATCH_WAIT,
            fail_fast_wait: Duration::ZERO,
        }
    }
}

impl ClientBuilder {
    /// Adds a gateway: `host:port`, or an `http://` or `https://` URL. Requests go to the first
    /// that answers; the others are tried in order when it does not.
    pub fn gateway(mut self, address: impl Into<String>) -> ClientBuilder {
        self.gateways.push(address.into());
        self
    }

    /// How long one try of a request may take, connection included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// Pins the time between heartbeats. Without it the client follows the interval the
    /// gateway advertises (30 s until it has, and with the original gateway, which does not),
    /// so that a node is never reaped for taking the default.
    pub fn heartbeat_interval(mut self, interval: Duration) -> ClientBuilder {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// The longest any one blocking call of this client may take, every try, retry and pause
    /// included (default 15 s, or the timeout if that is longer). It also bounds how long
    /// `Discovery::initialize*` waits for the first registration (which then goes on in the
    /// background).
    pub fn deadline(mut self, deadline: Duration) -> ClientBuilder {
        self.deadline = Some(deadline);
        self
    }

    /// Tries per request when gateways cannot be reached (default 3; at least one per address).
    pub fn retry_attempts(mut self, attempts: u32) -> ClientBuilder {
        self.retry_attempts = attempts;
        self
    }

    /// The first backoff's upper bound; it doubles with each round (default 1 s).
    pub fn retry_base_delay(mut self, delay: Duration) -> ClientBuilder {
        self.retry_base_delay = delay;
        self
    }

    /// Use the proxy named by `HTTP_PROXY` and friends (default: ignore them; a gateway is
    /// usually on the local network).
    pub fn proxy_from_env(mut self, yes: bool) -> ClientBuilder {
        self.proxy_from_env = yes;
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request (default: no header, for a
    /// gateway without tokens). Registering and heartbeating need a `write` token; reading a
    /// `read` one. A gateway that refuses the token answers 401 (unknown) or 403 (read-only):
    /// the call fails at once with that, and is never retried.
    pub fn token(mut self, token: impl Into<String>) -> ClientBuilder {
        self.token = Some(Redacted(token.into()));
        self
    }

    /// Checks `https://` gateways against the CA certificates in this PEM file, instead of the
    /// public roots bundled with the client: for a gateway whose TLS front has a certificate
    /// from a private CA.
    pub fn ca_file(mut self, file: impl Into<PathBuf>) -> ClientBuilder {
        self.ca_file = Some(file.into());
        self
    }

    /// Watch the gateway for changes (default off): with it, the client starts a watch thread
    /// along with its heartbeat thread (at `register_node`, `keep_registered`,
    /// `Discovery::initialize_with`), which keeps the cached view current within moments of a
    /// change instead of at heartbeat pace, suspicions and recoveries included; subscribers
    /// hear of changes as they happen. See [`GatewayClient::watch`] for what it costs.
    pub fn watch(mut self, yes: bool) -> ClientBuilder {
        self.watch = yes;
        self
    }

    /// How long each of the watch's long-polls may be held by the gateway (default 30 s, at
    /// least 100 ms, at most 5 minutes), when it long-polls (a gateway without event streams):
    /// an idle watch sends one request per wait. Keep it under the read timeout of any proxy in
    /// front of the gateway.
    pub fn watch_wait(mut self, wait: Duration) -> ClientBuilder {
        self.watch_wait = wait;
        self
    }

    /// How long a call waits for a gateway to answer again when the client already knows that
    /// none does (default: not at all). While the heartbeat thread runs and its last exchange
    /// failed (or a request has gone unanswered for 2 s), calls are not sent: they fail with
    /// [`ClientError::GatewayUnavailable`] at once, or once this wait passes without the
    /// heartbeat thread reaching a gateway, instead of spending the whole deadline on retries.
    pub fn fail_fast_wait(mut self, wait: Duration) -> ClientBuilder {
        self.fail_fast_wait = wait;
        self
    }

    /// Checks the addresses and builds the client.
    pub fn build(self) -> Result<GatewayClient, ClientError> {
        let transport = Transport::new(self.transport_config())?;
        Ok(self.client(transport))
    }

    pub(super) fn transport_config(&self) -> TransportConfig<'_> {
        TransportConfig {
            gateways: &self.gateways,
            timeout: self.timeout,
            attempts: self.retry_attempts,
            base_delay: self.retry_base_delay,
            proxy_from_env: self.proxy_from_env,
            token: self.token.as_ref(),
            ca_file: self.ca_file.as_deref(),
        }
    }

    pub(super) fn client(&self, transport: Transport) -> GatewayClient {
        GatewayClient {
            shared: Arc::new(Shared {
                transport,
                pinned_interval: self.heartbeat_interval,
                deadline: self
                    .deadline
                    .unwrap_or_else(|| DEFAULT_DEADLINE.max(self.timeout)),
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            heartbeat: Mutex::new(None),
            watch: Mutex::new(None),
            watch_with_heartbeat: self.watch,
            watch_wait: self.watch_wait,
            fail_fast_wait: self.fail_fast_wait,
        }
    }
}
