//! etcd v3's JSON gateway (`/v3/...`), spoken with ureq, blocking.
//!
//! What the gateway's JSON looks like, and what this module hides from the store:
//! - keys and values are standard base64 ([`b64`], [`unb64`]);
//! - 64-bit numbers (revisions, lease ids, TTLs, counts) travel as strings;
//! - a field at its default value is left out (`"succeeded"` when false, a PUT event's
//!   `"type"`, a lease TTL of 0, an empty `"kvs"`), so every field is read as optional;
//! - errors come as a non-2xx status with a JSON body (`error`/`message`), so status-as-error is
//!   off and the body is read;
//! - a lease keepalive or a watch is a gRPC stream: one POST carries any number of requests as
//!   JSON objects one after the other, and the answer is one JSON object a line.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// How long one unary request to etcd may take. A write that takes longer answers 503: etcd
/// without quorum times proposals out only after several seconds, and a node's own request
/// has a deadline of its own.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a watch stream may stay silent before it is re-established. A silent watch over a
/// busy registry is noticed far sooner by the freshness probe (`fresh.rs`), which starts a new
/// watch; this bounds how long the abandoned one's thread stays blocked reading.
pub const WATCH_IDLE: Duration = Duration::from_secs(60);

/// How long the freshness probe's read may take: it runs every second.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Lease renewals in one keepalive POST: each is at most 28 bytes (`{"ID":<19 digits>}` and a
/// newline), and etcd reads the first 512 bytes of the body (see [`Etcd::keepalive`]).
pub const KEEPALIVES_PER_POST: usize = 16;

/// The etcd members, tried in turn, and the HTTP agents that talk to them.
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    /// The member tried first: the last one that answered.
    current: AtomicUsize,
    agent: ureq::Agent,
    streams: ureq::Agent,
    /// The freshness probe's agent: a short deadline.
    probes: ureq::Agent,
}

/// A key and value as etcd keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key, decoded.
    pub key: Vec<u8>,
    /// The value, decoded (empty for a deletion).
    pub value: Vec<u8>,
    /// Revision that created the key (0: absent).
    pub create_revision: i64,
    /// Revision of the last change to the key.
    pub mod_revision: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
}

/// One change a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key was written.
    Put(Kv),
    /// The key was deleted (by a request or its lease expiring), at `Kv::mod_revision`.
    Delete(Kv),
}

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchLine {
    /// Changes, oldest first, and the revision the stream has reached.
    Events(Vec<Change>, i64),
    /// The revision asked for was compacted: read afresh from a range.
    Compacted(i64),
    /// The watch was created, or the server reports progress.
    Progress(i64),
    /// The watch was cancelled, or an error came down the stream.
    Ended(String),
}

/// Connections to etcd kept open between requests (ureq keeps 3 a host by default: with more
/// requests in flight, the others connected afresh each time).
const MAX_IDLE: usize = 64;

impl Etcd {
    /// A client for `endpoints` (`http://host:port`).
    pub fn new(endpoints: Vec<String>) -> Etcd {
        // Every worker may have a request to etcd in flight: each keeps its connection.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .max_idle_connections(MAX_IDLE)
            .max_idle_connections_per_host(MAX_IDLE)
            .proxy(None)
            .build()
            .into();
        let streams = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(REQUEST_TIMEOUT))
            .timeout_recv_response(Some(REQUEST_TIMEOUT))
            .timeout_per_read(Some(WATCH_IDLE))
            .proxy(None)
            .build()
            .into();
        let probes = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(PROBE_TIMEOUT))
            .proxy(None)
            .build()
            .into();
        Etcd {
            endpoints,
            current: AtomicUsize::new(0),
            agent,
            streams,
            probes,
        }
    }

    /// The endpoints, for messages.
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    /// POSTs `body` to `path` and returns the JSON answer. A member that cannot be reached is
    /// skipped for the next one (the request was not sent); any other failure is returned, since
    /// a write that timed out may yet be applied and must not be sent twice.
    pub fn call(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call_with(&self.agent, path, body)
    }

    /// [`Etcd::call`] through `agent`.
    fn call_with(&self, agent: &ureq::Agent, path: &str, body: &Value) -> Result<Value, String> {
        let (url, mut response) = self.send_with(agent, path, &body.to_string())?;
        let status = response.status().as_u16();
        let answer = response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| format!("{url}: reading the answer: {e}"))?;
        let value: Value = serde_json::from_slice(&answer)
            .map_err(|e| format!("{url}: answer is not JSON: {e}"))?;
        if status != 200 {
            return Err(format!("{url}: {status}: {}", error_message(&value)));
        }
        Ok(value)
    }

    /// POSTs `body` to `path` at the members in turn, from the one that answered last: a member
    /// that cannot be reached is skipped for the next one (the request was not sent); any other
    /// failure is returned, and the next call starts at the next member. The URL used, and the
    /// answer, whatever its status.
    fn send(
        &self,
        path: &str,
        body: &str,
    ) -> Result<(String, ureq::http::Response<ureq::Body>), String> {
        self.send_with(&self.agent, path, body)
    }

    /// [`Etcd::send`] through `agent`.
    fn send_with(
        &self,
        agent: &ureq::Agent,
        path: &str,
        body: &str,
    ) -> Result<(String, ureq::http::Response<ureq::Body>), String> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..self.endpoints.len() {
            let at = (start + i) % self.endpoints.len();
            let url = format!("{}{path}", self.endpoints[at]);
            match agent.post(&url).content_type("application/json").send(body) {
                Ok(response) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok((url, response));
                }
                Err(e) if not_sent(&e) => last = format!("{url}: {e}"),
                Err(e) => {
                    self.current
                        .store((at + 1) % self.endpoints.len(), Ordering::Relaxed);
                    return Err(format!("{url}: {e}"));
                }
            }
        }
        Err(last)
    }

    /// Every key under `prefix` and the revision they were read at (a linearizable read).
    pub fn range_prefix(&self, prefix: &[u8]) -> Result<(Vec<Kv>, i64), String> {
        let answer = self.call(
            "/v3/kv/range",
            &json!({"key": b64(prefix), "range_end": b64(&prefix_end(prefix))}),
        )?;
        let kvs = answer["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().map(kv).collect::<Result<_, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok((kvs, revision(&answer)))
    }

    /// How many keys are under `prefix`, and etcd's revision: the freshness probe's cheap
    /// read (linearizable, so a member cut off from its quorum does not answer it), with a
    /// deadline of [`PROBE_TIMEOUT`].
    pub fn count_prefix(&self, prefix: &[u8]) -> Result<(i64, i64), String> {
        let answer = self.call_with(
            &self.probes,
            "/v3/kv/range",
            &json!({"key": b64(prefix), "range_end": b64(&prefix_end(prefix)), "count_only": true}),
        )?;
        Ok((int(&answer["count"]).unwrap_or(0), revision(&answer)))
    }

    /// The keys under `prefix` changed at or after revision `from` (keys only), how many keys
    /// are under it, and etcd's revision. Costs etcd a pass over the keys: the probe asks it
    /// only when etcd's revision is past the copy's, which writes outside the prefix also do.
    pub fn changed_since(&self, prefix: &[u8], from: i64) -> Result<(Vec<Kv>, i64, i64), String> {
        let answer = self.call_with(
            &self.probes,
            "/v3/kv/range",
            &json!({
                "key": b64(prefix),
                "range_end": b64(&prefix_end(prefix)),
                "keys_only": true,
                "min_mod_revision": from.to_string(),
            }),
        )?;
        let kvs = answer["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().map(kv).collect::<Result<_, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok((kvs, int(&answer["count"]).unwrap_or(0), revision(&answer)))
    }

    /// Grants a lease of `ttl` seconds; its id.
    pub fn grant(&self, ttl: u64) -> Result<i64, String> {
        let answer = self.call("/v3/lease/grant", &json!({"TTL": ttl.to_string()}))?;
        int(&answer["ID"])
            .filter(|&id| id != 0)
            .ok_or_else(|| format!("lease grant answered {answer}"))
    }

    /// Revokes a lease, deleting the keys attached to it. A lease that is gone already is fine.
    pub fn revoke(&self, lease: i64) -> Result<(), String> {
        match self.call("/v3/lease/revoke", &json!({"ID": lease.to_string()})) {
            Err(e) if e.contains("lease not found") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Renews every lease in `leases`, [`KEEPALIVES_PER_POST`] to a POST (each POST one
    /// keepalive stream carrying several). Returns the leases etcd no longer knows (expired or
    /// revoked).
    ///
    /// etcd's gateway answers a stream over HTTP/1.1, which is not full duplex: once it starts
    /// answering, it reads no more of the request body. It reliably reads the first 512 bytes
    /// (its JSON decoder's first read), so a POST carries at most that much, and a lease left
    /// unanswered is sent again in the next POST.
    pub fn keepalive(&self, leases: &[i64]) -> Result<Vec<i64>, String> {
        let mut gone = Vec::new();
        let mut left: Vec<i64> = leases.to_vec();
        while !left.is_empty() {
            let take = left.len().min(KEEPALIVES_PER_POST);
            let (answered, expired) = self.keepalive_post(&left[..take])?;
            if answered.is_empty() {
                return Err("etcd answered none of the lease renewals it was sent".to_owned());
            }
            gone.extend(expired);
            left.retain(|lease| !answered.contains(lease));
        }
        Ok(gone)
    }

    /// One keepalive POST: the leases answered, and those of them etcd no longer knows.
    fn keepalive_post(&self, leases: &[i64]) -> Result<(HashSet<i64>, Vec<i64>), String> {
        let mut body = String::with_capacity(leases.len() * 28);
        for lease in leases {
            // A number, not a string: shorter, so more fit the part etcd reads.
            body.push_str(&format!("{{\"ID\":{lease}}}\n"));
        }
        let (url, mut response) = self.send("/v3/lease/keepalive", &body)?;
        let status = response.status().as_u16();
        let reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut answered = HashSet::new();
        let mut gone = Vec::new();
        for line in BufReader::new(reader).lines() {
            let line = line.map_err(|e| format!("{url}: reading the answer: {e}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line)
                .map_err(|e| format!("{url}: answer is not JSON: {e}"))?;
            let Some(result) = value.get("result") else {
                return Err(format!("{url}: {status}: {}", error_message(&value)));
            };
            let Some(id) = int(&result["ID"]) else {
                continue;
            };
            answered.insert(id);
            if int(&result["TTL"]).unwrap_or(0) <= 0 {
                gone.push(id);
            }
        }
        Ok((answered, gone))
    }

    /// Opens a watch on every key under `prefix` from revision `from`; the stream's lines are
    /// read with [`next_line`].
    pub fn watch(&self, prefix: &[u8], from: i64) -> Result<impl BufRead + use<>, String> {
        let body = json!({"create_request": {
            "key": b64(prefix),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": from.to_string(),
        }})
        .to_string();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for i in 0..self.endpoints.len() {
            let at = (start + i) % self.endpoints.len();
            let url = format!("{}/v3/watch", self.endpoints[at]);
            match self
                .streams
                .post(&url)
                .content_type("application/json")
                .send(&body)
            {
                Ok(response) if response.status() == 200 => {
                    let reader = response
                        .into_body()
                        .into_with_config()
                        .limit(u64::MAX)
                        .reader();
                    return Ok(BufReader::new(reader));
                }
                Ok(response) => last = format!("{url}: {}", response.status()),
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        self.current
            .store((start + 1) % self.endpoints.len(), Ordering::Relaxed);
        Err(last)
    }
}

/// Reads the next line of a watch stream; `Err` when the stream broke or ended.
pub fn next_line(stream: &mut impl BufRead) -> Result<WatchLine, String> {
    let mut line = String::new();
    loop {
        line.clear();
        match stream.read_line(&mut line) {
            Ok(0) => return Err("the watch stream ended".to_owned()),
            Ok(_) if line.trim().is_empty() => continue,
            Ok(_) => break,
            Err(e) => return Err(format!("the watch stream broke: {e}")),
        }
    }
    let value: Value =
        serde_json::from_str(&line).map_err(|e| format!("a watch line is not JSON: {e}"))?;
    let Some(result) = value.get("result") else {
        return Ok(WatchLine::Ended(error_message(&value)));
    };
    if let Some(compacted) = int(&result["compact_revision"]).filter(|&r| r > 0) {
        return Ok(WatchLine::Compacted(compacted));
    }
    if result["canceled"].as_bool() == Some(true) {
        let reason = result["cancel_reason"]
            .as_str()
            .unwrap_or("no reason given");
        return Ok(WatchLine::Ended(format!(
            "the watch was cancelled: {reason}"
        )));
    }
    let at = revision(result);
    let Some(events) = result["events"].as_array() else {
        return Ok(WatchLine::Progress(at));
    };
    let changes = events
        .iter()
        .map(|event| {
            let kv = kv(&event["kv"])?;
            Ok(match event["type"].as_str() {
                Some("DELETE") => Change::Delete(kv),
                _ => Change::Put(kv),
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(WatchLine::Events(changes, at))
}

/// One compare of a transaction.
pub fn compare(key: &[u8], target: &str, result: &str, value: i64) -> Value {
    let field = match target {
        "MOD" => "mod_revision",
        "CREATE" => "create_revision",
        _ => "version",
    };
    json!({"key": b64(key), "target": target, "result": result, field: value.to_string()})
}

/// A compare over every key in `[from, to)`: true when each key in it (or none) passes.
pub fn compare_range(from: &[u8], to: &[u8], target: &str, result: &str, value: i64) -> Value {
    let mut c = compare(from, target, result, value);
    c["range_end"] = Value::String(b64(to));
    c
}

/// A compare that holds while `key` holds `value` (false while it is absent).
pub fn compare_value(key: &[u8], value: &[u8]) -> Value {
    json!({"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)})
}

/// A transaction inside a transaction: `success` runs if `compare` holds at that point.
pub fn nested(compare: Vec<Value>, success: Vec<Value>) -> Value {
    json!({"request_txn": {"compare": compare, "success": success}})
}

/// A put for a transaction.
pub fn put(key: &[u8], value: &[u8], lease: i64) -> Value {
    let mut put = json!({"key": b64(key), "value": b64(value)});
    if lease != 0 {
        put["lease"] = Value::String(lease.to_string());
    }
    json!({"request_put": put})
}

/// A delete of one key for a transaction.
pub fn delete(key: &[u8]) -> Value {
    json!({"request_delete_range": {"key": b64(key)}})
}

/// A range of one key for a transaction.
pub fn get(key: &[u8]) -> Value {
    json!({"request_range": {"key": b64(key)}})
}

/// A count of the keys in `[from, to)` for a transaction.
pub fn count(from: &[u8], to: &[u8]) -> Value {
    json!({"request_range": {"key": b64(from), "range_end": b64(to), "count_only": true}})
}

/// What a transaction answered: whether its compares held, its revision, and the answers of
/// the branch that ran.
#[derive(Debug)]
pub struct TxnAnswer {
    /// True if every compare held and the success branch ran.
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: i64,
    /// The answers, in order: for a range, its keys and count.
    pub ranges: Vec<(Vec<Kv>, i64)>,
}

impl Etcd {
    /// Runs a transaction.
    pub fn txn(
        &self,
        compare: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> Result<TxnAnswer, String> {
        let answer = self.call(
            "/v3/kv/txn",
            &json!({"compare": compare, "success": success, "failure": failure}),
        )?;
        let mut ranges = Vec::new();
        for response in answer["responses"].as_array().into_iter().flatten() {
            if let Some(range) = response.get("response_range") {
                let kvs = range["kvs"]
                    .as_array()
                    .map(|kvs| kvs.iter().map(kv).collect::<Result<Vec<_>, _>>())
                    .transpose()?
                    .unwrap_or_default();
                ranges.push((kvs, int(&range["count"]).unwrap_or(0)));
            }
        }
        Ok(TxnAnswer {
            succeeded: answer["succeeded"].as_bool().unwrap_or(false),
            revision: revision(&answer),
            ranges,
        })
    }
}

/// True if a request failed before it reached etcd, so another member may be asked.
fn not_sent(e: &ureq::Error) -> bool {
    use std::io::ErrorKind::*;
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Io(e) => matches!(
            e.kind(),
            ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
        ),
        _ => false,
    }
}

/// The message of an etcd error body (`{"error": .., "message": .., "code": ..}`).
fn error_message(value: &Value) -> String {
    let inner = value
        .get("error")
        .filter(|e| e.is_object())
        .unwrap_or(value);
    inner["message"]
        .as_str()
        .or_else(|| inner["error"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

fn revision(answer: &Value) -> i64 {
    int(&answer["header"]["revision"]).unwrap_or(0)
}

/// A 64-bit integer sent as a string (or, leniently, as a number); `None` when absent.
pub fn int(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn kv(value: &Value) -> Result<Kv, String> {
    let bytes = |field: &str| match value[field].as_str() {
        Some(text) => unb64(text).ok_or_else(|| format!("{field} is not base64: {text:?}")),
        None => Ok(Vec::new()),
    };
    Ok(Kv {
        key: bytes("key")?,
        value: bytes("value")?,
        create_revision: int(&value["create_revision"]).unwrap_or(0),
        mod_revision: int(&value["mod_revision"]).unwrap_or(0),
        lease: int(&value["lease"]).unwrap_or(0),
    })
}

/// The end of the range of every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4), as etcd's gateway writes bytes.
pub fn b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` if `text` is not base64.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_standard_alphabet() {
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foob"), "Zm9vYg==");
        assert_eq!(b64(&[0xfb, 0xff]), "+/8=");
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(unb64(&b64(&bytes)).as_deref(), Some(&bytes[..]));
        }
        assert_eq!(unb64("Zm9vYg").as_deref(), Some(&b"foob"[..]));
        assert_eq!(unb64("Zm9v!A=="), None);
        assert_eq!(unb64("Z"), None);
    }

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn watch_lines_with_default_fields_left_out() {
        let mut stream = std::io::Cursor::new(
            concat!(
                r#"{"result":{"header":{"revision":"7"},"created":true}}"#, "\n",
                r#"{"result":{"header":{"revision":"9"},"events":[{"kv":{"key":"YQ==","create_revision":"8","mod_revision":"9","version":"2","value":"Yg==","lease":"12"}},{"type":"DELETE","kv":{"key":"Yw==","mod_revision":"9"}}]}}"#, "\n",
                r#"{"result":{"header":{"revision":"20"},"compact_revision":"15","canceled":true}}"#, "\n",
            )
            .as_bytes(),
        );
        assert_eq!(next_line(&mut stream), Ok(WatchLine::Progress(7)));
        let put = Kv {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            create_revision: 8,
            mod_revision: 9,
            lease: 12,
        };
        let deleted = Kv {
            key: b"c".to_vec(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: 9,
            lease: 0,
        };
        assert_eq!(
            next_line(&mut stream),
            Ok(WatchLine::Events(
                vec![Change::Put(put), Change::Delete(deleted)],
                9
            ))
        );
        assert_eq!(next_line(&mut stream), Ok(WatchLine::Compacted(15)));
        assert!(next_line(&mut stream).is_err());
    }
}
