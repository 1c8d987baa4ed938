//! adsync as a service: many tenants, each with encrypted credentials and a schedule; runs as
//! jobs in the database (`sync_runs` rows with status `queued`), claimed by workers on any
//! number of machines under the same lease mechanism a CLI run uses; shared rate budgets; API
//! keys and the audit log.

pub mod api_keys;
pub mod audit;
pub mod budget;
pub mod dead_letters;
mod error;
pub mod queue;
pub mod reads;
mod row;
pub mod schedule;
pub mod scheduler;
pub mod tenants;
pub mod vault;
pub mod worker;

pub use error::{Result, ServiceError};

use std::sync::Arc;

use adsync_store::Store;
use secrecy::SecretString;

/// Everything the API and the workers share: one database, the tenants (with the keyring
/// that seals their credentials), the run queue, and the admin key.
#[derive(Clone, Debug)]
pub struct Service {
    /// The database.
    pub store: Store,
    /// Tenants and their sealed credentials.
    pub tenants: tenants::Tenants,
    /// The run queue.
    pub queue: queue::Queue,
    /// The configured admin key (`ADSYNC_ADMIN_KEY`), if any.
    pub admin_key: Option<Arc<SecretString>>,
}

impl Service {
    /// A service over `store`, sealing credentials with `keyring`.
    pub fn new(
        store: Store,
        keyring: Arc<vault::Keyring>,
        admin_key: Option<SecretString>,
    ) -> Self {
        Self {
            tenants: tenants::Tenants::new(store.clone(), keyring),
            queue: queue::Queue::new(store.clone()),
            store,
            admin_key: admin_key.map(Arc::new),
        }
    }
}
