//! The cached peer list: every node serialised once, in chunks, plain and gzip-compressed.
//!
//! Nodes are kept by node id in chunks of about [`CHUNK_NODES`]. A chunk holds its nodes' JSON
//! objects joined by commas, and, once someone asks for gzip, that text compressed on its own
//! (a raw deflate stream ended by a full flush, so chunks can be spliced into one gzip member).
//! When the registry changes, [`NodeList::apply`] makes the next list from the previous one and
//! the store's [`Delta`]: the chunks the changed nodes fall in are made again, every other
//! chunk is shared, with its compressed form, and so is most of the tree that holds them in
//! order (`node_list/chunks.rs`): a version costs what changed, not the cluster.
//! [`NodeList::build`] compares a whole snapshot with the previous list chunk by chunk
//! instead: the first list, when the journal does not reach back, and once every
//! [`LIST_MAX_AGE`] for the `last_seen` values heartbeats moved (heartbeats change no version
//! and are not in the journal). Lists of different versions share their unchanged chunks, so
//! a slow reader of an old version pins little.
//!
//! Answers are [`Part`]s: fixed bytes, bytes of a chunk, or bytes made for that answer (such as
//! the asker's chunk without the asker).

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress};

use crate::api::{NodeId, NodeStatus};
use crate::server::registry::{NodeInfo, NodeRecord};
use crate::server::store::{Delta, Snapshot};

mod chunks;

use chunks::{Chunks, Edit};

/// How stale `last_seen` inside a cached plain list may get before its chunk is rebuilt.
pub const LIST_MAX_AGE: Duration = Duration::from_secs(1);

/// How stale `last_seen` inside a cached compressed chunk may get before it is compressed
/// again: heartbeats touch every chunk every second in a large cluster, and compressing them
/// all that often would cost far more than serialising them.
pub const GZIP_MAX_AGE: Duration = Duration::from_secs(5);

/// Lists of up to this many nodes keep compressed chunks no longer than plain ones
/// ([`LIST_MAX_AGE`]): recompressing them every second costs little (about 50 us a chunk), and
/// a dashboard or a node reading a gzip list sees heartbeat ages as fresh as a plain list's.
pub const GZIP_FRESH_UP_TO: usize = 16 * 1024;

/// Nodes per chunk, as chunks are first cut; a chunk is split at twice this.
pub const CHUNK_NODES: usize = 64;

/// From this many chunks on, a gzip answer sends the asker's chunk uncompressed.
pub const STORE_PARTIAL_FROM: usize = 8;

/// Every registered node, serialised, by node id; the leader and the version they belong to.
#[derive(Debug)]
pub struct NodeList {
    /// The registry version this list shows.
    pub version: u64,
    /// The leader, if any (always one of the nodes).
    pub leader: Option<NodeId>,
    /// The registry's `touches` when the list was built from a snapshot; `None` for a list
    /// made from a delta, whose unchanged nodes show `last_seen` as of [`NodeList::built`].
    pub(crate) touches: Option<u64>,
    /// When the list was last built from a snapshot (a list made from a delta keeps its
    /// predecessor's: its unchanged nodes' `last_seen` values are that old).
    pub(crate) built: Instant,
    /// The chunks in order, each with the checksums of its compressed texts (see
    /// `node_list/chunks.rs`).
    chunks: Chunks,
}

/// Up to about [`CHUNK_NODES`] consecutive nodes.
#[derive(Debug)]
struct Chunk {
    entries: Vec<Entry>,
    /// How many of the nodes are suspected.
    suspected: usize,
    /// The nodes' JSON objects joined by commas.
    json: Arc<[u8]>,
    built: Instant,
    /// The chunk's text compressed, made on first use: `[0]` every node, `[1]` the active ones
    /// (used only when the chunk has suspected nodes).
    gzip: [OnceLock<Compressed>; 2],
}

#[derive(Debug, Clone)]
struct Entry {
    node_id: NodeId,
    status: NodeStatus,
    info: Arc<NodeInfo>,
    last_seen: f64,
    join_timestamp: f64,
    /// Where this node's object sits in the chunk's `json`.
    range: Range<usize>,
}

/// A chunk's text as a raw deflate stream ending in a full flush: no final block, byte
/// aligned, so it can stand anywhere in a gzip member.
#[derive(Debug)]
struct Compressed {
    bytes: Vec<u8>,
    /// The text it holds (for the gzip checksum). A chunk whose nodes only heartbeated keeps
    /// its compressed form, with the older `last_seen` values, for up to [`GZIP_MAX_AGE`] (or
    /// [`LIST_MAX_AGE`] in a list of at most [`GZIP_FRESH_UP_TO`] nodes).
    text: Arc<[u8]>,
    /// The CRC-32 of `text`.
    crc: crc32fast::Hasher,
    made: Instant,
}

/// Which nodes a list answer holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter<'a> {
    /// Leave this node out (the asker itself).
    pub exclude: Option<NodeId>,
    /// Include suspected nodes too.
    pub include_suspected: bool,
    /// Only nodes offering this capability.
    pub capability: Option<&'a str>,
}

impl Filter<'_> {
    fn keeps(&self, entry: &Entry) -> bool {
        Some(entry.node_id) != self.exclude
            && (self.include_suspected || entry.status == NodeStatus::Active)
            && self
                .capability
                .is_none_or(|c| entry.info.capabilities.iter().any(|have| have == c))
    }
}

/// A piece of an answer body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Fixed bytes.
    Static(&'static [u8]),
    /// Bytes of a chunk's plain JSON.
    Cached {
        /// The chunk.
        chunk: usize,
        /// Which bytes of it.
        range: Range<usize>,
    },
    /// A chunk's compressed bytes.
    Compressed {
        /// The chunk.
        chunk: usize,
        /// `0`: every node; `1`: the active ones.
        variant: usize,
    },
    /// Bytes made for this answer.
    Owned(Vec<u8>),
}

impl NodeList {
    /// The list for `snapshot`, reusing the chunks of `previous` whose nodes did not change.
    pub fn build(snapshot: Snapshot, previous: Option<&NodeList>) -> NodeList {
        let Snapshot {
            version,
            touches,
            leader,
            mut records,
        } = snapshot;
        records.sort_unstable_by_key(|r| r.node_id);
        let now = Instant::now();
        let gzip_max_age = if records.len() <= GZIP_FRESH_UP_TO {
            LIST_MAX_AGE
        } else {
            GZIP_MAX_AGE
        };
        let old: Vec<&Arc<Chunk>> = previous.map_or_else(Vec::new, |p| p.chunks.iter().collect());
        // Chunk boundaries stay put as nodes come and go: old chunk k takes the nodes up to its
        // last id; the last chunk takes the rest.
        let mut groups: Vec<(Option<&Arc<Chunk>>, &[NodeRecord])> = Vec::new();
        let mut rest = &records[..];
        for chunk in old.iter().take(old.len().saturating_sub(1)) {
            let Some(last) = chunk.last_id() else {
                continue;
            };
            let (mine, others) = rest.split_at(rest.partition_point(|r| r.node_id <= last));
            if !mine.is_empty() {
                groups.push((Some(chunk), mine));
            }
            rest = others;
        }
        if !rest.is_empty() {
            groups.push((old.last().copied(), rest));
        }
        let mut chunks = Vec::with_capacity(records.len() / CHUNK_NODES + 1);
        for (old, group) in groups {
            if group.len() >= 2 * CHUNK_NODES {
                chunks.extend(
                    group
                        .chunks(CHUNK_NODES)
                        .map(|piece| Arc::new(Chunk::build(piece, now, None, gzip_max_age))),
                );
                continue;
            }
            chunks.push(match old.filter(|chunk| chunk.holds(group)) {
                Some(chunk) if chunk.fresh(now, group) => Arc::clone(chunk),
                same_nodes => Arc::new(Chunk::build(
                    group,
                    now,
                    same_nodes.map(|c| &**c),
                    gzip_max_age,
                )),
            });
        }
        NodeList {
            version,
            leader,
            touches: Some(touches),
            built: now,
            chunks: Chunks::from_vec(chunks),
        }
    }

    /// The list after `delta` (the changes after this list's version), made from this one in
    /// O(changes): each chunk a changed node falls in (the chunk that holds it or would take
    /// it, as [`NodeList::build`] groups nodes) is made again from its kept text and the
    /// changed records, split when it reaches twice [`CHUNK_NODES`], dropped when empty; every
    /// other chunk, and every branch of the tree above that holds no changed chunk, is shared.
    ///
    /// The unchanged nodes keep the `last_seen` they have here: the list keeps this one's
    /// [`NodeList::built`], and the gateway builds from a snapshot once that is older than
    /// [`LIST_MAX_AGE`].
    pub fn apply(&self, delta: Delta) -> NodeList {
        let now = Instant::now();
        let Delta {
            version,
            leader,
            changes,
            records,
            ..
        } = delta;
        // Every node named, once, by id: its record now, or none if it is gone.
        let mut named: Vec<(NodeId, Option<&NodeRecord>)> = changes
            .iter()
            .filter_map(|(_, change)| change.node_id())
            .map(|id| (id, None))
            .collect();
        named.sort_unstable_by_key(|(id, _)| *id);
        named.dedup_by_key(|(id, _)| *id);
        for record in &records {
            if let Ok(i) = named.binary_search_by_key(&record.node_id, |(id, _)| *id) {
                named[i].1 = Some(record);
            }
        }
        let chunks = if self.chunks.len() == 0 {
            let records: Vec<&NodeRecord> = named.iter().filter_map(|(_, r)| *r).collect();
            let sources: Vec<Source<'_>> = records.into_iter().map(Source::New).collect();
            Chunks::from_vec(cut(&sources, now))
        } else {
            // The named nodes by the chunk they fall in (past the last id: the last chunk).
            let last = self.chunks.len() - 1;
            let mut edits: Vec<Edit> = Vec::new();
            let mut rest = &named[..];
            while let Some(&(first, _)) = rest.first() {
                let k = self.chunks.chunk_of(first).unwrap_or(last);
                let upto = if k == last {
                    rest.len()
                } else {
                    let last_id = self.chunks.get(k).last_id().expect("a chunk has nodes");
                    rest.partition_point(|(id, _)| *id <= last_id)
                };
                let (mine, others) = rest.split_at(upto);
                edits.push((k, Chunk::merge(self.chunks.get(k), mine, now)));
                rest = others;
            }
            self.chunks.edit(&edits)
        };
        NodeList {
            version,
            leader,
            touches: None,
            built: self.built,
            chunks,
        }
    }

    /// The most changes [`NodeList::apply`] is worth it for: past one a chunk, a snapshot
    /// costs about as much.
    pub fn max_changes(&self) -> usize {
        self.chunks.len().max(64)
    }

    /// The JSON array of the nodes that pass `filter`, as pieces of the cached chunks.
    pub fn select(&self, filter: Filter<'_>) -> Vec<Part> {
        let mut parts = Vec::with_capacity(2 * self.chunks.len() + 2);
        parts.push(Part::Static(b"["));
        let mut first = true;
        let all_pass = filter.capability.is_none()
            && (filter.include_suspected || self.chunks.suspected() == 0);
        for (i, chunk) in self.chunks.iter().enumerate() {
            let whole = all_pass && !chunk.contains(filter.exclude);
            if whole {
                if !first {
                    parts.push(Part::Static(b","));
                }
                parts.push(Part::Cached {
                    chunk: i,
                    range: 0..chunk.json.len(),
                });
                first = false;
                continue;
            }
            for entry in chunk.entries.iter().filter(|e| filter.keeps(e)) {
                if !first {
                    parts.push(Part::Static(b","));
                }
                parts.push(Part::Cached {
                    chunk: i,
                    range: entry.range.clone(),
                });
                first = false;
            }
        }
        parts.push(Part::Static(b"]"));
        parts
    }

    /// A whole gzip member holding `prefix`, the same array as [`NodeList::select`], and
    /// `suffix`: `None` when the filter names a capability (such lists are not kept compressed).
    ///
    /// Every chunk without the asker is its cached compressed form (every node, or the active
    /// ones). The asker's chunk, without the asker, is the one piece made for the answer: sent
    /// as it is (stored blocks) in a list of [`STORE_PARTIAL_FROM`] chunks or more, compressed
    /// fast in a shorter one. The prefix, the commas between chunks and the suffix go as stored
    /// blocks. The checksum combines the checksums of the chunks before and after the asker's
    /// (O(log chunks) combinations of the tree's, see `node_list/chunks.rs`) with that chunk's
    /// text.
    pub fn select_gzip(
        &self,
        filter: Filter<'_>,
        prefix: &[u8],
        suffix: &[u8],
    ) -> Option<Vec<Part>> {
        if filter.capability.is_some() {
            return None;
        }
        let with_suspected = filter.include_suspected;
        let asker = filter
            .exclude
            .and_then(|id| self.chunk_of(id))
            .filter(|&k| self.chunks.get(k).contains(filter.exclude));
        let mut crc = crc32fast::Hasher::new();
        let mut parts = Vec::with_capacity(2 * self.chunks.len() + 2);
        let mut head = GZIP_HEADER.to_vec();
        let mut opening = prefix.to_vec();
        opening.push(b'[');
        head.extend_from_slice(&stored(&opening, false));
        crc.update(&opening);
        parts.push(Part::Owned(head));
        let mut first = true;
        for (i, chunk) in self.chunks.iter().enumerate() {
            if Some(i) != asker {
                let variant = self.variant(chunk, filter.include_suspected);
                if !chunk.compressed(variant).text.is_empty() {
                    if !first {
                        parts.push(Part::Static(COMMA_BLOCK));
                    }
                    parts.push(Part::Compressed { chunk: i, variant });
                    first = false;
                }
                continue;
            }
            crc.combine(&self.chunks.crc(with_suspected, 0..i));
            let mut text = Vec::new();
            for entry in chunk.entries.iter().filter(|e| filter.keeps(e)) {
                if !text.is_empty() || !first {
                    text.push(b',');
                }
                text.extend_from_slice(&chunk.json[entry.range.clone()]);
            }
            if !text.is_empty() {
                crc.update(&text);
                // In a long list, one chunk sent as it is (stored blocks) costs little on the
                // wire and nothing to make; in a short one it would be much of the answer,
                // and compressing it is cheap.
                parts.push(Part::Owned(if self.chunks.len() >= STORE_PARTIAL_FROM {
                    stored(&text, false)
                } else {
                    deflate(&text, Compression::fast())
                }));
                first = false;
            }
            let rest = self.chunks.crc(with_suspected, i + 1..self.chunks.len());
            if rest.total_len() > 0 {
                if !first {
                    crc.update(b",");
                }
                crc.combine(&rest);
            }
        }
        if asker.is_none() {
            crc.combine(&self.chunks.crc(with_suspected, 0..self.chunks.len()));
        }
        let mut closing = b"]".to_vec();
        closing.extend_from_slice(suffix);
        crc.update(&closing);
        let mut tail = stored(&closing, true);
        let length = crc.total_len();
        tail.extend_from_slice(&crc.finalize().to_le_bytes());
        tail.extend_from_slice(&(length as u32).to_le_bytes());
        parts.push(Part::Owned(tail));
        Some(parts)
    }

    /// Which compressed form of `chunk` an answer uses: every node (`0`), or the active ones
    /// (`1`) when the answer leaves suspected nodes out and the chunk has some.
    fn variant(&self, chunk: &Chunk, include_suspected: bool) -> usize {
        usize::from(!include_suspected && chunk.has_suspected())
    }

    /// The JSON object of one node, if registered.
    pub fn node(&self, node_id: NodeId) -> Option<Part> {
        let chunk = self.chunk_of(node_id)?;
        let entry = self.chunks.get(chunk).entry(node_id)?;
        Some(Part::Cached {
            chunk,
            range: entry.range.clone(),
        })
    }

    /// The bytes a [`Part::Cached`] points at.
    pub fn bytes(&self, chunk: usize, range: Range<usize>) -> &[u8] {
        &self.chunks.get(chunk).json[range]
    }

    /// The compressed bytes a [`Part::Compressed`] points at.
    pub fn compressed(&self, chunk: usize, variant: usize) -> &[u8] {
        &self.chunks.get(chunk).compressed(variant).bytes
    }

    /// Nodes in the list, active and suspected.
    pub fn len(&self) -> usize {
        self.chunks.nodes()
    }

    /// True if no node is registered.
    pub fn is_empty(&self) -> bool {
        self.chunks.len() == 0
    }

    fn chunk_of(&self, node_id: NodeId) -> Option<usize> {
        self.chunks.chunk_of(node_id)
    }
}

impl Chunk {
    fn build(
        records: &[NodeRecord],
        now: Instant,
        previous: Option<&Chunk>,
        gzip_max_age: Duration,
    ) -> Chunk {
        let sources: Vec<Source<'_>> = records.iter().map(Source::New).collect();
        let chunk = Chunk::assemble(&sources, now);
        // The nodes only heartbeated: keep the compressed forms while they are young enough.
        if let Some(previous) = previous {
            for (kept, old) in chunk.gzip.iter().zip(&previous.gzip) {
                if let Some(compressed) = old.get()
                    && now.duration_since(compressed.made) < gzip_max_age
                {
                    let _ = kept.set(Compressed {
                        bytes: compressed.bytes.clone(),
                        text: Arc::clone(&compressed.text),
                        crc: compressed.crc.clone(),
                        made: compressed.made,
                    });
                }
            }
        }
        chunk
    }

    /// A chunk of `sources`' nodes, in that order: kept ones copied from their chunk's text,
    /// new ones serialised.
    fn assemble(sources: &[Source<'_>], now: Instant) -> Chunk {
        let mut json = Vec::with_capacity(sources.len() * 224);
        let mut entries = Vec::with_capacity(sources.len());
        for source in sources {
            if !json.is_empty() {
                json.push(b',');
            }
            let start = json.len();
            let entry = match *source {
                Source::Kept(chunk, entry) => {
                    json.extend_from_slice(&chunk.json[entry.range.clone()]);
                    entry.clone()
                }
                Source::New(record) => {
                    serde_json::to_writer(&mut json, record).expect("a node record serialises");
                    Entry {
                        node_id: record.node_id,
                        status: record.status,
                        info: Arc::clone(&record.info),
                        last_seen: record.last_seen,
                        join_timestamp: record.join_timestamp,
                        range: 0..0,
                    }
                }
            };
            entries.push(Entry {
                range: start..json.len(),
                ..entry
            });
        }
        Chunk {
            suspected: entries
                .iter()
                .filter(|e| e.status == NodeStatus::Suspected)
                .count(),
            entries,
            json: Arc::from(json),
            built: now,
            gzip: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// What `self` becomes with the `named` nodes (by id; each with its record now, or none if
    /// it is gone): no chunk if none is left, one, or pieces of [`CHUNK_NODES`] if it reached
    /// twice that (as [`NodeList::build`] cuts a group).
    fn merge(&self, named: &[(NodeId, Option<&NodeRecord>)], now: Instant) -> Vec<Arc<Chunk>> {
        let mut sources = Vec::with_capacity(self.entries.len() + named.len());
        let (mut kept, mut named) = (self.entries.iter().peekable(), named.iter().peekable());
        loop {
            match (kept.peek(), named.peek()) {
                (Some(entry), Some((id, _))) if entry.node_id < *id => {
                    sources.push(Source::Kept(self, entry));
                    kept.next();
                }
                (Some(entry), None) => {
                    sources.push(Source::Kept(self, entry));
                    kept.next();
                }
                (entry, Some((id, record))) => {
                    if entry.is_some_and(|e| e.node_id == *id) {
                        kept.next();
                    }
                    sources.extend(record.map(Source::New));
                    named.next();
                }
                (None, None) => break,
            }
        }
        cut(&sources, now)
    }

    /// The compressed form of every node (`variant` 0) or of the active ones (1).
    fn compressed(&self, variant: usize) -> &Compressed {
        self.gzip[variant].get_or_init(|| {
            let text: Arc<[u8]> = if variant == 0 {
                Arc::clone(&self.json)
            } else {
                let mut text = Vec::with_capacity(self.json.len());
                for entry in self
                    .entries
                    .iter()
                    .filter(|e| e.status == NodeStatus::Active)
                {
                    if !text.is_empty() {
                        text.push(b',');
                    }
                    text.extend_from_slice(&self.json[entry.range.clone()]);
                }
                Arc::from(text)
            };
            let mut crc = crc32fast::Hasher::new();
            crc.update(&text);
            Compressed {
                bytes: deflate(&text, Compression::default()),
                text,
                crc,
                made: Instant::now(),
            }
        })
    }

    fn last_id(&self) -> Option<NodeId> {
        self.entries.last().map(|e| e.node_id)
    }

    fn entry(&self, node_id: NodeId) -> Option<&Entry> {
        self.entries
            .binary_search_by_key(&node_id, |e| e.node_id)
            .ok()
            .map(|i| &self.entries[i])
    }

    fn contains(&self, node_id: Option<NodeId>) -> bool {
        node_id.is_some_and(|id| self.entry(id).is_some())
    }

    fn has_suspected(&self) -> bool {
        self.suspected > 0
    }

    /// True if this chunk has exactly these nodes with the same address, capabilities,
    /// metadata and status (`last_seen` aside).
    fn holds(&self, records: &[NodeRecord]) -> bool {
        self.entries.len() == records.len()
            && self.entries.iter().zip(records).all(|(e, r)| {
                e.node_id == r.node_id
                    && e.status == r.status
                    && e.join_timestamp == r.join_timestamp
                    && Arc::ptr_eq(&e.info, &r.info)
            })
    }

    /// True if, on top of [`Chunk::holds`], `last_seen` is the same or the chunk is younger
    /// than [`LIST_MAX_AGE`].
    fn fresh(&self, now: Instant, records: &[NodeRecord]) -> bool {
        now.duration_since(self.built) < LIST_MAX_AGE
            || self
                .entries
                .iter()
                .zip(records)
                .all(|(e, r)| e.last_seen == r.last_seen)
    }
}

/// Where a node's object comes from when a chunk is made.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    /// The same as in this chunk, entry and text.
    Kept(&'a Chunk, &'a Entry),
    /// Serialised from the record.
    New(&'a NodeRecord),
}

/// Chunks of `sources`: none, one, or pieces of [`CHUNK_NODES`] from twice that on.
fn cut(sources: &[Source<'_>], now: Instant) -> Vec<Arc<Chunk>> {
    if sources.len() >= 2 * CHUNK_NODES {
        return sources
            .chunks(CHUNK_NODES)
            .map(|piece| Arc::new(Chunk::assemble(piece, now)))
            .collect();
    }
    (!sources.is_empty())
        .then(|| Arc::new(Chunk::assemble(sources, now)))
        .into_iter()
        .collect()
}

/// Appends the text `next` checksums to the text `crc` checksums, with a comma between them
/// when both are non-empty (how chunks' texts join in a list).
fn join(crc: &mut crc32fast::Hasher, next: &crc32fast::Hasher) {
    if next.total_len() == 0 {
        return;
    }
    if crc.total_len() > 0 {
        crc.update(b",");
    }
    crc.combine(next);
}

/// `text` as a raw deflate stream ended by a full flush (no final block, byte aligned).
fn deflate(text: &[u8], level: Compression) -> Vec<u8> {
    let mut compress = Compress::new(level, false);
    let mut out = Vec::with_capacity(text.len() / 4 + 64);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress
            .compress_vec(&text[consumed..], &mut out, FlushCompress::Full)
            .expect("deflate into a Vec cannot fail");
        let done = compress.total_in() as usize == text.len() && out.len() < out.capacity();
        if done || status == flate2::Status::StreamEnd {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    out
}

/// `bytes` as deflate stored blocks (no compression); `last` marks the stream's final block.
fn stored(bytes: &[u8], last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 5 * (bytes.len() / 65535 + 1));
    let mut pieces = bytes.chunks(65535).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[u8::from(last), 0, 0, 0xff, 0xff]);
        return out;
    }
    while let Some(piece) = pieces.next() {
        let final_block = last && pieces.peek().is_none();
        let len = piece.len() as u16;
        out.push(u8::from(final_block));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// The 10-byte header of a gzip member (no name, no time, unknown OS).
const GZIP_HEADER: &[u8] = &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// A comma as a deflate stored block, between two chunks.
const COMMA_BLOCK: &[u8] = &[0, 1, 0, 0xfe, 0xff, b','];

#[cfg(test)]
mod tests;
