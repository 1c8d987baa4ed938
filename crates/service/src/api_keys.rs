//! API keys: `adk_` + 32 random bytes (base64url), shown once when created; only a SHA-256
//! hash is stored (a random 256-bit key needs no slow hash: nothing to brute-force), so the
//! table leaks no usable key. A key belongs to one tenant (it sees only that tenant) or, with
//! no tenant, is an admin key. Revocable; the configured `ADSYNC_ADMIN_KEY` is an admin key
//! that lives only in the environment.

use adsync_store::{Store, sqlite_ts};
use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    Result, ServiceError,
    audit::{self, Actor, Change},
    row::AnyRow,
};

/// What a key may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything.
    Admin,
    /// One tenant.
    Tenant(String),
}

/// A caller identified by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `admin` (the configured key) or the key's id.
    pub key_id: String,
    /// What it may see.
    pub scope: Scope,
}

impl Principal {
    /// Whether it may see `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        match &self.scope {
            Scope::Admin => true,
            Scope::Tenant(t) => t == tenant,
        }
    }

    /// Whether it is an admin.
    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Id (`key_` + 12 hex digits): appears in the audit log.
    pub id: String,
    /// Its tenant (`None`: admin).
    pub tenant_id: Option<String>,
    /// A label.
    pub name: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Revoked, if it is.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The hash stored for `key`.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `prefix` and 32 random bytes in base64url: an API key or a session token.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Compares two secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates a key for `tenant` (admin key when `None`) and returns it with the secret, the
/// only time the secret exists outside the caller's hands.
pub async fn create(
    store: &Store,
    tenant: Option<&str>,
    name: Option<&str>,
    actor: &Actor,
) -> Result<(ApiKey, SecretString)> {
    if let Some(n) = name
        && (n.chars().count() > 200 || n.chars().any(char::is_control))
    {
        return Err(ServiceError::Invalid(
            "name must be at most 200 characters without control characters".into(),
        ));
    }
    let secret = random_secret("adk_");
    let id = format!("key_{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
    let now = Utc::now();
    const SQL: &str = "INSERT INTO api_keys (id, tenant_id, key_hash, name, created_by, created_at)
        VALUES ($1, $2, $3, $4, $5, $6)";
    let change = Change {
        action: "api_key.create",
        target_type: "api_key",
        target_id: &id,
        tenant_id: tenant,
        detail: Some(serde_json::json!({ "name": name })),
    };
    let exists = "SELECT 1 FROM tenants WHERE id = $1";
    match store {
        Store::Postgres(p) => {
            let mut tx = adsync_store::tx::begin_pg(p).await?;
            if let Some(t) = tenant
                && sqlx::query(exists)
                    .bind(t)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
            {
                return Err(ServiceError::NotFound(format!("tenant {t}")));
            }
            sqlx::query(SQL)
                .bind(&id)
                .bind(tenant)
                .bind(hash(&secret))
                .bind(name)
                .bind(&actor.key_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            audit::record_pg(&mut tx, actor, &change).await?;
            tx.commit().await?;
        }
        Store::Sqlite(p) => {
            let mut tx = adsync_store::tx::begin_sqlite(p).await?;
            if let Some(t) = tenant
                && sqlx::query(exists)
                    .bind(t)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_none()
            {
                return Err(ServiceError::NotFound(format!("tenant {t}")));
            }
            sqlx::query(SQL)
                .bind(&id)
                .bind(tenant)
                .bind(hash(&secret))
                .bind(name)
                .bind(&actor.key_id)
                .bind(sqlite_ts(now))
                .execute(&mut *tx)
                .await?;
            audit::record_sqlite(&mut tx, actor, &change).await?;
            tx.commit().await?;
        }
    }
    Ok((
        ApiKey {
            id,
            tenant_id: tenant.map(str::to_owned),
            name: name.map(str::to_owned),
            created_at: now,
            revoked_at: None,
        },
        SecretString::from(secret),
    ))
}

/// Who holds `key`: the configured admin key, or a stored key not revoked. `None`: nobody.
pub async fn authenticate(
    store: &Store,
    admin_key: Option<&SecretString>,
    key: &str,
) -> Result<Option<Principal>> {
    if let Some(admin) = admin_key
        && constant_time_eq(admin.expose_secret().as_bytes(), key.as_bytes())
    {
        return Ok(Some(Principal {
            key_id: "admin".into(),
            scope: Scope::Admin,
        }));
    }
    if !key.starts_with("adk_") || key.len() > 100 {
        return Ok(None);
    }
    const SQL: &str =
        "SELECT id, tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL";
    let row: Option<(String, Option<String>)> = match store {
        Store::Postgres(p) => {
            sqlx::query_as(SQL)
                .bind(hash(key))
                .fetch_optional(p)
                .await?
        }
        Store::Sqlite(p) => {
            sqlx::query_as(SQL)
                .bind(hash(key))
                .fetch_optional(p)
                .await?
        }
    };
    Ok(row.map(|(id, tenant)| Principal {
        key_id: id,
        scope: tenant.map_or(Scope::Admin, Scope::Tenant),
    }))
}

/// Revokes key `id` of `tenant` (`None`: an admin key). Returns whether it did.
pub async fn revoke(store: &Store, tenant: Option<&str>, id: &str, actor: &Actor) -> Result<bool> {
    const SQL: &str = "UPDATE api_keys SET revoked_at = $3
        WHERE id = $1 AND revoked_at IS NULL
          AND (tenant_id = $2 OR (tenant_id IS NULL AND $2 IS NULL))";
    let change = Change {
        action: "api_key.revoke",
        target_type: "api_key",
        target_id: id,
        tenant_id: tenant,
        detail: None,
    };
    let now = Utc::now();
    let done = match store {
        Store::Postgres(p) => {
            let mut tx = adsync_store::tx::begin_pg(p).await?;
            let n = sqlx::query(sqlx::AssertSqlSafe(
                SQL.replace("$2 IS NULL", "$2::text IS NULL"),
            ))
            .bind(id)
            .bind(tenant)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                audit::record_pg(&mut tx, actor, &change).await?;
            }
            tx.commit().await?;
            n
        }
        Store::Sqlite(p) => {
            let mut tx = adsync_store::tx::begin_sqlite(p).await?;
            let n = sqlx::query(SQL)
                .bind(id)
                .bind(tenant)
                .bind(sqlite_ts(now))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                audit::record_sqlite(&mut tx, actor, &change).await?;
            }
            tx.commit().await?;
            n
        }
    };
    Ok(done == 1)
}

/// The keys of `tenant` (`None`: admin keys), newest first, without secrets.
pub async fn list(store: &Store, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
    const SQL: &str = "SELECT id, tenant_id, name, created_at, revoked_at FROM api_keys
        WHERE (tenant_id = $1 OR (tenant_id IS NULL AND $1 IS NULL)) ORDER BY created_at DESC";
    Ok(match store {
        Store::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(
            SQL.replace("$1 IS NULL", "$1::text IS NULL"),
        ))
        .bind(tenant)
        .fetch_all(p)
        .await?
        .iter()
        .map(api_key)
        .collect::<Result<_>>()?,
        Store::Sqlite(p) => sqlx::query(SQL)
            .bind(tenant)
            .fetch_all(p)
            .await?
            .iter()
            .map(api_key)
            .collect::<Result<_>>()?,
    })
}

fn api_key(r: &impl AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: r.text("id")?,
        tenant_id: r.opt_text("tenant_id")?,
        name: r.opt_text("name")?,
        created_at: r.time("created_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}
