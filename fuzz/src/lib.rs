//! What the fuzz targets share: the invariants a validated campaign keeps, and the client's
//! crate-private readers of server-controlled values, compiled here from their own source
//! files (not copies) so the targets exercise exactly the code the client runs.

use adsync_domain::{Campaign, CampaignId, InvalidCampaign, MAX_BUDGET_CENTS, Money};

// `retry_after.rs` refers to `crate::error::bounded`, so both sit at this crate's root, as in
// the client. Their unit tests are not compiled here (cfg(test) is off).
#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/client/src/body.rs"]
mod body;
#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/client/src/error.rs"]
mod error;
#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/client/src/retry_after.rs"]
mod retry_after;

use error::Error;

/// `body.rs` names its endpoint by `crate::http::Endpoint`; the client's `http.rs` needs the
/// whole client, so this stand-in has the same variants and labels.
pub mod http {
    /// The platform's endpoints (as in crates/client/src/http.rs).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Endpoint {
        /// `POST /auth/token`.
        Auth,
        /// `GET /api/campaigns`.
        ListCampaigns,
        /// `POST /api/campaigns/{id}/sync`.
        SyncCampaign,
        /// `GET /health`.
        Health,
    }

    impl Endpoint {
        pub(crate) fn label(self) -> &'static str {
            match self {
                Endpoint::Auth => "auth",
                Endpoint::ListCampaigns => "list_campaigns",
                Endpoint::SyncCampaign => "sync_campaign",
                Endpoint::Health => "health",
            }
        }
    }
}

/// How the client decodes a 2xx body (`body::decode`): `Ok`, or whether the failure is damage
/// (`Malformed`: retried) or a wrong shape (`Contract`: dead-lettered), with the detail kept.
pub fn decode<T: serde::de::DeserializeOwned>(
    body: &[u8],
    endpoint: http::Endpoint,
) -> Result<T, Decoded> {
    body::decode(body, endpoint).map_err(|e| match e {
        Error::Malformed { detail, .. } => Decoded::Malformed(detail),
        Error::Contract { detail, .. } => Decoded::Contract(detail),
        other => panic!("decode returned {other:?}"),
    })
}

/// Why the client could not decode a body.
#[derive(Debug)]
pub enum Decoded {
    /// Damage (truncated, not JSON): transient.
    Malformed(String),
    /// Well-formed, wrong shape: not transient.
    Contract(String),
}

/// The client's `Retry-After` header reader (`retry_after::header_secs`).
pub fn header_secs(
    headers: &reqwest::header::HeaderMap,
    now: std::time::SystemTime,
) -> Option<f64> {
    retry_after::header_secs(headers, now)
}

/// The client's clamp of a server-asked wait (`retry_after::clamp_secs`).
pub fn clamp_secs(secs: f64, max: std::time::Duration) -> (std::time::Duration, bool) {
    retry_after::clamp_secs(secs, max)
}

/// The wait a 429 imposes (`retry_after::rate_limit_wait`).
pub fn rate_limit_wait(
    headers: &reqwest::header::HeaderMap,
    body_secs: Option<f64>,
    default: std::time::Duration,
    max: std::time::Duration,
) -> std::time::Duration {
    retry_after::rate_limit_wait(headers, body_secs, default, max)
}

/// The wait a 5xx's `Retry-After` imposes (`retry_after::server_error_wait`).
pub fn server_error_wait(
    headers: &reqwest::header::HeaderMap,
    max: std::time::Duration,
) -> Option<std::time::Duration> {
    retry_after::server_error_wait(headers, max)
}

/// The client's cut of server text into errors and logs (`error::bounded`).
pub fn bounded(text: &str, max: usize) -> String {
    error::bounded(text, max)
}

/// Asserts what [`Campaign::from_json_text`] promises about `text`'s verdict.
pub fn check_campaign(text: &str, verdict: &Result<Campaign, InvalidCampaign>) {
    match verdict {
        Ok(c) => {
            assert_eq!(c.raw, text, "the raw text is kept byte for byte");
            assert_eq!(
                CampaignId::parse(c.id.as_str()).as_ref(),
                Ok(&c.id),
                "a valid campaign's id is a valid id"
            );
            let id = c.id.as_str();
            assert!(!id.contains(['/', '\\', '%', '?', '#']) && id != "." && id != "..");
            assert!(!c.name.contains('\0'));
            assert!(c.impressions >= 0 && c.clicks >= 0 && c.conversions >= 0);
            assert!((0..MAX_BUDGET_CENTS).contains(&c.budget.cents()));
            assert_eq!(
                Money::parse_json_number(&c.budget.to_string()),
                Ok(c.budget),
                "a budget prints and parses back"
            );
            assert_eq!(
                c.status
                    .as_str()
                    .parse::<adsync_domain::CampaignStatus>()
                    .as_ref(),
                Ok(&c.status),
                "a status prints and parses back"
            );
        }
        Err(e) => {
            assert!(!e.reason.is_empty(), "a refusal says why");
            let _ = e.to_string();
        }
    }
}
