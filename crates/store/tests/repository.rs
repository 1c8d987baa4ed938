//! The repository on both databases: pages, campaigns and the checkpoint, dead letters,
//! tenants. Every test body runs on PostgreSQL (a fresh database per test, from
//! `DATABASE_URL`) and on SQLite, through the same public API.

#[macro_use]
mod common;

use adsync_domain::{Campaign, CampaignStatus, Money};
use adsync_store::{Resolution, RunEnding, Stage, Store, StoreError};
use chrono::Utc;
use common::*;

on_both_databases!(one_running_run_per_tenant,);
on_both_databases!(
    storing_a_page_twice_or_in_a_new_run_never_duplicates,
    names_are_byte_exact_and_budgets_exact_to_the_cent,
    the_checkpoint_tracks_pages_and_synced_campaigns,
    dead_letters_keep_the_reason_count_attempts_and_resolve,
    a_dead_letter_that_fails_again_after_it_resolved_is_open_again,
    duplicate_ids_within_a_page_collapse_to_the_last,
    tenants_are_isolated,
    a_page_larger_than_one_statement_is_stored_whole_and_once,
    unknown_statuses_are_stored_verbatim,
    the_raw_record_is_stored_as_received,
    a_raw_record_jsonb_refuses_is_still_stored_as_its_text,
);

async fn storing_a_page_twice_or_in_a_new_run_never_duplicates(store: Store) {
    // Arrange
    let (run1, lease1) = start(&store, "t").await;
    let first = campaigns(&["c1", "c2", "c3"], 100);
    let second = vec![
        campaign("c1", 150),
        campaign("c2", 250),
        campaign("c3", 350),
    ];

    // Act
    let a = store
        .store_page(&lease1, &page(complete(1), &ids(&first), &first))
        .await
        .unwrap();
    let b = store
        .store_page(&lease1, &page(complete(1), &ids(&first), &first))
        .await
        .unwrap();
    store
        .finish_run(&lease1, &ending(RunEnding::Finished))
        .await
        .unwrap();
    let (run2, lease2) = start(&store, "t").await;
    store
        .store_page(&lease2, &page(complete(1), &ids(&second), &second))
        .await
        .unwrap();

    // Assert
    assert_eq!(a.newly_stored, 3);
    assert_eq!(b.newly_stored, 0, "the same page again stores nothing new");
    assert_eq!(store.campaign_count("t").await.unwrap(), 3);
    assert_eq!(
        store.metrics_count("t").await.unwrap(),
        6,
        "one metrics row per campaign per run"
    );
    let rows = store.campaigns("t").await.unwrap();
    assert_eq!(
        rows.iter().map(|c| c.impressions).collect::<Vec<_>>(),
        [150, 250, 350]
    );
    assert!(rows.iter().all(|c| c.last_run_id == run2.id));
    let run1 = store.run(run1.id).await.unwrap();
    assert_eq!(
        (run1.counters.pages, run1.counters.campaigns_seen),
        (2, 6),
        "pages and records seen count every page received"
    );
    assert_eq!(run1.counters.campaigns_stored, 3, "stored counts campaigns");
}

async fn names_are_byte_exact_and_budgets_exact_to_the_cent(store: Store) {
    // Arrange
    let (_, lease) = start(&store, "t").await;
    let names = [
        "Robert'); DROP TABLE campaigns;--",
        "O'Brien \"Summer\" Sale",
        "multi\nline\r\nname\ttab \\ back",
        "広告キャンペーン 🚀 Ünïcødé שלום",
        "  spaces  ",
        "%s %n {} ${x} <script>",
    ];
    let budgets = [0, 1, 99, 110_050, 999_999_999_999_999];
    let campaigns: Vec<_> = names
        .iter()
        .zip(budgets.iter().cycle())
        .enumerate()
        .map(|(i, (name, cents))| Campaign {
            name: (*name).to_owned(),
            budget: Money::from_cents(*cents).unwrap(),
            ..campaign(&format!("c{i}"), 1)
        })
        .collect();

    // Act
    store
        .store_page(&lease, &page(complete(1), &ids(&campaigns), &campaigns))
        .await
        .unwrap();

    // Assert
    let stored = store.campaigns("t").await.unwrap();
    assert_eq!(stored.len(), names.len());
    for (c, s) in campaigns.iter().zip(&stored) {
        assert_eq!(s.name.as_bytes(), c.name.as_bytes());
        assert_eq!(s.budget, c.budget.to_string());
    }
    assert_eq!(stored[0].budget, "0.00");
    assert_eq!(stored[1].budget, "0.01");
    assert_eq!(stored[2].budget, "0.99");
    assert_eq!(stored[3].budget, "1100.50");
    assert_eq!(stored[4].budget, "9999999999999.99");
}

async fn the_checkpoint_tracks_pages_and_synced_campaigns(store: Store) {
    // Arrange: process A stores page 1 of 2, syncs one campaign of it, and dies.
    let (run, a) = start_and_die(&store, "t").await;
    let p1 = campaigns(&["c1", "c2"], 1);
    let p2 = campaigns(&["c3", "c4"], 1);
    store
        .store_page(&a, &page(more(2), &ids(&p1), &p1))
        .await
        .unwrap();

    // Act
    store.mark_synced(&a, &["c1"], Utc::now()).await.unwrap();
    store.mark_synced(&a, &["c1"], Utc::now()).await.unwrap();
    let midway = store.run(run.id).await.unwrap();
    let b = take_over(&store, run.id, "test:2").await;
    let resumed = store.run(run.id).await.unwrap();
    let pending_at_take_over = store.pending_syncs(run.id).await.unwrap();
    store
        .store_page(&b, &page(complete(1), &ids(&p2), &p2))
        .await
        .unwrap();

    // Assert
    assert_eq!(midway.cursor.next_page, 2);
    assert!(!midway.cursor.done);
    assert_eq!(midway.counters.pages, 1);
    assert_eq!(
        midway.counters.campaigns_synced, 1,
        "marking the same campaign synced twice counts it once"
    );
    assert_eq!(
        resumed.cursor, midway.cursor,
        "the new owner resumes at page 2"
    );
    assert_eq!(resumed.resumes, 1);
    assert_eq!(pending_at_take_over, ["c2"]);
    assert_eq!(
        store.pending_syncs(run.id).await.unwrap(),
        ["c2", "c3", "c4"]
    );
    let done = store.run(run.id).await.unwrap();
    assert!(done.cursor.done && done.cursor.complete);
    assert_eq!(
        (done.counters.pages, done.counters.campaigns_stored),
        (2, 4)
    );
    let c1 = store
        .campaigns("t")
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == "c1")
        .unwrap();
    assert!(c1.synced_at.is_some());
}

async fn dead_letters_keep_the_reason_count_attempts_and_resolve(store: Store) {
    // Arrange
    let (run, lease) = start(&store, "t").await;
    let bad = adsync_store::NewDeadLetter {
        campaign_id: "c9".into(),
        stage: Stage::Validation,
        payload: r#"{"id":"c9","name":"nul\u0000byte"}"#.into(),
        reason: "name contains a NUL byte, which PostgreSQL cannot store".into(),
    };
    let good = [campaign("c1", 1)];

    // Act
    let outcome = store
        .store_page(
            &lease,
            &adsync_store::PageBatch {
                dead_letters: std::slice::from_ref(&bad),
                seen: 2,
                ..page(more(2), &["c1", "c9"], &good)
            },
        )
        .await
        .unwrap();
    store.dead_letter(&lease, &bad, Utc::now()).await.unwrap();

    // Assert
    assert_eq!(outcome.dead_lettered, 1);
    let letters = store.dead_letters("t", false).await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.attempts, 2);
    assert_eq!(
        letter.payload, bad.payload,
        "the raw payload, NUL escape included"
    );
    assert!(letter.reason.contains("NUL byte"));
    assert_eq!(
        (letter.stage, letter.run_id, letter.resolved),
        (Stage::Validation, run.id, false)
    );
    assert_eq!(
        store.run(run.id).await.unwrap().counters.dead_lettered,
        1,
        "one campaign, however often it failed"
    );
    assert_eq!(store.campaign_count("t").await.unwrap(), 1);

    // The campaign arrives valid later: its validation dead letter resolves by itself.
    let fixed = [campaign("c9", 1)];
    store
        .store_page(&lease, &page(complete(1), &ids(&fixed), &fixed))
        .await
        .unwrap();
    assert!(store.dead_letters("t", false).await.unwrap().is_empty());
    let all = store.dead_letters("t", true).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].resolution, Some(Resolution::Stored));

    // A sync dead letter resolves when the sync succeeds.
    store
        .dead_letter(&lease, &sync_failure("c9", "404"), Utc::now())
        .await
        .unwrap();
    assert_eq!(store.dead_letters("t", false).await.unwrap().len(), 1);
    store
        .mark_synced(&lease, &["c9"], Utc::now())
        .await
        .unwrap();
    assert!(store.dead_letters("t", false).await.unwrap().is_empty());
    let sync_letter = store
        .dead_letters("t", true)
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.stage == Stage::Sync)
        .unwrap();
    assert_eq!(sync_letter.resolution, Some(Resolution::Synced));
}

async fn a_dead_letter_that_fails_again_after_it_resolved_is_open_again(store: Store) {
    // Arrange
    let (_, lease) = start(&store, "t").await;
    let c1 = [campaign("c1", 1)];
    store
        .store_page(&lease, &page(complete(1), &ids(&c1), &c1))
        .await
        .unwrap();
    store
        .dead_letter(&lease, &sync_failure("c1", "503"), Utc::now())
        .await
        .unwrap();
    store
        .mark_synced(&lease, &["c1"], Utc::now())
        .await
        .unwrap();

    // Act
    store
        .dead_letter(&lease, &sync_failure("c1", "404 this time"), Utc::now())
        .await
        .unwrap();

    // Assert
    let letters = store.dead_letters("t", true).await.unwrap();
    assert_eq!(letters.len(), 1, "one letter per campaign and stage");
    assert_eq!((letters[0].resolved, letters[0].resolution), (false, None));
    assert_eq!(letters[0].attempts, 2);
    assert_eq!(letters[0].reason, "404 this time");
}

async fn one_running_run_per_tenant(store: Store) {
    // Arrange
    let (first, lease) = start(&store, "t").await;

    // Act
    let err = store
        .create_run(new_run("t", "test:2"), LIVE)
        .await
        .unwrap_err();

    // Assert
    assert!(
        matches!(&err, StoreError::RunInProgress(t) if t == "t"),
        "{err:?}"
    );
    start(&store, "other").await;
    store
        .finish_run(&lease, &ending(RunEnding::Finished))
        .await
        .unwrap();
    let (second, _) = start(&store, "t").await;
    assert!(second.id > first.id, "a new run once the first one ended");
}

async fn duplicate_ids_within_a_page_collapse_to_the_last(store: Store) {
    // Arrange
    let (run, lease) = start(&store, "t").await;
    let dupes = [campaign("c1", 1), campaign("c2", 2), campaign("c1", 3)];

    // Act
    let outcome = store
        .store_page(&lease, &page(complete(1), &ids(&dupes), &dupes))
        .await
        .unwrap();

    // Assert
    assert_eq!(outcome.newly_stored, 2);
    let rows = store.campaigns("t").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].impressions, 3);
    assert_eq!(store.metrics_count("t").await.unwrap(), 2);
    assert_eq!(
        listed(&store, run.id).await,
        [("c1".to_owned(), 1), ("c2".to_owned(), 1)]
    );
    assert_eq!(store.run(run.id).await.unwrap().counters.campaigns_seen, 3);
}

async fn tenants_are_isolated(store: Store) {
    // Arrange
    let (a, lease_a) = start(&store, "a").await;
    let (b, lease_b) = start(&store, "b").await;
    let same_ids = [campaign("c1", 1)];

    // Act
    store
        .store_page(&lease_a, &page(complete(1), &ids(&same_ids), &same_ids))
        .await
        .unwrap();
    store
        .dead_letter(&lease_a, &sync_failure("c1", "503"), Utc::now())
        .await
        .unwrap();
    store
        .store_page(&lease_b, &page(complete(1), &["c2"], &[]))
        .await
        .unwrap();
    store
        .mark_synced(&lease_b, &["c1"], Utc::now())
        .await
        .unwrap();

    // Assert
    assert_eq!(store.campaign_count("a").await.unwrap(), 1);
    assert_eq!(
        store.campaign_count("b").await.unwrap(),
        0,
        "b's complete listing without c1 does not touch a's c1"
    );
    let a_c1 = &store.campaigns("a").await.unwrap()[0];
    assert_eq!(a_c1.removed_at, None);
    assert_eq!(a_c1.synced_at, None, "b's sync of its own c1 is not a's");
    assert_eq!(store.dead_letters("a", false).await.unwrap().len(), 1);
    assert!(store.dead_letters("b", true).await.unwrap().is_empty());
    assert_eq!(store.latest_run("a").await.unwrap().unwrap().id, a.id);
    assert_eq!(
        store
            .runs("b", 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        [b.id]
    );
    assert!(store.latest_run("nobody").await.unwrap().is_none());
}

async fn a_page_larger_than_one_statement_is_stored_whole_and_once(store: Store) {
    // Arrange: 1,200 rows span several multi-row statements on SQLite (500 rows each).
    let (run, lease) = start(&store, "t").await;
    let big: Vec<_> = (0..1200)
        .map(|i| campaign(&format!("c{i:04}"), i))
        .collect();
    let big_ids = ids(&big);

    // Act
    let first = store
        .store_page(&lease, &page(more(2), &big_ids, &big))
        .await
        .unwrap();
    let again = store
        .store_page(&lease, &page(complete(1), &big_ids, &big))
        .await
        .unwrap();

    // Assert
    assert_eq!(first.newly_stored, 1200);
    assert_eq!(
        again.newly_stored, 0,
        "every chunk knows what the run already stored"
    );
    assert_eq!(again.removed, 0, "every listed id of the page counts");
    assert_eq!(store.campaign_count("t").await.unwrap(), 1200);
    assert_eq!(store.metrics_count("t").await.unwrap(), 1200);
    assert_eq!(store.pending_syncs(run.id).await.unwrap().len(), 1200);
    assert_eq!(store.listed(run.id).await.unwrap().len(), 1200);
    let stored = store.campaigns("t").await.unwrap();
    assert_eq!(stored[1199].impressions, 1199);
    assert_eq!(
        store.run(run.id).await.unwrap().counters.campaigns_stored,
        1200
    );

    store
        .mark_synced(&lease, &big_ids, Utc::now())
        .await
        .unwrap();
    assert!(store.pending_syncs(run.id).await.unwrap().is_empty());
    assert_eq!(
        store.run(run.id).await.unwrap().counters.campaigns_synced,
        1200
    );
}

async fn unknown_statuses_are_stored_verbatim(store: Store) {
    // Arrange
    let (_, lease) = start(&store, "t").await;
    let from_the_wire = Campaign::from_json_text(
        r#"{"id":"c1","name":"n","status":"ARCHIVED_v2","budget":1,"impressions":0,"clicks":0,"conversions":0,"created_at":"2024-12-11T10:30:00Z"}"#,
    )
    .unwrap();
    let built = Campaign {
        status: CampaignStatus::Other("en pausa ⏸ (revisión)".into()),
        ..campaign("c2", 1)
    };
    let known = Campaign {
        status: CampaignStatus::Paused,
        ..campaign("c3", 1)
    };
    let page_of = [from_the_wire, built, known];

    // Act
    store
        .store_page(&lease, &page(complete(1), &ids(&page_of), &page_of))
        .await
        .unwrap();

    // Assert
    let statuses: Vec<_> = store
        .campaigns("t")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, ["ARCHIVED_v2", "en pausa ⏸ (revisión)", "paused"]);
}

/// A record with fields adsync does not model, odd spacing and key order.
const RICH_RECORD: &str = r#"{ "status":"active", "id":"c1","name":"Été 2025",
  "budget":1100.50,"impressions":7,"clicks":1,"conversions":0,
  "created_at":"2024-12-11T10:30:00Z",
  "targeting":{"geo":["FR","BE"],"age":{"min":18,"max":null},"flags":[true,false]},
  "labels":[] }"#;

async fn the_raw_record_is_stored_as_received(store: Store) {
    // Arrange
    let (_, lease) = start(&store, "t").await;
    let rich = [Campaign::from_json_text(RICH_RECORD).unwrap()];

    // Act
    store
        .store_page(&lease, &page(complete(1), &ids(&rich), &rich))
        .await
        .unwrap();

    // Assert
    let raw = store.campaigns("t").await.unwrap()[0].raw.clone().unwrap();
    match store.kind() {
        "sqlite" => assert_eq!(raw, RICH_RECORD, "SQLite keeps the text byte for byte"),
        _ => assert_eq!(
            serde_json::from_str::<serde_json::Value>(&raw).unwrap(),
            serde_json::from_str::<serde_json::Value>(RICH_RECORD).unwrap(),
            "JSONB keeps the same JSON value, nested fields included"
        ),
    }
}

async fn a_raw_record_jsonb_refuses_is_still_stored_as_its_text(store: Store) {
    // Arrange: JSONB refuses a \u0000 escape and a number beyond NUMERIC, in fields adsync
    // does not model (the campaigns themselves are valid).
    let (_, lease) = start(&store, "t").await;
    let nul = r#"{"id":"c1","name":"n","status":"active","budget":1,"impressions":0,"clicks":0,"conversions":0,"created_at":"2024-12-11T10:30:00Z","note":"a\u0000b"}"#;
    let huge = r#"{"id":"c2","name":"n","status":"active","budget":1,"impressions":0,"clicks":0,"conversions":0,"created_at":"2024-12-11T10:30:00Z","reach":1e999999}"#;
    let plain = campaign("c3", 1);
    let records = [
        Campaign::from_json_text(nul).unwrap(),
        Campaign::from_json_text(huge).unwrap(),
        plain.clone(),
    ];

    // Act
    let outcome = store
        .store_page(&lease, &page(complete(1), &ids(&records), &records))
        .await
        .unwrap();

    // Assert
    assert_eq!(outcome.newly_stored, 3);
    let stored = store.campaigns("t").await.unwrap();
    let raws: Vec<String> = stored.iter().map(|c| c.raw.clone().unwrap()).collect();
    match store.kind() {
        "sqlite" => assert_eq!(raws, [nul, huge, plain.raw.as_str()]),
        _ => {
            // PostgreSQL keeps what JSONB refuses as a JSON string holding the exact text,
            // and everything else as JSON.
            for (raw, text) in raws[..2].iter().zip([nul, huge]) {
                assert_eq!(serde_json::from_str::<String>(raw).unwrap(), text);
            }
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&raws[2]).unwrap(),
                serde_json::from_str::<serde_json::Value>(&plain.raw).unwrap()
            );
        }
    }
}
