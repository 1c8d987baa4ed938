//! Operations over HTTP: health, readiness (and its 503 once the database is gone), Prometheus
//! metrics labelled by route template, the OpenAPI document with every route, the offline
//! reference page, and JSON errors for unknown paths and methods.

mod common;

use common::on_postgres;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn health_and_readiness_answer_and_readiness_fails_without_a_database() {
    on_postgres(|app| async move {
        let health = app.send(Method::GET, "/healthz", None, None).await;
        assert_eq!(health.status, StatusCode::OK);
        assert_eq!(health.json()["status"], "ok");
        let ready = app.send(Method::GET, "/readyz", None, None).await;
        assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);

        app.store.close().await;

        let unready = app.send(Method::GET, "/readyz", None, None).await;
        assert_eq!(
            unready.error(StatusCode::SERVICE_UNAVAILABLE),
            "unavailable"
        );
        assert_eq!(
            app.send(Method::GET, "/healthz", None, None).await.status,
            StatusCode::OK
        );
        // A request that needs the database is a 503 too, not a 500.
        let listing = app.get("/api/v1/tenants", &app.admin).await;
        assert_eq!(
            listing.error(StatusCode::SERVICE_UNAVAILABLE),
            "unavailable"
        );
    })
    .await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_show_the_queue_depth() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Measured").await;
        app.post_empty(&format!("/api/v1/tenants/{tenant}/runs"), &app.admin)
            .await;
        app.get(&format!("/api/v1/tenants/{tenant}"), &app.admin)
            .await;
        app.get("/api/v1/tenants/t_0000000000000000", &app.admin)
            .await;
        app.send(Method::GET, "/no/such/path", None, None).await;

        let reply = app.send(Method::GET, "/metrics", None, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = reply.text;
        let has = |needle: &str| text.lines().any(|l| l.contains(needle));
        assert!(has("adsync_queue_depth{status=\"queued\"} 1"), "{text}");
        assert!(has("adsync_queue_depth{status=\"running\"} 0"), "{text}");
        let requests: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("adsync_api_requests_total{"))
            .collect();
        assert!(
            requests
                .iter()
                .any(|l| l.contains("route=\"/api/v1/tenants/{id}\"")
                    && l.contains("status=\"200\"")),
            "{requests:#?}"
        );
        assert!(
            requests
                .iter()
                .any(|l| l.contains("route=\"/api/v1/tenants/{id}\"")
                    && l.contains("status=\"404\"")),
            "{requests:#?}"
        );
        assert!(requests.iter().any(|l| l.contains("route=\"unmatched\"")));
        assert!(
            !text.contains(&tenant) && !text.contains("/no/such/path"),
            "raw paths in labels"
        );
        assert!(text.contains("adsync_api_request_duration_seconds_bucket{"));
    })
    .await;
}

#[tokio::test]
async fn the_openapi_document_has_every_route_and_the_reference_page_needs_no_network() {
    on_postgres(|app| async move {
        let reply = app
            .send(Method::GET, "/api/v1/openapi.json", None, None)
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let doc = reply.json();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        let expect = [
            ("/api/v1/tenants", &["get", "post"][..]),
            ("/api/v1/tenants/{id}", &["get", "patch", "delete"]),
            ("/api/v1/tenants/{id}/pause", &["post"]),
            ("/api/v1/tenants/{id}/resume", &["post"]),
            ("/api/v1/tenants/{id}/runs", &["get", "post"]),
            ("/api/v1/runs/{id}", &["get"]),
            ("/api/v1/runs/{id}/cancel", &["post"]),
            ("/api/v1/tenants/{id}/campaigns", &["get"]),
            (
                "/api/v1/tenants/{id}/campaigns/{campaign_id}/metrics",
                &["get"],
            ),
            ("/api/v1/tenants/{id}/dead-letters", &["get"]),
            ("/api/v1/tenants/{id}/dead-letters/retry", &["post"]),
            ("/api/v1/tenants/{id}/dead-letters/dismiss", &["post"]),
            ("/api/v1/tenants/{id}/api-keys", &["get", "post"]),
            ("/api/v1/tenants/{id}/api-keys/{key_id}", &["delete"]),
            ("/api/v1/api-keys", &["get", "post"]),
            ("/api/v1/api-keys/{key_id}", &["delete"]),
            ("/api/v1/audit-log", &["get"]),
            ("/api/v1/events", &["get"]),
            ("/api/v1/overview", &["get"]),
            ("/api/v1/workers", &["get"]),
            ("/api/v1/session", &["delete", "get", "post"]),
            ("/api/v1/openapi.json", &["get"]),
            ("/api/v1/docs", &["get"]),
            ("/healthz", &["get"]),
            ("/readyz", &["get"]),
            ("/metrics", &["get"]),
        ];
        for (path, methods) in expect {
            for m in methods {
                assert!(paths[path][m].is_object(), "{m} {path} missing");
            }
        }
        assert_eq!(paths.len(), expect.len(), "{:?}", paths.keys());
        let mut operation_ids: Vec<&str> = paths
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .map(|op| op["operationId"].as_str().expect("an operationId"))
            .collect();
        let operations = operation_ids.len();
        operation_ids.sort_unstable();
        operation_ids.dedup();
        assert_eq!(operation_ids.len(), operations, "operationIds repeat");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for s in [
            "TenantView",
            "NewTenantBody",
            "RunView",
            "CampaignPageView",
            "ErrorBody",
        ] {
            assert!(schemas.contains_key(s), "schema {s} missing");
        }
        assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
        let create = &paths["/api/v1/tenants"]["post"];
        assert!(create["requestBody"]["content"]["application/json"].is_object());

        let page = app.send(Method::GET, "/api/v1/docs", None, None).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(page.text.contains("openapi.json"));
        assert!(!page.text.contains("http://") && !page.text.contains("https://"));
        assert!(!page.text.contains("<script src"));
    })
    .await;
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    on_postgres(|app| async move {
        let path = app
            .send(Method::GET, "/api/v1/nothing", Some(&app.admin), None)
            .await;
        assert_eq!(path.error(StatusCode::NOT_FOUND), "not_found");
        let method = app
            .send(Method::PUT, "/api/v1/tenants", Some(&app.admin), None)
            .await;
        assert_eq!(
            method.error(StatusCode::METHOD_NOT_ALLOWED),
            "method_not_allowed"
        );
    })
    .await;
}
