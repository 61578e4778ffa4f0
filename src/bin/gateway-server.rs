//! `gateway-server`: runs the discovery gateway until SIGINT or SIGTERM.
//!
//! SIGHUP re-reads the token file (a bad file keeps the tokens in use) and SIGUSR1/SIGUSR2 log
//! the counters, in words: none of them stops the server. SIGTERM and SIGINT stop it within
//! `cluster_gateway::server::SHUTDOWN_GRACE` (5 s) whatever clients do. The process exits 1
//! only when the listening socket is gone and cannot be brought back.
//!
//! Under systemd with `Type=notify` (`NOTIFY_SOCKET` set), it sends `READY=1` once it listens
//! and `STOPPING=1` when it starts to stop (sd_notify(3)), with nothing but std.

use std::os::unix::net::UnixDatagram;
use std::process::ExitCode;
use std::sync::mpsc;

use cluster_gateway::server::RunningServer;
use cluster_gateway::server::auth;
use cluster_gateway::server::config::{ServerArgs, ServerConfig};
use cluster_gateway::{GatewayServer, logger};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

enum Event {
    Signal(i32),
    Failed(String),
}

fn main() -> ExitCode {
    // Before any thread starts: how memory is given back after nodes leave.
    cluster_gateway::server::allocator::tune();
    let args = match cluster_gateway::server::cli::parse_args::<ServerArgs>("gateway-server") {
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
    logger::init_with(config.log_level, config.log_format);
    for setting in &config.not_applied {
        log::warn!("{setting}");
    }
    // tiny_http holds a thread and two descriptors per connection: take all the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => log::debug!("open-file limit: {limit}"),
        Err(e) => log::warn!("could not raise the open-file limit: {e}"),
    }

    // Registered before the server starts, so a signal that arrives during start-up is not
    // lost, and none of these kills the process by default action.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("gateway-server: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limits = (config.max_nodes, config.max_watchers);
    let server = match GatewayServer::new(config).start() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("gateway-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.gateway().metrics().set_limits(limits.0, limits.1);
    // Whatever the log level: operators and scripts need the address (and the port, for 0).
    logger::always(&format!(
        "cluster gateway {} listening on http://{}",
        cluster_gateway::VERSION,
        server.local_addr()
    ));
    // After the address is logged, so whoever waits for readiness can also read the port.
    notify_systemd("READY=1");
    if let Some(warning) = auth::open_gateway_warning(server.local_addr(), server.gateway().auth())
    {
        log::warn!("{warning}");
    }

    // Wait, with no timer, for a signal or for the server to fail.
    let (events, next) = mpsc::channel();
    let (failed, failure) = mpsc::channel();
    server.notify_failure(failed);
    {
        let events = events.clone();
        std::thread::spawn(move || {
            if let Ok(why) = failure.recv() {
                let _ = events.send(Event::Failed(why));
            }
        });
    }
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if events.send(Event::Signal(signal)).is_err() {
                return;
            }
        }
    });
    loop {
        match next.recv() {
            Ok(Event::Signal(SIGHUP)) => {
                log::info!("received SIGHUP: re-reading the tokens");
                server.reload();
            }
            Ok(Event::Signal(signal @ (SIGUSR1 | SIGUSR2))) => {
                log::info!("received signal {signal}: {}", counters_in_words(&server));
            }
            Ok(Event::Signal(signal)) => {
                log::info!("received signal {signal}, stopping");
                notify_systemd("STOPPING=1");
                server.stop();
                return ExitCode::SUCCESS;
            }
            Ok(Event::Failed(why)) => {
                log::error!("cannot serve any more, exiting: {why}");
                return ExitCode::FAILURE;
            }
            Err(_) => return ExitCode::FAILURE,
        }
    }
}

/// The counters as a sentence, for SIGUSR1 and SIGUSR2.
fn counters_in_words(server: &RunningServer) -> String {
    let metrics = server.gateway().metrics();
    let c = server.counters();
    format!(
        "counters: {} requests answered ({} refused with 4xx, {} failed with 5xx), {} slow \
         answers (over 1 s), {} answers cut short, {} framing errors, {} bodies timed out, {} \
         accept-loop restarts; now {} long-polls waiting and {} bodies being read",
        metrics.answers_with_status(0..=599),
        metrics.answers_with_status(400..=499),
        metrics.answers_with_status(500..=599),
        c.slow_answers,
        c.answers_cut_short,
        c.framing_errors,
        c.bodies_timed_out,
        c.accept_restarts,
        server.watchers_waiting(),
        server.bodies_being_read(),
    )
}

/// Sends `state` to systemd's notification socket (sd_notify(3)), if `NOTIFY_SOCKET` names
/// one: a path, or an abstract socket written with a leading `@`. Outside systemd it does
/// nothing; a failure is logged and otherwise ignored (systemd then times the start out).
fn notify_systemd(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sender| {
        let socket = socket.to_string_lossy();
        match socket.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sender.send_to_addr(state.as_bytes(), &address)
            }
            #[cfg(not(target_os = "linux"))]
            Some(_) => Err(std::io::Error::other("abstract sockets are Linux's")),
            None => sender.send_to(state.as_bytes(), &*socket),
        }
    });
    match sent {
        Ok(_) => log::debug!("told systemd {state}"),
        Err(e) => log::warn!("could not tell systemd {state} through NOTIFY_SOCKET: {e}"),
    }
}
