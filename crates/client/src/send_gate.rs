//! A last check right before a request leaves: whoever runs the calls (the sync engine, for
//! a run's lease) can make every request of a task wait until it may really go.
//!
//! A task checks its lease before it calls the platform, but the call then waits for its
//! limiter slot, possibly most of a window. A process paused (SIGSTOP, a VM migration) during
//! that wait wakes with its slot due and would send at once, though another worker may have
//! taken the run meanwhile. The gate is awaited after the slot and before the stamp: a task
//! whose gate does not open never sends, and is dropped when its run stops. Task-local, so
//! a client shared by several runs checks each call against its own run.

use std::{future::Future, pin::Pin, sync::Arc};

/// What a request waits for right before it is sent.
pub trait SendGate: Send + Sync {
    /// Returns once a request may be sent now. It may never return: the caller's task is
    /// then expected to be dropped (its run stopped).
    fn opened(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

tokio::task_local! {
    static GATE: Arc<dyn SendGate>;
}

/// Runs `work` with every request it sends through this crate waiting for `gate` first.
pub async fn with_send_gate<F: Future>(gate: Arc<dyn SendGate>, work: F) -> F::Output {
    GATE.scope(gate, work).await
}

/// Waits for the current task's gate, if it has one.
pub(crate) async fn opened() {
    if let Ok(gate) = GATE.try_with(Arc::clone) {
        gate.opened().await;
    }
}
