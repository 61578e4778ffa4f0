//! What a handler answers: [`Response`], with a [`Body`] made of pieces (some borrowed from the
//! cached node list) so a list is never copied into an answer, and `?pretty` indentation.

use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::Serialize;

use crate::api::{ErrorBody, Invalid};
use crate::server::gateway::{NodeList, Part};
use crate::server::registry::{RegistryError, unix_now};
use crate::server::store::StoreError;

/// The content type of every answer but the dashboard.
pub const JSON: &str = "application/json";

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// For 405: the methods the path accepts.
    pub allow: Option<&'static str>,
    /// The `Content-Type`: JSON, except for the dashboard.
    pub content_type: &'static str,
    /// Other headers: `ETag`, `Vary`, `Content-Encoding`, `Preference-Applied`.
    pub headers: Vec<(&'static str, String)>,
    /// JSON (or gzip-compressed JSON), in pieces.
    pub body: Body,
}

/// A JSON body made of pieces, some of them borrowed from a cached node list.
#[derive(Debug)]
pub struct Body {
    list: Option<Arc<NodeList>>,
    parts: Vec<Part>,
    /// Reading position: which part, and how far into it.
    at: (usize, usize),
}

impl Body {
    pub(super) fn owned(bytes: Vec<u8>) -> Body {
        Body {
            list: None,
            parts: vec![Part::Owned(bytes)],
            at: (0, 0),
        }
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

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| self.part(p).len()).sum()
    }

    /// True if the body has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the whole body to `out`, piece by piece.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        self.parts
            .iter()
            .try_for_each(|p| out.write_all(self.part(p)))
    }

    /// The whole body as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts
            .iter()
            .flat_map(|p| self.part(p))
            .copied()
            .collect()
    }
}

impl Read for Body {
    /// Fills `buf` from as many parts as fit (a list answer has hundreds of small ones).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
        Ok(filled)
    }
}

impl Response {
    pub(super) fn json<T: Serialize>(value: &T) -> Response {
        let bytes = serde_json::to_vec(value).expect("answers serialise");
        Response {
            status: 200,
            allow: None,
            content_type: JSON,
            headers: Vec::new(),
            body: Body::owned(bytes),
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
            allow: None,
            content_type: JSON,
            headers: Vec::new(),
            body: Body {
                list: Some(list),
                parts,
                at: (0, 0),
            },
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
            body: Body {
                list: None,
                parts: vec![Part::Static(text.as_bytes())],
                at: (0, 0),
            },
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
        self.body = Body::owned(indent(&self.body.to_vec()));
        for (name, value) in &mut self.headers {
            if *name == "ETag" && !value.starts_with("W/") {
                value.insert_str(0, "W/");
            }
        }
        self
    }
}

/// Indents compact JSON text by two spaces, keeping every token (and the key order) as it is.
pub(super) fn indent(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', depth * 2));
    };
    let mut bytes = json.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if in_string {
            out.push(b);
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b' ' | b'\n' | b'\r' | b'\t' => {}
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b'{' | b'[' => {
                out.push(b);
                while bytes.next_if(|c| c.is_ascii_whitespace()).is_some() {}
                if bytes.peek().is_some_and(|&c| c == b'}' || c == b']') {
                    out.push(bytes.next().unwrap_or(b' '));
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            _ => out.push(b),
        }
    }
    out.push(b'\n');
    out
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
        };
        let response = Response::error(status, error.to_string());
        match error {
            // The store recovers by itself (space freed, etcd back): say when to try again.
            StoreError::Unavailable(_) => response.with_header("Retry-After", RETRY_AFTER),
            _ => response,
        }
    }
}
