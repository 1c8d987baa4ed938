//! adsync's domain: the types every other crate speaks in, with their validation and no I/O.
//!
//! - [`campaign`]: a validated [`Campaign`] (exact [`Money`], bounded [`CampaignId`], known
//!   [`CampaignStatus`]) and [`Campaign::from_json`], which turns one raw API record into a
//!   campaign or a [`InvalidCampaign`] reason fit for a dead-letter table.
//! - [`rate`]: [`RateLimit`], the `N/W` budget the platform enforces, and the floor it puts on
//!   a sync's duration.
//! - [`wire`]: the JSON bodies of the platform's contract, shared by the client and the simulator.

pub mod campaign;
pub mod rate;
pub mod wire;

pub use campaign::{Campaign, CampaignId, CampaignStatus, InvalidCampaign, Money};
pub use rate::{RateLimit, RateLimitParseError};
