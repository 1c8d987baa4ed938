//! The service's errors: what the caller did wrong (invalid, not found, conflict) apart from
//! what failed (the database, the vault), each knowing whether a retry could help.

use adsync_store::StoreError;

use crate::vault::VaultError;

/// A service operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is wrong; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// No such thing (or not visible to the caller).
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with the current state (a run already active, ...).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Credentials could not be sealed or opened.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        ServiceError::Store(StoreError::from(e))
    }
}

impl ServiceError {
    /// Whether trying again later could succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ServiceError::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Results of the service.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
