//! A circuit breaker per tenant: when the platform keeps failing, stop calling it for a
//! cool-down, then let one probe through (half-open) before resuming.
//!
//! Hand-written: the crates that offer one (tower-resilience-circuitbreaker, recloser) are
//! young, and wrap a `Service` or a closure, while the engine needs an async gate it can
//! await before calls of two kinds and a count of trips to decide that the platform is down.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// When to open and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failed calls (after the client's own retries) that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
    /// Openings in a row (no success between them) after which the platform counts as down.
    pub max_trips: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
            max_trips: 4,
        }
    }
}

impl BreakerConfig {
    /// The cool-down divided by `factor`, to match a time-scaled simulator (as
    /// `RetryPolicy::scaled` does for retry delays).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            cooldown: self.cooldown.div_f64(factor.max(1e-9)),
            ..self
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The platform stayed down through every cool-down.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error("the ad platform kept failing through {0} cool-downs")]
pub struct PlatformDown(pub u32);

/// The breaker. Share it between the tasks of one tenant's run.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Mutex<(State, u32)>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Mutex::new((State::Closed { failures: 0 }, 0)),
        }
    }

    /// Waits until a call may go out: at once when closed; after the cool-down when open
    /// (one caller probes, the others wait for its verdict).
    pub async fn admit(&self) -> Result<(), PlatformDown> {
        loop {
            let wait = {
                let mut guard = self.state.lock().expect("breaker lock");
                let (state, trips) = &mut *guard;
                if *trips >= self.config.max_trips {
                    return Err(PlatformDown(*trips));
                }
                match *state {
                    State::Closed { .. } => return Ok(()),
                    State::Open { until } if Instant::now() >= until => {
                        *state = State::HalfOpen { probing: true };
                        tracing::info!("circuit half-open: probing the platform");
                        return Ok(());
                    }
                    State::Open { until } => until - Instant::now(),
                    State::HalfOpen { probing: false } => {
                        *state = State::HalfOpen { probing: true };
                        return Ok(());
                    }
                    State::HalfOpen { probing: true } => {
                        Duration::from_millis(20).min(self.config.cooldown)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The platform answered (even with a 4xx about one campaign): close.
    pub fn record_success(&self) {
        let mut guard = self.state.lock().expect("breaker lock");
        if !matches!(guard.0, State::Closed { failures: 0 }) {
            tracing::info!("circuit closed: the platform answers again");
        }
        *guard = (State::Closed { failures: 0 }, 0);
    }

    /// A call failed for platform reasons after its retries. Returns whether the breaker is
    /// now open, in which case the failure is the platform's, not the campaign's.
    pub fn record_failure(&self) -> bool {
        let mut guard = self.state.lock().expect("breaker lock");
        let (state, trips) = &mut *guard;
        match *state {
            State::Closed { failures } if failures + 1 < self.config.failure_threshold => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Open { .. } => true,
            _ => {
                *trips += 1;
                *state = State::Open {
                    until: Instant::now() + self.config.cooldown,
                };
                tracing::warn!(
                    cooldown_ms = self.config.cooldown.as_millis() as u64,
                    trips = *trips,
                    "circuit open: the platform keeps failing; pausing calls"
                );
                true
            }
        }
    }

    /// Whether calls are currently held back.
    pub fn is_open(&self) -> bool {
        !matches!(
            self.state.lock().expect("breaker lock").0,
            State::Closed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            cooldown: Duration::from_secs(30),
            max_trips: 2,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let b = breaker();
        assert!(!b.record_failure());
        assert!(!b.record_failure());
        assert!(b.record_failure(), "third failure opens");

        let t0 = Instant::now();
        b.admit().await.unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(30),
            "held for the cool-down"
        );
        b.record_success();
        assert!(!b.is_open());
        b.admit().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_and_too_many_trips_mean_the_platform_is_down() {
        let b = breaker();
        for _ in 0..3 {
            b.record_failure();
        }
        b.admit().await.unwrap(); // probe
        assert!(b.record_failure(), "a failed probe reopens at once");
        assert_eq!(b.admit().await, Err(PlatformDown(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker();
        b.record_failure();
        b.record_failure();
        b.record_success();
        assert!(!b.record_failure());
        assert!(!b.record_failure());
    }
}
