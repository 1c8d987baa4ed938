//! How the client paces itself: the token before the limiter's slot, one widening per burst
//! of 429s, a retry log line that says the real delay, and the streak of failures a progress
//! display shows.

mod common;

use std::{
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use adsync_client::{AdClient, ClientConfig, SlidingWindowLimiter};
use adsync_domain::RateLimit;
use common::*;
use futures::future::join_all;
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;
use wiremock::{Mock, MockServer, Request, ResponseTemplate, matchers::path};

fn page_json() -> Value {
    json!({"data": [], "pagination": {"page": 1, "limit": 10, "total": 0, "has_more": false}})
}

fn config(url: &str, limit: RateLimit) -> ClientConfig {
    let mut c = ClientConfig::new(url.parse().unwrap(), credentials(PASSWORD));
    c.rate_limit = limit;
    c.retry = fast_retries();
    c.request_timeout = Duration::from_secs(5);
    c
}

#[tokio::test]
async fn the_token_is_taken_before_the_limiter_slot_and_renewed_if_the_wait_outlived_it() {
    let server = MockServer::start().await;
    // One request per 1.5 s; tokens live 1 s (refreshed 0.1 s before), so the second call's
    // token is stale by the time its slot comes.
    let limit = RateLimit::new(1, Duration::from_millis(1500)).unwrap();
    let limiter = Arc::new(SlidingWindowLimiter::with_margin(
        limit,
        Duration::from_millis(10),
    ));
    let free_at_token_time = Arc::new(Mutex::new(Vec::new()));
    let (seen, l, issued) = (
        free_at_token_time.clone(),
        limiter.clone(),
        Arc::new(AtomicUsize::new(0)),
    );
    let counter = issued.clone();
    Mock::given(path("/auth/token"))
        .respond_with(move |_: &Request| {
            // Token before slot: nobody holds an unsent slot while a token is fetched.
            seen.lock().unwrap().push(l.available());
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": format!("t{n}"), "expires_in": 1}))
        })
        .mount(&server)
        .await;
    let auth_seen = Arc::new(Mutex::new(Vec::new()));
    let log = auth_seen.clone();
    Mock::given(path("/api/campaigns"))
        .respond_with(move |req: &Request| {
            let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
            log.lock().unwrap().push(auth.to_owned());
            ResponseTemplate::new(200).set_body_json(page_json())
        })
        .mount(&server)
        .await;
    let client = AdClient::with_limiter(config(&server.uri(), limit), limiter.clone()).unwrap();

    let first = deadline(client.list_campaigns(1, 10)).await;
    let second = deadline(client.list_campaigns(2, 10)).await;

    assert!(first.is_ok() && second.is_ok(), "{second:?}");
    let free = free_at_token_time.lock().unwrap().clone();
    assert_eq!(
        free[0], 1,
        "the first token was fetched before any slot was taken"
    );
    assert!(
        free.len() >= 2,
        "the second call's token went stale and was renewed"
    );
    let auth = auth_seen.lock().unwrap().clone();
    assert_eq!(auth.len(), 2, "no request was resent");
    assert_ne!(auth[1], "Bearer t1", "a stale token was sent");
    assert_eq!(client.stats().unauthorized, 0);
    assert_eq!(
        limiter.available(),
        0,
        "one slot per send, none lost or doubled"
    );
}

#[tokio::test]
async fn a_burst_of_429s_widens_the_margin_once() {
    let server = MockServer::start().await;
    Mock::given(path("/auth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "t", "expires_in": 3600})),
        )
        .mount(&server)
        .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    Mock::given(path("/api/campaigns"))
        .respond_with(move |_: &Request| {
            if counter.fetch_add(1, Ordering::SeqCst) < 5 {
                ResponseTemplate::new(429)
                    .set_body_json(json!({"error": "Rate limit exceeded", "retry_after": 0.05}))
                    .set_delay(Duration::from_millis(100))
            } else {
                ResponseTemplate::new(200).set_body_json(page_json())
            }
        })
        .mount(&server)
        .await;
    let mut c = config(
        &server.uri(),
        RateLimit::new(100, Duration::from_secs(1)).unwrap(),
    );
    c.limiter_margin = Some(Duration::from_millis(10));
    let client = AdClient::new(c).unwrap();
    deadline(client.authenticate()).await.unwrap();

    let results = deadline(join_all((1..=5).map(|p| client.list_campaigns(p, 10)))).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(client.stats().rate_limited, 5);
    assert_eq!(
        client.limiter().margin(),
        Duration::from_millis(20),
        "five 429s of one burst widen once"
    );
}

#[tokio::test]
async fn failing_reports_the_streak_and_a_success_ends_it() {
    let server = MockServer::start().await;
    Mock::given(path("/auth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "t", "expires_in": 3600})),
        )
        .mount(&server)
        .await;
    let client_slot: Arc<Mutex<Option<AdClient>>> = Arc::default();
    let during = Arc::new(Mutex::new(Vec::new()));
    let (slot, seen, calls) = (
        client_slot.clone(),
        during.clone(),
        Arc::new(AtomicUsize::new(0)),
    );
    Mock::given(path("/api/campaigns"))
        .respond_with(move |_: &Request| {
            // What a progress display would see while the platform fails.
            if let Some(c) = slot.lock().unwrap().as_ref() {
                seen.lock().unwrap().push(c.failing());
            }
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                ResponseTemplate::new(503)
                    .set_body_json(json!({"error": "Service temporarily unavailable"}))
            } else {
                ResponseTemplate::new(200).set_body_json(page_json())
            }
        })
        .mount(&server)
        .await;
    let mut c = config(
        &server.uri(),
        RateLimit::new(100, Duration::from_secs(1)).unwrap(),
    );
    c.retry.max_attempts = 2;
    let client = AdClient::new(c).unwrap();
    *client_slot.lock().unwrap() = Some(client.clone());

    let failed = deadline(client.list_campaigns(1, 10)).await;
    let after_giving_up = client.failing();
    let succeeded = deadline(client.list_campaigns(1, 10)).await;

    assert!(failed.is_err() && succeeded.is_ok());
    let during = during.lock().unwrap().clone();
    assert_eq!(during[0], None, "no failure yet");
    let second = during[1].clone().expect("one failure so far");
    assert_eq!(second.attempts, 1);
    assert!(second.next_attempt_at.is_some(), "a retry was scheduled");
    assert!(second.last_error.contains("503"), "{}", second.last_error);
    let gave_up = after_giving_up.expect("the streak outlives a call that gave up");
    assert_eq!(gave_up.attempts, 2);
    assert_eq!(gave_up.since, second.since);
    assert_eq!(gave_up.next_attempt_at, None);
    assert_eq!(during[3].as_ref().map(|f| f.attempts), Some(3));
    assert_eq!(client.failing(), None, "a success ends the streak");
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn field(line: &str, name: &str) -> u64 {
    let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

// current_thread: the subscriber set by set_default is thread-local.
#[tokio::test(flavor = "current_thread")]
async fn a_retry_line_says_the_backoff_plus_the_wait_on_the_limiter() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = MockServer::start().await;
    Mock::given(path("/auth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "t", "expires_in": 3600})),
        )
        .mount(&server)
        .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    Mock::given(path("/api/campaigns"))
        .respond_with(move |_: &Request| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                ResponseTemplate::new(503).set_body_json(json!({"error": "down"}))
            } else {
                ResponseTemplate::new(200).set_body_json(page_json())
            }
        })
        .mount(&server)
        .await;
    // One request per 500 ms: the retry waits for the slot the 503 used, far past its backoff.
    let mut c = config(
        &server.uri(),
        RateLimit::new(1, Duration::from_millis(500)).unwrap(),
    );
    c.limiter_margin = Some(Duration::from_millis(10));
    let client = AdClient::new(c).unwrap();

    deadline(client.list_campaigns(1, 10)).await.unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("transient failure, retrying"))
        .expect("a retry line");
    let (total, backoff, limiter) = (
        field(line, "retry_in_ms"),
        field(line, "backoff_ms"),
        field(line, "rate_limit_wait_ms"),
    );
    assert!(limiter > 0, "{line}");
    assert!(
        total >= backoff + limiter && total <= backoff + limiter + 1,
        "{line}"
    );
}
