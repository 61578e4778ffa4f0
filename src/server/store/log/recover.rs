//! Reading a data directory back at start: the snapshot, then the log replayed over it, record
//! by record, each checked (framing, sequence, checksum) before it is believed.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::api::{Node, NodeId};
use crate::server::registry::{NodeInfo, Restored};

use super::*;

/// A record as read back.
#[derive(Deserialize)]
pub(super) struct RecordIn {
    pub(super) seq: u64,
    pub(super) v: u64,
    #[serde(flatten)]
    pub(super) op: OpIn,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum OpIn {
    Put {
        node: Node,
    },
    Remove {
        node_id: NodeId,
    },
    Leader {
        leader_id: Option<NodeId>,
    },
    Status {},
    Bootstrap {
        initiated: bool,
        armed: bool,
    },
    Snapshot {
        leader_id: Option<NodeId>,
        bootstrap_initiated: bool,
        bootstrap_armed: bool,
        nodes: usize,
    },
}

/// The record inside one framed line (without its newline), or why it is not one.
pub(super) fn unframe(line: &[u8]) -> Result<&[u8], String> {
    let rest = line
        .strip_prefix(br#"{"len":"#)
        .ok_or("not a framed record")?;
    let (len, rest) = split_number(rest)?;
    let rest = rest.strip_prefix(br#","crc":"#).ok_or("no checksum")?;
    let (crc, rest) = split_number(rest)?;
    let rest = rest.strip_prefix(br#","rec":"#).ok_or("no record")?;
    let len = usize::try_from(len).map_err(|_| "length out of range")?;
    if rest.len() != len + 1 || rest[len] != b'}' {
        return Err(format!(
            "length {len} does not match the record ({} bytes)",
            rest.len().saturating_sub(1)
        ));
    }
    let body = &rest[..len];
    let actual = crc32fast::hash(body);
    if u64::from(actual) != crc {
        return Err(format!("checksum {actual} does not match {crc}"));
    }
    Ok(body)
}

pub(super) fn split_number(bytes: &[u8]) -> Result<(u64, &[u8]), String> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let text = std::str::from_utf8(&bytes[..digits]).expect("ASCII digits");
    let n = text.parse().map_err(|_| "a number out of range")?;
    Ok((n, &bytes[digits..]))
}

/// The registry as the files describe it, while it is being read.
#[derive(Default)]
pub(super) struct Replay {
    pub(super) nodes: HashMap<NodeId, (Arc<NodeInfo>, f64)>,
    pub(super) leader: Option<NodeId>,
    pub(super) version: u64,
    pub(super) seq: u64,
    pub(super) bootstrap_initiated: bool,
    pub(super) bootstrap_armed: bool,
}

impl Replay {
    pub(super) fn apply(&mut self, record: RecordIn) -> Result<(), String> {
        match record.op {
            OpIn::Put { node } => {
                let metadata = serde_json::to_string(&node.metadata).expect("a map serialises");
                let info = NodeInfo {
                    ip_address: node.ip_address,
                    port: node.port,
                    capabilities: node.capabilities.into(),
                    metadata: RawValue::from_string(metadata).expect("serde_json output is JSON"),
                };
                self.nodes
                    .insert(node.node_id, (Arc::new(info), node.join_timestamp));
            }
            OpIn::Remove { node_id } => {
                self.nodes.remove(&node_id);
                if self.leader == Some(node_id) {
                    self.leader = None;
                }
            }
            OpIn::Leader { leader_id } => self.leader = leader_id,
            OpIn::Status {} => {}
            OpIn::Bootstrap { initiated, armed } => {
                self.bootstrap_initiated = initiated;
                self.bootstrap_armed = armed;
            }
            OpIn::Snapshot { .. } => return Err("a snapshot header inside the log".to_owned()),
        }
        self.seq = record.seq;
        self.version = self.version.max(record.v);
        Ok(())
    }

    pub(super) fn into_restored(self) -> Restored {
        let mut nodes: Vec<_> = self
            .nodes
            .into_iter()
            .map(|(id, (info, joined))| (id, info, joined))
            .collect();
        nodes.sort_unstable_by_key(|n| n.0);
        Restored {
            nodes,
            leader: self.leader,
            version: self.version,
            bootstrap_initiated: self.bootstrap_initiated,
            bootstrap_armed: self.bootstrap_armed,
        }
    }
}

/// Locks `dir` (creating it if needed) and reads the registry back from it.
pub fn recover(dir: &Path) -> Result<(Restored, Resume), OpenError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    for name in [LOCK_FILE, SNAPSHOT_FILE, LOG_FILE] {
        regular_file(&dir.join(name))?;
    }
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(OpenError::Locked {
                dir: dir.to_owned(),
            });
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
    }
    // A temporary snapshot is one whose compaction did not finish: the old snapshot and the
    // log still hold everything.
    let temp = dir.join(SNAPSHOT_TEMP);
    if temp.exists() {
        log::warn!(
            "removing {}, left by a compaction that did not finish",
            temp.display()
        );
        fs::remove_file(&temp).map_err(io_error(&temp))?;
    }

    let mut replay = Replay {
        bootstrap_armed: true,
        ..Replay::default()
    };
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let snapshot_bytes = match fs::read(&snapshot_path) {
        Ok(bytes) => {
            read_snapshot(&snapshot_path, &bytes, &mut replay)?;
            bytes.len() as u64
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_error(&snapshot_path)(e)),
    };
    let log_path = dir.join(LOG_FILE);
    let log_bytes = match fs::read(&log_path) {
        Ok(bytes) => {
            let read = read_log(&log_path, &bytes, &mut replay)?;
            if read.torn {
                set_torn_tail_aside(&log_path, &bytes, read.good)?;
            }
            read.good
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_error(&log_path)(e)),
    };
    let resume = Resume {
        lock,
        next_seq: replay.seq + 1,
        version: replay.version,
        log_bytes,
        snapshot_bytes,
    };
    let restored = replay.into_restored();
    log::info!(
        "data directory {}: {} nodes, leader {}, registry version {}",
        dir.display(),
        restored.nodes.len(),
        restored
            .leader
            .map_or_else(|| "none".to_owned(), |id| id.to_string()),
        restored.version
    );
    Ok((restored, resume))
}

/// Refuses a data-directory file that exists and is not a regular file: a symlink (to
/// `/dev/null`, say: every record written and synced into nothing, every start empty), a
/// directory, a device, a pipe. A missing file is fine (it is created).
fn regular_file(path: &Path) -> Result<(), OpenError> {
    let kind = match fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path)(e)),
    };
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "a device, pipe or socket"
    };
    Err(io_error(path)(io::Error::other(format!(
        "is {what}, not a regular file: move it aside (the gateway writes and syncs its \
         records there, and only a regular file keeps them)"
    ))))
}

/// What the directory holds on disk, with the log read up to `good` bytes (what was synced):
/// the registry to go back to after a write failed. Takes no lock (the writer holds it).
pub(super) fn read_written(dir: &Path, good: u64) -> Result<Restored, OpenError> {
    let mut replay = Replay {
        bootstrap_armed: true,
        ..Replay::default()
    };
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    match fs::read(&snapshot_path) {
        Ok(bytes) => read_snapshot(&snapshot_path, &bytes, &mut replay)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&snapshot_path)(e)),
    }
    let log_path = dir.join(LOG_FILE);
    match fs::read(&log_path) {
        Ok(mut bytes) => {
            bytes.truncate(good as usize);
            read_log(&log_path, &bytes, &mut replay)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&log_path)(e)),
    }
    Ok(replay.into_restored())
}

/// Lines of `bytes` with their offsets; the last one may lack its newline.
pub(super) fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8], bool)> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset >= bytes.len() {
            return None;
        }
        let rest = &bytes[offset..];
        let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], true),
            None => (rest, false),
        };
        let at = offset;
        offset += line.len() + usize::from(complete);
        Some((at, line, complete))
    })
}

pub(super) fn parse(line: &[u8], complete: bool) -> Result<RecordIn, String> {
    if !complete {
        return Err("the record has no end".to_owned());
    }
    let body = unframe(line)?;
    serde_json::from_slice(body).map_err(|e| format!("not a valid record: {e}"))
}

pub(super) fn read_snapshot(
    path: &Path,
    bytes: &[u8],
    replay: &mut Replay,
) -> Result<(), OpenError> {
    let damaged = |offset: usize, reason: String| OpenError::Damaged {
        file: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let mut expected = None;
    let mut seen = 0;
    for (offset, line, complete) in lines(bytes) {
        let record = parse(line, complete).map_err(|e| damaged(offset, e))?;
        match (record.op, expected) {
            (
                OpIn::Snapshot {
                    leader_id,
                    bootstrap_initiated,
                    bootstrap_armed,
                    nodes,
                },
                None,
            ) => {
                replay.leader = leader_id;
                replay.bootstrap_initiated = bootstrap_initiated;
                replay.bootstrap_armed = bootstrap_armed;
                replay.version = record.v;
                replay.seq = record.seq;
                expected = Some(nodes);
            }
            (OpIn::Put { node }, Some(_)) => {
                let put = RecordIn {
                    seq: replay.seq,
                    v: replay.version,
                    op: OpIn::Put { node },
                };
                replay.apply(put).map_err(|e| damaged(offset, e))?;
                seen += 1;
            }
            _ => {
                return Err(damaged(
                    offset,
                    "unexpected record in a snapshot".to_owned(),
                ));
            }
        }
    }
    match expected {
        Some(n) if n == seen => Ok(()),
        Some(n) => Err(damaged(
            bytes.len(),
            format!("the snapshot promises {n} nodes and holds {seen}"),
        )),
        None => Err(damaged(0, "no snapshot header".to_owned())),
    }
}

/// The most a write in flight at a crash can leave after the last complete record: part of one
/// record (records are far smaller: a node's metadata is at most 16 KiB)...
pub(super) const MAX_TORN_RECORD: usize = 1 << 20;
/// ...and zero bytes a file system may show past the end of what was written.
pub(super) const MAX_TORN_ZEROS: usize = 64 << 20;

/// How every framed record starts.
const FRAME_START: &[u8] = br#"{"len":"#;

/// What reading the log found: where its complete records end, and what follows them.
pub(super) struct LogRead {
    /// The length of the complete records: the log's length once a torn tail is set aside.
    pub(super) good: u64,
    /// Bytes after the last complete record that a write cut short by a crash left.
    pub(super) torn: bool,
}

/// Replays the log's complete records. Only a write cut short by a crash may be dropped: what
/// follows the last newline, if it is the start of one framed record (or zero bytes a file
/// system left), within what one write in flight can leave. Anything else, a complete line
/// that is not a good record above all (a bad checksum, other line endings, another framing),
/// refuses the start: its records were acknowledged.
pub(super) fn read_log(
    path: &Path,
    bytes: &[u8],
    replay: &mut Replay,
) -> Result<LogRead, OpenError> {
    let damaged = |offset: usize, reason: String| OpenError::Damaged {
        file: path.to_owned(),
        offset: offset as u64,
        reason,
    };
    let base = replay.seq;
    let mut last_seq = 0;
    let complete = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1);
    for (offset, line, _) in lines(&bytes[..complete]) {
        let record = parse(line, true)
            .map_err(|reason| damaged(offset, format!("{reason}; found {}", found(line))))?;
        if record.seq <= last_seq {
            return Err(damaged(
                offset,
                format!("sequence {} after {last_seq}", record.seq),
            ));
        }
        last_seq = record.seq;
        // Records already in the snapshot: a compaction stopped before emptying the log.
        if record.seq <= base {
            continue;
        }
        replay.apply(record).map_err(|e| damaged(offset, e))?;
    }
    let tail = &bytes[complete..];
    torn_tail(tail)
        .map_err(|reason| damaged(complete, format!("{reason}; found {}", found(tail))))?;
    Ok(LogRead {
        good: complete as u64,
        torn: !tail.is_empty(),
    })
}

/// Whether `tail`, the bytes after the last complete record, is what a write cut short leaves.
pub(super) fn torn_tail(tail: &[u8]) -> Result<(), String> {
    let zeros = tail.iter().rev().take_while(|&&b| b == 0).count();
    let start = &tail[..tail.len() - zeros];
    if zeros > MAX_TORN_ZEROS {
        return Err(format!(
            "{zeros} zero bytes after the last complete record, more than a crash leaves"
        ));
    }
    if start.is_empty() {
        return Ok(());
    }
    let framed = if start.len() <= FRAME_START.len() {
        FRAME_START.starts_with(start)
    } else {
        start.starts_with(FRAME_START)
    };
    if !framed || start.contains(&0) {
        return Err("an unfinished last line that is not the start of a record".to_owned());
    }
    if start.len() > MAX_TORN_RECORD {
        return Err(format!(
            "an unfinished last line of {} bytes, longer than any record",
            start.len()
        ));
    }
    Ok(())
}

/// The first bytes of `bytes`, escaped, for an error message.
fn found(bytes: &[u8]) -> String {
    const SHOWN: usize = 48;
    let shown: String = bytes[..bytes.len().min(SHOWN)].escape_ascii().to_string();
    if bytes.len() > SHOWN {
        format!("\"{shown}...\" ({} bytes)", bytes.len())
    } else {
        format!("\"{shown}\"")
    }
}

/// Moves the torn tail of the log (after `good` bytes) aside to `log.jsonl.torn-OFFSET`, then
/// cuts the log there: a tail is never destroyed, only set aside, and the start says where.
pub(super) fn set_torn_tail_aside(path: &Path, bytes: &[u8], good: u64) -> Result<(), OpenError> {
    let aside = path.with_file_name(format!("{LOG_FILE}.torn-{good}"));
    let tail = &bytes[good as usize..];
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&aside)
            .map_err(io_error(&aside))?;
        file.write_all(tail).map_err(io_error(&aside))?;
        file.sync_all().map_err(io_error(&aside))?;
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir).map_err(io_error(dir))?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(good).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    log::warn!(
        "{}: the last write was cut short by a crash ({} bytes at byte {good}, never \
         acknowledged); moved them to {} and went on from the records before",
        path.display(),
        tail.len(),
        aside.display()
    );
    Ok(())
}
