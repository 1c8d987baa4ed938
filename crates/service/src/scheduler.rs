//! The scheduler: queues a run for every tenant whose next tick is due. Any number of
//! scheduler instances may run (one per `adsync serve`): a tick is fired by a
//! compare-and-set on the tenant's `next_run_at`, in the transaction that queues the run, so
//! each tick fires once. Ticks missed while no scheduler ran fold into one run (the next tick
//! is computed from now, not from the missed one); a tick that finds a run still queued or
//! running is counted as skipped, not queued twice.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::{Result, Service, queue::Enqueued};

/// Fires the due ticks once, in one transaction (a thousand tenants due at the same minute
/// are queued in a few statements, not a thousand transactions). Returns (fired, skipped).
pub async fn tick(service: &Service) -> Result<(usize, usize)> {
    let now = Utc::now();
    let due = service.tenants.due(now, 1000).await?;
    let outcomes = service.tenants.fire_ticks(&due, now).await?;
    let (mut fired, mut skipped) = (0, 0);
    let mut events = Vec::new();
    for ((tenant, _), outcome) in due.iter().zip(outcomes) {
        match outcome {
            Some(Enqueued::AlreadyActive(run)) => {
                skipped += 1;
                metrics::counter!("adsync_schedule_ticks_total", "outcome" => "skipped")
                    .increment(1);
                tracing::info!(tenant = %tenant.id, run, "scheduled tick skipped: a run is still active");
            }
            Some(outcome) => {
                fired += 1;
                metrics::counter!("adsync_schedule_ticks_total", "outcome" => "queued")
                    .increment(1);
                tracing::info!(tenant = %tenant.id, run = outcome.run(), "scheduled run queued");
                events.extend(outcome.queued_event(&tenant.id));
            }
            None => {} // another scheduler fired it
        }
    }
    service.events.publish_many(&events).await;
    Ok((fired, skipped))
}

/// Fires due ticks every `every` until `shutdown`.
pub async fn run(service: Service, every: Duration, shutdown: CancellationToken) {
    let mut failures = 0u32;
    loop {
        match tick(&service).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(30) {
                    tracing::error!(error = %e, "scheduler: cannot read or queue due runs; retrying");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
