//! The limiter's rules, on a paused clock.

use super::*;
use std::sync::Arc;

const MS: Duration = Duration::from_millis(1);

fn limit(n: u32, secs: u64) -> RateLimit {
    RateLimit::new(n, Duration::from_secs(secs)).unwrap()
}

/// Checks a list of send times against the server's rule: fewer than `n` earlier sends
/// less than `w` before each one.
fn server_would_accept(sends: &[Instant], n: usize, w: Duration) -> bool {
    sends.iter().enumerate().all(|(i, t)| {
        sends[..i]
            .iter()
            .filter(|e| t.duration_since(**e) < w)
            .count()
            < n
    })
}

#[tokio::test(start_paused = true)]
async fn the_first_n_go_at_once_then_n_per_window() {
    let l = SlidingWindowLimiter::with_margin(limit(10, 60), Duration::ZERO);
    let t0 = Instant::now();
    for _ in 0..10 {
        assert_eq!(l.acquire().await, Duration::ZERO);
    }
    l.acquire().await;
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
    for _ in 0..9 {
        l.acquire().await;
    }
    assert_eq!(t0.elapsed(), Duration::from_secs(60));
    l.acquire().await;
    assert_eq!(t0.elapsed(), Duration::from_secs(120));
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_never_exceed_the_window() {
    let l = Arc::new(SlidingWindowLimiter::with_margin(limit(10, 60), 600 * MS));
    let sends = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..55)
        .map(|_| {
            let (l, sends) = (l.clone(), sends.clone());
            tokio::spawn(async move {
                l.acquire().await;
                sends.lock().unwrap().push(Instant::now());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut sends = sends.lock().unwrap().clone();
    sends.sort();
    assert_eq!(sends.len(), 55);
    assert!(server_would_accept(&sends, 10, Duration::from_secs(60)));
    // 55 requests need five full windows plus the margin, not more.
    let span = *sends.last().unwrap() - sends[0];
    assert_eq!(span, 5 * Duration::from_millis(60_600));
}

#[tokio::test(start_paused = true)]
async fn a_429_holds_every_request_of_the_client() {
    let l = SlidingWindowLimiter::new(limit(10, 60));
    l.acquire().await;
    l.hold(Duration::from_secs(30), Instant::now());
    let t0 = Instant::now();
    let waited = l.acquire().await;
    assert_eq!(waited, Duration::from_secs(30));
    assert_eq!(t0.elapsed(), Duration::from_secs(30));
    // A shorter hold does not cut a longer one short.
    l.hold(Duration::from_secs(20), Instant::now());
    l.hold(Duration::from_secs(5), Instant::now());
    assert_eq!(l.acquire().await, Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn an_absurd_hold_neither_panics_nor_overflows() {
    let l = SlidingWindowLimiter::new(limit(10, 60));
    l.hold(Duration::MAX, Instant::now());
    let wait = l.predicted_wait(Duration::ZERO);
    assert!(wait >= Duration::from_secs(86_000) && wait <= Duration::from_secs(86_400));
    assert_eq!(l.predicted_wait(Duration::MAX), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_429s_widens_the_margin_once() {
    let l = SlidingWindowLimiter::with_margin(limit(10, 1), 10 * MS);
    let burst: Vec<Sent> =
        futures::future::join_all((0..5).map(|_| async { l.reserve().await.send().await })).await;
    tokio::time::advance(30 * MS).await;

    // Five 429s for requests of the same burst: one event.
    for sent in &burst {
        l.hold(Duration::ZERO, sent.at);
    }
    assert_eq!(l.margin(), 20 * MS);

    // A 429 for a request sent after that widening is a new event.
    tokio::time::advance(MS).await;
    let later = l.reserve().await.send().await;
    tokio::time::advance(30 * MS).await;
    l.hold(Duration::ZERO, later.at);
    l.hold(Duration::ZERO, later.at);
    assert_eq!(l.margin(), 40 * MS);

    // Doubling stops at a fifth of the window.
    for _ in 0..10 {
        let sent = l.reserve().await.send().await;
        tokio::time::advance(MS).await;
        l.hold(Duration::ZERO, sent.at);
    }
    assert_eq!(l.margin(), 200 * MS);
}

#[tokio::test(start_paused = true)]
async fn available_counts_free_slots() {
    let l = SlidingWindowLimiter::new(limit(3, 1));
    assert_eq!(l.available(), 3);
    l.acquire().await;
    assert_eq!(l.available(), 2);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(l.available(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_permit_costs_no_slot() {
    let l = SlidingWindowLimiter::with_margin(limit(1, 1), Duration::ZERO);
    let permit = l.reserve().await;
    drop(permit);
    assert_eq!(l.available(), 1);
    let t0 = Instant::now();
    assert_eq!(l.acquire().await, Duration::ZERO);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(l.state().queued, 0);
}

#[tokio::test(start_paused = true)]
async fn the_stamp_is_the_send_not_the_reservation() {
    let l = Arc::new(SlidingWindowLimiter::with_margin(
        limit(1, 1),
        Duration::ZERO,
    ));
    let t0 = Instant::now();
    let permit = l.reserve().await;
    // Something slow between the reservation and the send (a token refresh).
    tokio::time::advance(300 * MS).await;
    let sent = permit.send().await;
    assert_eq!(sent.at, t0 + 300 * MS);
    assert_eq!(sent.waited, 300 * MS);

    // The next send waits a full window from the real send, not from the reservation.
    let next = l.reserve().await.send().await;
    assert_eq!(next.at, t0 + 1300 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_permit_holds_the_turn_until_it_sends() {
    let l = Arc::new(SlidingWindowLimiter::with_margin(
        limit(5, 1),
        Duration::ZERO,
    ));
    let permit = l.reserve().await;
    let other = tokio::spawn({
        let l = l.clone();
        async move { l.reserve().await.send().await.at }
    });
    tokio::time::advance(100 * MS).await;
    assert!(
        !other.is_finished(),
        "another caller got a turn while a permit was held"
    );
    let mine = permit.send().await;
    let theirs = other.await.unwrap();
    assert!(theirs >= mine.at);
}

#[tokio::test(start_paused = true)]
async fn a_send_after_a_hold_came_up_waits_for_it() {
    let l = SlidingWindowLimiter::with_margin(limit(5, 1), Duration::ZERO);
    let permit = l.reserve().await;
    l.hold(500 * MS, Instant::now());
    let t0 = Instant::now();
    let sent = permit.send().await;
    assert_eq!(sent.at, t0 + 500 * MS);
}

#[tokio::test(start_paused = true)]
async fn predicted_wait_counts_the_log_the_hold_and_the_queue() {
    let l = Arc::new(SlidingWindowLimiter::with_margin(
        limit(2, 1),
        Duration::ZERO,
    ));
    assert_eq!(l.predicted_wait(Duration::ZERO), Duration::ZERO);
    l.acquire().await;
    l.acquire().await;
    // Full until 1 s.
    assert_eq!(l.predicted_wait(Duration::ZERO), 1000 * MS);
    assert_eq!(l.predicted_wait(400 * MS), 600 * MS);
    assert_eq!(l.predicted_wait(2000 * MS), Duration::ZERO);
    // Two queued callers take the two slots that free at 1 s: we would go at 2 s.
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let l = l.clone();
            tokio::spawn(async move { l.acquire().await })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(l.predicted_wait(Duration::ZERO), 2000 * MS);
    // With a hold until 3 s, the queued two go at 3 s and we a window later.
    l.hold(Duration::from_secs(3), Instant::now());
    assert_eq!(l.predicted_wait(Duration::ZERO), Duration::from_secs(4));
    for w in waiters {
        w.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_measured_margin_wakes_a_waiter_held_by_the_warm_up_margin() {
    let l = Arc::new(SlidingWindowLimiter::new(
        RateLimit::new(1, 2000 * MS).unwrap(),
    ));
    assert_eq!(l.margin(), 400 * MS, "warm-up: a fifth of the window");
    let t0 = Instant::now();
    l.acquire().await;
    let waiter = tokio::spawn({
        let l = l.clone();
        async move { l.acquire().await }
    });
    tokio::task::yield_now().await;
    tokio::time::advance(2010 * MS).await;
    for _ in 0..8 {
        l.record_latency("list", 20 * MS);
    }
    assert_eq!(l.margin(), 10 * MS, "the floor");
    // The slot in the log was sent cold (before any measurement): it is reused after the
    // cold margin, five times the default (20 ms), not after the warm-up margin (400 ms).
    let waited = waiter.await.unwrap();
    assert_eq!(
        waited,
        2100 * MS,
        "woken when the margin shrank, at the cold margin"
    );
    assert_eq!(t0.elapsed(), 2100 * MS);
    // That send was made with the margin measured: its slot is reused after the floor.
    l.acquire().await;
    assert_eq!(t0.elapsed(), 4110 * MS);
}

#[tokio::test(start_paused = true)]
async fn the_first_window_of_a_limiter_is_reused_after_the_cold_margin() {
    // Ten per 1 s window (the simulator's scaled limit): the first ten go at once, before any
    // answer; then answers measure a spread of nothing (the 10 ms floor applies).
    let l = SlidingWindowLimiter::new(RateLimit::new(10, 1000 * MS).unwrap());
    let t0 = Instant::now();
    for _ in 0..10 {
        l.acquire().await;
    }
    for _ in 0..8 {
        l.record_latency("sync", 33 * MS);
    }
    assert_eq!(l.margin(), 10 * MS);
    // The eleventh reuses a cold slot: 1 s plus 50 ms, five times the 10 ms default.
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1050 * MS);
    // The ten cold slots are all reused at 1.05 s; the next window's slots were sent with a
    // measured margin and are reused after 1 s plus 10 ms.
    for _ in 0..9 {
        l.acquire().await;
    }
    assert_eq!(t0.elapsed(), 1050 * MS);
    l.acquire().await;
    assert_eq!(t0.elapsed(), 2060 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_cold_slot_once_answered_is_busy_until_its_answer_plus_the_window() {
    // Ten per 1 s. The first ten go at once, cold; the machine is busy and their answers
    // come back 90 ms later, more than the 50 ms cold margin: the server may have counted
    // them that late, and the next window waits for that, not for the cold margin.
    let l = SlidingWindowLimiter::new(RateLimit::new(10, 1000 * MS).unwrap());
    let t0 = Instant::now();
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.push(l.reserve().await.send().await);
    }
    tokio::time::advance(90 * MS).await;
    for s in &sent {
        l.answered(s.at, false);
        l.record_latency("sync", 90 * MS);
    }
    assert_eq!(l.margin(), 10 * MS, "no spread among the ten: the floor");
    assert_eq!(
        l.planning_margin(),
        90 * MS + ANSWER_SLACK,
        "a planner keeps the answers' bound"
    );
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1090 * MS + ANSWER_SLACK);
}

#[tokio::test(start_paused = true)]
async fn an_answered_cold_slot_keeps_at_most_twice_the_cold_margin() {
    // An answer 300 ms after a cold send at a 1 s window says more about the server's
    // processing than about its arrival: the slot keeps twice the 50 ms cold margin.
    let l = SlidingWindowLimiter::new(RateLimit::new(1, 1000 * MS).unwrap());
    let t0 = Instant::now();
    let first = l.reserve().await.send().await;
    tokio::time::advance(300 * MS).await;
    l.answered(first.at, false);
    for _ in 0..8 {
        l.record_latency("sync", 300 * MS);
    }
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_cold_slot_answered_early_is_reused_before_the_cold_margin() {
    let l = SlidingWindowLimiter::new(RateLimit::new(1, 1000 * MS).unwrap());
    let t0 = Instant::now();
    let first = l.reserve().await.send().await;
    tokio::time::advance(5 * MS).await;
    l.answered(first.at, false);
    // Not settled (no latency recorded): unanswered, it would wait for the warm-up margin.
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1005 * MS + ANSWER_SLACK);
}

#[tokio::test(start_paused = true)]
async fn a_warm_slot_is_freed_by_its_answer_when_that_comes_before_the_margin() {
    let l = SlidingWindowLimiter::with_margin(RateLimit::new(1, 1000 * MS).unwrap(), 100 * MS);
    let t0 = Instant::now();
    let first = l.reserve().await.send().await;
    tokio::time::advance(20 * MS).await;
    l.answered(first.at, false);
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1020 * MS + ANSWER_SLACK, "the answer's bound");
    // Answered after the margin: the margin decides.
    let second = Instant::now();
    tokio::time::advance(300 * MS).await;
    l.answered(second, false);
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1020 * MS + ANSWER_SLACK + 1100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_warm_slot_answered_ok_keeps_its_latency_over_the_endpoints_least() {
    let l = SlidingWindowLimiter::new(RateLimit::new(1, 1000 * MS).unwrap());
    // Latencies from 30 to 100 ms: a margin of 70 * 1.25 * 9/7 + 3 = 115.5 ms in force.
    for i in 0..8 {
        l.record_latency("sync", 30 * MS + i * 10 * MS);
    }
    assert!(
        l.margin() > 115 * MS && l.margin() < 116 * MS,
        "{:?}",
        l.margin()
    );
    let t0 = Instant::now();
    let first = l.reserve().await.send().await;
    tokio::time::advance(45 * MS).await;
    l.answered_ok(first.at, "sync", 45 * MS);
    // 15 ms over the least latency: reused after 18 ms, not after the 115.5 ms in force.
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1018 * MS);
    // One that came back slow keeps more, but never more than the margin in force.
    let second = Instant::now();
    tokio::time::advance(100 * MS).await;
    l.answered_ok(second, "sync", 100 * MS);
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1018 * MS + 1073 * MS);
    let third = Instant::now();
    tokio::time::advance(400 * MS).await;
    l.answered_ok(third, "sync", 400 * MS);
    l.acquire().await;
    assert_eq!(t0.elapsed(), 2091 * MS + 1000 * MS + l.margin());
}

#[tokio::test(start_paused = true)]
async fn a_fixed_margin_keeps_no_margin_per_slot() {
    let l = SlidingWindowLimiter::with_margin(RateLimit::new(1, 1000 * MS).unwrap(), 100 * MS);
    for _ in 0..8 {
        l.record_latency("sync", 20 * MS);
    }
    let t0 = Instant::now();
    let first = l.reserve().await.send().await;
    tokio::time::advance(50 * MS).await;
    l.answered_ok(first.at, "sync", 50 * MS);
    l.acquire().await;
    assert_eq!(
        t0.elapsed(),
        1050 * MS + ANSWER_SLACK,
        "the answer's bound, not 33 ms of its own"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cold_listing_answered_late_is_busy_until_its_answer_plus_the_window() {
    // Ten per 1 s. The listing goes cold and comes back after 300 ms; nothing tells how much
    // of that was the server's processing and how much the way there (one listing per run is
    // never enough latencies to trust), so its slot keeps the answer's bound whole, past the
    // 100 ms an answered cold slot keeps at most, and it is not forgotten while busy.
    let l = SlidingWindowLimiter::new(RateLimit::new(10, 1000 * MS).unwrap());
    let t0 = Instant::now();
    let listing = l.reserve().await.send().await;
    tokio::time::advance(300 * MS).await;
    l.answered_ok(listing.at, "list", 300 * MS);
    let mut syncs = Vec::new();
    for _ in 0..9 {
        syncs.push(l.reserve().await.send().await);
    }
    tokio::time::advance(33 * MS).await;
    for s in &syncs {
        l.answered_ok(s.at, "sync", 33 * MS);
    }
    l.acquire().await;
    assert_eq!(t0.elapsed(), 1300 * MS + ANSWER_SLACK);
}
