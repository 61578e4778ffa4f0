//! What feeds the copy: the watch thread (started afresh when the copy is stale), fresh reads
//! of the whole registry, the probe that reads until a cut-off etcd answers again, and the
//! change hook called when the registry version moves.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::lock;
use crate::server::registry::{Now, unix_now};

use super::wire::{self, WatchLine};
use super::{APPLY_WAIT, HookBox, Shared, StoreError};

impl Shared {
    /// Calls the change hook if the registry version moved from `before` to `after`.
    pub(super) fn changed(&self, before: u64, after: u64) {
        if before != after
            && let Some(HookBox(hook)) = self.hook.get()
        {
            hook(after);
        }
    }

    /// Starts a watch thread from the copy's revision; an older one ends when it next wakes
    /// (not joined: it may be blocked reading a silent stream for up to `WATCH_IDLE`).
    pub(super) fn start_watch(self: &Arc<Self>) {
        let generation = self.watch_generation.fetch_add(1, Ordering::AcqRel) + 1;
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("gateway-etcd-watch".to_owned())
            .spawn(move || shared.watch(generation));
        if let Err(e) = spawned {
            log::warn!("cannot start an etcd watch thread: {e}");
        }
    }

    pub(super) fn unavailable(self: &Arc<Self>, why: String) -> StoreError {
        let mut cut_off = lock(&self.cut_off);
        if cut_off.is_none() {
            log::warn!("etcd cannot be used, writes are refused: {why}");
            *cut_off = Some((why.clone(), unix_now()));
        }
        drop(cut_off);
        self.probe();
        StoreError::Unavailable(Arc::from(format!("etcd: {why}").as_str()))
    }

    pub(super) fn answered(&self) {
        let mut cut_off = lock(&self.cut_off);
        if cut_off.take().is_some() {
            log::warn!("etcd answers again; writes are accepted");
        }
    }

    /// Starts a thread that reads the registry afresh until etcd answers (then the copy is
    /// current and the gateway takes writes again), unless one runs already.
    fn probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("gateway-etcd-probe".to_owned())
            .spawn(move || {
                while !shared.stopping.load(Ordering::Relaxed) {
                    if shared.reload().is_ok() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(250));
                }
                shared.probing.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.probing.store(false, Ordering::Release);
        }
    }

    /// Reads the whole registry and replaces the copy with it.
    fn reload(self: &Arc<Self>) -> Result<i64, String> {
        let (kvs, revision) = self.etcd.range_prefix(&self.keys.prefix)?;
        let mut copy = lock(&self.copy);
        let before = copy.version();
        copy.reload(&kvs, revision, Now::system());
        let after = copy.version();
        drop(copy);
        self.applied.notify_all();
        self.changed(before, after);
        self.answered();
        Ok(revision)
    }

    /// The watch thread: reads the registry, then follows its changes from the next revision;
    /// reads it afresh when the history it needs was compacted.
    fn watch(self: Arc<Self>, generation: u64) {
        let current = || {
            !self.stopping.load(Ordering::Relaxed)
                && self.watch_generation.load(Ordering::Acquire) == generation
        };
        // The first watch reads the registry first; a restarted one carries on from the copy.
        let mut fresh = !lock(&self.copy).loaded;
        while current() {
            if fresh {
                if let Err(e) = self.reload() {
                    log::debug!("reading the registry from etcd: {e}");
                    let _ = self.unavailable(e);
                    thread::sleep(Duration::from_millis(250));
                    continue;
                }
                fresh = false;
            }
            let from = lock(&self.copy).revision + 1;
            let mut stream = match self.etcd.watch(&self.keys.prefix, from) {
                Ok(stream) => stream,
                Err(e) => {
                    log::debug!("watching etcd: {e}");
                    thread::sleep(Duration::from_millis(250));
                    continue;
                }
            };
            while current() {
                match wire::next_line(&mut stream) {
                    Ok(_) if !current() => return,
                    Ok(WatchLine::Events(changes, revision)) => {
                        let mut copy = lock(&self.copy);
                        let before = copy.version();
                        copy.apply(&changes, revision, Now::system());
                        let (after, reached) = (copy.version(), copy.revision);
                        drop(copy);
                        if reached >= self.caught_up_at.load(Ordering::Acquire) {
                            // Caught up with what the probe saw: served again before the
                            // long-polls this wakes read.
                            self.clear_stale();
                        }
                        self.applied.notify_all();
                        self.changed(before, after);
                    }
                    Ok(WatchLine::Progress(_)) => {}
                    Ok(WatchLine::Compacted(at)) => {
                        log::info!("etcd compacted the history to revision {at}; reading afresh");
                        fresh = true;
                        break;
                    }
                    Ok(WatchLine::Ended(why)) | Err(why) => {
                        log::debug!("etcd watch: {why}");
                        break;
                    }
                }
            }
        }
    }

    /// Waits until the copy shows `revision`; reads afresh if the watch is late.
    pub(super) fn wait_applied(self: &Arc<Self>, revision: i64) {
        let deadline = Instant::now() + APPLY_WAIT;
        let mut copy = lock(&self.copy);
        while copy.revision < revision {
            let now = Instant::now();
            if now >= deadline {
                drop(copy);
                if let Err(e) = self.reload() {
                    log::warn!("the watch is behind and etcd cannot be read: {e}");
                }
                return;
            }
            copy = self
                .applied
                .wait_timeout(copy, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
