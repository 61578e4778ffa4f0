//! What `GET /metrics` shows, in the Prometheus text exposition format (version 0.0.4).
//!
//! Every counter is an atomic bumped where the thing happens (no lock per request); gauges
//! that the registry already knows (nodes by status, version, leader) are read when scraped.
//! Names are prefixed `cluster_gateway_`, except the `process_*` families, which are named
//! as every Prometheus client library names them (so the usual dashboards and alerts apply).

use std::fmt::Write;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::server::registry::{Budget, Event};

mod process;

pub use process::Process;

/// `Content-Type` of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The paths requests are counted by; anything else is `other`.
const ROUTES: [&str; 11] = [
    "/health",
    "/register",
    "/nodes",
    "/leader",
    "/heartbeat",
    "/remove",
    "/stats",
    "/metrics",
    "/",
    "/openapi.json",
    "other",
];

/// Upper bounds of the request duration histogram, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Status codes are counted in a table from 0 to 599.
const STATUSES: usize = 600;

/// The route label index of a request URL (path and query).
pub fn route(url: &str) -> usize {
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    ROUTES
        .iter()
        .position(|&r| r == path)
        .unwrap_or(ROUTES.len() - 1)
}

/// The counters, shared by the server (requests, bodies, watchers) and the gateway (what the
/// registry did).
#[derive(Debug)]
pub struct Metrics {
    requests: Vec<AtomicU64>,
    /// Per route: a count per bucket (the last one is `+Inf`), the sum in nanoseconds, the
    /// count.
    durations: Vec<Histogram>,
    registrations_created: AtomicU64,
    registrations_updated: AtomicU64,
    heartbeats_acknowledged: AtomicU64,
    heartbeats_not_found: AtomicU64,
    suspicions: AtomicU64,
    reaps: AtomicU64,
    bootstraps: AtomicU64,
    /// Requests parked in a long-poll.
    pub watchers_waiting: Arc<AtomicUsize>,
    /// Event streams open (`GET /nodes?changes=1&stream=1`).
    pub streams_open: Arc<AtomicUsize>,
    /// Request bodies being read on threads of their own.
    pub bodies_being_read: AtomicUsize,
    /// Unix time the gateway started.
    start_time: f64,
    /// The configured limits, once the program running the gateway has said them.
    limits: OnceLock<(usize, usize)>,
}

#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

/// What the registry shows at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Active nodes.
    pub active: usize,
    /// Suspected nodes.
    pub suspected: usize,
    /// The registry version.
    pub version: u64,
    /// True if a leader is set.
    pub leader: bool,
    /// The registry's memory budget and what its nodes take of it (none over etcd).
    pub budget: Option<Budget>,
    /// For a durable store: log syncs, log bytes, snapshot bytes, and whether writes failed.
    pub store: Option<(u64, u64, u64, bool)>,
    /// False while the store refuses writes (a data directory that cannot be written, etcd out
    /// of reach): reads go on, possibly stale.
    pub writable: bool,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Zeroed counters; the start time is now.
    pub fn new() -> Metrics {
        Metrics {
            requests: (0..ROUTES.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            durations: (0..ROUTES.len()).map(|_| Histogram::default()).collect(),
            registrations_created: AtomicU64::new(0),
            registrations_updated: AtomicU64::new(0),
            heartbeats_acknowledged: AtomicU64::new(0),
            heartbeats_not_found: AtomicU64::new(0),
            suspicions: AtomicU64::new(0),
            reaps: AtomicU64::new(0),
            bootstraps: AtomicU64::new(0),
            watchers_waiting: Arc::new(AtomicUsize::new(0)),
            streams_open: Arc::new(AtomicUsize::new(0)),
            bodies_being_read: AtomicUsize::new(0),
            start_time: crate::server::registry::unix_now(),
            limits: OnceLock::new(),
        }
    }

    /// An answer with `status` to a request on `route` (from [`route`]) that took `took`.
    pub fn answered(&self, route: usize, status: u16, took: Duration) {
        let route = route.min(ROUTES.len() - 1);
        let status = (status as usize).min(STATUSES - 1);
        bump(&self.requests[route * STATUSES + status]);
        let histogram = &self.durations[route];
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(BUCKETS.len());
        bump(&histogram.buckets[bucket]);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        histogram.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        bump(&histogram.count);
    }

    /// Exports the configured `--max-nodes` and `--max-watchers` as gauges, so an alert can
    /// compare the nodes and long-polls with the most the gateway takes. Only the first call
    /// counts; `gateway-server` makes it at start.
    pub fn set_limits(&self, max_nodes: usize, max_watchers: usize) {
        let _ = self.limits.set((max_nodes, max_watchers));
    }

    /// Answers given with a status in `statuses` so far, on every route.
    pub fn answers_with_status(&self, statuses: RangeInclusive<u16>) -> u64 {
        let statuses = usize::from(*statuses.start())..=usize::from(*statuses.end());
        self.requests
            .iter()
            .enumerate()
            .filter(|(i, _)| statuses.contains(&(i % STATUSES)))
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }

    /// A registration: a new node or an update; `bootstrap` if it bootstrapped the cluster.
    pub fn registered(&self, created: bool, bootstrap: bool) {
        bump(if created {
            &self.registrations_created
        } else {
            &self.registrations_updated
        });
        if bootstrap {
            bump(&self.bootstraps);
        }
    }

    /// A heartbeat, acknowledged or for an unknown node.
    pub fn heartbeat(&self, acknowledged: bool) {
        bump(if acknowledged {
            &self.heartbeats_acknowledged
        } else {
            &self.heartbeats_not_found
        });
    }

    /// Changes the registry announced.
    pub fn events(&self, events: &[Event]) {
        for event in events {
            match event {
                Event::Suspected { .. } => bump(&self.suspicions),
                Event::Reaped { .. } => bump(&self.reaps),
                _ => {}
            }
        }
    }

    /// The exposition text.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(8192);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP cluster_gateway_{name} {help}");
            let _ = writeln!(out, "# TYPE cluster_gateway_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "cluster_gateway_{name}{labels} {}", number(*value));
            }
        };
        let one = |value: f64| vec![(String::new(), value)];
        family(
            "build_info",
            "gauge",
            "The gateway's version, as a label; always 1.",
            &[(format!("{{version=\"{}\"}}", crate::VERSION), 1.0)],
        );
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the gateway since the Unix epoch, in seconds (the process's is \
             process_start_time_seconds).",
            &one(self.start_time),
        );
        if let Some(&(max_nodes, max_watchers)) = self.limits.get() {
            family(
                "max_nodes",
                "gauge",
                "Most nodes the registry holds (--max-nodes); a new node past it gets 503.",
                &one(max_nodes as f64),
            );
            family(
                "max_watchers",
                "gauge",
                "Most long-polls waiting at once (--max-watchers); past it they are answered \
                 at once.",
                &one(max_watchers as f64),
            );
        }
        family(
            "nodes",
            "gauge",
            "Registered nodes, by status.",
            &[
                ("{status=\"active\"}".to_owned(), gauges.active as f64),
                ("{status=\"suspected\"}".to_owned(), gauges.suspected as f64),
            ],
        );
        family(
            "registry_version",
            "gauge",
            "The registry version (it grows on every visible change).",
            &one(gauges.version as f64),
        );
        family(
            "leader_present",
            "gauge",
            "1 if a leader is set, else 0.",
            &one(if gauges.leader { 1.0 } else { 0.0 }),
        );
        if let Some(budget) = gauges.budget {
            family(
                "registry_bytes",
                "gauge",
                "Bytes the registry's nodes take as a list writes them, at most (what \
                 --max-registry-bytes bounds).",
                &one(budget.used as f64),
            );
            family(
                "max_registry_bytes",
                "gauge",
                "The registry's memory budget (--max-registry-bytes); a registration past it \
                 gets 507.",
                &one(budget.max as f64),
            );
        }
        let requests: Vec<(String, f64)> = ROUTES
            .iter()
            .enumerate()
            .flat_map(|(r, route)| {
                let counters = &self.requests[r * STATUSES..(r + 1) * STATUSES];
                counters
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| load(c) > 0)
                    .map(move |(code, c)| {
                        (
                            format!("{{route=\"{route}\",code=\"{code}\"}}"),
                            load(c) as f64,
                        )
                    })
            })
            .collect();
        family(
            "requests_total",
            "counter",
            "Answers given, by route (path, or other) and status code (code).",
            &requests,
        );
        let mut durations = Vec::new();
        for (route, histogram) in ROUTES.iter().zip(&self.durations) {
            let count = load(&histogram.count);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (i, bucket) in histogram.buckets.iter().enumerate() {
                cumulative += load(bucket);
                let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
                durations.push((
                    format!("_bucket{{route=\"{route}\",le=\"{le}\"}}"),
                    cumulative as f64,
                ));
            }
            let sum = load(&histogram.sum_nanos) as f64 / 1e9;
            durations.push((format!("_sum{{route=\"{route}\"}}"), sum));
            durations.push((format!("_count{{route=\"{route}\"}}"), count as f64));
        }
        family(
            "request_duration_seconds",
            "histogram",
            "Time from receiving a request to its answer written, by route (a long-poll: from \
             its release).",
            &durations,
        );
        family(
            "registrations_total",
            "counter",
            "Registrations, by result: a new node (created) or a known one (updated).",
            &[
                (
                    "{result=\"created\"}".to_owned(),
                    load(&self.registrations_created) as f64,
                ),
                (
                    "{result=\"updated\"}".to_owned(),
                    load(&self.registrations_updated) as f64,
                ),
            ],
        );
        family(
            "heartbeats_total",
            "counter",
            "Heartbeats, by result.",
            &[
                (
                    "{result=\"acknowledged\"}".to_owned(),
                    load(&self.heartbeats_acknowledged) as f64,
                ),
                (
                    "{result=\"not_found\"}".to_owned(),
                    load(&self.heartbeats_not_found) as f64,
                ),
            ],
        );
        family(
            "suspicions_total",
            "counter",
            "Nodes suspected after silence.",
            &one(load(&self.suspicions) as f64),
        );
        family(
            "reaps_total",
            "counter",
            "Nodes removed after silence.",
            &one(load(&self.reaps) as f64),
        );
        family(
            "bootstraps_total",
            "counter",
            "Nodes that bootstrapped a cluster.",
            &one(load(&self.bootstraps) as f64),
        );
        family(
            "watchers_waiting",
            "gauge",
            "Long-poll requests parked until a change or the end of their wait.",
            &one(self.watchers_waiting.load(Ordering::Relaxed) as f64),
        );
        family(
            "streams_open",
            "gauge",
            "Event streams open (GET /nodes?changes=1&stream=1), each sent every change.",
            &one(self.streams_open.load(Ordering::Relaxed) as f64),
        );
        family(
            "bodies_being_read",
            "gauge",
            "Request bodies being read on threads of their own.",
            &one(self.bodies_being_read.load(Ordering::Relaxed) as f64),
        );
        family(
            "store_writable",
            "gauge",
            "1 while the store takes writes; 0 while it refuses them (a data directory that \
             cannot be written, etcd out of reach) and reads answer from what the gateway has.",
            &one(if gauges.writable { 1.0 } else { 0.0 }),
        );
        if let Some((syncs, log_bytes, snapshot_bytes, failed)) = gauges.store {
            family(
                "store_syncs_total",
                "counter",
                "Syncs of the registry log to disk (each one a batch of changes).",
                &one(syncs as f64),
            );
            family(
                "store_log_bytes",
                "gauge",
                "Bytes in the registry log since the last compaction.",
                &one(log_bytes as f64),
            );
            family(
                "store_snapshot_bytes",
                "gauge",
                "Bytes in the last snapshot of the registry.",
                &one(snapshot_bytes as f64),
            );
            family(
                "store_failed",
                "gauge",
                "1 if the registry log can no longer be written (writes are refused).",
                &one(if failed { 1.0 } else { 0.0 }),
            );
        }
        render_process(&mut out, &Process::read());
        out
    }
}

/// The `process_*` families, named and described as Prometheus's client libraries do; a figure
/// `/proc` did not give is left out rather than shown as 0.
fn render_process(out: &mut String, process: &Process) {
    let families = [
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            process.open_fds,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            process.max_fds,
        ),
        (
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            process.threads,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            process.resident_memory_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            process.virtual_memory_bytes,
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            process.cpu_seconds,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            process.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in families {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", number(value));
        }
    }
}

/// A sample value as the exposition format writes it (`+Inf`, not Rust's `inf`).
fn number(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if value.is_nan() {
        "NaN".to_owned()
    } else {
        value.to_string()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path() {
        assert_eq!(ROUTES[route("/nodes?index=3")], "/nodes");
        assert_eq!(ROUTES[route("/")], "/");
        assert_eq!(ROUTES[route("/nope")], "other");
    }

    #[test]
    fn the_histogram_is_cumulative() {
        let metrics = Metrics::new();
        metrics.answered(route("/health"), 200, Duration::from_micros(50));
        metrics.answered(route("/health"), 200, Duration::from_millis(2));
        metrics.answered(route("/health"), 503, Duration::from_secs(60));
        let text = metrics.render(&Gauges::default());
        for line in [
            "cluster_gateway_request_duration_seconds_bucket{route=\"/health\",le=\"0.0001\"} 1",
            "cluster_gateway_request_duration_seconds_bucket{route=\"/health\",le=\"0.0025\"} 2",
            "cluster_gateway_request_duration_seconds_bucket{route=\"/health\",le=\"5\"} 2",
            "cluster_gateway_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} 3",
            "cluster_gateway_request_duration_seconds_count{route=\"/health\"} 3",
            "cluster_gateway_requests_total{route=\"/health\",code=\"200\"} 2",
            "cluster_gateway_requests_total{route=\"/health\",code=\"503\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert_eq!(metrics.answers_with_status(200..=299), 2);
        assert_eq!(metrics.answers_with_status(500..=599), 1);
    }

    #[test]
    fn limits_are_shown_once_set() {
        let metrics = Metrics::new();
        assert!(!metrics.render(&Gauges::default()).contains("max_nodes"));
        metrics.set_limits(123, 45);
        let text = metrics.render(&Gauges::default());
        assert!(text.contains("\ncluster_gateway_max_nodes 123\n"), "{text}");
        assert!(
            text.contains("\ncluster_gateway_max_watchers 45\n"),
            "{text}"
        );
    }

    #[test]
    fn an_unlimited_figure_is_written_as_prometheus_writes_it() {
        let mut out = String::new();
        render_process(
            &mut out,
            &Process {
                max_fds: Some(f64::INFINITY),
                ..Process::default()
            },
        );
        assert!(out.ends_with("\nprocess_max_fds +Inf\n"), "{out}");
    }
}
