//! A relay between a client and a real gateway that decides when each request reaches the
//! gateway and when its answer reaches the client: the interleavings a test wants, made on
//! purpose instead of hoped for. Frozen, it accepts and reads every request and answers none
//! (as a gateway stopped with SIGSTOP, whose kernel still takes connections); resumed, it hands
//! what it held to the gateway in the order the test says (as a gateway that resumes reads
//! its queued connections in whatever order), whether or not the client still waits. Away, it
//! closes every connection at once (a gateway that is gone).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the relay does with a request when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward it at once.
    Pass,
    /// Hold it, unanswered, until the test releases it.
    Frozen,
    /// Close the connection without answering.
    Away,
}

/// One request seen by the relay.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u64,
    pub path: String,
    pub body: String,
}

/// What happened, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// The request reached the relay.
    Arrived(Request),
    /// The gateway took it and answered `status`.
    Landed(Request, u16),
}

type Rule = Box<dyn Fn(&Request) -> bool + Send>;

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    next_id: u64,
    /// Requests held before the gateway, in arrival order.
    held: Vec<Request>,
    /// Answers held before the client, by request id.
    answers_held: HashSet<u64>,
    events: Vec<Event>,
    /// Requests matching this are held even while passing.
    hold_request: Option<Rule>,
    /// Answers to requests matching this are held until released.
    hold_answer: Option<Rule>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Long enough for anything on a loaded machine; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(20);

impl Relay {
    /// A relay on 127.0.0.1:0 in front of the gateway at `upstream`, passing everything.
    pub fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Some(Mode::Pass),
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    if shared.state().mode == Some(Mode::Away) {
                        continue; // Dropped: closed without a word.
                    }
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || connection(stream, upstream, &shared));
                }
            })
        };
        Relay {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.state().mode = Some(mode);
        self.shared.changed.notify_all();
    }

    /// Holds, before the gateway, every request for which `rule` is true, until released.
    pub fn hold_requests(&self, rule: impl Fn(&Request) -> bool + Send + 'static) {
        self.shared.state().hold_request = Some(Box::new(rule));
    }

    /// Holds, before the client, the answer to every request for which `rule` is true (the
    /// gateway has taken the request), until [`Relay::release_answers`].
    pub fn hold_answers(&self, rule: impl Fn(&Request) -> bool + Send + 'static) {
        self.shared.state().hold_answer = Some(Box::new(rule));
    }

    /// Lets every held answer go to its client, and holds no more.
    pub fn release_answers(&self) {
        let mut state = self.shared.state();
        state.hold_answer = None;
        state.answers_held.clear();
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Everything that happened so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.shared.state().events.clone()
    }

    /// Waits until `condition` holds for the events so far; panics after a long while.
    pub fn wait_for(&self, what: &str, condition: impl Fn(&[Event]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut state = self.shared.state();
        while !condition(&state.events) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the relay never saw {what}: {:?}",
                state.events
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Lets the held requests reach the gateway one at a time, each once the one before it
    /// has landed: first those for which `first` is true, then the others, each group in
    /// arrival order; requests that arrive meanwhile are held and sent the same way. Then the
    /// relay passes everything (and holds no request by rule any more).
    pub fn resume(&self, first: impl Fn(&Request) -> bool) {
        loop {
            let mut state = self.shared.state();
            let next = state
                .held
                .iter()
                .find(|r| first(r))
                .or_else(|| state.held.first())
                .cloned();
            let Some(next) = next else {
                state.mode = Some(Mode::Pass);
                state.hold_request = None;
                drop(state);
                self.shared.changed.notify_all();
                return;
            };
            state.held.retain(|r| r.id != next.id);
            drop(state);
            self.shared.changed.notify_all();
            self.wait_for("a released request land", |events| {
                events
                    .iter()
                    .any(|e| matches!(e, Event::Landed(r, _) if r.id == next.id))
            });
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Nothing is held any more: held connections forward and end.
        self.set_mode(Mode::Pass);
        {
            let mut state = self.shared.state();
            state.held.clear();
            state.hold_request = None;
        }
        self.release_answers();
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves one client connection: each request in turn, held or forwarded as the relay says.
fn connection(client: TcpStream, upstream: SocketAddr, shared: &Shared) {
    let Ok(reader) = client.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let mut client = client;
    while let Some((raw, path, body)) = read_request(&mut reader) {
        let request = {
            let mut state = shared.state();
            state.next_id += 1;
            let request = Request {
                id: state.next_id,
                path,
                body,
            };
            state.events.push(Event::Arrived(request.clone()));
            let held_by_rule = state
                .hold_request
                .as_ref()
                .is_some_and(|rule| rule(&request));
            match state.mode {
                Some(Mode::Away) => return,
                Some(Mode::Frozen) => state.held.push(request.clone()),
                _ if held_by_rule => state.held.push(request.clone()),
                _ => {}
            }
            request
        };
        shared.changed.notify_all();
        // Held: wait until the test lets it through (whatever the client does meanwhile).
        {
            let mut state = shared.state();
            while state.held.iter().any(|r| r.id == request.id) {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        let Some((status, answer)) = forward(upstream, &raw) else {
            return;
        };
        {
            let mut state = shared.state();
            state.events.push(Event::Landed(request.clone(), status));
            if state
                .hold_answer
                .as_ref()
                .is_some_and(|rule| rule(&request))
            {
                state.answers_held.insert(request.id);
            }
            shared.changed.notify_all();
            while state.answers_held.contains(&request.id) {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        }
        if client.write_all(&answer).is_err() {
            return; // The client gave up on it; the gateway took it all the same.
        }
    }
}

/// One request off the client's connection: its raw bytes, path and body.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(Vec<u8>, String, String)> {
    let mut raw = Vec::new();
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    raw.extend_from_slice(line.as_bytes());
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        raw.extend_from_slice(header.as_bytes());
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    raw.extend_from_slice(&body);
    Some((raw, path, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends `raw` to the gateway on a connection of its own; its status and whole answer.
fn forward(upstream: SocketAddr, raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut gateway = TcpStream::connect(upstream).ok()?;
    gateway.set_read_timeout(Some(PATIENCE)).ok()?;
    gateway.write_all(raw).ok()?;
    let mut reader = BufReader::new(gateway);
    let mut answer = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    answer.extend_from_slice(line.as_bytes());
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        answer.extend_from_slice(header.as_bytes());
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    answer.extend_from_slice(&body);
    Some((status, answer))
}
