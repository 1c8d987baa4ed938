//! Reads for the API: a tenant's campaigns (filtered, sorted by a whitelisted key, paged by an
//! opaque keyset cursor) and one campaign's metric history, on PostgreSQL and SQLite.
//!
//! The SQL is assembled from static fragments chosen by `match` (the sort column, the
//! direction, which filters apply); every value from the request is a bound parameter. Keyset
//! paging compares `(sort value, id)` with the last row of the previous page, so a page never
//! repeats or skips a row whatever is inserted meanwhile, and deep pages cost what the first
//! one does.

pub mod overview;

use std::{fmt, str::FromStr};

use adsync_store::{RunId, Store, sqlite_ts};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Result, ServiceError, row::AnyRow};

/// The default page size of [`campaigns`].
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page size of [`campaigns`].
pub const MAX_LIMIT: u32 = 500;
/// The default number of points of [`metrics`].
pub const DEFAULT_METRICS_LIMIT: u32 = 100;
/// The largest number of points of [`metrics`].
pub const MAX_METRICS_LIMIT: u32 = 1000;

/// A column campaigns can be sorted by (the whitelist: nothing else reaches the SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Campaign id.
    Id,
    /// Name (the database's collation).
    Name,
    /// Status text.
    Status,
    /// Budget, numerically.
    Budget,
    /// Impressions.
    Impressions,
    /// Clicks.
    Clicks,
    /// Conversions.
    Conversions,
    /// The platform's creation time.
    CreatedAt,
    /// When adsync last stored it.
    UpdatedAt,
}

/// The type of a sort key's value, which decides how a cursor's value is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Text,
    Int,
    Decimal,
    Time,
}

impl SortKey {
    const ALL: [SortKey; 9] = [
        SortKey::Id,
        SortKey::Name,
        SortKey::Status,
        SortKey::Budget,
        SortKey::Impressions,
        SortKey::Clicks,
        SortKey::Conversions,
        SortKey::CreatedAt,
        SortKey::UpdatedAt,
    ];

    /// The name used in `sort=`.
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Id => "id",
            SortKey::Name => "name",
            SortKey::Status => "status",
            SortKey::Budget => "budget",
            SortKey::Impressions => "impressions",
            SortKey::Clicks => "clicks",
            SortKey::Conversions => "conversions",
            SortKey::CreatedAt => "created_at",
            SortKey::UpdatedAt => "updated_at",
        }
    }

    fn kind(self) -> KeyKind {
        match self {
            SortKey::Id | SortKey::Name | SortKey::Status => KeyKind::Text,
            SortKey::Budget => KeyKind::Decimal,
            SortKey::Impressions | SortKey::Clicks | SortKey::Conversions => KeyKind::Int,
            SortKey::CreatedAt | SortKey::UpdatedAt => KeyKind::Time,
        }
    }

    /// The SQL expression sorted on. SQLite keeps the budget as exact decimal text, which
    /// sorts as text ("9.00" after "10.00"), so it is compared as a number there.
    fn column(self, store: &Store) -> &'static str {
        match (self, store) {
            (SortKey::Budget, Store::Sqlite(_)) => "CAST(budget AS REAL)",
            _ => self.as_str(),
        }
    }

    /// The placeholder expression of the cursor's value (`$5`), typed where the database
    /// needs it.
    fn param(self, store: &Store) -> &'static str {
        match (self.kind(), store) {
            (KeyKind::Decimal, Store::Postgres(_)) => "CAST($5 AS NUMERIC)",
            (KeyKind::Decimal, Store::Sqlite(_)) => "CAST($5 AS REAL)",
            _ => "$5",
        }
    }
}

/// A sort order: a key, ascending or (`-key`) descending; ties are broken by id in the same
/// direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// The column.
    pub key: SortKey,
    /// Largest first.
    pub descending: bool,
}

impl Default for Sort {
    fn default() -> Self {
        Sort {
            key: SortKey::Id,
            descending: false,
        }
    }
}

impl Sort {
    /// Every accepted spelling, for messages and documentation.
    pub fn accepted() -> Vec<String> {
        SortKey::ALL
            .iter()
            .flat_map(|k| [k.as_str().to_owned(), format!("-{}", k.as_str())])
            .collect()
    }
}

impl FromStr for Sort {
    type Err = ServiceError;

    fn from_str(s: &str) -> Result<Self> {
        let (descending, name) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        SortKey::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .map(|key| Sort { key, descending })
            .ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "sort must be one of {} (a leading - sorts largest first)",
                    SortKey::ALL.map(SortKey::as_str).join(", ")
                ))
            })
    }
}

impl fmt::Display for Sort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.descending {
            f.write_str("-")?;
        }
        f.write_str(self.key.as_str())
    }
}

/// Which campaigns to show with respect to their removal (the platform no longer lists
/// them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Removed {
    /// Only campaigns the platform still lists.
    #[default]
    Exclude,
    /// Both.
    Include,
    /// Only removed ones.
    Only,
}

/// A query over a tenant's campaigns.
#[derive(Debug, Clone, Default)]
pub struct CampaignQuery {
    /// Exact status.
    pub status: Option<String>,
    /// Case-insensitive substring of the name (wildcards in it are literal). On SQLite only
    /// ASCII letters are folded.
    pub q: Option<String>,
    /// Order.
    pub sort: Sort,
    /// Removed campaigns.
    pub removed: Removed,
    /// Page size, 1..=[`MAX_LIMIT`].
    pub limit: u32,
    /// Where the previous page ended ([`CampaignPage::next_cursor`]).
    pub cursor: Option<String>,
}

/// A stored campaign as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status, verbatim.
    pub status: String,
    /// Budget, exact, two decimals.
    pub budget: String,
    /// Counter.
    pub impressions: i64,
    /// Counter.
    pub clicks: i64,
    /// Counter.
    pub conversions: i64,
    /// The platform's creation time.
    pub created_at: DateTime<Utc>,
    /// When adsync first stored it.
    pub first_seen_at: DateTime<Utc>,
    /// When adsync last stored it.
    pub updated_at: DateTime<Utc>,
    /// Last successful sync call.
    pub synced_at: Option<DateTime<Utc>>,
    /// Since when the platform no longer lists it.
    pub removed_at: Option<DateTime<Utc>>,
    /// The run that last stored it.
    pub last_run_id: RunId,
    /// The record as last received, as JSON (numbers exact).
    pub raw: Option<serde_json::Value>,
}

/// One page of campaigns.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignPage {
    /// The campaigns.
    pub data: Vec<CampaignRow>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One observation of a campaign's counters: what one run saw.
#[derive(Debug, Clone, Serialize)]
pub struct MetricPoint {
    /// The run.
    pub run_id: RunId,
    /// When the run stored it.
    pub observed_at: DateTime<Utc>,
    /// Counter.
    pub impressions: i64,
    /// Counter.
    pub clicks: i64,
    /// Counter.
    pub conversions: i64,
}

/// What a cursor holds: the sort it was made for, and the last row's sort value and id.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    s: String,
    v: serde_json::Value,
    id: String,
}

/// A cursor's sort value, typed.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Int(i64),
    Time(DateTime<Utc>),
}

const BAD_CURSOR: &str =
    "cursor is not one this API made (or it was cut); ask for the first page again without it";

fn encode_cursor(sort: Sort, row: &CampaignRow) -> String {
    let v = match sort.key {
        SortKey::Id => row.id.clone().into(),
        SortKey::Name => row.name.clone().into(),
        SortKey::Status => row.status.clone().into(),
        SortKey::Budget => row.budget.clone().into(),
        SortKey::Impressions => row.impressions.into(),
        SortKey::Clicks => row.clicks.into(),
        SortKey::Conversions => row.conversions.into(),
        SortKey::CreatedAt => sqlite_ts(row.created_at).into(),
        SortKey::UpdatedAt => sqlite_ts(row.updated_at).into(),
    };
    let cursor = Cursor {
        s: sort.to_string(),
        v,
        id: row.id.clone(),
    };
    let json = serde_json::to_vec(&cursor).expect("a cursor serializes");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(text: &str, sort: Sort) -> Result<(Value, String)> {
    let invalid = || ServiceError::Invalid(BAD_CURSOR.into());
    if text.len() > 4096 {
        return Err(invalid());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid())?;
    let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if cursor.s != sort.to_string() {
        return Err(ServiceError::Invalid(format!(
            "this cursor belongs to sort={}, not sort={sort}: keep the sort while paging, or start again without a cursor",
            cursor.s
        )));
    }
    let value = match sort.key.kind() {
        KeyKind::Text => Value::Text(cursor.v.as_str().ok_or_else(invalid)?.to_owned()),
        KeyKind::Int => Value::Int(cursor.v.as_i64().ok_or_else(invalid)?),
        KeyKind::Decimal => {
            let s = cursor.v.as_str().ok_or_else(invalid)?;
            // Only a plain decimal reaches the CAST, so a bad cursor is a 422, not a 500.
            let plain = !s.is_empty()
                && s.len() <= 32
                && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && s.bytes().filter(|b| *b == b'.').count() <= 1;
            if !plain {
                return Err(invalid());
            }
            Value::Text(s.to_owned())
        }
        KeyKind::Time => {
            let s = cursor.v.as_str().ok_or_else(invalid)?;
            Value::Time(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|_| invalid())?
                    .with_timezone(&Utc),
            )
        }
    };
    Ok((value, cursor.id))
}

/// `%text%` for LIKE, with `\`, `%` and `_` in `text` matched literally (ESCAPE '\').
fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn parse_raw(raw: Option<String>) -> Option<serde_json::Value> {
    let raw = raw?;
    Some(match serde_json::from_str::<serde_json::Value>(&raw) {
        // A record PostgreSQL's JSONB refused is kept as a JSONB string holding its exact
        // text: give back the record, not the string.
        Ok(serde_json::Value::String(text)) => match serde_json::from_str(&text) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => serde_json::Value::String(text),
        },
        Ok(v) => v,
        // Not JSON at all (SQLite keeps the text as received): give it back as a string.
        Err(_) => serde_json::Value::String(raw),
    })
}

fn campaign_row(r: &impl AnyRow) -> Result<CampaignRow> {
    Ok(CampaignRow {
        id: r.text("id")?,
        name: r.text("name")?,
        status: r.text("status")?,
        budget: r.text("budget_text")?,
        impressions: r.int("impressions")?,
        clicks: r.int("clicks")?,
        conversions: r.int("conversions")?,
        created_at: r.time("created_at")?,
        first_seen_at: r.time("first_seen_at")?,
        updated_at: r.time("updated_at")?,
        synced_at: r.opt_time("synced_at")?,
        removed_at: r.opt_time("removed_at")?,
        last_run_id: r.int("last_run_id")?,
        raw: parse_raw(r.opt_text("raw")?),
    })
}

fn metric_point(r: &impl AnyRow) -> Result<MetricPoint> {
    Ok(MetricPoint {
        run_id: r.int("run_id")?,
        observed_at: r.time("observed_at")?,
        impressions: r.int("impressions")?,
        clicks: r.int("clicks")?,
        conversions: r.int("conversions")?,
    })
}

// The budget's text under another name: ORDER BY budget must sort the NUMERIC column, and an
// output column named `budget` would take precedence over it.
const COLUMNS_PG: &str = "id, name, status, budget::text AS budget_text, impressions, clicks,
    conversions, created_at, first_seen_at, updated_at, synced_at, removed_at, last_run_id,
    raw::text AS raw";
const COLUMNS_SQLITE: &str =
    "id, name, status, budget AS budget_text, impressions, clicks, conversions,
    created_at, first_seen_at, updated_at, synced_at, removed_at, last_run_id, raw";

/// A page of the tenant's campaigns. Fails with [`ServiceError::Invalid`] for a limit out of
/// range, a name search or status too long, or a cursor this API did not make for this sort.
pub async fn campaigns(store: &Store, tenant: &str, query: &CampaignQuery) -> Result<CampaignPage> {
    if !(1..=MAX_LIMIT).contains(&query.limit) {
        return Err(ServiceError::Invalid(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 200) {
        return Err(ServiceError::Invalid(
            "q must be at most 200 characters".into(),
        ));
    }
    if query
        .status
        .as_ref()
        .is_some_and(|s| s.chars().count() > 100)
    {
        return Err(ServiceError::Invalid(
            "status must be at most 100 characters".into(),
        ));
    }
    let sort = query.sort;
    let after = query
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c, sort))
        .transpose()?;

    // $1 tenant, $2 status, $3 name pattern, $4 limit + 1, $5/$6 cursor value and id.
    // Every fragment below is a literal; a filter that does not apply is left out.
    let mut sql = String::from("SELECT ");
    sql.push_str(match store {
        Store::Postgres(_) => COLUMNS_PG,
        Store::Sqlite(_) => COLUMNS_SQLITE,
    });
    sql.push_str(" FROM campaigns WHERE tenant_id = $1");
    if query.status.is_some() {
        sql.push_str(" AND status = $2");
    }
    if query.q.is_some() {
        sql.push_str(match store {
            Store::Postgres(_) => " AND name ILIKE $3 ESCAPE '\\'",
            // SQLite's LIKE ignores case (ASCII letters only).
            Store::Sqlite(_) => " AND name LIKE $3 ESCAPE '\\'",
        });
    }
    sql.push_str(match query.removed {
        Removed::Exclude => " AND removed_at IS NULL",
        Removed::Include => "",
        Removed::Only => " AND removed_at IS NOT NULL",
    });
    let column = sort.key.column(store);
    let (cmp, dir) = if sort.descending {
        (" < ", " DESC")
    } else {
        (" > ", " ASC")
    };
    if after.is_some() {
        if sort.key == SortKey::Id {
            sql.push_str(" AND id");
            sql.push_str(cmp);
            sql.push_str("$6");
        } else {
            sql.push_str(" AND (");
            sql.push_str(column);
            sql.push_str(", id)");
            sql.push_str(cmp);
            sql.push('(');
            sql.push_str(sort.key.param(store));
            sql.push_str(", $6)");
        }
    }
    sql.push_str(" ORDER BY ");
    if sort.key != SortKey::Id {
        sql.push_str(column);
        sql.push_str(dir);
        sql.push_str(", ");
    }
    sql.push_str("id");
    sql.push_str(dir);
    sql.push_str(" LIMIT $4");
    // Unused placeholders ($2, $3, $5, $6 when their filter is absent) must not be bound:
    // both databases count parameters from the SQL text. Bind exactly those present, in order.
    let status = query.status.clone();
    let pattern = query.q.as_deref().map(like_pattern);
    let fetch = i64::from(query.limit) + 1;
    let sql = renumber(&sql);

    let mut rows = match store {
        Store::Postgres(p) => {
            let mut qb = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant);
            if let Some(s) = &status {
                qb = qb.bind(s.clone());
            }
            if let Some(p) = &pattern {
                qb = qb.bind(p.clone());
            }
            qb = qb.bind(fetch);
            if let Some((value, id)) = &after {
                if sort.key != SortKey::Id {
                    qb = match value {
                        Value::Text(t) => qb.bind(t.clone()),
                        Value::Int(i) => qb.bind(*i),
                        Value::Time(t) => qb.bind(*t),
                    };
                }
                qb = qb.bind(id.clone());
            }
            qb.fetch_all(p)
                .await?
                .iter()
                .map(campaign_row)
                .collect::<Result<Vec<_>>>()?
        }
        Store::Sqlite(p) => {
            let mut qb = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(tenant);
            if let Some(s) = &status {
                qb = qb.bind(s.clone());
            }
            if let Some(p) = &pattern {
                qb = qb.bind(p.clone());
            }
            qb = qb.bind(fetch);
            if let Some((value, id)) = &after {
                if sort.key != SortKey::Id {
                    qb = match value {
                        Value::Text(t) => qb.bind(t.clone()),
                        Value::Int(i) => qb.bind(*i),
                        Value::Time(t) => qb.bind(sqlite_ts(*t)),
                    };
                }
                qb = qb.bind(id.clone());
            }
            qb.fetch_all(p)
                .await?
                .iter()
                .map(campaign_row)
                .collect::<Result<Vec<_>>>()?
        }
    };
    let next_cursor = if rows.len() > query.limit as usize {
        rows.truncate(query.limit as usize);
        rows.last().map(|last| encode_cursor(sort, last))
    } else {
        None
    };
    Ok(CampaignPage {
        data: rows,
        next_cursor,
    })
}

/// Renumbers the placeholders of `sql` (`$1`, `$2`, ...) in the order of their first
/// appearance after `$1`, so that the ones left out by absent filters leave no gap: the
/// parameters are then bound in that same order.
fn renumber(sql: &str) -> String {
    // The order in which parameters are bound by `campaigns`: tenant, status, pattern,
    // limit, cursor value, cursor id.
    const ORDER: [&str; 6] = ["$1", "$2", "$3", "$4", "$5", "$6"];
    let present: Vec<&str> = ORDER.into_iter().filter(|p| sql.contains(p)).collect();
    let mut out = sql.to_owned();
    // Through a temporary spelling, so that `$3 -> $2` cannot be renamed again.
    for (i, p) in present.iter().enumerate() {
        out = out.replace(p, &format!("$#{}", i + 1));
    }
    out.replace("$#", "$")
}

/// The campaign's metric history, oldest first: the last `limit` runs that stored it. Fails
/// with [`ServiceError::NotFound`] when the tenant has no such campaign.
pub async fn metrics(
    store: &Store,
    tenant: &str,
    campaign: &str,
    limit: u32,
) -> Result<Vec<MetricPoint>> {
    if !(1..=MAX_METRICS_LIMIT).contains(&limit) {
        return Err(ServiceError::Invalid(format!(
            "limit must be between 1 and {MAX_METRICS_LIMIT}"
        )));
    }
    const EXISTS: &str = "SELECT 1 FROM campaigns WHERE tenant_id = $1 AND id = $2";
    const SQL: &str = "SELECT run_id, observed_at, impressions, clicks, conversions
        FROM campaign_metrics WHERE tenant_id = $1 AND campaign_id = $2
        ORDER BY run_id DESC LIMIT $3";
    let not_found = || ServiceError::NotFound(format!("campaign {campaign}"));
    let mut points = match store {
        Store::Postgres(p) => {
            sqlx::query(EXISTS)
                .bind(tenant)
                .bind(campaign)
                .fetch_optional(p)
                .await?
                .ok_or_else(not_found)?;
            sqlx::query(SQL)
                .bind(tenant)
                .bind(campaign)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?
                .iter()
                .map(metric_point)
                .collect::<Result<Vec<_>>>()?
        }
        Store::Sqlite(p) => {
            sqlx::query(EXISTS)
                .bind(tenant)
                .bind(campaign)
                .fetch_optional(p)
                .await?
                .ok_or_else(not_found)?;
            sqlx::query(SQL)
                .bind(tenant)
                .bind(campaign)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?
                .iter()
                .map(metric_point)
                .collect::<Result<Vec<_>>>()?
        }
    };
    points.reverse();
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_accepts_the_whitelist_and_nothing_else() {
        assert_eq!(
            "-impressions".parse::<Sort>().unwrap(),
            Sort {
                key: SortKey::Impressions,
                descending: true
            }
        );
        assert_eq!("budget".parse::<Sort>().unwrap().to_string(), "budget");
        for bad in ["", "-", "impressions;drop", "raw", "--id", "Name"] {
            assert!(bad.parse::<Sort>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn like_wildcards_in_a_search_are_literal() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn absent_filters_leave_no_gap_in_the_placeholders() {
        assert_eq!(
            renumber("a = $1 AND c LIKE $3 LIMIT $4 AND (x, id) > ($5, $6)"),
            "a = $1 AND c LIKE $2 LIMIT $3 AND (x, id) > ($4, $5)"
        );
        assert_eq!(renumber("a = $1 LIMIT $4"), "a = $1 LIMIT $2");
    }

    #[test]
    fn a_cursor_is_tied_to_its_sort_and_refuses_tampering() {
        let row = CampaignRow {
            id: "c1".into(),
            name: "n".into(),
            status: "active".into(),
            budget: "10.50".into(),
            impressions: 7,
            clicks: 0,
            conversions: 0,
            created_at: Utc::now(),
            first_seen_at: Utc::now(),
            updated_at: Utc::now(),
            synced_at: None,
            removed_at: None,
            last_run_id: 1,
            raw: None,
        };
        let by_budget: Sort = "-budget".parse().unwrap();
        let cursor = encode_cursor(by_budget, &row);
        let (value, id) = decode_cursor(&cursor, by_budget).unwrap();
        assert!(matches!(value, Value::Text(ref t) if t == "10.50"));
        assert_eq!(id, "c1");
        assert!(decode_cursor(&cursor, "budget".parse().unwrap()).is_err());
        assert!(decode_cursor("not a cursor", by_budget).is_err());
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"s":"-budget","v":"1; DROP TABLE x","id":"c"}"#);
        assert!(decode_cursor(&forged, by_budget).is_err());
    }
}
