//! The client against a server that breaks the contract: wrong shapes, huge bodies, absurd
//! waits and token lifetimes. Each answer is scripted, and the number of requests it cost is
//! asserted exactly.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use adsync_client::{AdClient, ClientConfig, Error};
use adsync_domain::{CampaignId, RateLimit};
use common::*;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{header, method, path},
};

fn page_json() -> Value {
    json!({"data": [{"id": "campaign_1"}],
           "pagination": {"page": 1, "limit": 10, "total": 1, "has_more": false}})
}

async fn mount_token(server: &MockServer, expires_in: Value) -> Arc<AtomicUsize> {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    Mock::given(method("POST"))
        .and(path("/auth/token"))
        .respond_with(move |_: &Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(json!({
                "access_token": format!("t{n}"), "token_type": "Bearer",
                "expires_in": expires_in.clone(), "issued_at": "yesterday-ish"
            }))
        })
        .mount(server)
        .await;
    issued
}

/// A client for `url` with a generous rate limit and server-imposed waits capped at 200 ms.
fn config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url.parse().unwrap(), credentials(PASSWORD));
    c.rate_limit = RateLimit::new(1000, Duration::from_secs(1)).unwrap();
    c.retry = fast_retries();
    c.request_timeout = Duration::from_secs(5);
    c.max_retry_after = Some(Duration::from_millis(200));
    c
}

fn client(url: &str) -> AdClient {
    AdClient::new(config(url)).unwrap()
}

#[tokio::test]
async fn a_page_of_the_wrong_shape_is_a_contract_error_after_exactly_one_request() {
    let server = MockServer::start().await;
    mount_token(&server, json!(3600)).await;
    Mock::given(path("/api/campaigns"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"campaigns": [], "next": null})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server.uri());

    let err = deadline(client.list_campaigns(1, 10)).await.unwrap_err();

    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("missing field `data`"), "{err}");
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn a_sync_answer_for_another_campaign_is_a_contract_error_after_one_request() {
    let server = MockServer::start().await;
    mount_token(&server, json!(3600)).await;
    Mock::given(path("/api/campaigns/campaign_1/sync"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "campaign_id": "campaign_2"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server.uri());

    let id = CampaignId::parse("campaign_1").unwrap();
    let err = deadline(client.sync_campaign(&id)).await.unwrap_err();

    assert!(matches!(err, Error::Contract { .. }), "{err:?}");
    assert!(err.to_string().contains("campaign_2"), "{err}");
}

#[tokio::test]
async fn an_empty_access_token_is_a_contract_error() {
    let server = MockServer::start().await;
    Mock::given(path("/auth/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "", "expires_in": 3600})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server.uri());

    let err = deadline(client.authenticate()).await.unwrap_err();

    assert!(
        matches!(err, Error::Contract { what: "auth", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("access_token is empty"), "{err}");
}

#[tokio::test]
async fn a_content_length_over_the_cap_is_refused_with_advice() {
    let server = MockServer::start().await;
    mount_token(&server, json!(3600)).await;
    let big = json!({"data": vec!["x".repeat(100); 100],
                     "pagination": {"page": 1, "limit": 100, "has_more": false}});
    Mock::given(path("/api/campaigns"))
        .respond_with(ResponseTemplate::new(200).set_body_json(big))
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server.uri());
    c.max_body_bytes = 4096;
    let client = AdClient::new(c).unwrap();

    let err = deadline(client.list_campaigns(1, 100)).await.unwrap_err();

    assert!(
        matches!(err, Error::TooLarge { limit: 4096, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("smaller page size"), "{err}");
}

/// What a raw server answers to the n-th `/api` request (tokens are always served).
enum Reply {
    /// These bytes, then close.
    Bytes(String),
    /// A 200 with a chunked body of `total` bytes, written until the client goes away.
    Chunked { total: usize },
    /// These bytes, then nothing, the connection held open.
    Stall(String),
}

struct Raw {
    url: String,
    api_requests: Arc<AtomicUsize>,
    body_bytes_written: Arc<AtomicU64>,
}

/// A hand-written HTTP/1.1 server, for what wiremock cannot send: a chunked body with no
/// length, a length it never delivers.
async fn raw_server(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Raw {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let api_requests = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let (count, bytes) = (api_requests.clone(), written.clone());
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (count, bytes, reply) = (count.clone(), bytes.clone(), reply.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if String::from_utf8_lossy(&head).contains("/auth/token") {
                    let body = r#"{"access_token": "t1", "expires_in": 3600}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    return;
                }
                match reply(count.fetch_add(1, Ordering::SeqCst)) {
                    Reply::Bytes(b) => {
                        let _ = socket.write_all(b.as_bytes()).await;
                    }
                    Reply::Stall(b) => {
                        let _ = socket.write_all(b.as_bytes()).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    Reply::Chunked { total } => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
                        if socket.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
                        let mut sent = 0;
                        while sent < total {
                            if socket.write_all(chunk.as_bytes()).await.is_err() {
                                return;
                            }
                            sent += 0x10000;
                            bytes.fetch_add(0x10000, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    Raw {
        url,
        api_requests,
        body_bytes_written: written,
    }
}

fn ok_page() -> String {
    let body = page_json().to_string();
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_body_over_the_cap_is_refused_without_reading_it_all() {
    let raw = raw_server(|_| Reply::Chunked { total: 256 << 20 }).await;
    let mut c = config(&raw.url);
    c.max_body_bytes = 1 << 20;
    let client = AdClient::new(c).unwrap();

    let err = deadline(client.list_campaigns(1, 10)).await.unwrap_err();

    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert_eq!(raw.api_requests.load(Ordering::SeqCst), 1, "not retried");
    // The server may fill socket buffers before it notices; it must not get far.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = raw.body_bytes_written.load(Ordering::SeqCst);
    assert!(
        written < 64 << 20,
        "{written} bytes of 256 MiB were written"
    );
}

#[tokio::test]
async fn an_announced_length_over_the_cap_is_refused_before_any_body_arrives() {
    // The server announces 10 GiB and sends nothing: only an up-front check answers before
    // the request timeout.
    let raw = raw_server(|_| {
        Reply::Stall(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10737418240\r\n\r\n"
                .into(),
        )
    })
    .await;
    let mut c = config(&raw.url);
    c.request_timeout = Duration::from_secs(20);
    let client = AdClient::new(c).unwrap();

    let err = deadline(client.list_campaigns(1, 10)).await.unwrap_err();

    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert_eq!(client.stats().timeouts, 0);
}

#[tokio::test]
async fn a_body_cut_short_of_its_length_is_retried() {
    let raw = raw_server(|n| {
        if n == 0 {
            Reply::Bytes(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\nconnection: close\r\n\r\n{\"data\": ["
                    .into(),
            )
        } else {
            Reply::Bytes(ok_page())
        }
    })
    .await;
    let client = client(&raw.url);

    let page = deadline(client.list_campaigns(1, 10)).await.unwrap();

    assert_eq!(page.data.len(), 1);
    assert_eq!(raw.api_requests.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().retries, 1);
}

/// A 429 with `header` and `body`, then a page: the call must end, after exactly two requests.
async fn survives_one_429(header_value: Option<&str>, body: Value) {
    let server = MockServer::start().await;
    mount_token(&server, json!(3600)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let header_value = header_value.map(str::to_owned);
    Mock::given(path("/api/campaigns"))
        .respond_with(move |_: &Request| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                let r = ResponseTemplate::new(429).set_body_json(body.clone());
                match &header_value {
                    Some(h) => r.insert_header("Retry-After", h.as_str()),
                    None => r,
                }
            } else {
                ResponseTemplate::new(200).set_body_json(page_json())
            }
        })
        .mount(&server)
        .await;
    let client = client(&server.uri());

    let result = deadline(client.list_campaigns(1, 10)).await;

    assert!(result.is_ok(), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().rate_limited, 1);
    assert_eq!(
        client.limiter().predicted_wait(Duration::ZERO),
        Duration::ZERO
    );
}

#[tokio::test]
async fn absurd_retry_after_headers_hold_for_a_bounded_time_without_a_panic() {
    for header_value in [
        "1000000000000",
        "1e300",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "-5",
        "NaN",
    ] {
        survives_one_429(Some(header_value), json!({"error": "Rate limit exceeded"})).await;
    }
}

#[tokio::test]
async fn absurd_retry_after_bodies_hold_for_a_bounded_time_without_a_panic() {
    for value in [
        json!(1e12),
        json!(1e300),
        json!(-5),
        json!("soon"),
        json!(null),
    ] {
        survives_one_429(
            None,
            json!({"error": "Rate limit exceeded", "retry_after": value}),
        )
        .await;
    }
}

#[tokio::test]
async fn absurd_token_lifetimes_keep_the_client_working_and_it_refreshes_on_401() {
    for expires_in in [json!(1e300), json!(-1), json!("abc"), json!(0), json!(null)] {
        let server = MockServer::start().await;
        let issued = mount_token(&server, expires_in.clone()).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        // The first token works once, then the server says it expired.
        Mock::given(path("/api/campaigns"))
            .and(header("authorization", "Bearer t1"))
            .respond_with(move |_: &Request| {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    ResponseTemplate::new(200).set_body_json(page_json())
                } else {
                    ResponseTemplate::new(401).set_body_json(json!({"error": "Token expired"}))
                }
            })
            .mount(&server)
            .await;
        Mock::given(path("/api/campaigns"))
            .and(header("authorization", "Bearer t2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(page_json()))
            .mount(&server)
            .await;
        let client = client(&server.uri());

        let first = deadline(client.list_campaigns(1, 10)).await;
        let second = deadline(client.list_campaigns(1, 10)).await;

        assert!(first.is_ok() && second.is_ok(), "{expires_in}: {second:?}");
        assert_eq!(
            issued.load(Ordering::SeqCst),
            2,
            "{expires_in}: one token, then one refresh on the 401"
        );
        let token = client.tokens().current().await.unwrap();
        assert_eq!(token.generation, 2);
        assert!(
            token
                .expires_in
                .is_none_or(|d| d <= Duration::from_secs(86_400)),
            "{expires_in}: {token:?}"
        );
    }
}
