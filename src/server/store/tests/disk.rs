//! The data directory through a disk that tests control: every write and sync is seen, and a
//! full disk, a short write or a failed sync can be made to happen.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::server::store::log::{Disk, LogFile, RealDisk};

/// What happened to the log files, in order: `(file, op)`, the file numbered by its opening.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Write(usize),
    Sync(usize),
    SyncFailed(usize),
}

/// The real file system, with faults a test switches on and a record of the log's writes.
#[derive(Default)]
struct FaultyDisk {
    /// Writes fail with ENOSPC after writing half their bytes (a short write), and so does
    /// everything else that writes.
    full: AtomicBool,
    /// The next sync of the log fails with EIO.
    fail_next_sync: AtomicBool,
    /// While true, a sync of the log waits until it is false again.
    hold_syncs: Mutex<bool>,
    released: Condvar,
    /// True while a sync waits on `hold_syncs`.
    sync_waiting: AtomicBool,
    opened: AtomicUsize,
    ops: Mutex<Vec<Op>>,
}

impl FaultyDisk {
    fn full(&self) -> io::Result<()> {
        match self.full.load(Ordering::SeqCst) {
            true => Err(io::Error::from(io::ErrorKind::StorageFull)),
            false => Ok(()),
        }
    }

    fn ops(&self) -> Vec<Op> {
        crate::lock(&self.ops).clone()
    }

    fn hold(&self, held: bool) {
        *crate::lock(&self.hold_syncs) = held;
        self.released.notify_all();
    }
}

struct FaultyFile {
    disk: Arc<FaultyDisk>,
    id: usize,
    real: Box<dyn LogFile>,
}

impl Disk for Arc<FaultyDisk> {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let real = RealDisk.open_append(path)?;
        let id = self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(FaultyFile {
            disk: Arc::clone(self),
            id,
            real,
        }))
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.full()?;
        RealDisk.write_synced(path, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealDisk.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir)
    }
}

impl LogFile for FaultyFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        crate::lock(&self.disk.ops).push(Op::Write(self.id));
        if self.disk.full.load(Ordering::SeqCst) {
            // What a full disk does: part of the batch lands, then ENOSPC.
            self.real.write_all(&bytes[..bytes.len() / 2])?;
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        self.real.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        {
            let mut held = crate::lock(&self.disk.hold_syncs);
            while *held {
                self.disk.sync_waiting.store(true, Ordering::SeqCst);
                held = self.disk.released.wait(held).unwrap();
            }
            self.disk.sync_waiting.store(false, Ordering::SeqCst);
        }
        if self.disk.fail_next_sync.swap(false, Ordering::SeqCst) {
            crate::lock(&self.disk.ops).push(Op::SyncFailed(self.id));
            return Err(io::Error::other("injected EIO"));
        }
        crate::lock(&self.disk.ops).push(Op::Sync(self.id));
        self.real.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.disk.full()?;
        self.real.truncate(len)
    }
}

fn open_faulty(dir: &Path, disk: &Arc<FaultyDisk>) -> LocalStore {
    let disk: Arc<dyn Disk> = Arc::new(Arc::clone(disk));
    LocalStore::open_on(dir, liveness(), 1000, now(), 1 << 30, disk).unwrap()
}

/// Polls `condition` for 10 s at most.
fn eventually(condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn no_write_is_answered_before_the_sync_that_covers_it() {
    let dir = TempDir::new();
    let disk = Arc::new(FaultyDisk::default());
    let store = open_faulty(&dir.0, &disk);
    disk.hold(true);
    std::thread::scope(|s| {
        let registering = s.spawn(|| store.register(reg(1), now()));
        assert!(
            eventually(|| disk.sync_waiting.load(Ordering::SeqCst)),
            "the writer never synced the registration"
        );
        let answered_early = registering.is_finished();
        // Released before anything is asserted: a failure then ends the test, where a held
        // sync would keep the store's writer, and so its drop, waiting for ever.
        disk.hold(false);
        assert!(
            !answered_early,
            "the registration was answered before its sync"
        );
        assert!(registering.join().unwrap().unwrap().is_bootstrap);
    });
    let ops = disk.ops();
    assert_eq!(ops.last(), Some(&Op::Sync(0)), "{ops:?}");
}

#[test]
fn a_full_disk_refuses_writes_shows_nothing_unwritten_and_recovers_once_space_is_freed() {
    let dir = TempDir::new();
    let disk = Arc::new(FaultyDisk::default());
    let store = open_faulty(&dir.0, &disk);
    store.register(reg(1), now()).unwrap();
    store.register(reg(2), now()).unwrap();
    assert!(store.set_leader(2).unwrap());
    let before = store.summary().version;

    disk.full.store(true, Ordering::SeqCst);
    match store.register(reg(3), now()) {
        Err(StoreError::Unavailable(why)) => {
            assert!(why.contains("log.jsonl"), "{why}");
            assert!(why.contains(" since 20"), "an ISO date: {why}");
        }
        other => panic!("a write that was not written was acknowledged: {other:?}"),
    }
    assert_eq!(
        ids(&store),
        vec![1, 2],
        "the unwritten registration is not shown"
    );
    assert_eq!(store.summary().leader, Some(2));
    let during = store.summary().version;
    assert!(
        during > before,
        "the rollback moves the version on: {before} -> {during}"
    );
    assert!(matches!(
        store.register(reg(4), now()),
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(store.remove(1), Err(StoreError::Unavailable(_))));
    assert_eq!(ids(&store), vec![1, 2], "refused writes change nothing");
    assert_eq!(store.summary().version, during);
    assert!(store.durability().failed.is_some());
    assert!(
        store.heartbeat(1, now()).unwrap().is_some(),
        "heartbeats go on"
    );

    disk.full.store(false, Ordering::SeqCst);
    let freed = Instant::now();
    assert!(
        eventually(|| store.durability().failed.is_none()),
        "writes are not taken again once space is free: {:?}",
        store.durability().failed
    );
    eprintln!(
        "writes taken again {:?} after space was freed",
        freed.elapsed()
    );
    store.register(reg(5), now()).unwrap();
    assert_eq!(ids(&store), vec![1, 2, 5]);
    let after = store.summary().version;
    assert!(after > during, "{during} -> {after}");
    drop(store);

    let store = open(&dir.0).unwrap();
    assert_eq!(
        ids(&store),
        vec![1, 2, 5],
        "what was acknowledged, and only that"
    );
    assert_eq!(store.summary().leader, Some(2));
    assert!(
        store.summary().version >= after,
        "the version went back across the restart: {after} -> {}",
        store.summary().version
    );
}

#[test]
fn after_a_failed_sync_the_file_is_reopened_never_synced_again() {
    let dir = TempDir::new();
    let disk = Arc::new(FaultyDisk::default());
    let store = open_faulty(&dir.0, &disk);
    store.register(reg(1), now()).unwrap();
    disk.fail_next_sync.store(true, Ordering::SeqCst);
    assert!(matches!(
        store.register(reg(2), now()),
        Err(StoreError::Unavailable(_))
    ));
    assert_eq!(ids(&store), vec![1]);
    assert!(eventually(|| store.durability().failed.is_none()));
    store.register(reg(3), now()).unwrap();
    let ops = disk.ops();
    let failed = ops
        .iter()
        .find_map(|op| match op {
            Op::SyncFailed(id) => Some(*id),
            _ => None,
        })
        .expect("the injected failure happened");
    let after: Vec<_> = ops
        .iter()
        .skip_while(|op| **op != Op::SyncFailed(failed))
        .skip(1)
        .collect();
    assert!(
        after
            .iter()
            .all(|op| !matches!(op, Op::Write(id) | Op::Sync(id) if *id == failed)),
        "the descriptor whose sync failed was used again: {ops:?}"
    );
    assert!(after.contains(&&Op::Sync(failed + 1)), "{ops:?}");
    drop(store);
    assert_eq!(ids(&open(&dir.0).unwrap()), vec![1, 3]);
}
