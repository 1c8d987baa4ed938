//! The store's error type, and the redaction of database URLs for messages and logs.

use crate::RunId;

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
        /// Whether it looks like a passing outage (network, server down) rather than a wrong
        /// setting (bad file path, bad URL).
        transient: bool,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another run of the tenant is in progress.
    #[error("another sync of tenant {0:?} is in progress")]
    RunInProgress(String),
    /// This process no longer holds the run's lease: another one took the run over (after
    /// this one missed its renewals), so nothing more may be written for it.
    #[error(
        "run {run} was taken over by another process (lease epoch {epoch} is no longer current); this process stopped writing to it"
    )]
    LeaseLost {
        /// The run.
        run: RunId,
        /// The epoch this process held.
        epoch: i64,
    },
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
    pub(crate) fn connect(url: &str, err: &sqlx::Error) -> Self {
        // sqlx's messages do not echo the URL, but be sure nothing of it leaks.
        let mut detail = err.to_string();
        for secret in url_secrets(url) {
            detail = detail.replace(&secret, "***");
        }
        StoreError::Connect {
            url: redact_url(url),
            detail,
            transient: query_is_transient(err),
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

    /// Whether trying again later may help: a connection dropped or refused, a pool timed
    /// out, a lock or statement timeout, a serialization failure, a server shutting down.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Query(e) => query_is_transient(e),
            StoreError::Connect { transient, .. } => *transient,
            _ => false,
        }
    }
}

fn query_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 40001 serialization failure; 40P01 deadlock;
            // 53: insufficient resources; 55P03 lock not available; 57014 statement timeout;
            // 57P0x: server shutting down; SQLite 5/6: SQLITE_BUSY / SQLITE_LOCKED.
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    code.as_ref(),
                    "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "5" | "6"
                )
        }),
        _ => false,
    }
}

/// Query parameters of a database URL whose values are secrets.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token"]
        .iter()
        .any(|s| key.contains(s))
}

/// Every secret written in a URL (password in the userinfo, decoded and encoded, and
/// secret-looking query parameters), so they can be scrubbed from any message.
fn url_secrets(url: &str) -> Vec<String> {
    let Ok(u) = url::Url::parse(url) else {
        return Vec::new();
    };
    let mut secrets: Vec<String> = Vec::new();
    if let Some(pw) = u.password() {
        secrets.push(pw.to_owned());
        if let Ok(decoded) = urlencoding_decode(pw) {
            secrets.push(decoded);
        }
    }
    for (k, v) in u.query_pairs() {
        if is_secret_key(&k) && !v.is_empty() {
            secrets.push(v.into_owned());
        }
    }
    secrets.retain(|s| s.len() >= 2);
    secrets
}

fn urlencoding_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .unwrap_or_default();
    String::from_utf8(bytes)
}

/// The URL with every way of writing a password hidden: `user:PASSWORD@`, `?password=`,
/// `?sslpassword=` and other secret-looking parameters; for text that is not a URL (a libpq
/// `key=value` string), `password=...` values and anything before an `@`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_key(&k) {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => redact_key_values(url.rsplit('@').next().unwrap_or("")),
    }
}

/// `password=x user=y` -> `password=*** user=y`, for connection strings that are not URLs.
fn redact_key_values(s: &str) -> String {
    s.split(' ')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        for (url, secret) in [
            ("postgres://u:hunter2@db:5432/x", "hunter2"),
            ("postgresql://u:hunt%40er2@db/x", "hunt"),
            ("postgres://u@db/x?password=hunter2", "hunter2"),
            (
                "postgres://u@db/x?sslmode=require&PASSWORD=hunter2",
                "hunter2",
            ),
            (
                "postgres://u@db/x?sslpassword=hunter2&application_name=a",
                "hunter2",
            ),
            ("not a url u:hunter2@host", "hunter2"),
            ("host=db user=u password=hunter2 dbname=x", "hunter2"),
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains(secret), "{url} -> {redacted}");
        }
        assert_eq!(
            redact_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(
            redact_url("postgres://u@db/x?password=hunter2&sslmode=require"),
            "postgres://u@db/x?password=***&sslmode=require"
        );
        assert_eq!(redact_url("sqlite://adsync.db"), "sqlite://adsync.db");
    }

    #[test]
    fn the_secrets_of_a_url_are_found_in_every_spelling() {
        let s = url_secrets("postgres://u:p%40ss@db/x?password=other&sslpassword=third");
        for want in ["p%40ss", "p@ss", "other", "third"] {
            assert!(s.iter().any(|x| x == want), "{want} not in {s:?}");
        }
    }
}
