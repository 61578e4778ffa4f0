//! How gateway-client prints: aligned tables, JSON, `/stats` in words, errors with a hint, and
//! every cell made safe for a terminal.

use cluster_gateway::api::Node;
use cluster_gateway::server::registry::unix_now;
use cluster_gateway::{ClientError, logger};
use serde::Serialize;
use serde_json::Value;

use crate::emit;

/// `/stats` for a person: seconds as durations (`uptime: 2h 5m`), times as ISO-8601 UTC.
pub(crate) fn stats_in_words(stats: &impl Serialize) -> Value {
    let mut value = serde_json::to_value(stats).expect("stats serialise");
    if let Value::Object(fields) = &mut value {
        for (key, field) in fields.iter_mut() {
            let Some(seconds) = field.as_f64() else {
                continue;
            };
            match key.as_str() {
                "uptime" | "suspect_after" | "node_timeout" | "heartbeat_interval" => {
                    *field = Value::String(duration(seconds));
                }
                "last_compaction" => *field = Value::String(logger::iso8601(seconds)),
                _ => {}
            }
        }
    }
    value
}

/// Seconds as "250ms", "30s", "5m 3s", "2h 5m", "3d 4h".
pub(crate) fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        return format!("{}ms", (seconds * 1000.0).round() as u64);
    }
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

pub(crate) fn print_json(value: &impl Serialize) {
    out!(
        "{}",
        serde_json::to_string_pretty(value).expect("answers serialise")
    );
}

/// Nodes as aligned columns, the leader marked; `wide` adds when each joined and its metadata.
pub(crate) fn print_nodes(nodes: &[Node], leader: Option<u64>, wide: bool) {
    if nodes.is_empty() {
        out!("(no nodes)");
        return;
    }
    let now = unix_now();
    let mut header = vec![
        "NODE",
        "ADDRESS",
        "STATUS",
        "ROLE",
        "LAST SEEN",
        "CAPABILITIES",
    ];
    if wide {
        header.extend(["JOINED", "METADATA"]);
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let mut row = vec![
                n.node_id.to_string(),
                shown(&n.address()),
                n.status.as_str().to_owned(),
                if Some(n.node_id) == leader {
                    "leader"
                } else {
                    "-"
                }
                .to_owned(),
                age(now - n.last_seen),
                shown(&n.capabilities.join(",")),
            ];
            if wide {
                row.push(age(now - n.join_timestamp));
                row.push(shown(
                    &n.metadata
                        .iter()
                        .map(|(k, v)| match v {
                            Value::String(s) => format!("{k}={s}"),
                            other => format!("{k}={other}"),
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                ));
            }
            row
        })
        .collect();
    let header: Vec<String> = header.into_iter().map(str::to_owned).collect();
    let mut widths = vec![0; header.len()];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out!("{}", line.join("  ").trim_end());
    }
}

pub(crate) fn print_leader(leader: Option<&Node>) {
    match leader {
        Some(n) => out!(
            "Leader: node {} at {} ({}, last seen {})",
            n.node_id,
            shown(&n.address()),
            n.status.as_str(),
            age(unix_now() - n.last_seen)
        ),
        None => out!("No leader currently registered."),
    }
}

/// A flat JSON object as `key: value` lines, keys aligned.
pub(crate) fn print_fields(value: &impl Serialize) {
    let Ok(Value::Object(fields)) = serde_json::to_value(value) else {
        return;
    };
    let width = fields.keys().map(String::len).max().unwrap_or(0) + 1;
    for (key, value) in fields {
        let text = match value {
            Value::String(s) => s,
            Value::Null => "none".to_owned(),
            other => other.to_string(),
        };
        out!("{:<width$} {text}", format!("{key}:"));
    }
}

/// `text` as printed: each control character escaped (`\n`, `\u{1b}`), so that whatever a
/// gateway sends, a row stays one row and the terminal is not driven.
pub(crate) fn shown(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Seconds as "12s ago", "3m ago", "5h ago", "2d ago".
pub(crate) fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A client error as a command-line user can act on it: the flags and variables to use,
/// not the library's calls.
pub(crate) fn in_words(error: &ClientError) -> String {
    match error {
        ClientError::Gateway {
            address,
            status: 401,
            message,
        } => format!(
            "gateway {address} refused the request (401 Unauthorized: no token, or one it does \
             not know): {message}\nhint: give the token with --token-file FILE or the \
             GATEWAY_TOKEN variable (--token works too, but others can read it in ps)"
        ),
        ClientError::Unreachable { reason, .. }
        | ClientError::GatewayUnavailable { reason, .. }
            if reason.contains("NotValidForName") =>
        {
            format!(
                "{error}\nhint: the gateway's TLS certificate does not name the host in the \
                 gateway's URL: use the name (or address) the certificate was made for"
            )
        }
        ClientError::Unreachable { reason, .. }
        | ClientError::GatewayUnavailable { reason, .. }
            if reason.to_ascii_lowercase().contains("certificate") =>
        {
            format!(
                "{error}\nhint: the gateway's TLS certificate is not signed by a CA this client \
                 trusts: give that CA's certificate with --ca-file FILE (or GATEWAY_CA_FILE)"
            )
        }
        other => other.to_string(),
    }
}
