//! Integration tests: one binary, one module per area.

mod api;
mod auth;
mod client;
mod client_cli;
mod contract;
mod dashboard;
mod durable;
mod embedding;
mod etcd;
mod faults;
mod front;
mod hostile;
mod leaks;
mod logs;
mod metrics;
mod negotiation;
mod openapi;
mod operator;
mod race;
mod scripts;
mod server_cli;
mod smuggling;
mod support;
mod tls;
mod transport;
mod watch;
