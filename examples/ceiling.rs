//! The stack's own ceiling: a bare tiny_http server with a fixed pool of worker threads that
//! answers every request with the same body of a given size, using tiny_http's defaults.
//! `scripts/bench.sh` measures the gateway against it.
//!
//! `cargo run --release --example ceiling -- PORT WORKERS BODY_BYTES`

use std::sync::Arc;
use std::thread;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, name: &str| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("usage: ceiling PORT WORKERS BODY_BYTES (bad {name})"))
    };
    let (port, workers, size) = (arg(0, "PORT"), arg(1, "WORKERS"), arg(2, "BODY_BYTES"));
    let server = Arc::new(tiny_http::Server::http(("127.0.0.1", port as u16)).expect("bind"));
    let body: Arc<[u8]> = vec![b'x'; size].into();
    println!("ceiling listening on 127.0.0.1:{port} ({workers} workers, {size}-byte body)");
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (server, body) = (Arc::clone(&server), Arc::clone(&body));
            thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    let _ = request.respond(tiny_http::Response::from_data(body.to_vec()));
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
}
