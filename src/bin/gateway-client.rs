//! `gateway-client`: join a cluster from the command line, or ask the gateway about it.
//!
//! Exit codes: 0 success; 1 the gateway refused or could not be reached; 2 bad usage.

// Beside this file, not in src/bin/, where Cargo would take it for a binary of its own.
#[path = "gateway-client/settings.rs"]
mod settings;

use std::process::ExitCode;
use std::time::Instant;

use argh::FromArgs;
use cluster_gateway::api::{Health, Registration, RemoveStatus, SetLeaderStatus};
use cluster_gateway::client::{ClientBuilder, ClusterInfo, GatewayClient};
use cluster_gateway::server::cli::TopLevelFlags;
use cluster_gateway::{ClientError, logger};
use log::LevelFilter;
use print::*;
use serde::Serialize;
use settings::Settings;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// True while joining: the output is then a courtesy to whoever watches, and a node started
/// with its stdout closed or gone keeps heartbeating.
static JOINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A line to stdout. For a command, a reader that went away (`gateway-client nodes | head`)
/// ends the process quietly with success, as SIGPIPE ends a C tool, without the noise; any
/// other write failure is exit 1 with the reason (`println!` panicked: exit 101, and a
/// backtrace). While joining, a failure to write is ignored.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))
    };
}

// After `out!`, which it uses.
#[path = "gateway-client/print.rs"]
mod print;

#[path = "gateway-client/docs.rs"]
mod docs;

fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(_) if JOINING.load(std::sync::atomic::Ordering::Relaxed) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("gateway-client: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// Join a cluster through the gateway and keep heartbeating until SIGINT/SIGTERM, or run an
/// operator command against it.
#[derive(FromArgs, Debug)]
#[argh(
    help_triggers("-h", "--help"),
    note = "Global flags (--gateway, --gateway-host, --gateway-port, --timeout, --token, \
            --token-file, --ca-file, --config, --log-level, --json) go before or after the \
            command; any flag that takes a value may be written --flag=value. `gateway-client \
            help [COMMAND]` is --help for the program or a command.\n\
            Environment (a flag wins over its variable, a variable over --config's file): \
            GATEWAY_URL (gateways, comma-separated), GATEWAY_HOST and GATEWAY_PORT (the \
            original client's), GATEWAY_TOKEN, GATEWAY_CA_FILE, GATEWAY_CLIENT_TIMEOUT, \
            GATEWAY_CLIENT_HEARTBEAT_INTERVAL, GATEWAY_CLIENT_RETRY_ATTEMPTS, \
            GATEWAY_CLIENT_RETRY_DELAY (seconds), GATEWAY_CLIENT_CAPABILITIES, NODE_ID, NODE_IP, \
            NODE_PORT.\n\
            Config file keys (JSON, the original client's): gateway_host, gateway_port, \
            timeout, heartbeat_interval, retry_attempts, retry_delay, node_id, ip_address, port, \
            capabilities, metadata; and ours: gateways, token_file, ca_file, log_level.",
    error_code(
        1,
        "the gateway refused, answered an error, or could not be reached (health: any \
         gateway is down)"
    ),
    error_code(
        2,
        "bad usage: a flag, a variable, a config file or a command that does not make sense"
    )
)]
struct Cli {
    /// gateway host (default localhost)
    #[argh(option)]
    gateway_host: Option<String>,
    /// gateway port (default 8080)
    #[argh(option)]
    gateway_port: Option<u16>,
    /// gateway address, host:port or http(s) URL; repeat (or comma-separate) for several
    /// (default $GATEWAY_URL,
    /// else --gateway-host:--gateway-port)
    #[argh(option)]
    gateway: Vec<String>,
    /// id of the node to join as
    #[argh(option)]
    node_id: Option<u64>,
    /// address peers reach this node at (default 127.0.0.1)
    #[argh(option)]
    ip: Option<String>,
    /// port peers reach this node at
    #[argh(option)]
    port: Option<u16>,
    /// comma-separated capabilities (default raft,gossip)
    #[argh(option)]
    capabilities: Option<String>,
    /// metadata as key=value; repeat for several
    #[argh(option)]
    metadata: Vec<String>,
    /// seconds between heartbeats (default: what the gateway advertises, else 30)
    #[argh(option)]
    heartbeat_interval: Option<f64>,
    /// seconds a request may take (default 10)
    #[argh(option)]
    timeout: Option<f64>,
    /// deregister from the gateway on exit (default: let the registration expire)
    #[argh(switch)]
    leave_on_exit: bool,
    /// bearer token sent with every request (visible to other users in `ps`: prefer
    /// --token-file or GATEWAY_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// file holding the bearer token (default $GATEWAY_TOKEN, else no token)
    #[argh(option)]
    token_file: Option<String>,
    /// PEM file of the CA that signed an https:// gateway's certificate (default
    /// $GATEWAY_CA_FILE, else the bundled public roots)
    #[argh(option)]
    ca_file: Option<String>,
    /// JSON file of settings, the original client's keys (below); flags and variables win
    #[argh(option)]
    config: Option<String>,
    /// DEBUG, INFO, WARNING, ERROR or CRITICAL (default WARNING; INFO when joining)
    #[argh(option)]
    log_level: Option<String>,
    /// print JSON (the commands); the same as -o json
    #[argh(switch)]
    json: bool,
    /// how commands print: table (default), wide (nodes with the leader, join time and
    /// metadata), ids (node ids, one a line), json
    #[argh(option, short = 'o')]
    output: Option<String>,
    #[argh(subcommand)]
    command: Option<Command>,
}

/// The top-level flags, for argh to find them after the command too. A unit test checks this
/// against `Cli`.
const FLAGS: TopLevelFlags<'static> = TopLevelFlags {
    options: &[
        "--gateway-host",
        "--gateway-port",
        "--gateway",
        "--node-id",
        "--ip",
        "--port",
        "--capabilities",
        "--metadata",
        "--heartbeat-interval",
        "--timeout",
        "--token",
        "--token-file",
        "--ca-file",
        "--config",
        "--log-level",
        "--output",
        "-o",
    ],
    switches: &["--leave-on-exit", "--json"],
    global: &[
        "--gateway-host",
        "--gateway-port",
        "--gateway",
        "--timeout",
        "--token",
        "--token-file",
        "--ca-file",
        "--config",
        "--log-level",
        "--json",
        "--output",
        "-o",
    ],
    command_switches: &["--all"],
};

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Nodes(NodesCommand),
    Node(NodeCommand),
    Leader(LeaderCommand),
    SetLeader(SetLeaderCommand),
    Remove(RemoveCommand),
    Stats(StatsCommand),
    Health(HealthCommand),
    Watch(WatchCommand),
    Completions(CompletionsCommand),
    Man(ManCommand),
}

/// Print a completion script for bash, zsh or fish (for example
/// `gateway-client completions bash > /etc/bash_completion.d/gateway-client`).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "completions")]
struct CompletionsCommand {
    /// bash, zsh or fish
    #[argh(positional)]
    shell: String,
}

/// Print the manual page, in roff (`gateway-client man | man -l -`).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "man")]
struct ManCommand {}

/// The program's flags and commands as its help texts list them.
fn program() -> docs::Program {
    docs::Program::read(|args| {
        Cli::from_args(&["gateway-client"], args)
            .err()
            .map(|exit| exit.output)
            .unwrap_or_default()
    })
}

/// Show one node (active or suspected); exit 1 if it is not registered.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "node")]
struct NodeCommand {
    /// the node's id
    #[argh(positional)]
    node_id: u64,
}

/// List the active nodes.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "nodes")]
struct NodesCommand {
    /// include suspected nodes
    #[argh(switch)]
    all: bool,
    /// only nodes offering this capability; repeat for nodes offering all of several
    #[argh(option)]
    capability: Vec<String>,
}

/// Show the current leader.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "leader")]
struct LeaderCommand {}

/// Make a registered node the leader.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set-leader")]
struct SetLeaderCommand {
    /// the node to lead
    #[argh(positional)]
    node_id: u64,
}

/// Deregister a node.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
struct RemoveCommand {
    /// the node to remove
    #[argh(positional)]
    node_id: u64,
}

/// Show the gateway's counters.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stats")]
struct StatsCommand {}

/// Check every configured gateway, one line each; exit 1 if any is down.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "health")]
struct HealthCommand {}

/// Print each change as it happens (joined, left, suspected, back, leader), one line each,
/// until SIGINT or SIGTERM (or stdout is closed); the first lines are the cluster as it is.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "watch")]
struct WatchCommand {}

/// How a command ended, short of success.
enum Failure {
    /// Bad usage: exit 2.
    Usage(String),
    /// The gateway refused or could not be reached: exit 1.
    Gateway(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::InvalidAddress(_) | ClientError::InvalidSetting(_) => {
                Failure::Usage(e.to_string())
            }
            other => Failure::Gateway(in_words(&other)),
        }
    }
}

fn main() -> ExitCode {
    let cli = match cluster_gateway::server::cli::parse_args_with_globals::<Cli, Command>(
        "gateway-client",
        &FLAGS,
    ) {
        Ok(cli) => cli,
        Err(exit) => return exit,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("gateway-client: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Gateway(message)) => {
            eprintln!("gateway-client: {message}");
            ExitCode::from(1)
        }
    }
}

/// The joining flags given on a command line that runs a command: each would be ignored, and
/// `--port` is easily taken for the gateway's.
fn joining_flags(cli: &Cli) -> Vec<&'static str> {
    [
        ("--node-id", cli.node_id.is_some()),
        ("--ip", cli.ip.is_some()),
        ("--port", cli.port.is_some()),
        ("--capabilities", cli.capabilities.is_some()),
        ("--metadata", !cli.metadata.is_empty()),
        ("--heartbeat-interval", cli.heartbeat_interval.is_some()),
        ("--leave-on-exit", cli.leave_on_exit),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect()
}

/// How a command prints (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Table,
    Wide,
    Ids,
    Json,
}

impl Output {
    /// `-o` and `--json`, which must agree.
    fn of(json: bool, output: Option<&str>) -> Result<Output, Failure> {
        let output = match output.map(str::trim) {
            None => None,
            Some("table") => Some(Output::Table),
            Some("wide") => Some(Output::Wide),
            Some("ids") => Some(Output::Ids),
            Some("json") => Some(Output::Json),
            Some(other) => {
                return Err(Failure::Usage(format!(
                    "-o {other:?}: expected table, wide, ids or json"
                )));
            }
        };
        match (json, output) {
            (true, Some(o)) if o != Output::Json => Err(Failure::Usage(
                "--json and -o say different things: give one of them".to_owned(),
            )),
            (true, _) => Ok(Output::Json),
            (false, o) => Ok(o.unwrap_or(Output::Table)),
        }
    }
}

fn run(mut cli: Cli) -> Result<(), Failure> {
    if cli.command.is_some() {
        let given = joining_flags(&cli);
        if !given.is_empty() {
            return Err(Failure::Usage(format!(
                "{} {} for joining, not for a command (the gateway's port is --gateway-port)",
                given.join(", "),
                if given.len() == 1 { "is" } else { "are" },
            )));
        }
    }
    match &cli.command {
        Some(Command::Completions(c)) => {
            let script =
                docs::completions(&program(), FLAGS.global, &c.shell).ok_or_else(|| {
                    Failure::Usage(format!(
                        "completions {:?}: expected one of {}",
                        c.shell,
                        docs::SHELLS.join(", ")
                    ))
                })?;
            out!("{}", script.trim_end());
            return Ok(());
        }
        Some(Command::Man(_)) => {
            out!(
                "{}",
                docs::man(&program(), cluster_gateway::VERSION).trim_end()
            );
            return Ok(());
        }
        _ => {}
    }
    let settings = Settings::load(&cli, |name| std::env::var(name).ok()).map_err(Failure::Usage)?;
    let default_level = if cli.command.is_none() {
        LevelFilter::Info
    } else {
        LevelFilter::Warn
    };
    logger::init(settings.log_level.unwrap_or(default_level));
    let output = Output::of(cli.json, cli.output.as_deref())?;
    let json = output == Output::Json;
    let command = cli.command.take();
    if output == Output::Ids
        && !matches!(
            command,
            Some(Command::Nodes(_) | Command::Node(_) | Command::Leader(_))
        )
    {
        return Err(Failure::Usage(
            "-o ids goes with nodes or leader".to_owned(),
        ));
    }
    if let Some(Command::Health(_)) = command {
        return health(&settings, json);
    }
    let client = builder(&settings).build()?;
    match command {
        None if json || cli.output.is_some() => Err(Failure::Usage(
            "--json and -o go with a command (nodes, leader, set-leader, remove, stats, health, \
             watch); joining prints text"
                .to_owned(),
        )),
        None => join(&cli, &settings, &client),
        Some(Command::Nodes(c)) => nodes(&client, &c, output),
        Some(Command::Node(c)) => node(&client, c.node_id, output),
        Some(Command::Leader(_)) => leader(&client, output),
        Some(Command::SetLeader(c)) => set_leader(&client, c.node_id, json),
        Some(Command::Remove(c)) => remove(&client, c.node_id, json),
        Some(Command::Stats(_)) => stats(&client, json),
        Some(Command::Watch(_)) => watch(&client, json),
        Some(Command::Health(_) | Command::Completions(_) | Command::Man(_)) => {
            unreachable!("answered above")
        }
    }
}

/// A client for `settings`' gateways, tried in turn.
fn builder(settings: &Settings) -> ClientBuilder {
    let mut builder = GatewayClient::builder();
    for gateway in &settings.gateways {
        builder = builder.gateway(gateway);
    }
    options(builder, settings)
}

/// Everything in `settings` but the gateways.
fn options(mut builder: ClientBuilder, settings: &Settings) -> ClientBuilder {
    builder = builder
        .timeout(settings.timeout)
        .retry_attempts(settings.retry_attempts)
        .retry_base_delay(settings.retry_delay);
    if let Some(interval) = settings.heartbeat_interval {
        builder = builder.heartbeat_interval(interval);
    }
    if let Some(token) = &settings.token {
        builder = builder.token(token);
    }
    if let Some(file) = &settings.ca_file {
        builder = builder.ca_file(file);
    }
    builder
}

/// Registers, prints what the gateway said, heartbeats until a signal, then stops.
fn join(cli: &Cli, settings: &Settings, client: &GatewayClient) -> Result<(), Failure> {
    JOINING.store(true, std::sync::atomic::Ordering::Relaxed);
    let commands = "or name a command: nodes, leader, set-leader, remove, stats, health";
    let node_id = settings.node_id.ok_or_else(|| {
        Failure::Usage(format!(
            "--node-id (or NODE_ID, or node_id in --config) is required to join ({commands})"
        ))
    })?;
    let port = settings.port.ok_or_else(|| {
        Failure::Usage(format!(
            "--port (or NODE_PORT, or port in --config) is required to join ({commands})"
        ))
    })?;
    let mut registration = Registration::new(node_id, settings.ip_address.clone(), port)
        .capabilities(settings.capabilities.clone());
    if !settings.metadata.is_empty() {
        registration = registration.metadata(settings.metadata.clone());
    }
    // Registered before joining, so a signal during start-up is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Failure::Gateway(format!("cannot handle signals: {e}")))?;
    // Past the registration, a failure must not leave the node registered behind an exiting
    // process, to be reaped only node_timeout later: it leaves first.
    let joined = client
        .discover_cluster(registration)
        .map_err(|e| (changed_nothing(&e), Failure::from(e)))
        .and_then(|(is_bootstrap, cluster)| {
            greet(client, node_id, is_bootstrap, &cluster).map_err(|e| (false, e))
        });
    if let Err((changed_nothing, failure)) = joined {
        if !changed_nothing {
            leave_after_failure(client, settings, node_id);
        }
        return Err(failure);
    }
    out!("\nHeartbeating; stop with Ctrl-C.");
    if let Some(signal) = signals.forever().next() {
        log::info!("received signal {signal}, stopping");
    }
    if cli.leave_on_exit {
        client.leave()?;
        out!("Node {node_id} left the cluster.");
    } else {
        client.shutdown();
        out!("Stopped heartbeating; the gateway will expire node {node_id}.");
    }
    Ok(())
}

/// Leaves after joining failed past the registration. `leave()` stops the heartbeat thread for
/// good; when it could not confirm the removal (it knows no gateway answers, say, after an
/// answer it could not read), the removal it goes on with in the background would end with
/// this process: one more try from a client of its own, which knows nothing yet.
fn leave_after_failure(client: &GatewayClient, settings: &Settings, node_id: u64) {
    let left = client.leave().or_else(|first| {
        log::debug!("leaving after the failed join: {first}");
        builder(settings).build()?.remove_node(node_id).map(drop)
    });
    match left {
        Ok(()) => log::warn!("node {node_id} left again, as joining failed"),
        Err(e) => log::warn!(
            "node {node_id} could not leave again after joining failed (the gateway will \
             expire it): {e}"
        ),
    }
}

/// True when a registration's failure is a gateway's answer that it changed nothing: a
/// refusal (4xx), no room (507), or not available (503). Any other failure (no answer, an
/// answer that could not be read, a timeout, a 500) may come after the node was registered.
fn changed_nothing(error: &ClientError) -> bool {
    matches!(error, ClientError::Gateway { status, .. }
        if *status < 500 || *status == 503 || *status == 507)
}

/// What joining prints once the node is registered: its role, the cluster, the gateway's
/// stats.
fn greet(
    client: &GatewayClient,
    node_id: u64,
    is_bootstrap: bool,
    cluster: &ClusterInfo,
) -> Result<(), Failure> {
    if is_bootstrap {
        out!("Node {node_id} is the bootstrap node: it starts a new cluster as its leader.");
    } else {
        out!("Node {node_id} joined an existing cluster.");
    }
    out!("\nNodes ({}):", cluster.nodes.len());
    print_nodes(
        &cluster.nodes,
        cluster.leader.as_ref().map(|n| n.node_id),
        false,
    );
    out!("");
    print_leader(cluster.leader.as_ref());
    let stats = client.get_stats()?;
    out!("\nGateway stats:");
    print_fields(&stats_in_words(&stats));
    Ok(())
}

/// The listing, filtered here to the nodes offering every capability asked for (the filter
/// works with any gateway, the original's too).
fn nodes(client: &GatewayClient, command: &NodesCommand, output: Output) -> Result<(), Failure> {
    // An empty one (`--capability=`, a variable left unset) would list nothing, and say so
    // with success.
    if command.capability.iter().any(|c| c.trim().is_empty()) {
        return Err(Failure::Usage(
            "--capability needs a capability, got an empty one".to_owned(),
        ));
    }
    let mut answer = client.list_nodes(command.all)?;
    answer.nodes.retain(|node| {
        command
            .capability
            .iter()
            .all(|wanted| node.capabilities.contains(wanted))
    });
    match output {
        Output::Json => print_json(&answer),
        Output::Ids => answer.nodes.iter().for_each(|n| out!("{}", n.node_id)),
        Output::Table | Output::Wide => {
            let leader = client.leader()?.leader.map(|n| n.node_id);
            print_nodes(&answer.nodes, leader, output == Output::Wide);
        }
    }
    Ok(())
}

fn node(client: &GatewayClient, node_id: u64, output: Output) -> Result<(), Failure> {
    let Some(node) = client.node(node_id)? else {
        return Err(Failure::Gateway(format!(
            "node {node_id} is not registered"
        )));
    };
    match output {
        Output::Json => print_json(&node),
        Output::Ids => out!("{}", node.node_id),
        Output::Table | Output::Wide => {
            let leader = client.leader()?.leader.map(|n| n.node_id);
            print_nodes(std::slice::from_ref(&node), leader, true);
        }
    }
    Ok(())
}

fn leader(client: &GatewayClient, output: Output) -> Result<(), Failure> {
    let answer = client.leader()?;
    match output {
        Output::Json => print_json(&answer),
        Output::Ids => {
            if let Some(leader) = &answer.leader {
                out!("{}", leader.node_id);
            }
        }
        Output::Table | Output::Wide => print_leader(answer.leader.as_ref()),
    }
    Ok(())
}

fn set_leader(client: &GatewayClient, node_id: u64, as_json: bool) -> Result<(), Failure> {
    let answer = client.set_leader(node_id)?;
    if as_json {
        print_json(&answer);
    }
    if answer.status != SetLeaderStatus::Updated {
        return Err(Failure::Gateway(format!(
            "node {node_id} is not registered: the leader did not change"
        )));
    }
    if !as_json {
        out!("Node {node_id} is now the leader.");
    }
    Ok(())
}

fn remove(client: &GatewayClient, node_id: u64, as_json: bool) -> Result<(), Failure> {
    let answer = client.remove(node_id)?;
    if as_json {
        print_json(&answer);
    }
    if answer.status != RemoveStatus::Removed {
        return Err(Failure::Gateway(format!(
            "node {node_id} is not registered"
        )));
    }
    if !as_json {
        out!("Node {node_id} removed.");
    }
    Ok(())
}

fn stats(client: &GatewayClient, as_json: bool) -> Result<(), Failure> {
    let stats = client.get_stats()?;
    if as_json {
        print_json(&stats);
    } else {
        print_fields(&stats_in_words(&stats));
    }
    Ok(())
}

/// One gateway's health, as `health` reports it.
#[derive(Serialize)]
struct Endpoint {
    /// The gateway, as configured.
    address: String,
    /// It answered `/health`, and its store takes writes.
    healthy: bool,
    /// How long the check took, in milliseconds.
    took_ms: f64,
    /// Why it is not healthy.
    error: Option<String>,
    /// What it answered, if it did.
    answer: Option<Health>,
}

/// Checks every gateway at once, one try each within the timeout (a check reports the moment,
/// it does not wait out a restart), and reports each: a healthy one on stdout, one that is not
/// on stderr (with `--json`, an array of both on stdout); any down: exit 1.
fn health(settings: &Settings, as_json: bool) -> Result<(), Failure> {
    // Each client is built first, so that a bad address is a usage error before any check.
    let clients = settings
        .gateways
        .iter()
        .map(|gateway| {
            let builder = options(GatewayClient::builder().gateway(gateway), settings)
                .retry_attempts(1)
                .deadline(settings.timeout);
            Ok((gateway, builder.build()?))
        })
        .collect::<Result<Vec<_>, Failure>>()?;
    let endpoints: Vec<Endpoint> = std::thread::scope(|scope| {
        let checks: Vec<_> = clients
            .iter()
            .map(|(gateway, client)| scope.spawn(move || check(gateway, client)))
            .collect();
        checks
            .into_iter()
            .map(|check| check.join().expect("a health check does not panic"))
            .collect()
    });
    if as_json {
        print_json(&endpoints);
    } else {
        for e in &endpoints {
            let took = format!("took {:.1} ms", e.took_ms);
            match (&e.error, &e.answer) {
                (None, Some(h)) => out!(
                    "{} is healthy: {took} (version {}, epoch {})",
                    e.address,
                    h.version,
                    h.epoch
                ),
                // To stderr, as etcdctl does, so that a script sees what is down.
                (error, _) => eprintln!(
                    "{} is unhealthy: {took}: {}",
                    e.address,
                    error.as_deref().unwrap_or("no answer")
                ),
            }
        }
    }
    let down: Vec<&str> = endpoints
        .iter()
        .filter(|e| !e.healthy)
        .map(|e| e.address.as_str())
        .collect();
    if !down.is_empty() {
        return Err(Failure::Gateway(format!(
            "{} of {} gateways unhealthy: {}",
            down.len(),
            endpoints.len(),
            down.join(", ")
        )));
    }
    Ok(())
}

fn check(address: &str, client: &GatewayClient) -> Endpoint {
    let start = Instant::now();
    let answer = client.health_check();
    let took_ms = (start.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
    let (error, answer) = match answer {
        // A gateway whose store takes no writes answers, but refuses registrations and
        // heartbeats: not healthy.
        Ok(h) => (
            h.store_error.as_ref().map(|e| format!("store: {e}")),
            Some(h),
        ),
        Err(e) => (Some(e.to_string()), None),
    };
    Endpoint {
        address: address.to_owned(),
        healthy: error.is_none(),
        took_ms,
        error,
        answer,
    }
}

/// Prints changes as the client's watch sees them until a signal, or until stdout is closed
/// (`watch | head -n 3` ends when `head` does); exit 1 if no gateway answers at start, or it
/// refuses the read (no token, or a token it does not know).
fn watch(client: &GatewayClient, as_json: bool) -> Result<(), Failure> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Failure::Gateway(format!("cannot handle signals: {e}")))?;
    // A read, not `/health`: that one is open to probes, and a watch without the token it
    // needs would retry its refusals until stopped, printing nothing.
    client.leader()?;
    let changes = client.subscribe();
    client.watch();
    // Closing the handle ends `forever()` below as a signal would.
    let stop = signals.handle();
    std::thread::spawn(move || {
        use std::io::Write;
        for event in changes.iter().flat_map(|change| change.events()) {
            let line = match as_json {
                true => event.to_json().to_string(),
                false => event.to_string(),
            };
            let mut stdout = std::io::stdout().lock();
            // Flushed at once: a pipe's reader sees each change as it happens.
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                log::debug!("stdout is closed: the watch stops");
                stop.close();
                return;
            }
        }
    });
    signals.forever().next();
    client.shutdown();
    Ok(())
}

#[cfg(test)]
#[path = "gateway-client/tests.rs"]
mod tests;
