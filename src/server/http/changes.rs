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
use std::sync::Arc;

use super::query::Query;
use super::{Request, Response, list_answer, with_index};
use crate::api::NodeId;
use crate::server::gateway::{Filter, Gateway, NodeList};
use crate::server::journal::Change;
use crate::server::registry::NodeRecord;
use crate::server::store::Delta;

/// The answer to `GET /nodes?changes=1` (with or without `index`).
pub(super) fn answer(
    gateway: &Gateway,
    request: &Request<'_>,
    query: &Query,
) -> Result<Response, Response> {
    refuse_filters(query)?;
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

/// The filters a delta answer (or stream) cannot take: a 400 for them.
fn refuse_filters(query: &Query) -> Result<(), Response> {
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
    Ok(())
}

/// What an event stream (`GET /nodes?changes=1&stream=1`) starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    /// The client's `index`, if it is of this gateway run: the first event holds the changes
    /// after it (or nothing is sent until there are some). `None`: the first event is the
    /// whole list, marked `"full": true`.
    pub index: Option<u64>,
    /// `node_id`: that node's own events are left out.
    pub exclude: Option<NodeId>,
}

/// What a stream request asks for, or the 4xx/503 it gets (as a delta answer would).
pub(super) fn stream_start(gateway: &Gateway, query: &Query) -> Result<StreamStart, Response> {
    if !query.changes {
        return Err(Response::error(
            400,
            "stream=1 needs changes=1: a stream sends the events since index",
        ));
    }
    if query.wait.is_some() {
        return Err(Response::error(
            400,
            "wait cannot be combined with stream=1: a stream stays open until the client \
             or the gateway ends it",
        ));
    }
    refuse_filters(query)?;
    gateway.readable()?;
    let same_run = query.epoch.as_deref().is_none_or(|e| e == gateway.epoch());
    Ok(StreamStart {
        index: query.index.filter(|_| same_run),
        exclude: query.exclude,
    })
}

/// True if any change of `delta` is `node`'s own (a stream that leaves `node` out needs an
/// event of its own).
pub fn mentions(delta: &Delta, node: NodeId) -> bool {
    delta.changes.iter().any(|(_, c)| c.node_id() == Some(node))
}

/// The body of a stream's full event: every node, suspected ones too, as a delta answer's
/// `"full": true` list (plain JSON), with the version it shows.
pub fn full_body(gateway: &Gateway, exclude: Option<NodeId>) -> (u64, Vec<u8>) {
    let request = Request {
        method: "GET",
        url: "/nodes",
        body: &[],
        headers: &[],
    };
    let list = gateway.list();
    let version = list.version;
    let answer = full_of(list, &request, exclude);
    let mut body = Vec::with_capacity(answer.body.len());
    answer.body.write_to(&mut body).expect("writing to a Vec");
    (version, body)
}

/// `{"full":false,"changes":[...],"leader":L,"registry_version":V}`.
fn events(gateway: &Gateway, delta: &Delta, exclude: Option<NodeId>) -> Response {
    let answer = Response {
        body: super::Body::owned(events_body(delta, exclude)),
        ..Response::json(&())
    };
    with_index(answer, gateway, delta.version)
}

/// The body of a delta answer (`{"full":false,...}`), or of one event of a stream.
pub fn events_body(delta: &Delta, exclude: Option<NodeId>) -> Vec<u8> {
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
    body
}

/// `{"full":true,"changes":[],"nodes":[...],"leader":L,"registry_version":V}`: every node,
/// suspected ones too, from the cached list (gzip when asked for).
fn full(gateway: &Gateway, request: &Request<'_>, exclude: Option<NodeId>) -> Response {
    let list = gateway.list();
    let version = list.version;
    with_index(full_of(list, request, exclude), gateway, version)
}

/// [`full`] from `list`, without the index headers.
fn full_of(list: Arc<NodeList>, request: &Request<'_>, exclude: Option<NodeId>) -> Response {
    let version = list.version;
    let mut suffix = br#","leader":"#.to_vec();
    write_id(&mut suffix, list.leader);
    write!(suffix, r#","registry_version":{version}}}"#).expect("writing to a Vec");
    let filter = Filter {
        exclude,
        include_suspected: true,
        capability: None,
    };
    list_answer(
        request,
        list,
        br#"{"full":true,"changes":[],"nodes":"#,
        filter,
        &suffix,
    )
}

fn write_id(body: &mut Vec<u8>, id: Option<NodeId>) {
    match id {
        Some(id) => write!(body, "{id}").expect("writing to a Vec"),
        None => body.extend_from_slice(b"null"),
    }
}
