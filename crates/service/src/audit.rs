//! The audit log: every mutation made through the API (who: the key id; what; the target;
//! when; from which address), written in the transaction of the change, so the log and the
//! data cannot disagree. Never a secret: details are built by the callers from public fields.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, SqliteConnection};

use crate::{Result, row::AnyRow};

/// Who makes a change: an API key (its id, never the key) and where the request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `admin` for the configured admin key, else the API key's id.
    pub key_id: String,
    /// The client's address.
    pub remote_addr: Option<String>,
}

/// One change to record.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// `tenant.create`, `run.cancel`, ...
    pub action: &'a str,
    /// `tenant`, `run`, `api_key`, `dead_letter`.
    pub target_type: &'a str,
    /// The target's id.
    pub target_id: &'a str,
    /// The tenant concerned, if any.
    pub tenant_id: Option<&'a str>,
    /// Public details (JSON), never a secret.
    pub detail: Option<serde_json::Value>,
}

/// A recorded change.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (key id).
    pub actor: String,
    /// What.
    pub action: String,
    /// Target kind.
    pub target_type: String,
    /// Target id.
    pub target_id: String,
    /// Tenant concerned.
    pub tenant_id: Option<String>,
    /// Client address.
    pub remote_addr: Option<String>,
    /// Details.
    pub detail: Option<serde_json::Value>,
}

const INSERT: &str = "INSERT INTO audit_log
    (at, actor, action, target_type, target_id, tenant_id, remote_addr, detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// Records `change` by `actor` inside the caller's PostgreSQL transaction.
pub async fn record_pg(tx: &mut PgConnection, actor: &Actor, change: &Change<'_>) -> Result<()> {
    sqlx::query(INSERT)
        .bind(Utc::now())
        .bind(&actor.key_id)
        .bind(change.action)
        .bind(change.target_type)
        .bind(change.target_id)
        .bind(change.tenant_id)
        .bind(actor.remote_addr.as_deref())
        .bind(change.detail.as_ref().map(|d| d.to_string()))
        .execute(tx)
        .await?;
    Ok(())
}

/// Records `change` by `actor` inside the caller's SQLite transaction.
pub async fn record_sqlite(
    tx: &mut SqliteConnection,
    actor: &Actor,
    change: &Change<'_>,
) -> Result<()> {
    sqlx::query(INSERT)
        .bind(adsync_store::sqlite_ts(Utc::now()))
        .bind(&actor.key_id)
        .bind(change.action)
        .bind(change.target_type)
        .bind(change.target_id)
        .bind(change.tenant_id)
        .bind(actor.remote_addr.as_deref())
        .bind(change.detail.as_ref().map(|d| d.to_string()))
        .execute(tx)
        .await?;
    Ok(())
}

/// A page of the log, newest first: entries with `id < before` (all when `None`), of one
/// tenant or of all.
pub async fn list(
    store: &adsync_store::Store,
    tenant: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    const SQL: &str = "SELECT id, at, actor, action, target_type, target_id, tenant_id,
            remote_addr, detail FROM audit_log
        WHERE ($1 IS NULL OR tenant_id = $1) AND ($2 IS NULL OR id < $2)
        ORDER BY id DESC LIMIT $3";
    let before = before.unwrap_or(i64::MAX);
    let limit = i64::from(limit.clamp(1, 1000));
    Ok(match store {
        adsync_store::Store::Postgres(p) => {
            let sql = SQL.replace("$1 IS NULL", "$1::text IS NULL");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(before)
                .bind(limit)
                .fetch_all(p)
                .await?
                .iter()
                .map(entry)
                .collect::<Result<_>>()?
        }
        adsync_store::Store::Sqlite(p) => sqlx::query(SQL)
            .bind(tenant)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?
            .iter()
            .map(entry)
            .collect::<Result<_>>()?,
    })
}

fn entry(r: &impl AnyRow) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.int("id")?,
        at: r.time("at")?,
        actor: r.text("actor")?,
        action: r.text("action")?,
        target_type: r.text("target_type")?,
        target_id: r.text("target_id")?,
        tenant_id: r.opt_text("tenant_id")?,
        remote_addr: r.opt_text("remote_addr")?,
        detail: r
            .opt_text("detail")?
            .and_then(|d| serde_json::from_str(&d).ok()),
    })
}
