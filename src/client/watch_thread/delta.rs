//! What the watch thread holds when the gateway sends delta answers (`changes=1`): every node
//! by id and the leader, kept by applying the events (pure, unit-tested).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::api::{ChangeKind, ChangesResponse, Node, NodeId, NodesResponse};
use crate::client::view::{ClusterInfo, Patch, split};

/// An answer to `GET /nodes?changes=1`: a delta answer, or a list from a gateway that does not
/// know the parameter (it ignores it). Told apart by the body: a list has no `full`.
#[derive(Debug)]
pub(super) enum Answer {
    /// A delta answer, or every node marked `full`.
    Changes(ChangesResponse),
    /// A list: a gateway older than delta answers.
    List(NodesResponse),
}

impl<'de> Deserialize<'de> for Answer {
    /// Read as a delta answer, and as a list only if that fails. (An untagged enum would first
    /// copy the whole answer into a tree of its own, every key and string allocated, for every
    /// answer a watch takes.)
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Answer, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        match serde_json::from_str(raw.get()) {
            Ok(changes) => Ok(Answer::Changes(changes)),
            Err(_) => serde_json::from_str(raw.get())
                .map(Answer::List)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Whether the gateway in use sends delta answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Ask with `changes=1` and see (the start, and after a switch to another gateway).
    Ask,
    /// It answered a list to `changes=1`: ask for lists.
    Lists,
}

/// The answer cannot be applied to what is held (an event this crate does not know, or one
/// without what it needs): start over from a full answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Resync;

/// Every node (this one too, active and suspected) and the leader, as the delta answers so
/// far make them.
#[derive(Debug, Default, Clone)]
pub(super) struct Mirror {
    nodes: BTreeMap<NodeId, Node>,
    leader: Option<NodeId>,
    version: u64,
}

impl Mirror {
    /// Applies `answer`: a full one replaces everything, a delta is applied event by event.
    /// Returns what a delta changed, as a patch to the view the previous answer made (`None`
    /// for a full answer). On `Err` what is held is partly applied: ask for a full answer
    /// before using it.
    pub(super) fn apply(
        &mut self,
        answer: ChangesResponse,
        me: Option<NodeId>,
    ) -> Result<Option<Patch>, Resync> {
        let from = self.version;
        let mut touched = BTreeSet::new();
        if answer.full {
            self.nodes = answer.nodes.into_iter().map(|n| (n.node_id, n)).collect();
        } else {
            for change in answer.changes {
                match change.event {
                    ChangeKind::Joined
                    | ChangeKind::Updated
                    | ChangeKind::Suspected
                    | ChangeKind::Recovered => {
                        let node = change.node.ok_or(Resync)?;
                        touched.insert(node.node_id);
                        self.nodes.insert(node.node_id, node);
                    }
                    ChangeKind::Left | ChangeKind::Reaped => {
                        let id = change.node_id.ok_or(Resync)?;
                        touched.insert(id);
                        self.nodes.remove(&id);
                    }
                    ChangeKind::Leader => {}
                    _ => return Err(Resync),
                }
            }
        }
        self.leader = answer.leader;
        self.version = answer.registry_version;
        if answer.full {
            return Ok(None);
        }
        Ok(Some(Patch {
            from,
            version: self.version,
            nodes: touched
                .into_iter()
                .map(|id| (id, self.nodes.get(&id).cloned()))
                .collect(),
            leader: self.leader.and_then(|id| self.nodes.get(&id).cloned()),
            me,
        }))
    }

    /// The view it makes for node `me` (left out of the peers): active peers, leader and
    /// version, and the suspected peers.
    pub(super) fn view(&self, me: Option<NodeId>) -> (ClusterInfo, Vec<Node>) {
        let (nodes, suspected) = split(self.nodes.values().cloned().collect(), me);
        let leader = self.leader.and_then(|id| self.nodes.get(&id).cloned());
        let cluster = ClusterInfo {
            nodes,
            leader,
            registry_version: self.version,
        };
        (cluster, suspected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(id: u64, status: &str) -> serde_json::Value {
        json!({"node_id": id, "ip_address": "10.0.0.1", "port": 5000 + id, "capabilities": [],
               "status": status, "last_seen": 1.0, "join_timestamp": 1.0, "metadata": {}})
    }

    fn answer(value: serde_json::Value) -> Answer {
        serde_json::from_str(&value.to_string()).expect("an answer")
    }

    fn changes(value: serde_json::Value) -> ChangesResponse {
        match answer(value) {
            Answer::Changes(changes) => changes,
            Answer::List(_) => panic!("read as a list"),
        }
    }

    impl Mirror {
        fn apply_all(&mut self, answer: ChangesResponse) -> Result<Option<Patch>, Resync> {
            self.apply(answer, None)
        }
    }

    fn ids(mirror: &Mirror, me: Option<u64>) -> (Vec<u64>, Vec<u64>, Option<u64>) {
        let (cluster, suspected) = mirror.view(me);
        (
            cluster.nodes.iter().map(|n| n.node_id).collect(),
            suspected.iter().map(|n| n.node_id).collect(),
            cluster.leader.map(|n| n.node_id),
        )
    }

    #[test]
    fn a_list_and_a_delta_answer_are_told_apart_by_their_body() {
        let list = answer(json!({"nodes": [node(1, "active")], "registry_version": 3}));
        assert!(matches!(list, Answer::List(_)));
        let full = answer(
            json!({"full": true, "changes": [], "nodes": [node(1, "active")],
                                 "leader": 1, "registry_version": 3}),
        );
        assert!(matches!(full, Answer::Changes(ref c) if c.full));
        let delta = answer(json!({"full": false, "changes": [], "leader": null,
                                  "registry_version": 3}));
        assert!(matches!(delta, Answer::Changes(ref c) if !c.full));
        // Neither: an error, not a guess.
        assert!(serde_json::from_str::<Answer>(r#"{"registry_version": 3}"#).is_err());
        assert!(serde_json::from_str::<Answer>("[]").is_err());
    }

    #[test]
    fn events_apply_in_order_on_top_of_a_full_answer() {
        let mut mirror = Mirror::default();
        mirror
            .apply_all(changes(
                json!({"full": true, "nodes": [node(1, "active"), node(2, "active")],
                                  "leader": 1, "registry_version": 5}),
            ))
            .unwrap();
        assert_eq!(ids(&mirror, Some(1)), (vec![2], vec![], Some(1)));
        mirror
            .apply_all(changes(json!({"full": false, "changes": [
                {"event": "joined", "registry_version": 6, "node_id": 3, "node": node(3, "active")},
                {"event": "suspected", "registry_version": 7, "node_id": 2, "node": node(2, "suspected")},
                {"event": "left", "registry_version": 8, "node_id": 1},
                {"event": "leader", "registry_version": 8, "leader_id": null},
                {"event": "leader", "registry_version": 9, "leader_id": 3}
            ], "leader": 3, "registry_version": 9})))
            .unwrap();
        assert_eq!(ids(&mirror, Some(1)), (vec![3], vec![2], Some(3)));
        assert_eq!(mirror.view(None).0.registry_version, 9);
        mirror
            .apply_all(changes(json!({"full": false, "changes": [
                {"event": "recovered", "registry_version": 10, "node_id": 2, "node": node(2, "active")},
                {"event": "reaped", "registry_version": 11, "node_id": 3},
                {"event": "leader", "registry_version": 11, "leader_id": null}
            ], "leader": null, "registry_version": 11})))
            .unwrap();
        assert_eq!(ids(&mirror, None), (vec![2], vec![], None));
    }

    #[test]
    fn an_unknown_event_or_one_without_its_record_asks_for_a_full_answer() {
        let mut mirror = Mirror::default();
        let unknown = changes(json!({"full": false, "changes": [
            {"event": "renamed", "registry_version": 2, "node_id": 1}
        ], "leader": null, "registry_version": 2}));
        assert_eq!(mirror.apply(unknown, None), Err(Resync));
        let bare = changes(json!({"full": false, "changes": [
            {"event": "joined", "registry_version": 2, "node_id": 1}
        ], "leader": null, "registry_version": 2}));
        assert_eq!(mirror.apply(bare, None), Err(Resync));
    }

    /// A patch made from each delta answer, applied in place, leaves the view and reports the
    /// change exactly as describing the whole cluster again does: over a pseudo-random run of
    /// joins, updates, suspicions, recoveries, departures and leader changes (this node's own
    /// events among them, and several events of one node in one answer).
    #[test]
    fn a_patch_leaves_the_view_as_describing_the_whole_cluster_does() {
        use crate::client::view::ViewState;
        use std::time::{Duration, Instant};

        let me = Some(3);
        let epoch = Some("e".to_owned());
        let carry = Duration::from_secs(10);
        let now = Instant::now();
        let mut mirror = Mirror::default();
        let first: Vec<_> = (1..=8)
            .map(|id| node(id, if id % 4 == 0 { "suspected" } else { "active" }))
            .collect();
        mirror
            .apply_all(changes(json!({"full": true, "nodes": first, "leader": 2,
                                      "registry_version": 10})))
            .unwrap();
        let (cluster, suspected) = mirror.view(me);
        let mut patched = ViewState::default();
        patched.update(cluster, Some(suspected), epoch.clone(), false, carry, now);
        let mut whole = patched.clone();
        let mut seed: u64 = 7;
        let mut random = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut version = 10;
        for round in 0..300 {
            let mut events = Vec::new();
            for _ in 0..=random(3) {
                version += 1;
                let id = 1 + random(12);
                let known = mirror.nodes.get(&id).map(|n| n.status);
                let event = match (known, random(4)) {
                    (None, _) => json!({"event": "joined", "registry_version": version,
                                        "node_id": id, "node": node(id, "active")}),
                    (Some(_), 0) => json!({"event": "left", "registry_version": version,
                                           "node_id": id}),
                    (Some(status), 1) => {
                        let suspected = status == crate::api::NodeStatus::Suspected;
                        let (event, now) = match suspected {
                            true => ("recovered", "active"),
                            false => ("suspected", "suspected"),
                        };
                        json!({"event": event, "registry_version": version, "node_id": id,
                               "node": node(id, now)})
                    }
                    (Some(status), 2) => json!({"event": "leader", "registry_version": version,
                                                "leader_id": id, "status": format!("{status:?}")}),
                    (Some(status), _) => {
                        let status = match status {
                            crate::api::NodeStatus::Active => "active",
                            _ => "suspected",
                        };
                        let mut record = node(id, status);
                        record["metadata"] = json!({"round": round});
                        json!({"event": "updated", "registry_version": version, "node_id": id,
                               "node": record})
                    }
                };
                events.push(event);
            }
            let leader = events
                .iter()
                .rev()
                .find_map(|e| e["leader_id"].as_u64())
                .or(mirror.leader)
                .filter(|id| {
                    !events
                        .iter()
                        .any(|e| e["event"] == "left" && e["node_id"] == *id)
                });
            let answer = changes(json!({"full": false, "changes": events, "leader": leader,
                                        "registry_version": version}));
            let patch = mirror
                .apply(answer, me)
                .unwrap()
                .expect("a delta makes a patch");
            let by_patch = patched.patch(patch, &epoch, true, now);
            let (cluster, suspected) = mirror.view(me);
            let by_whole = whole.update(cluster, Some(suspected), epoch.clone(), false, carry, now);
            assert_eq!(by_patch, Ok(by_whole), "round {round}");
            assert_eq!(patched.shown(), whole.shown(), "round {round}");
            assert_eq!(patched.fresh_key(), whole.fresh_key(), "round {round}");
        }
        // A patch that does not start from the view held is refused, and changes nothing.
        let stale = crate::client::view::Patch {
            from: version - 1,
            version: version + 1,
            nodes: Vec::new(),
            leader: None,
            me,
        };
        let before = patched.shown().cloned();
        assert!(patched.patch(stale, &epoch, true, now).is_err());
        assert_eq!(patched.shown().cloned(), before);
    }
}
