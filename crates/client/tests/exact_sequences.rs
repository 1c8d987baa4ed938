//! The client against wiremock, where the exact sequence of answers matters.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use adsync_client::Error;
use common::*;
use futures::future::join_all;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{header, method, path},
};

fn page(page: u64, per_page: u64, total: u64) -> Value {
    let from = (page - 1) * per_page;
    let data: Vec<_> = (from..(from + per_page).min(total))
        .map(|i| {
            json!({"id": format!("campaign_{}", i + 1), "name": format!("Campaign {}", i + 1),
                   "status": "active", "budget": 1000, "impressions": 1, "clicks": 1,
                   "conversions": 0, "created_at": "2024-12-11T10:30:00.000Z"})
        })
        .collect();
    json!({"data": data, "pagination": {"page": page, "limit": per_page, "total": total,
                                         "has_more": page * per_page < total}})
}

fn query_page(req: &Request) -> u64 {
    req.url
        .query_pairs()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1)
}

/// Token endpoint handing out `t1`, `t2`, ... and counting calls.
async fn mount_tokens(server: &MockServer) -> Arc<AtomicUsize> {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    Mock::given(method("POST"))
        .and(path("/auth/token"))
        .respond_with(move |_: &Request| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(json!({
                "access_token": format!("t{n}"), "token_type": "Bearer",
                "expires_in": 3600, "issued_at": 1_700_000_000
            }))
        })
        .mount(server)
        .await;
    issued
}

fn expired() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(json!({
        "error": "Token expired",
        "message": "Access token has expired. Please obtain a new token.",
        "expired_at": "2024-12-11T11:30:00.000Z"
    }))
}

#[tokio::test]
async fn retry_after_in_the_body_alone_is_honoured() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let seen = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let log = seen.clone();
    Mock::given(path("/api/campaigns"))
        .respond_with(move |req: &Request| {
            let mut log = log.lock().unwrap();
            log.push(Instant::now());
            if log.len() == 1 {
                // The reference server: no header, the wait only in the body.
                ResponseTemplate::new(429).set_body_json(json!({
                    "error": "Rate limit exceeded",
                    "message": "Too many requests. Limit: 10 per minute",
                    "retry_after": 0.4
                }))
            } else {
                ResponseTemplate::new(200).set_body_json(page(query_page(req), 10, 10))
            }
        })
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let result = client.list_campaigns(1, 10).await;

    assert!(result.is_ok(), "{result:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let gap = seen[1] - seen[0];
    assert!(gap >= Duration::from_millis(400), "resent after {gap:?}");
    assert!(gap < Duration::from_millis(1000), "resent after {gap:?}");
    assert_eq!(client.stats().rate_limited, 1);
}

#[tokio::test]
async fn the_retry_after_header_wins_over_the_body() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let seen = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let log = seen.clone();
    Mock::given(path("/api/campaigns"))
        .respond_with(move |req: &Request| {
            let mut log = log.lock().unwrap();
            log.push(Instant::now());
            if log.len() == 1 {
                ResponseTemplate::new(429)
                    .insert_header("Retry-After", "1")
                    .set_body_json(json!({"error": "Rate limit exceeded", "retry_after": 60}))
            } else {
                ResponseTemplate::new(200).set_body_json(page(query_page(req), 10, 10))
            }
        })
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    client.list_campaigns(1, 10).await.unwrap();

    let seen = seen.lock().unwrap();
    let gap = seen[1] - seen[0];
    assert!(gap >= Duration::from_secs(1), "{gap:?}");
    assert!(
        gap < Duration::from_secs(3),
        "the body's 60 s was used: {gap:?}"
    );
}

#[tokio::test]
async fn a_429_holds_every_request_of_the_client_id() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let seen = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let log = seen.clone();
    Mock::given(path("/api/campaigns"))
        .respond_with(move |req: &Request| {
            let mut log = log.lock().unwrap();
            log.push(Instant::now());
            if log.len() == 1 {
                ResponseTemplate::new(429).set_body_json(json!({"retry_after": 0.5}))
            } else {
                ResponseTemplate::new(200).set_body_json(page(query_page(req), 10, 100))
            }
        })
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    // One call first, so the 429 lands before the others start.
    let first = client.list_campaigns(1, 10).await;
    let rest = join_all((2..=6).map(|p| client.list_campaigns(p, 10))).await;

    assert!(first.is_ok() && rest.iter().all(Result::is_ok));
    let seen = seen.lock().unwrap();
    let hold_end = seen[0] + Duration::from_millis(500);
    assert!(
        seen[1..].iter().all(|t| *t >= hold_end),
        "a request went out during the hold"
    );
}

#[tokio::test]
async fn a_token_that_expires_mid_stream_costs_one_refresh_and_no_page() {
    let server = MockServer::start().await;
    let issued = mount_tokens(&server).await;
    Mock::given(path("/api/campaigns"))
        .respond_with(move |req: &Request| {
            let p = query_page(req);
            let auth = req.headers.get("authorization").unwrap().to_str().unwrap();
            // The first token dies when page 4 is asked for.
            if p >= 4 && auth == "Bearer t1" {
                expired()
            } else {
                ResponseTemplate::new(200).set_body_json(page(p, 10, 100))
            }
        })
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let campaigns: Vec<_> = list_records(&client, 10).await;

    assert_eq!(campaigns.len(), 100);
    assert_eq!(issued.load(Ordering::SeqCst), 2, "one refresh");
    assert_eq!(client.stats().retries, 0, "the refresh is not a retry");
    assert_eq!(client.stats().token_refreshes, 2);
}

#[tokio::test]
async fn fifty_concurrent_requests_share_one_refresh() {
    let server = MockServer::start().await;
    let issued = mount_tokens(&server).await;
    Mock::given(path("/api/campaigns"))
        .and(header("authorization", "Bearer t1"))
        .respond_with(expired())
        .mount(&server)
        .await;
    Mock::given(path("/api/campaigns"))
        .and(header("authorization", "Bearer t2"))
        .respond_with(move |req: &Request| {
            ResponseTemplate::new(200)
                .set_body_json(page(query_page(req), 1, 100))
                .set_delay(Duration::from_millis(20))
        })
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());
    client.authenticate().await.unwrap();

    let results = join_all((1..=50).map(|p| client.list_campaigns(p, 1))).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "t1, then one shared refresh to t2"
    );
}

#[tokio::test]
async fn a_503_storm_ends_in_success_within_the_retry_budget() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    Mock::given(path("/api/campaigns"))
        .respond_with(move |req: &Request| {
            if counter.fetch_add(1, Ordering::SeqCst) < 5 {
                ResponseTemplate::new(503).set_body_json(json!({
                    "error": "Service temporarily unavailable",
                    "message": "The service is experiencing issues. Please retry after a short delay."
                }))
            } else {
                ResponseTemplate::new(200).set_body_json(page(query_page(req), 10, 10))
            }
        })
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let result = client.list_campaigns(1, 10).await;

    assert!(result.is_ok(), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(client.stats().retries, 5);
    assert_eq!(client.stats().server_errors, 5);
}

#[tokio::test]
async fn a_503_that_never_ends_fails_after_the_budget_with_the_servers_message() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(path("/api/campaigns"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({
            "error": "Service temporarily unavailable", "message": "down for maintenance"
        })))
        .expect(8)
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let err = client.list_campaigns(1, 10).await.unwrap_err();

    assert!(matches!(err, Error::Server { status: 503, .. }), "{err:?}");
    assert!(err.to_string().contains("down for maintenance"), "{err}");
}

#[tokio::test]
async fn a_hang_times_out_and_is_retried() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    Mock::given(path("/api/campaigns/campaign_1/sync"))
        .respond_with(move |_: &Request| {
            let body = json!({"success": true, "campaign_id": "campaign_1",
                              "synced_at": "2024-12-11T10:30:00.000Z", "message": "ok"});
            let r = ResponseTemplate::new(200).set_body_json(body);
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                r.set_delay(Duration::from_secs(30)) // far past the 300 ms timeout
            } else {
                r
            }
        })
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let result = client
        .sync_campaign(&adsync_domain::CampaignId::parse("campaign_1").unwrap())
        .await;

    assert!(result.is_ok(), "{result:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().timeouts, 1);
}

#[tokio::test]
async fn truncated_json_is_retried() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    Mock::given(path("/api/campaigns"))
        .respond_with(move |req: &Request| {
            let full = serde_json::to_string(&page(query_page(req), 10, 10)).unwrap();
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                ResponseTemplate::new(200)
                    .set_body_raw(full[..full.len() / 2].to_owned(), "application/json")
            } else {
                ResponseTemplate::new(200).set_body_raw(full, "application/json")
            }
        })
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let page = client.list_campaigns(1, 10).await.unwrap();

    assert_eq!(page.data.len(), 10);
    assert_eq!(client.stats().malformed, 1);
    assert_eq!(client.stats().retries, 1);
}

#[tokio::test]
async fn other_4xx_are_not_retried_and_carry_the_servers_message() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(path("/api/campaigns/nope/sync"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": "Not found", "message": "Campaign nope does not exist"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let err = client
        .sync_campaign(&adsync_domain::CampaignId::parse("nope").unwrap())
        .await
        .unwrap_err();

    assert!(
        matches!(err, Error::Rejected { status: 404, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("Campaign nope does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn campaign_ids_are_escaped_in_the_path() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(path("/api/campaigns/a%20b%3Cc/sync"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "campaign_id": "a b<c"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let id = adsync_domain::CampaignId::parse("a b<c").unwrap();
    client.sync_campaign(&id).await.unwrap();
}

#[tokio::test]
async fn an_empty_page_that_claims_more_is_returned_as_sent_for_the_engine_to_judge() {
    let server = MockServer::start().await;
    mount_tokens(&server).await;
    Mock::given(path("/api/campaigns"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": [], "pagination": {"page": 1, "limit": 10, "total": 100, "has_more": true}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for_url(&server.uri());

    let page = deadline(client.list_campaigns(1, 10)).await.unwrap();

    assert!(page.data.is_empty());
    assert!(page.pagination.has_more);
}
