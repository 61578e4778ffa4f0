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
// One call is unsafe: glibc's `malloc_trim`, in `gateway::release_freed_memory`.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod discovery;
pub mod error;
pub mod gateway;
mod heartbeat;
pub mod http;
pub mod list;
pub mod logger;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;
mod tiny_http_workarounds;
pub mod watch;

pub use client::GatewayClient;
pub use config::ServerConfig;
pub use error::ClientError;
pub use server::{GatewayServer, RunningServer};

/// Locks `mutex`, recovering the data if a panic poisoned it: nothing here panics while it holds
/// a lock mid-change, so what is inside is consistent.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Compiles the README's Rust examples as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// This crate's version, reported by `/health` and `/stats`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
