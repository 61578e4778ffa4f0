//! Whether the copy is current: the freshness probe, and the stale mark reads and writes obey.
//!
//! A watch over etcd's JSON gateway is silent while nothing changes, and so is a watch whose
//! packets are dropped (no FIN): silence alone tells nothing. etcd's own progress notifications
//! come every 10 minutes by default (a server flag the gateway cannot set), and no second
//! request can be sent on an open watch stream. So a thread probes etcd every [`PROBE_EVERY`]
//! with a cheap linearizable read (a count of the keys under the prefix, with a deadline of
//! [`super::wire::PROBE_TIMEOUT`]) and compares etcd's revision with the copy's:
//! - the copy is at or past it (after waiting up to [`CATCH_UP`] for the watch to show it):
//!   current;
//! - etcd is ahead: either the watch missed changes under the prefix, or something else in etcd
//!   was written. A read of the keys changed since the copy's revision (keys only), and the
//!   count, tells which; only a change under the prefix is "behind";
//! - the probe fails (no member answers, no quorum): unknown.
//!
//! A copy not shown current for [`STALE_AFTER`] is stale: reads and writes answer 503, naming
//! why and since when, and the watch is started afresh from the copy's revision (at most every
//! [`RESTART_EVERY`]). The mark goes as soon as the watch shows the revision the probe last saw
//! ahead of the copy (before the long-polls its changes wake read), or at the first probe that
//! finds the copy current again. An idle gateway over an idle etcd costs one small read a
//! second; nothing is stale because nothing changed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::lock;
use crate::server::registry::unix_now;

use super::Shared;

/// How often the probe reads etcd's revision.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long the copy may go without being shown current before it is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

/// How long the probe waits for the watch to show a revision etcd answered, before it looks
/// closer: a watch event follows its write by milliseconds.
const CATCH_UP: Duration = Duration::from_millis(500);

/// The watch is started afresh at most this often while the copy is stale.
const RESTART_EVERY: Duration = Duration::from_secs(5);

/// What one probe found.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The copy shows everything etcd has under the prefix.
    Current,
    /// etcd has changes under the prefix the watch has not shown.
    Behind { etcd: i64, copy: i64 },
}

impl Shared {
    /// Starts the probe thread (not joined: it sees `stopping` within a probe).
    pub(super) fn start_probe(self: &Arc<Self>) {
        let shared = Arc::clone(self);
        thread::Builder::new()
            .name("gateway-etcd-fresh".to_owned())
            .spawn(move || shared.probe_loop())
            .expect("spawn the etcd freshness thread");
    }

    fn probe_loop(self: Arc<Self>) {
        let mut shown_current = Instant::now();
        // The revision up to which a closer look found nothing the copy lacks.
        let mut verified = 0;
        let mut restarted: Option<Instant> = None;
        while !self.stopping.load(Ordering::Relaxed) {
            let started = Instant::now();
            if !lock(&self.copy).loaded {
                // Not read yet: the store refuses reads and writes for that reason already.
                shown_current = started;
            } else {
                match self.check(&mut verified) {
                    Ok(Found::Current) => {
                        shown_current = started;
                        self.clear_stale();
                    }
                    Ok(Found::Behind { etcd, copy }) if started - shown_current >= STALE_AFTER => {
                        self.mark_stale(Some(etcd), format!(
                            "etcd is at revision {etcd} and the watch has shown revision {copy} \
                             for over {} s",
                            STALE_AFTER.as_secs()
                        ));
                    }
                    Err(e) if started - shown_current >= STALE_AFTER => {
                        self.mark_stale(
                            None,
                            format!("etcd does not answer the freshness probe: {e}"),
                        );
                    }
                    Ok(Found::Behind { .. }) | Err(_) => {}
                }
                let stale = lock(&self.stale).is_some();
                if stale && restarted.is_none_or(|at| at.elapsed() >= RESTART_EVERY) {
                    restarted = Some(Instant::now());
                    self.start_watch();
                }
            }
            thread::sleep(PROBE_EVERY.saturating_sub(started.elapsed()));
        }
    }

    /// One probe: see the module docs.
    fn check(&self, verified: &mut i64) -> Result<Found, String> {
        let (_, at) = self.etcd.count_prefix(&self.keys.prefix)?;
        let deadline = Instant::now() + CATCH_UP;
        let mut copy = lock(&self.copy);
        while copy.revision.max(*verified) < at {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            copy = self
                .applied
                .wait_timeout(copy, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if copy.revision.max(*verified) >= at {
            return Ok(Found::Current);
        }
        let (before, held) = (copy.revision, copy.held);
        drop(copy);
        // etcd moved past the copy: changes under the prefix, or writes elsewhere in etcd.
        let (changed, count, at) = self.etcd.changed_since(&self.keys.prefix, before + 1)?;
        let copy = lock(&self.copy);
        if copy.revision >= at {
            return Ok(Found::Current);
        }
        let missed = changed.iter().any(|kv| kv.mod_revision > copy.revision);
        // Deletions leave no key behind to find: the count says whether there were some.
        let deleted = copy.revision == before && count != held;
        if missed || deleted {
            return Ok(Found::Behind {
                etcd: at,
                copy: copy.revision,
            });
        }
        // Nothing under the prefix changed up to `at`: the copy is current as of `at`.
        *verified = at;
        Ok(Found::Current)
    }

    /// Marks the copy stale; the watch clears the mark once the copy reaches `until`, if given.
    fn mark_stale(&self, until: Option<i64>, why: String) {
        let mut stale = lock(&self.stale);
        self.caught_up_at
            .store(until.unwrap_or(i64::MAX), Ordering::Release);
        if stale.is_none() {
            log::warn!(
                "this gateway's copy of the registry is stale, reads and writes are refused: {why}"
            );
            *stale = Some((why, unix_now()));
        }
    }

    pub(super) fn clear_stale(&self) {
        let mut stale = lock(&self.stale);
        self.caught_up_at.store(i64::MAX, Ordering::Release);
        if stale.take().is_some() {
            log::warn!("the copy of the registry is current again; reads and writes are served");
        }
    }
}
