//! The server half: the gateway nodes register with, and what only it needs (tiny_http, the
//! store, tokens, metrics).
//!
//! Layering, lowest first (a module names only those before it, and the wire format in
//! [`crate::api`]):
//! `journal` (what each recent version changed) <- `registry` (pure membership logic, time
//! passed in) <- `store` (the registry in memory, in a
//! data directory, or over etcd) <- `node_list` (the cached, serialised peer list) <- `gateway`
//! (the registry behind its lock, change announcements) <- `http` (routing, with no sockets) <-
//! `running` (threads and sockets: accept loop, workers, reaper) and its helpers
//! `tiny_http_workarounds` and `long_polls`. Beside them: [`config`], [`auth`] and [`access`]
//! (settings, tokens, and what is logged about requests, below the gateway), `metrics`, `allocator`, and `cli` (flag parsing the binaries
//! share).
//!
//! Modules marked hidden in the documentation are public only so that the project's own tests,
//! benchmarks and fuzz targets can reach them; they are outside the compatibility promise.

pub mod access;
#[doc(hidden)]
pub mod allocator;
pub mod auth;
#[doc(hidden)]
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod gateway;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod journal;
#[doc(hidden)]
pub mod long_polls;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod node_list;
#[doc(hidden)]
pub mod registry;
mod running;
#[doc(hidden)]
pub mod store;
mod tiny_http_workarounds;

pub use access::TrustedProxies;
pub use config::{ConfigError, ServerConfig, StoreKind};
pub use running::{GatewayServer, RunningServer, SHUTDOWN_GRACE, ServerCounters, StartError};
