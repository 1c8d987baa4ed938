//! Who works on a run: acquiring it (a new run, or a take-over of an interrupted one or of one
//! whose owner stopped renewing its lease) and keeping the lease while the run goes on.
//!
//! Liveness is judged from the database alone, so it works on any OS and across machines: a
//! holder renews its lease every third of the lease time; a process that finds the run held
//! watches the lease for a while, and if it sees it renewed, the holder is alive (busy);
//! if the lease runs out, the run is taken over.

use std::{sync::Arc, time::Duration};

use adsync_store::{Lease, NewRun, RunRecord, Store, StoreError};
use tokio::{sync::Mutex, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{SyncConfig, SyncError, engine::Stop};

/// The identity of this process, `host:pid`, recorded as a run's owner (a label for people:
/// the lease's epoch, not this, decides who may write).
pub fn this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{}:{}", host.trim(), std::process::id())
}

/// A run this process now holds.
pub(crate) struct Acquired {
    pub run: RunRecord,
    pub lease: Lease,
    pub resumed: bool,
}

/// Starts the tenant's run, or takes over the one in progress. `notice` is told when the
/// process has to wait for a lease to run out.
pub(crate) async fn acquire(
    store: &Store,
    config: &SyncConfig,
    cancel: &CancellationToken,
    notice: &(dyn Fn(String) + Send + Sync),
) -> Result<Acquired, SyncError> {
    let tenant = &config.tenant;
    let me = this_process();
    let ttl = config.lease_ttl;
    let deadline = Instant::now() + config.lease_wait();
    let poll = (ttl / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut first_look: Option<(i64, Option<chrono::DateTime<chrono::Utc>>)> = None;
    let mut told = false;
    loop {
        let open = store
            .latest_run(tenant)
            .await?
            .filter(|r| !r.status.is_final());
        let Some(run) = open else {
            let new = NewRun {
                tenant,
                page_size: config.page_size,
                platform: &config.platform,
                owner: &me,
            };
            return match store.create_run(new, ttl).await {
                Ok((run, lease)) => Ok(Acquired {
                    run,
                    lease,
                    resumed: false,
                }),
                // Someone created one between our look and our insert: look again.
                Err(StoreError::RunInProgress(_)) => continue,
                Err(e) => Err(e.into()),
            };
        };
        if let Some(started_with) = run.platform.as_deref()
            && started_with != config.platform
            && !config.fresh
        {
            return Err(SyncError::OtherPlatform {
                run: run.id,
                tenant: tenant.clone(),
                started_with: started_with.to_owned(),
                now: config.platform.clone(),
            });
        }
        if config.fresh {
            if store
                .abandon(run.id, "abandoned: a --fresh run replaced it")
                .await?
            {
                tracing::warn!(run = run.id, "abandoned the unfinished run (--fresh)");
                continue;
            }
        } else if let Some((run, lease)) = store.take_over(run.id, &me, ttl).await? {
            return Ok(Acquired {
                run,
                lease,
                resumed: true,
            });
        }
        // Held by someone else. Renewed since we first looked: its holder is alive.
        let state = (run.lease_epoch, run.heartbeat_at);
        let busy = || SyncError::Busy {
            tenant: tenant.clone(),
            owner: run.owner.clone().unwrap_or_default(),
            run: run.id,
        };
        match first_look {
            Some(seen) if seen != state => return Err(busy()),
            None => first_look = Some(state),
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(busy());
        }
        if !told {
            told = true;
            notice(format!(
                "run {} of tenant {tenant:?} is held by {} until its lease runs out ({}); waiting up to {} s to see whether that process is still alive",
                run.id,
                run.owner.as_deref().unwrap_or("another process"),
                run.lease_expires_at
                    .map_or_else(|| "unknown".into(), |t| t.to_rfc3339()),
                config.lease_wait().as_secs()
            ));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(busy()),
            _ = tokio::time::sleep(poll.min(deadline - Instant::now())) => {}
        }
    }
}

/// What the keeper knows of the lease, for the run's tasks: when it was last renewed. A task
/// about to call the platform checks it: a process that was paused (SIGSTOP, a long GC, a VM
/// migration) past its lease cannot know whether another took the run over, so it waits for
/// the keeper's next renewal instead of sending.
#[derive(Debug)]
pub(crate) struct LeaseWatch {
    renewed: std::sync::Mutex<Instant>,
    ttl: Duration,
}

impl LeaseWatch {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            renewed: std::sync::Mutex::new(Instant::now()),
            ttl,
        }
    }

    fn renewed_now(&self) {
        *self.renewed.lock().expect("lease watch") = Instant::now();
    }

    /// Whether the lease was renewed less than its time ago.
    pub(crate) fn held(&self) -> bool {
        self.renewed.lock().expect("lease watch").elapsed() < self.ttl
    }

    /// Returns once the lease is known to be held, or `false` once the run stops.
    pub(crate) async fn wait_held(&self, stop: &CancellationToken) -> bool {
        tokio::select! {
            () = stop.cancelled() => false,
            () = self.until_held() => !stop.is_cancelled(),
        }
    }

    /// Returns once the lease is known to be held (polled: the keeper renews it).
    async fn until_held(&self) {
        while !self.held() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl adsync_client::SendGate for LeaseWatch {
    /// Opens while the lease is known held; stays shut after a pause past it until the
    /// keeper renews it (or the run stops and drops the waiting call).
    fn opened(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.until_held())
    }
}

/// Renews the lease every third of its time until aborted. When the run was taken over, or
/// the lease could not be renewed before it ran out (the database is unreachable), it
/// records why in `reason` and cancels `stop` and `hard`: no more work starts and the calls
/// in flight are abandoned (their results could not be recorded anyway).
pub(crate) fn keep(
    store: Store,
    lease: Lease,
    watch: Arc<LeaseWatch>,
    stop: CancellationToken,
    hard: CancellationToken,
    reason: Arc<Mutex<Option<Stop>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ttl = watch.ttl;
        let every = (ttl / 3).max(Duration::from_millis(10));
        let mut next = first_renewal(lease.run, every);
        loop {
            tokio::time::sleep(next).await;
            next = every;
            match store.renew(&lease, ttl).await {
                Ok(()) => watch.renewed_now(),
                Err(e @ StoreError::LeaseLost { .. }) => {
                    tracing::error!(error = %e, "lost the run's lease; stopping without writing");
                    reason.lock().await.get_or_insert(Stop::LeaseLost);
                    stop.cancel();
                    hard.cancel();
                    return;
                }
                Err(e) if !watch.held() => {
                    tracing::error!(error = %e, "could not renew the run's lease before it ran out; stopping");
                    reason.lock().await.get_or_insert(Stop::Store(e));
                    stop.cancel();
                    hard.cancel();
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed; trying again"),
            }
        }
    })
}

/// When a run's lease is first renewed: between half of `every` and `every`, spread by the
/// run's id. Runs a worker claims together would otherwise renew together, every third of the
/// lease, for as long as they last: at a thousand runs, a thousand updates of `sync_runs` in a
/// quarter of a second, which took the workers' connections while the runs' budget grants
/// waited. A run whose grant fell in that quarter second got its slots too late and lost a
/// whole window (59 and 165 runs of 1,000 in two benches; none once spread).
/// Earlier than `every` is always safe: the lease is renewed more often, never less.
fn first_renewal(run: i64, every: Duration) -> Duration {
    // Consecutive ids land far apart (Knuth's multiplicative hash), in thousandths.
    let spread = (run as u64).wrapping_mul(2_654_435_761) % 1000;
    every / 2 + every / 2 * spread as u32 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_renewals_of_consecutive_runs_spread_over_the_second_half_of_the_interval() {
        let every = Duration::from_secs(10);
        let firsts: Vec<Duration> = (1..=1000).map(|run| first_renewal(run, every)).collect();
        assert!(firsts.iter().all(|d| *d >= every / 2 && *d <= every));
        // No tenth of the half-interval holds more than a fifth of the runs.
        let mut buckets = [0u32; 10];
        for d in &firsts {
            let i = ((*d - every / 2).as_secs_f64() / (every / 2).as_secs_f64() * 10.0) as usize;
            buckets[i.min(9)] += 1;
        }
        assert!(buckets.iter().all(|&n| n < 200), "{buckets:?}");
    }
}
