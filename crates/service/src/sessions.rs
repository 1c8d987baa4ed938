//! Dashboard sessions: signing in with an API key opens a session whose random token goes
//! into the browser's cookie; the database keeps only the token's SHA-256 hash (a random
//! 256-bit token needs no slow hash), the key's id and an expiry. The cookie is therefore not
//! the key: it expires, signing out ends it on the server, and it ends with its key (revoked,
//! or an admin key that changed).

use std::time::Duration;

use adsync_store::{Store, sqlite_ts};
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use crate::{
    Result,
    api_keys::{Principal, Scope, constant_time_eq, hash, random_secret},
    row::AnyRow,
};

/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Opens a session for `principal` (just authenticated with its key) and returns its token.
/// `admin_key` is the configured admin key, whose hash an admin session is bound to.
pub async fn open(
    store: &Store,
    principal: &Principal,
    admin_key: Option<&SecretString>,
) -> Result<SecretString> {
    let token = random_secret("ads_");
    let admin_hash = (principal.key_id == "admin")
        .then(|| admin_key.map(|k| hash(k.expose_secret())))
        .flatten();
    let now = Utc::now();
    let expires = now + SESSION_TTL;
    const SQL: &str = "INSERT INTO dashboard_sessions
        (token_hash, key_id, admin_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";
    const SWEEP: &str = "DELETE FROM dashboard_sessions WHERE expires_at <= $1";
    match store {
        Store::Postgres(p) => {
            sqlx::query(SWEEP).bind(now).execute(p).await?;
            sqlx::query(SQL)
                .bind(hash(&token))
                .bind(&principal.key_id)
                .bind(admin_hash)
                .bind(now)
                .bind(expires)
                .execute(p)
                .await?;
        }
        Store::Sqlite(p) => {
            sqlx::query(SWEEP).bind(sqlite_ts(now)).execute(p).await?;
            sqlx::query(SQL)
                .bind(hash(&token))
                .bind(&principal.key_id)
                .bind(admin_hash)
                .bind(sqlite_ts(now))
                .bind(sqlite_ts(expires))
                .execute(p)
                .await?;
        }
    }
    Ok(SecretString::from(token))
}

/// Who session `token` belongs to, if it is open, unexpired, and its key still valid.
pub async fn principal(
    store: &Store,
    admin_key: Option<&SecretString>,
    token: &str,
) -> Result<Option<Principal>> {
    if !token.starts_with("ads_") || token.len() > 100 {
        return Ok(None);
    }
    const SQL: &str = "SELECT s.key_id, s.admin_hash, k.tenant_id, k.id AS live_key
        FROM dashboard_sessions s
        LEFT JOIN api_keys k ON k.id = s.key_id AND k.revoked_at IS NULL
        WHERE s.token_hash = $1 AND s.expires_at > $2";
    fn read(r: &impl AnyRow) -> Result<(String, Option<String>, Option<String>, bool)> {
        Ok((
            r.text("key_id")?,
            r.opt_text("admin_hash")?,
            r.opt_text("tenant_id")?,
            r.opt_text("live_key")?.is_some(),
        ))
    }
    let now = Utc::now();
    let row = match store {
        Store::Postgres(p) => sqlx::query(SQL)
            .bind(hash(token))
            .bind(now)
            .fetch_optional(p)
            .await?
            .as_ref()
            .map(read)
            .transpose()?,
        Store::Sqlite(p) => sqlx::query(SQL)
            .bind(hash(token))
            .bind(sqlite_ts(now))
            .fetch_optional(p)
            .await?
            .as_ref()
            .map(read)
            .transpose()?,
    };
    let Some((key_id, admin_hash, tenant, live)) = row else {
        return Ok(None);
    };
    if key_id == "admin" {
        let current = admin_key.map(|k| hash(k.expose_secret()));
        let same = matches!((admin_hash, current), (Some(a), Some(c)) if constant_time_eq(a.as_bytes(), c.as_bytes()));
        return Ok(same.then_some(Principal {
            key_id,
            scope: Scope::Admin,
        }));
    }
    Ok(live.then(|| Principal {
        key_id,
        scope: tenant.map_or(Scope::Admin, Scope::Tenant),
    }))
}

/// Ends session `token` (nothing if it is not open).
pub async fn close(store: &Store, token: &str) -> Result<()> {
    const SQL: &str = "DELETE FROM dashboard_sessions WHERE token_hash = $1";
    match store {
        Store::Postgres(p) => {
            sqlx::query(SQL).bind(hash(token)).execute(p).await?;
        }
        Store::Sqlite(p) => {
            sqlx::query(SQL).bind(hash(token)).execute(p).await?;
        }
    }
    Ok(())
}
