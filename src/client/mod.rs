//! The client half: what a node process embeds to join a cluster through the gateway. Blocking,
//! built on ureq, with its own heartbeat thread and, on request, a watch thread.
//!
//! Layering, lowest first (a module names only those before it):
//! [`view`] (the cached cluster view: pure logic) <- `transport` (requests, retries, several
//! gateways) <- `session` (the state every thread shares, and the calls that change it) <-
//! `heartbeat_thread`, `watch_thread` <- [`gateway_client`] (the public handle that owns the
//! threads) <- [`discovery`] (the handle a node type embeds, the original
//! `GatewayDiscoveryMixin`).

pub mod discovery;
pub mod error;
pub mod gateway_client;
mod heartbeat_thread;
mod session;
mod transport;
pub mod view;
mod watch_thread;

pub use discovery::{Discovery, DiscoveryInfo, DiscoverySnapshot, GatewayDiscovery, Subscription};
pub use error::ClientError;
pub use gateway_client::{ClientBuilder, DEFAULT_DEADLINE, GatewayClient};
pub use session::{ClientStatus, DEFAULT_HEARTBEAT_INTERVAL, Membership};
pub use view::{ChangeEvent, ClusterChange, ClusterInfo, ClusterView};
pub use watch_thread::DEFAULT_WATCH_WAIT;
