//! The dashboard's server side: the page and its assets (with a strict CSP), sign-in to an
//! HttpOnly SameSite=Strict cookie that then works like a bearer key, the CSRF rules for
//! cookie requests, the overview of every tenant, and the workers seen through their leases.

mod common;

use common::{Row, TestApp, insert_campaigns, on_postgres, on_sqlite};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Signs in with `key`; returns the cookie pair (`adsync_session=...`) to send back.
async fn sign_in(app: &TestApp, key: &str) -> String {
    let reply = app
        .send(
            Method::POST,
            "/api/v1/session",
            None,
            Some(&json!({ "key": key }).to_string()),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let set = reply.headers["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!reply.text.contains(key), "the key is not echoed");
    set.split(';').next().unwrap().to_owned()
}

/// A request with the session cookie (and the CSRF header when `csrf`).
async fn with_cookie(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: bool,
    origin: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut req = app
        .client
        .request(method, format!("{}{path}", app.base))
        .header("cookie", cookie);
    if csrf {
        req = req.header("x-adsync-csrf", "1");
    }
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_content_security_policy() {
    on_sqlite(|app| async move {
        let page = app.send(Method::GET, "/", None, None).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text.contains("/assets/app.js"), "{}", page.text);
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe"),
            "{csp}"
        );
        assert_eq!(page.headers["x-content-type-options"], "nosniff");
        for (path, kind) in [
            ("/assets/app.js", "text/javascript"),
            ("/assets/app.css", "text/css"),
        ] {
            let asset = app.send(Method::GET, path, None, None).await;
            assert_eq!(asset.status, StatusCode::OK, "{path}");
            assert!(
                asset.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with(kind),
                "{path}"
            );
            assert!(asset.text.len() > 1000, "{path} has content");
        }
        // No script is fetched from anywhere else, and values never go in as HTML.
        let js = app
            .send(Method::GET, "/assets/app.js", None, None)
            .await
            .text;
        assert!(!js.contains("innerHTML"), "the app writes text, never HTML");
        let remote = js
            .replace("http://www.w3.org/2000/svg", "")
            .replace("https://ads.example.com", "");
        assert!(
            !remote.contains("http://") && !remote.contains("https://"),
            "no remote URL but the SVG namespace and a placeholder"
        );
    })
    .await;
}

#[tokio::test]
async fn a_session_cookie_is_not_the_key_works_like_it_and_ends_with_sign_out_or_the_key() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Cookie Co").await;
        let other = app.create_tenant("Other Co").await;
        let (key_id, key) = app.tenant_key(&tenant).await;

        let bad = app
            .send(
                Method::POST,
                "/api/v1/session",
                None,
                Some(r#"{"key": "adk_not_a_key"}"#),
            )
            .await;
        assert_eq!(bad.error(StatusCode::UNAUTHORIZED), "unauthorized");
        assert!(!bad.headers.contains_key("set-cookie"));

        let cookie = sign_in(&app, &key).await;
        let token = cookie.trim_start_matches("adsync_session=");
        assert!(
            token.starts_with("ads_") && !token.contains(&key),
            "{cookie}"
        );
        // The database keeps a hash of the token, never the token.
        assert_eq!(app.count("dashboard_sessions").await, 1);
        let (status, me) =
            with_cookie(&app, Method::GET, "/api/v1/session", &cookie, false, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(me["key_id"], key_id.as_str());
        assert_eq!(me["tenant_id"], tenant.as_str());
        assert_eq!(me["admin"], false);

        let path = format!("/api/v1/tenants/{tenant}");
        let (status, body) = with_cookie(&app, Method::GET, &path, &cookie, false, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["name"], "Cookie Co");
        // Tenant-scoped like the key itself.
        let (status, _) = with_cookie(
            &app,
            Method::GET,
            &format!("/api/v1/tenants/{other}"),
            &cookie,
            false,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Signing out ends the session on the server: the old cookie is worth nothing.
        let (status, _) =
            with_cookie(&app, Method::DELETE, "/api/v1/session", &cookie, true, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = with_cookie(&app, Method::GET, &path, &cookie, false, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Two session cookies (one set by another site on this host) are refused.
        let again = sign_in(&app, &key).await;
        let both = format!("{again}; adsync_session=ads_planted");
        let (status, body) = with_cookie(&app, Method::GET, &path, &both, false, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(body["message"].as_str().unwrap().contains("several"));

        // A session ends with its key.
        app.delete(
            &format!("/api/v1/tenants/{tenant}/api-keys/{key_id}"),
            &app.admin,
        )
        .await;
        let (status, _) = with_cookie(&app, Method::GET, &path, &again, false, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // No sign-in from another origin.
        let foreign = app
            .client
            .post(format!("{}/api/v1/session", app.base))
            .header("origin", "https://evil.example")
            .json(&json!({ "key": app.admin }))
            .send()
            .await
            .unwrap();
        assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
        assert!(foreign.headers().get("set-cookie").is_none());
    })
    .await;
}

#[tokio::test]
async fn cookie_changes_need_the_csrf_header_and_no_foreign_origin() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Guarded").await;
        let cookie = sign_in(&app, &app.admin).await;
        let pause = format!("/api/v1/tenants/{tenant}/pause");

        let (status, body) = with_cookie(&app, Method::POST, &pause, &cookie, false, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"], "forbidden");
        let (status, _) = with_cookie(
            &app,
            Method::POST,
            &pause,
            &cookie,
            true,
            Some("https://evil.example"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let got = app
            .get(&format!("/api/v1/tenants/{tenant}"), &app.admin)
            .await;
        assert_eq!(got.json()["paused"], false, "nothing changed");

        let same = format!("http://{}", app.addr);
        let (status, body) =
            with_cookie(&app, Method::POST, &pause, &cookie, true, Some(&same)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["paused"], true);
        // The audit log names the admin behind the cookie.
        let audit = app.get("/api/v1/audit-log", &app.admin).await.json();
        assert!(
            audit["data"].as_array().unwrap().iter().any(|e| e["action"]
                .as_str()
                .unwrap_or("")
                .contains("pause")
                && e["actor"] == "admin"),
            "{audit}"
        );
        // A bearer key needs no CSRF header: no browser sends it by itself.
        let resume = app
            .post_empty(&format!("/api/v1/tenants/{tenant}/resume"), &app.admin)
            .await;
        assert_eq!(resume.status, StatusCode::OK, "{}", resume.text);
    })
    .await;
}

#[tokio::test]
async fn the_overview_shows_each_tenants_runs_and_counts_and_a_tenant_key_only_its_own() {
    on_postgres(|app| async move {
        let a = app.create_tenant("Alpha").await;
        let b = app.create_tenant("Beta").await;
        let run = app.start_run(&a).await;
        insert_campaigns(
            &app.store,
            &a,
            run,
            &[
                Row {
                    id: "c1",
                    name: "One",
                    status: "active",
                    budget: "1.00",
                    impressions: 5,
                    removed: false,
                },
                Row {
                    id: "c2",
                    name: "Two",
                    status: "active",
                    budget: "2.00",
                    impressions: 7,
                    removed: true,
                },
            ],
        )
        .await;

        let all = app.get("/api/v1/overview", &app.admin).await;
        assert_eq!(all.status, StatusCode::OK, "{}", all.text);
        let all = all.json();
        let tenants = all["tenants"].as_array().unwrap();
        assert_eq!(tenants.len(), 2);
        let alpha = tenants.iter().find(|t| t["id"] == a.as_str()).unwrap();
        assert_eq!(alpha["campaigns"], 1, "the removed one is not counted");
        assert!(
            alpha["budget_use"].is_null(),
            "no budget spent yet: {alpha}"
        );
        assert_eq!(alpha["recent_runs"][0]["id"], run);
        assert_eq!(alpha["recent_runs"][0]["status"], "running");
        let beta = tenants.iter().find(|t| t["id"] == b.as_str()).unwrap();
        assert_eq!(beta["recent_runs"].as_array().unwrap().len(), 0);
        assert_eq!(all["totals"]["tenants"], 2);
        assert_eq!(all["totals"]["campaigns"], 1);
        assert_eq!(all["totals"]["runs_today"]["running"], 1);

        let (_, key) = app.tenant_key(&b).await;
        let mine = app.get("/api/v1/overview", &key).await.json();
        let ids: Vec<_> = mine["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!(b)]);
        assert_eq!(
            mine["totals"]["runs_today"],
            json!({}),
            "nothing of Alpha's"
        );

        let workers = app.get("/api/v1/workers", &app.admin).await.json();
        assert_eq!(workers["data"][0]["worker"], "test:1");
        assert_eq!(workers["data"][0]["runs"], json!([run]));
        assert_eq!(workers["data"][0]["alive"], true);
        assert_eq!(
            app.get("/api/v1/workers", &key).await.status,
            StatusCode::NOT_FOUND
        );
    })
    .await;
}

#[tokio::test]
async fn the_overview_reads_the_same_on_sqlite() {
    on_sqlite(|app| async move {
        let a = app.create_tenant("Solo").await;
        let run = app.start_run(&a).await;
        let all = app.get("/api/v1/overview", &app.admin).await;
        assert_eq!(all.status, StatusCode::OK, "{}", all.text);
        let all = all.json();
        assert_eq!(all["tenants"][0]["recent_runs"][0]["id"], run);
        assert_eq!(all["totals"]["runs_today"]["running"], 1);
        let workers = app.get("/api/v1/workers", &app.admin).await.json();
        assert_eq!(workers["data"][0]["runs"], json!([run]));
        // Sessions work the same on SQLite.
        let cookie = sign_in(&app, &app.admin).await;
        let (status, me) =
            with_cookie(&app, Method::GET, "/api/v1/session", &cookie, false, None).await;
        assert_eq!((status, me["admin"].clone()), (StatusCode::OK, json!(true)));
        let (status, _) =
            with_cookie(&app, Method::DELETE, "/api/v1/session", &cookie, true, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) =
            with_cookie(&app, Method::GET, "/api/v1/session", &cookie, false, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn the_workers_page_lists_idle_registered_workers_and_tells_a_silent_one() {
    on_postgres(|app| async move {
        use std::time::Duration;
        let started = chrono::Utc::now();
        adsync_service::workers::beat(&app.store, "idle:1", 4, 0, Duration::from_secs(30), started)
            .await
            .unwrap();
        adsync_service::workers::beat(
            &app.store,
            "dead:2",
            2,
            1,
            Duration::from_millis(1),
            started,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;

        let workers = app.get("/api/v1/workers", &app.admin).await.json();
        let by = |id: &str| {
            workers["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["worker"] == id)
                .cloned()
                .unwrap_or_else(|| panic!("{id} listed: {workers}"))
        };
        let idle = by("idle:1");
        assert_eq!(
            (idle["alive"].clone(), idle["slots"].clone()),
            (json!(true), json!(4))
        );
        assert_eq!(idle["runs_held"], 0);
        assert_eq!(
            by("dead:2")["alive"],
            false,
            "its beat is older than its ttl"
        );

        // A worker that stops cleanly leaves the list.
        adsync_service::workers::gone(&app.store, "idle:1")
            .await
            .unwrap();
        let workers = app.get("/api/v1/workers", &app.admin).await.json();
        assert!(
            workers["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["worker"] != "idle:1"),
            "{workers}"
        );
    })
    .await;
}
