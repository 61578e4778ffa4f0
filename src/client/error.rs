//! The client's error type: what went wrong talking to a gateway, in words a node operator can
//! act on.

use std::fmt;

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// No gateway could be reached (connection refused, host not found, connection reset).
    Unreachable {
        /// The gateway address tried last.
        address: String,
        /// What the system said.
        reason: String,
    },
    /// The client already knows that no gateway answers (an exchange failed, or a request has
    /// gone unanswered for 2 s, and none has succeeded since), so the call was not sent: it
    /// fails at once, or after the wait given to
    /// [`ClientBuilder::fail_fast_wait`](crate::client::ClientBuilder::fail_fast_wait). The
    /// heartbeat thread keeps trying; calls go out again once it reaches a gateway.
    GatewayUnavailable {
        /// The gateway in use.
        address: String,
        /// Why it counts as unavailable: the last failure.
        reason: String,
    },
    /// A gateway did not answer within the request timeout.
    Timeout {
        /// The gateway address tried last.
        address: String,
    },
    /// A gateway answered with an error status; `message` is its `error` text.
    Gateway {
        /// The gateway that answered.
        address: String,
        /// HTTP status.
        status: u16,
        /// The gateway's own explanation.
        message: String,
    },
    /// A gateway answered something that is not the expected JSON.
    InvalidResponse {
        /// The gateway that answered.
        address: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The call needs a registration (a heartbeat, `leave`), and this client has none.
    NotRegistered,
    /// A gateway address given to the builder cannot be used.
    InvalidAddress(String),
    /// Another builder setting cannot be used: a token that cannot be sent, a CA file that
    /// cannot be read. Never holds the token.
    InvalidSetting(String),
}

impl ClientError {
    /// True for failures of the connection (worth trying again, or another gateway); false when
    /// a gateway answered.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. }
                | ClientError::Timeout { .. }
                | ClientError::GatewayUnavailable { .. }
        )
    }
}

impl ClientError {
    /// True for a 401: the gateway wants a token, or does not know the one sent.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Gateway { status: 401, .. })
    }

    /// True for a 403: the token is known, but may not do this (a read token on a write).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ClientError::Gateway { status: 403, .. })
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { address, reason } => {
                write!(f, "gateway {address} is unreachable: {reason}")
            }
            ClientError::Timeout { address } => write!(f, "gateway {address} timed out"),
            ClientError::GatewayUnavailable { address, reason } => write!(
                f,
                "no gateway answers (not sent; the client keeps trying in the background): \
                 gateway {address}: {reason}"
            ),
            ClientError::Gateway {
                address,
                status: 401,
                message,
            } => write!(
                f,
                "gateway {address} refused the request (401 Unauthorized: no token, or one it \
                 does not know; give one with --token-file, GATEWAY_TOKEN or .token()): {message}"
            ),
            ClientError::Gateway {
                address,
                status: 403,
                message,
            } => write!(
                f,
                "gateway {address} refused the request (403 Forbidden: the token is known but \
                 may not do this; writes need a write token): {message}"
            ),
            ClientError::Gateway {
                address,
                status,
                message,
            } => write!(
                f,
                "gateway {address} refused the request ({status}): {message}"
            ),
            ClientError::InvalidResponse { address, reason } => {
                write!(f, "gateway {address} sent an invalid answer: {reason}")
            }
            ClientError::NotRegistered => f.write_str("this node is not registered"),
            ClientError::InvalidAddress(why) => write!(f, "invalid gateway address: {why}"),
            ClientError::InvalidSetting(why) => write!(f, "invalid client setting: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}
