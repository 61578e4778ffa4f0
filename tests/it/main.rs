//! Integration tests: one binary, one module per area.

mod api;
mod auth;
mod client;
mod client_cli;
mod contract;
mod durable;
mod embedding;
mod faults;
mod front;
mod hostile;
mod leaks;
mod logs;
mod negotiation;
mod race;
mod scripts;
mod server_cli;
mod smuggling;
mod support;
mod tls;
mod transport;
