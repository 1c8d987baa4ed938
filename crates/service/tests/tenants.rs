//! Tenants on both databases: validation refuses before anything is written, credentials
//! come back only through the keyring, a master key rotation rewraps every tenant's data key
//! so the new key alone opens them, and deletion takes the tenant's data with it.

#[macro_use]
mod common;

use std::sync::Arc;

use adsync_service::{
    Service,
    tenants::{NewTenant, TenantPatch},
    vault::{Credentials, Keyring, MasterKey},
};
use adsync_store::Store;
use common::*;
use secrecy::{ExposeSecret, SecretString};

on_both_databases!(
    invalid_settings_are_refused_and_nothing_is_written,
    credentials_survive_a_master_key_rotation_and_only_the_new_key_is_needed,
    a_credentials_change_is_write_only_and_audited_without_the_secret,
);

fn new_tenant(api_url: &str, schedule: Option<&str>, rate: &str) -> NewTenant {
    NewTenant {
        name: "acme".into(),
        api_url: api_url.into(),
        client_id: None,
        rate_limit: Some(rate.into()),
        page_size: None,
        schedule: schedule.map(str::to_owned),
        time_zone: None,
        paused: false,
        credentials: Credentials::new("ops@acme.test", SecretString::from(PASSWORD)),
    }
}

async fn invalid_settings_are_refused_and_nothing_is_written(store: Store) {
    let s = service(&store, keyring()).await;
    for (url, schedule, rate, says) in [
        ("ftp://ads.example.com", None, "10/60s", "http"),
        (
            "https://user:pw@ads.example.com",
            None,
            "10/60s",
            "credentials",
        ),
        ("not a url", None, "10/60s", "URL"),
        (
            "https://ads.example.com",
            Some("61 * * * *"),
            "10/60s",
            "cron",
        ),
        ("https://ads.example.com", Some("* * *"), "10/60s", "fields"),
        ("https://ads.example.com", None, "0/60s", "rate_limit"),
        (
            "https://ads.example.com",
            None,
            "ten per minute",
            "rate_limit",
        ),
    ] {
        let err = s
            .tenants
            .create(new_tenant(url, schedule, rate), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{url} {schedule:?} {rate}: {err}");
    }
    assert!(s.tenants.list().await.unwrap().is_empty());
    let created = s
        .tenants
        .create(
            new_tenant("https://ads.example.com/", Some("0 * * * *"), "10/60s"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(created.api_url, "https://ads.example.com");
    assert_eq!(created.client_id, format!("adsync-{}", created.id));
    assert!(created.has_credentials);
    assert!(created.next_run_at.is_some());
    // A bad change changes nothing.
    let bad = s
        .tenants
        .update(
            &created.id,
            TenantPatch {
                name: Some("renamed".into()),
                schedule: Some(Some("nonsense".into())),
                ..TenantPatch::default()
            },
            None,
        )
        .await;
    assert!(bad.is_err());
    assert_eq!(s.tenants.get(&created.id).await.unwrap().name, "acme");
    // Pausing clears the next run; resuming sets it again.
    let paused = s
        .tenants
        .update(
            &created.id,
            TenantPatch {
                paused: Some(true),
                ..TenantPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    assert!(paused.paused && paused.next_run_at.is_none());
    let resumed = s
        .tenants
        .update(
            &created.id,
            TenantPatch {
                paused: Some(false),
                ..TenantPatch::default()
            },
            None,
        )
        .await
        .unwrap();
    assert!(!resumed.paused && resumed.next_run_at.is_some());
}

async fn credentials_survive_a_master_key_rotation_and_only_the_new_key_is_needed(store: Store) {
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let old_text = old.to_base64();
    let new_text = new.to_base64();
    let before = Service::new(store.clone(), Arc::new(Keyring::new(old, Vec::new())), None);
    let t = before
        .tenants
        .create(new_tenant("https://ads.example.com", None, "10/60s"), None)
        .await
        .unwrap();
    // During the rotation every process runs with "NEW,OLD".
    let both = Keyring::parse(&format!(
        "{},{}",
        new_text.expose_secret(),
        old_text.expose_secret()
    ))
    .unwrap();
    let during = Service::new(store.clone(), Arc::new(both), None);
    assert_eq!(
        during.tenants.credentials(&t.id).await.unwrap().email,
        "ops@acme.test"
    );
    assert_eq!(during.tenants.rotate_keys().await.unwrap(), (1, 0));
    assert_eq!(during.tenants.rotate_keys().await.unwrap(), (0, 1));
    // Afterwards the new key alone opens them, and the old one alone no longer does.
    let after = Service::new(
        store.clone(),
        Arc::new(Keyring::parse(new_text.expose_secret()).unwrap()),
        None,
    );
    let creds = after.tenants.credentials(&t.id).await.unwrap();
    assert_eq!(creds.password.expose_secret(), PASSWORD);
    let old_only = Service::new(
        store,
        Arc::new(Keyring::parse(old_text.expose_secret()).unwrap()),
        None,
    );
    assert!(old_only.tenants.credentials(&t.id).await.is_err());
}

async fn a_credentials_change_is_write_only_and_audited_without_the_secret(store: Store) {
    use adsync_service::audit::Actor;
    let s = service(&store, keyring()).await;
    let actor = Actor {
        key_id: "admin".into(),
        remote_addr: Some("127.0.0.1".into()),
    };
    let t = s
        .tenants
        .create(
            new_tenant("https://ads.example.com", None, "10/60s"),
            Some(&actor),
        )
        .await
        .unwrap();
    let changed = "an-entirely-new-password-42";
    s.tenants
        .update(
            &t.id,
            TenantPatch {
                credentials: Some(Credentials::new(
                    "ops@acme.test",
                    SecretString::from(changed),
                )),
                ..TenantPatch::default()
            },
            Some(&actor),
        )
        .await
        .unwrap();
    assert_eq!(
        s.tenants
            .credentials(&t.id)
            .await
            .unwrap()
            .password
            .expose_secret(),
        changed
    );
    let log = adsync_service::audit::list(&store, Some(&t.id), None, 100)
        .await
        .unwrap();
    let actions: Vec<_> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["tenant.update", "tenant.create"]);
    assert!(log.iter().all(|e| e.actor == "admin"));
    let text = serde_json::to_string(&log).unwrap();
    assert!(
        !text.contains(changed) && !text.contains(PASSWORD),
        "{text}"
    );
    // Deleting the tenant removes it, its secrets and its data, and is audited.
    s.tenants.delete(&t.id, Some(&actor)).await.unwrap();
    assert!(s.tenants.get(&t.id).await.is_err());
    assert!(s.tenants.credentials(&t.id).await.is_err());
    let log = adsync_service::audit::list(&store, Some(&t.id), None, 100)
        .await
        .unwrap();
    assert_eq!(log[0].action, "tenant.delete");
}
