//! The sync engine: one run for one tenant. It authenticates, streams every page and stores
//! each as it arrives (one transaction with its checkpoint), validates every record
//! (dead-lettering the invalid with a reason), and calls the per-campaign sync endpoint with
//! bounded concurrency sized to keep the rate limiter saturated. A run resumes from its
//! checkpoint, stops cleanly on cancellation, and stops calling a platform that keeps failing
//! ([`CircuitBreaker`]).

mod breaker;
mod engine;
mod progress;
mod report;

pub use breaker::{BreakerConfig, CircuitBreaker, PlatformDown};
pub use engine::{
    RetryOutcome, SyncConfig, SyncEngine, SyncError, retry_dead_letters, this_process,
};
pub use progress::Progress;
pub use report::RunReport;
