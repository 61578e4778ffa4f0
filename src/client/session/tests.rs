//! Interleavings of a client's threads made one step at a time: what a write does once
//! `leave()` has begun, and what a call in its retry pause counts as.

use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::*;
use crate::client::transport::TransportConfig;

fn shared(gateway: &str) -> Shared {
    let gateways = [gateway.to_owned()];
    let transport = Transport::new(TransportConfig {
        gateways: &gateways,
        timeout: Duration::from_millis(200),
        attempts: 3,
        base_delay: Duration::from_millis(1),
        proxy_from_env: false,
        token: None,
        ca_file: None,
    })
    .unwrap();
    Shared {
        transport,
        pinned_interval: None,
        deadline: Duration::from_secs(5),
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
    }
}

/// Issue 21, item 1: the writer (a metadata publish, the heartbeat thread) checked that the
/// membership lasts, then `leave()` began, then the write goes: it is refused, and nothing
/// reaches the gateway. The same for a write of a membership that ended and was followed by
/// a new one.
#[test]
fn a_write_made_after_leave_began_is_refused_and_never_sent() {
    let gateway = TcpListener::bind("127.0.0.1:0").unwrap();
    gateway.set_nonblocking(true).unwrap();
    let shared = shared(&gateway.local_addr().unwrap().to_string());
    let life = shared.state().life;
    shared.state().leaving = true;
    let write =
        || shared.write::<Value>(life, "/register", &json!({"node_id": 1}), &[], &|_| false);
    let result = write();
    assert!(
        matches!(result, Err(ClientError::NotRegistered)),
        "{result:?}"
    );
    {
        let mut state = shared.state();
        state.begin_life();
        assert_ne!(state.life, life);
    }
    let result = write();
    assert!(
        matches!(result, Err(ClientError::NotRegistered)),
        "{result:?}"
    );
    let connected = gateway.accept();
    assert!(
        connected
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a write reached the gateway: {connected:?}"
    );
    let state = shared.state();
    assert_eq!((state.calls, state.writes), (0, 0));
}

/// Issue 21, item 5: a call in the pause between its tries is not a request waiting for an
/// answer, so a gateway that answers the heartbeat thread again is not reported unavailable
/// because of a call still pausing (before, `gateway_available` flapped to false right after
/// a recovery).
#[test]
fn a_call_in_its_retry_pause_is_not_waiting_for_an_answer() {
    // Port 1: nothing listens there, and no test can bind it. Every try is refused at once.
    let shared = shared("127.0.0.1:1");
    shared.state().status.last_success = Some(SystemTime::now());
    let waiting_in_pauses = Mutex::new(Vec::new());
    let result = shared.call::<Value>(Method::Get, "/health", None::<&()>, &|_| {
        let state = shared.state();
        crate::lock(&waiting_in_pauses).push(state.pending.len());
        true
    });
    assert!(result.is_err());
    assert_eq!(*crate::lock(&waiting_in_pauses), vec![0, 0]);
    assert!(shared.state().pending.is_empty());
}
