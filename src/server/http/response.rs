//! What a handler answers: [`Response`], with a [`Body`] made of pieces (some borrowed from the
//! cached node list) so a list is never copied into an answer, and `?pretty` indentation, made
//! as the answer is written.

use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::Serialize;

use crate::api::{ErrorBody, Invalid};
use crate::server::gateway::{NodeList, Part, Unsettled};
use crate::server::registry::{RegistryError, unix_now};
use crate::server::store::StoreError;

/// The content type of every answer but the dashboard.
pub const JSON: &str = "application/json";

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type`: JSON, except for the dashboard.
    pub content_type: &'static str,
    /// Other headers: `ETag`, `Vary`, `Content-Encoding`, `Preference-Applied`, and `Allow`
    /// on a 405.
    pub headers: Vec<(&'static str, String)>,
    /// JSON (or gzip-compressed JSON), in pieces.
    pub body: Body,
    /// A write's answer made before the write is durable: it is sent only once this is
    /// settled, and replaced by the error it gives if it gives one (see [`super::settled`]).
    pub after: Option<Box<Unsettled>>,
}

/// A JSON body made of pieces, some of them borrowed from a cached node list.
#[derive(Debug)]
pub struct Body {
    list: Option<Arc<NodeList>>,
    parts: Vec<Part>,
    /// Reading position: which part, and how far into it.
    at: (usize, usize),
    /// `?pretty`: the pieces are indented as they are written (never copied whole first).
    pretty: Option<Box<Streaming>>,
}

/// The state of a `?pretty` body being read: the indenter, and what it gave that was not read
/// yet.
#[derive(Debug, Default)]
struct Streaming {
    indenter: Indenter,
    out: Vec<u8>,
    out_at: usize,
    finished: bool,
}

/// How many bytes of the compact text are indented at a time when a pretty body is written.
const PRETTY_STEP: usize = 8 * 1024;

impl Body {
    pub(super) fn owned(bytes: Vec<u8>) -> Body {
        Body {
            list: None,
            parts: vec![Part::Owned(bytes)],
            at: (0, 0),
            pretty: None,
        }
    }

    fn new(list: Option<Arc<NodeList>>, parts: Vec<Part>) -> Body {
        Body {
            list,
            parts,
            at: (0, 0),
            pretty: None,
        }
    }

    /// Bytes this body holds of its own, beyond the cached list it borrows from (a measure for
    /// tests: `?pretty` must not copy the list).
    pub fn owned_bytes(&self) -> usize {
        let parts: usize = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Owned(bytes) => bytes.capacity(),
                _ => 0,
            })
            .sum();
        parts + self.pretty.as_ref().map_or(0, |p| p.out.capacity())
    }

    pub(super) fn part<'s>(&'s self, part: &'s Part) -> &'s [u8] {
        match part {
            Part::Static(bytes) => bytes,
            Part::Owned(bytes) => bytes,
            Part::Cached { chunk, range } => self
                .list
                .as_ref()
                .expect("cached parts come with their list")
                .bytes(*chunk, range.clone()),
            Part::Compressed { chunk, variant } => self
                .list
                .as_ref()
                .expect("cached parts come with their list")
                .compressed(*chunk, *variant),
        }
    }

    /// The compact length in bytes.
    fn compact_len(&self) -> usize {
        self.parts.iter().map(|p| self.part(p).len()).sum()
    }

    /// Length in bytes (for `?pretty`, one pass of the indenter that counts what it would
    /// write).
    pub fn len(&self) -> usize {
        if self.pretty.is_none() {
            return self.compact_len();
        }
        let mut indenter = Indenter::default();
        let mut count = Count(0);
        for part in &self.parts {
            for &b in self.part(part) {
                indenter.feed(b, &mut count);
            }
        }
        indenter.finish(&mut count);
        count.0
    }

    /// True if the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the whole body to `out`, piece by piece (`?pretty`: indented a step at a time).
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        if self.pretty.is_none() {
            return self
                .parts
                .iter()
                .try_for_each(|p| out.write_all(self.part(p)));
        }
        let mut indenter = Indenter::default();
        let mut buffer = Vec::with_capacity(PRETTY_STEP * 2);
        for part in &self.parts {
            for step in self.part(part).chunks(PRETTY_STEP) {
                for &b in step {
                    indenter.feed(b, &mut buffer);
                }
                if buffer.len() >= PRETTY_STEP {
                    out.write_all(&buffer)?;
                    buffer.clear();
                }
            }
        }
        indenter.finish(&mut buffer);
        out.write_all(&buffer)
    }

    /// The whole body as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len());
        self.write_to(&mut bytes).expect("writing to a Vec");
        bytes
    }

    /// The next compact bytes, up to `max`, moving the reading position past them.
    fn next_compact(&mut self, buf: &mut [u8]) -> usize {
        let mut filled = 0;
        while filled < buf.len()
            && let Some(part) = self.parts.get(self.at.0)
        {
            let rest = &self.part(part)[self.at.1..];
            let n = rest.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&rest[..n]);
            filled += n;
            if n == rest.len() {
                self.at = (self.at.0 + 1, 0);
            } else {
                self.at.1 += n;
            }
        }
        filled
    }
}

impl Read for Body {
    /// Fills `buf` from as many parts as fit (a list answer has hundreds of small ones);
    /// `?pretty` indents a step of the compact text at a time.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut pretty) = self.pretty.take() else {
            return Ok(self.next_compact(buf));
        };
        let mut filled = 0;
        let mut step = [0; 1024];
        while filled < buf.len() {
            if pretty.out_at == pretty.out.len() {
                pretty.out.clear();
                pretty.out_at = 0;
                if pretty.finished {
                    break;
                }
                let n = self.next_compact(&mut step);
                let Streaming {
                    indenter,
                    out,
                    finished,
                    ..
                } = &mut *pretty;
                for &b in &step[..n] {
                    indenter.feed(b, out);
                }
                if n == 0 {
                    indenter.finish(out);
                    *finished = true;
                }
                continue;
            }
            let rest = &pretty.out[pretty.out_at..];
            let n = rest.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&rest[..n]);
            filled += n;
            pretty.out_at += n;
        }
        self.pretty = Some(pretty);
        Ok(filled)
    }
}

impl Response {
    pub(super) fn json<T: Serialize>(value: &T) -> Response {
        let bytes = serde_json::to_vec(value).expect("answers serialise");
        Response {
            status: 200,
            content_type: JSON,
            headers: Vec::new(),
            body: Body::owned(bytes),
            after: None,
        }
    }

    /// A `{"error", "status_code", "timestamp"}` answer.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        let body = ErrorBody {
            error: message.into(),
            status_code: status,
            timestamp: unix_now(),
        };
        Response {
            status,
            ..Response::json(&body)
        }
    }

    pub(super) fn list(list: Arc<NodeList>, parts: Vec<Part>) -> Response {
        Response {
            status: 200,
            content_type: JSON,
            headers: Vec::new(),
            body: Body::new(Some(list), parts),
            after: None,
        }
    }

    /// `304 Not Modified`: no body.
    pub(super) fn not_modified(etag: String) -> Response {
        Response {
            status: 304,
            headers: vec![("ETag", etag)],
            ..Response::json(&())
        }
        .without_body()
    }

    pub(super) fn without_body(mut self) -> Response {
        self.body = Body::owned(Vec::new());
        self
    }

    pub(super) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// A fixed document embedded in the binary.
    pub(super) fn embedded(content_type: &'static str, text: &'static str) -> Response {
        Response {
            content_type,
            body: Body::new(None, vec![Part::Static(text.as_bytes())]),
            ..Response::json(&())
        }
    }

    /// The same JSON answer, indented (`?pretty`). Its `ETag` turns weak: the same content in
    /// other bytes, so it still matches `If-None-Match` as the compact answer's tag does.
    pub(super) fn pretty(mut self) -> Response {
        let encoded = self.headers.iter().any(|(n, _)| *n == "Content-Encoding");
        if self.content_type != JSON || encoded || self.body.is_empty() {
            return self;
        }
        // Indented as it is written: a second, larger copy of a list is never made.
        self.body.pretty = Some(Box::default());
        for (name, value) in &mut self.headers {
            if *name == "ETag" && !value.starts_with("W/") {
                value.insert_str(0, "W/");
            }
        }
        self
    }
}

/// Indents compact JSON text by two spaces, keeping every token (and the key order) as it is.
#[cfg(test)]
pub(super) fn indent(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() * 2);
    let mut indenter = Indenter::default();
    for &b in json {
        indenter.feed(b, &mut out);
    }
    indenter.finish(&mut out);
    out
}

/// Where the indenter's output goes: a buffer, or a count of its bytes.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn newline(&mut self, depth: usize);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn newline(&mut self, depth: usize) {
        self.push(b'\n');
        self.extend(std::iter::repeat_n(b' ', depth * 2));
    }
}

/// Counts bytes: a pretty body's length, without writing it.
struct Count(usize);

impl Sink for Count {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }

    fn newline(&mut self, depth: usize) {
        self.0 += 1 + depth * 2;
    }
}

/// Indents compact JSON a byte at a time, so that it can run over an answer's pieces as they
/// are written: two spaces a level, every token (and the key order) kept as it is.
#[derive(Debug, Default, Clone, Copy)]
struct Indenter {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Just after `{` or `[`: an empty `{}` or `[]` stays on its line.
    opened: bool,
}

impl Indenter {
    fn feed(&mut self, b: u8, out: &mut impl Sink) {
        if self.in_string {
            out.put(&[b]);
            match b {
                _ if self.escaped => self.escaped = false,
                b'\\' => self.escaped = true,
                b'"' => self.in_string = false,
                _ => {}
            }
            return;
        }
        if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            return;
        }
        if std::mem::take(&mut self.opened) {
            if b == b'}' || b == b']' {
                out.put(&[b]);
                return;
            }
            self.depth += 1;
            out.newline(self.depth);
        }
        match b {
            b'"' => {
                self.in_string = true;
                out.put(&[b]);
            }
            b'{' | b'[' => {
                out.put(&[b]);
                self.opened = true;
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                out.newline(self.depth);
                out.put(&[b]);
            }
            b',' => {
                out.put(&[b]);
                out.newline(self.depth);
            }
            b':' => out.put(b": "),
            _ => out.put(&[b]),
        }
    }

    fn finish(&mut self, out: &mut impl Sink) {
        if std::mem::take(&mut self.opened) {
            self.depth += 1;
            out.newline(self.depth);
        }
        out.put(b"\n");
    }
}

impl From<Invalid> for Response {
    fn from(invalid: Invalid) -> Response {
        Response::error(400, invalid.0)
    }
}

/// Seconds a client is told to wait before it tries a write again while the store cannot take
/// writes (`Retry-After` on those 503 answers).
pub(super) const RETRY_AFTER: &str = "2";

impl From<StoreError> for Response {
    fn from(error: StoreError) -> Response {
        let status = match &error {
            StoreError::Registry(RegistryError::MetadataTooLarge(_)) => 400,
            StoreError::Registry(RegistryError::Full { .. }) | StoreError::Unavailable(_) => 503,
            // Insufficient Storage: this registration does not fit the budget; a smaller one,
            // or the same once nodes leave, may.
            StoreError::Registry(RegistryError::OverBudget { .. }) => 507,
        };
        let response = Response::error(status, error.to_string());
        match error {
            // The store recovers by itself (space freed, etcd back): say when to try again.
            StoreError::Unavailable(_) => response.with_header("Retry-After", RETRY_AFTER),
            _ => response,
        }
    }
}
