//! Campaign reads over HTTP, on PostgreSQL and on SQLite alike: cursor pages that neither
//! repeat nor skip, whitelisted sorts (budget numerically), status and name filters (LIKE
//! wildcards literal), removed campaigns on request only, the raw record as JSON, the metric
//! history, and refusals of bad parameters.

mod common;

use common::{Row, TestApp, insert_campaigns, insert_metric, on_postgres, on_sqlite};
use reqwest::StatusCode;
use serde_json::Value;

const ROWS: [Row<'static>; 8] = [
    Row {
        id: "c01",
        name: "Spring sale",
        status: "active",
        budget: "9.00",
        impressions: 500,
        removed: false,
    },
    Row {
        id: "c02",
        name: "50% off",
        status: "paused",
        budget: "100.00",
        impressions: 10,
        removed: false,
    },
    Row {
        id: "c03",
        name: "Summer SALE",
        status: "active",
        budget: "1100.50",
        impressions: 900,
        removed: false,
    },
    Row {
        id: "c04",
        name: "5x off",
        status: "active",
        budget: "20.00",
        impressions: 70,
        removed: false,
    },
    Row {
        id: "c05",
        name: "Autumn",
        status: "archived",
        budget: "0.00",
        impressions: 300,
        removed: false,
    },
    Row {
        id: "c06",
        name: "Winter",
        status: "active",
        budget: "75.25",
        impressions: 300,
        removed: false,
    },
    Row {
        id: "c07",
        name: "a_b",
        status: "active",
        budget: "3.10",
        impressions: 1,
        removed: false,
    },
    Row {
        id: "c08",
        name: "Gone sale",
        status: "active",
        budget: "5.00",
        impressions: 999,
        removed: true,
    },
];

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every id of a listing, page by page, following `next_cursor`.
async fn all_pages(app: &TestApp, path: &str, key: &str) -> (Vec<String>, usize) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_owned(),
        };
        let reply = app.get(&url, key).await;
        assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.text);
        let page = reply.json();
        pages += 1;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 20, "the cursor does not advance");
    }
    (seen, pages)
}

async fn reads(app: TestApp) {
    let tenant = app.create_tenant("Reader").await;
    let other = app.create_tenant("Other").await;
    let (_, key) = app.tenant_key(&tenant).await;
    let run = app.start_run(&tenant).await;
    insert_campaigns(&app.store, &tenant, run, &ROWS).await;
    let other_run = app.start_run(&other).await;
    insert_campaigns(&app.store, &other, other_run, &ROWS[..2]).await;
    let base = format!("/api/v1/tenants/{tenant}/campaigns");

    // Pages of 3 by id: every listed campaign once, in order, the removed one left out.
    let (seen, pages) = all_pages(&app, &format!("{base}?limit=3"), &key).await;
    assert_eq!(seen, ["c01", "c02", "c03", "c04", "c05", "c06", "c07"]);
    assert_eq!(pages, 3);

    // Largest impressions first, ties by id, across pages.
    let (seen, _) = all_pages(&app, &format!("{base}?sort=-impressions&limit=2"), &key).await;
    assert_eq!(seen, ["c03", "c01", "c06", "c05", "c04", "c02", "c07"]);
    // Budget as a number, not as text ("9.00" < "20.00" < "100.00").
    let (seen, _) = all_pages(&app, &format!("{base}?sort=budget&limit=3"), &key).await;
    assert_eq!(seen, ["c05", "c07", "c01", "c04", "c06", "c02", "c03"]);
    let (seen, _) = all_pages(&app, &format!("{base}?sort=-budget&limit=4"), &key).await;
    assert_eq!(seen, ["c03", "c02", "c06", "c04", "c01", "c07", "c05"]);
    let (seen, _) = all_pages(&app, &format!("{base}?sort=name&limit=2"), &key).await;
    assert_eq!(seen.len(), 7);
    // Time keys (all equal here): ties by id, in the key's direction.
    let (seen, _) = all_pages(&app, &format!("{base}?sort=created_at&limit=3"), &key).await;
    assert_eq!(seen, ["c01", "c02", "c03", "c04", "c05", "c06", "c07"]);
    let (seen, _) = all_pages(&app, &format!("{base}?sort=-updated_at&limit=3"), &key).await;
    assert_eq!(seen, ["c07", "c06", "c05", "c04", "c03", "c02", "c01"]);

    // Filters.
    let paused = app.get(&format!("{base}?status=paused"), &key).await.json();
    assert_eq!(ids(&paused), ["c02"]);
    let sale = app.get(&format!("{base}?q=SaLe"), &key).await.json();
    assert_eq!(ids(&sale), ["c01", "c03"]);
    // As wildcards, "% off" would match "5x off" too.
    let percent = app.get(&format!("{base}?q=%25%20off"), &key).await.json();
    assert_eq!(ids(&percent), ["c02"]);
    let underscore = app.get(&format!("{base}?q=a_b"), &key).await.json();
    assert_eq!(ids(&underscore), ["c07"]);
    // As a wildcard, "5_" would match "50% off" and "5x off".
    let literal = app.get(&format!("{base}?q=5_"), &key).await.json();
    assert!(ids(&literal).is_empty(), "_ matched any character");
    let (active, _) = all_pages(
        &app,
        &format!("{base}?status=active&sort=-impressions&limit=2"),
        &key,
    )
    .await;
    assert_eq!(active, ["c03", "c01", "c06", "c04", "c07"]);

    // Removed campaigns only when asked.
    let removed = app.get(&format!("{base}?removed=true"), &key).await.json();
    assert_eq!(ids(&removed), ["c08"]);
    assert!(removed["data"][0]["removed_at"].is_string());
    let everything = app
        .get(&format!("{base}?include_removed=true"), &key)
        .await
        .json();
    assert_eq!(ids(&everything).len(), 8);

    // The row as shown: exact budget, the raw record as JSON with its exact numbers.
    let first = app.get(&format!("{base}?limit=1&sort=-budget"), &key).await;
    let c = &first.json()["data"][0];
    assert_eq!(c["budget"], "1100.50");
    assert_eq!(c["raw"]["extra"]["k"][1], 2);
    assert_eq!(c["raw"]["id"], "c03");
    assert!(first.text.contains("1100.50"), "{}", first.text);
    assert_eq!(c["last_run_id"], run);

    // Refusals.
    for bad in [
        "sort=raw",
        "sort=impressions;drop%20table%20campaigns",
        "limit=0",
        "limit=501",
        "limit=many",
        "cursor=garbage",
        "colour=red",
    ] {
        let reply = app.get(&format!("{base}?{bad}"), &key).await;
        assert_eq!(
            reply.error(StatusCode::UNPROCESSABLE_ENTITY),
            "invalid",
            "{bad}"
        );
    }
    let by_id = app.get(&format!("{base}?limit=1"), &key).await.json();
    let cursor = by_id["next_cursor"].as_str().unwrap();
    let mixed = app
        .get(&format!("{base}?sort=name&cursor={cursor}"), &key)
        .await;
    assert_eq!(mixed.error(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
    let capped = app.get(&format!("{base}?limit=500"), &key).await;
    assert_eq!(capped.status, StatusCode::OK);

    // Metric history, oldest first, of this tenant's campaign only.
    for (r, impressions) in [(11, 100), (12, 250), (13, 400)] {
        insert_metric(&app.store, &tenant, "c01", r, impressions).await;
    }
    let history = app.get(&format!("{base}/c01/metrics"), &key).await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text);
    let h = history.json();
    assert_eq!(h["campaign_id"], "c01");
    let points: Vec<(i64, i64)> = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["run_id"].as_i64().unwrap(),
                p["impressions"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(points, [(11, 100), (12, 250), (13, 400)]);
    assert!(h["data"][0]["observed_at"].is_string());
    let last_two = app
        .get(&format!("{base}/c01/metrics?limit=2"), &key)
        .await
        .json();
    assert_eq!(last_two["data"][0]["run_id"], 12);
    let none = app.get(&format!("{base}/c99/metrics"), &key).await;
    assert_eq!(none.error(StatusCode::NOT_FOUND), "not_found");
    let no_points = app.get(&format!("{base}/c05/metrics"), &key).await;
    assert_eq!(no_points.status, StatusCode::OK);
    assert!(no_points.json()["data"].as_array().unwrap().is_empty());
    let others = app
        .get(&format!("/api/v1/tenants/{other}/campaigns"), &key)
        .await;
    assert_eq!(others.error(StatusCode::NOT_FOUND), "not_found");
    let missing = app
        .get("/api/v1/tenants/t_0000000000000000/campaigns", &app.admin)
        .await;
    assert_eq!(missing.error(StatusCode::NOT_FOUND), "not_found");
}

#[tokio::test]
async fn campaigns_page_filter_and_sort_on_postgres() {
    on_postgres(reads).await;
}

#[tokio::test]
async fn campaigns_page_filter_and_sort_on_sqlite() {
    on_sqlite(reads).await;
}
