//! Many nodes registering into an empty gateway at once: exactly one bootstraps.

use std::sync::Arc;
use std::thread;

use cluster_gateway::server::gateway::Gateway;
use cluster_gateway::server::http::{self, Request};
use cluster_gateway::server::registry::{Liveness, Registry};

use crate::support::{Barrier, join_all, registration};

/// 50 threads, 200 rounds, through the same dispatch the server uses.
#[test]
fn exactly_one_of_fifty_racing_registrants_bootstraps() {
    for round in 0..200 {
        let gateway = Arc::new(Gateway::new(
            Registry::new(Liveness::default()),
            std::time::Duration::from_secs(30),
        ));
        let barrier = Barrier::new(50);
        let racers: Vec<_> = (0..50u64)
            .map(|id| {
                let gateway = Arc::clone(&gateway);
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let _guard = barrier.guard();
                    let body = registration(id).to_string();
                    barrier.wait();
                    let answer = http::handle(
                        &gateway,
                        &Request {
                            method: "POST",
                            url: "/register",
                            body: body.as_bytes(),
                            headers: &[],
                        },
                    );
                    assert_eq!(answer.status, 200);
                    let answer: serde_json::Value =
                        serde_json::from_slice(&answer.body.to_vec()).unwrap();
                    answer["is_bootstrap"].as_bool().unwrap()
                })
            })
            .collect();
        let winners = join_all(racers, std::time::Duration::from_secs(60))
            .into_iter()
            .filter(|&b| b)
            .count();
        assert_eq!(winners, 1, "round {round}");
        assert_eq!(gateway.stats().total_nodes, 50);
    }
}
