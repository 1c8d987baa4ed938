//! Tenants over HTTP on PostgreSQL: creation without any credential coming back or being
//! stored in the clear, what a tenant key may see (404 for everything else), refusals that
//! change nothing, patches, and the audit trail of each change.

mod common;

use common::{PASSWORD, TestApp, on_postgres};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn creating_a_tenant_answers_201_and_the_password_is_nowhere_in_the_clear() {
    on_postgres(|app| async move {
        let reply = app
            .post("/api/v1/tenants", &app.admin, TestApp::tenant_body("Acme"))
            .await;

        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        let tenant = reply.json();
        let id = tenant["id"].as_str().unwrap();
        assert!(id.starts_with("t_"));
        assert_eq!(
            reply.headers["location"].to_str().unwrap(),
            format!("/api/v1/tenants/{id}")
        );
        assert_eq!(tenant["name"], "Acme");
        assert_eq!(tenant["has_credentials"], true);
        assert!(tenant.get("credentials").is_none() && tenant.get("password").is_none());
        assert!(!reply.text.contains(PASSWORD));
        let read = app.get(&format!("/api/v1/tenants/{id}"), &app.admin).await;
        assert!(!read.text.contains(PASSWORD) && !read.text.contains("ops@example.com"));

        // Every row of every table, as text (bytea as hex): neither the password nor its
        // bytes in hex appear anywhere.
        let adsync_store::Store::Postgres(pool) = &app.store else {
            unreachable!()
        };
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert!(tables.iter().any(|t| t == "tenant_secrets"));
        let hex: String = PASSWORD.bytes().map(|b| format!("{b:02x}")).collect();
        for table in tables {
            let dump: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM \"{table}\" t"
            )))
            .fetch_one(pool)
            .await
            .unwrap();
            assert!(!dump.contains(PASSWORD), "the password is in table {table}");
            assert!(
                !dump.contains(&hex),
                "the password's bytes are in table {table}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_tenant_key_sees_its_tenant_only_and_gets_404_for_everything_else() {
    on_postgres(|app| async move {
        let mine = app.create_tenant("Mine").await;
        let theirs = app.create_tenant("Theirs").await;
        let (_, key) = app.tenant_key(&mine).await;

        let list = app.get("/api/v1/tenants", &key).await;
        assert_eq!(list.status, StatusCode::OK);
        let ids: Vec<_> = list.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, vec![mine.clone()]);
        assert_eq!(
            app.get(&format!("/api/v1/tenants/{mine}"), &key)
                .await
                .status,
            StatusCode::OK
        );

        let hidden = [
            (Method::GET, format!("/api/v1/tenants/{theirs}")),
            (Method::GET, format!("/api/v1/tenants/{theirs}/runs")),
            (Method::POST, format!("/api/v1/tenants/{theirs}/runs")),
            (Method::GET, format!("/api/v1/tenants/{theirs}/campaigns")),
            (
                Method::GET,
                format!("/api/v1/tenants/{theirs}/campaigns/c1/metrics"),
            ),
            (
                Method::GET,
                format!("/api/v1/tenants/{theirs}/dead-letters"),
            ),
            (Method::GET, format!("/api/v1/tenants/{theirs}/api-keys")),
            (Method::POST, format!("/api/v1/tenants/{theirs}/pause")),
            (Method::DELETE, format!("/api/v1/tenants/{theirs}")),
            (Method::DELETE, format!("/api/v1/tenants/{mine}")),
            (Method::GET, "/api/v1/api-keys".to_owned()),
            (Method::GET, format!("/api/v1/audit-log?tenant_id={theirs}")),
        ];
        for (method, path) in hidden {
            let reply = app.send(method.clone(), &path, Some(&key), None).await;
            assert_eq!(
                reply.error(StatusCode::NOT_FOUND),
                "not_found",
                "{method} {path}"
            );
        }
        let patch = app
            .patch(
                &format!("/api/v1/tenants/{theirs}"),
                &key,
                json!({"name": "x"}),
            )
            .await;
        assert_eq!(patch.error(StatusCode::NOT_FOUND), "not_found");
        let create = app
            .post("/api/v1/tenants", &key, TestApp::tenant_body("Sneaky"))
            .await;
        assert_eq!(create.error(StatusCode::NOT_FOUND), "not_found");
        assert_eq!(app.count("tenants").await, 2);
        let theirs_now = app
            .get(&format!("/api/v1/tenants/{theirs}"), &app.admin)
            .await;
        assert_eq!(theirs_now.json()["name"], "Theirs");
        assert_eq!(theirs_now.json()["paused"], false);
    })
    .await;
}

#[tokio::test]
async fn no_key_or_a_wrong_key_is_401_in_the_error_shape() {
    on_postgres(|app| async move {
        let none = app.send(Method::GET, "/api/v1/tenants", None, None).await;
        assert_eq!(none.error(StatusCode::UNAUTHORIZED), "unauthorized");
        let wrong = app.get("/api/v1/tenants", "adk_not-a-key").await;
        assert_eq!(wrong.error(StatusCode::UNAUTHORIZED), "unauthorized");
        let almost = app.get("/api/v1/tenants", &format!("{}x", app.admin)).await;
        assert_eq!(almost.error(StatusCode::UNAUTHORIZED), "unauthorized");
        // Before the body is looked at.
        let body = app
            .send(Method::POST, "/api/v1/tenants", None, Some("{not json"))
            .await;
        assert_eq!(body.error(StatusCode::UNAUTHORIZED), "unauthorized");
    })
    .await;
}

#[tokio::test]
async fn refused_requests_answer_400_413_415_or_422_and_change_nothing() {
    on_postgres(|app| async move {
        app.create_tenant("Existing").await;
        let tenants = app.count("tenants").await;
        let audit = app.count("audit_log").await;
        let with = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut body = TestApp::tenant_body("New");
            change(&mut body);
            body.to_string()
        };
        let cases: Vec<(&str, String, StatusCode)> = vec![
            (
                "malformed JSON",
                "{\"name\": ".to_owned(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "not an object",
                "[1, 2]".to_owned(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "unknown field",
                with(&|b| b["colour"] = json!("red")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "unknown credentials field",
                with(&|b| b["credentials"]["token"] = json!("x")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "missing password",
                with(&|b| {
                    b["credentials"].as_object_mut().unwrap().remove("password");
                }),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "bad cron",
                with(&|b| b["schedule"] = json!("every tuesday")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "bad time zone",
                with(&|b| b["time_zone"] = json!("Mars/Olympus")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "bad rate limit",
                with(&|b| b["rate_limit"] = json!("ten a minute")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "zero rate limit",
                with(&|b| b["rate_limit"] = json!("0/60s")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "bad URL",
                with(&|b| b["api_url"] = json!("not a url")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "URL of another scheme",
                with(&|b| b["api_url"] = json!("ftp://ads.example.com")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "wrong type",
                with(&|b| b["page_size"] = json!("many")),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "too large",
                with(&|b| b["name"] = json!("x".repeat(70 * 1024))),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
        ];
        for (what, body, status) in cases {
            let reply = app
                .send(
                    Method::POST,
                    "/api/v1/tenants",
                    Some(&app.admin),
                    Some(&body),
                )
                .await;
            reply.error(status);
            assert_eq!(reply.status, status, "{what}: {}", reply.text);
            assert!(!reply.text.contains(PASSWORD), "{what} echoes the password");
        }
        let no_type = app
            .client
            .post(format!("{}/api/v1/tenants", app.base))
            .bearer_auth(&app.admin)
            .body(TestApp::tenant_body("New").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let body: serde_json::Value = no_type.json().await.unwrap();
        assert_eq!(body["error"], "unsupported_media_type");

        assert_eq!(app.count("tenants").await, tenants);
        assert_eq!(app.count("tenant_secrets").await, tenants);
        assert_eq!(app.count("audit_log").await, audit);
    })
    .await;
}

#[tokio::test]
async fn a_patch_changes_only_what_it_names_and_null_removes_only_the_schedule() {
    on_postgres(|app| async move {
        let id = app.create_tenant("Before").await;
        let path = format!("/api/v1/tenants/{id}");

        let scheduled = app
            .patch(
                &path,
                &app.admin,
                json!({"schedule": "*/15 * * * *", "page_size": 50}),
            )
            .await;
        assert_eq!(scheduled.status, StatusCode::OK, "{}", scheduled.text);
        let t = scheduled.json();
        assert_eq!(t["schedule"], "*/15 * * * *");
        assert_eq!(t["page_size"], 50);
        assert_eq!(t["name"], "Before");
        assert!(t["next_run_at"].is_string());

        let unscheduled = app
            .patch(&path, &app.admin, json!({"schedule": null}))
            .await;
        assert_eq!(unscheduled.status, StatusCode::OK, "{}", unscheduled.text);
        assert!(unscheduled.json()["schedule"].is_null());
        assert!(unscheduled.json()["next_run_at"].is_null());

        let null_name = app.patch(&path, &app.admin, json!({"name": null})).await;
        assert_eq!(null_name.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
        let typo = app.patch(&path, &app.admin, json!({"nmae": "x"})).await;
        assert_eq!(typo.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
        let bad = app
            .patch(
                &path,
                &app.admin,
                json!({"name": "Never", "rate_limit": "fast"}),
            )
            .await;
        assert_eq!(bad.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");

        let new_password = "another-secret-Xy9";
        let creds = app
            .patch(
                &path,
                &app.admin,
                json!({"credentials": {"email": "new@example.com", "password": new_password}}),
            )
            .await;
        assert_eq!(creds.status, StatusCode::OK);
        assert!(!creds.text.contains(new_password) && !creds.text.contains("new@example.com"));
        let opened = app.service.tenants.credentials(&id).await.unwrap();
        assert_eq!(opened.email, "new@example.com");

        let (_, key) = app.tenant_key(&id).await;
        let paused = app.post_empty(&format!("{path}/pause"), &key).await;
        assert_eq!(paused.status, StatusCode::OK);
        assert_eq!(paused.json()["paused"], true);
        let resumed = app.post_empty(&format!("{path}/resume"), &key).await;
        assert_eq!(resumed.json()["paused"], false);
        assert_eq!(resumed.json()["name"], "Before");

        let gone = app.delete(&path, &app.admin).await;
        assert_eq!(gone.status, StatusCode::NO_CONTENT);
        assert_eq!(
            app.get(&path, &app.admin)
                .await
                .error(StatusCode::NOT_FOUND),
            "not_found"
        );
        // Its keys went with it.
        assert_eq!(
            app.get("/api/v1/tenants", &key)
                .await
                .error(StatusCode::UNAUTHORIZED),
            "unauthorized"
        );
    })
    .await;
}

#[tokio::test]
async fn the_audit_log_shows_each_change_with_the_key_id_and_the_address() {
    on_postgres(|app| async move {
        let id = app.create_tenant("Audited").await;
        let (key_id, key) = app.tenant_key(&id).await;
        app.patch(
            &format!("/api/v1/tenants/{id}"),
            &key,
            json!({"name": "Renamed"}),
        )
        .await;
        app.post_empty(&format!("/api/v1/tenants/{id}/runs"), &key)
            .await;
        let other = app.create_tenant("Other").await;

        let log = app.get("/api/v1/audit-log", &app.admin).await;
        assert_eq!(log.status, StatusCode::OK, "{}", log.text);
        let entries = log.json()["data"].as_array().unwrap().clone();
        let actions: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
            .collect();
        assert_eq!(
            actions,
            vec![
                ("tenant.create", "admin"),
                ("run.create", key_id.as_str()),
                ("tenant.update", key_id.as_str()),
                ("api_key.create", "admin"),
                ("tenant.create", "admin"),
            ]
        );
        for e in &entries {
            assert_eq!(e["remote_addr"], "127.0.0.1", "{e}");
        }
        assert!(!log.text.contains(PASSWORD));

        let mine = app.get("/api/v1/audit-log", &key).await.json();
        let mine = mine["data"].as_array().unwrap();
        assert_eq!(mine.len(), 4);
        assert!(mine.iter().all(|e| e["tenant_id"] == id.as_str()));

        let page = app
            .get("/api/v1/audit-log?limit=2", &app.admin)
            .await
            .json();
        assert_eq!(page["data"].as_array().unwrap().len(), 2);
        let before = page["next_before"].as_i64().unwrap();
        let rest = app
            .get(
                &format!("/api/v1/audit-log?limit=10&before={before}"),
                &app.admin,
            )
            .await
            .json();
        assert_eq!(rest["data"].as_array().unwrap().len(), 3);
        assert!(rest["next_before"].is_null());
        let theirs = app
            .get(&format!("/api/v1/audit-log?tenant_id={other}"), &app.admin)
            .await
            .json();
        assert_eq!(theirs["data"].as_array().unwrap().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_new_platform_address_without_new_credentials_is_refused_and_changes_nothing() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Moved").await;
        let (_, key) = app.tenant_key(&tenant).await;
        let path = format!("/api/v1/tenants/{tenant}");
        let before = app.get(&path, &app.admin).await.json();

        // The stored password would go to whatever address the tenant names next.
        let moved = json!({ "api_url": "https://collector.example.net" });
        for k in [&app.admin, &key] {
            let reply = app.patch(&path, k, moved.clone()).await;
            assert_eq!(reply.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
            assert!(
                reply.json()["message"]
                    .as_str()
                    .unwrap()
                    .contains("credentials")
            );
        }
        assert_eq!(app.get(&path, &app.admin).await.json(), before);

        let with_credentials = json!({
            "api_url": "https://collector.example.net",
            "credentials": { "email": "new@example.net", "password": "a new one" },
        });
        let reply = app.patch(&path, &app.admin, with_credentials).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.json()["api_url"], "https://collector.example.net");
        // The same address again needs nothing.
        let same = json!({ "api_url": "https://collector.example.net", "name": "Still here" });
        assert_eq!(app.patch(&path, &key, same).await.status, StatusCode::OK);
    })
    .await;
}
