//! A registration's outcome while its group is in flight: completed by the thread that learns
//! it (the one that sent the group, or the one that decided again after the group failed),
//! and either waited for or handed a callback ([`Ticket::when_done`]), so no worker need wait.

use std::sync::{Arc, Condvar, Mutex};

use crate::lock;
use crate::server::store::{Settled, StoreError};

/// The outcome of one registration handed to a group (cheap to clone: shared).
#[derive(Clone)]
pub(crate) struct Ticket(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    done: Condvar,
}

enum State {
    /// Not known yet, and nobody asked to be told.
    Waiting,
    /// Not known yet; call this once it is.
    Told(Settled),
    /// Known: `Ok` once the write is in etcd and in the copy.
    Done(Result<(), StoreError>),
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_done() {
            "Ticket(done)"
        } else {
            "Ticket(waiting)"
        })
    }
}

impl Ticket {
    /// A ticket not completed yet.
    pub(super) fn new() -> Ticket {
        Ticket(Arc::new(Inner {
            state: Mutex::new(State::Waiting),
            done: Condvar::new(),
        }))
    }

    /// Records the outcome, and calls the callback waiting for it, if any (on this thread,
    /// outside the lock: it must be quick).
    pub(super) fn complete(&self, outcome: Result<(), StoreError>) {
        let mut state = lock(&self.0.state);
        let told = match std::mem::replace(&mut *state, State::Done(outcome.clone())) {
            State::Told(done) => Some(done),
            State::Waiting | State::Done(_) => None,
        };
        drop(state);
        self.0.done.notify_all();
        if let Some(done) = told {
            done(outcome);
        }
    }

    /// Calls `done` with the outcome: at once if it is known, else on the thread that
    /// completes the ticket.
    pub(super) fn when_done(&self, done: Settled) {
        let mut state = lock(&self.0.state);
        if let State::Done(outcome) = &*state {
            let outcome = outcome.clone();
            drop(state);
            return done(outcome);
        }
        *state = State::Told(done);
    }

    /// True once the outcome is known.
    pub(super) fn is_done(&self) -> bool {
        matches!(*lock(&self.0.state), State::Done(_))
    }

    /// Waits for the outcome.
    pub(super) fn wait(&self) -> Result<(), StoreError> {
        let mut state = lock(&self.0.state);
        loop {
            if let State::Done(outcome) = &*state {
                return outcome.clone();
            }
            state = self.0.done.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    fn told(ticket: &Ticket) -> mpsc::Receiver<Result<(), StoreError>> {
        let (send, told) = mpsc::channel();
        ticket.when_done(Box::new(move |outcome| send.send(outcome).unwrap()));
        told
    }

    #[test]
    fn an_answer_handed_to_a_ticket_goes_only_once_the_outcome_is_known() {
        // Handed over first: nothing until the thread that learns the outcome completes it.
        let ticket = Ticket::new();
        let answer = told(&ticket);
        assert!(
            answer.try_recv().is_err(),
            "sent before the write was known"
        );
        assert!(!ticket.is_done());
        let learner = ticket.clone();
        std::thread::spawn(move || learner.complete(Ok(())))
            .join()
            .unwrap();
        assert_eq!(answer.try_recv(), Ok(Ok(())));
        assert!(ticket.is_done());
        assert_eq!(ticket.wait(), Ok(()));
        // Completed first (the worker sent the group itself): handed over, sent at once, and
        // a failure is what is sent.
        let ticket = Ticket::new();
        let refused = StoreError::Unavailable(Arc::from("etcd: cut off"));
        ticket.complete(Err(refused.clone()));
        assert_eq!(told(&ticket).try_recv(), Ok(Err(refused.clone())));
        assert_eq!(ticket.wait(), Err(refused));
    }
}
