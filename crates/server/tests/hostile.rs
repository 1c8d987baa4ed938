//! Hostile input, from what `scripts/schemathesis` found: every answer the server gives
//! before a handler runs (a body that is not JSON, a query or path parameter that does not
//! parse, no key, a cookie from another origin) is an answer the OpenAPI document lists for
//! that operation, and the bounds the document gives (`limit`, `sort`) are the ones the server
//! takes. Each test walks the served document, so a new endpoint is covered without editing it.

mod common;

use common::{TestApp, on_postgres};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The operations of the served document: (method, path template, operation).
async fn operations(app: &TestApp) -> Vec<(Method, String, Value)> {
    let doc = app
        .send(Method::GET, "/api/v1/openapi.json", None, None)
        .await
        .json();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            out.push((method, path.clone(), op.clone()));
        }
    }
    assert!(out.len() > 20, "{out:?}");
    out
}

fn documents(op: &Value, status: StatusCode) -> bool {
    op["responses"][status.as_str()].is_object()
}

fn params<'a>(op: &'a Value, place: &'a str) -> impl Iterator<Item = &'a Value> {
    op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |p| p["in"] == place)
}

/// `path` with each parameter replaced: the tenant's id, a run id, or a made-up id.
fn fill(path: &str, tenant: &str, run: i64) -> String {
    path.replace("/tenants/{id}", &format!("/tenants/{tenant}"))
        .replace("/runs/{id}", &format!("/runs/{run}"))
        .replace("{key_id}", "key_000000000000")
        .replace("{campaign_id}", "campaign_1")
}

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if let Some(body) = body {
        req = req.body(body.to_owned());
    }
    let res = req.send().await.expect("the server answers");
    let status = res.status();
    (status, res.text().await.unwrap())
}

#[tokio::test]
async fn every_answer_given_before_a_handler_runs_is_documented_for_its_operation() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Hostile").await;
        let run = app.start_run(&tenant).await;
        let bearer = format!("Bearer {}", app.admin);
        let auth = ("authorization", bearer.as_str());
        for (method, template, op) in operations(&app).await {
            let label = format!("{method} {template}");
            let path = fill(&template, &tenant, run);
            let public = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().all(|r| r.as_object().unwrap().is_empty()));

            if op["requestBody"].is_object() {
                // Not sent as JSON: 415.
                let (status, text) = raw(
                    &app,
                    method.clone(),
                    &path,
                    &[auth, ("content-type", "text/plain")],
                    Some("{}"),
                )
                .await;
                assert_eq!(
                    status,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "{label}: {text}"
                );
                assert!(documents(&op, status), "{label} does not document {status}");
                // No body and no content type at all (what schemathesis sent first): 415.
                let (status, _) = raw(&app, method.clone(), &path, &[auth], None).await;
                assert!(documents(&op, status), "{label} does not document {status}");
                // Not JSON: 400.
                let json = ("content-type", "application/json");
                let (status, text) =
                    raw(&app, method.clone(), &path, &[auth, json], Some("\0")).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {text}");
                assert!(documents(&op, status), "{label} does not document {status}");
                // Too large: 413.
                let big = format!("{{\"name\": \"{}\"}}", "x".repeat(200 * 1024));
                let (status, text) =
                    raw(&app, method.clone(), &path, &[auth, json], Some(&big)).await;
                assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{label}: {text}");
                assert!(documents(&op, status), "{label} does not document {status}");
                // An unknown field: 422.
                let (status, text) = raw(
                    &app,
                    method.clone(),
                    &path,
                    &[auth, json],
                    Some("{\"zz\": 1}"),
                )
                .await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{label}: {text}");
                assert!(documents(&op, status), "{label} does not document {status}");
            }

            for param in params(&op, "query") {
                let name = param["name"].as_str().unwrap();
                let kind = param["schema"]["type"].clone();
                let typed = ["integer", "boolean"].iter().any(|t| {
                    kind == *t || kind.as_array().is_some_and(|a| a.contains(&(*t).into()))
                });
                if !typed {
                    continue;
                }
                // A value that does not parse, given twice (schemathesis' first find): 422.
                let query = format!("{path}?{name}=null&{name}=null");
                let (status, text) = raw(&app, method.clone(), &query, &[auth], None).await;
                assert_eq!(
                    status,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "{label} {query}: {text}"
                );
                assert!(documents(&op, status), "{label} does not document {status}");
            }

            if params(&op, "path").next().is_some() {
                // Percent-encoded bytes that are not UTF-8 in every parameter: 400.
                let bad = template
                    .split('/')
                    .map(|s| if s.starts_with('{') { "%FF" } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                let (status, text) = raw(&app, method.clone(), &bad, &[auth], None).await;
                assert!(
                    documents(&op, status),
                    "{label} as {bad} answered {status}, undocumented: {text}"
                );
            }

            if !public {
                let (status, _) = raw(&app, method.clone(), &path, &[], None).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{label}");
                assert!(documents(&op, status), "{label} does not document {status}");
                let cookie = [
                    ("cookie", "adsync_session=ads_whatever"),
                    ("origin", "https://evil.example"),
                ];
                let (status, _) = raw(&app, method.clone(), &path, &cookie, None).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{label}");
                assert!(documents(&op, status), "{label} does not document {status}");
            }

            // Everything that reads the database may find it down.
            let tags = op["tags"].as_array().cloned().unwrap_or_default();
            if !tags.iter().any(|t| t == "operations") {
                let unavailable = &op["responses"]["503"];
                assert!(unavailable.is_object(), "{label} does not document 503");
                assert!(unavailable["headers"]["Retry-After"].is_object(), "{label}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn the_documented_limits_and_sorts_are_the_ones_the_server_takes() {
    on_postgres(|app| async move {
        let tenant = app.create_tenant("Bounded").await;
        let run = app.start_run(&tenant).await;
        let mut bounded = 0;
        for (method, template, op) in operations(&app).await {
            if method != Method::GET {
                continue;
            }
            let path = fill(&template, &tenant, run);
            for param in params(&op, "query") {
                let name = param["name"].as_str().unwrap();
                let schema = &param["schema"];
                if let (Some(min), Some(max)) =
                    (schema["minimum"].as_i64(), schema["maximum"].as_i64())
                {
                    bounded += 1;
                    for (value, ok) in
                        [(min, true), (max, true), (min - 1, false), (max + 1, false)]
                    {
                        let url = format!("{path}?{name}={value}");
                        let reply = app.get(&url, &app.admin).await;
                        let refused = reply.status == StatusCode::UNPROCESSABLE_ENTITY;
                        assert_eq!(!refused, ok, "{url}: {} {}", reply.status, reply.text);
                    }
                }
                if let Some(pattern) = schema["pattern"].as_str() {
                    // `^-?(a|b|c)$`: every alternative, ascending and descending, is taken.
                    let inner = pattern.trim_start_matches("^-?(").trim_end_matches(")$");
                    assert_ne!(inner, pattern, "a pattern of another form: {pattern}");
                    for key in inner.split('|') {
                        for value in [key.to_owned(), format!("-{key}")] {
                            let url = format!("{path}?{name}={value}");
                            let reply = app.get(&url, &app.admin).await;
                            assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.text);
                        }
                    }
                    let url = format!("{path}?{name}=nonsense");
                    let reply = app.get(&url, &app.admin).await;
                    assert_eq!(
                        reply.error(StatusCode::UNPROCESSABLE_ENTITY),
                        "invalid",
                        "{url}"
                    );
                }
            }
        }
        assert!(bounded >= 4, "the limits lost their bounds in the document");
    })
    .await;
}
