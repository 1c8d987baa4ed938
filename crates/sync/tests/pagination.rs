//! Listing a platform whose `has_more` lies: the reference server's `page < 10`, a `has_more`
//! that never turns false (empty pages, the last page again, invented campaigns), with and
//! without a `total`, and pages of the wrong shape. Each run stores exactly what exists, ends
//! after a bounded number of listing calls, and says whether its listing is complete.

mod common;

use adsync_sim::{HasMore, Profile};
use adsync_store::{RunStatus, Stage, Store};
use adsync_sync::PagerLimits;
use common::*;

/// The reference sync: the reference server's data and quirks (its `has_more` is
/// `page < 10` whatever the page size, every 5th listing call fails) at 100 per page.
async fn the_reference_quirk_with_100_per_page_takes_one_listing_call_and_stores_only_real_campaigns(
    store: Store,
) {
    let sim = sim(Profile::Reference, |_| {}).await;
    let engine = engine(&sim, &store, |c| c.page_size = 100);

    let report = run(&engine).await;

    assert_ended(&report, RunStatus::Succeeded, 0);
    let stats = sim.stats();
    assert_eq!(stats.list_calls_ok, 1, "{stats:?}");
    assert_eq!(stats.pages_served.iter().collect::<Vec<_>>(), [(&1, &1)]);
    assert_eq!(
        stats.count("list", "503"),
        0,
        "the first call is not a 5th one"
    );
    assert_eq!(store.campaign_count(TENANT).await.unwrap(), 100);
    assert_eq!(store.metrics_count(TENANT).await.unwrap(), 100);
    assert_eq!(stats.syncs.len(), 100);
    assert!(stats.syncs.values().all(|n| *n == 1));
    assert!(!stats.syncs.contains_key("campaign_101"));
    assert_each_listed_campaign_stored_and_synced_once(&sim, &store).await;
    let c = report.counters;
    assert_eq!(
        (
            c.pages,
            c.campaigns_seen,
            c.campaigns_stored,
            c.campaigns_synced
        ),
        (1, 100, 100, 100)
    );
    assert_eq!(c.dead_lettered, 0);
    assert!(report.error.is_none(), "{:?}", report.error);
    assert!(report.listing.complete);
    assert_eq!(report.listing.reported_total, Some(100));
    assert_eq!(
        warning_counts(&report).get("has_more_ignores_total"),
        Some(&1)
    );
}

on_both_databases!(
    the_reference_quirk_with_100_per_page_takes_one_listing_call_and_stores_only_real_campaigns
);

#[tokio::test]
async fn the_reference_quirk_with_30_per_page_ignores_the_invented_records_past_the_total() {
    let (store, _dir) = sqlite().await;
    let sim = sim(Profile::Reference, |_| {}).await;
    let engine = engine(&sim, &store, |c| c.page_size = 30);

    let report = run(&engine).await;

    assert_ended(&report, RunStatus::Succeeded, 0);
    assert_eq!(pages_answered(&sim), 4);
    assert_eq!(pages_served(&sim), [1, 2, 3, 4]);
    assert_eq!(store.campaign_count(TENANT).await.unwrap(), 100);
    assert_eq!(report.counters.campaigns_stored, 100);
    assert_eq!(sim.stats().syncs.len(), 100);
    assert!(!sim.stats().syncs.contains_key("campaign_101"));
    assert!(report.listing.complete);
    assert_eq!(warning_counts(&report).get("records_past_total"), Some(&1));
}

/// What one run against a lying `has_more` did.
struct Listed {
    status: RunStatus,
    exit_code: u8,
    complete: bool,
    /// Well-formed pages the platform answered.
    pages: u64,
    /// Their page numbers.
    pages_served: Vec<u64>,
    stored: i64,
    warnings: Vec<String>,
}

/// Lists 25 campaigns in pages of 10 from a platform whose `has_more` follows `mode`.
async fn list_25(mode: HasMore, omit_total: bool, max_pages: u64) -> Listed {
    let (store, _dir) = sqlite().await;
    let sim = calm(25, |c| {
        c.has_more = mode;
        c.omit_total = omit_total;
    })
    .await;
    let engine = engine(&sim, &store, |c| {
        c.page_size = 10;
        c.pager = PagerLimits {
            max_pages,
            ..PagerLimits::default()
        };
    });

    let report = run(&engine).await;

    // Whatever the mode: every stored campaign was synced once, nothing was dead-lettered,
    // and the report's counters are the database's.
    let rows = stored(&store).await;
    let calls = syncs(&sim);
    assert!(rows.values().all(|c| c.synced_at.is_some()));
    assert_eq!(calls.len(), rows.len());
    assert!(calls.values().all(|n| *n == 1), "{calls:?}");
    assert_eq!(report.counters.dead_lettered, 0);
    assert_eq!(report.counters.campaigns_stored, rows.len() as i64);
    assert_eq!(report.counters.campaigns_synced, rows.len() as i64);
    assert_eq!(report.counters.campaigns_removed, 0);
    assert!(rows.values().all(|c| c.removed_at.is_none()));
    assert_eq!(report.listing.pass, 1, "listing again would not help");
    if !report.listing.complete {
        assert!(
            report.error.as_deref().unwrap_or("").contains("complete"),
            "an incomplete listing says so: {:?}",
            report.error
        );
    }
    Listed {
        status: report.status,
        exit_code: report.exit_code(),
        complete: report.listing.complete,
        pages: pages_answered(&sim),
        pages_served: pages_served(&sim),
        stored: rows.len() as i64,
        warnings: report.warnings.iter().map(|w| w.kind.clone()).collect(),
    }
}

#[tokio::test]
async fn an_endless_has_more_with_a_total_ends_when_every_campaign_was_listed() {
    let listed = list_25(HasMore::Endless, false, 1000).await;

    assert_eq!(listed.pages, 3);
    assert_eq!(listed.pages_served, [1, 2, 3]);
    assert_eq!(listed.stored, 25);
    assert!(listed.complete);
    assert_eq!((listed.status, listed.exit_code), (RunStatus::Succeeded, 0));
    assert!(
        listed
            .warnings
            .contains(&"has_more_ignores_total".to_owned())
    );
}

#[tokio::test]
async fn an_endless_has_more_without_a_total_ends_at_the_first_empty_page() {
    let listed = list_25(HasMore::Endless, true, 1000).await;

    assert_eq!(listed.pages, 4, "three pages of data, then one empty page");
    assert_eq!(listed.pages_served, [1, 2, 3, 4]);
    assert_eq!(listed.stored, 25);
    // An empty page ends an offset listing: nothing is past it (the pager's docs).
    assert!(listed.complete);
    assert_eq!((listed.status, listed.exit_code), (RunStatus::Succeeded, 0));
    assert!(listed.warnings.contains(&"empty_page_has_more".to_owned()));
}

#[tokio::test]
async fn a_repeated_last_page_with_a_total_ends_when_every_campaign_was_listed() {
    let listed = list_25(HasMore::Repeat, false, 1000).await;

    assert_eq!(listed.pages, 3);
    assert_eq!(listed.pages_served, [1, 2, 3]);
    assert_eq!(listed.stored, 25);
    assert!(listed.complete);
    assert_eq!((listed.status, listed.exit_code), (RunStatus::Succeeded, 0));
}

#[tokio::test]
async fn a_repeated_last_page_without_a_total_stops_at_the_repeat_and_is_not_trusted() {
    let listed = list_25(HasMore::Repeat, true, 1000).await;

    assert_eq!(
        listed.pages, 4,
        "three pages, then the repeat that brings nothing new"
    );
    assert_eq!(listed.pages_served, [1, 2, 3, 4]);
    assert_eq!(listed.stored, 25);
    assert!(!listed.complete);
    assert_eq!((listed.status, listed.exit_code), (RunStatus::Partial, 2));
    assert!(listed.warnings.contains(&"no_new_ids".to_owned()));
    assert!(listed.warnings.contains(&"incomplete_listing".to_owned()));
}

#[tokio::test]
async fn invented_campaigns_with_a_total_are_ignored_past_it() {
    let listed = list_25(HasMore::Invent, false, 1000).await;

    assert_eq!(listed.pages, 3);
    assert_eq!(listed.pages_served, [1, 2, 3]);
    assert_eq!(listed.stored, 25, "campaign_26 and later do not exist");
    assert!(listed.complete);
    assert_eq!((listed.status, listed.exit_code), (RunStatus::Succeeded, 0));
    assert!(listed.warnings.contains(&"records_past_total".to_owned()));
}

#[tokio::test]
async fn invented_campaigns_without_a_total_are_followed_up_to_the_page_cap_only() {
    let listed = list_25(HasMore::Invent, true, 6).await;

    assert_eq!(listed.pages, 6);
    assert_eq!(listed.pages_served, [1, 2, 3, 4, 5, 6]);
    // Without a total nothing tells invented campaigns from real ones: what the capped
    // listing saw is stored, and the run says it cannot vouch for it.
    assert_eq!(listed.stored, 60);
    assert!(!listed.complete);
    assert_eq!((listed.status, listed.exit_code), (RunStatus::Partial, 2));
    assert!(listed.warnings.contains(&"page_cap".to_owned()));
    assert!(listed.warnings.contains(&"incomplete_listing".to_owned()));
}

#[tokio::test]
async fn a_page_of_the_wrong_shape_is_dead_lettered_after_one_request_and_the_rest_are_stored() {
    let (store, _dir) = sqlite().await;
    let sim = calm(30, |c| c.wrong_shape_pages = vec![2]).await;
    let engine = engine(&sim, &store, |c| c.page_size = 10);

    let report = run(&engine).await;

    assert_ended(&report, RunStatus::Partial, 2);
    assert_eq!(
        report.error.as_deref().map(|e| e.contains("resume")),
        Some(false)
    );
    assert_eq!(
        sim.stats().count("list", "wrong_shape"),
        1,
        "no retry of page 2"
    );
    assert_eq!(sim.stats().pages_served.get(&2), None);
    let letters = store.dead_letters(TENANT, false).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(
        (letter.stage, letter.campaign_id.as_str()),
        (Stage::Listing, "page 2")
    );
    assert!(
        letter.reason.contains("does not match its API contract") && letter.reason.contains("data"),
        "{}",
        letter.reason
    );
    let rows = stored(&store).await;
    let mut expected = ids((1..=10).chain(21..=30));
    expected.sort_unstable();
    assert_eq!(rows.keys().cloned().collect::<Vec<_>>(), expected);
    assert!(rows.values().all(|c| c.synced_at.is_some()));
    assert!(!report.listing.complete);
    assert_eq!(report.counters.dead_lettered, 1);
    assert_eq!(report.counters.campaigns_removed, 0);
}

#[tokio::test]
async fn a_page_dead_lettered_by_one_run_is_resolved_by_the_next_complete_listing() {
    let (store, _dir) = sqlite().await;
    let broken = calm(30, |c| c.wrong_shape_pages = vec![2]).await;
    let first = run(&engine(&broken, &store, |c| c.page_size = 10)).await;
    assert_ended(&first, RunStatus::Partial, 2);
    let fixed = calm(30, |_| {}).await;

    let second = run(&engine(&fixed, &store, |c| c.page_size = 10)).await;

    assert_ended(&second, RunStatus::Succeeded, 0);
    assert_eq!(second.counters.campaigns_stored, 30);
    let letters = store.dead_letters(TENANT, true).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].resolved);
    assert_eq!(
        letters[0].resolution,
        Some(adsync_store::Resolution::Listed)
    );
    assert_eq!(
        store.run(first.run_id).await.unwrap().counters,
        first.counters,
        "the first run's counters are frozen"
    );
}
