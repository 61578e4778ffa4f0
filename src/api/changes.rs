//! The delta answer: `GET /nodes?index=V&changes=1`, the events since registry version `V`
//! instead of the whole list (or the whole list, marked `full`, when the gateway no longer
//! keeps the events since `V`).

use serde::{Deserialize, Serialize};

use super::{Node, NodeId};

/// Answer to `GET /nodes?changes=1`: the events since the `index` asked with, or, when
/// `full` is true, every node (active and suspected) to start over from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChangesResponse {
    /// True: `nodes` is every node and replaces what the client holds (the gateway no longer
    /// keeps the events since its index, or the index is from another gateway run, or none
    /// was given). False: apply `changes` in order.
    pub full: bool,
    /// The events since the index, oldest first (empty when `full`).
    #[serde(default)]
    pub changes: Vec<NodeChange>,
    /// With `full`: every node, active and suspected, by node id (empty otherwise).
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// The leader's id now, or null.
    pub leader: Option<NodeId>,
    /// Version of the registry this answer brings the client to (its next `index`).
    pub registry_version: u64,
}

/// One event of a delta answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeChange {
    /// What happened.
    pub event: ChangeKind,
    /// The registry version the event made.
    pub registry_version: u64,
    /// The node it is about (every event but `leader`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    /// `joined`, `updated`, `suspected`, `recovered`: the node's record as it is now (as
    /// `/nodes` lists it), which replaces the one the client holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// `leader`: the new leader's id, or null when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_id: Option<NodeId>,
}

/// What a [`NodeChange`] says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ChangeKind {
    /// A new node registered.
    Joined,
    /// A node registered again with another address, capabilities or metadata.
    Updated,
    /// A node was removed on request.
    Left,
    /// A silent node was removed after `node_timeout`.
    Reaped,
    /// A node was silent for `suspect_after`.
    Suspected,
    /// A suspected node was heard from again.
    Recovered,
    /// The leader changed.
    Leader,
    /// An event this version of the crate does not know (a newer gateway): start over from a
    /// full answer.
    #[serde(other)]
    Other,
}

impl ChangeKind {
    /// The wire name (`joined`, `left`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Joined => "joined",
            ChangeKind::Updated => "updated",
            ChangeKind::Left => "left",
            ChangeKind::Reaped => "reaped",
            ChangeKind::Suspected => "suspected",
            ChangeKind::Recovered => "recovered",
            ChangeKind::Leader => "leader",
            ChangeKind::Other => "other",
        }
    }
}
