//! Helpers shared by the client's black-box tests.
#![allow(dead_code)]

use std::time::Duration;

use adsync_client::{AdClient, ClientConfig, Credentials, RetryPolicy};
use adsync_domain::RateLimit;
use adsync_sim::{SimConfig, Simulator};
use secrecy::SecretString;

pub const PASSWORD: &str = adsync_sim::REFERENCE_PASSWORD;

pub fn credentials(password: &str) -> Credentials {
    Credentials {
        email: adsync_sim::REFERENCE_EMAIL.into(),
        password: SecretString::from(password.to_owned()),
    }
}

/// A retry policy fast enough for tests: 5 ms doubling to 100 ms, 8 attempts.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(100),
        max_rate_limited: 3,
    }
}

/// A client configured to match `sim` (its scaled rate limit), with fast retries.
pub fn client_for(sim: &Simulator) -> AdClient {
    AdClient::new(config_for(sim, sim.config().effective_rate_limit())).unwrap()
}

pub fn config_for(sim: &Simulator, rate_limit: RateLimit) -> ClientConfig {
    let mut c = ClientConfig::new(sim.url().parse().unwrap(), credentials(PASSWORD));
    c.rate_limit = rate_limit;
    c.retry = fast_retries();
    c.request_timeout = Duration::from_millis(500);
    c
}

/// A client for a wiremock server with a generous rate limit.
pub fn client_for_url(url: &str) -> AdClient {
    let mut c = ClientConfig::new(url.parse().unwrap(), credentials(PASSWORD));
    c.rate_limit = RateLimit::new(1000, Duration::from_secs(1)).unwrap();
    c.retry = fast_retries();
    c.request_timeout = Duration::from_millis(300);
    AdClient::new(c).unwrap()
}

/// A reference simulator sped up `scale` times.
pub async fn start_sim(mut config: SimConfig, scale: f64) -> Simulator {
    config.time_scale = scale;
    Simulator::start_local(config).await.unwrap()
}

/// Every wait of a test has a deadline: a hang fails the test instead of stalling the suite.
pub async fn deadline<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("the call did not finish within 30 s")
}

/// Every record of every page, following `has_more` up to a bound. Only for servers that do
/// not lie at this page size: the engine's pager is what checks a platform's pagination.
pub async fn list_records(client: &AdClient, limit: u64) -> Vec<Box<serde_json::value::RawValue>> {
    let mut records = Vec::new();
    for page in 1..=1000 {
        let answer = client.list_campaigns(page, limit).await.unwrap();
        let more = answer.pagination.has_more && !answer.data.is_empty();
        records.extend(answer.data);
        if !more {
            return records;
        }
    }
    panic!("more than 1000 pages: this server lies about has_more");
}
