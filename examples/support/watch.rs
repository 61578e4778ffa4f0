//! What the long-poll benchmarks (`watch_bench`, `client_watch_latency`, `delta_bench`)
//! share: an agent, the gateway's index, its count of parked watchers, and percentiles.

use std::time::{Duration, Instant};

/// An agent that returns error statuses as answers and waits long enough for a long-poll.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .proxy(None)
        .build()
        .into()
}

/// Parked watchers, from `/metrics`.
pub fn waiting(agent: &ureq::Agent, url: &str) -> usize {
    let text = agent
        .get(format!("{url}/metrics"))
        .call()
        .expect("GET /metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("cluster_gateway_watchers_waiting "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as usize
}

/// Waits (at most a minute) until the gateway counts `n` parked watchers.
pub fn wait_until_parked(agent: &ureq::Agent, url: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while waiting(agent, url) < n {
        assert!(Instant::now() < deadline, "the watchers were not parked");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The `p` percentile (0 to 1) of `sorted`, which must not be empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// `X-Gateway-Index` and `X-Gateway-Epoch` of `GET /leader`.
#[allow(dead_code)] // not every benchmark that includes this module asks for it
pub fn index(agent: &ureq::Agent, url: &str) -> (u64, String) {
    let response = agent
        .get(format!("{url}/leader"))
        .call()
        .expect("GET /leader");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .expect("the gateway sends X-Gateway-Index and X-Gateway-Epoch")
            .to_owned()
    };
    (
        header("X-Gateway-Index").parse().expect("a number"),
        header("X-Gateway-Epoch"),
    )
}
