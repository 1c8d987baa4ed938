//! Properties of the sliding-window limiter, for any arrival pattern: however requests arrive
//! (bursts, trickles, callers that give up while queued, a 429's hold), no `N + 1` of its
//! sends ever fall within `W` plus its margin, and none goes out during a hold. Time is
//! tokio's paused clock, so every case is exact and takes no wall time.

use std::{sync::Arc, time::Duration};

use adsync_client::SlidingWindowLimiter;
use adsync_domain::RateLimit;
use proptest::prelude::*;
use tokio::time::Instant;

/// One caller: arrives `after_ms` after the previous one, and gives up after `patience_ms`
/// in the queue (`None`: waits for its turn whatever it takes).
#[derive(Debug, Clone)]
struct Caller {
    after_ms: u64,
    patience_ms: Option<u64>,
}

fn caller() -> impl Strategy<Value = Caller> {
    (
        prop_oneof![Just(0u64), 0u64..50, 0u64..3_000],
        prop::option::weighted(0.2, 0u64..2_000),
    )
        .prop_map(|(after_ms, patience_ms)| Caller {
            after_ms,
            patience_ms,
        })
}

/// Runs the callers against a limiter of `n` per `window_ms` with a fixed `margin_ms`; a hold
/// of `hold_ms` starts when the caller `hold_at` sends. Returns the send stamps and the hold's
/// span.
fn run(
    n: u32,
    window_ms: u64,
    margin_ms: u64,
    callers: Vec<Caller>,
    hold: Option<(usize, u64)>,
) -> (Vec<Instant>, Option<(Instant, Instant)>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let limit = RateLimit::new(n, Duration::from_millis(window_ms)).expect("a valid limit");
        let limiter = Arc::new(SlidingWindowLimiter::with_margin(
            limit,
            Duration::from_millis(margin_ms),
        ));
        let held = Arc::new(std::sync::Mutex::new(None));
        let mut tasks = Vec::new();
        for (i, c) in callers.into_iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(c.after_ms)).await;
            let (limiter, held) = (limiter.clone(), held.clone());
            tasks.push(tokio::spawn(async move {
                let turn = async {
                    let sent = limiter.reserve().await.send().await;
                    if let Some((at, hold_ms)) = hold
                        && at == i
                    {
                        let d = Duration::from_millis(hold_ms);
                        limiter.hold(d, sent.at);
                        *held.lock().unwrap() = Some((Instant::now(), Instant::now() + d));
                    }
                    sent.at
                };
                match c.patience_ms {
                    None => Some(turn.await),
                    Some(p) => tokio::time::timeout(Duration::from_millis(p), turn)
                        .await
                        .ok(),
                }
            }));
        }
        let mut sends = Vec::new();
        for t in tasks {
            if let Some(at) = t.await.expect("a caller") {
                sends.push(at);
            }
        }
        sends.sort();
        let hold = *held.lock().unwrap();
        (sends, hold)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_window_ever_holds_more_than_n_sends(
        n in 1u32..=12,
        window_ms in 50u64..=5_000,
        margin_ms in 0u64..=200,
        callers in prop::collection::vec(caller(), 1..60),
        hold in prop::option::of((0usize..60, 1u64..=10_000)),
    ) {
        let (sends, held) = run(n, window_ms, margin_ms, callers, hold);
        let span = Duration::from_millis(window_ms + margin_ms);
        let n = n as usize;
        for w in sends.windows(n + 1) {
            prop_assert!(
                w[n] - w[0] >= span,
                "{} sends within {:?} (< {span:?})", n + 1, w[n] - w[0]
            );
        }
        if let Some((from, until)) = held {
            prop_assert!(
                sends.iter().all(|&t| t <= from || t >= until),
                "a send during the hold {from:?}..{until:?}"
            );
        }
    }
}
