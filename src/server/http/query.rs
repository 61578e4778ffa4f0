//! Query strings: the parameters `/nodes` and `/leader` take, read strictly (an unknown or
//! repeated parameter is a 400), and percent-decoding.

use std::time::Duration;

use super::{Endpoint, Response};
use crate::api::{self, NodeId};
use crate::server::gateway::Filter;
use crate::server::long_polls;

/// True for `?pretty` (any value but `false` or `0`), as Consul and etcd read it; name and
/// value decoded as any others (`pr%65tty`, `fals%65`).
pub(super) fn wants_pretty(query: &str) -> bool {
    query_pairs(query).any(|(key, value)| {
        let decoded = |text: &str| percent_decode(text).unwrap_or_else(|| text.to_owned());
        decoded(key) == "pretty" && !matches!(decoded(value).as_str(), "false" | "0")
    })
}

/// What a `/nodes` or `/leader` query asks for.
#[derive(Debug, Default)]
pub(super) struct Query {
    pub(super) exclude: Option<NodeId>,
    pub(super) include_suspected: bool,
    pub(super) capability: Option<String>,
    /// `index`: the `registry_version` the client has seen (a long-poll).
    pub(super) index: Option<u64>,
    /// `wait`: how long a long-poll may wait for a change.
    pub(super) wait: Option<Duration>,
    /// `epoch`: the gateway run the client's `index` is from.
    pub(super) epoch: Option<String>,
    /// `changes=1`: the events since `index` rather than the list (see `changes.rs`).
    pub(super) changes: bool,
    /// Whether `status` was given at all (a delta answer covers every node).
    pub(super) status_given: bool,
    /// `stream=1`: the events as a stream that stays open (see `changes.rs`).
    pub(super) stream: bool,
}

impl Query {
    /// Parses `query`; only `/nodes` takes the filters (`node_id`, `status`, `capability`).
    pub(super) fn parse(query: &str, endpoint: Endpoint) -> Result<Query, Response> {
        let mut parsed = Query::default();
        let mut seen: Vec<String> = Vec::new();
        for (raw_key, value) in query_pairs(query) {
            // A name is decoded as a value is (`node%5Fid` is `node_id`, as a form decoder
            // and the original's have it): otherwise it would be ignored, or slip past the
            // check for a repeated key.
            let Some(key) = percent_decode(raw_key) else {
                if endpoint != Endpoint::Nodes {
                    continue; // Not one `/leader` takes: ignored, as any other.
                }
                return Err(Response::error(
                    400,
                    format!("Invalid query parameter name {raw_key:?}: bad percent-encoding"),
                ));
            };
            let key = key.as_str();
            // `/leader` takes only the long-poll keys, and ignores the rest as it always did.
            let poll = matches!(key, "index" | "wait" | "epoch");
            if endpoint != Endpoint::Nodes && !poll {
                continue;
            }
            if seen.iter().any(|k| k == key) {
                return Err(Response::error(
                    400,
                    format!("Repeated query parameter: {key} may be given once"),
                ));
            }
            seen.push(key.to_owned());
            let value = percent_decode(value).ok_or_else(|| {
                Response::error(400, format!("Invalid {key}: bad percent-encoding"))
            })?;
            match key {
                "node_id" => parsed.exclude = Some(api::node_id_from_query(&value)?),
                "status" => {
                    parsed.status_given = true;
                    parsed.include_suspected = match value.as_str() {
                        "all" => true,
                        "active" => false,
                        _ => {
                            return Err(Response::error(
                                400,
                                "Invalid status: must be \"active\" or \"all\"",
                            ));
                        }
                    }
                }
                "capability" => parsed.capability = Some(value),
                "index" => {
                    let index = value
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| value.parse::<u64>().ok())
                        .flatten()
                        .ok_or_else(|| {
                            Response::error(
                                400,
                                "Invalid index: must be a registry_version (a whole number)",
                            )
                        })?;
                    parsed.index = Some(index);
                }
                "wait" => {
                    let wait = long_polls::parse_wait(&value).ok_or_else(|| {
                        Response::error(
                            400,
                            "Invalid wait: must be a duration such as 30s, 1m, 500ms or a \
                             number of seconds",
                        )
                    })?;
                    parsed.wait = Some(wait);
                }
                "epoch" => parsed.epoch = Some(value),
                "changes" => {
                    parsed.changes = match value.as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(Response::error(
                                400,
                                "Invalid changes: must be 1 (the events since index) or 0",
                            ));
                        }
                    }
                }
                "stream" => {
                    parsed.stream = match value.as_str() {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => {
                            return Err(Response::error(
                                400,
                                "Invalid stream: must be 1 (the events as a stream) or 0",
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(parsed)
    }

    pub(super) fn filter(&self) -> Filter<'_> {
        Filter {
            exclude: self.exclude,
            include_suspected: self.include_suspected,
            capability: self.capability.as_deref(),
        }
    }
}

pub(super) fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Decodes a query value: `+` is a space and `%XX` a byte (so `%2B` is a `+`); `None` if an
/// escape is malformed (`%zz`, `%4`) or the bytes are not UTF-8. The `percent-encoding` crate
/// decodes, and passes a malformed escape through as text: that is checked first, so a typo
/// is refused rather than taken literally.
pub(super) fn percent_decode(text: &str) -> Option<String> {
    let well_formed = text.split('%').skip(1).all(|escape| {
        escape
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    // `+` first: an escaped `%2B` decodes to a `+` that must stay one.
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}
