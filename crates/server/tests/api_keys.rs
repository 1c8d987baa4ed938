//! API keys over HTTP: created (the secret shown once, only its hash stored), usable at
//! once, listed without secrets, revoked (401 from then on); admin keys are admin-only.

mod common;

use common::{on_postgres, on_sqlite};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_key_is_shown_once_works_until_revoked_and_then_gets_401() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Keyed").await;
        let keys = format!("/api/v1/tenants/{tenant}/api-keys");

        let created = app.post(&keys, &app.admin, json!({"name": "ci"})).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        assert_eq!(created.headers["cache-control"], "no-store");
        let body = created.json();
        let (id, key) = (body["id"].as_str().unwrap(), body["key"].as_str().unwrap());
        assert!(key.starts_with("adk_") && id.starts_with("key_"));
        assert_eq!(body["tenant_id"], tenant.as_str());

        let me = app.get(&format!("/api/v1/tenants/{tenant}"), key).await;
        assert_eq!(me.status, StatusCode::OK);

        let list = app.get(&keys, key).await;
        assert_eq!(list.status, StatusCode::OK);
        assert!(!list.text.contains(key), "a listed key shows its secret");
        assert_eq!(list.json()["data"][0]["id"], id);
        let adsync_store::Store::Postgres(pool) = &app.store else {
            unreachable!()
        };
        let stored: Vec<String> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
            .fetch_all(pool)
            .await
            .unwrap();
        assert!(stored.iter().all(|h| !h.contains(key)));

        let revoked = app.delete(&format!("{keys}/{id}"), key).await;
        assert_eq!(revoked.status, StatusCode::NO_CONTENT);
        let after = app.get(&format!("/api/v1/tenants/{tenant}"), key).await;
        assert_eq!(after.error(StatusCode::UNAUTHORIZED), "unauthorized");
        let twice = app.delete(&format!("{keys}/{id}"), &app.admin).await;
        assert_eq!(twice.error(StatusCode::NOT_FOUND), "not_found");
        let listed = app.get(&keys, &app.admin).await.json();
        assert!(listed["data"][0]["revoked_at"].is_string());
    })
    .await;
}

#[tokio::test]
async fn admin_keys_are_created_and_revoked_by_admins_only() {
    on_postgres(|app| async move {
        let created = app.post("/api/v1/api-keys", &app.admin, json!({})).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let body = created.json();
        let key = body["key"].as_str().unwrap();
        assert!(body["tenant_id"].is_null());
        let tenant = app.create_tenant("Anyone").await;
        assert_eq!(
            app.get(&format!("/api/v1/tenants/{tenant}"), key)
                .await
                .status,
            StatusCode::OK
        );
        let (_, tenant_key) = app.tenant_key(&tenant).await;
        let refused = app.post("/api/v1/api-keys", &tenant_key, json!({})).await;
        assert_eq!(refused.error(StatusCode::NOT_FOUND), "not_found");
        let long = app
            .post("/api/v1/api-keys", key, json!({"name": "x".repeat(201)}))
            .await;
        assert_eq!(long.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
        let id = body["id"].as_str().unwrap();
        assert_eq!(
            app.delete(&format!("/api/v1/api-keys/{id}"), &app.admin)
                .await
                .status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            app.get("/api/v1/tenants", key)
                .await
                .error(StatusCode::UNAUTHORIZED),
            "unauthorized"
        );
    })
    .await;
}

#[tokio::test]
async fn the_api_works_on_sqlite_too() {
    on_sqlite(|app| async move {
        let tenant = app.create_tenant("Embedded").await;
        let (key_id, key) = app.tenant_key(&tenant).await;
        let list = app.get("/api/v1/tenants", &key).await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.text);
        assert_eq!(list.json()["data"][0]["id"], tenant.as_str());

        let run = app
            .post_empty(&format!("/api/v1/tenants/{tenant}/runs"), &key)
            .await;
        assert_eq!(run.status, StatusCode::ACCEPTED, "{}", run.text);
        let id = run.json()["id"].as_i64().unwrap();
        let again = app
            .post_empty(&format!("/api/v1/tenants/{tenant}/runs"), &key)
            .await;
        assert_eq!(again.error(StatusCode::CONFLICT), "conflict");
        assert_eq!(again.json()["run_id"], id);
        let cancel = app
            .post_empty(&format!("/api/v1/runs/{id}/cancel"), &key)
            .await;
        assert_eq!(cancel.json()["outcome"], "cancelled");

        let audit = app.get("/api/v1/audit-log", &key).await.json();
        let entries = audit["data"].as_array().unwrap();
        assert_eq!(entries[0]["action"], "run.cancel");
        assert_eq!(entries[0]["actor"], key_id.as_str());
        assert_eq!(entries[0]["remote_addr"], "127.0.0.1");

        let ready = app.send(reqwest::Method::GET, "/readyz", None, None).await;
        assert_eq!(ready.status, StatusCode::OK);
        let revoked = app
            .delete(
                &format!("/api/v1/tenants/{tenant}/api-keys/{key_id}"),
                &app.admin,
            )
            .await;
        assert_eq!(revoked.status, StatusCode::NO_CONTENT);
        assert_eq!(
            app.get("/api/v1/tenants", &key)
                .await
                .error(StatusCode::UNAUTHORIZED),
            "unauthorized"
        );
    })
    .await;
}
