//! Integration tests: one binary, one module per area.

mod api;
mod client;
mod client_cli;
mod contract;
mod dashboard;
mod durable;
mod faults;
mod hostile;
mod logs;
mod negotiation;
mod openapi;
mod operator;
mod race;
mod scripts;
mod server_cli;
mod support;
mod transport;
