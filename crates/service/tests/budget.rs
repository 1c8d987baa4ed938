//! Shared rate budgets, black-box: the planner's rule as properties; grants and 429 holds on
//! PostgreSQL and SQLite; several "processes" (each with its own pool and limiter) spending one
//! budget at once; and two clients with their own limiters and one client id against the
//! simulator, which must see no 429.
//!
//! Real time only where a database or a socket is involved: every wait has a deadline, and
//! what is asserted holds on a loaded machine (the granted times on the database's clock, and
//! sends spaced by at least the window minus a generous allowance), never an upper bound on
//! how long anything took.

use std::{future::Future, sync::Arc, time::Duration};

use adsync_client::{AdClient, ClientConfig, Credentials, RetryPolicy, SlidingWindowLimiter};
use adsync_domain::{CampaignId, RateLimit};
use adsync_service::budget::{
    BudgetKey, BudgetOptions, DbBudget, Granter, PlanRequest, Slot, create_missing, exceeds, plan,
};
use adsync_sim::{Profile, SimConfig, Simulator};
use adsync_store::Store;
use rand::{Rng, SeedableRng, rngs::SmallRng};
use secrecy::SecretString;
use sqlx::{PgPool, SqlitePool};
use tokio::time::Instant;

/// The longest any wait in a test may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(60);

async fn within_deadline<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("the work did not finish within the test deadline")
}

// ---- The planner ------------------------------------------------------------------------------

#[test]
fn the_planner_never_lets_n_plus_one_grants_into_one_window_plus_margin() {
    for seed in 0..300 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let requests = rng.random_range(1..=12u32);
        let window_ms = rng.random_range(1..=5_000i64);
        let horizon_ms = rng.random_range(0..=window_ms);
        let least_margin = rng.random_range(0..=200i64);
        let mut log = Vec::new();
        let mut all = Vec::new();
        let mut now_ms = rng.random_range(0..1_000_000_000_000i64);
        let mut hold_until_ms = 0;
        for _ in 0..200 {
            now_ms += rng.random_range(0..=window_ms / 2);
            if rng.random_ratio(1, 20) {
                hold_until_ms = hold_until_ms.max(now_ms + rng.random_range(0..=3 * window_ms));
            }
            let want = rng.random_range(0..=2 * requests);
            // Holders measure different margins; the property holds for the least of them.
            let margin_ms = least_margin + rng.random_range(0..=50);

            let p = plan(&PlanRequest {
                log: &log,
                now_ms,
                requests,
                window_ms,
                margin_ms,
                hold_until_ms,
                want,
                horizon_ms,
                paced: None,
            });

            let first = p.granted[0];
            assert!(!p.granted.is_empty() && p.granted.len() <= want.clamp(1, requests) as usize);
            assert!(p.granted.iter().all(|&t| t >= now_ms && t >= hold_until_ms));
            assert!(p.granted.iter().all(|&t| t <= first + horizon_ms));
            assert!(p.log.len() <= requests as usize && p.log.is_sorted());
            all.extend_from_slice(&p.granted);
            log = p.log;
        }
        assert!(
            !exceeds(&all, requests, window_ms + least_margin),
            "seed {seed}: {} grants, N={requests}, W={window_ms}, M={least_margin}",
            all.len()
        );
    }
}

// ---- Databases --------------------------------------------------------------------------------

/// The URL of the database `sqlx::test` created: `DATABASE_URL` names the server, the pool
/// knows the database.
fn pg_url(pool: &PgPool) -> String {
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL names the PostgreSQL server");
    let mut url = url::Url::parse(&server).unwrap();
    url.set_path(pool.connect_options().get_database().unwrap());
    url.to_string()
}

/// `n` stores on one database, each with a pool of its own, as separate processes have.
async fn pg_stores(pool: &PgPool, n: usize) -> Vec<Store> {
    Store::Postgres(pool.clone()).migrate().await.unwrap();
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(
            within_deadline(Store::connect(&pg_url(pool)))
                .await
                .unwrap(),
        );
    }
    stores
}

/// `n` stores on one SQLite file, each with a pool of its own.
async fn sqlite_stores(pool: &SqlitePool, n: usize) -> Vec<Store> {
    Store::Sqlite(pool.clone()).migrate().await.unwrap();
    let file = pool.connect_options().get_filename().to_owned();
    pool.close().await;
    let mut stores = Vec::new();
    for _ in 0..n {
        let url = format!("sqlite://{}", file.display());
        stores.push(within_deadline(Store::connect(&url)).await.unwrap());
    }
    stores
}

fn key(client_id: &str) -> BudgetKey {
    BudgetKey::new(&"http://Platform.example:80/v1".parse().unwrap(), client_id)
}

/// A budget of `limit` in `store`, for a process whose limiter keeps a fixed margin, with
/// the default options but a late tolerance a busy machine cannot exceed (a slot used late
/// is dropped: right, but it would make exact counts of grants depend on the machine's load).
fn budget(store: &Store, limit: RateLimit, margin: Duration) -> DbBudget {
    budget_with(store, limit, margin, BudgetOptions::default())
}

fn budget_with(
    store: &Store,
    limit: RateLimit,
    margin: Duration,
    options: BudgetOptions,
) -> DbBudget {
    let limiter = Arc::new(SlidingWindowLimiter::with_margin(limit, margin));
    let options = BudgetOptions {
        late_tolerance: Some(options.late_tolerance.unwrap_or(Duration::from_millis(200))),
        ..options
    };
    DbBudget::with_options(store.clone(), key("shared"), limit, limiter, options)
}

fn limit(requests: u32, window_ms: u64) -> RateLimit {
    RateLimit::new(requests, Duration::from_millis(window_ms)).unwrap()
}

/// Names one async test body per database.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[sqlx::test(migrations = false)]
            async fn postgres(pool: sqlx::PgPool) {
                super::$name(super::pg_stores(&pool, 3).await).await;
            }
            #[sqlx::test(migrations = false)]
            async fn sqlite(pool: sqlx::SqlitePool) {
                super::$name(super::sqlite_stores(&pool, 3).await).await;
            }
        }
    )*};
}

on_both_databases!(
    a_grant_is_recorded_in_the_budget_row,
    slots_are_spaced_by_the_window_plus_the_margin,
    processes_spending_one_budget_together_never_exceed_it,
    a_429_held_by_one_holder_holds_every_holder,
    a_hold_drops_the_slots_queued_before_it,
    every_budget_is_listed_with_the_share_of_its_window_in_use,
);

#[test]
fn keys_are_normalized_and_hold_no_credentials() {
    let spelled = "HTTP://user:secret@Platform.Example:80/v1?x=1#f"
        .parse()
        .unwrap();
    let plain = "http://platform.example/v1/".parse().unwrap();

    let (a, b) = (BudgetKey::new(&spelled, "c"), BudgetKey::new(&plain, "c"));

    assert_eq!(a, b);
    assert_eq!(a.api_url(), "http://platform.example/v1/");
}

async fn every_budget_is_listed_with_the_share_of_its_window_in_use(stores: Vec<Store>) {
    // Arrange: one slot of four taken in a minute's window.
    let budget = budget(&stores[0], limit(4, 60_000), Duration::from_millis(10));
    within_deadline(budget.take_slot()).await.unwrap();

    // Act
    let all = adsync_service::budget::all_budgets(&stores[1])
        .await
        .unwrap();

    // Assert
    let key = BudgetKey::of("http://platform.example/v1", "shared").expect("a URL");
    assert_eq!(all.len(), 1);
    let row = all.get(&key).expect("listed under its normalized key");
    assert!((row.use_now() - 0.25).abs() < 1e-9, "{}", row.use_now());
}

async fn a_grant_is_recorded_in_the_budget_row(stores: Vec<Store>) {
    // Arrange
    let budget = budget(&stores[0], limit(3, 60_000), Duration::from_millis(10));

    // Act
    let slot = within_deadline(budget.take_slot()).await.unwrap();

    // Assert
    let row = budget.row().await.unwrap().expect("the row exists");
    assert_eq!(row.sends, vec![slot.at_ms]);
    assert_eq!((row.requests, row.window_ms, row.grants), (3, 60_000, 1));
    assert!(slot.at_ms <= row.now_ms, "the first slot is for now");
    assert_eq!(budget.stats().grants, 1);
}

async fn slots_are_spaced_by_the_window_plus_the_margin(stores: Vec<Store>) {
    // Arrange: 2 per 300 ms.
    let budget = budget(&stores[0], limit(2, 300), Duration::from_millis(20));
    let span = 300 + i64::try_from(budget.margin().as_millis()).unwrap();

    // Act
    let mut slots = Vec::new();
    for _ in 0..6 {
        slots.push(within_deadline(budget.take_slot()).await.unwrap());
    }

    // Assert
    let times: Vec<i64> = slots.iter().map(|s| s.at_ms).collect();
    assert!(!exceeds(&times, 2, span), "{times:?} within {span} ms");
    let sent = slots.windows(3).map(|w| w[2].at - w[0].at).min().unwrap();
    assert!(sent >= Duration::from_millis(300), "{slots:?}");
    let row = budget.row().await.unwrap().unwrap();
    assert_eq!(row.sends, times[4..].to_vec(), "the row keeps the last N");
}

async fn processes_spending_one_budget_together_never_exceed_it(stores: Vec<Store>) {
    // Three processes, each with its own pool, limiter and budget handle (default options),
    // and two takers in each (as two clients of one process would be).
    spend_together(&stores, |_| BudgetOptions::default(), 2).await;
}

/// On PostgreSQL most grants are optimistic (a conditional write) and some lock the row: the
/// two kinds of holder on one budget (one process that always locks, two that try first)
/// still never exceed it, and every slot granted is in the row's count.
#[sqlx::test(migrations = false)]
async fn optimistic_and_locking_holders_of_one_budget_never_exceed_it(pool: PgPool) {
    let stores = pg_stores(&pool, 3).await;
    let budgets = spend_together(
        &stores,
        |i| BudgetOptions {
            locking_only: i == 0,
            ..BudgetOptions::default()
        },
        3,
    )
    .await;
    let conflicts: u64 = budgets.iter().map(|b| b.stats().conflicts).sum();
    eprintln!("optimistic grants that lost a race: {conflicts}");
    assert_eq!(
        budgets[0].stats().conflicts,
        0,
        "a locking holder never races"
    );
}

/// Spends one budget from each of `stores` (the options of the `i`th from `options`), with
/// `takers` takers each taking seven slots; checks that they never exceeded it, on the
/// budget's clock and in real time. Returns the budgets.
async fn spend_together(
    stores: &[Store],
    options: impl Fn(usize) -> BudgetOptions,
    takers: usize,
) -> Vec<DbBudget> {
    let limit = limit(10, 1000);
    let budgets: Vec<DbBudget> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let limiter = Arc::new(SlidingWindowLimiter::new(limit));
            DbBudget::with_options(s.clone(), key("shared"), limit, limiter, options(i))
        })
        .collect();
    spend(&budgets, limit, takers).await;
    budgets
}

/// `takers` takers on each of `budgets` (of `limit`; several may spend one key) take seven
/// slots each. Checks, per key, that they never exceeded it, on the budget's clock and in
/// real time, and that the row counts every slot granted.
async fn spend(budgets: &[DbBudget], limit: RateLimit, takers: usize) {
    // Act: seven slots per taker.
    let tasks = budgets
        .iter()
        .flat_map(|b| std::iter::repeat_n(b.clone(), takers))
        .map(|b| {
            tokio::spawn(async move {
                let mut taken = Vec::new();
                for _ in 0..7 {
                    let slot = b.take_slot().await.unwrap();
                    taken.push((b.key().clone(), slot, Instant::now()));
                }
                taken
            })
        });
    let taken: Vec<(BudgetKey, Slot, Instant)> = within_deadline(futures::future::join_all(tasks))
        .await
        .into_iter()
        .flat_map(Result::unwrap)
        .collect();
    assert_eq!(taken.len(), budgets.len() * takers * 7);

    // Assert, per key: on the budget's clock, never N in a window plus the least margin; in
    // real time, the sends (when each taker got its slot) never N + 1 within a window less a
    // generous allowance for a busy machine.
    let n = limit.requests as usize;
    let keys: std::collections::HashSet<BudgetKey> =
        budgets.iter().map(|b| b.key().clone()).collect();
    for key in keys {
        let holders: Vec<&DbBudget> = budgets.iter().filter(|b| *b.key() == key).collect();
        let mine = || taken.iter().filter(|(k, ..)| *k == key);
        let at_ms: Vec<i64> = mine().map(|(_, s, _)| s.at_ms).collect();
        let least_margin = holders.iter().map(|b| b.margin()).min().unwrap();
        let window = limit.window + least_margin;
        let span = i64::try_from(window.as_millis()).unwrap();
        assert!(
            !exceeds(&at_ms, limit.requests, span),
            "{key:?} granted {at_ms:?}"
        );
        let mut sent: Vec<Instant> = mine().map(|(.., at)| *at).collect();
        sent.sort();
        let tightest = sent.windows(n + 1).map(|w| w[n] - w[0]).min().unwrap();
        assert!(
            tightest >= limit.window * 9 / 10,
            "{key:?}: {} sends within {tightest:?}",
            n + 1
        );
        let row = holders[0].row().await.unwrap().unwrap();
        let granted: u64 = holders.iter().map(|b| b.stats().slots).sum();
        assert_eq!(row.grants, i64::try_from(granted).unwrap(), "{key:?}");
    }
}

/// A process's budgets make their grants together through one `Granter` (PostgreSQL): two
/// processes, each with a granter and a budget for each of four client ids that both spend,
/// never exceed any of them, and every slot granted is in its row's count.
#[sqlx::test(migrations = false)]
async fn budgets_granting_together_never_exceed_any_of_them(pool: PgPool) {
    // Arrange
    let stores = pg_stores(&pool, 2).await;
    let limit = limit(10, 1000);
    let mut budgets = Vec::new();
    let mut granters = Vec::new();
    for store in &stores {
        let granter = granter(store);
        for c in 0..4 {
            budgets.push(gathered(store, &granter, &format!("client-{c}"), limit));
        }
        granters.push(granter);
    }

    // Act + assert (per key, in `spend`)
    spend(&budgets, limit, 2).await;

    let stats: Vec<_> = granters.iter().map(Granter::stats).collect();
    eprintln!("granters: {stats:?}");
    assert!(stats.iter().all(|s| s.granted > 0), "{stats:?}");
}

/// Grants asked for while a batch is in flight go into the next one: twenty budgets asking
/// at once take fewer statements than grants.
#[sqlx::test(migrations = false)]
async fn grants_asked_for_at_once_share_statements(pool: PgPool) {
    // Arrange: twenty budgets whose rows exist (a budget's first grant creates its row, alone).
    let stores = pg_stores(&pool, 1).await;
    let granter = granter(&stores[0]);
    let limit = limit(10, 60_000);
    let budgets: Vec<DbBudget> = (0..20)
        .map(|c| gathered(&stores[0], &granter, &format!("client-{c}"), limit))
        .collect();
    let mut rows_before = Vec::new();
    for b in &budgets {
        within_deadline(b.take_slot()).await.unwrap();
        rows_before.push(b.row().await.unwrap().unwrap());
    }
    let before = granter.stats();

    // Act: each asks for one more slot, all at once.
    take_a_slot_each_at_once(&budgets).await;

    // Assert
    let after = granter.stats();
    let (batches, granted) = (
        after.batches - before.batches,
        after.granted - before.granted,
    );
    // At least one grant each: a slot its holder woke too late for (a loaded machine) is
    // dropped and asked for again, here or in the arrangement above.
    assert!(granted >= 20, "{after:?}");
    assert!(batches < granted, "one statement per grant: {after:?}");
    for (b, before) in budgets.iter().zip(&rows_before) {
        let row = b.row().await.unwrap().unwrap();
        assert!(row.grants > before.grants, "{:?}: {row:?}", b.key());
        assert!(
            row.sends.len() > before.sends.len(),
            "{:?}: {row:?}",
            b.key()
        );
    }
}

/// Budgets whose rows a worker created together when it claimed their runs take even their
/// first grants together; a row that existed is left as it was.
#[sqlx::test(migrations = false)]
async fn budgets_created_together_take_their_first_grants_together(pool: PgPool) {
    // Arrange: one budget with a grant already; twenty more without a row.
    let stores = pg_stores(&pool, 1).await;
    let granter = granter(&stores[0]);
    let ten = limit(10, 60_000);
    let old = gathered(&stores[0], &granter, "client-old", ten);
    within_deadline(old.take_slot()).await.unwrap();
    let old_row = old.row().await.unwrap().unwrap();
    let budgets: Vec<DbBudget> = (0..20)
        .map(|c| gathered(&stores[0], &granter, &format!("client-{c}"), ten))
        .collect();
    let mut keys: Vec<(BudgetKey, RateLimit)> =
        budgets.iter().map(|b| (b.key().clone(), ten)).collect();
    keys.push((old.key().clone(), limit(99, 1_000)));
    keys.push((key("client-0"), ten)); // twice in one call
    let before = granter.stats();

    // Act
    within_deadline(create_missing(&stores[0], &keys))
        .await
        .unwrap();
    take_a_slot_each_at_once(&budgets).await;

    // Assert
    let after = granter.stats();
    assert_eq!(
        after.alone, before.alone,
        "a first grant made alone: {after:?}"
    );
    assert!(after.granted - before.granted >= 20, "{after:?}");
    assert!(
        after.batches - before.batches < 20,
        "one statement per grant: {after:?}"
    );
    for b in &budgets {
        let row = b.row().await.unwrap().unwrap();
        assert_eq!((row.requests, row.window_ms), (10, 60_000), "{:?}", b.key());
        assert!(row.grants >= 1, "{:?}: {row:?}", b.key());
    }
    let old_after = old.row().await.unwrap().unwrap();
    assert_eq!(
        (
            old_after.requests,
            old_after.window_ms,
            old_after.grants,
            old_after.sends
        ),
        (10, 60_000, old_row.grants, old_row.sends)
    );
}

/// Each of `budgets` asks for a slot, all at the same moment.
async fn take_a_slot_each_at_once(budgets: &[DbBudget]) {
    let barrier = Arc::new(tokio::sync::Barrier::new(budgets.len()));
    let tasks = budgets.iter().cloned().map(|b| {
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            b.take_slot().await.unwrap()
        })
    });
    within_deadline(futures::future::join_all(tasks)).await;
}

fn granter(store: &Store) -> Granter {
    let Store::Postgres(pg) = store else {
        unreachable!("granters are for PostgreSQL")
    };
    Granter::spawn(pg.clone())
}

/// A budget of `client_id` in `store` granting through `granter`.
fn gathered(store: &Store, granter: &Granter, client_id: &str, limit: RateLimit) -> DbBudget {
    let limiter = Arc::new(SlidingWindowLimiter::new(limit));
    DbBudget::with_options(
        store.clone(),
        key(client_id),
        limit,
        limiter,
        BudgetOptions::default(),
    )
    .gathered(granter.clone())
}

async fn a_429_held_by_one_holder_holds_every_holder(stores: Vec<Store>) {
    // Arrange
    let limit = limit(10, 1000);
    let (a, b) = (
        budget(&stores[0], limit, Duration::from_millis(10)),
        budget(&stores[1], limit, Duration::from_millis(10)),
    );
    within_deadline(a.take_slot()).await.unwrap();

    // Act
    let hold_until_ms = within_deadline(a.hold_everywhere(Duration::from_millis(700)))
        .await
        .unwrap();
    let slot = within_deadline(b.take_slot()).await.unwrap();

    // Assert
    assert!(
        slot.at_ms >= hold_until_ms,
        "granted at {} before the hold's end {hold_until_ms}",
        slot.at_ms
    );
    let row = b.row().await.unwrap().unwrap();
    assert_eq!((row.rate_limited, row.hold_until_ms), (1, hold_until_ms));
}

async fn a_hold_drops_the_slots_queued_before_it(stores: Vec<Store>) {
    // Arrange: a holder that asks for all ten slots at once and uses one.
    let options = BudgetOptions {
        batch: 10,
        ..BudgetOptions::default()
    };
    let budget = budget_with(
        &stores[0],
        limit(10, 1000),
        Duration::from_millis(10),
        options,
    );
    within_deadline(budget.take_slot()).await.unwrap();
    assert_eq!(budget.stats().slots, 10);

    // Act
    let hold_until_ms = within_deadline(budget.hold_everywhere(Duration::from_millis(500)))
        .await
        .unwrap();
    let slot = within_deadline(budget.take_slot()).await.unwrap();

    // Assert
    assert_eq!(budget.stats().dropped_held, 9);
    assert!(slot.at_ms >= hold_until_ms);
    assert_eq!(budget.stats().grants, 2);
}

// ---- Against the simulator --------------------------------------------------------------------

fn client_config(sim: &Simulator) -> ClientConfig {
    let credentials = Credentials {
        email: adsync_sim::REFERENCE_EMAIL.into(),
        password: SecretString::from(adsync_sim::REFERENCE_PASSWORD.to_owned()),
    };
    let mut c = ClientConfig::new(sim.url().parse().unwrap(), credentials);
    c.client_id = "tenant-shared-id".into();
    c.rate_limit = sim.config().effective_rate_limit();
    // A margin a loaded machine cannot eat (a tenth of the scaled window).
    c.limiter_margin = Some(Duration::from_millis(200));
    c.request_timeout = Duration::from_secs(5);
    c.retry = RetryPolicy {
        max_attempts: 8,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(200),
        max_rate_limited: 3,
    };
    c
}

/// A client of its own process: its own limiter, the budget of its client id in `store`.
fn shared_client(sim: &Simulator, store: &Store) -> (AdClient, DbBudget) {
    let config = client_config(sim);
    let limiter = Arc::new(SlidingWindowLimiter::with_margin(
        config.rate_limit,
        config.limiter_margin.unwrap(),
    ));
    let budget = DbBudget::new(
        store.clone(),
        BudgetKey::new(&config.base_url, &config.client_id),
        config.rate_limit,
        limiter.clone(),
    );
    let config = config.with_shared_budget(Arc::new(budget.clone()));
    (AdClient::with_limiter(config, limiter).unwrap(), budget)
}

/// Lists the first page of `per_client` campaigns and syncs them all at once.
async fn sync_some(client: AdClient, page: u64, per_client: u64) -> usize {
    let listed = client.list_campaigns(page, per_client).await.unwrap();
    let ids: Vec<CampaignId> = listed
        .data
        .iter()
        .map(|raw| {
            let record: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
            CampaignId::parse(record["id"].as_str().unwrap()).unwrap()
        })
        .collect();
    let synced = futures::future::join_all(ids.iter().map(|id| client.sync_campaign(id))).await;
    synced.into_iter().map(Result::unwrap).count()
}

async fn two_clients_with_their_own_limiters_share_one_budget_and_draw_no_429(store: Store) {
    // Arrange: the platform's 10 per 60 s, scaled to 10 per 2 s.
    let sim_config = SimConfig {
        campaigns: 24,
        time_scale: 30.0,
        ..SimConfig::for_profile(Profile::Calm)
    };
    let sim = Simulator::start_local(sim_config).await.unwrap();
    let (first, first_budget) = shared_client(&sim, &store);
    let (second, second_budget) = shared_client(&sim, &store);

    // Act: 26 calls between them, about three windows' worth, at the same time.
    let (a, b) =
        within_deadline(async { tokio::join!(sync_some(first, 1, 12), sync_some(second, 2, 12)) })
            .await;

    // Assert
    assert_eq!((a, b), (12, 12));
    let stats = sim.stats();
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    let client = &stats.clients["tenant-shared-id"];
    assert_eq!(client.requests, 26);
    let slots = first_budget.stats().slots + second_budget.stats().slots;
    assert!(slots >= 26, "every send had its slot ({slots})");
}

#[sqlx::test(migrations = false)]
async fn two_clients_sharing_a_budget_on_postgres_draw_no_429(pool: PgPool) {
    let store = pg_stores(&pool, 1).await.remove(0);
    two_clients_with_their_own_limiters_share_one_budget_and_draw_no_429(store).await;
}

#[sqlx::test(migrations = false)]
async fn two_clients_sharing_a_budget_on_sqlite_draw_no_429(pool: SqlitePool) {
    let store = sqlite_stores(&pool, 1).await.remove(0);
    two_clients_with_their_own_limiters_share_one_budget_and_draw_no_429(store).await;
}

// ---- Cost -------------------------------------------------------------------------------------

/// The time of one grant transaction, median and 99th percentile, printed (never asserted):
/// `cargo nextest run -p adsync-service --run-ignored only --no-capture grant_cost`.
async fn grant_cost(stores: Vec<Store>) {
    let budget = budget(&stores[0], limit(10, 60_000), Duration::from_millis(10));
    for _ in 0..20 {
        // Warm-up: connections opened, statements prepared.
        within_deadline(budget.grant(1)).await.unwrap();
    }
    let mut times = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        within_deadline(budget.grant(1)).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| ms(times[((times.len() - 1) as f64 * q) as usize]);
    eprintln!(
        "grant cost on {}: median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} grants",
        stores[0].kind(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        times.len()
    );
}

#[sqlx::test(migrations = false)]
#[ignore = "a measurement, not a test: run with --run-ignored only --no-capture"]
async fn grant_cost_on_postgres(pool: PgPool) {
    grant_cost(pg_stores(&pool, 1).await).await;
}

#[sqlx::test(migrations = false)]
#[ignore = "a measurement, not a test: run with --run-ignored only --no-capture"]
async fn grant_cost_on_sqlite(pool: SqlitePool) {
    grant_cost(sqlite_stores(&pool, 1).await).await;
}
