//! `gateway-server`: runs the discovery gateway until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use cluster_gateway::config::{ServerArgs, ServerConfig};
use cluster_gateway::{GatewayServer, logger};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let args = match cluster_gateway::cli::parse_args::<ServerArgs>("gateway-server") {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    let config = match ServerConfig::load(&args, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("gateway-server: {e}");
            return ExitCode::from(2);
        }
    };
    logger::init(config.log_level);
    // tiny_http holds a thread and a descriptor per connection, and its accept loop dies for
    // good when descriptors run out: take all the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open-file limit: {limit}"),
        Err(e) => log::warn!("could not raise the open-file limit: {e}"),
    }

    // Registered before the server starts, so a signal that arrives during start-up is not lost.
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("gateway-server: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match GatewayServer::new(config).start() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("gateway-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Wait for a signal, or for the server to fail (its accept loop died): then exit non-zero,
    // for a supervisor to restart it.
    loop {
        if let Some(signal) = signals.pending().next() {
            log::info!("received signal {signal}, stopping");
            server.stop();
            return ExitCode::SUCCESS;
        }
        if let Some(why) = server.failure() {
            log::error!("cannot serve any more, exiting: {why}");
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
