//! One mapping function per row type for both databases: [`AnyRow`] reads a column of a
//! PostgreSQL or SQLite row, timestamps included (`TIMESTAMPTZ` on one, RFC 3339 text on the
//! other), so only the query execution differs between them.

use adsync_store::{StoreError, sqlite_opt_ts};
use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow, sqlite::SqliteRow};

use crate::{Result, ServiceError};

/// A row of either database, read by column name.
pub(crate) trait AnyRow {
    fn int(&self, col: &str) -> Result<i64>;
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn flag(&self, col: &str) -> Result<bool>;
    fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>>;

    /// A timestamp that must be there.
    fn time(&self, col: &str) -> Result<DateTime<Utc>> {
        self.opt_time(col)?
            .ok_or_else(|| ServiceError::Store(StoreError::Corrupt(format!("{col} is NULL"))))
    }
}

macro_rules! any_row {
    ($row:ty, $time:expr) => {
        impl AnyRow for $row {
            fn int(&self, col: &str) -> Result<i64> {
                Ok(self.try_get(col)?)
            }
            fn text(&self, col: &str) -> Result<String> {
                Ok(self.try_get(col)?)
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                Ok(self.try_get(col)?)
            }
            fn flag(&self, col: &str) -> Result<bool> {
                Ok(self.try_get(col)?)
            }
            fn opt_time(&self, col: &str) -> Result<Option<DateTime<Utc>>> {
                $time(self, col)
            }
        }
    };
}

any_row!(PgRow, |r: &PgRow,
                 col: &str|
 -> Result<Option<DateTime<Utc>>> {
    Ok(r.try_get(col)?)
});
any_row!(SqliteRow, |r: &SqliteRow,
                     col: &str|
 -> Result<Option<DateTime<Utc>>> {
    Ok(sqlite_opt_ts(r, col)?)
});
