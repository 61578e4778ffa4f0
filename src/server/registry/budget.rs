//! What a node costs the registry's memory budget (`--max-registry-bytes`): the most bytes its
//! record can take in a list, counted from the very shape the list is written in.

use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::value::RawValue;

use super::NodeInfo;
use crate::api::{NodeId, NodeStatus};

/// A node as the wire shows it, borrowed: what a record and a registration's cost are written
/// from, so the cost can never drift from the list.
pub(super) struct Wire<'a> {
    pub(super) node_id: NodeId,
    pub(super) ip_address: &'a str,
    pub(super) port: u16,
    pub(super) capabilities: &'a [String],
    pub(super) status: NodeStatus,
    pub(super) last_seen: f64,
    pub(super) join_timestamp: f64,
    pub(super) metadata: &'a RawValue,
}

impl Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Node", 8)?;
        s.serialize_field("node_id", &self.node_id)?;
        s.serialize_field("ip_address", self.ip_address)?;
        s.serialize_field("port", &self.port)?;
        s.serialize_field("capabilities", self.capabilities)?;
        s.serialize_field("status", &self.status)?;
        s.serialize_field("last_seen", &self.last_seen)?;
        s.serialize_field("join_timestamp", &self.join_timestamp)?;
        s.serialize_field("metadata", self.metadata)?;
        s.end()
    }
}

/// The float that takes the most characters as JSON (24): a record's cost is counted with it
/// for both timestamps.
const WIDEST_F64: f64 = -2.225_073_858_507_201_4e-308;

/// What a node costs the registry's budget (`--max-registry-bytes`): the most bytes its record
/// can take in a list (suspected, both timestamps at their widest, capabilities, address and
/// metadata as the wire writes them), plus the comma before it. A list's nodes never take more
/// than the registry accounts.
pub fn node_bytes(
    node_id: NodeId,
    ip_address: &str,
    port: u16,
    capabilities: &[String],
    metadata: &RawValue,
) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let wire = Wire {
        node_id,
        ip_address,
        port,
        capabilities,
        status: NodeStatus::Suspected,
        last_seen: WIDEST_F64,
        join_timestamp: WIDEST_F64,
        metadata,
    };
    let mut count = Count(1);
    serde_json::to_writer(&mut count, &wire).expect("a node record serialises");
    count.0
}

/// [`node_bytes`] of a stored node.
pub(super) fn record_bytes(node_id: NodeId, info: &NodeInfo) -> u64 {
    node_bytes(
        node_id,
        &info.ip_address,
        info.port,
        &info.capabilities,
        &info.metadata,
    )
}

/// The registry's memory budget (`--max-registry-bytes`) and what its nodes take of it, as
/// [`node_bytes`] counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// What the nodes take now.
    pub used: u64,
    /// The most they may take.
    pub max: u64,
}
