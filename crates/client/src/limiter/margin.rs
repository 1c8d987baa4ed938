//! The limiter's safety margin: how much longer than the window each slot stays busy.
//!
//! The model: the server stamps request `i` at `s_i + d_i`, with `s_i` our send time and `d_i`
//! a delay in `[0, J]` (network, queues before it counts the request). Reusing the slot of
//! request `i` at `s'` is safe when `s' + d' >= s_i + d_i + W`, that is when
//! `s' >= s_i + W + (d_i - d')`: the margin must cover the spread `max d - min d`, not the
//! delay itself. We cannot see `d`, but a response's latency (from the send to its headers) is
//! `d` plus a processing time that is about constant per endpoint, so the spread of recent
//! latencies of one endpoint measures the spread of `d`.
//!
//! The same model prices each answered slot on its own: a 2xx whose latency exceeds its
//! endpoint's least latency by `x` reached the server at most about `x` later than the
//! earliest arrivals do, so its slot needs `x` (and [`SLACK`]), not the widest spread seen
//! (see [`Margin::slot_margin`]).

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

/// Recent latencies kept per endpoint.
const SAMPLES: usize = 64;
/// Latencies one endpoint needs before its spread is trusted; until then the margin is the
/// warm-up margin.
const TRUSTED: usize = 8;
/// Added to the measured margin: timer granularity and the server's `<` versus `<=`.
const SLACK: Duration = Duration::from_millis(3);
/// The measured margin never goes below this. On loopback the measured spread can be a
/// couple of milliseconds, and a loaded 2-core machine then stalls a whole burst by more
/// than that (the simulator's 200 ms-window tests drew 429s with a 5 ms margin); at real
/// windows the measured margin is far above it, so it costs nothing there.
const FLOOR: Duration = Duration::from_millis(10);
/// Headroom over the spread seen in the samples.
const HEADROOM: f64 = 1.25;
/// Endpoints whose least latency a slot can refer to (the rate-limited ones: a listing and
/// a sync call; a few spare). A slot of any later endpoint keeps the margin in force.
pub(super) const ENDPOINTS: usize = 4;

/// The margin in force and what it is made of.
#[derive(Debug)]
pub(super) struct Margin {
    window: Duration,
    /// `Some`: a fixed margin, not measured (still widened after unexpected 429s).
    fixed: Option<Duration>,
    /// The margin before any measurement of a fixed one ([`super::SlidingWindowLimiter::default_margin`]).
    default: Duration,
    /// Raised by unexpected 429s; the margin never goes below it.
    widened: Duration,
    /// When the margin was last widened: a 429 for a request sent before it belongs to the
    /// event that caused that widening.
    pub(super) last_widening: Option<Instant>,
    latencies: Vec<Latencies>,
}

#[derive(Debug)]
struct Latencies {
    endpoint: &'static str,
    samples: VecDeque<Duration>,
    /// The corrected spread of `samples` (see [`Margin::measured`]), kept up to date by
    /// [`Margin::record`]: the margin is read several times per request, a sample is added
    /// once, and folding the samples on every read was 2.6% of a busy service's CPU.
    spread: Duration,
    /// The least of `samples`, kept with `spread`.
    least: Duration,
}

impl Margin {
    pub(super) fn new(window: Duration, fixed: Option<Duration>, default: Duration) -> Self {
        Self {
            window,
            fixed,
            default,
            widened: Duration::ZERO,
            last_widening: None,
            latencies: Vec::new(),
        }
    }

    /// The largest margin measurement may give.
    pub(super) fn cap(&self) -> Duration {
        self.window / 5
    }

    /// The margin in force.
    pub(super) fn current(&self) -> Duration {
        let base = match self.fixed {
            Some(m) => m,
            None => self.measured().unwrap_or_else(|| self.warm_up()),
        };
        base.max(self.widened)
    }

    /// The margin for reusing a slot sent before any latency was measured (see
    /// [`super::SlidingWindowLimiter`]): the margin in force, but at least five times the
    /// default and never above the warm-up margin (50 ms at a scaled 1 s window, 1 s at 60 s).
    /// The first requests of a limiter open fresh connections, the listing call first, and
    /// nothing measured says how much later than the others such a request reaches the
    /// server: the later calls' latencies, which set the measured margin, do not include it.
    pub(super) fn cold(&self) -> Duration {
        let current = self.current();
        if self.fixed.is_some() {
            return current;
        }
        current.max((self.default * 5).min(self.warm_up()))
    }

    /// Whether the margin in force comes from measured latencies (or is fixed): a send now is
    /// not a cold one.
    pub(super) fn settled(&self) -> bool {
        self.fixed.is_some() || self.measured().is_some()
    }

    /// The margin until enough latencies are measured. Before the first answers come back
    /// nothing says how late the server stamps arrivals, and the first reuse of a slot can
    /// come exactly then (2 s windows, 2 s sync calls): a wide margin, bounded by 1 s (no
    /// network jitters more), which the first measurement replaces at once. At 60 s windows
    /// the measurement comes long before any slot is reused, so it costs nothing.
    pub(super) fn warm_up(&self) -> Duration {
        self.cap().min(Duration::from_secs(1)).max(self.default)
    }

    /// `HEADROOM * spread * (n + 1) / (n - 1) + SLACK` over the endpoints, clamped to
    /// `[FLOOR, W/5]`; `None` until one endpoint has [`TRUSTED`] samples. The `(n + 1) / (n - 1)`
    /// corrects the range of `n` samples, which falls short of the range of the distribution
    /// (by that factor for a uniform one): with few samples the margin stays generous.
    fn measured(&self) -> Option<Duration> {
        if !self.latencies.iter().any(|l| l.samples.len() >= TRUSTED) {
            return None;
        }
        let spread = self
            .latencies
            .iter()
            .map(|l| l.spread)
            .max()
            .unwrap_or_default();
        Some((spread + SLACK).max(FLOOR).min(self.cap()))
    }

    /// The least latency of each endpoint (by the index [`Margin::record`] returns) whose
    /// samples are [`TRUSTED`]; `None` for the others.
    pub(super) fn trusted_least(&self) -> [Option<Duration>; ENDPOINTS] {
        let mut least = [None; ENDPOINTS];
        for (slot, l) in least.iter_mut().zip(&self.latencies) {
            *slot = (l.samples.len() >= TRUSTED).then_some(l.least);
        }
        least
    }

    /// The least margin one answered slot keeps ([`FLOOR`], or what unexpected 429s widened
    /// the margin to).
    pub(super) fn slot_floor(&self) -> Duration {
        FLOOR.max(self.widened)
    }

    /// Whether slots may keep margins of their own (see [`Margin::slot_margin`]): not with
    /// a fixed margin, which the caller chose to be the only one.
    pub(super) fn per_slot(&self) -> bool {
        self.fixed.is_none()
    }

    /// The margin of a slot whose 2xx answer took `latency`, on an endpoint whose least
    /// latency is `least`: how much later than the earliest arrivals it may have reached the
    /// server, plus [`SLACK`], at least `floor` ([`Margin::slot_floor`]).
    pub(super) fn slot_margin(latency: Duration, least: Duration, floor: Duration) -> Duration {
        (latency.saturating_sub(least) + SLACK).max(floor)
    }

    /// Records the latency of a 2xx answer of `endpoint`, and returns the endpoint's index
    /// for [`Margin::trusted_least`].
    pub(super) fn record(&mut self, endpoint: &'static str, latency: Duration) -> usize {
        let i = match self.latencies.iter().position(|l| l.endpoint == endpoint) {
            Some(i) => i,
            None => {
                self.latencies.push(Latencies {
                    endpoint,
                    samples: VecDeque::with_capacity(SAMPLES),
                    spread: Duration::ZERO,
                    least: Duration::MAX,
                });
                self.latencies.len() - 1
            }
        };
        let l = &mut self.latencies[i];
        if l.samples.len() == SAMPLES {
            l.samples.pop_front();
        }
        l.samples.push_back(latency);
        l.spread = spread(&l.samples);
        l.least = l.samples.iter().copied().min().unwrap_or_default();
        i
    }

    /// An unexpected 429 at `now`: doubles the margin, up to a fifth of the window (never
    /// lowering one already wider). Returns the new margin when it grew.
    pub(super) fn widen(&mut self, now: Instant) -> Option<Duration> {
        self.last_widening = Some(now);
        let current = self.current();
        let widened = current.saturating_mul(2).min(self.cap()).max(current);
        (widened > current).then(|| {
            self.widened = widened;
            widened
        })
    }
}

/// `HEADROOM * (max - min) * (n + 1) / (n - 1)` over `n` samples; zero below two.
fn spread(samples: &VecDeque<Duration>) -> Duration {
    if samples.len() < 2 {
        return Duration::ZERO;
    }
    let (min, max) = samples
        .iter()
        .fold((Duration::MAX, Duration::ZERO), |(lo, hi), s| {
            (lo.min(*s), hi.max(*s))
        });
    let n = samples.len() as f64;
    (max - min).mul_f64(HEADROOM * (n + 1.0) / (n - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn adaptive(window_ms: u64) -> Margin {
        let window = MS * window_ms as u32;
        Margin::new(window, None, (window / 100).max(10 * MS))
    }

    #[test]
    fn warm_up_is_wide_then_the_measured_spread_takes_over() {
        let mut m = adaptive(2000);
        assert_eq!(m.current(), 400 * MS, "a fifth of 2 s");
        assert_eq!(adaptive(60_000).current(), 1000 * MS, "never above 1 s");
        assert_eq!(adaptive(20).current(), 10 * MS, "never below the default");
        for i in 0..TRUSTED as u32 - 1 {
            m.record("sync", 2000 * MS + i * 5 * MS);
        }
        assert_eq!(m.current(), 400 * MS, "seven samples are not enough");
        m.record("sync", 2035 * MS);
        // Spread 35 ms over 8 samples: 35 * 1.25 * 9/7 + 3 = 59.25 ms.
        let expected = (35 * MS).mul_f64(1.25 * 9.0 / 7.0) + SLACK;
        assert_eq!(m.current(), expected);
    }

    #[test]
    fn the_widest_endpoint_counts_and_old_samples_age_out() {
        let mut m = adaptive(60_000);
        for i in 0..SAMPLES as u32 {
            m.record("list", 30 * MS + (i % 2) * 10 * MS);
            m.record("sync", 2000 * MS + (i % 2) * 40 * MS);
        }
        let wide = m.current();
        assert!(wide > 50 * MS && wide < 60 * MS, "{wide:?}");
        // 64 calm sync answers push the jittery ones out.
        for _ in 0..SAMPLES {
            m.record("sync", 2000 * MS);
        }
        let calm = m.current();
        assert!(calm > 15 * MS && calm < 20 * MS, "{calm:?}");
        // Nothing but calm answers: the floor.
        for _ in 0..SAMPLES {
            m.record("list", 30 * MS);
        }
        assert_eq!(m.current(), FLOOR);
    }

    #[test]
    fn slots_sent_cold_keep_a_wider_margin_than_the_measured_one() {
        let mut m = adaptive(1000);
        assert!(!m.settled());
        assert_eq!(
            m.cold(),
            200 * MS,
            "the warm-up margin while nothing is measured"
        );
        for _ in 0..TRUSTED {
            m.record("sync", 33 * MS);
        }
        assert!(m.settled());
        assert_eq!(m.current(), FLOOR);
        assert_eq!(m.cold(), 50 * MS, "five times the default of a 1 s window");
        let mut real = adaptive(60_000);
        for _ in 0..TRUSTED {
            real.record("sync", 2000 * MS);
        }
        assert_eq!(real.cold(), 1000 * MS, "capped by the warm-up margin");
        let fixed = Margin::new(MS * 1000, Some(10 * MS), 10 * MS);
        assert_eq!(
            fixed.cold(),
            10 * MS,
            "a fixed margin is not measured, so never cold"
        );
    }

    #[test]
    fn the_measured_margin_is_clamped() {
        let mut m = adaptive(2000);
        for i in 0..TRUSTED as u32 {
            m.record("sync", i * 300 * MS);
        }
        assert_eq!(m.current(), 400 * MS);
        let mut m = adaptive(2000);
        for _ in 0..TRUSTED {
            m.record("list", 7 * MS);
        }
        assert_eq!(m.current(), FLOOR);
    }

    #[test]
    fn widening_doubles_up_to_a_fifth_of_the_window_and_is_a_floor() {
        let mut m = Margin::new(MS * 1000, Some(10 * MS), 10 * MS);
        let now = Instant::now();
        assert_eq!(m.widen(now), Some(20 * MS));
        for _ in 0..10 {
            m.widen(now);
        }
        assert_eq!(m.current(), 200 * MS);
        assert_eq!(m.widen(now), None);
    }
}
