//! The cached peer list: every node serialised once, in chunks, plain and gzip-compressed.
//!
//! Nodes are kept by node id in chunks of about [`CHUNK_NODES`]. A chunk holds its nodes' JSON
//! objects joined by commas, and, once someone asks for gzip, that text compressed on its own
//! (a raw deflate stream ended by a full flush, so chunks can be spliced into one gzip member).
//! When the registry changes, [`NodeList::build`] compares the new snapshot with the previous
//! list chunk by chunk and reuses every chunk whose nodes did not change, with its compressed
//! form: a change costs the chunk it falls in, not the cluster, and lists of different versions
//! share their unchanged chunks, so a slow reader of an old version pins little.
//!
//! Answers are [`Part`]s: fixed bytes, bytes of a chunk, or bytes made for that answer (such as
//! the asker's chunk without the asker).

use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use flate2::{Compress, Compression, FlushCompress};

use crate::api::{NodeId, NodeStatus};
use crate::server::registry::{NodeInfo, NodeRecord};
use crate::server::store::Snapshot;

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
    /// The registry's `touches` when the list was built.
    pub(crate) touches: u64,
    /// When the list was built.
    pub(crate) built: Instant,
    chunks: Vec<Arc<Chunk>>,
    suspected: usize,
    /// The checksums of the compressed chunks' texts, made on first use: `[0]` for answers of
    /// the active nodes, `[1]` with the suspected ones.
    checksums: [OnceLock<Checksums>; 2],
}

/// The CRC-32 of a list's compressed texts joined by commas (empty texts left out), before
/// and after each chunk, so a gzip answer's checksum costs two combinations and the asker's
/// chunk, not a pass over the whole list.
#[derive(Debug)]
struct Checksums {
    /// `before[k]`: chunks `..k`; `before[chunks]` is the whole list.
    before: Vec<crc32fast::Hasher>,
    /// `after[k]`: chunks `k..`; `after[chunks]` is empty.
    after: Vec<crc32fast::Hasher>,
}

/// Up to about [`CHUNK_NODES`] consecutive nodes.
#[derive(Debug)]
struct Chunk {
    entries: Vec<Entry>,
    /// True if some of the nodes are suspected.
    suspected: bool,
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
        let old: &[Arc<Chunk>] = previous.map_or(&[], |p| &p.chunks);
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
            groups.push((old.last(), rest));
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
        let suspected = records
            .iter()
            .filter(|r| r.status == NodeStatus::Suspected)
            .count();
        NodeList {
            version,
            leader,
            touches,
            built: now,
            chunks,
            suspected,
            checksums: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The JSON array of the nodes that pass `filter`, as pieces of the cached chunks.
    pub fn select(&self, filter: Filter<'_>) -> Vec<Part> {
        let mut parts = Vec::with_capacity(2 * self.chunks.len() + 2);
        parts.push(Part::Static(b"["));
        let mut first = true;
        let all_pass =
            filter.capability.is_none() && (filter.include_suspected || self.suspected == 0);
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
    /// blocks. The checksum combines the list's cached checksums before and after the asker's
    /// chunk with that chunk's text ([`Checksums`]).
    pub fn select_gzip(
        &self,
        filter: Filter<'_>,
        prefix: &[u8],
        suffix: &[u8],
    ) -> Option<Vec<Part>> {
        if filter.capability.is_some() {
            return None;
        }
        let checksums = self.checksums(filter.include_suspected);
        let asker = filter
            .exclude
            .and_then(|id| self.chunk_of(id))
            .filter(|&k| self.chunks[k].contains(filter.exclude));
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
            crc.combine(&checksums.before[i]);
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
            let rest = &checksums.after[i + 1];
            if rest.total_len() > 0 {
                if !first {
                    crc.update(b",");
                }
                crc.combine(rest);
            }
        }
        if asker.is_none() {
            crc.combine(&checksums.before[self.chunks.len()]);
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

    /// The checksums of the compressed texts, with or without the suspected nodes.
    fn checksums(&self, include_suspected: bool) -> &Checksums {
        self.checksums[usize::from(include_suspected)].get_or_init(|| {
            let n = self.chunks.len();
            let pieces: Vec<&Compressed> = self
                .chunks
                .iter()
                .map(|c| c.compressed(self.variant(c, include_suspected)))
                .collect();
            let mut before = Vec::with_capacity(n + 1);
            let mut running = crc32fast::Hasher::new();
            before.push(running.clone());
            for piece in &pieces {
                join(&mut running, &piece.crc);
                before.push(running.clone());
            }
            let mut after = vec![crc32fast::Hasher::new(); n + 1];
            for (k, piece) in pieces.iter().enumerate().rev() {
                let mut here = piece.crc.clone();
                join(&mut here, &after[k + 1]);
                after[k] = here;
            }
            Checksums { before, after }
        })
    }

    /// The JSON object of one node, if registered.
    pub fn node(&self, node_id: NodeId) -> Option<Part> {
        let chunk = self.chunk_of(node_id)?;
        let entry = self.chunks[chunk].entry(node_id)?;
        Some(Part::Cached {
            chunk,
            range: entry.range.clone(),
        })
    }

    /// The bytes a [`Part::Cached`] points at.
    pub fn bytes(&self, chunk: usize, range: Range<usize>) -> &[u8] {
        &self.chunks[chunk].json[range]
    }

    /// The compressed bytes a [`Part::Compressed`] points at.
    pub fn compressed(&self, chunk: usize, variant: usize) -> &[u8] {
        &self.chunks[chunk].compressed(variant).bytes
    }

    /// Nodes in the list, active and suspected.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.entries.len()).sum()
    }

    /// True if no node is registered.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn chunk_of(&self, node_id: NodeId) -> Option<usize> {
        let i = self
            .chunks
            .partition_point(|c| c.last_id().is_some_and(|last| last < node_id));
        (i < self.chunks.len()).then_some(i)
    }
}

impl Chunk {
    fn build(
        records: &[NodeRecord],
        now: Instant,
        previous: Option<&Chunk>,
        gzip_max_age: Duration,
    ) -> Chunk {
        let mut json = Vec::with_capacity(records.len() * 224);
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            if !json.is_empty() {
                json.push(b',');
            }
            let start = json.len();
            serde_json::to_writer(&mut json, record).expect("a node record serialises");
            entries.push(Entry {
                node_id: record.node_id,
                status: record.status,
                info: Arc::clone(&record.info),
                last_seen: record.last_seen,
                join_timestamp: record.join_timestamp,
                range: start..json.len(),
            });
        }
        let json: Arc<[u8]> = Arc::from(json);
        let gzip = [OnceLock::new(), OnceLock::new()];
        // The nodes only heartbeated: keep the compressed forms while they are young enough.
        if let Some(previous) = previous {
            for (kept, old) in gzip.iter().zip(&previous.gzip) {
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
        Chunk {
            entries,
            json,
            suspected: records.iter().any(|r| r.status == NodeStatus::Suspected),
            built: now,
            gzip,
        }
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
        self.suspected
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
