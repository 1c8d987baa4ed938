//! The client against the in-process simulator: the platform's whole contract, sped up.

mod common;

use std::{collections::HashSet, time::Duration};

use adsync_client::{AdClient, Error};
use adsync_domain::{CampaignId, RateLimit};
use adsync_sim::{Profile, SimConfig};
use common::*;
use futures::{StreamExt, future::join_all};

#[tokio::test]
async fn streams_every_campaign_of_the_reference_platform_through_its_503s() {
    let sim = start_sim(SimConfig::default(), 60.0).await;
    let client = client_for(&sim);

    let campaigns: Vec<_> = list_records(&client, 10).await;

    let ids: HashSet<_> = campaigns
        .iter()
        .map(|c| {
            serde_json::from_str::<serde_json::Value>(c.get()).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 100);
    let stats = sim.stats();
    assert_eq!(
        stats.count("list", "503"),
        2,
        "every 5th listing call fails: calls 5 and 10"
    );
    // Zero 429s is the limiter's property, proven against a model server on a paused clock
    // (src/limiter); over real sockets on a loaded machine only survival is certain.
    assert_eq!(
        client.stats().retries,
        2,
        "429s are handled inside an attempt"
    );
}

#[tokio::test]
async fn a_capped_limit_still_yields_every_campaign() {
    let mut config = SimConfig::for_profile(Profile::Calm);
    config.campaigns = 53;
    config.max_limit = Some(7);
    let sim = start_sim(config, 600.0).await;
    let client = client_for(&sim);

    let campaigns: Vec<_> = list_records(&client, 100).await;

    let ids: HashSet<_> = campaigns
        .iter()
        .map(|c| {
            serde_json::from_str::<serde_json::Value>(c.get()).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(campaigns.len(), 53);
    assert_eq!(ids.len(), 53);
    assert_eq!(sim.stats().count("list", "200"), 8, "ceil(53 / 7) pages");
}

#[tokio::test]
async fn with_a_matching_rate_limit_100_concurrent_calls_all_succeed() {
    // 10 per 60 s scaled 300 times: a 200 ms window, so 100 calls take two seconds.
    let sim = start_sim(SimConfig::default(), 300.0).await;
    let client = client_for(&sim);

    let calls = (0..100).map(|i| {
        let client = client.clone();
        async move {
            if i % 10 == 0 {
                client.list_campaigns(i / 10 + 1, 10).await.map(|_| ())
            } else {
                client
                    .sync_campaign(&CampaignId::parse(&format!("campaign_{}", i + 1)).unwrap())
                    .await
                    .map(|_| ())
            }
        }
    });
    let results = join_all(calls).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let stats = sim.stats();
    // Every 429 (none, on a quiet machine: see the limiter's paced-model tests) was seen by
    // the client and survived.
    assert_eq!(client.stats().rate_limited, stats.rate_limited, "{stats:?}");
    assert!(stats.clients["adsync"].requests >= 100);
}

#[tokio::test]
async fn a_client_that_underestimates_the_limit_recovers_from_429s() {
    // The client believes 20 per window; the platform allows 10. Every 429 holds the whole
    // client id for retry_after and the call is resent.
    let sim = start_sim(SimConfig::for_profile(Profile::Calm), 300.0).await;
    let window = sim.config().effective_rate_limit().window;
    let client = AdClient::new(config_for(&sim, RateLimit::new(20, window).unwrap())).unwrap();

    let ids: Vec<_> = (1..=30)
        .map(|i| CampaignId::parse(&format!("campaign_{i}")).unwrap())
        .collect();
    let results = join_all(ids.iter().map(|id| client.sync_campaign(id))).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(sim.stats().rate_limited > 0);
    assert_eq!(client.stats().rate_limited, sim.stats().rate_limited);
}

#[tokio::test]
async fn wrong_credentials_fail_once_clearly_and_without_a_retry_storm() {
    let sim = start_sim(SimConfig::default(), 60.0).await;
    let mut config = config_for(&sim, sim.config().effective_rate_limit());
    config.credentials = credentials("not-the-password");
    let client = AdClient::new(config).unwrap();

    let results = join_all((0..20).map(|p| client.list_campaigns(p + 1, 10))).await;

    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert!(matches!(err, Error::InvalidCredentials { .. }), "{err:?}");
        assert!(!err.is_transient());
    }
    let message = results[0].as_ref().unwrap_err().to_string();
    assert!(message.contains("rejected the credentials"), "{message}");
    // Where the credentials are set is the caller's to say (the CLI's variables, or a
    // service tenant's API): the client's error does not guess.
    assert!(!message.contains("AD_PLATFORM"), "{message}");
    assert!(!message.contains("not-the-password"));
    let stats = sim.stats();
    assert_eq!(
        stats.count("auth", "401"),
        1,
        "one token request, not one per call"
    );
    assert_eq!(stats.total("list"), 0);
}

#[tokio::test]
async fn tokens_are_refreshed_ahead_of_expiry_during_a_long_stream() {
    // At 600x, tokens live 60 s / 600 = 100 ms and a window is 100 ms: the 36 listing calls
    // (30 pages, six 503s) take about 400 ms, so the token must be replaced several times.
    let config = SimConfig {
        campaigns: 300,
        token_ttl: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let sim = start_sim(config, 600.0).await;
    let client = client_for(&sim);

    let campaigns: Vec<_> = list_records(&client, 10).await;

    assert_eq!(campaigns.len(), 300);
    let stats = sim.stats();
    assert!(stats.tokens_issued >= 3, "{stats:?}");
    assert_eq!(
        stats.count("list", "401"),
        0,
        "refreshed before the server said expired"
    );
    assert_eq!(client.stats().token_refreshes, stats.tokens_issued);
}

#[tokio::test]
async fn the_chaos_profile_is_survived_call_by_call() {
    let mut config = SimConfig::for_profile(Profile::Chaos);
    config.seed = 7;
    let sim = start_sim(config, 300.0).await;
    let mut client_config = config_for(&sim, sim.config().effective_rate_limit());
    client_config.request_timeout = Duration::from_millis(150);
    client_config.retry.max_attempts = 12;
    let client = AdClient::new(client_config).unwrap();

    let campaigns: Vec<_> = list_records(&client, 10).await;
    let synced = futures::stream::iter(campaigns.iter().take(40))
        .map(|c| {
            let client = client.clone();
            let id = CampaignId::parse(
                serde_json::from_str::<serde_json::Value>(c.get()).unwrap()["id"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            async move { client.sync_campaign(&id).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;

    assert_eq!(campaigns.len(), 100);
    assert!(synced.iter().all(Result::is_ok), "{synced:?}");
    let stats = sim.stats();
    let faults: u64 = ["503", "hang", "reset", "truncated"]
        .iter()
        .map(|o| stats.count("list", o) + stats.count("sync", o))
        .sum();
    assert!(faults > 0, "chaos produced no fault: {stats:?}");
    let c = client.stats();
    assert!(c.retries >= faults, "{c:?} vs {faults}");
}

#[tokio::test]
async fn an_unreachable_platform_is_a_clear_connect_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client_for_url(&format!("http://127.0.0.1:{port}"));

    let err = client.health().await.unwrap_err();

    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cannot reach the ad platform"),
        "{err}"
    );
    assert_eq!(
        client.stats().retries,
        7,
        "transient: the whole budget was tried"
    );
}
