//! The current streak of transient failures, for a progress display that should say
//! "platform failing for 12 s (3 attempts): 503 ...; next try in 4 s" rather than show an ETA
//! that means nothing while the platform is down.

use std::sync::Mutex;

use tokio::time::Instant;

use crate::Error;

/// A streak of transient failures of one client, from the first failure since the last
/// success. See [`crate::AdClient::failing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// When the first failure of the streak happened.
    pub since: Instant,
    /// Failed attempts in the streak, over every call of the client.
    pub attempts: u32,
    /// The latest failure, as its one-line message (no secret: errors never hold one).
    pub last_error: String,
    /// When the latest retry is due (its backoff plus the predicted wait on the rate
    /// limiter); `None` when the failed call gave up.
    pub next_attempt_at: Option<Instant>,
}

/// The streak, shared by every request of a client.
#[derive(Debug, Default)]
pub(crate) struct Streak(Mutex<Option<Failing>>);

impl Streak {
    /// A transient failure; `next` is when its retry is due, `None` when the call gave up.
    pub(crate) fn failed(&self, err: &Error, next: Option<Instant>) {
        let mut s = self.0.lock().expect("streak lock");
        let f = s.get_or_insert_with(|| Failing {
            since: Instant::now(),
            attempts: 0,
            last_error: String::new(),
            next_attempt_at: None,
        });
        f.attempts = f.attempts.saturating_add(1);
        f.last_error = err.to_string();
        f.next_attempt_at = next;
    }

    /// Any success ends the streak.
    pub(crate) fn succeeded(&self) {
        let mut s = self.0.lock().expect("streak lock");
        if s.is_some() {
            *s = None;
        }
    }

    /// The streak in progress, if any.
    pub(crate) fn current(&self) -> Option<Failing> {
        self.0.lock().expect("streak lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_streak_counts_failures_until_a_success() {
        let streak = Streak::default();
        assert_eq!(streak.current(), None);
        let t0 = Instant::now();
        let next = t0 + Duration::from_secs(4);
        streak.failed(&Error::Timeout(Duration::from_secs(10)), Some(next));
        tokio::time::advance(Duration::from_secs(5)).await;
        streak.failed(&Error::Transport("reset".into()), None);

        let f = streak.current().unwrap();
        assert_eq!(f.since, t0);
        assert_eq!(f.attempts, 2);
        assert!(f.last_error.contains("reset"), "{}", f.last_error);
        assert_eq!(f.next_attempt_at, None);

        streak.succeeded();
        assert_eq!(streak.current(), None);
    }
}
