//! The repository on both databases: every test body runs on PostgreSQL (a fresh database per
//! test, from `DATABASE_URL`) and on SQLite, through the same public API.

use adsync_domain::{Campaign, CampaignId, CampaignStatus, Money};
use adsync_store::{NewDeadLetter, PageBatch, RunStatus, Stage, Store, StoreError};
use chrono::{TimeZone, Utc};

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[sqlx::test(migrations = false)]
            async fn postgres(pool: sqlx::PgPool) {
                let store = adsync_store::Store::Postgres(pool);
                store.migrate().await.unwrap();
                super::$name(store).await;
            }
            #[sqlx::test(migrations = false)]
            async fn sqlite(pool: sqlx::SqlitePool) {
                let store = adsync_store::Store::Sqlite(pool);
                store.migrate().await.unwrap();
                super::$name(store).await;
            }
        }
    )*};
}

on_both_databases!(
    storing_a_page_twice_or_in_a_new_run_never_duplicates,
    names_are_byte_exact_and_budgets_exact_to_the_cent,
    the_checkpoint_tracks_pages_and_synced_campaigns,
    dead_letters_keep_the_reason_count_attempts_and_resolve,
    one_running_run_per_tenant,
    duplicate_ids_within_a_page_collapse_to_the_last,
    tenants_are_isolated,
    a_page_larger_than_one_statement_is_stored_whole_and_once,
);

fn campaign(id: &str, impressions: i64) -> Campaign {
    Campaign {
        id: CampaignId::parse(id).unwrap(),
        name: format!("Campaign {id}"),
        status: CampaignStatus::Active,
        budget: Money::from_cents(110_050).unwrap(),
        impressions,
        clicks: impressions / 10,
        conversions: 1,
        created_at: Utc.with_ymd_and_hms(2024, 12, 11, 10, 30, 0).unwrap(),
        raw: format!(r#"{{"id":"{id}","impressions":{impressions},"extra":{{"k":[1,2]}}}}"#),
    }
}

fn page<'a>(
    tenant: &'a str,
    run: i64,
    page: u64,
    next: Option<u64>,
    campaigns: &'a [Campaign],
    dead: &'a [NewDeadLetter],
) -> PageBatch<'a> {
    PageBatch {
        tenant,
        run,
        page,
        next_page: next,
        seen: (campaigns.len() + dead.len()) as u64,
        campaigns,
        dead_letters: dead,
        observed_at: Utc::now(),
    }
}

async fn storing_a_page_twice_or_in_a_new_run_never_duplicates(store: Store) {
    let run1 = store
        .start_run("t", 10, "test:1", Utc::now())
        .await
        .unwrap();
    let first = [
        campaign("c1", 100),
        campaign("c2", 200),
        campaign("c3", 300),
    ];

    let a = store
        .store_page(&page("t", run1.id, 1, None, &first, &[]))
        .await
        .unwrap();
    let b = store
        .store_page(&page("t", run1.id, 1, None, &first, &[]))
        .await
        .unwrap();
    store
        .finish_run(run1.id, RunStatus::Succeeded, None, Utc::now())
        .await
        .unwrap();
    let run2 = store
        .start_run("t", 10, "test:1", Utc::now())
        .await
        .unwrap();
    let second = [
        campaign("c1", 150),
        campaign("c2", 250),
        campaign("c3", 350),
    ];
    store
        .store_page(&page("t", run2.id, 1, None, &second, &[]))
        .await
        .unwrap();

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
}

async fn names_are_byte_exact_and_budgets_exact_to_the_cent(store: Store) {
    let run = store
        .start_run("t", 10, "test:1", Utc::now())
        .await
        .unwrap();
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

    store
        .store_page(&page("t", run.id, 1, None, &campaigns, &[]))
        .await
        .unwrap();

    let stored = store.campaigns("t").await.unwrap();
    for (c, s) in campaigns.iter().zip(&stored) {
        assert_eq!(s.name.as_bytes(), c.name.as_bytes());
        assert_eq!(s.budget, c.budget.to_string());
    }
    assert_eq!(stored[4].budget, "9999999999999.99");
    assert_eq!(stored[0].budget, "0.00");
}

async fn the_checkpoint_tracks_pages_and_synced_campaigns(store: Store) {
    let run = store.start_run("t", 2, "test:1", Utc::now()).await.unwrap();
    let p1 = [campaign("c1", 1), campaign("c2", 1)];
    let p2 = [campaign("c3", 1), campaign("c4", 1)];

    store
        .store_page(&page("t", run.id, 1, Some(2), &p1, &[]))
        .await
        .unwrap();
    store
        .mark_synced("t", run.id, "c1", Utc::now())
        .await
        .unwrap();
    store
        .mark_synced("t", run.id, "c1", Utc::now())
        .await
        .unwrap(); // idempotent
    let midway = store.resumable_run("t").await.unwrap().unwrap();
    store
        .store_page(&page("t", run.id, 2, None, &p2, &[]))
        .await
        .unwrap();

    assert_eq!(midway.id, run.id);
    assert_eq!(midway.next_page, 2);
    assert!(!midway.listing_done);
    assert_eq!(midway.counters.campaigns_synced, 1);
    assert_eq!(
        store.pending_syncs(run.id).await.unwrap(),
        ["c2", "c3", "c4"]
    );
    let done = store.run(run.id).await.unwrap();
    assert!(done.listing_done);
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

    store
        .finish_run(run.id, RunStatus::Interrupted, Some("SIGINT"), Utc::now())
        .await
        .unwrap();
    let resumed = store
        .resume_run(
            store.resumable_run("t").await.unwrap().unwrap().id,
            "test:2",
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!((resumed.status, resumed.resumes), (RunStatus::Running, 1));
    store
        .finish_run(run.id, RunStatus::Succeeded, None, Utc::now())
        .await
        .unwrap();
    assert!(store.resumable_run("t").await.unwrap().is_none());
}

async fn dead_letters_keep_the_reason_count_attempts_and_resolve(store: Store) {
    let run = store
        .start_run("t", 10, "test:1", Utc::now())
        .await
        .unwrap();
    let bad = NewDeadLetter {
        campaign_id: "c9".into(),
        stage: Stage::Validation,
        payload: r#"{"id":"c9","name":"nul\u0000byte"}"#.into(),
        reason: "name contains a NUL byte, which PostgreSQL cannot store".into(),
    };
    let good = [campaign("c1", 1)];

    store
        .store_page(&page(
            "t",
            run.id,
            1,
            None,
            &good,
            std::slice::from_ref(&bad),
        ))
        .await
        .unwrap();
    store
        .dead_letter("t", run.id, &bad, Utc::now())
        .await
        .unwrap();
    let listed = store.dead_letters("t", false).await.unwrap();

    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attempts, 2);
    assert_eq!(
        listed[0].payload, bad.payload,
        "the raw payload, NUL escape included"
    );
    assert!(listed[0].reason.contains("NUL byte"));
    assert_eq!(store.run(run.id).await.unwrap().counters.dead_lettered, 2);
    assert_eq!(store.campaign_count("t").await.unwrap(), 1);

    // The campaign arrives valid later: its validation dead letter resolves by itself.
    let fixed = [campaign("c9", 1)];
    store
        .store_page(&page("t", run.id, 2, None, &fixed, &[]))
        .await
        .unwrap();
    assert!(store.dead_letters("t", false).await.unwrap().is_empty());
    assert_eq!(store.dead_letters("t", true).await.unwrap().len(), 1);

    // A sync dead letter resolves when the sync succeeds.
    let sync_failure = NewDeadLetter {
        stage: Stage::Sync,
        reason: "404".into(),
        ..bad
    };
    store
        .dead_letter("t", run.id, &sync_failure, Utc::now())
        .await
        .unwrap();
    assert_eq!(store.dead_letters("t", false).await.unwrap().len(), 1);
    store
        .mark_synced("t", run.id, "c9", Utc::now())
        .await
        .unwrap();
    assert!(store.dead_letters("t", false).await.unwrap().is_empty());
}

async fn one_running_run_per_tenant(store: Store) {
    store
        .start_run("t", 10, "test:1", Utc::now())
        .await
        .unwrap();

    let err = store
        .start_run("t", 10, "test:1", Utc::now())
        .await
        .unwrap_err();

    assert!(matches!(err, StoreError::RunInProgress(_)), "{err:?}");
    store
        .start_run("other", 10, "test:1", Utc::now())
        .await
        .unwrap();
}

async fn duplicate_ids_within_a_page_collapse_to_the_last(store: Store) {
    let run = store
        .start_run("t", 10, "test:1", Utc::now())
        .await
        .unwrap();
    let dupes = [campaign("c1", 1), campaign("c2", 2), campaign("c1", 3)];

    let outcome = store
        .store_page(&page("t", run.id, 1, None, &dupes, &[]))
        .await
        .unwrap();

    assert_eq!(outcome.newly_stored, 2);
    let rows = store.campaigns("t").await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].impressions, 3);
}

async fn tenants_are_isolated(store: Store) {
    let a = store
        .start_run("a", 10, "test:1", Utc::now())
        .await
        .unwrap();
    let b = store
        .start_run("b", 10, "test:1", Utc::now())
        .await
        .unwrap();
    let same_ids = [campaign("c1", 1)];

    store
        .store_page(&page("a", a.id, 1, None, &same_ids, &[]))
        .await
        .unwrap();
    store
        .store_page(&page("b", b.id, 1, None, &same_ids, &[]))
        .await
        .unwrap();

    assert_eq!(store.campaign_count("a").await.unwrap(), 1);
    assert_eq!(store.campaign_count("b").await.unwrap(), 1);
    assert_eq!(store.latest_run("a").await.unwrap().unwrap().id, a.id);
}

async fn a_page_larger_than_one_statement_is_stored_whole_and_once(store: Store) {
    // 1,234 rows span several multi-row statements on SQLite (500 rows each).
    let run = store
        .start_run("t", 2000, "test:1", Utc::now())
        .await
        .unwrap();
    let big: Vec<_> = (0..1234)
        .map(|i| campaign(&format!("c{i:04}"), i))
        .collect();

    let first = store
        .store_page(&page("t", run.id, 1, Some(2), &big, &[]))
        .await
        .unwrap();
    let again = store
        .store_page(&page("t", run.id, 2, None, &big, &[]))
        .await
        .unwrap();

    assert_eq!(first.newly_stored, 1234);
    assert_eq!(
        again.newly_stored, 0,
        "every chunk knows what the run already stored"
    );
    assert_eq!(store.campaign_count("t").await.unwrap(), 1234);
    assert_eq!(store.metrics_count("t").await.unwrap(), 1234);
    assert_eq!(store.pending_syncs(run.id).await.unwrap().len(), 1234);
    let stored = store.campaigns("t").await.unwrap();
    assert_eq!(stored[1233].impressions, 1233);
    assert_eq!(
        store.run(run.id).await.unwrap().counters.campaigns_stored,
        1234
    );
}
