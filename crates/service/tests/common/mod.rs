//! Helpers of the service's black-box tests: each test body runs on a fresh PostgreSQL
//! database and on a fresh SQLite file, migrated by the store.
#![allow(dead_code, unused_macros)]

use std::{future::Future, sync::Arc, time::Duration};

use adsync_service::{
    Service,
    tenants::{NewTenant, Tenant},
    vault::{Credentials, Keyring, MasterKey},
};
use adsync_store::Store;
use secrecy::SecretString;

macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[sqlx::test(migrations = false)]
            async fn postgres(pool: sqlx::PgPool) {
                let store = adsync_store::Store::Postgres(pool);
                store.migrate().await.unwrap();
                super::$name(store).await;
            }
            #[sqlx::test(migrations = false)]
            async fn sqlite(pool: sqlx::SqlitePool) {
                let store = adsync_store::Store::Sqlite(pool);
                store.migrate().await.unwrap();
                super::$name(store).await;
            }
        }
    )*};
}

/// The longest any wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Awaits `work` or fails the test after [`DEADLINE`].
pub async fn within_deadline<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, work)
        .await
        .expect("no answer within the test deadline")
}

/// A keyring for tests.
pub fn keyring() -> Arc<Keyring> {
    Arc::new(Keyring::new(MasterKey::generate(), Vec::new()))
}

/// A service over `store`, as another process would have it (its own pacers and keyring
/// handle; the pool is shared: sqlx's test databases accept only the test's own pool).
pub async fn service(store: &Store, keyring: Arc<Keyring>) -> Service {
    Service::new(store.clone(), keyring, None)
}

/// The password every test tenant logs in with (searched for in the database by the tests).
pub const PASSWORD: &str = "Tr0ub4dor&3-unique-test-password";

/// A tenant of `api_url` with `client_id` and `rate_limit`.
pub async fn tenant(
    service: &Service,
    name: &str,
    api_url: &str,
    client_id: Option<&str>,
    rate_limit: &str,
    schedule: Option<&str>,
) -> Tenant {
    service
        .tenants
        .create(
            NewTenant {
                name: name.into(),
                api_url: api_url.into(),
                client_id: client_id.map(str::to_owned),
                rate_limit: Some(rate_limit.into()),
                page_size: Some(100),
                schedule: schedule.map(str::to_owned),
                time_zone: None,
                paused: false,
                credentials: Credentials::new(
                    adsync_sim::REFERENCE_EMAIL,
                    SecretString::from(adsync_sim::REFERENCE_PASSWORD),
                ),
            },
            None,
        )
        .await
        .unwrap()
}
