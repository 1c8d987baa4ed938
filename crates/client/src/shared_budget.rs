//! A rate budget shared beyond this process: the hook through which every holder of one
//! platform client id (workers on other machines, other tenants using the same id) spends the
//! same "N per sliding W", so that together they never exceed it.
//!
//! The client's own [`crate::SlidingWindowLimiter`] stays the fast path (first come, first
//! served within the process, the exact log of this process's sends); a [`SharedBudget`] is
//! the truth it defers to. A rate-limited call takes its limiter turn, then waits for the
//! shared budget's slot while holding that turn, then is stamped and sent: local order and the
//! local log both still apply. A 429 holds the local limiter and, through
//! [`SharedBudget::hold`], every other holder of the budget.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::Error;

/// The future of [`SharedBudget::take`]. (The client does not depend on `futures`; this is
/// its `BoxFuture`.)
pub type TakeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Error>> + Send + 'a>>;

/// A rate budget shared by everyone who spends it (other processes, other tenants using the
/// same platform client id), so that together they never exceed the platform's limit.
/// Configure one with [`crate::ClientConfig::with_shared_budget`].
///
/// A rate-limited call takes its turn on the client's [`crate::SlidingWindowLimiter`] (the
/// fast path: order within the process, the exact log of its sends), then awaits
/// [`SharedBudget::take`] while holding that turn, then is stamped and sent at once. A 429
/// holds the limiter and calls [`SharedBudget::hold`]. Without a budget, the limiter alone
/// paces the client.
pub trait SharedBudget: Send + Sync + fmt::Debug {
    /// Waits until the shared budget lets one request go, and returns when it may be sent
    /// now. The caller holds its limiter turn meanwhile and sends at once.
    ///
    /// An error fails this attempt of the call without spending a slot of the local limiter;
    /// the retry policy asks [`Error::is_transient`], so an unreachable budget (a database
    /// that is down) should be a transient error, and only one that can never work (a
    /// misconfiguration) a permanent one.
    fn take(&self) -> TakeFuture<'_>;

    /// The platform answered 429 after `retry_after` was clamped: every holder of this budget
    /// should hold for `retry_after` from now. Must not block; a write it needs may finish in
    /// the background.
    fn hold(&self, retry_after: Duration);

    /// When (this process's clock) the budget last saw a send of another holder, if it ever
    /// did: the client's limiter learns nothing of the platform's limit from a window others
    /// spent too. `None` by default: no other holder is known.
    fn last_other_send(&self) -> Option<Instant> {
        None
    }
}

/// How [`crate::ClientConfig`] keeps its budget: an `Arc` so that clients of one process share
/// one budget (and its queue of granted slots).
pub(crate) type BudgetRef = Arc<dyn SharedBudget>;
