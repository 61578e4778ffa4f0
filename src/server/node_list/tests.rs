//! The chunked list: answers equal a plain serialisation, gzip members decode to the same
//! bytes, and a change rebuilds only the chunk it falls in.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::*;
use crate::server::registry::NodeInfo;

fn record(node_id: NodeId, status: NodeStatus) -> NodeRecord {
    NodeRecord {
        node_id,
        info: Arc::new(NodeInfo {
            ip_address: format!("10.0.{}.{}", node_id / 256 % 256, node_id % 256),
            port: 5000,
            capabilities: if node_id.is_multiple_of(3) {
                vec!["raft".into(), "gossip".into()].into()
            } else {
                vec!["raft".into()].into()
            },
            metadata: RawValue::from_string(format!(r#"{{"rack":"r{}"}}"#, node_id % 7)).unwrap(),
        }),
        status,
        last_seen: 1000.0 + node_id as f64,
        join_timestamp: 500.0,
        heard_at: Instant::now(),
    }
}

fn snapshot(records: Vec<NodeRecord>, version: u64) -> Snapshot {
    Snapshot {
        version,
        touches: version,
        leader: records.first().map(|r| r.node_id),
        records,
    }
}

fn nodes(ids: impl IntoIterator<Item = NodeId>) -> Vec<NodeRecord> {
    ids.into_iter()
        .map(|id| {
            let status = if id % 10 == 4 {
                NodeStatus::Suspected
            } else {
                NodeStatus::Active
            };
            record(id, status)
        })
        .collect()
}

/// The array the way the whole list was serialised before chunks: by node id, filtered.
fn plain(records: &[NodeRecord], filter: Filter<'_>) -> Vec<u8> {
    let mut sorted: Vec<&NodeRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.node_id);
    let kept: Vec<String> = sorted
        .into_iter()
        .filter(|r| {
            Some(r.node_id) != filter.exclude
                && (filter.include_suspected || r.status == NodeStatus::Active)
                && filter
                    .capability
                    .is_none_or(|c| r.info.capabilities.iter().any(|h| h == c))
        })
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    format!("[{}]", kept.join(",")).into_bytes()
}

fn bytes_of(list: &NodeList, parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Static(b) => out.extend_from_slice(b),
            Part::Owned(b) => out.extend_from_slice(b),
            Part::Cached { chunk, range } => {
                out.extend_from_slice(list.bytes(*chunk, range.clone()))
            }
            Part::Compressed { chunk, variant } => {
                out.extend_from_slice(list.compressed(*chunk, *variant))
            }
        }
    }
    out
}

fn gunzip(bytes: &[u8]) -> String {
    let mut out = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut out)
        .expect("a valid gzip member, checksum included");
    out
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

fn filters() -> Vec<Filter<'static>> {
    let mut filters = Vec::new();
    for exclude in [
        None,
        Some(0),
        Some(1),
        Some(63),
        Some(64),
        Some(130),
        Some(299),
        Some(9999),
    ] {
        for include_suspected in [false, true] {
            for capability in [None, Some("gossip"), Some("none")] {
                filters.push(Filter {
                    exclude,
                    include_suspected,
                    capability,
                });
            }
        }
    }
    filters
}

#[test]
fn every_answer_is_the_plain_serialisation_and_gzip_decodes_to_it() {
    for count in [0, 1, 2, 63, 64, 65, 300, 600] {
        let records = nodes(0..count);
        let list = NodeList::build(snapshot(records.clone(), 1), None);
        for filter in filters() {
            let want = text(plain(&records, filter));
            let have = text(bytes_of(&list, &list.select(filter)));
            assert!(have == want, "{count} nodes, {filter:?}");
            if let Some(parts) = list.select_gzip(filter, b"{\"nodes\":", b"}") {
                let unzipped = gunzip(&bytes_of(&list, &parts));
                assert!(
                    unzipped == format!("{{\"nodes\":{want}}}"),
                    "gzip, {count} nodes, {filter:?}"
                );
            }
        }
    }
}

#[test]
fn gzip_is_at_least_five_times_smaller_than_the_plain_list() {
    let records = nodes(0..1000);
    let list = NodeList::build(snapshot(records, 1), None);
    let filter = Filter {
        exclude: Some(500),
        ..Filter::default()
    };
    let plain = bytes_of(&list, &list.select(filter)).len();
    let gzip = bytes_of(&list, &list.select_gzip(filter, b"", b"").unwrap()).len();
    assert!(gzip * 5 <= plain, "{gzip} bytes compressed, {plain} plain");
}

fn shared_chunks(a: &NodeList, b: &NodeList) -> usize {
    b.chunks
        .iter()
        .filter(|c| a.chunks.iter().any(|d| Arc::ptr_eq(c, d)))
        .count()
}

#[test]
fn a_change_rebuilds_only_the_chunk_it_falls_in() {
    let records = nodes(0..1000);
    let first = NodeList::build(snapshot(records.clone(), 1), None);
    let mut changed = records.clone();
    changed[500] = record(500, NodeStatus::Active);
    let second = NodeList::build(snapshot(changed.clone(), 2), Some(&first));
    assert_eq!(second.chunks.len(), first.chunks.len());
    assert_eq!(shared_chunks(&first, &second), first.chunks.len() - 1);
    assert!(
        bytes_of(&second, &second.select(Filter::default())) == plain(&changed, Filter::default())
    );

    // A node leaving the first chunk and one joining the last: two chunks rebuilt.
    let mut churned: Vec<NodeRecord> = changed.into_iter().filter(|r| r.node_id != 10).collect();
    churned.push(record(100_000, NodeStatus::Active));
    let third = NodeList::build(snapshot(churned.clone(), 3), Some(&second));
    assert_eq!(
        shared_chunks(&second, &third),
        second.chunks.len() - 2,
        "{} of {} chunks shared",
        shared_chunks(&second, &third),
        second.chunks.len()
    );
    assert!(
        bytes_of(&third, &third.select(Filter::default())) == plain(&churned, Filter::default())
    );
}

#[test]
fn a_growing_chunk_is_split_and_the_list_stays_right() {
    let mut records = nodes(0..64);
    let mut list = NodeList::build(snapshot(records.clone(), 1), None);
    for (version, id) in (64..400).enumerate() {
        records.push(record(id, NodeStatus::Active));
        list = NodeList::build(snapshot(records.clone(), version as u64 + 2), Some(&list));
    }
    assert!(
        list.chunks
            .iter()
            .all(|c| c.entries.len() < 2 * CHUNK_NODES)
    );
    for filter in filters() {
        assert!(
            bytes_of(&list, &list.select(filter)) == plain(&records, filter),
            "{filter:?}"
        );
    }
}

#[test]
fn heartbeats_alone_keep_the_compressed_chunks_for_a_while() {
    let records = nodes(0..200);
    let mut first = NodeList::build(snapshot(records.clone(), 1), None);
    let all = Filter {
        include_suspected: true,
        ..Filter::default()
    };
    let gzip_before = bytes_of(&first, &first.select_gzip(all, b"", b"").unwrap());
    // A second later, every node has heartbeated.
    for chunk in &mut first.chunks {
        Arc::get_mut(chunk).expect("not shared").built -= LIST_MAX_AGE;
    }
    let mut beaten = records.clone();
    for r in &mut beaten {
        r.last_seen += 5.0;
    }
    // Plain chunks are rebuilt with the new `last_seen`; compressed ones are kept, showing the
    // older values, until GZIP_MAX_AGE (LIST_MAX_AGE in a list of at most GZIP_FRESH_UP_TO).
    let mut later = snapshot(beaten.clone(), 1);
    later.touches = 2;
    let second = NodeList::build(later, Some(&first));
    let plain_after = text(bytes_of(&second, &second.select(all)));
    assert!(
        plain_after == text(plain(&beaten, all)),
        "plain chunks show the new last_seen"
    );
    let gzip_after = bytes_of(&second, &second.select_gzip(all, b"", b"").unwrap());
    assert!(gzip_after == gzip_before, "the compressed form is kept");
    assert!(gunzip(&gzip_after) == text(plain(&records, all)));
}

#[test]
fn stored_blocks_split_at_64_kib() {
    let text = vec![b'x'; 70_000];
    let mut member = GZIP_HEADER.to_vec();
    member.extend_from_slice(&stored(&text, true));
    member.extend_from_slice(&crc32fast::hash(&text).to_le_bytes());
    member.extend_from_slice(&(text.len() as u32).to_le_bytes());
    assert!(gunzip(&member).as_bytes() == text.as_slice());
}

/// The CRC-32 and length in a gzip member's trailer.
fn trailer(bytes: &[u8]) -> (u32, u32) {
    let end = &bytes[bytes.len() - 8..];
    (
        u32::from_le_bytes(end[..4].try_into().unwrap()),
        u32::from_le_bytes(end[4..].try_into().unwrap()),
    )
}

#[test]
fn the_combined_checksum_is_the_crc_of_the_text_for_every_asker() {
    // Chunk 1 (ids 64..128) is all suspected: without the suspected nodes its text is empty,
    // and a chunk of one node is empty without its asker.
    let mut records = nodes(0..300);
    for record in &mut records[64..128] {
        record.status = NodeStatus::Suspected;
    }
    records.push(record(5000, NodeStatus::Active));
    let list = NodeList::build(snapshot(records.clone(), 1), None);
    let askers = [0, 7, 63, 64, 100, 128, 299, 5000].map(Some);
    for exclude in [None].into_iter().chain(askers) {
        for include_suspected in [false, true] {
            let filter = Filter {
                exclude,
                include_suspected,
                capability: None,
            };
            let member = bytes_of(&list, &list.select_gzip(filter, b"{", b"}").unwrap());
            let unzipped = gunzip(&member);
            assert!(unzipped == format!("{{{}}}", text(plain(&records, filter))));
            let (crc, length) = trailer(&member);
            assert_eq!(crc, crc32fast::hash(unzipped.as_bytes()), "{filter:?}");
            assert_eq!(length as usize, unzipped.len(), "{filter:?}");
        }
    }
    // A list whose only node is the asker, and an empty list.
    for records in [nodes([9]), Vec::new()] {
        let list = NodeList::build(snapshot(records, 2), None);
        let filter = Filter {
            exclude: Some(9),
            ..Filter::default()
        };
        let member = bytes_of(&list, &list.select_gzip(filter, b"", b"").unwrap());
        assert_eq!(gunzip(&member), "[]");
        assert_eq!(trailer(&member), (crc32fast::hash(b"[]"), 2));
    }
}

#[test]
fn checksums_kept_across_versions_with_old_compressed_texts_stay_right() {
    // A heartbeat keeps a chunk's compressed form (older `last_seen`): the answer's checksum
    // must be that of the kept text, which is what the member holds.
    let records = nodes(0..200);
    let first = NodeList::build(snapshot(records.clone(), 1), None);
    let all = Filter::default();
    first.select_gzip(all, b"", b"").unwrap();
    let mut beat = records.clone();
    beat[70].last_seen += 1.0;
    let second = NodeList::build(snapshot(beat, 2), Some(&first));
    for exclude in [None, Some(70), Some(3)] {
        let filter = Filter { exclude, ..all };
        let member = bytes_of(&second, &second.select_gzip(filter, b"", b"").unwrap());
        let unzipped = gunzip(&member);
        assert_eq!(trailer(&member).0, crc32fast::hash(unzipped.as_bytes()));
    }
}

#[test]
fn in_a_list_of_a_few_thousand_nodes_compressed_chunks_are_as_fresh_as_plain_ones() {
    let records = nodes(0..200);
    let mut first = NodeList::build(snapshot(records.clone(), 1), None);
    let all = Filter {
        include_suspected: true,
        ..Filter::default()
    };
    let _ = first.select_gzip(all, b"", b"").unwrap();
    // A second later, every node has heartbeated: the compressed forms are a second old.
    for chunk in &mut first.chunks {
        let chunk = Arc::get_mut(chunk).expect("not shared");
        chunk.built -= LIST_MAX_AGE;
        for compressed in chunk.gzip.iter_mut().filter_map(OnceLock::get_mut) {
            compressed.made -= LIST_MAX_AGE;
        }
    }
    let mut beaten = records.clone();
    for r in &mut beaten {
        r.last_seen += 1.0;
    }
    let mut later = snapshot(beaten.clone(), 1);
    later.touches = 2;
    let second = NodeList::build(later, Some(&first));
    let gzip_after = bytes_of(&second, &second.select_gzip(all, b"", b"").unwrap());
    assert!(
        gunzip(&gzip_after) == text(plain(&beaten, all)),
        "the gzip list shows the new last_seen"
    );
}

/// A small deterministic generator (xorshift64*), so a failing sequence can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

mod incremental {
    //! Lists made from deltas against lists built from scratch, over random change sequences
    //! applied to a real registry.

    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::api::Registration;
    use crate::server::registry::{Liveness, Now, Registry};
    use crate::server::store::Delta;

    fn registration(node_id: NodeId, seq: u64) -> Registration {
        Registration {
            node_id,
            ip_address: format!("10.0.{}.{}", node_id / 256 % 256, node_id % 256),
            port: 5000,
            capabilities: if node_id.is_multiple_of(3) {
                vec!["raft".into(), "gossip".into()]
            } else {
                vec!["raft".into()]
            },
            metadata: json!({ "seq": seq }).as_object().cloned(),
            previous_epoch: None,
        }
    }

    fn snapshot_of(registry: &Registry) -> Snapshot {
        Snapshot {
            version: registry.version(),
            touches: registry.touches(),
            leader: registry.leader_id(),
            records: registry.nodes().cloned().collect(),
        }
    }

    fn delta_of(registry: &Registry, since: u64) -> Delta {
        let now = (registry.version(), registry.touches(), registry.leader_id());
        Delta::gather(registry.journal(), since, usize::MAX, now, |id| {
            registry.get(id)
        })
        .expect("the journal reaches back")
    }

    /// Every answer of `have` is that of `want`: plain bytes for every filter, and gzip members
    /// that decode to the same text with the same checksum.
    fn same_answers(have: &NodeList, want: &NodeList, asker: NodeId, why: &str) {
        assert_eq!(
            (have.version, have.leader),
            (want.version, want.leader),
            "{why}"
        );
        assert_eq!(have.len(), want.len(), "{why}");
        for exclude in [None, Some(asker), Some(NodeId::MAX)] {
            for include_suspected in [false, true] {
                for capability in [None, Some("gossip")] {
                    let filter = Filter {
                        exclude,
                        include_suspected,
                        capability,
                    };
                    let plain = bytes_of(have, &have.select(filter));
                    assert!(
                        plain == bytes_of(want, &want.select(filter)),
                        "{why}: {filter:?}"
                    );
                    let Some(parts) = have.select_gzip(filter, b"{\"nodes\":", b"}") else {
                        continue;
                    };
                    let member = bytes_of(have, &parts);
                    let wanted = bytes_of(
                        want,
                        &want.select_gzip(filter, b"{\"nodes\":", b"}").unwrap(),
                    );
                    assert!(gunzip(&member) == gunzip(&wanted), "{why}: gzip {filter:?}");
                    assert_eq!(trailer(&member), trailer(&wanted), "{why}: gzip {filter:?}");
                }
            }
        }
    }

    /// Applies `steps` random changes (joins, metadata updates, departures, leaders, sweeps
    /// that suspect and reap, recoveries) to a registry of `seeded` nodes with ids below
    /// `ids`, making a list from each delta and comparing it with one built from scratch.
    fn run(seed: u64, seeded: u64, ids: u64, steps: usize) {
        let mut rng = Rng(seed);
        let liveness = Liveness {
            suspect_after: Duration::from_secs(90),
            node_timeout: Duration::from_secs(300),
        };
        let start = Instant::now();
        let mut clock = Duration::ZERO;
        let now = |clock: Duration| Now {
            instant: start + clock,
            unix: 1_000_000.0 + clock.as_secs_f64(),
        };
        let mut registry = Registry::new(liveness);
        for id in 0..seeded {
            registry
                .register(registration(id * ids / seeded.max(1), 0), now(clock))
                .unwrap();
        }
        let mut list = NodeList::build(snapshot_of(&registry), None);
        let mut seq = 1;
        for step in 0..steps {
            for _ in 0..=rng.below(8) {
                seq += 1;
                let id = rng.below(ids);
                match rng.below(10) {
                    0..=2 => {
                        registry
                            .register(registration(id, seq), now(clock))
                            .unwrap();
                    }
                    3 | 4 => {
                        registry.remove(id);
                    }
                    5 => {
                        registry.set_leader(id);
                    }
                    6 => {
                        // Silence: some nodes become suspected, some are reaped.
                        clock += Duration::from_secs(rng.below(120));
                        registry.sweep(now(clock));
                    }
                    7 => {
                        // A heartbeat, only from a suspected node (it recovers, a change):
                        // plain heartbeats move `last_seen` outside the journal.
                        if registry
                            .get(id)
                            .is_some_and(|r| r.status == NodeStatus::Suspected)
                        {
                            registry.heartbeat(id, now(clock));
                        }
                    }
                    _ => {
                        // Several nodes join or change at once.
                        for id in id..(id + rng.below(150)).min(ids) {
                            registry
                                .register(registration(id, seq), now(clock))
                                .unwrap();
                        }
                    }
                }
            }
            let _ = registry.take_events();
            let delta = delta_of(&registry, list.version);
            let next = list.apply(delta);
            let scratch = NodeList::build(snapshot_of(&registry), None);
            // An asker somewhere in the list (its chunk is the one made for the answer).
            let mut ids: Vec<NodeId> = registry.nodes().map(|r| r.node_id).collect();
            ids.sort_unstable();
            let asker = ids
                .get(rng.below(ids.len() as u64 + 1) as usize)
                .copied()
                .unwrap_or(0);
            same_answers(&next, &scratch, asker, &format!("seed {seed}, step {step}"));
            // Now and then a list built from a snapshot takes over, as the gateway's refresh.
            list = if rng.below(10) == 0 {
                NodeList::build(snapshot_of(&registry), Some(&next))
            } else {
                next
            };
        }
    }

    #[test]
    fn random_changes_through_deltas_give_the_answers_of_a_list_built_from_scratch() {
        for seed in 1..=6 {
            run(seed, 200, 1_500, 25);
        }
        // From an empty registry, and down to it.
        run(99, 0, 200, 60);
    }

    #[test]
    fn deltas_over_a_deep_tree_give_the_answers_of_a_list_built_from_scratch() {
        // Over 64 chunks: three levels of branches, some split, some emptied.
        run(7, 6_000, 12_000, 12);
    }
}
