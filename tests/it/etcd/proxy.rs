//! A TCP proxy in front of one etcd member that can blackhole the gateway's watch: while
//! frozen, every connection that carries `POST /v3/watch` (open already, or opened meanwhile)
//! stops forwarding in both directions without closing, as a dropped-packet partition does;
//! every other request passes. std only: a thread per connection and direction, 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// The proxy; it stops accepting when dropped (open connections end with their peers).
pub struct Proxy {
    pub url: String,
    gate: Arc<Gate>,
    stopping: Arc<AtomicBool>,
    port: u16,
}

/// Whether watch connections are frozen, and a condvar to wait for the thaw on.
#[derive(Default)]
struct Gate {
    frozen: Mutex<bool>,
    thawed: Condvar,
}

impl Gate {
    fn wait_thawed(&self) {
        let mut frozen = self.frozen.lock().unwrap();
        while *frozen {
            frozen = self.thawed.wait(frozen).unwrap();
        }
    }
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`).
    pub fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let gate = Arc::new(Gate::default());
        let stopping = Arc::new(AtomicBool::new(false));
        {
            let (gate, stopping) = (Arc::clone(&gate), Arc::clone(&stopping));
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    connect(client, server, Arc::clone(&gate));
                }
            });
        }
        Proxy {
            url: format!("http://127.0.0.1:{port}"),
            gate,
            stopping,
            port,
        }
    }

    /// Stops forwarding on every watch connection, without closing any.
    pub fn freeze_watches(&self) {
        *self.gate.frozen.lock().unwrap() = true;
    }

    /// Forwards again what was held, and carries on.
    pub fn thaw(&self) {
        *self.gate.frozen.lock().unwrap() = false;
        self.gate.thawed.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.thaw();
        self.stopping.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Two threads, one each way; the connection counts as a watch once its request says so.
fn connect(client: TcpStream, server: TcpStream, gate: Arc<Gate>) {
    let watch = Arc::new(AtomicBool::new(false));
    let (client_read, server_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    {
        let (gate, watch) = (Arc::clone(&gate), Arc::clone(&watch));
        thread::spawn(move || pump(client_read, server_write, &gate, &watch, true));
    }
    thread::spawn(move || pump(server, client, &gate, &watch, false));
}

fn pump(mut from: TcpStream, mut to: TcpStream, gate: &Gate, watch: &AtomicBool, request: bool) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if request && buffer[..n].starts_with(b"POST /v3/watch") {
            watch.store(true, Ordering::Relaxed);
        }
        if watch.load(Ordering::Relaxed) {
            gate.wait_thawed();
        }
        if to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
