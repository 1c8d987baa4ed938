//! The store's error type and URL redaction.

/// What can go wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `postgres://` nor `sqlite:`.
    #[error("unsupported database URL {0}: use postgres://USER@HOST/DB or sqlite://FILE.db")]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot open the database {url}: {detail}")]
    Connect {
        /// The URL with its password hidden.
        url: String,
        /// Why.
        detail: String,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another run of the tenant is in progress.
    #[error(
        "another sync of tenant {0:?} is in progress; wait for it, or run with --fresh after it died"
    )]
    RunInProgress(String),
    /// No row where one was expected.
    #[error("{0} not found")]
    NotFound(String),
    /// A stored value could not be read back.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

impl StoreError {
    pub(crate) fn connect(url: &str, err: &dyn std::fmt::Display) -> Self {
        // sqlx's messages do not echo the URL, but be sure nothing of it leaks.
        let detail = err.to_string();
        let detail = match url::Url::parse(url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
        {
            Some(pw) if !pw.is_empty() => detail.replace(&pw, "***"),
            _ => detail,
        };
        StoreError::Connect {
            url: redact_url(url),
            detail,
        }
    }

    pub(crate) fn unique_violation_as_running(err: StoreError, tenant: &str) -> StoreError {
        match &err {
            StoreError::Query(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                StoreError::RunInProgress(tenant.to_owned())
            }
            _ => err,
        }
    }

    /// Whether trying again may help (a connection dropped, a pool timed out, a lock).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Query(e) => matches!(
                e,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
            ),
            StoreError::Connect { .. } => true,
            _ => false,
        }
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => url.split('@').next_back().unwrap_or("").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        assert_eq!(
            redact_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://adsync.db"), "sqlite://adsync.db");
        assert!(!redact_url("not a url u:hunter2@host").contains("hunter2"));
    }
}
