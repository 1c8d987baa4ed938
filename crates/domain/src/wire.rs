//! The JSON bodies of the platform's contract (`../shared/API-CONTRACT.md`). The client
//! deserializes them; the simulator produces them.

use serde::{Deserialize, Serialize};
use serde_json::{Value, value::RawValue};

/// `POST /auth/token`, 200. The lifetime fields are kept as sent (any JSON): the client
/// interprets them, clamps absurd values and never does unchecked arithmetic on them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The bearer token. Callers wrap it in a secret at once.
    pub access_token: String,
    /// Always `Bearer`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// Seconds the token lives from `issued_at`: a number (or a numeric string on some
    /// platforms); see [`TokenResponse::expires_in_secs`].
    #[serde(default)]
    pub expires_in: Value,
    /// Unix seconds at which the server issued the token; informational only.
    #[serde(default)]
    pub issued_at: Option<Value>,
}

impl TokenResponse {
    /// `expires_in` in seconds when it is a finite number or numeric string (it may still be
    /// negative, zero or absurdly large: the caller clamps it).
    pub fn expires_in_secs(&self) -> Option<f64> {
        number(&self.expires_in)
    }
}

/// A finite number, or a string holding one.
fn number(v: &Value) -> Option<f64> {
    let n = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// `GET /api/campaigns`, 200. Records stay raw JSON text, exactly as received, so that one
/// bad record can be dead-lettered without losing the page and a good one is stored with
/// every field it had (`campaigns.raw`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CampaignPage {
    /// The campaigns of this page, unvalidated, byte for byte.
    pub data: Vec<Box<RawValue>>,
    /// Where this page sits.
    pub pagination: Pagination,
}

/// The `pagination` object of a campaigns page.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pagination {
    /// 1-based page number.
    pub page: u64,
    /// Page size the server actually used (it may cap what was asked for).
    pub limit: u64,
    /// Total campaigns, when the server says. It can move while a run pages (drift).
    #[serde(default)]
    pub total: Option<u64>,
    /// Whether another page follows, as the server claims. Not to be followed blindly: the
    /// reference server computes it as `page < 10` whatever `limit` is.
    pub has_more: bool,
}

/// `POST /api/campaigns/{id}/sync`, 200.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Whether the platform says the sync worked.
    pub success: bool,
    /// The campaign synced.
    pub campaign_id: String,
    /// RFC 3339 time of the sync, as the platform reports it.
    #[serde(default)]
    pub synced_at: Option<String>,
    /// Human text.
    #[serde(default)]
    pub message: Option<String>,
}

/// `GET /health`, 200.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` when healthy.
    pub status: String,
    /// Server time.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Seconds since the server started.
    #[serde(default)]
    pub uptime: Option<f64>,
}

/// Any error body: `{"error": "...", "message": "...", "retry_after": 60, "expired_at": "..."}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Short error kind: `Invalid credentials`, `Token expired`, `Rate limit exceeded`, ...
    #[serde(default)]
    pub error: Option<String>,
    /// Human text.
    #[serde(default)]
    pub message: Option<String>,
    /// Seconds to wait, on 429 (a number, or a numeric string on some platforms).
    #[serde(default)]
    pub retry_after: Option<Value>,
    /// When an expired token expired.
    #[serde(default)]
    pub expired_at: Option<String>,
}

impl ErrorBody {
    /// `retry_after` in seconds, when it is a finite, non-negative number or numeric string
    /// (it may still be absurdly large: the caller clamps it).
    pub fn retry_after_secs(&self) -> Option<f64> {
        number(self.retry_after.as_ref()?).filter(|v| *v >= 0.0)
    }

    /// `error: message`, or whichever of the two is present.
    pub fn summary(&self) -> String {
        match (&self.error, &self.message) {
            (Some(e), Some(m)) => format!("{e}: {m}"),
            (Some(e), None) => e.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => "no error message".into(),
        }
    }
}
