//! Bearer tokens: the token table, how it is read and re-read, and the one decision it serves
//! (which role a presented token has).
//!
//! A token file holds one `role:name:token` a line (`read`, `node=IDS` or `write`, `#`
//! comments, blank lines ignored); `GATEWAY_TOKENS` holds the same lines. A `write` token may
//! also read; a `node` token may read, and register, heartbeat and remove the node ids it names
//! (`node=7`, `node=1-100`, `node=1-8,20`), no other, and never set the leader. With no token
//! at all the gateway is open, as the original was. The token text itself never leaves this
//! module: errors name a line, logs and answers name the token's `name`, and [`Secret`] prints
//! as `<redacted>`. A presented token is found by a keyed digest and compared in constant time;
//! an `Authorization` header over 4 KiB is refused before any work on it.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// `GET` routes: `/nodes`, `/leader`, `/stats`, `/health` (when protected) and the like.
    Read,
    /// What a node does for itself: read, and `/register`, `/heartbeat` and `/remove` for the
    /// node ids its token names ([`NodeIds`]), checked against the body's `node_id`.
    Node,
    /// Everything, including `POST` routes: `/register`, `/heartbeat`, `/remove`, `/leader`.
    Write,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Node => "node",
            Role::Write => "write",
        })
    }
}

/// The node ids a `node` token may act for: ids and inclusive ranges (`1-100,200`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIds(Vec<(u64, u64)>);

impl NodeIds {
    /// Parses `7`, `1-100`, `1-8,20`.
    pub fn parse(text: &str) -> Result<NodeIds, String> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim) {
            let id = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{item:?} is not a node id or a range such as 1-100"))
            };
            let (low, high) = match item.split_once('-') {
                Some((low, high)) => (id(low)?, id(high)?),
                None => (id(item)?, id(item)?),
            };
            if low > high {
                return Err(format!("{item:?}: the range ends before it starts"));
            }
            ranges.push((low, high));
        }
        Ok(NodeIds(ranges))
    }

    /// True if `id` is one of them.
    pub fn contains(&self, id: u64) -> bool {
        self.0.iter().any(|&(low, high)| (low..=high).contains(&id))
    }
}

impl fmt::Display for NodeIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(low, high)) in self.0.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            if low == high {
                write!(f, "{comma}{low}")?;
            } else {
                write!(f, "{comma}{low}-{high}")?;
            }
        }
        Ok(())
    }
}

/// Text that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why tokens could not be read. Never holds token text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The token file could not be read.
    Read {
        /// The file.
        file: PathBuf,
        /// What the system said.
        reason: String,
    },
    /// A line that is not `role:name:token`, or that repeats a name or a token.
    Line {
        /// The file, or `GATEWAY_TOKENS`.
        source: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the line itself).
        reason: String,
    },
    /// A token file or `GATEWAY_TOKENS` was given, and holds no token: running open by mistake
    /// is refused (give neither to run open).
    Empty(String),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Read { file, reason } => {
                write!(f, "cannot read token file {}: {reason}", file.display())
            }
            AuthError::Line {
                source,
                line,
                reason,
            } => write!(f, "{source} line {line}: {reason}"),
            AuthError::Empty(source) => write!(
                f,
                "{source} holds no token; the gateway would be open to anyone (give no token \
                 file and no GATEWAY_TOKENS to run it open on purpose)"
            ),
        }
    }
}

impl std::error::Error for AuthError {}

struct Token {
    role: Role,
    name: String,
    secret: Vec<u8>,
    /// For a `node` token: the ids it may act for.
    ids: Option<NodeIds>,
}

/// A set of tokens, each with a role and a name.
///
/// Tokens are found by a digest of the presented text (SipHash with a key drawn at random for
/// each table), then the one candidate is compared in constant time: a lookup costs one pass
/// over the presented text, whatever the number of tokens.
#[derive(Default)]
pub struct Tokens {
    tokens: Vec<Token>,
    /// The digest of each token's text: its index in `tokens` (several on a collision).
    by_digest: HashMap<u64, Vec<usize>>,
    /// The key of the digest: random, so the digests say nothing outside this process.
    key: RandomState,
}

/// The longest `Authorization` header judged: a longer one is refused before any work on it.
pub const MAX_AUTHORIZATION: usize = 4096;

/// The longest token a table may hold (one that fits in [`MAX_AUTHORIZATION`] after `Bearer `).
const MAX_TOKEN: usize = MAX_AUTHORIZATION - "Bearer ".len();

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|t| format!("{}:{}", t.role, t.name)))
            .finish()
    }
}

/// Characters a token may hold: visible ASCII, no space (RFC 6750 `b64token` and more), so that
/// every token can be sent in an `Authorization` header as it is written.
fn token_char(c: u8) -> bool {
    c.is_ascii_graphic()
}

/// Characters a name may hold: it is printed in logs and answers.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.@".contains(c)
}

impl Tokens {
    /// Reads `role:name:token` lines; `source` names them in errors.
    pub fn parse(text: &str, source: &str) -> Result<Tokens, AuthError> {
        let mut tokens = Tokens::default();
        for (index, line) in text.lines().enumerate() {
            let error = |reason: &str| AuthError::Line {
                source: source.to_owned(),
                line: index + 1,
                reason: reason.to_owned(),
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let (Some(role), Some(name), Some(secret)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(error("expected role:name:token"));
            };
            let (role, ids) = match role.trim() {
                "read" => (Role::Read, None),
                "write" => (Role::Write, None),
                "node" => {
                    return Err(error(
                        "a node token names the node ids it may act for: node=7, node=1-100",
                    ));
                }
                role => match role.strip_prefix("node=") {
                    Some(ids) => (
                        Role::Node,
                        Some(NodeIds::parse(ids).map_err(|e| error(&e))?),
                    ),
                    None => return Err(error("the role must be read, node=IDS or write")),
                },
            };
            let name = name.trim();
            if name.is_empty() || !name.chars().all(name_char) {
                return Err(error(
                    "the name must be letters, digits and - _ . @ (at least one)",
                ));
            }
            let secret = secret.trim().as_bytes();
            if secret.is_empty() {
                return Err(error("the token is empty"));
            }
            if !secret.iter().all(|&c| token_char(c)) {
                return Err(error(
                    "the token must be visible ASCII characters, without spaces",
                ));
            }
            if tokens.tokens.iter().any(|t| t.name == name) {
                return Err(error("the name is used by an earlier line"));
            }
            if secret.len() > MAX_TOKEN {
                return Err(error(&format!(
                    "the token is longer than {MAX_TOKEN} bytes (it would not fit in a header)"
                )));
            }
            if tokens.find(secret).is_some() {
                return Err(error("the token is used by an earlier line"));
            }
            let digest = tokens.key.hash_one(secret);
            tokens
                .by_digest
                .entry(digest)
                .or_default()
                .push(tokens.tokens.len());
            tokens.tokens.push(Token {
                role,
                name: name.to_owned(),
                secret: secret.to_vec(),
                ids,
            });
        }
        Ok(tokens)
    }

    /// True when there is no token: the gateway is open.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// `role:name` of every token, for logs.
    pub fn names(&self) -> String {
        let names: Vec<String> = self
            .tokens
            .iter()
            .map(|t| format!("{}:{}", t.role, t.name))
            .collect();
        names.join(", ")
    }

    /// The name and role of `presented`, if it is one of the tokens: the token with the same
    /// digest (see [`Tokens`]), compared over the whole presented text. The time taken depends
    /// on the presented length, never on the number of tokens nor on how much of a token was
    /// guessed (the digest's key is secret, so its value tells nothing about any token).
    pub fn find(&self, presented: &[u8]) -> Option<(&str, Role)> {
        self.token(presented).map(|t| (t.name.as_str(), t.role))
    }

    /// The node ids `presented` may act for, if it is a `node` token.
    pub fn node_ids(&self, presented: &[u8]) -> Option<&NodeIds> {
        self.token(presented).and_then(|t| t.ids.as_ref())
    }

    fn token(&self, presented: &[u8]) -> Option<&Token> {
        let candidates = self.by_digest.get(&self.key.hash_one(presented))?;
        let mut found = None;
        for &index in candidates {
            let token = &self.tokens[index];
            if constant_time_eq(presented, &token.secret) {
                found = Some(token);
            }
        }
        found
    }
}

/// Compares `presented` with `secret` in time that depends only on `presented.len()`.
fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    #[cfg(test)]
    tests::COMPARED.with(|n| n.set(n.get() + presented.len()));
    let mut diff = u8::from(presented.len() != secret.len());
    for (i, &byte) in presented.iter().enumerate() {
        // Wrapping over the secret keeps the work the same whatever its length.
        diff |= byte ^ secret[i % secret.len()];
    }
    std::hint::black_box(diff) == 0
}

/// Where tokens come from: a file (re-read on reload) and the text of `GATEWAY_TOKENS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenSource {
    /// `--token-file` / `GATEWAY_TOKEN_FILE`.
    pub file: Option<PathBuf>,
    /// `GATEWAY_TOKENS`.
    pub inline: Option<Secret>,
}

impl TokenSource {
    /// Reads every token. A file readable by others than its owner is used, with a warning.
    pub fn load(&self) -> Result<Tokens, AuthError> {
        let mut text = String::new();
        let mut sources = Vec::new();
        if let Some(file) = &self.file {
            // Bounded (16 MiB, some 100,000 tokens): /dev/zero is refused, not read until the
            // memory runs out.
            let read = crate::files::read_small_text(file, 16 << 20).map_err(|reason| {
                AuthError::Read {
                    file: file.clone(),
                    reason,
                }
            })?;
            warn_if_shared(file);
            sources.push((file.display().to_string(), read));
        }
        if let Some(inline) = &self.inline {
            sources.push(("GATEWAY_TOKENS".to_owned(), inline.expose().to_owned()));
        }
        // Each source is checked on its own (for line numbers), then all of them together (for
        // a name or a token used twice).
        for (source, lines) in &sources {
            Tokens::parse(lines, source)?;
            text.push_str(lines);
            text.push('\n');
        }
        let tokens = Tokens::parse(&text, "the token file and GATEWAY_TOKENS together")?;
        if tokens.is_empty() && !sources.is_empty() {
            let names: Vec<&str> = sources.iter().map(|(source, _)| source.as_str()).collect();
            return Err(AuthError::Empty(names.join(" and ")));
        }
        Ok(tokens)
    }
}

/// Warns when `file` can be read by its group or by anyone.
#[cfg(unix)]
fn warn_if_shared(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            log::warn!(
                "token file {} can be read by others than its owner (mode {:o}): chmod 600 it",
                file.display(),
                mode & 0o777
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_file: &Path) {}

/// What a request presented, as [`Auth::check`] judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; `Some(name)` is the token's name, `None` when the route is open.
    Allowed(Option<String>),
    /// 401: no token, or not a usable one. The text says which, never the token.
    Unauthenticated(&'static str),
    /// 403: a known token whose role is too low; its name.
    Forbidden(String),
}

struct State {
    source: TokenSource,
    tokens: Arc<Tokens>,
    protect_health: bool,
}

/// The gateway's tokens as requests see them: swapped whole on reload.
pub struct Auth {
    state: RwLock<State>,
}

impl Default for Auth {
    fn default() -> Auth {
        Auth {
            state: RwLock::new(State {
                source: TokenSource::default(),
                tokens: Arc::new(Tokens::default()),
                protect_health: false,
            }),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.read();
        f.debug_struct("Auth")
            .field("tokens", &state.tokens)
            .field("protect_health", &state.protect_health)
            .finish()
    }
}

impl Auth {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Uses `tokens`, read from `source`; `protect_health` puts `/health` behind a read token.
    pub fn install(&self, source: TokenSource, tokens: Tokens, protect_health: bool) {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        *state = State {
            source,
            tokens: Arc::new(tokens),
            protect_health,
        };
    }

    /// True when no token is configured: every request is allowed.
    pub fn is_open(&self) -> bool {
        self.read().tokens.is_empty()
    }

    /// Re-reads the tokens from where they came from. On an error the tokens in use stay, and
    /// the error is returned for the log.
    pub fn reload(&self) -> Result<(), AuthError> {
        let source = self.read().source.clone();
        let tokens = source.load()?;
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        log::info!(
            "tokens reloaded: {} ({})",
            tokens.len(),
            if tokens.is_empty() {
                "none: the gateway is open".to_owned()
            } else {
                tokens.names()
            }
        );
        state.tokens = Arc::new(tokens);
        Ok(())
    }

    /// The node ids the request's token may act for, when it is a `node` token (`None` for
    /// any other, or none).
    pub fn node_ids<'h>(
        &self,
        mut authorization: impl Iterator<Item = &'h str>,
    ) -> Option<NodeIds> {
        let tokens = Arc::clone(&self.read().tokens);
        let header = authorization.next()?;
        if authorization.next().is_some() || header.len() > MAX_AUTHORIZATION {
            return None;
        }
        let (scheme, presented) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("Bearer") {
            return None;
        }
        tokens
            .node_ids(presented.trim_start_matches(' ').as_bytes())
            .cloned()
    }

    /// Judges a request: `authorization` is every `Authorization` header it sent, `needs` the
    /// role its route needs (`None`: an open route such as `/health`; `Some(Role::Read)` for
    /// `/health` is lowered to open unless `--protect-health`).
    pub fn check<'h>(&self, authorization: impl Iterator<Item = &'h str>, needs: Need) -> Verdict {
        let (tokens, protect_health) = {
            let state = self.read();
            (Arc::clone(&state.tokens), state.protect_health)
        };
        let needs = match needs {
            Need::Health if !protect_health => return Verdict::Allowed(None),
            Need::Health => Role::Read,
            Need::Role(role) => role,
        };
        if tokens.is_empty() {
            return Verdict::Allowed(None);
        }
        let mut headers = authorization;
        let Some(header) = headers.next() else {
            return Verdict::Unauthenticated("a bearer token is required");
        };
        if headers.next().is_some() {
            return Verdict::Unauthenticated("more than one Authorization header");
        }
        if header.len() > MAX_AUTHORIZATION {
            return Verdict::Unauthenticated("the Authorization header is longer than 4 KiB");
        }
        let header = header.trim();
        let (scheme, presented) = header.split_once(' ').unwrap_or((header, ""));
        if !scheme.eq_ignore_ascii_case("Bearer") {
            return Verdict::Unauthenticated("the Authorization scheme must be Bearer");
        }
        let presented = presented.trim_start_matches(' ');
        if presented.is_empty() {
            return Verdict::Unauthenticated("the bearer token is empty");
        }
        if !presented.bytes().all(token_char) {
            return Verdict::Unauthenticated("the bearer token is not a single word");
        }
        match tokens.find(presented.as_bytes()) {
            None => Verdict::Unauthenticated("unknown token"),
            Some((name, role)) if role < needs => Verdict::Forbidden(name.to_owned()),
            Some((name, _)) => Verdict::Allowed(Some(name.to_owned())),
        }
    }
}

/// The warning for a gateway without tokens listening on `addr`, when that is not loopback:
/// anyone who can reach it may change the registry.
pub fn open_gateway_warning(addr: std::net::SocketAddr, auth: &Auth) -> Option<String> {
    (auth.is_open() && !addr.ip().is_loopback()).then(|| {
        format!(
            "no tokens: anyone who can reach {addr} may register, remove nodes and set the \
             leader (--token-file or GATEWAY_TOKENS to require bearer tokens)"
        )
    })
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `/health`: open, or a read token under `--protect-health`.
    Health,
    /// A token of at least this role (when tokens are configured).
    Role(Role),
}

#[cfg(test)]
mod tests;
