//! The sync engine: one run for one tenant. It acquires the run (a lease with a fencing
//! epoch, so one process works on it), lists pages through a [`Pager`] that believes nothing
//! the platform says without checking it, stores each page as it arrives (one transaction with
//! its checkpoint), validates every record (dead-lettering the invalid with a reason, storing
//! unknown statuses verbatim), marks campaigns a complete listing no longer has as removed,
//! and calls the per-campaign sync endpoint with bounded concurrency sized to keep the rate
//! limiter saturated. A run resumes from its checkpoint, stops cleanly on cancellation, and
//! stops calling a platform that keeps failing ([`CircuitBreaker`]).

mod breaker;
mod engine;
mod handoff;
mod listing;
mod ownership;
mod pager;
mod progress;
mod recorder;
mod report;
mod resumer;
mod retry;
mod syncing;

pub use breaker::{BreakerConfig, CircuitBreaker, PlatformDown};
pub use engine::{SyncConfig, SyncEngine, SyncError};
pub use ownership::this_process;
pub use pager::{PageVerdict, Pager, PagerLimits};
pub use progress::{Progress, ProgressSnapshot};
pub use recorder::SyncRecorder;
pub use report::{Outcome, RunReport, floor_for};
pub use resumer::{CLI_CREDENTIALS, Resumer};
pub use retry::{RetryOutcome, retry_dead_letters};
