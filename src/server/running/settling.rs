//! Answers to durable writes, sent once their records are on disk, off the worker pool.
//!
//! With a data directory a write is acknowledged only after the `fsync` that covers it. A
//! worker that waited for it would hold one of the few workers for the whole sync, so at most
//! as many writes as there are workers could share one sync. Instead the worker hands the
//! answer over and takes the next request: the log's writer, once a sync covers the answer,
//! puts it in [`Senders`]' queue (a quick step on its thread: no socket is touched there), and
//! a sending thread writes it. A client that does not read holds one sending thread, never
//! the writer or the workers; sending threads are started when none is free (up to
//! [`MAX_SENDERS`]) and end after [`IDLE_END`] with nothing to send.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use crate::lock;

/// One answer to send.
pub(super) type Job = Box<dyn FnOnce() + Send>;

/// Most sending threads at once; past that, answers wait in the queue for a free one.
pub(super) const MAX_SENDERS: usize = 64;

/// A sending thread with nothing to send for this long ends.
pub(super) const IDLE_END: Duration = Duration::from_secs(2);

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
    jobs: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    /// Wake-ups given to idle threads and not yet taken.
    woken: usize,
    threads: usize,
    /// Set at shutdown: idle threads end at once (what is queued is still sent).
    stopping: bool,
}

impl Senders {
    /// An empty queue whose threads are called `name`.
    pub(super) fn named(name: &'static str) -> Senders {
        Senders {
            name: Some(name),
            ..Senders::default()
        }
    }

    /// Queues `job`, waking an idle sending thread or starting one.
    pub(super) fn send(self: &Arc<Self>, job: Job) {
        let mut state = lock(&self.state);
        state.jobs.push_back(job);
        if state.idle > state.woken {
            state.woken += 1;
            drop(state);
            self.work.notify_one();
            return;
        }
        if state.threads >= MAX_SENDERS {
            // Every thread is busy: the first to finish takes it.
            return;
        }
        state.threads += 1;
        drop(state);
        let senders = Arc::clone(self);
        let started = thread::Builder::new()
            .name(self.name.unwrap_or("gateway-durable-answer").to_owned())
            .spawn(move || senders.run());
        if let Err(e) = started {
            log::error!("cannot start a thread to send answers: {e}");
            let mut state = lock(&self.state);
            state.threads -= 1;
            if state.threads == 0 {
                // Nobody else would send it: send it here, late rather than never.
                let jobs = std::mem::take(&mut state.jobs);
                drop(state);
                jobs.into_iter().for_each(|job| job());
            }
        }
    }

    /// Ends idle sending threads now (those sending end once the queue is empty).
    pub(super) fn stop(&self) {
        lock(&self.state).stopping = true;
        self.work.notify_all();
    }

    fn run(&self) {
        loop {
            let job = {
                let mut state = lock(&self.state);
                loop {
                    if let Some(job) = state.jobs.pop_front() {
                        break job;
                    }
                    if state.stopping {
                        state.threads -= 1;
                        return;
                    }
                    state.idle += 1;
                    let (next, waited) = self
                        .work
                        .wait_timeout(state, IDLE_END)
                        .unwrap_or_else(|e| e.into_inner());
                    state = next;
                    state.idle -= 1;
                    if state.woken > 0 {
                        state.woken -= 1;
                    } else if waited.timed_out() && state.jobs.is_empty() {
                        state.threads -= 1;
                        return;
                    }
                }
            };
            job();
        }
    }
}
