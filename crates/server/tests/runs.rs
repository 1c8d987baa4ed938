//! Runs over HTTP on PostgreSQL: queue (202, then 409 naming the active run), read, list,
//! cancel, retry dead letters; another tenant's key sees none of it.

mod common;

use common::on_postgres;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_run_is_queued_once_then_409_names_it_and_a_cancel_frees_the_tenant() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Runner").await;
        let (key_id, key) = app.tenant_key(&tenant).await;
        let runs = format!("/api/v1/tenants/{tenant}/runs");

        let first = app.post_empty(&runs, &key).await;
        assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
        let body = first.json();
        assert_eq!(body["status"], "queued");
        assert_eq!(body["outcome"], "queued");
        let run = body["id"].as_i64().unwrap();

        let second = app.post_empty(&runs, &key).await;
        assert_eq!(second.error(StatusCode::CONFLICT), "conflict");
        assert_eq!(second.json()["run_id"], run);

        let read = app.get(&format!("/api/v1/runs/{run}"), &key).await;
        assert_eq!(read.status, StatusCode::OK, "{}", read.text);
        let r = read.json();
        assert_eq!(r["status"], "queued");
        assert_eq!(r["tenant_id"], tenant.as_str());
        assert_eq!(r["requested_by"], format!("api:{key_id}"));
        assert_eq!(r["attempts"], 0);
        assert!(r["started_at"].is_null() && r["worker"].is_null());
        assert!(r["counters"]["pages"].is_i64());
        assert!(r["warnings"].as_array().unwrap().is_empty());

        let cancelled = app
            .post_empty(&format!("/api/v1/runs/{run}/cancel"), &key)
            .await;
        assert_eq!(cancelled.status, StatusCode::ACCEPTED, "{}", cancelled.text);
        assert_eq!(cancelled.json()["outcome"], "cancelled");
        assert_eq!(cancelled.json()["status"], "cancelled");
        let again = app
            .post_empty(&format!("/api/v1/runs/{run}/cancel"), &key)
            .await;
        assert_eq!(again.json()["outcome"], "already_finished");

        let next = app.post_empty(&runs, &key).await;
        assert_eq!(next.status, StatusCode::ACCEPTED);
        let next_run = next.json()["id"].as_i64().unwrap();
        assert_ne!(next_run, run);

        let list = app.get(&runs, &key).await.json();
        let ids: Vec<i64> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![next_run, run]);
        let one = app.get(&format!("{runs}?limit=1"), &key).await.json();
        assert_eq!(one["data"].as_array().unwrap().len(), 1);
        let bad = app.get(&format!("{runs}?limit=0"), &key).await;
        assert_eq!(bad.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
        let typo = app.get(&format!("{runs}?limt=1"), &key).await;
        assert_eq!(typo.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
    })
    .await;
}

#[tokio::test]
async fn another_tenants_key_gets_404_for_a_run_and_cannot_cancel_it() {
    on_postgres(|app| async move {
        let a = app.create_tenant("A").await;
        let b = app.create_tenant("B").await;
        let (_, key_b) = app.tenant_key(&b).await;
        let run = app
            .post_empty(&format!("/api/v1/tenants/{a}/runs"), &app.admin)
            .await
            .json()["id"]
            .as_i64()
            .unwrap();

        let read = app.get(&format!("/api/v1/runs/{run}"), &key_b).await;
        assert_eq!(read.error(StatusCode::NOT_FOUND), "not_found");
        let cancel = app
            .post_empty(&format!("/api/v1/runs/{run}/cancel"), &key_b)
            .await;
        assert_eq!(cancel.error(StatusCode::NOT_FOUND), "not_found");
        let status = app.get(&format!("/api/v1/runs/{run}"), &app.admin).await;
        assert_eq!(status.json()["status"], "queued");

        assert_eq!(
            app.get("/api/v1/runs/999999", &app.admin)
                .await
                .error(StatusCode::NOT_FOUND),
            "not_found"
        );
        assert_eq!(
            app.get("/api/v1/runs/abc", &app.admin)
                .await
                .error(StatusCode::BAD_REQUEST),
            "bad_request"
        );
    })
    .await;
}

#[tokio::test]
async fn dead_letters_are_listed_retried_by_a_queued_run_and_dismissed() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Letters").await;
        let run = app.start_run(&tenant).await;
        let adsync_store::Store::Postgres(pool) = &app.store else {
            unreachable!()
        };
        for campaign in ["c1", "c2", "c3"] {
            sqlx::query(
                "INSERT INTO dead_letters (tenant_id, run_id, campaign_id, stage, payload,
                    reason, first_failed_at, last_failed_at)
                 VALUES ($1, $2, $3, 'sync', '{}', 'HTTP 400', now(), now())",
            )
            .bind(&tenant)
            .bind(run)
            .bind(campaign)
            .execute(pool)
            .await
            .unwrap();
        }
        let letters = format!("/api/v1/tenants/{tenant}/dead-letters");
        let list = app.get(&letters, &app.admin).await.json();
        let ids: Vec<i64> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(list["data"][0]["stage"], "sync");

        // The CLI-style run still holds the tenant's slot: a retry is a conflict naming it.
        let busy = app
            .post_empty(&format!("{letters}/retry"), &app.admin)
            .await;
        assert_eq!(busy.error(StatusCode::CONFLICT), "conflict");
        assert_eq!(busy.json()["run_id"], run);
        sqlx::query("UPDATE sync_runs SET status = 'partial', finished_at = now() WHERE id = $1")
            .bind(run)
            .execute(pool)
            .await
            .unwrap();
        let retry = app
            .post_empty(&format!("{letters}/retry"), &app.admin)
            .await;
        assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.text);
        let retry_run = retry.json()["id"].as_i64().unwrap();
        let queued = app
            .get(&format!("/api/v1/runs/{retry_run}"), &app.admin)
            .await
            .json();
        assert_eq!(queued["requested_by"], "retry");

        let neither = app
            .post(&format!("{letters}/dismiss"), &app.admin, json!({}))
            .await;
        assert_eq!(neither.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
        let one = app
            .post(
                &format!("{letters}/dismiss"),
                &app.admin,
                json!({"ids": [ids[0]]}),
            )
            .await;
        assert_eq!(one.status, StatusCode::OK, "{}", one.text);
        assert_eq!(one.json()["dismissed"], 1);
        let rest = app
            .post(
                &format!("{letters}/dismiss"),
                &app.admin,
                json!({"all": true}),
            )
            .await;
        assert_eq!(rest.json()["dismissed"], 2);
        let open = app.get(&letters, &app.admin).await.json();
        assert!(open["data"].as_array().unwrap().is_empty());
        let all = app
            .get(&format!("{letters}?include_resolved=true"), &app.admin)
            .await
            .json();
        assert!(
            all["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["resolution"] == "dismissed")
        );
        let audit = app.get("/api/v1/audit-log", &app.admin).await.json();
        let dismissals = audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "dead_letter.dismiss")
            .count();
        assert_eq!(dismissals, 2);
    })
    .await;
}
