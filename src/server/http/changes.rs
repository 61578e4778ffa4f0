//! Delta answers: `GET /nodes?index=V&changes=1`, the events since registry version `V` read
//! from the change journal (O(changes), whatever the cluster's size), or the whole list marked
//! `"full": true` when the events since `V` are not all kept.
//!
//! A delta answer covers every node, suspected ones included: a suspicion and a recovery are
//! events of their own. So `status=active` is refused (a 400), and so is `capability`: a node
//! that stops offering a capability would have to be told as a departure, which the journal
//! does not know; a watcher filters the records it is sent. `node_id=N` leaves node N's own
//! events out (not the leader's). The answer is plain JSON (a few hundred bytes a change); the
//! full list takes gzip as `/nodes` does.

use std::collections::HashMap;
use std::io::Write;

use super::query::Query;
use super::{Request, Response, list_answer, with_index};
use crate::api::NodeId;
use crate::server::gateway::{Filter, Gateway};
use crate::server::journal::Change;
use crate::server::registry::NodeRecord;
use crate::server::store::Delta;

/// The answer to `GET /nodes?changes=1` (with or without `index`).
pub(super) fn answer(
    gateway: &Gateway,
    request: &Request<'_>,
    query: &Query,
) -> Result<Response, Response> {
    if query.capability.is_some() {
        return Err(Response::error(
            400,
            "capability cannot be combined with changes=1: the events cover every node, \
             filter their records instead",
        ));
    }
    if query.status_given && !query.include_suspected {
        return Err(Response::error(
            400,
            "status=active cannot be combined with changes=1: the events cover every node, \
             suspicions included (leave status out, or send status=all)",
        ));
    }
    gateway.readable()?;
    // Versions mean something within one gateway run only: another run's index starts over.
    let same_run = query.epoch.as_deref().is_none_or(|e| e == gateway.epoch());
    let delta = query
        .index
        .filter(|_| same_run)
        .and_then(|index| gateway.delta(index).filter(|d| d.version >= index));
    match delta {
        Some(delta) => Ok(events(gateway, &delta, query.exclude)),
        None => Ok(full(gateway, request, query.exclude)),
    }
}

/// `{"full":false,"changes":[...],"leader":L,"registry_version":V}`.
fn events(gateway: &Gateway, delta: &Delta, exclude: Option<NodeId>) -> Response {
    let records: HashMap<NodeId, &NodeRecord> =
        delta.records.iter().map(|r| (r.node_id, r)).collect();
    let mut body = Vec::with_capacity(64 + 320 * delta.changes.len());
    body.extend_from_slice(br#"{"full":false,"changes":["#);
    let mut first = true;
    for &(version, change) in &delta.changes {
        if change.node_id().is_some() && change.node_id() == exclude {
            continue;
        }
        let (name, record) = match change {
            Change::Joined(id) => ("joined", Some(id)),
            Change::Updated(id) => ("updated", Some(id)),
            Change::Suspected(id) => ("suspected", Some(id)),
            Change::Recovered(id) => ("recovered", Some(id)),
            Change::Left(_) => ("left", None),
            Change::Reaped(_) => ("reaped", None),
            Change::Leader(_) => ("leader", None),
        };
        // A node that changed and then went is not registered any more: its later `left` or
        // `reaped` (in this delta too) is what the client needs to know.
        let record = match record {
            Some(id) => match records.get(&id) {
                Some(record) => Some(*record),
                None => continue,
            },
            None => None,
        };
        if !first {
            body.push(b',');
        }
        first = false;
        write!(body, r#"{{"event":"{name}","registry_version":{version}"#)
            .expect("writing to a Vec");
        match (change, record) {
            (Change::Leader(leader), _) => {
                body.extend_from_slice(br#","leader_id":"#);
                write_id(&mut body, leader);
            }
            (_, Some(record)) => {
                write!(body, r#","node_id":{},"node":"#, record.node_id).expect("a Vec");
                serde_json::to_writer(&mut body, record).expect("a node record serialises");
            }
            (change, None) => {
                let id = change.node_id().unwrap_or_default();
                write!(body, r#","node_id":{id}"#).expect("writing to a Vec");
            }
        }
        body.push(b'}');
    }
    body.extend_from_slice(br#"],"leader":"#);
    write_id(&mut body, delta.leader);
    write!(body, r#","registry_version":{}}}"#, delta.version).expect("writing to a Vec");
    let answer = Response {
        body: super::Body::owned(body),
        ..Response::json(&())
    };
    with_index(answer, gateway, delta.version)
}

/// `{"full":true,"changes":[],"nodes":[...],"leader":L,"registry_version":V}`: every node,
/// suspected ones too, from the cached list (gzip when asked for).
fn full(gateway: &Gateway, request: &Request<'_>, exclude: Option<NodeId>) -> Response {
    let list = gateway.list();
    let version = list.version;
    let mut suffix = br#","leader":"#.to_vec();
    write_id(&mut suffix, list.leader);
    write!(suffix, r#","registry_version":{version}}}"#).expect("writing to a Vec");
    let filter = Filter {
        exclude,
        include_suspected: true,
        capability: None,
    };
    let answer = list_answer(
        request,
        list,
        br#"{"full":true,"changes":[],"nodes":"#,
        filter,
        &suffix,
    );
    with_index(answer, gateway, version)
}

fn write_id(body: &mut Vec<u8>, id: Option<NodeId>) {
    match id {
        Some(id) => write!(body, "{id}").expect("writing to a Vec"),
        None => body.extend_from_slice(b"null"),
    }
}
