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
//! let mut config = ServerConfig::default();
//! config.host = "127.0.0.1".into();
//! config.port = 0;
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
//! # let config = cluster_gateway::ServerConfig::new("127.0.0.1", 0);
//! # let server = cluster_gateway::GatewayServer::new(config).start()?;
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
//! The crate has two halves, each behind its Cargo feature, and what both share at the top:
//! - [`api`]: the wire format (request and response bodies of the original gateway, input
//!   validation, the limits on what a node may carry), and [`logger`].
//! - [`client`] (feature `client`): the blocking client a node embeds, its heartbeat and watch
//!   threads, and the [`discovery`] handle on top (the original `GatewayDiscoveryMixin`).
//! - `server` (feature `server`): the gateway: `GatewayServer`, its configuration
//!   (`ServerConfig`) and tokens, and below them the registry, the store, the HTTP layer.
//!   (Not linked here, so that the client-only documentation has no broken links.)
//!
//! ARCHITECTURE.md, at the root of the repository, maps every file and states the invariants.
//!
//! Cargo features: `server` (the gateway, its binaries and what only they need: tiny_http,
//! argh, rlimit, signal-hook, socket2, flate2, crc32fast, percent-encoding, and ureq for the etcd
//! store) and `client` (the client and discovery handle: ureq), both on by default. A node that
//! only embeds the client depends on
//! `cluster-gateway = { default-features = false, features = ["client"] }`.
//!
//! Compatibility: see "Compatibility promise" in docs/embedding.md. Public structs and enums
//! that will grow are `#[non_exhaustive]` and built through constructors, so a new field or
//! variant does not break a node's code.
// Unsafe code is allowed in two places only: `server::allocator` (glibc's `mallopt` and
// `malloc_trim`) and `server::tiny_http_workarounds::listener::close_accepted` (borrowing a
// descriptor number to duplicate it).
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
#[cfg(feature = "client")]
pub mod client;
#[doc(hidden)]
pub mod files;
pub mod logger;
#[cfg(feature = "server")]
pub mod server;

/// The discovery handle, also at the top as the original's `gateway_discovery` module was.
#[cfg(feature = "client")]
pub use client::discovery;
#[cfg(feature = "client")]
pub use client::{ClientError, GatewayClient};
/// The serde this crate uses, for typed metadata (`GatewayClient::update_metadata_typed`):
/// derive `cluster_gateway::serde::Serialize` with `#[serde(crate = "cluster_gateway::serde")]`
/// and no serde dependency of your own.
pub use serde;
/// The JSON crate this one speaks (node metadata is a [`Metadata`]), so that an embedder
/// needs no `serde_json` dependency of its own, nor to match its version.
pub use serde_json;
#[cfg(feature = "server")]
pub use server::{GatewayServer, RunningServer, ServerConfig};

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

/// Compiles the Rust examples of the README and the manual as doctests.
#[cfg(all(doctest, feature = "server", feature = "client"))]
mod doc_examples {
    #[doc = include_str!("../README.md")]
    struct Readme;
    #[doc = include_str!("../docs/embedding.md")]
    struct Embedding;
    #[doc = include_str!("../docs/http-api.md")]
    struct HttpApi;
    #[doc = include_str!("../docs/operations.md")]
    struct Operations;
    #[doc = include_str!("../docs/cli.md")]
    struct Cli;
}

/// This crate's version, reported by `/health` and `/stats`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
