//! A faithful simulator of the ad platform (`../shared/API-CONTRACT.md`), quirks included, for
//! demos, tests and benchmarks.
//!
//! [`app`] is the axum [`Router`](axum::Router); [`Simulator::start`] binds it (port 0 picks a
//! free port) and hands back its address and live [`SimStats`]. Every figure of the contract
//! is a knob of [`SimConfig`], and [`SimConfig::time_scale`] divides every duration so that a
//! ten-minute reference sync runs in ten seconds at 60. Beyond the contract, knobs reproduce
//! the ways platforms misbehave: a lying `has_more` ([`HasMore`]), absurd `retry_after` and
//! token lifetimes, schema drift, wrong-shape answers, arrival jitter, and data that changes
//! while a client pages through it ([`Mutation`], [`Simulator::remove_campaign`]...).

mod admin;
mod auth;
mod campaigns;
mod config;
mod data;
mod faults;
mod gate;
mod server;
mod stats;

pub use config::{ChaosRates, HasMore, Mutation, Profile, SimConfig};
pub use server::{SimState, Simulator, app};
pub use stats::{ClientStats, SimStats};

/// The reference server's test e-mail. Test credentials only: production code paths never
/// default to them; only the built-in simulator and tests use them.
pub const REFERENCE_EMAIL: &str = "admin@mixoads.com";
/// The reference server's test password (see [`REFERENCE_EMAIL`]).
pub const REFERENCE_PASSWORD: &str = "SuperSecret123!";
