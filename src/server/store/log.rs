//! The durable registry: an append-only log plus a snapshot, in a data directory.
//!
//! ```text
//! DATA_DIR/lock            held (flock) by the one gateway using the directory
//! DATA_DIR/snapshot.jsonl  the registry as of some log sequence number (replaced atomically)
//! DATA_DIR/log.jsonl       every change after it, appended
//! ```
//!
//! Both files are JSON lines an operator can read with `jq .rec`. Each line frames one record
//! with its length and a CRC-32 of its bytes:
//!
//! ```text
//! {"len":93,"crc":2238339815,"rec":{"seq":8,"v":5,"op":"leader","leader_id":1}}
//! ```
//!
//! Records: `put` (a node's whole record), `remove`, `leader`, `status` (suspected or active),
//! `bootstrap` (the bootstrap flags) and, first in a snapshot, `snapshot` (leader, flags and how
//! many `put` lines follow). `seq` numbers every record and never repeats; `v` is the registry
//! version after the change.
//!
//! Writing: changes are queued under the registry lock (so the log's order is the registry's)
//! and a single writer thread appends whatever has queued, then `fdatasync`s: registrations that
//! arrive together share one sync (group commit). An operation is answered only after its
//! records are synced. When the log outgrows the snapshot, the writer compacts: it writes a new
//! snapshot to a temporary file, syncs it, renames it over the old one, syncs the directory, and
//! empties the log. A crash at any point leaves a directory that recovers: records already in
//! the snapshot are skipped by their `seq`.
//!
//! Reading at start: only what a write cut short by a crash leaves (an unfinished last line
//! that starts like a record, or zero bytes after it, within one write's size) counts as torn:
//! it is moved aside to `log.jsonl.torn-OFFSET`, never destroyed, and the start says where. Any
//! other damage (a complete line with a bad checksum, other line endings, another framing)
//! stops the start with the file, the byte offset, what was found and what to do.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde::Serialize;

use crate::api::{NodeId, NodeStatus};
use crate::lock;
use crate::server::registry::{Event, NodeRecord, Registry, unix_now};

use super::{Durability, StoreError};

mod disk;
mod recover;
mod waiters;

pub use disk::{Disk, LogFile, RealDisk};
pub use recover::recover;
pub use waiters::Synced;
use waiters::{Waiters, covered, tell};

const LOCK_FILE: &str = "lock";
const SNAPSHOT_FILE: &str = "snapshot.jsonl";
const SNAPSHOT_TEMP: &str = "snapshot.jsonl.tmp";
const LOG_FILE: &str = "log.jsonl";

/// The log is compacted once it is larger than this and than the last snapshot.
pub const COMPACT_MIN_BYTES: u64 = 8 * 1024 * 1024;

/// While the log cannot be written (a full disk), how often the writer tries to write the
/// registry out again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What a [`Log`] calls after it rolled the registry back (with the new registry version), so
/// that readers and parked watchers see the change.
pub type RolledBack = Box<dyn Fn(u64) + Send + Sync>;

/// Why a data directory could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The directory or a file in it could not be created, read or written.
    Io {
        /// The path.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// Another process holds the directory's lock.
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// The directory holds something other than good records and a torn last write.
    Damaged {
        /// The file.
        file: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io { path, error } => {
                write!(f, "data directory: {}: {error}", path.display())
            }
            OpenError::Locked { dir } => write!(
                f,
                "data directory {} is in use by another gateway-server (it holds {}); \
                 one process per data directory",
                dir.display(),
                dir.join(LOCK_FILE).display()
            ),
            OpenError::Damaged {
                file,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "{} is damaged at byte {offset}: {reason}. Nothing was changed. ",
                    file.display()
                )?;
                if file.ends_with(LOG_FILE) {
                    write!(
                        f,
                        "To start from the last snapshot alone (losing the changes logged \
                         since), move the file aside: mv {0} {0}.damaged",
                        file.display()
                    )
                } else {
                    write!(
                        f,
                        "Restore the data directory from a backup, or move it aside to start \
                         with an empty registry: mv {0} {0}.damaged",
                        file.parent().unwrap_or(Path::new(".")).display()
                    )
                }
            }
        }
    }
}

impl std::error::Error for OpenError {}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |error| OpenError::Io {
        path: path.to_owned(),
        error,
    }
}

/// What [`recover()`](recover::recover) hands to [`Log::start`]: the lock, and where the log goes on.
#[derive(Debug)]
pub struct Resume {
    lock: File,
    next_seq: u64,
    version: u64,
    log_bytes: u64,
    snapshot_bytes: u64,
}

/// One change, as queued under the registry lock and written by the writer thread.
#[derive(Debug, Clone)]
enum Change {
    Put(NodeRecord),
    Remove(NodeId, &'static str),
    Leader(Option<NodeId>),
    Status(NodeId, NodeStatus),
    Bootstrap { initiated: bool, armed: bool },
}

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    version: u64,
    change: Change,
}

/// A record as written.
#[derive(Serialize)]
struct RecordOut<'a> {
    seq: u64,
    v: u64,
    #[serde(flatten)]
    op: OpOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum OpOut<'a> {
    Put {
        node: &'a NodeRecord,
    },
    Remove {
        node_id: NodeId,
        reason: &'static str,
    },
    Leader {
        leader_id: Option<NodeId>,
    },
    Status {
        node_id: NodeId,
        status: NodeStatus,
    },
    Bootstrap {
        initiated: bool,
        armed: bool,
    },
    Snapshot {
        leader_id: Option<NodeId>,
        bootstrap_initiated: bool,
        bootstrap_armed: bool,
        nodes: usize,
        written: f64,
    },
}

/// Frames one record: `{"len":N,"crc":C,"rec":RECORD}` and a newline.
fn frame(out: &mut Vec<u8>, record: &RecordOut<'_>) {
    let body = serde_json::to_vec(record).expect("a log record serialises");
    let crc = crc32fast::hash(&body);
    write!(out, r#"{{"len":{},"crc":{crc},"rec":"#, body.len()).expect("writing to a Vec");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"}\n");
}

/// A ticket for records queued by one operation: wait for it to be durable.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// The writing side of a data directory: the queue, the writer thread and its figures.
pub struct Log {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

struct Shared {
    dir: PathBuf,
    compact_at: u64,
    disk: Arc<dyn Disk>,
    /// Called after a rollback, once the store sets it.
    rolled_back: OnceLock<RolledBack>,
    state: Mutex<State>,
    /// The writer waits here for records (or the stop).
    work: Condvar,
    /// Operations wait here for their records to be synced.
    synced: Condvar,
    /// The highest registry version on disk (read without the lock on the hot path).
    durable_version: AtomicU64,
    failed_flag: AtomicBool,
    /// Held by a test to keep the writer from writing.
    #[cfg(test)]
    pub(super) gate: Mutex<()>,
}

struct State {
    queue: Vec<Entry>,
    /// The writer waits for a record: an append wakes it only then (a syscall saved per
    /// record while it syncs).
    writer_waits: bool,
    /// Answers waiting for their records (see [`Log::when_synced`]).
    waiters: Waiters,
    next_seq: u64,
    durable_seq: u64,
    failed: Option<Arc<str>>,
    stopping: bool,
    figures: Durability,
    /// Held for as long as the log is open.
    _lock: File,
}

impl Log {
    /// Starts the writer for a directory [`recover`] opened, compacting once the log passes
    /// `compact_at` bytes and the snapshot's size. `registry` is read for compaction.
    pub fn start(
        dir: &Path,
        resume: Resume,
        registry: Arc<Mutex<Registry>>,
        compact_at: u64,
        disk: Arc<dyn Disk>,
    ) -> Result<Log, OpenError> {
        let log_path = dir.join(LOG_FILE);
        let file = disk.open_append(&log_path).map_err(io_error(&log_path))?;
        disk.sync_dir(dir).map_err(io_error(dir))?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            compact_at,
            disk,
            rolled_back: OnceLock::new(),
            state: Mutex::new(State {
                queue: Vec::new(),
                writer_waits: false,
                waiters: Waiters::default(),
                next_seq: resume.next_seq,
                durable_seq: resume.next_seq - 1,
                failed: None,
                stopping: false,
                figures: Durability {
                    data_dir: Some(dir.to_owned()),
                    log_bytes: resume.log_bytes,
                    snapshot_bytes: resume.snapshot_bytes,
                    last_compaction: None,
                    failed: None,
                    syncs: 0,
                },
                _lock: resume.lock,
            }),
            work: Condvar::new(),
            synced: Condvar::new(),
            durable_version: AtomicU64::new(resume.version),
            failed_flag: AtomicBool::new(false),
            #[cfg(test)]
            gate: Mutex::new(()),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("gateway-log-writer".to_owned())
                .spawn(move || write_loop(&shared, file, &registry))
                .map_err(io_error(dir))?
        };
        Ok(Log {
            shared,
            writer: Some(writer),
        })
    }

    /// Refuses when the log cannot be written any more.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        if !self.shared.failed_flag.load(Ordering::Acquire) {
            return Ok(());
        }
        let state = lock(&self.shared.state);
        match &state.failed {
            Some(why) => Err(StoreError::Unavailable(Arc::clone(why))),
            None => Ok(()),
        }
    }

    /// Queues what `events` changed in `registry` (called under the registry lock, just after
    /// the change). `None` if there is nothing to write.
    pub fn append(
        &self,
        registry: &Registry,
        events: &[Event],
        bootstrap_changed: bool,
    ) -> Option<Ticket> {
        let mut changes: Vec<Change> = events
            .iter()
            .filter_map(|event| match event {
                Event::Joined { node_id, .. } | Event::Updated { node_id, .. } => {
                    registry.get(*node_id).cloned().map(Change::Put)
                }
                Event::Left { node_id } => Some(Change::Remove(*node_id, "left")),
                Event::Reaped { node_id } => Some(Change::Remove(*node_id, "reaped")),
                Event::Suspected { node_id } => {
                    Some(Change::Status(*node_id, NodeStatus::Suspected))
                }
                Event::Recovered { node_id } => Some(Change::Status(*node_id, NodeStatus::Active)),
                Event::LeaderChanged { to, .. } => Some(Change::Leader(*to)),
            })
            .collect();
        if bootstrap_changed {
            changes.push(Change::Bootstrap {
                initiated: registry.bootstrap_initiated(),
                armed: registry.bootstrap_armed(),
            });
        }
        if changes.is_empty() {
            return None;
        }
        let version = registry.version();
        let mut state = lock(&self.shared.state);
        if state.failed.is_some() {
            return Some(Ticket(u64::MAX));
        }
        for change in changes {
            let seq = state.next_seq;
            state.next_seq += 1;
            state.queue.push(Entry {
                seq,
                version,
                change,
            });
        }
        let ticket = Ticket(state.next_seq - 1);
        let wake = state.writer_waits;
        drop(state);
        if wake {
            self.shared.work.notify_one();
        }
        Some(ticket)
    }

    /// Waits until the records of `ticket` are synced.
    pub fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        let mut state = lock(&self.shared.state);
        loop {
            if state.durable_seq >= ticket.0 {
                return Ok(());
            }
            if let Some(why) = &state.failed {
                return Err(StoreError::Unavailable(Arc::clone(why)));
            }
            state = self
                .shared
                .synced
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits until registry version `version` is synced (or the log has failed).
    pub fn wait_version(&self, version: u64) {
        let shared = &self.shared;
        if shared.durable_version.load(Ordering::Acquire) >= version {
            return;
        }
        let mut state = lock(&shared.state);
        while shared.durable_version.load(Ordering::Acquire) < version && state.failed.is_none() {
            state = shared.synced.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Calls `done` once the records of `ticket` (if any) and registry version `version` are
    /// on disk, without waiting for it: from the writer's thread after the sync that covers
    /// them, or at once if they are. `Err` when the log fails first (only if there is a
    /// ticket: a version alone is settled by a failure, as [`Log::wait_version`] is) or stops.
    pub fn when_synced(&self, ticket: Option<Ticket>, version: u64, done: Synced) {
        let shared = &self.shared;
        let mut state = lock(&shared.state);
        let seq = ticket.map(|t| t.0);
        let result = if is_synced(shared, &state, seq, version) {
            Ok(())
        } else if let Some(why) = &state.failed {
            match seq {
                Some(_) => Err(StoreError::Unavailable(Arc::clone(why))),
                None => Ok(()),
            }
        } else {
            state.waiters.push(seq, version, done);
            return;
        };
        drop(state);
        done(result);
    }

    /// True if the records of `ticket` (if any) and version `version` are on disk.
    pub fn is_synced(&self, ticket: Option<Ticket>, version: u64) -> bool {
        let state = lock(&self.shared.state);
        is_synced(&self.shared, &state, ticket.map(|t| t.0), version)
    }

    /// Keeps the writer from writing while the guard lives.
    #[cfg(test)]
    pub(super) fn hold_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.shared.gate)
    }

    /// Calls `rolled_back` with the new registry version after every rollback (once: a second
    /// call is ignored).
    pub fn on_rolled_back(&self, rolled_back: RolledBack) {
        let _ = self.shared.rolled_back.set(rolled_back);
    }

    /// Figures for `/stats`.
    pub fn durability(&self) -> Durability {
        let state = lock(&self.shared.state);
        Durability {
            failed: state.failed.as_deref().map(str::to_owned),
            ..state.figures.clone()
        }
    }
}

impl Drop for Log {
    /// Writes what is queued, then stops the writer. An answer still waiting (its write
    /// failed and was not retried) is told the log stopped.
    fn drop(&mut self) {
        lock(&self.shared.state).stopping = true;
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        std::mem::take(&mut lock(&self.shared.state).waiters).stopped();
    }
}

fn is_synced(shared: &Shared, state: &State, seq: Option<u64>, version: u64) -> bool {
    covered(seq, version, durable(shared, state))
}

/// What the disk holds: every record up to this seq, every version up to this one.
fn durable(shared: &Shared, state: &State) -> (u64, u64) {
    (
        state.durable_seq,
        shared.durable_version.load(Ordering::Acquire),
    )
}

fn write_loop(shared: &Shared, file: Box<dyn LogFile>, registry: &Mutex<Registry>) {
    let mut file = Some(file);
    let mut buffer = Vec::new();
    loop {
        let Some(open) = file.as_mut() else {
            // A write failed: nothing is taken until the registry is on disk again.
            {
                let state = lock(&shared.state);
                let (state, _) = shared
                    .work
                    .wait_timeout(state, RETRY_EVERY)
                    .unwrap_or_else(|e| e.into_inner());
                if state.stopping {
                    return;
                }
            }
            file = write_out_again(shared, registry);
            continue;
        };
        let batch = {
            let mut state = lock(&shared.state);
            while state.queue.is_empty() && !state.stopping {
                state.writer_waits = true;
                state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
                state.writer_waits = false;
            }
            if state.queue.is_empty() {
                return;
            }
            // Group commit: what was queued while the last sync ran goes in this one. The
            // writer never waits for more: a wait for the writes the last sync answered
            // (tried up to 1 ms) left the disk idle while they were on their way, and cost a
            // third of the registrations a second at 16 connections.
            std::mem::take(&mut state.queue)
        };
        #[cfg(test)]
        let _gate = lock(&shared.gate);
        buffer.clear();
        for entry in &batch {
            frame(&mut buffer, &record_out(entry));
        }
        let written = open.write_all(&buffer).and_then(|()| open.sync_data());
        let last = batch.last().expect("a batch is never empty");
        let mut synced = Vec::new();
        let compact = match written {
            Ok(()) => {
                let mut state = lock(&shared.state);
                state.durable_seq = last.seq;
                state.figures.log_bytes += buffer.len() as u64;
                state.figures.syncs += 1;
                shared
                    .durable_version
                    .fetch_max(last.version, Ordering::AcqRel);
                let durable = durable(shared, &state);
                synced = state.waiters.synced(durable);
                state.figures.log_bytes >= shared.compact_at
                    && state.figures.log_bytes >= state.figures.snapshot_bytes
            }
            Err(e) => {
                // The descriptor is given up: after a failed sync it cannot be trusted.
                file = None;
                fail(shared, registry, &e);
                false
            }
        };
        shared.synced.notify_all();
        // The answers this sync covers go out now, off this thread (see `Log::when_synced`).
        tell(synced);
        if compact
            && let Some(open) = file.as_mut()
            && let Err(e) = compact_now(shared, open.as_mut(), registry)
        {
            log::warn!(
                "compaction of {} failed, the log goes on growing: {e}",
                shared.dir.display()
            );
        }
        // Keep a burst's buffer from pinning memory while idle.
        if buffer.capacity() > 1 << 20 {
            buffer = Vec::new();
        }
    }
}

/// A write or sync of the log failed: refuse writes, fail every operation waiting or queued,
/// and roll the registry back to what the disk holds, so nothing that was not written is shown.
fn fail(shared: &Shared, registry: &Mutex<Registry>, error: &io::Error) {
    let log_path = shared.dir.join(LOG_FILE);
    // What the disk holds, read before any lock is taken: only this thread writes the log, so
    // its synced bytes stay as they are while it is here. Reading a large snapshot under the
    // registry lock would stall every read and heartbeat for as long.
    let good = lock(&shared.state).figures.log_bytes;
    let written = recover::read_written(&shared.dir, good);
    // Then the registry lock (the order `append` takes them in), held until the rollback is
    // done: an operation told of the failure, and any reader, sees the registry rolled back.
    // Writes made until the flag is set are not on disk either, and are undone with the rest.
    let mut registry = lock(registry);
    let waiting = {
        let mut state = lock(&shared.state);
        let why = format!(
            "cannot write {} since {}: {error}",
            log_path.display(),
            crate::logger::iso8601(unix_now())
        );
        log::error!("{why}; writes are refused until it can be written again");
        let why: Arc<str> = why.into();
        state.failed = Some(Arc::clone(&why));
        state.queue.clear();
        shared.failed_flag.store(true, Ordering::Release);
        (why, std::mem::take(&mut state.waiters))
    };
    // From here on every write is refused under the registry lock before it changes anything;
    // what changed the registry before that and is not on disk is undone here.
    match written {
        Ok(written) => registry.roll_back(written, crate::server::registry::Now::system()),
        Err(e) => log::error!(
            "cannot read {} back to undo what was not written ({e}); the registry keeps it",
            shared.dir.display()
        ),
    }
    let version = registry.version();
    drop(registry);
    shared.synced.notify_all();
    // Told after the rollback, as `wait` is: a write is refused, a version alone is settled.
    let (why, waiting) = waiting;
    waiting.fail(&why);
    if let Some(rolled_back) = shared.rolled_back.get() {
        rolled_back(version);
    }
}

/// After a failure: writes the registry out afresh (a snapshot, and an empty log through a new
/// descriptor), and takes writes again if that worked.
fn write_out_again(shared: &Shared, registry: &Mutex<Registry>) -> Option<Box<dyn LogFile>> {
    let log_path = shared.dir.join(LOG_FILE);
    // A cheap try first: while the disk stays full, a block-sized write fails at once, and
    // the registry is not copied under its lock every second for nothing.
    let probe = shared
        .disk
        .write_synced(&shared.dir.join(SNAPSHOT_TEMP), &[0; 4096]);
    let result = probe.and_then(|()| {
        shared
            .disk
            .open_append(&log_path)
            .and_then(|mut file| compact_now(shared, file.as_mut(), registry).map(|()| file))
    });
    match result {
        Ok(file) => {
            let mut state = lock(&shared.state);
            state.failed = None;
            shared.failed_flag.store(false, Ordering::Release);
            state.durable_seq = state.next_seq - 1;
            drop(state);
            log::info!(
                "{} can be written again: writes are taken again",
                log_path.display()
            );
            Some(file)
        }
        Err(e) => {
            log::debug!("{} still cannot be written: {e}", log_path.display());
            None
        }
    }
}

fn record_out(entry: &Entry) -> RecordOut<'_> {
    let op = match &entry.change {
        Change::Put(record) => OpOut::Put { node: record },
        Change::Remove(node_id, reason) => OpOut::Remove {
            node_id: *node_id,
            reason,
        },
        Change::Leader(leader_id) => OpOut::Leader {
            leader_id: *leader_id,
        },
        Change::Status(node_id, status) => OpOut::Status {
            node_id: *node_id,
            status: *status,
        },
        Change::Bootstrap { initiated, armed } => OpOut::Bootstrap {
            initiated: *initiated,
            armed: *armed,
        },
    };
    RecordOut {
        seq: entry.seq,
        v: entry.version,
        op,
    }
}

/// Writes a snapshot of the registry and empties the log. The records still queued that the
/// snapshot already holds are dropped and count as synced.
fn compact_now(
    shared: &Shared,
    log: &mut dyn LogFile,
    registry: &Mutex<Registry>,
) -> io::Result<()> {
    // Registry lock, then state lock: the order `append` takes them in.
    let (records, leader, version, initiated, armed, seq) = {
        let registry = lock(registry);
        let state = lock(&shared.state);
        let mut records: Vec<NodeRecord> = registry.nodes().cloned().collect();
        records.sort_unstable_by_key(|r| r.node_id);
        (
            records,
            registry.leader_id(),
            registry.version(),
            registry.bootstrap_initiated(),
            registry.bootstrap_armed(),
            state.next_seq - 1,
        )
    };
    let mut bytes = Vec::with_capacity(records.len() * 256);
    frame(
        &mut bytes,
        &RecordOut {
            seq,
            v: version,
            op: OpOut::Snapshot {
                leader_id: leader,
                bootstrap_initiated: initiated,
                bootstrap_armed: armed,
                nodes: records.len(),
                written: unix_now(),
            },
        },
    );
    for record in &records {
        frame(
            &mut bytes,
            &RecordOut {
                seq,
                v: version,
                op: OpOut::Put { node: record },
            },
        );
    }
    let temp = shared.dir.join(SNAPSHOT_TEMP);
    shared.disk.write_synced(&temp, &bytes)?;
    shared.disk.rename(&temp, &shared.dir.join(SNAPSHOT_FILE))?;
    shared.disk.sync_dir(&shared.dir)?;
    // The snapshot holds every record up to `seq`: the log can go.
    log.truncate(0)?;
    let synced = {
        let mut state = lock(&shared.state);
        state.queue.retain(|entry| entry.seq > seq);
        state.durable_seq = state.durable_seq.max(seq);
        state.figures.log_bytes = 0;
        state.figures.snapshot_bytes = bytes.len() as u64;
        state.figures.last_compaction = Some(unix_now());
        shared.durable_version.fetch_max(version, Ordering::AcqRel);
        let durable = durable(shared, &state);
        state.waiters.synced(durable)
    };
    shared.synced.notify_all();
    tell(synced);
    log::info!(
        "compacted {}: snapshot of {} nodes at registry version {version}",
        shared.dir.display(),
        records.len()
    );
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
