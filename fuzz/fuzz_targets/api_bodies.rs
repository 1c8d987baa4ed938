//! The REST API's JSON request bodies, through the real router (`adsync_server::app`: the
//! `ApiJson` extractor, the handlers and the service's validation) over a SQLite database:
//! create a tenant, change one, dismiss dead letters, create API keys, sign in.
//!
//! Invariants: no body makes the API answer 5xx; every refusal is the API's JSON error shape;
//! what a 2xx answer says the tenant now is, reading it back says too, and its stored rate
//! limit and schedule parse back to what the body asked for.
#![no_main]

use std::sync::{Arc, OnceLock};

use adsync_domain::RateLimit;
use adsync_service::{
    Service,
    schedule::Schedule,
    vault::{Keyring, MasterKey},
};
use adsync_store::Store;
use axum::{Router, body::Body, http::Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "fuzz-admin-key-0123456789";

struct Harness {
    rt: tokio::runtime::Runtime,
    router: Router,
    tenant: String,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("adsync-fuzz-api-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let router = rt.block_on(async {
            let store = Store::connect(&format!("sqlite://{}", path.display()))
                .await
                .expect("a SQLite database");
            let keyring = Arc::new(Keyring::new(MasterKey::generate(), vec![]));
            let service = Service::new(store, keyring, Some(SecretString::from(ADMIN)));
            adsync_server::app(service)
        });
        let mut h = Harness {
            rt,
            router,
            tenant: String::new(),
        };
        let (status, body) = h.send(
            "POST",
            "/api/v1/tenants",
            json!({
                "name": "fuzz", "api_url": "https://ads.example.com", "rate_limit": "10/60s",
                "schedule": "*/15 * * * *",
                "credentials": {"email": "ops@example.com", "password": "pw"},
            })
            .to_string()
            .as_bytes(),
        );
        assert_eq!(status, 201, "{body}");
        h.tenant = body["id"].as_str().unwrap().to_owned();
        h
    })
}

impl Harness {
    fn send(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .unwrap();
        self.rt.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "{method} {path}: {status} with a body that is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
            };
            (status, value)
        })
    }
}

/// What a field of the body asked for, when it is a string.
fn asked<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get(field)?.as_str()
}

/// The tenant an answer describes matches what the body asked for, and reads back the same.
fn check_tenant(h: &Harness, asked_for: &Value, answer: &Value) {
    let id = answer["id"].as_str().expect("a tenant id");
    let (status, read) = h.send("GET", &format!("/api/v1/tenants/{id}"), b"");
    assert_eq!(status, 200);
    assert_eq!(
        &read, answer,
        "the answer is what reading the tenant back says"
    );
    let stored: RateLimit = answer["rate_limit"]
        .as_str()
        .unwrap()
        .parse()
        .expect("a stored rate limit parses");
    if let Some(r) = asked(asked_for, "rate_limit") {
        assert_eq!(
            Ok(stored),
            r.parse::<RateLimit>(),
            "rate_limit {r:?} stored as {stored}"
        );
    }
    if let Some(cron) = answer["schedule"].as_str() {
        let zone = answer["time_zone"].as_str().unwrap();
        let s = Schedule::parse(cron, zone).expect("a stored schedule parses");
        if let Some(c) = asked(asked_for, "schedule") {
            assert_eq!(s.cron(), Schedule::parse(c, zone).unwrap().cron());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let t = &h.tenant;
    let (method, path) = match which % 6 {
        0 => ("POST", "/api/v1/tenants".to_owned()),
        1 => ("PATCH", format!("/api/v1/tenants/{t}")),
        2 => ("POST", format!("/api/v1/tenants/{t}/dead-letters/dismiss")),
        3 => ("POST", format!("/api/v1/tenants/{t}/api-keys")),
        4 => ("POST", "/api/v1/api-keys".to_owned()),
        _ => ("POST", "/api/v1/session".to_owned()),
    };
    let (status, answer) = h.send(method, &path, body);
    assert!(
        status < 500,
        "{method} {path} with {:?}: {status} {answer}",
        String::from_utf8_lossy(body)
    );
    if !(200..300).contains(&status) {
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty())
                && answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{status}: not the API's error shape: {answer}"
        );
        return;
    }
    let asked_for: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match which % 6 {
        0 => {
            check_tenant(h, &asked_for, &answer);
            let id = answer["id"].as_str().unwrap();
            let (status, _) = h.send("DELETE", &format!("/api/v1/tenants/{id}"), b"");
            assert_eq!(status, 204);
        }
        1 => check_tenant(h, &asked_for, &answer),
        _ => {}
    }
});
