//! What a platform sends that its contract does not promise: statuses adsync does not know,
//! fields it does not name, sync answers of the wrong shape, absurd `retry_after` values and
//! token lifetimes, and chaos. Nothing is lost, nothing is retried that a retry cannot mend,
//! and every run ends.

mod common;

use std::time::Duration;

use adsync_client::AdClient;
use adsync_domain::RateLimit;
use adsync_sim::Profile;
use adsync_store::{RunStatus, Stage, Store};
use common::*;
use serde_json::{Value, json};

async fn unknown_statuses_and_extra_fields_are_stored_verbatim_without_dead_letters(store: Store) {
    let sim = calm(20, |c| {
        c.unknown_status_every = Some(5);
        c.extra_fields = true;
    })
    .await;

    let report = run(&engine(&sim, &store, |c| c.page_size = 10)).await;

    assert_ended(&report, RunStatus::Succeeded, 0);
    assert!(store.dead_letters(TENANT, true).await.unwrap().is_empty());
    assert_eq!(report.counters.dead_lettered, 0);
    assert_eq!(warning_counts(&report).get("unknown_status"), Some(&4));
    let rows = stored(&store).await;
    assert_eq!(rows.len(), 20);
    for (id, c) in &rows {
        let number: u64 = id.trim_start_matches("campaign_").parse().unwrap();
        if number.is_multiple_of(5) {
            assert_eq!(c.status, "archived_v2", "{id}");
        } else {
            assert!(["active", "paused", "completed"].contains(&c.status.as_str()));
        }
        let raw: Value = serde_json::from_str(c.raw.as_deref().expect("raw kept")).unwrap();
        assert_eq!(raw["id"], json!(id));
        assert_eq!(raw["status"], json!(c.status));
        assert_eq!(
            raw["bid_strategy"],
            json!({"kind": "cpc", "max_bid": 0.35, "caps": [1, 2, 3]}),
            "{id}"
        );
        assert_eq!(raw["labels"], json!(["q4", "brand"]), "{id}");
        assert!(c.synced_at.is_some());
    }
}

on_both_databases!(unknown_statuses_and_extra_fields_are_stored_verbatim_without_dead_letters);

#[tokio::test]
async fn sync_answers_of_the_wrong_shape_are_dead_lettered_after_one_request_each() {
    let (store, _dir) = sqlite().await;
    let sim = calm(30, |c| c.wrong_shape_sync_every = Some(7)).await;

    let report = run(&engine(&sim, &store, |c| c.page_size = 10)).await;

    assert_ended(&report, RunStatus::Partial, 2);
    assert_eq!(sim.stats().count("sync", "wrong_shape"), 4, "no retry");
    let mut letters = store.dead_letters(TENANT, false).await.unwrap();
    letters.sort_by_key(|l| {
        l.campaign_id
            .trim_start_matches("campaign_")
            .parse::<u64>()
            .unwrap()
    });
    let dead: Vec<&str> = letters.iter().map(|l| l.campaign_id.as_str()).collect();
    assert_eq!(
        dead,
        ["campaign_7", "campaign_14", "campaign_21", "campaign_28"]
    );
    for l in &letters {
        assert_eq!(l.stage, Stage::Sync);
        assert_eq!(l.attempts, 1);
        assert!(
            l.reason.contains("does not match its API contract"),
            "{}",
            l.reason
        );
    }
    assert_eq!(report.counters.dead_lettered, 4);
    assert_eq!(report.counters.campaigns_stored, 30);
    assert_eq!(report.counters.campaigns_synced, 26);
    assert!(report.listing.complete, "the listing itself was fine");
    let rows = stored(&store).await;
    for (id, c) in &rows {
        assert_eq!(c.synced_at.is_none(), dead.contains(&id.as_str()), "{id}");
    }
}

/// A client that believes it may send 20 calls per 100 ms to a platform that allows 2: it
/// draws 429s whatever it does. It waits at most one window, whatever a 429 asks for.
fn overconfident_client(sim: &adsync_sim::Simulator) -> AdClient {
    let mut c = client_config(sim, adsync_sim::REFERENCE_PASSWORD);
    c.rate_limit = RateLimit::new(20, Duration::from_millis(100)).unwrap();
    c.max_retry_after = Some(Duration::from_millis(100));
    AdClient::new(c).unwrap()
}

#[tokio::test]
async fn an_absurd_retry_after_is_clamped_and_the_run_completes() {
    for retry_after in [json!(1e12), json!("soon")] {
        let (store, _dir) = sqlite().await;
        let sim = calm(20, |c| {
            c.rate_limit = RateLimit::new(2, Duration::from_secs(60)).unwrap();
            c.retry_after_body = Some(retry_after.clone());
        })
        .await;
        let engine = engine_with(overconfident_client(&sim), &store, |c| {
            c.page_size = 10;
            c.sync_concurrency = Some(4);
        });

        let report = run(&engine).await;

        assert!(
            sim.stats().rate_limited > 0,
            "{retry_after}: no 429 was drawn"
        );
        assert_ended(&report, RunStatus::Succeeded, 0);
        assert_eq!(report.counters.campaigns_synced, 20, "{retry_after}");
        assert_each_listed_campaign_stored_and_synced_once(&sim, &store).await;
    }
}

#[tokio::test]
async fn absurd_token_lifetimes_do_not_stop_the_run() {
    for expires_in in [json!(1e300), json!(-1), json!("abc")] {
        let (store, _dir) = sqlite().await;
        // Tokens really expire after 200 ms (two windows), whatever the answer says: the
        // run (44 calls, at least 340 ms at 10 per window) outlives its first token, and the
        // client learns it from the 401s.
        let sim = calm(40, |c| {
            c.expires_in = Some(expires_in.clone());
            c.token_ttl = Duration::from_secs(120);
        })
        .await;

        let report = run(&engine(&sim, &store, |c| c.page_size = 10)).await;

        assert_ended(&report, RunStatus::Succeeded, 0);
        assert_eq!(report.counters.campaigns_synced, 40, "{expires_in}");
        assert!(
            sim.stats().tokens_issued >= 2,
            "{expires_in}: the run outlived its first token"
        );
    }
}

#[tokio::test]
async fn chaos_stores_every_campaign_exactly_once_with_names_byte_for_byte() {
    let (store, _dir) = sqlite().await;
    let sim = sim(Profile::Chaos, |c| c.seed = 11).await;
    // Hangs are part of chaos: give up on them sooner than the other tests do.
    let mut config = client_config(&sim, adsync_sim::REFERENCE_PASSWORD);
    config.request_timeout = Duration::from_millis(300);
    let engine = engine_with(AdClient::new(config).unwrap(), &store, |c| c.page_size = 10);

    let report = run(&engine).await;

    assert_ended(&report, RunStatus::Succeeded, 0);
    let rows = stored(&store).await;
    assert_eq!(rows.len(), 100);
    assert!(rows.values().all(|c| c.synced_at.is_some()));
    for name in [
        "Robert'); DROP TABLE campaigns;--",
        "広告キャンペーン 🚀",
        "multi\nline\r\nname",
        "  leading and trailing spaces  ",
    ] {
        assert!(
            rows.values().any(|c| c.name.starts_with(name)),
            "{name:?} was not stored byte for byte"
        );
    }
    let stats = sim.stats();
    let faults: u64 = ["503", "hang", "reset", "truncated"]
        .iter()
        .map(|o| stats.count("list", o) + stats.count("sync", o))
        .sum();
    assert!(
        faults >= 10,
        "chaos was too calm to prove anything: {faults}"
    );
    assert_eq!(report.counters.campaigns_stored, 100);
    assert_eq!(report.counters.campaigns_synced, 100);
}
