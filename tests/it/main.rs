//! Integration tests: one binary, one module per area.

mod api;
mod client;
mod client_cli;
mod contract;
mod durable;
mod etcd;
mod faults;
mod hostile;
mod logs;
mod negotiation;
mod race;
mod scripts;
mod server_cli;
mod support;
mod transport;
