//! `gateway-client`: join a cluster from the command line, or ask the gateway about it.
//!
//! Exit codes: 0 success; 1 the gateway refused or could not be reached; 2 bad usage.

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use cluster_gateway::api::{Node, Registration, RemoveStatus, SetLeaderStatus};
use cluster_gateway::client::{ClientBuilder, GatewayClient};
use cluster_gateway::config::log_level;
use cluster_gateway::registry::unix_now;
use cluster_gateway::{ClientError, logger};
use serde::Serialize;
use serde_json::{Map, Value};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Join a cluster through the gateway and keep heartbeating until SIGINT/SIGTERM, or run an
/// operator command against it.
#[derive(FromArgs, Debug)]
#[argh(
    help_triggers("-h", "--help"),
    note = "Environment (a flag wins over its variable): GATEWAY_URL (gateways, comma-separated), \
            GATEWAY_HOST and GATEWAY_PORT (the original client's), GATEWAY_TOKEN, \
            GATEWAY_CA_FILE, GATEWAY_CLIENT_TIMEOUT, GATEWAY_CLIENT_HEARTBEAT_INTERVAL, \
            GATEWAY_CLIENT_RETRY_ATTEMPTS, GATEWAY_CLIENT_RETRY_DELAY (seconds), \
            GATEWAY_CLIENT_CAPABILITIES, NODE_ID, NODE_IP, NODE_PORT.",
    error_code(1, "the gateway refused, answered an error, or could not be reached"),
    error_code(
        2,
        "bad usage: a flag, a variable or a command that does not make sense"
    )
)]
struct Cli {
    /// gateway host (default localhost)
    #[argh(option)]
    gateway_host: Option<String>,
    /// gateway port (default 8080)
    #[argh(option)]
    gateway_port: Option<u16>,
    /// gateway address, host:port or http(s) URL; repeat for several (default $GATEWAY_URL,
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
    /// DEBUG, INFO, WARNING, ERROR or CRITICAL (default WARNING; INFO when joining)
    #[argh(option)]
    log_level: Option<String>,
    #[argh(subcommand)]
    command: Option<Command>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Nodes(NodesCommand),
    Leader(LeaderCommand),
    SetLeader(SetLeaderCommand),
    Remove(RemoveCommand),
    Stats(StatsCommand),
    Health(HealthCommand),
    Watch(WatchCommand),
}

/// List the active nodes.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "nodes")]
struct NodesCommand {
    /// include suspected nodes
    #[argh(switch)]
    all: bool,
    /// print the gateway's JSON
    #[argh(switch)]
    json: bool,
}

/// Show the current leader.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "leader")]
struct LeaderCommand {
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// Make a registered node the leader.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "set-leader")]
struct SetLeaderCommand {
    /// the node to lead
    #[argh(positional)]
    node_id: u64,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// Deregister a node.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "remove")]
struct RemoveCommand {
    /// the node to remove
    #[argh(positional)]
    node_id: u64,
    /// print JSON
    #[argh(switch)]
    json: bool,
}

/// Show the gateway's counters.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "stats")]
struct StatsCommand {
    /// print the gateway's JSON
    #[argh(switch)]
    json: bool,
}

/// Check that the gateway answers.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "health")]
struct HealthCommand {
    /// print the gateway's JSON
    #[argh(switch)]
    json: bool,
}

/// Print each change as it happens (joined, left, suspected, back, leader), one line each,
/// until SIGINT or SIGTERM; the first lines are the cluster as it is.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "watch")]
struct WatchCommand {
    /// print one JSON object a line
    #[argh(switch)]
    json: bool,
}

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
            other => Failure::Gateway(other.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = match cluster_gateway::cli::parse_args::<Cli>("gateway-client") {
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

fn run(mut cli: Cli) -> Result<(), Failure> {
    let default_level = if cli.command.is_none() {
        "INFO"
    } else {
        "WARNING"
    };
    let level = log_level(cli.log_level.as_deref().unwrap_or(default_level))
        .map_err(|e| Failure::Usage(format!("invalid --log-level: {e}")))?;
    logger::init(level);
    let client = builder(&cli)?.build()?;
    match cli.command.take() {
        None => join(&cli, &client),
        Some(Command::Nodes(c)) => nodes(&client, &c),
        Some(Command::Leader(c)) => leader(&client, c.json),
        Some(Command::SetLeader(c)) => set_leader(&client, c.node_id, c.json),
        Some(Command::Remove(c)) => remove(&client, c.node_id, c.json),
        Some(Command::Stats(c)) => stats(&client, c.json),
        Some(Command::Health(c)) => health(&client, c.json),
        Some(Command::Watch(c)) => watch(&client, c.json),
    }
}

/// The client settings from the flags and `GATEWAY_URL`.
fn builder(cli: &Cli) -> Result<ClientBuilder, Failure> {
    let mut builder = GatewayClient::builder();
    let gateways: Vec<String> = if !cli.gateway.is_empty() {
        cli.gateway.clone()
    } else if cli.gateway_host.is_some() || cli.gateway_port.is_some() {
        vec![format!(
            "{}:{}",
            cli.gateway_host.as_deref().unwrap_or("localhost"),
            cli.gateway_port.unwrap_or(8080)
        )]
    } else if let Ok(urls) = std::env::var("GATEWAY_URL") {
        urls.split(',').map(str::to_owned).collect()
    } else if env("GATEWAY_HOST").is_some() || env("GATEWAY_PORT").is_some() {
        // The original client's variables.
        let port: u16 = env_number("GATEWAY_PORT")?.unwrap_or(8080);
        vec![format!(
            "{}:{port}",
            env("GATEWAY_HOST").as_deref().unwrap_or("localhost")
        )]
    } else {
        vec!["localhost:8080".to_owned()]
    };
    for gateway in gateways {
        builder = builder.gateway(gateway);
    }
    // Flags first, then the original client's variables.
    let seconds = |flag: Option<f64>, name: &'static str, var: &'static str| match flag {
        Some(seconds) => positive_seconds(seconds, name).map(Some),
        None => env_number::<f64>(var)?
            .map(|seconds| positive_seconds(seconds, var))
            .transpose(),
    };
    if let Some(interval) = seconds(
        cli.heartbeat_interval,
        "--heartbeat-interval",
        "GATEWAY_CLIENT_HEARTBEAT_INTERVAL",
    )? {
        builder = builder.heartbeat_interval(interval);
    }
    if let Some(timeout) = seconds(cli.timeout, "--timeout", "GATEWAY_CLIENT_TIMEOUT")? {
        builder = builder.timeout(timeout);
    }
    if let Some(attempts) = env_number::<u32>("GATEWAY_CLIENT_RETRY_ATTEMPTS")? {
        builder = builder.retry_attempts(attempts);
    }
    if let Some(delay) = env_number::<f64>("GATEWAY_CLIENT_RETRY_DELAY")? {
        builder = builder.retry_base_delay(positive_seconds(delay, "GATEWAY_CLIENT_RETRY_DELAY")?);
    }
    if let Some(token) = token(cli)? {
        builder = builder.token(token);
    }
    let ca_file = cli.ca_file.clone().or_else(|| env("GATEWAY_CA_FILE"));
    if let Some(file) = ca_file {
        builder = builder.ca_file(file);
    }
    Ok(builder)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A number from the environment; one that does not parse is a usage error naming it.
fn env_number<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, Failure> {
    env(name)
        .map(|text| {
            text.trim().parse().map_err(|_| {
                Failure::Usage(format!("invalid {name}: expected a number, got {text:?}"))
            })
        })
        .transpose()
}

/// The token: `--token`, else the first line of `--token-file`, else `GATEWAY_TOKEN`.
fn token(cli: &Cli) -> Result<Option<String>, Failure> {
    if let Some(token) = &cli.token {
        return Ok(Some(token.clone()));
    }
    if let Some(file) = &cli.token_file {
        // The error names the file, never what is in it.
        let text = std::fs::read_to_string(file)
            .map_err(|e| Failure::Usage(format!("cannot read --token-file {file}: {e}")))?;
        let token = text.lines().map(str::trim).find(|l| !l.is_empty());
        return match token {
            Some(token) => Ok(Some(token.to_owned())),
            None => Err(Failure::Usage(format!(
                "--token-file {file} holds no token"
            ))),
        };
    }
    Ok(env("GATEWAY_TOKEN"))
}

fn positive_seconds(seconds: f64, flag: &str) -> Result<Duration, Failure> {
    if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(Failure::Usage(format!(
            "invalid {flag}: expected a positive number of seconds, got {seconds}"
        )))
    }
}

/// Registers, prints what the gateway said, heartbeats until a signal, then stops.
fn join(cli: &Cli, client: &GatewayClient) -> Result<(), Failure> {
    let commands = "or name a command: nodes, leader, set-leader, remove, stats, health";
    // Flags first, then the original client's variables (NODE_ID, NODE_IP, NODE_PORT,
    // GATEWAY_CLIENT_CAPABILITIES).
    let node_id = match cli.node_id {
        Some(id) => Some(id),
        None => env_number("NODE_ID")?,
    }
    .ok_or_else(|| Failure::Usage(format!("--node-id is required to join ({commands})")))?;
    let port = match cli.port {
        Some(port) => Some(port),
        None => env_number("NODE_PORT")?,
    }
    .ok_or_else(|| Failure::Usage(format!("--port is required to join ({commands})")))?;
    let capabilities = cli
        .capabilities
        .clone()
        .or_else(|| env("GATEWAY_CLIENT_CAPABILITIES"));
    let registration = Registration {
        node_id,
        ip_address: cli
            .ip
            .clone()
            .or_else(|| env("NODE_IP"))
            .unwrap_or_else(|| "127.0.0.1".to_owned()),
        port,
        capabilities: capabilities
            .as_deref()
            .unwrap_or("raft,gossip")
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        metadata: metadata(&cli.metadata)?,
        previous_epoch: None,
    };
    // Registered before joining, so a signal during start-up is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Failure::Gateway(format!("cannot handle signals: {e}")))?;
    let (is_bootstrap, cluster) = client.discover_cluster(registration)?;
    if is_bootstrap {
        println!("Node {node_id} is the bootstrap node: it starts a new cluster as its leader.");
    } else {
        println!("Node {node_id} joined an existing cluster.");
    }
    println!("\nNodes ({}):", cluster.nodes.len());
    print_nodes(&cluster.nodes);
    println!();
    print_leader(cluster.leader.as_ref());
    let stats = client.get_stats()?;
    println!("\nGateway stats:");
    print_fields(&stats);
    println!("\nHeartbeating; stop with Ctrl-C.");
    if let Some(signal) = signals.forever().next() {
        log::info!("received signal {signal}, stopping");
    }
    if cli.leave_on_exit {
        client.leave()?;
        println!("Node {node_id} left the cluster.");
    } else {
        client.shutdown();
        println!("Stopped heartbeating; the gateway will expire node {node_id}.");
    }
    Ok(())
}

fn metadata(pairs: &[String]) -> Result<Option<Map<String, Value>>, Failure> {
    if pairs.is_empty() {
        return Ok(None);
    }
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                Ok((key.to_owned(), Value::String(value.to_owned())))
            }
            _ => Err(Failure::Usage(format!(
                "invalid --metadata {pair:?}: expected key=value"
            ))),
        })
        .collect::<Result<Map<_, _>, _>>()
        .map(Some)
}

fn nodes(client: &GatewayClient, command: &NodesCommand) -> Result<(), Failure> {
    let answer = client.list_nodes(command.all)?;
    if command.json {
        print_json(&answer);
    } else {
        print_nodes(&answer.nodes);
    }
    Ok(())
}

fn leader(client: &GatewayClient, as_json: bool) -> Result<(), Failure> {
    let answer = client.leader()?;
    if as_json {
        print_json(&answer);
    } else {
        print_leader(answer.leader.as_ref());
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
        println!("Node {node_id} is now the leader.");
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
        println!("Node {node_id} removed.");
    }
    Ok(())
}

fn stats(client: &GatewayClient, as_json: bool) -> Result<(), Failure> {
    let stats = client.get_stats()?;
    if as_json {
        print_json(&stats);
    } else {
        print_fields(&stats);
    }
    Ok(())
}

fn health(client: &GatewayClient, as_json: bool) -> Result<(), Failure> {
    let health = client.health_check()?;
    if as_json {
        print_json(&health);
    } else {
        println!(
            "{} (version {}, epoch {})",
            health.status, health.version, health.epoch
        );
    }
    Ok(())
}

/// Prints changes as the client's watch sees them until a signal; exit 1 if no gateway answers
/// at start.
fn watch(client: &GatewayClient, as_json: bool) -> Result<(), Failure> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Failure::Gateway(format!("cannot handle signals: {e}")))?;
    client.health_check()?;
    let changes = client.subscribe();
    client.watch();
    std::thread::spawn(move || {
        use std::io::Write;
        for event in changes.iter().flat_map(|change| change.events()) {
            let line = match as_json {
                true => event.to_json().to_string(),
                false => event.to_string(),
            };
            if writeln!(std::io::stdout(), "{line}").is_err() {
                return;
            }
        }
    });
    signals.forever().next();
    client.shutdown();
    Ok(())
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("answers serialise")
    );
}

/// Nodes as aligned columns.
fn print_nodes(nodes: &[Node]) {
    if nodes.is_empty() {
        println!("(no nodes)");
        return;
    }
    let now = unix_now();
    let rows: Vec<[String; 5]> = nodes
        .iter()
        .map(|n| {
            [
                n.node_id.to_string(),
                n.address(),
                n.status.as_str().to_owned(),
                age(now - n.last_seen),
                n.capabilities.join(","),
            ]
        })
        .collect();
    let header = ["NODE", "ADDRESS", "STATUS", "LAST SEEN", "CAPABILITIES"].map(str::to_owned);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn print_leader(leader: Option<&Node>) {
    match leader {
        Some(n) => println!(
            "Leader: node {} at {} ({}, last seen {})",
            n.node_id,
            n.address(),
            n.status.as_str(),
            age(unix_now() - n.last_seen)
        ),
        None => println!("No leader currently registered."),
    }
}

/// A flat JSON object as `key: value` lines, keys aligned.
fn print_fields(value: &impl Serialize) {
    let Ok(Value::Object(fields)) = serde_json::to_value(value) else {
        return;
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0) + 1;
    for (key, value) in fields {
        let text = match value {
            Value::String(s) => s,
            Value::Null => "none".to_owned(),
            other => other.to_string(),
        };
        println!("{:<width$} {text}", format!("{key}:"));
    }
}

/// Seconds as "12s ago", "3m ago", "5h ago", "2d ago".
fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}
