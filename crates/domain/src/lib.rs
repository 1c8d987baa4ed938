//! adsync's domain: the types every other crate speaks in, with their validation and no I/O.
//!
//! - [`campaign`]: a validated [`Campaign`] (bounded [`CampaignId`] safe in a URL path,
//!   [`CampaignStatus`] kept verbatim when unknown, the record's raw JSON text) and
//!   [`Campaign::from_json_text`], which turns one raw API record into a campaign or an
//!   [`InvalidCampaign`] reason fit for a dead-letter table.
//! - [`money`]: [`Money`], exact to the cent, parsed from a JSON number's text without rounding.
//! - [`rate`]: [`RateLimit`], the `N/W` budget the platform enforces, and the floor it puts on
//!   a sync's duration.
//! - [`wire`]: the JSON bodies of the platform's contract, shared by the client and the simulator.

pub mod campaign;
pub mod money;
pub mod rate;
pub mod wire;

pub use campaign::{Campaign, CampaignId, CampaignStatus, InvalidCampaign};
pub use money::{MAX_BUDGET_CENTS, Money};
pub use rate::{RateLimit, RateLimitParseError};
