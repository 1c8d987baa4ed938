//! The limiter against a model of a platform that stamps arrivals late, on a paused clock:
//! each request reaches the server's sliding window a random delay in `[0, J]` after we send
//! it (seeded), the server refuses the `N+1`-th arrival within `W`, and the answer comes back
//! after that delay plus a processing time (30 ms for a page, 2 s for a sync call). The
//! workload is a full sync: one page of 100 campaigns, then their 100 sync calls at once.
//! Every send goes through the real limiter, and every 2xx reports its latency to it.

use std::sync::{Arc, Mutex};

use super::*;

/// SplitMix64: a seeded, dependency-free source of delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, max]`, to the microsecond.
    fn delay(&mut self, max: Duration) -> Duration {
        let us = max.as_micros() as u64;
        Duration::from_micros(self.next() % (us + 1))
    }
}

/// The platform's rate limiter: a strict sliding window over arrival stamps.
struct Server {
    limit: RateLimit,
    accepted: Vec<Instant>,
    rejected: usize,
}

impl Server {
    fn arrive(&mut self, at: Instant) -> bool {
        let recent = self
            .accepted
            .iter()
            .filter(|t| at.saturating_duration_since(**t) < self.limit.window)
            .count();
        let ok = recent < self.limit.requests as usize;
        if ok {
            self.accepted.push(at);
        } else {
            self.rejected += 1;
        }
        ok
    }
}

struct World {
    limiter: SlidingWindowLimiter,
    server: Mutex<Server>,
    rng: Mutex<Rng>,
    jitter: Duration,
    /// Requests sent before this instant reach the server this much later (a machine busy
    /// at first, calm after): `(until, extra)`.
    busy: Option<(Instant, Duration)>,
}

impl World {
    /// One call, resent after each 429 as the client does: hold, then queue again.
    async fn call(&self, endpoint: &'static str, processing: Duration) {
        loop {
            let sent = self.limiter.reserve().await.send().await;
            let mut delay = self.rng.lock().unwrap().delay(self.jitter);
            if let Some((until, extra)) = self.busy
                && sent.at < until
            {
                delay += extra;
            }
            tokio::time::sleep(delay).await;
            let ok = self.server.lock().unwrap().arrive(Instant::now());
            tokio::time::sleep(processing).await;
            if ok {
                self.limiter
                    .answered_ok(sent.at, endpoint, sent.at.elapsed());
                return;
            }
            self.limiter.answered(sent.at, true);
            let window = self.limiter.limit().window;
            self.limiter.hold(window, sent.at);
        }
    }
}

struct Run {
    elapsed: Duration,
    rejected: usize,
    floor: Duration,
}

async fn full_sync(limit: RateLimit, jitter: Duration, seed: u64) -> Run {
    full_sync_with(limit, limit, jitter, seed, None, Duration::from_secs(2)).await
}

/// A full sync by a limiter configured for `limit` against a server that enforces `server`.
async fn full_sync_with(
    limit: RateLimit,
    server: RateLimit,
    jitter: Duration,
    seed: u64,
    busy: Option<(Duration, Duration)>,
    sync_time: Duration,
) -> Run {
    let start = Instant::now();
    let world = Arc::new(World {
        limiter: SlidingWindowLimiter::new(limit),
        server: Mutex::new(Server {
            limit: server,
            accepted: Vec::new(),
            rejected: 0,
        }),
        rng: Mutex::new(Rng(seed)),
        jitter,
        busy: busy.map(|(until, extra)| (start + until, extra)),
    });
    let t0 = Instant::now();
    world.call("list", Duration::from_millis(30)).await;
    let syncs: Vec<_> = (0..100)
        .map(|_| {
            let world = world.clone();
            tokio::spawn(async move { world.call("sync", sync_time).await })
        })
        .collect();
    for s in syncs {
        s.await.unwrap();
    }
    let rejected = world.server.lock().unwrap().rejected;
    Run {
        elapsed: t0.elapsed(),
        rejected,
        floor: limit.floor(101, sync_time),
    }
}

async fn assert_full_syncs(window: Duration, within: f64) {
    let limit = RateLimit::new(10, window).unwrap();
    let jitter = Duration::from_millis(40);
    let mut worst: f64 = 0.0;
    for seed in 1..=20 {
        let run = full_sync(limit, jitter, seed).await;
        let ratio = run.elapsed.as_secs_f64() / run.floor.as_secs_f64();
        assert_eq!(run.rejected, 0, "seed {seed}: {} 429s", run.rejected);
        assert!(
            ratio <= 1.0 + within,
            "seed {seed}: {:?} against a floor of {:?} ({ratio:.4})",
            run.elapsed,
            run.floor
        );
        worst = worst.max(ratio);
    }
    eprintln!("window {window:?}: worst wall / floor = {worst:.4}");
}

#[tokio::test(start_paused = true)]
async fn two_second_windows_with_40_ms_of_arrival_jitter_draw_no_429_near_the_floor() {
    // Sync calls as long as the window: the first window's answers come back a window
    // later, so its slots keep the longer bound of an answered cold slot (twice the cold
    // margin). Worst of the 20 seeds: 1.0330 with one margin for every warm slot, 1.0206
    // with each 2xx slot keeping its own.
    assert_full_syncs(Duration::from_secs(2), 0.035).await;
}

#[tokio::test(start_paused = true)]
async fn sixty_second_windows_with_40_ms_of_arrival_jitter_draw_no_429_near_the_floor() {
    assert_full_syncs(Duration::from_secs(60), 0.01).await;
}

/// The failure a thousand-tenant bench showed: the listing and the first sync calls leave a
/// machine at its busiest and reach the server late (here 80 ms, more than the 50 ms cold
/// margin of a 1 s window); the next window leaves a calm one. The first window's latencies
/// all share the delay, so their spread does not show it, but their answers bound it.
#[tokio::test(start_paused = true)]
async fn a_first_window_that_reached_the_server_late_draws_no_429() {
    let limit = RateLimit::new(10, Duration::from_secs(1)).unwrap();
    for seed in 1..=20 {
        let busy = Some((Duration::from_millis(400), Duration::from_millis(80)));
        // The simulator's sync time at time scale 60: 2 s / 60.
        let sync_time = Duration::from_millis(33);
        let run = full_sync_with(
            limit,
            limit,
            Duration::from_millis(2),
            seed,
            busy,
            sync_time,
        )
        .await;
        assert_eq!(run.rejected, 0, "seed {seed}: {} 429s", run.rejected);
    }
}

/// A tenant configured for 15 a window against a platform that allows 10: the first two
/// windows draw their 429s (five each), the second lowers the limiter to the ten the server
/// accepted, and the rest of the run draws none (without learning: five in every window).
#[tokio::test(start_paused = true)]
async fn a_limit_set_above_the_platforms_is_learned_after_two_windows_of_429s() {
    let window = Duration::from_secs(60);
    let ours = RateLimit::new(15, window).unwrap();
    let platform = RateLimit::new(10, window).unwrap();
    for seed in 1..=5 {
        let run = full_sync_with(
            ours,
            platform,
            Duration::from_millis(40),
            seed,
            None,
            Duration::from_secs(2),
        )
        .await;
        assert!(
            run.rejected <= 10,
            "seed {seed}: {} 429s; the limit was not learned",
            run.rejected
        );
        // Ten windows of ten after the two that taught it, each a window and margins apart.
        let floor = platform.floor(101, Duration::from_secs(2));
        assert!(
            run.elapsed <= floor + window * 2,
            "seed {seed}: {:?} against the platform's floor {floor:?}",
            run.elapsed
        );
    }
}
