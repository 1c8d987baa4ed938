//! Dead-letter changes made through the API, audited in their transaction.

use adsync_store::{Store, in_transaction};
use chrono::Utc;

use crate::{
    Result,
    audit::{self, Actor, Change},
};

/// Dismisses unresolved dead letters of `tenant` (`ids`, or all when empty) and records who
/// did it in the same transaction. Returns how many were dismissed.
pub async fn dismiss(store: &Store, tenant: &str, ids: &[i64], actor: &Actor) -> Result<u64> {
    let detail = serde_json::json!({ "ids": ids, "all": ids.is_empty() });
    let mut change = Change {
        action: "dead_letter.dismiss",
        target_type: "tenant",
        target_id: tenant,
        tenant_id: Some(tenant),
        detail: None,
    };
    let now = Utc::now();
    match store {
        Store::Postgres(p) => {
            let mut tx = adsync_store::tx::begin_pg(p).await?;
            let n = in_transaction::dismiss_dead_letters_pg(&mut *tx, tenant, ids, now).await?;
            change.detail = Some(serde_json::json!({ "request": detail, "dismissed": n }));
            audit::record_pg(&mut tx, actor, &change).await?;
            tx.commit().await?;
            Ok(n)
        }
        Store::Sqlite(p) => {
            let mut tx = adsync_store::tx::begin_sqlite(p).await?;
            let n = in_transaction::dismiss_dead_letters_sqlite(&mut *tx, tenant, ids, now).await?;
            change.detail = Some(serde_json::json!({ "request": detail, "dismissed": n }));
            audit::record_sqlite(&mut tx, actor, &change).await?;
            tx.commit().await?;
            Ok(n)
        }
    }
}
