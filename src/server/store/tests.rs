//! The durable store: what survives a restart, what a crash may leave, and what is refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::log::OpenError;
use super::{LocalStore, Store, StoreError};
use crate::api::{NodeId, Registration};
use crate::server::journal::Change;
use crate::server::registry::{Event, Liveness, Now};

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "gateway-store-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn log(&self) -> PathBuf {
        self.0.join("log.jsonl")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn liveness() -> Liveness {
    Liveness {
        suspect_after: Duration::from_secs(90),
        node_timeout: Duration::from_secs(300),
    }
}

fn now() -> Now {
    Now::system()
}

fn open(dir: &Path) -> Result<LocalStore, OpenError> {
    LocalStore::open(dir, liveness(), 1000, now())
}

fn reg(node_id: NodeId) -> Registration {
    Registration {
        node_id,
        ip_address: format!("10.0.0.{node_id}"),
        port: 5000 + node_id as u16,
        capabilities: vec!["raft".into()],
        ..Registration::default()
    }
}

fn with_metadata(node_id: NodeId, metadata: Value) -> Registration {
    let metadata: Map<String, Value> = metadata.as_object().unwrap().clone();
    Registration {
        metadata: Some(metadata),
        ..reg(node_id)
    }
}

/// Waits (10 s at most) for the writer thread to have compacted at least once.
fn compacted(store: &LocalStore) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if store.durability().last_compaction.is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

fn ids(store: &LocalStore) -> Vec<NodeId> {
    let mut ids: Vec<_> = store.snapshot().records.iter().map(|r| r.node_id).collect();
    ids.sort_unstable();
    ids
}

/// Each node's `join_timestamp`, by node id.
fn join_timestamps(store: &LocalStore) -> Vec<(NodeId, f64)> {
    let mut joined: Vec<_> = store
        .snapshot()
        .records
        .iter()
        .map(|r| (r.node_id, r.join_timestamp))
        .collect();
    joined.sort_by_key(|&(id, _)| id);
    joined
}

fn metadata_of(store: &LocalStore, node_id: NodeId) -> Value {
    let record = store
        .snapshot()
        .records
        .into_iter()
        .find(|r| r.node_id == node_id)
        .unwrap_or_else(|| panic!("node {node_id} is there"));
    serde_json::from_str(record.info.metadata.get()).unwrap()
}

#[test]
fn nodes_leader_version_and_bootstrap_state_survive_a_restart() {
    let dir = TempDir::new();
    let (version, joined) = {
        let store = open(&dir.0).unwrap();
        assert!(store.register(reg(1), now()).unwrap().is_bootstrap);
        store
            .register(with_metadata(2, json!({"zone": "a"})), now())
            .unwrap();
        store.register(reg(3), now()).unwrap();
        assert!(store.set_leader(2).unwrap());
        assert!(store.remove(3).unwrap());
        let joined = join_timestamps(&store);
        (store.summary().version, joined)
    };
    let store = open(&dir.0).unwrap();
    let summary = store.summary();
    assert_eq!(ids(&store), vec![1, 2]);
    assert_eq!(summary.leader, Some(2));
    assert_eq!(
        summary.version, version,
        "the version neither resets nor jumps"
    );
    assert!(summary.bootstrap_initiated);
    assert!(!summary.bootstrap_armed);
    assert_eq!(metadata_of(&store, 2), json!({"zone": "a"}));
    let rejoined = join_timestamps(&store);
    assert_eq!(rejoined, joined, "join_timestamp is kept");
    assert!(!store.register(reg(4), now()).unwrap().is_bootstrap);
    assert!(store.summary().version > version);
}

#[test]
fn bootstrap_armed_by_removing_every_node_stays_armed_across_a_restart() {
    let dir = TempDir::new();
    {
        let store = open(&dir.0).unwrap();
        store.register(reg(1), now()).unwrap();
        store.remove(1).unwrap();
        assert!(store.summary().bootstrap_armed);
    }
    let store = open(&dir.0).unwrap();
    assert!(store.summary().bootstrap_armed);
    assert!(store.register(reg(2), now()).unwrap().is_bootstrap);
}

#[test]
fn a_rejoining_node_disarms_bootstrap_for_good() {
    let dir = TempDir::new();
    {
        let store = open(&dir.0).unwrap();
        let rejoin = Registration {
            previous_epoch: Some("18a-1".into()),
            ..reg(1)
        };
        assert!(!store.register(rejoin, now()).unwrap().is_bootstrap);
    }
    let store = open(&dir.0).unwrap();
    assert!(!store.summary().bootstrap_armed);
    assert!(!store.register(reg(2), now()).unwrap().is_bootstrap);
}

#[test]
fn restored_nodes_get_a_full_grace_period_and_are_reaped_if_they_never_return() {
    let dir = TempDir::new();
    {
        let store = open(&dir.0).unwrap();
        store.register(reg(1), now()).unwrap();
        store.register(reg(2), now()).unwrap();
    }
    let restart = Now {
        instant: Instant::now() + Duration::from_secs(3600),
        unix: 0.0,
    };
    let store = LocalStore::open(&dir.0, liveness(), 1000, restart).unwrap();
    let at = |secs: u64| Now {
        instant: restart.instant + Duration::from_secs(secs),
        unix: 0.0,
    };
    store.sweep(at(299));
    assert_eq!(
        ids(&store),
        vec![1, 2],
        "a full grace period from the restart"
    );
    assert_eq!(
        store.heartbeat(2, at(299)).unwrap(),
        Some(store.summary().version)
    );
    store.sweep(at(300));
    assert_eq!(ids(&store), vec![2], "node 1 never came back and is reaped");
    assert_eq!(store.summary().leader, None, "the reaped leader is cleared");
    drop(store);
    let store = open(&dir.0).unwrap();
    assert_eq!(ids(&store), vec![2], "the reap was recorded");
}

#[test]
fn a_heartbeat_that_changes_only_last_seen_writes_nothing() {
    let dir = TempDir::new();
    let store = open(&dir.0).unwrap();
    store.register(reg(1), now()).unwrap();
    let before = std::fs::metadata(dir.log()).unwrap().len();
    for _ in 0..100 {
        assert!(store.heartbeat(1, now()).unwrap().is_some());
    }
    assert_eq!(std::fs::metadata(dir.log()).unwrap().len(), before);
    store.register(reg(1), now()).unwrap();
    assert_eq!(
        std::fs::metadata(dir.log()).unwrap().len(),
        before,
        "nor does a registration that changes nothing"
    );
    store
        .register(with_metadata(1, json!({"k": 1})), now())
        .unwrap();
    assert!(std::fs::metadata(dir.log()).unwrap().len() > before);
}

#[test]
fn the_change_hook_hears_of_each_change_with_its_version_and_events_and_of_nothing_else() {
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = {
        let heard = std::sync::Arc::clone(&heard);
        LocalStore::memory(liveness(), 1000).on_change(Box::new(move |version, events| {
            heard.lock().unwrap().push((version, events.to_vec()));
        }))
    };
    store.register(reg(1), now()).unwrap();
    let joined = store.versions().0;
    // Nothing that /nodes or /leader show changes: the hook (which wakes long-polls) is not
    // called.
    assert!(store.heartbeat(1, now()).unwrap().is_some());
    store.register(reg(1), now()).unwrap();
    assert!(!store.remove(99).unwrap());
    assert!(!store.set_leader(99).unwrap());
    assert!(store.remove(1).unwrap());
    let left = store.versions().0;
    assert_eq!(
        *heard.lock().unwrap(),
        vec![
            (
                joined,
                vec![
                    Event::Joined {
                        node_id: 1,
                        address: "10.0.0.1:5001".into()
                    },
                    Event::LeaderChanged {
                        from: None,
                        to: Some(1)
                    },
                ]
            ),
            (
                left,
                vec![
                    Event::Left { node_id: 1 },
                    Event::LeaderChanged {
                        from: Some(1),
                        to: None
                    },
                ]
            ),
        ]
    );
}

#[test]
fn a_torn_last_record_is_dropped_and_the_log_goes_on() {
    let dir = TempDir::new();
    {
        let store = open(&dir.0).unwrap();
        store.register(reg(1), now()).unwrap();
        store.register(reg(2), now()).unwrap();
    }
    let good = std::fs::metadata(dir.log()).unwrap().len();
    // A crash in the middle of writing node 3's record.
    let torn = br#"{"len":206,"crc":2344384084,"rec":{"seq":9,"v":5,"op":"put","node":{"node_"#;
    let mut bytes = std::fs::read(dir.log()).unwrap();
    bytes.extend_from_slice(torn);
    std::fs::write(dir.log(), &bytes).unwrap();

    let store = open(&dir.0).unwrap();
    assert_eq!(ids(&store), vec![1, 2]);
    assert_eq!(
        std::fs::metadata(dir.log()).unwrap().len(),
        good,
        "the torn tail is cut off"
    );
    let aside = dir.0.join(format!("log.jsonl.torn-{good}"));
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        torn,
        "the torn tail is moved aside, not destroyed"
    );
    store.register(reg(3), now()).unwrap();
    drop(store);
    assert_eq!(ids(&open(&dir.0).unwrap()), vec![1, 2, 3]);
}

/// A log with three acknowledged registrations and a leader; its bytes.
fn three_nodes(dir: &TempDir) -> Vec<u8> {
    let store = open(&dir.0).unwrap();
    for id in 1..=3 {
        store.register(reg(id), now()).unwrap();
    }
    assert!(store.set_leader(2).unwrap());
    drop(store);
    std::fs::read(dir.log()).unwrap()
}

/// Writes `bytes` as the log, then checks that the start is refused at `offset` naming the
/// file and how to move it aside, and that nothing in the directory changed.
fn refused_at(dir: &TempDir, bytes: &[u8], offset: usize) -> String {
    std::fs::write(dir.log(), bytes).unwrap();
    let names = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = names(&dir.0);
    let error = match open(&dir.0) {
        Err(error) => error,
        Ok(store) => panic!("the start was not refused: nodes {:?}", ids(&store)),
    };
    let message = error.to_string();
    match &error {
        OpenError::Damaged {
            file, offset: at, ..
        } => {
            assert_eq!(file, &dir.log(), "{message}");
            assert_eq!(*at, offset as u64, "{message}");
        }
        other => panic!("expected Damaged, got {other:?}"),
    }
    assert!(message.contains(&format!("byte {offset}")), "{message}");
    assert!(
        message.contains("mv "),
        "says how to move it aside: {message}"
    );
    assert_eq!(
        std::fs::read(dir.log()).unwrap(),
        bytes,
        "the log is untouched"
    );
    assert_eq!(
        names(&dir.0),
        before,
        "nothing is added or moved: {message}"
    );
    message
}

#[test]
fn a_log_with_other_line_endings_is_refused_not_emptied() {
    let dir = TempDir::new();
    let crlf: Vec<u8> = three_nodes(&dir)
        .iter()
        .flat_map(|&b| {
            if b == b'\n' {
                vec![b'\r', b'\n']
            } else {
                vec![b]
            }
        })
        .collect();
    refused_at(&dir, &crlf, 0);
}

#[test]
fn random_bytes_as_a_log_are_refused_not_emptied() {
    let dir = TempDir::new();
    three_nodes(&dir);
    // 5,000 bytes of a fixed pseudo-random sequence, with a newline somewhere, as a copy
    // through a broken tool would leave.
    let mut x: u32 = 0x9e37_79b9;
    let random: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    assert!(random.contains(&b'\n'));
    refused_at(&dir, &random, 0);
    // And without any newline: one unfinished "line" that is not the start of a record.
    let no_newline: Vec<u8> = random
        .iter()
        .map(|&b| if b == b'\n' { b' ' } else { b })
        .collect();
    refused_at(&dir, &no_newline, 0);
}

#[test]
fn a_log_in_another_framing_is_refused() {
    let dir = TempDir::new();
    three_nodes(&dir);
    let later = b"{\"framing\":2,\"seq\":1,\"op\":\"put\"}\n{\"framing\":2,\"seq\":2}\n";
    refused_at(&dir, later, 0);
}

#[test]
fn a_complete_last_record_with_a_bad_checksum_is_refused_not_dropped() {
    let dir = TempDir::new();
    let bytes = three_nodes(&dir);
    // The last record is the acknowledged leader change. Change a digit of its leader id: the
    // JSON stays valid, only the checksum tells.
    let last = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let line = std::str::from_utf8(&bytes[last..]).unwrap();
    let at = last + line.find(r#""leader_id":2"#).unwrap() + r#""leader_id":"#.len();
    let mut damaged = bytes.clone();
    damaged[at] = b'3';
    let message = refused_at(&dir, &damaged, last);
    assert!(message.contains("checksum"), "{message}");
}

#[test]
fn a_changed_digit_inside_a_record_is_caught_by_its_checksum() {
    let dir = TempDir::new();
    let bytes = three_nodes(&dir);
    // Node 2's port, 5002, becomes 5003 in the second record: valid JSON, a stale checksum.
    let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    let text = std::str::from_utf8(&bytes).unwrap();
    let at = text.find(r#""port":5002"#).unwrap() + r#""port":500"#.len();
    assert!(at > second);
    let mut damaged = bytes.clone();
    damaged[at] = b'3';
    let line_start = bytes[..at].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    let message = refused_at(&dir, &damaged, line_start);
    assert!(message.contains("checksum"), "{message}");
}

#[test]
fn zero_bytes_after_the_last_record_are_a_torn_write_set_aside() {
    let dir = TempDir::new();
    let bytes = three_nodes(&dir);
    let mut zeroed = bytes.clone();
    zeroed.extend_from_slice(br#"{"len":120,"crc":1,"rec":{"seq":"#);
    zeroed.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(dir.log(), &zeroed).unwrap();
    let store = open(&dir.0).unwrap();
    assert_eq!(ids(&store), vec![1, 2, 3]);
    assert_eq!(store.summary().leader, Some(2));
    let aside = dir.0.join(format!("log.jsonl.torn-{}", bytes.len()));
    assert_eq!(std::fs::read(aside).unwrap(), &zeroed[bytes.len()..]);
}

#[test]
fn a_damaged_record_before_good_ones_stops_the_start_naming_file_and_offset() {
    let dir = TempDir::new();
    {
        let store = open(&dir.0).unwrap();
        store.register(reg(1), now()).unwrap();
        store.register(reg(2), now()).unwrap();
        store.register(reg(3), now()).unwrap();
    }
    let original = std::fs::read(dir.log()).unwrap();
    let second_line = original.iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut damaged = original.clone();
    // Flip a byte inside the second record's body: its checksum no longer matches.
    let at = second_line + 60;
    damaged[at] ^= 0x01;
    std::fs::write(dir.log(), &damaged).unwrap();

    let error = open(&dir.0).unwrap_err();
    match &error {
        OpenError::Damaged { file, offset, .. } => {
            assert_eq!(file, &dir.log());
            assert_eq!(*offset, second_line as u64);
        }
        other => panic!("expected Damaged, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&dir.log().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("byte {second_line}")),
        "{message}"
    );
    assert!(
        message.contains("mv "),
        "says how to move it aside: {message}"
    );
    assert_eq!(
        std::fs::read(dir.log()).unwrap(),
        damaged,
        "a refused start changes nothing"
    );
}

#[test]
fn a_second_store_on_a_locked_directory_is_refused_until_the_first_is_gone() {
    let dir = TempDir::new();
    let first = open(&dir.0).unwrap();
    match open(&dir.0) {
        Err(OpenError::Locked { dir: locked }) => assert_eq!(locked, dir.0),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    open(&dir.0).expect("the lock goes with its holder");
}

#[test]
fn compaction_while_writes_continue_loses_nothing() {
    let dir = TempDir::new();
    let threads = 4;
    let per_thread = 150u64;
    {
        let store =
            LocalStore::open_compacting_at(&dir.0, liveness(), 10_000, now(), 4096).unwrap();
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = &store;
                s.spawn(move || {
                    for i in 0..per_thread {
                        let id = t * 1000 + i;
                        store.register(reg(id), now()).unwrap();
                        store
                            .register(with_metadata(id, json!({"round": i})), now())
                            .unwrap();
                    }
                });
            }
        });
        assert!(compacted(&store), "{:?}", store.durability());
        assert!(store.durability().snapshot_bytes > 0);
    }
    let store = open(&dir.0).unwrap();
    let nodes = ids(&store);
    assert_eq!(nodes.len(), (threads * per_thread) as usize);
    for t in 0..threads {
        for i in 0..per_thread {
            assert_eq!(metadata_of(&store, t * 1000 + i), json!({"round": i}));
        }
    }
}

#[test]
fn a_compaction_cut_short_before_the_log_was_emptied_replays_nothing_twice() {
    let dir = TempDir::new();
    {
        let store = open(&dir.0).unwrap();
        store.register(reg(1), now()).unwrap();
        store.register(reg(2), now()).unwrap();
    }
    let old_log = std::fs::read(dir.log()).unwrap();
    {
        // Removing node 1 passes the threshold: a snapshot without node 1, an empty log.
        let store = LocalStore::open_compacting_at(&dir.0, liveness(), 1000, now(), 1).unwrap();
        store.remove(1).unwrap();
        assert!(compacted(&store), "the writer compacts after the remove");
    }
    // As if the crash came after the snapshot's rename and before the log was emptied.
    std::fs::write(dir.log(), &old_log).unwrap();
    let store = open(&dir.0).unwrap();
    assert_eq!(
        ids(&store),
        vec![2],
        "node 1's old record is in the snapshot's past"
    );
}

#[test]
fn a_temporary_snapshot_left_by_a_crash_is_removed() {
    let dir = TempDir::new();
    {
        let store = open(&dir.0).unwrap();
        store.register(reg(1), now()).unwrap();
    }
    std::fs::write(dir.0.join("snapshot.jsonl.tmp"), b"{\"len\":3").unwrap();
    let store = open(&dir.0).unwrap();
    assert_eq!(ids(&store), vec![1]);
    assert!(!dir.0.join("snapshot.jsonl.tmp").exists());
}

#[test]
fn a_full_registry_refuses_new_nodes_and_changes_nothing() {
    let store = LocalStore::memory(liveness(), 2);
    store.register(reg(1), now()).unwrap();
    store.register(reg(2), now()).unwrap();
    let version = store.summary().version;
    match store.register(reg(3), now()) {
        Err(StoreError::Registry(crate::server::registry::RegistryError::Full {
            max_nodes: 2,
        })) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(store.summary().version, version);
    assert!(
        store.register(reg(2), now()).is_ok(),
        "known nodes may update"
    );
}

#[test]
fn every_line_of_the_log_is_json_with_length_and_checksum() {
    let dir = TempDir::new();
    {
        let store = open(&dir.0).unwrap();
        store
            .register(with_metadata(1, json!({"a": [1, 2]})), now())
            .unwrap();
        store.remove(1).unwrap();
    }
    let text = std::fs::read_to_string(dir.log()).unwrap();
    let ops: Vec<String> = text
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            // The record's own bytes: after `"rec":`, before the frame's closing brace.
            let start = line.find(r#""rec":"#).unwrap() + r#""rec":"#.len();
            let rec = &line[start..line.len() - 1];
            assert_eq!(value["len"], rec.len(), "{line}");
            assert_eq!(value["crc"], crc32fast::hash(rec.as_bytes()), "{line}");
            value["rec"]["op"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        ops,
        [
            "put",
            "leader",
            "bootstrap",
            "remove",
            "leader",
            "bootstrap"
        ]
    );
}

#[test]
fn a_change_is_answered_only_once_its_record_is_written() {
    let dir = TempDir::new();
    let store = open(&dir.0).unwrap();
    let (done, answered) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let writer = store.hold_writer();
        s.spawn(|| {
            store.register(reg(1), now()).unwrap();
            done.send(()).unwrap();
        });
        assert!(
            answered.recv_timeout(Duration::from_millis(300)).is_err(),
            "answered while the writer could not write"
        );
        assert_eq!(std::fs::metadata(dir.log()).unwrap().len(), 0);
        drop(writer);
        answered
            .recv_timeout(Duration::from_secs(10))
            .expect("answered once written");
    });
    assert!(std::fs::metadata(dir.log()).unwrap().len() > 0);
}

#[test]
fn registrations_that_arrive_together_share_one_sync() {
    let dir = TempDir::new();
    let store = open(&dir.0).unwrap();
    store.register(reg(1), now()).unwrap();
    let before = std::fs::metadata(dir.log()).unwrap().len();
    let syncs_before = store.durability().syncs;
    std::thread::scope(|s| {
        let writer = store.hold_writer();
        let started: Vec<_> = (2..10)
            .map(|id| {
                let store = &store;
                s.spawn(move || store.register(reg(id), now()).unwrap())
            })
            .collect();
        // Node 1 took versions 1 and 2 (join, leader); the eight joins take 3 to 10.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.versions().0 < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(store.versions().0, 10, "all eight are queued");
        assert_eq!(std::fs::metadata(dir.log()).unwrap().len(), before);
        drop(writer);
        for handle in started {
            handle.join().unwrap();
        }
    });
    assert_eq!(ids(&store).len(), 9);
    // The writer may have taken the first one alone before it found the gate shut; the other
    // seven go in one batch.
    let syncs = store.durability().syncs - syncs_before;
    assert!(syncs <= 2, "{syncs} syncs for eight registrations");
}

#[test]
fn a_pending_registration_is_confirmed_only_once_its_record_is_written() {
    let dir = TempDir::new();
    let store = open(&dir.0).unwrap();
    let (done, confirmed) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let writer = store.hold_writer();
        let (registered, pending) = store.register_pending(reg(1), now()).unwrap();
        assert!(registered.is_bootstrap);
        s.spawn(|| {
            store.confirm(pending).unwrap();
            done.send(()).unwrap();
        });
        assert!(
            confirmed.recv_timeout(Duration::from_millis(300)).is_err(),
            "confirmed while the writer could not write"
        );
        drop(writer);
        confirmed
            .recv_timeout(Duration::from_secs(10))
            .expect("confirmed once written");
    });
    drop(store);
    assert_eq!(ids(&open(&dir.0).unwrap()), vec![1]);
}

#[test]
fn a_pending_registration_is_settled_at_once_in_memory_and_once_written_on_disk() {
    // The gateway answers at once what is settled, and hands the rest to `when_settled`.
    let memory = LocalStore::memory(liveness(), 1000);
    let (_, pending) = memory.register_pending(reg(1), now()).unwrap();
    let version = memory.versions().0;
    assert!(memory.is_settled(&pending, version), "nothing to wait for");
    memory.confirm(pending).unwrap();

    let dir = TempDir::new();
    let store = open(&dir.0).unwrap();
    let writer = store.hold_writer();
    let (_, pending) = store.register_pending(reg(1), now()).unwrap();
    let version = store.versions().0;
    assert!(
        !store.is_settled(&pending, version),
        "settled while the writer could not write"
    );
    drop(writer);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.is_settled(&pending, version) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        store.is_settled(&pending, version),
        "never settled once written"
    );
    assert!(std::fs::metadata(dir.log()).unwrap().len() > 0);
    store.confirm(pending).unwrap();
}

#[test]
fn the_leader_and_a_delta_are_read_as_the_registry_is_now() {
    // Not the default figures (90 s and 300 s), which a default would show as well.
    let own = Liveness {
        suspect_after: Duration::from_secs(7),
        node_timeout: Duration::from_secs(11),
    };
    let store = LocalStore::memory(own, 1000);
    assert_eq!(store.liveness(), own);
    store.register(reg(1), now()).unwrap();
    let first = store.versions().0;
    store.register(reg(2), now()).unwrap();
    let version = store.versions().0;
    assert!(version > first);
    for (read, (at, leader)) in [
        ("leader", store.leader()),
        ("leader_unsettled", store.leader_unsettled()),
    ] {
        assert_eq!(at, version, "{read}");
        assert_eq!(leader.map(|l| l.node_id), Some(1), "{read}");
    }
    let delta = store.delta(first, 100).expect("the journal reaches back");
    assert_eq!(
        (delta.version, delta.leader, delta.changes),
        (version, Some(1), vec![(version, Change::Joined(2))])
    );
    let records: Vec<NodeId> = delta.records.iter().map(|r| r.node_id).collect();
    assert_eq!(records, vec![2]);
}

#[test]
fn a_read_waits_until_the_version_it_shows_is_on_disk() {
    let dir = TempDir::new();
    let store = open(&dir.0).unwrap();
    let (done, read) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let writer = store.hold_writer();
        let (_, pending) = store.register_pending(reg(1), now()).unwrap();
        s.spawn(|| {
            let (version, leader) = store.leader();
            done.send((version, leader.map(|l| l.node_id))).unwrap();
        });
        assert!(
            read.recv_timeout(Duration::from_millis(300)).is_err(),
            "read before the writer could write"
        );
        drop(writer);
        let (version, leader) = read
            .recv_timeout(Duration::from_secs(10))
            .expect("read once written");
        assert_eq!((version, leader), (store.versions().0, Some(1)));
        assert!(store.is_settled(&pending, version));
        store.confirm(pending).unwrap();
    });
}

mod disk;
