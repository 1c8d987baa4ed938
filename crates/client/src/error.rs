//! The client's one error type. The retry policy asks [`Error::is_transient`]; it never
//! matches on status codes itself.

use std::time::Duration;

/// Everything that can go wrong talking to the platform. No variant carries a credential or
/// a token: messages come from the server's error body or from the transport.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `POST /auth/token` answered 401: the e-mail or password is wrong. Never retried.
    #[error("the ad platform rejected the credentials ({message})")]
    InvalidCredentials {
        /// The server's message.
        message: String,
    },
    /// An API call got 401 again right after a fresh token was issued.
    #[error("the ad platform refuses fresh access tokens ({message})")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// An API call got `401 Token expired`. The client refreshes and resends once per attempt,
    /// so callers only see this when the refresh did not help.
    #[error("the ad platform says the access token expired")]
    TokenExpired,
    /// 429 more often than the policy allows within one attempt. Every request of the same
    /// client id was held for `retry_after` each time.
    #[error("the ad platform kept rate-limiting (last retry_after {retry_after:?})")]
    RateLimited {
        /// How long the platform asked to wait.
        retry_after: Duration,
    },
    /// A 5xx answer: 503 and friends (transient), or 501/505 (not).
    #[error("the ad platform answered {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// A `Retry-After` header, when the server sent one.
        retry_after: Option<Duration>,
    },
    /// A 4xx other than 401 and 429: the request itself is wrong. Never retried.
    #[error("the ad platform refused the request with {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// No complete answer within the request timeout (a hang).
    #[error("no answer from the ad platform within {0:?}")]
    Timeout(Duration),
    /// The connection could not be opened (refused, DNS, TLS).
    #[error("cannot reach the ad platform at {url}: {detail}")]
    Connect {
        /// Where we tried to connect.
        url: String,
        /// Why it failed.
        detail: String,
    },
    /// The connection died before a complete response (reset, closed mid-body).
    #[error("the connection to the ad platform broke: {0}")]
    Transport(String),
    /// A 2xx whose body is truncated or not JSON at all: the kind of damage a retry mends
    /// (a connection cut mid-body, a proxy's error page). Transient.
    #[error("the ad platform sent a malformed {what} response: {detail}")]
    Malformed {
        /// Which response.
        what: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// A 2xx whose body is well-formed JSON of the wrong shape (a missing field, a string
    /// where a list belongs), an empty access token, or a sync answer for another campaign.
    /// The platform would answer the same again: never retried; the caller dead-letters the
    /// page or campaign with this reason.
    #[error(
        "the ad platform's {what} response does not match its API contract ({detail}); retrying will not help, report it to the platform"
    )]
    Contract {
        /// Which response.
        what: &'static str,
        /// What does not match.
        detail: String,
    },
    /// A 2xx body larger than [`crate::ClientConfig::max_body_bytes`] (announced by
    /// `Content-Length` or found while reading). Not retried: the same request would get the
    /// same body.
    #[error(
        "the ad platform's {what} response is larger than {limit} bytes; ask for less (a smaller page size) or raise max_body_bytes"
    )]
    TooLarge {
        /// Which response.
        what: &'static str,
        /// The cap in force, in bytes.
        limit: usize,
    },
    /// The server broke the contract in a way a retry cannot mend, found by a caller (e.g.
    /// pagination that does not add up).
    #[error("the ad platform broke its contract: {0}")]
    Protocol(String),
    /// The client was configured with something unusable (a base URL that cannot be a base).
    #[error("invalid ad platform client configuration: {0}")]
    Config(String),
    /// The rate budget shared with other processes (in the database) could not be spent: no
    /// request went out.
    #[error("the shared rate budget is unavailable: {detail}")]
    SharedBudget {
        /// What failed.
        detail: String,
        /// Whether it may come back (the database is unreachable or busy).
        transient: bool,
    },
}

impl Error {
    /// Whether trying again later may succeed: 5xx (but 501/505), 429, expired tokens,
    /// timeouts, connection failures and malformed (truncated, non-JSON) 2xx bodies. A body of
    /// the wrong shape ([`Error::Contract`]) or too large ([`Error::TooLarge`]) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::RateLimited { .. }
            | Error::TokenExpired
            | Error::Timeout(_)
            | Error::Connect { .. }
            | Error::Transport(_)
            | Error::Malformed { .. } => true,
            Error::Server { status, .. } => !matches!(status, 501 | 505),
            Error::SharedBudget { transient, .. } => *transient,
            Error::InvalidCredentials { .. }
            | Error::Unauthorized { .. }
            | Error::Rejected { .. }
            | Error::Contract { .. }
            | Error::TooLarge { .. }
            | Error::Protocol(_)
            | Error::Config(_) => false,
        }
    }

    /// A wait the server asked for, which the backoff must not undercut.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Server { retry_after, .. } => *retry_after,
            Error::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// A short label for metrics and logs: `timeout`, `server_error`, ...
    pub fn outcome(&self) -> &'static str {
        match self {
            Error::InvalidCredentials { .. } => "invalid_credentials",
            Error::Unauthorized { .. } => "unauthorized",
            Error::TokenExpired => "token_expired",
            Error::RateLimited { .. } => "rate_limited",
            Error::Server { .. } => "server_error",
            Error::Rejected { .. } => "rejected",
            Error::Timeout(_) => "timeout",
            Error::Connect { .. } => "connect",
            Error::Transport(_) => "transport",
            Error::Malformed { .. } => "malformed",
            Error::Contract { .. } => "contract",
            Error::TooLarge { .. } => "too_large",
            Error::Protocol(_) => "protocol",
            Error::Config(_) => "config",
            Error::SharedBudget { .. } => "shared_budget",
        }
    }

    /// Maps a reqwest failure; `timeout` is the limit that was in force.
    pub(crate) fn from_reqwest(err: &reqwest::Error, timeout: Duration) -> Self {
        let detail = source_chain(err);
        if err.is_timeout() {
            Error::Timeout(timeout)
        } else if err.is_connect() {
            Error::Connect {
                url: err
                    .url()
                    .map(|u| format!("{}://{}", u.scheme(), u.authority()))
                    .unwrap_or_default(),
                detail,
            }
        } else {
            Error::Transport(detail)
        }
    }
}

/// The innermost causes of an error, joined; reqwest's own top line repeats the URL and says
/// little ("error sending request").
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = err.source();
    while let Some(e) = cur {
        parts.push(e.to_string());
        cur = e.source();
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with `…` when cut: what the
/// server says ends up in errors and logs, and the server controls its length.
pub(crate) fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
