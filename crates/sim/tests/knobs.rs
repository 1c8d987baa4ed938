//! Each misbehaviour knob of the simulator, observed over HTTP as a client would see it.

use std::time::{Duration, Instant};

use adsync_domain::RateLimit;
use adsync_sim::{HasMore, Mutation, Profile, SimConfig, Simulator};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// Every request gives up after this: no wait in these tests is unbounded.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A running simulator with an HTTP client and a valid token.
struct Api {
    sim: Simulator,
    http: Client,
    token: String,
}

/// A calm simulator (no faults, honest `has_more`) with a rate limit no test reaches and a
/// 2 ms sync, changed by `tweak`.
async fn start(tweak: impl FnOnce(&mut SimConfig)) -> Api {
    let mut config = SimConfig::for_profile(Profile::Calm);
    config.time_scale = 1000.0;
    config.rate_limit = RateLimit::new(100_000, Duration::from_secs(60)).unwrap();
    tweak(&mut config);
    start_with(config).await
}

async fn start_with(config: SimConfig) -> Api {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start_local(config).await.unwrap();
    let http = Client::builder().timeout(TIMEOUT).build().unwrap();
    let mut api = Api {
        sim,
        http,
        token: String::new(),
    };
    api.token = api.token_answer().await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    api
}

impl Api {
    async fn token_answer(&self) -> Value {
        let sim = self.sim.config();
        let response = self
            .http
            .post(format!("{}/auth/token", self.sim.url()))
            .basic_auth(&sim.email, Some(&sim.password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.sim.url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    /// A listing page that must answer 200.
    async fn page(&self, page: u64, limit: u64) -> Value {
        let (status, body) = self
            .get(&format!("/api/campaigns?page={page}&limit={limit}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn sync(&self, id: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/api/campaigns/{id}/sync", self.sim.url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn admin(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.sim.url()))
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn campaigns(numbers: impl IntoIterator<Item = u64>) -> Vec<String> {
    numbers
        .into_iter()
        .map(|n| format!("campaign_{n}"))
        .collect()
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort_unstable();
    keys
}

// has_more

#[tokio::test]
async fn the_reference_and_chaos_profiles_lie_about_has_more_like_the_reference_server() {
    assert_eq!(
        SimConfig::for_profile(Profile::Reference).has_more,
        HasMore::Reference
    );
    assert_eq!(
        SimConfig::for_profile(Profile::Chaos).has_more,
        HasMore::Reference
    );
    assert_eq!(
        SimConfig::for_profile(Profile::Calm).has_more,
        HasMore::Honest
    );
    for mode in ["honest", "reference", "endless", "repeat", "invent"] {
        assert_eq!(mode.parse::<HasMore>().unwrap().to_string(), mode);
    }
    assert!("sometimes".parse::<HasMore>().is_err());
}

#[tokio::test]
async fn reference_has_more_with_limit_100_serves_the_real_campaigns_then_invents_up_to_1000() {
    let api = start(|c| c.has_more = HasMore::Reference).await;

    let first = api.page(1, 100).await;
    let second = api.page(2, 100).await;
    let tenth = api.page(10, 100).await;

    assert_eq!(ids(&first), campaigns(1..=100));
    assert_eq!(first["pagination"]["has_more"], true);
    assert_eq!(first["pagination"]["total"], 100);
    assert_eq!(ids(&second), campaigns(101..=200));
    assert_eq!(second["pagination"]["has_more"], true);
    assert_eq!(second["pagination"]["total"], 100);
    assert_eq!(ids(&tenth), campaigns(901..=1000));
    assert_eq!(tenth["pagination"]["has_more"], false);
    // An invented campaign looks exactly like a real one.
    assert_eq!(keys(&second["data"][0]), keys(&first["data"][0]));
    assert_eq!(second["data"][0]["name"], "Campaign 101");
}

#[tokio::test]
async fn reference_has_more_with_limit_10_turns_false_at_page_10() {
    let api = start(|c| c.has_more = HasMore::Reference).await;

    let ninth = api.page(9, 10).await;
    let tenth = api.page(10, 10).await;

    assert_eq!(ninth["pagination"]["has_more"], true);
    assert_eq!(ids(&tenth), campaigns(91..=100));
    assert_eq!(tenth["pagination"]["has_more"], false);
}

#[tokio::test]
async fn reference_has_more_invents_the_same_campaigns_for_the_same_seed() {
    let one = start(|c| c.has_more = HasMore::Reference).await;
    let other = start(|c| c.has_more = HasMore::Reference).await;

    let a = one.page(3, 100).await;
    let b = other.page(3, 100).await;

    for field in ["name", "status", "budget", "impressions", "clicks"] {
        assert_eq!(a["data"][7][field], b["data"][7][field], "{field}");
    }
}

#[tokio::test]
async fn in_reference_mode_any_campaign_n_syncs_as_the_reference_checks_no_ids() {
    let api = start(|c| c.has_more = HasMore::Reference).await;

    let (invented, _) = api.sync("campaign_777").await;
    let (zero, _) = api.sync("campaign_0").await;
    let (junk, _) = api.sync("banana").await;

    assert_eq!(invented, StatusCode::OK);
    assert_eq!(zero, StatusCode::NOT_FOUND);
    assert_eq!(junk, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn honest_has_more_ends_at_the_data_and_serves_empty_pages_past_it() {
    let api = start(|c| c.has_more = HasMore::Honest).await;

    let last = api.page(10, 10).await;
    let past = api.page(11, 10).await;

    assert_eq!(last["pagination"]["has_more"], false);
    assert_eq!(ids(&past), Vec::<String>::new());
    assert_eq!(past["pagination"]["has_more"], false);
    assert_eq!(api.sync("campaign_101").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn endless_has_more_stays_true_over_empty_pages() {
    let api = start(|c| c.has_more = HasMore::Endless).await;

    let last = api.page(10, 10).await;
    let past = api.page(50, 10).await;

    assert_eq!(ids(&last), campaigns(91..=100));
    assert_eq!(last["pagination"]["has_more"], true);
    assert_eq!(past["data"], json!([]));
    assert_eq!(past["pagination"]["has_more"], true);
    assert_eq!(past["pagination"]["total"], 100);
}

#[tokio::test]
async fn repeat_has_more_serves_the_last_real_page_again_past_the_end() {
    let api = start(|c| c.has_more = HasMore::Repeat).await;

    let last = api.page(4, 30).await;
    let past = api.page(5, 30).await;
    let far_past = api.page(9, 30).await;

    assert_eq!(ids(&last), campaigns(91..=100));
    assert_eq!(ids(&past), campaigns(91..=100));
    assert_eq!(ids(&far_past), campaigns(91..=100));
    for page in [&last, &past, &far_past] {
        assert_eq!(page["pagination"]["has_more"], true);
    }
}

#[tokio::test]
async fn invent_has_more_invents_new_campaigns_forever_while_total_stays_the_data_size() {
    let api = start(|c| c.has_more = HasMore::Invent).await;

    let straddling = api.page(2, 60).await;
    let past = api.page(11, 10).await;
    let far_past = api.page(1000, 10).await;

    assert_eq!(ids(&straddling), campaigns(61..=120));
    assert_eq!(ids(&past), campaigns(101..=110));
    assert_eq!(ids(&far_past), campaigns(9991..=10000));
    for page in [&straddling, &past, &far_past] {
        assert_eq!(page["pagination"]["has_more"], true);
        assert_eq!(page["pagination"]["total"], 100);
    }
    assert_eq!(api.sync("campaign_9995").await.0, StatusCode::OK);
}

// pagination and stats

#[tokio::test]
async fn omit_total_leaves_total_out_of_pagination() {
    let api = start(|c| c.omit_total = true).await;

    let page = api.page(1, 10).await;

    assert_eq!(keys(&page["pagination"]), ["has_more", "limit", "page"]);
}

#[tokio::test]
async fn stats_count_well_formed_listing_answers_per_page() {
    let api = start(|c| c.wrong_shape_pages = vec![3]).await;

    api.page(1, 10).await;
    api.page(2, 10).await;
    api.page(2, 10).await;
    api.page(3, 10).await;

    let stats = api.sim.stats();
    assert_eq!(stats.list_calls_ok, 3);
    assert_eq!(
        stats
            .pages_served
            .iter()
            .map(|(p, n)| (*p, *n))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    assert_eq!(stats.count("list", "wrong_shape"), 1);
}

// arrival jitter

#[tokio::test]
async fn arrival_jitter_delays_every_api_request() {
    let api = start(|c| c.arrival_jitter = Duration::from_millis(20)).await;

    let started = Instant::now();
    for _ in 0..20 {
        api.page(1, 1).await;
    }
    let elapsed = started.elapsed();

    // 20 uniform draws in [0, 20 ms] add up to 200 ms on average; far above 40 ms always.
    assert!(elapsed > Duration::from_millis(40), "{elapsed:?}");
}

#[tokio::test]
async fn jittered_requests_are_still_counted_by_the_rate_limit_once_they_arrive() {
    let api = start(|c| {
        c.time_scale = 1.0;
        c.rate_limit = RateLimit::new(5, Duration::from_secs(60)).unwrap();
        c.arrival_jitter = Duration::from_millis(30);
    })
    .await;

    let answers = futures::future::join_all((0..8).map(|_| api.get("/api/campaigns"))).await;

    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, refused), (5, 3));
    let stats = api.sim.stats();
    assert_eq!(stats.clients["default"].requests, 8);
    assert_eq!(stats.rate_limited, 3);
}

#[tokio::test]
async fn the_arrivals_log_has_a_line_for_every_request_the_window_judged() {
    let dir = std::env::temp_dir().join(format!("adsync-arrivals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("arrivals.log");
    let api = start(|c| {
        c.time_scale = 1.0;
        c.rate_limit = RateLimit::new(2, Duration::from_secs(60)).unwrap();
        c.arrivals_log = Some(path.clone());
    })
    .await;

    for _ in 0..3 {
        api.get("/api/campaigns").await;
    }
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    // The token request is not rate-limited: three lines, two let through and one refused.
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    let outcomes: Vec<&str> = lines.iter().map(|l| l[3]).collect();
    assert_eq!(outcomes, ["ok", "ok", "429"]);
    for line in &lines {
        assert_eq!(line[1], "default");
        let at: f64 = line[0].parse().unwrap();
        assert!(at > 1.7e9, "unix seconds: {at}");
    }
}

// 429 and token overrides

async fn one_429(tweak: impl FnOnce(&mut SimConfig)) -> reqwest::Response {
    let api = start(|c| {
        c.time_scale = 1.0;
        c.rate_limit = RateLimit::new(1, Duration::from_secs(60)).unwrap();
        tweak(c);
    })
    .await;
    api.page(1, 10).await;
    let response = api
        .http
        .get(format!("{}/api/campaigns", api.sim.url()))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    response
}

#[tokio::test]
async fn a_429_carries_the_overridden_retry_after_body_and_header() {
    let cases = [
        (json!(1e12), "99999999999"),
        (json!(-5), "Fri, 31 Dec 9999 23:59:59 GMT"),
        (json!("soon"), "soon"),
        (json!(null), "-1"),
    ];
    for (body, header) in cases {
        let response = one_429(|c| {
            c.retry_after_body = Some(body.clone());
            c.retry_after_header_value = Some(header.into());
        })
        .await;

        assert_eq!(response.headers()["retry-after"], header);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["retry_after"].to_string(), body.to_string());
    }
}

#[tokio::test]
async fn a_429_without_overrides_says_the_scaled_window_in_the_body_only() {
    let response = one_429(|_| {}).await;

    assert!(response.headers().get("retry-after").is_none());
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["retry_after"], 60);
}

#[tokio::test]
async fn token_answers_carry_the_overridden_expires_in_and_issued_at_but_tokens_still_work() {
    let api = start(|c| {
        c.expires_in = Some(json!(-1));
        c.issued_at = Some(json!("abc"));
    })
    .await;

    let answer = api.token_answer().await;

    assert_eq!(answer["expires_in"], -1);
    assert_eq!(answer["issued_at"], "abc");
    api.page(1, 10).await;
}

#[tokio::test]
async fn an_absurd_expires_in_is_sent_verbatim() {
    let api = start(|c| c.expires_in = Some(json!(1e300))).await;

    let answer = api.token_answer().await;

    assert_eq!(answer["expires_in"].as_f64(), Some(1e300));
}

// schema drift and wrong shapes

#[tokio::test]
async fn every_nth_campaign_has_an_unknown_status_and_all_carry_extra_fields() {
    let api = start(|c| {
        c.unknown_status_every = Some(7);
        c.extra_fields = true;
    })
    .await;

    let page = api.page(1, 20).await;

    for campaign in page["data"].as_array().unwrap() {
        let n: u64 = campaign["id"].as_str().unwrap()[9..].parse().unwrap();
        assert_eq!(
            campaign["status"] == "archived_v2",
            n.is_multiple_of(7),
            "{campaign}"
        );
        assert_eq!(
            campaign["bid_strategy"],
            json!({"kind": "cpc", "max_bid": 0.35, "caps": [1, 2, 3]})
        );
        assert_eq!(campaign["labels"], json!(["q4", "brand"]));
    }
}

#[tokio::test]
async fn a_wrong_shape_page_answers_200_with_the_wrong_keys_every_time() {
    let api = start(|c| c.wrong_shape_pages = vec![2]).await;

    let right = api.page(1, 10).await;
    let wrong = api.page(2, 10).await;
    let again = api.page(2, 10).await;

    assert_eq!(keys(&right), ["data", "pagination"]);
    for answer in [&wrong, &again] {
        assert_eq!(keys(answer), ["campaigns", "next"]);
        assert_eq!(answer["next"], Value::Null);
        assert_eq!(answer["campaigns"].as_array().unwrap().len(), 10);
    }
}

#[tokio::test]
async fn the_sync_of_every_nth_campaign_answers_200_ok_true_every_time() {
    let api = start(|c| c.wrong_shape_sync_every = Some(3)).await;

    let right = api.sync("campaign_2").await;
    let wrong = api.sync("campaign_3").await;
    let again = api.sync("campaign_3").await;

    assert_eq!(right.0, StatusCode::OK);
    assert_eq!(right.1["success"], true);
    for answer in [wrong, again] {
        assert_eq!(answer, (StatusCode::OK, json!({"ok": true})));
    }
    assert_eq!(api.sim.stats().count("sync", "wrong_shape"), 2);
}

// data that changes while a client pages through it

#[tokio::test]
async fn a_scheduled_mutation_changes_total_and_shifts_the_listing() {
    let api = start(|c| {
        c.mutations = vec![Mutation {
            after_list_calls: 1,
            insert_front: 2,
            remove_front: 3,
        }]
    })
    .await;

    let before = api.page(1, 10).await;
    let after = api.page(1, 10).await;

    assert_eq!(ids(&before), campaigns(1..=10));
    assert_eq!(before["pagination"]["total"], 100);
    let mut expected = campaigns([101, 102]);
    expected.extend(campaigns(4..=11));
    assert_eq!(ids(&after), expected);
    assert_eq!(after["pagination"]["total"], 99);
    assert_eq!(api.sync("campaign_2").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.sync("campaign_101").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_mutation_waits_for_successful_listing_calls_only() {
    let api = start(|c| {
        c.fail_every = Some(2);
        c.mutations = vec!["2:1:0".parse().unwrap()];
    })
    .await;

    // Listing calls 2 and 4 fail.
    api.page(1, 10).await;
    let failed = api.get("/api/campaigns?page=2").await;
    let second_ok = api.page(2, 10).await;
    let failed_again = api.get("/api/campaigns").await;
    let third_ok = api.page(1, 10).await;

    assert_eq!(failed.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed_again.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second_ok["pagination"]["total"], 100);
    assert_eq!(ids(&third_ok)[0], "campaign_101");
    assert_eq!(third_ok["pagination"]["total"], 101);
}

#[tokio::test]
async fn a_removed_campaign_syncs_in_reference_mode_as_the_reference_checks_no_ids() {
    let api = start(|c| c.has_more = HasMore::Reference).await;

    assert!(api.sim.remove_campaign("campaign_5"));

    assert_eq!(api.sync("campaign_5").await.0, StatusCode::OK);
    assert!(!ids(&api.page(1, 10).await).contains(&"campaign_5".to_owned()));
}

#[tokio::test]
async fn admin_routes_remove_restore_and_insert_campaigns() {
    let api = start(|_| {}).await;

    let removed = api.admin("/__sim/campaigns/campaign_5/remove").await;
    let while_removed = api.page(1, 10).await;
    let sync_while_removed = api.sync("campaign_5").await.0;
    let restored = api.admin("/__sim/campaigns/campaign_5/restore").await;
    let at_front = api.admin("/__sim/campaigns?count=2&at=front").await;
    let at_back = api.admin("/__sim/campaigns?count=1&at=back").await;
    let after = api.page(1, 10).await;
    let last = api.page(11, 10).await;

    assert_eq!(removed, (StatusCode::OK, json!({"removed": "campaign_5"})));
    assert_eq!(while_removed["pagination"]["total"], 99);
    assert!(!ids(&while_removed).contains(&"campaign_5".to_owned()));
    assert_eq!(sync_while_removed, StatusCode::NOT_FOUND);
    assert_eq!(
        restored,
        (StatusCode::OK, json!({"restored": "campaign_5"}))
    );
    assert_eq!(
        at_front,
        (
            StatusCode::OK,
            json!({"ids": ["campaign_101", "campaign_102"]})
        )
    );
    assert_eq!(at_back, (StatusCode::OK, json!({"ids": ["campaign_103"]})));
    let mut expected = campaigns([101, 102]);
    expected.extend(campaigns(1..=8));
    assert_eq!(ids(&after), expected);
    assert_eq!(after["pagination"]["total"], 103);
    assert_eq!(ids(&last), campaigns([99, 100, 103]));
    assert_eq!(api.sync("campaign_5").await.0, StatusCode::OK);
}

#[tokio::test]
async fn admin_routes_refuse_what_they_cannot_do() {
    let api = start(|_| {}).await;

    let unknown = api.admin("/__sim/campaigns/campaign_500/remove").await.0;
    let not_removed = api.admin("/__sim/campaigns/campaign_5/restore").await.0;
    let zero = api.admin("/__sim/campaigns?count=0").await.0;
    let sideways = api.admin("/__sim/campaigns?at=middle").await.0;

    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_eq!(not_removed, StatusCode::NOT_FOUND);
    assert_eq!(zero, StatusCode::BAD_REQUEST);
    assert_eq!(sideways, StatusCode::BAD_REQUEST);
    assert_eq!(api.sim.campaign_ids().len(), 100);
}

#[tokio::test]
async fn simulator_methods_change_the_data_set_without_http() {
    let api = start(|c| c.campaigns = 5).await;

    assert!(api.sim.remove_campaign("campaign_2"));
    assert!(!api.sim.remove_campaign("campaign_2"));
    let front = api.sim.insert_campaigns(1, true);
    let back = api.sim.insert_campaigns(1, false);
    assert!(api.sim.restore_campaign("campaign_2"));
    assert!(!api.sim.restore_campaign("campaign_2"));

    assert_eq!(front, ["campaign_6"]);
    assert_eq!(back, ["campaign_7"]);
    assert_eq!(api.sim.campaign_ids(), campaigns([6, 1, 2, 3, 4, 5, 7]));
    assert_eq!(
        ids(&api.page(1, 10).await),
        campaigns([6, 1, 2, 3, 4, 5, 7])
    );
}

#[tokio::test]
async fn inserted_campaigns_have_live_counters_too() {
    let api = start(|c| c.campaigns = 3).await;
    let id = api.sim.insert_campaigns(1, false).remove(0);

    let first = api.page(1, 10).await;
    let second = api.page(1, 10).await;

    let impressions = |page: &Value| page["data"][3]["impressions"].as_u64().unwrap();
    assert_eq!(first["data"][3]["id"], id.as_str());
    assert!(impressions(&second) > impressions(&first));
}

#[test]
fn mutations_are_written_after_insert_remove() {
    let m: Mutation = "3:5:2".parse().unwrap();

    assert_eq!(
        m,
        Mutation {
            after_list_calls: 3,
            insert_front: 5,
            remove_front: 2
        }
    );
    assert_eq!(m.to_string(), "3:5:2");
    for nonsense in ["3:0:0", "3:5", "3:5:2:1", "a:1:1", "-1:1:1", ""] {
        assert!(nonsense.parse::<Mutation>().is_err(), "{nonsense}");
    }
}
