//! Answers to durable writes, sent once their records are on disk, off the worker pool.
//!
//! With a data directory a write is acknowledged only after the `fsync` that covers it. A
//! worker that waited for it would hold one of the few workers for the whole sync, so at most
//! as many writes as there are workers could share one sync. Instead the worker hands the
//! answer over and takes the next request: the log's writer, once a sync covers the answer,
//! puts it in [`Senders`]' queue (a quick step on its thread: no socket is touched there), and
//! a sending thread writes it.
//!
//! One sending thread sends a whole batch (every answer a sync settled), one answer after the
//! other: waking a thread per answer cost more than the sends (a sync settles 16 answers at 16
//! connections, and each wake-up is two context switches on a 2-core machine). A client that
//! does not read must still never hold the others: while a thread sends, one idle thread
//! watches the queue, and takes the first answer once it has waited [`STALL`]; if more are
//! left, the next idle thread watches, and so on. Threads are started when none is idle (up to
//! [`MAX_SENDERS`]) and end after [`IDLE_END`] with nothing to send. With nothing queued, every
//! thread sleeps without a timeout but that one.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::lock;

/// One answer to send.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Most sending threads at once; past that, answers wait in the queue for a free one.
pub(super) const MAX_SENDERS: usize = 64;

/// A sending thread with nothing to send for this long ends.
pub(super) const IDLE_END: Duration = Duration::from_secs(2);

/// How long an answer waits behind a thread that is sending before another thread takes it:
/// far above the time a send takes to a client that reads (a few microseconds), far below
/// what a client notices.
pub(super) const STALL: Duration = Duration::from_millis(2);

/// The queue of answers whose write is durable, and the threads that send them. The server
/// keeps a second one for released long-polls (see `Context::release`).
#[derive(Default)]
pub(super) struct Senders {
    state: Mutex<State>,
    work: Condvar,
    /// The sending threads' name (`gateway-durable-answer` if not given).
    name: Option<&'static str>,
}

#[derive(Default)]
struct State {
    /// The answers to send, each with when it was queued.
    jobs: VecDeque<(Instant, Job)>,
    /// Threads waiting on the condition variable (the watcher among them).
    idle: usize,
    /// Wake-ups given (or threads started) and not yet taken: until they are, another answer
    /// wakes nobody more.
    woken: usize,
    /// Threads sending an answer.
    busy: usize,
    /// An idle thread is watching the queue for an answer that waits too long.
    watching: bool,
    threads: usize,
    /// Set at shutdown: idle threads end at once (what is queued is still sent).
    stopping: bool,
}

/// What a sending thread does next.
#[derive(Debug, PartialEq)]
enum Next {
    /// Send the first answer.
    Take,
    /// Wait this long for the sending threads, then look again.
    Watch(Duration),
    /// Sleep until woken (or [`IDLE_END`]).
    Idle,
}

impl State {
    /// What a thread that is not sending does at `now`: it takes the first answer if no
    /// thread is sending (nobody else would) or if the answer has waited [`STALL`] behind the
    /// ones that are; otherwise it watches, if nobody does yet.
    fn next(&self, now: Instant) -> Next {
        let Some((queued, _)) = self.jobs.front() else {
            return Next::Idle;
        };
        let waited = now.saturating_duration_since(*queued);
        if self.busy == 0 || waited >= STALL {
            Next::Take
        } else if !self.watching {
            Next::Watch(STALL - waited)
        } else {
            Next::Idle
        }
    }
}

/// A thread to start, decided under the lock and started after it.
#[must_use]
struct Start(bool);

impl Senders {
    /// An empty queue whose threads are called `name`.
    pub(super) fn named(name: &'static str) -> Senders {
        Senders {
            name: Some(name),
            ..Senders::default()
        }
    }

    /// Queues `job`. A thread is woken (or started) only if none would see it: none is on its
    /// way, and none is sending (who takes the next answer when done) with one watching.
    pub(super) fn send(self: &Arc<Self>, job: Job) {
        let mut state = lock(&self.state);
        state.jobs.push_back((Instant::now(), job));
        let start = if state.woken == 0 && (state.busy == 0 || !state.watching) {
            self.wake(&mut state)
        } else {
            Start(false)
        };
        drop(state);
        self.start(start);
    }

    /// Wakes an idle thread, or says to start one if none is idle and there are fewer than
    /// [`MAX_SENDERS`] (past that, the first to finish takes the answer).
    fn wake(&self, state: &mut State) -> Start {
        state.woken += 1;
        if state.idle >= state.woken {
            self.work.notify_one();
            return Start(false);
        }
        if state.threads >= MAX_SENDERS {
            state.woken -= 1;
            return Start(false);
        }
        state.threads += 1;
        Start(true)
    }

    fn start(self: &Arc<Self>, Start(start): Start) {
        if !start {
            return;
        }
        let senders = Arc::clone(self);
        let started = thread::Builder::new()
            .name(self.name.unwrap_or("gateway-durable-answer").to_owned())
            .spawn(move || senders.run(true));
        if let Err(e) = started {
            log::error!("cannot start a thread to send answers: {e}");
            let mut state = lock(&self.state);
            state.threads -= 1;
            state.woken -= 1;
            if state.threads == 0 {
                // Nobody else would send it: send it here, late rather than never.
                let jobs = std::mem::take(&mut state.jobs);
                drop(state);
                jobs.into_iter().for_each(|(_, job)| job());
            }
        }
    }

    /// Ends idle sending threads now (those sending end once the queue is empty).
    pub(super) fn stop(&self) {
        lock(&self.state).stopping = true;
        self.work.notify_all();
    }

    /// A sending thread: `started` if it was started for an answer (it takes its wake-up).
    fn run(self: Arc<Self>, started: bool) {
        let mut state = lock(&self.state);
        if started {
            state.woken -= 1;
        }
        loop {
            match state.next(Instant::now()) {
                Next::Take => {
                    let Some((_, job)) = state.jobs.pop_front() else {
                        continue;
                    };
                    state.busy += 1;
                    // Someone watches the answers left behind this one.
                    let start = if !state.jobs.is_empty() && !state.watching && state.woken == 0 {
                        self.wake(&mut state)
                    } else {
                        Start(false)
                    };
                    drop(state);
                    self.start(start);
                    job();
                    state = lock(&self.state);
                    state.busy -= 1;
                }
                Next::Watch(left) => {
                    state.watching = true;
                    state = self.sleep(state, left).0;
                    state.watching = false;
                }
                Next::Idle => {
                    if state.stopping {
                        state.threads -= 1;
                        return;
                    }
                    let (next, timed_out) = self.sleep(state, IDLE_END);
                    state = next;
                    if timed_out && state.jobs.is_empty() {
                        state.threads -= 1;
                        return;
                    }
                }
            }
        }
    }

    /// Waits on the condition variable for at most `limit`, taking a wake-up if one was
    /// given; true if the wait timed out and no wake-up was left to take.
    fn sleep<'a>(
        &self,
        mut state: MutexGuard<'a, State>,
        limit: Duration,
    ) -> (MutexGuard<'a, State>, bool) {
        state.idle += 1;
        let (mut state, waited) = self
            .work
            .wait_timeout(state, limit)
            .unwrap_or_else(|e| e.into_inner());
        state.idle -= 1;
        if state.woken > 0 {
            state.woken -= 1;
            return (state, false);
        }
        (state, waited.timed_out())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::mpsc;

    fn queued(state: &mut State, at: Instant) {
        state.jobs.push_back((at, Box::new(|| {})));
    }

    #[test]
    fn an_answer_nobody_sends_is_taken_at_once() {
        let now = Instant::now();
        let mut state = State::default();
        assert_eq!(state.next(now), Next::Idle);
        queued(&mut state, now);
        assert_eq!(state.next(now), Next::Take);
    }

    #[test]
    fn an_answer_behind_a_sending_thread_is_watched_then_taken_once_it_stalls() {
        let now = Instant::now();
        let mut state = State {
            busy: 1,
            ..State::default()
        };
        queued(&mut state, now);
        assert_eq!(state.next(now), Next::Watch(STALL));
        let later = now + STALL / 2;
        assert_eq!(state.next(later), Next::Watch(STALL - STALL / 2));
        state.watching = true;
        assert_eq!(state.next(later), Next::Idle, "one thread watches");
        assert_eq!(state.next(now + STALL), Next::Take);
    }

    /// A batch is sent by one thread, in order: a thread per answer cost more than the sends.
    #[test]
    fn a_batch_is_sent_in_order_by_one_thread() {
        let senders = Arc::new(Senders::named("test-sender"));
        let (tx, rx) = mpsc::channel();
        // The first answer holds its thread until the whole batch is queued.
        let (release, hold) = mpsc::channel::<()>();
        let first = tx.clone();
        senders.send(Box::new(move || {
            hold.recv().unwrap();
            first.send((0, thread::current().id())).unwrap();
        }));
        for i in 1..16 {
            let tx = tx.clone();
            senders.send(Box::new(move || {
                tx.send((i, thread::current().id())).unwrap()
            }));
        }
        release.send(()).unwrap();
        let sent: Vec<_> = (0..16).map(|_| rx.recv().unwrap()).collect();
        let order: Vec<i32> = sent.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..16).collect::<Vec<_>>());
        let threads: HashSet<_> = sent.iter().map(|(_, t)| *t).collect();
        // A loaded machine may stall the sender past STALL once or twice; a thread per answer
        // would be 16.
        assert!(
            threads.len() <= 3,
            "{} threads sent 16 answers",
            threads.len()
        );
        senders.stop();
    }

    /// An answer to a client that does not read holds its thread; the answers behind it are
    /// sent by others.
    #[test]
    fn a_send_that_blocks_does_not_hold_the_answers_behind_it() {
        let senders = Arc::new(Senders::named("test-sender"));
        let (release, hold) = mpsc::channel::<()>();
        senders.send(Box::new(move || {
            let _ = hold.recv();
        }));
        let (tx, rx) = mpsc::channel();
        for i in 0..5 {
            let tx = tx.clone();
            senders.send(Box::new(move || tx.send(i).unwrap()));
        }
        // Once they are sent by several threads, their order is any.
        let mut sent: Vec<i32> = (0..5)
            .map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap())
            .collect();
        sent.sort_unstable();
        assert_eq!(sent, vec![0, 1, 2, 3, 4]);
        release.send(()).unwrap();
        senders.stop();
    }

    /// Answers held by clients that do not read each hold a thread, and still the next is sent.
    #[test]
    fn several_blocked_sends_each_get_their_own_thread() {
        let senders = Arc::new(Senders::named("test-sender"));
        let mut releases = Vec::new();
        for _ in 0..4 {
            let (release, hold) = mpsc::channel::<()>();
            releases.push(release);
            senders.send(Box::new(move || {
                let _ = hold.recv();
            }));
        }
        let (tx, rx) = mpsc::channel();
        senders.send(Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the answer behind four blocked sends was sent");
        drop(releases);
        senders.stop();
    }
}
