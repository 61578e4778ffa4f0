//! cluster-gateway: a discovery gateway for clusters.
//!
//! Nodes register over HTTP/JSON, learn their peers and the current leader, and keep
//! heartbeating; the first node of an empty cluster is told to bootstrap it. Silent nodes are
//! suspected, then reaped. The wire format is that of the original Python gateway.
//!
//! Run a gateway in-process:
//!
//! ```
//! use cluster_gateway::{GatewayServer, ServerConfig};
//!
//! let config = ServerConfig { host: "127.0.0.1".into(), port: 0, ..ServerConfig::default() };
//! let server = GatewayServer::new(config).start()?;
//! println!("listening on {}", server.local_addr());
//! server.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A node joins through the discovery handle (the original `GatewayDiscoveryMixin`):
//!
//! ```
//! use cluster_gateway::discovery::{Discovery, GatewayDiscovery};
//! # let server = cluster_gateway::GatewayServer::new(cluster_gateway::ServerConfig {
//! #     host: "127.0.0.1".into(), port: 0, ..Default::default() }).start()?;
//! # let gateway_port = server.local_addr().port();
//!
//! struct MyNode {
//!     node_id: u64,
//!     discovery: Discovery,
//! }
//!
//! impl GatewayDiscovery for MyNode {
//!     fn discovery(&self) -> &Discovery {
//!         &self.discovery
//!     }
//! }
//!
//! let node = MyNode { node_id: 1, discovery: Discovery::new() };
//! node.initialize_discovery("127.0.0.1", gateway_port, node.node_id, "127.0.0.1", 5001, &["raft", "gossip"], None);
//! assert!(node.is_bootstrap_node());
//! node.shutdown_discovery();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules, from the wire inwards:
//! - [`discovery`]: the handle a node embeds; [`client`]: the blocking client under it, with
//!   its heartbeat thread; [`error`]: the client's errors.
//! - [`api`]: request and response bodies, shared by server and client; input validation.
//! - [`server`]: threads and sockets; [`http`]: routing, with no sockets.
//! - [`gateway`]: the registry behind its lock, the cached peer list, change announcements.
//! - [`registry`]: pure membership logic, driven by an injected clock.
//! - [`config`]: server settings from flags, environment and file; [`cli`]: flag parsing the
//!   binaries share.
//!
//! Cargo features: `server` (the gateway, its binaries and what only they need: tiny_http,
//! argh, rlimit, signal-hook, socket2, flate2, crc32fast, percent-encoding, and ureq for the etcd
//! store) and `client` (the client and discovery handle: ureq), both on by default. A node that only embeds the client depends on
//! `cluster-gateway = { default-features = false, features = ["client"] }`.
// Unsafe code is allowed in two places only: `allocator` (glibc's `mallopt` and `malloc_trim`)
// and `tiny_http_workarounds::close_accepted` (borrowing a descriptor number to duplicate it).
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[cfg(feature = "server")]
pub mod allocator;
pub mod api;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
mod client_watch;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "client")]
pub mod discovery;
#[cfg(feature = "client")]
pub mod error;
#[cfg(feature = "server")]
pub mod gateway;
#[cfg(feature = "client")]
mod heartbeat;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod list;
pub mod logger;
#[cfg(feature = "server")]
pub mod metrics;
pub mod registry;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "client")]
mod shared;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
mod tiny_http_workarounds;
#[cfg(feature = "client")]
mod transport;
#[cfg(feature = "client")]
mod view;
#[cfg(feature = "server")]
pub mod watch;

#[cfg(feature = "client")]
pub use client::GatewayClient;
#[cfg(feature = "server")]
pub use config::ServerConfig;
#[cfg(feature = "client")]
pub use error::ClientError;
/// The JSON crate this one speaks (node metadata is a [`Metadata`]), so that an embedder
/// needs no `serde_json` dependency of its own, nor to match its version.
pub use serde_json;
#[cfg(feature = "server")]
pub use server::{GatewayServer, RunningServer};

/// A node's metadata: a JSON object, merged key by key by the gateway.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

#[cfg(any(feature = "server", feature = "client"))]
/// Locks `mutex`, recovering the data if a panic poisoned it: nothing here panics while it holds
/// a lock mid-change, so what is inside is consistent.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(any(feature = "server", feature = "client"))]
/// The bytes of the file at `path`, if it holds at most `limit`: a settings file (a config, a
/// token, a CA bundle) read without trusting the path to name a small file (`/dev/zero`, a
/// log, a disk image is refused, not read until the memory runs out).
pub(crate) fn read_small(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// Compiles the README's Rust examples as doctests.
#[doc = include_str!("../README.md")]
#[cfg(all(doctest, feature = "server", feature = "client"))]
pub struct ReadmeDoctests;

/// This crate's version, reported by `/health` and `/stats`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
