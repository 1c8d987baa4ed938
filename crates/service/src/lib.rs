//! adsync as a service: many tenants, each with encrypted credentials and a schedule; runs as
//! jobs in the database (`sync_runs` rows with status `queued`), claimed by workers on any
//! number of machines under the same lease mechanism a CLI run uses; shared rate budgets; API
//! keys and the audit log.

pub mod api_keys;
pub mod audit;
pub mod budget;
pub mod dead_letters;
mod error;
pub mod events;
pub mod queue;
pub mod reads;
mod row;
pub mod schedule;
pub mod scheduler;
pub mod sessions;
pub mod tenants;
pub mod vault;
pub mod worker;
pub mod workers;

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
    /// Live run events: published by workers and the queue, through the database.
    pub events: events::Events,
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
        let events = events::Events::new(&store);
        Self {
            tenants: tenants::Tenants::new(store.clone(), keyring),
            queue: queue::Queue::with_events(store.clone(), events.clone()),
            events,
            store,
            admin_key: admin_key.map(Arc::new),
        }
    }

    /// The same service publishing to `events`: one process's API and workers share one hub,
    /// which SQLite needs (its events never leave the process) and PostgreSQL does not mind.
    pub fn with_events(mut self, events: events::Events) -> Self {
        self.queue = queue::Queue::with_events(self.store.clone(), events.clone());
        self.events = events;
        self
    }
}
