//! Answers waiting for the log: what [`Log::when_synced`](super::Log::when_synced) keeps until
//! the sync that covers it, and hands back (on the writer's thread) once it is done.

use std::sync::Arc;

use super::StoreError;

/// What [`Log::when_synced`](super::Log::when_synced) calls: `Ok` once what it waits for is on
/// disk, `Err` if it never will be (the log failed first, or is stopping). Called on the
/// writer's thread (or at once, on the caller's): it must be quick, and never write to a
/// socket.
pub type Synced = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The waiting answers, in no particular order.
#[derive(Default)]
pub(super) struct Waiters(Vec<Waiter>);

/// A [`Synced`] waiting for the records up to `seq` (if any) and registry version `version`.
struct Waiter {
    seq: Option<u64>,
    version: u64,
    done: Synced,
}

/// True if the records up to `seq` (if any) and `version` are on disk, when the disk holds
/// every record up to `durable_seq` and every version up to `durable_version`.
pub(super) fn covered(
    seq: Option<u64>,
    version: u64,
    (durable_seq, durable_version): (u64, u64),
) -> bool {
    seq.is_none_or(|seq| durable_seq >= seq) && durable_version >= version
}

impl Waiters {
    pub(super) fn push(&mut self, seq: Option<u64>, version: u64, done: Synced) {
        self.0.push(Waiter { seq, version, done });
    }

    /// Takes the waiters the disk now covers (see [`covered`]); call them with [`tell`] once
    /// the log's lock is released.
    pub(super) fn synced(&mut self, durable: (u64, u64)) -> Vec<Synced> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|w| covered(w.seq, w.version, durable));
        self.0 = waiting;
        ready.into_iter().map(|w| w.done).collect()
    }

    /// Tells every waiter that the log failed (`why`): a write is refused; a version alone is
    /// settled, as [`Log::wait_version`](super::Log::wait_version) is (reads go on).
    pub(super) fn fail(self, why: &Arc<str>) {
        for waiter in self.0 {
            (waiter.done)(match waiter.seq {
                Some(_) => Err(StoreError::Unavailable(Arc::clone(why))),
                None => Ok(()),
            });
        }
    }

    /// Tells every waiter that the log stopped before its records were written.
    pub(super) fn stopped(self) {
        let why: Arc<str> = Arc::from("the data directory was closed");
        for waiter in self.0 {
            (waiter.done)(Err(StoreError::Unavailable(Arc::clone(&why))));
        }
    }
}

/// Calls the waiters [`Waiters::synced`] took.
pub(super) fn tell(synced: Vec<Synced>) {
    for done in synced {
        done(Ok(()));
    }
}
