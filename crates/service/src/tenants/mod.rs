//! Tenants (ad accounts): settings, validated before anything is written; credentials sealed
//! by the [`Keyring`] and never returned; every change audited in its transaction.

mod rows;
mod validate;

use std::sync::Arc;

use adsync_domain::RateLimit;
use adsync_store::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    Result, ServiceError,
    audit::{Actor, Change},
    schedule::Schedule,
    vault::{Credentials, Keyring},
};

pub use validate::{normalize_api_url, validate_name};

/// A tenant as the API shows it: never its credentials.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    /// Id (`t_` + 16 hex digits).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The platform's base URL.
    pub api_url: String,
    /// The client id sent as `X-Client-ID`; the rate budget is per (api_url, client_id).
    pub client_id: String,
    /// `N/W`, e.g. `10/60s`.
    pub rate_limit: String,
    /// Campaigns per page asked for.
    pub page_size: u64,
    /// Cron expression (5 fields, or 6 with seconds first), or none (runs only when asked).
    pub schedule: Option<String>,
    /// IANA time zone of the schedule.
    pub time_zone: String,
    /// A paused tenant is neither scheduled nor claimed.
    pub paused: bool,
    /// The next scheduled run (the cron time plus this tenant's fixed jitter).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last tick that fired.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// Ticks skipped because a run was still queued or running.
    pub ticks_skipped: i64,
    /// Whether credentials are stored (they are never shown).
    pub has_credentials: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    /// The rate limit, parsed (validated when written).
    pub fn limit(&self) -> RateLimit {
        self.rate_limit.parse().unwrap_or_default()
    }
}

/// What a new tenant needs.
#[derive(Debug)]
pub struct NewTenant {
    /// Display name.
    pub name: String,
    /// The platform's base URL.
    pub api_url: String,
    /// Client id; `None`: `adsync-<tenant id>` (a budget of its own).
    pub client_id: Option<String>,
    /// `N/W`; `None`: the platform's default, 10/60s.
    pub rate_limit: Option<String>,
    /// `None`: 100.
    pub page_size: Option<u64>,
    /// Cron; `None`: runs only when asked.
    pub schedule: Option<String>,
    /// `None`: UTC.
    pub time_zone: Option<String>,
    /// Start paused.
    pub paused: bool,
    /// The platform login.
    pub credentials: Credentials,
}

/// A change to a tenant: `None` leaves a field as it is; `schedule: Some(None)` removes the
/// schedule.
#[derive(Debug, Default)]
pub struct TenantPatch {
    /// New name.
    pub name: Option<String>,
    /// New base URL.
    pub api_url: Option<String>,
    /// New client id.
    pub client_id: Option<String>,
    /// New rate limit.
    pub rate_limit: Option<String>,
    /// New page size.
    pub page_size: Option<u64>,
    /// New schedule, or none.
    pub schedule: Option<Option<String>>,
    /// New time zone.
    pub time_zone: Option<String>,
    /// Pause or resume.
    pub paused: Option<bool>,
    /// New credentials (write-only).
    pub credentials: Option<Credentials>,
}

/// The validated settings of a tenant, as written.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub name: String,
    pub api_url: String,
    pub client_id: String,
    pub limit: RateLimit,
    pub page_size: u64,
    pub schedule: Option<Schedule>,
    pub paused: bool,
}

impl Settings {
    fn next_run_at(&self, jitter_ms: i64, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.paused {
            return None;
        }
        self.schedule
            .as_ref()
            .and_then(|s| s.next_after(after, jitter_ms))
    }
}

/// Tenants in a store's database, with the keyring that seals their credentials.
#[derive(Clone)]
pub struct Tenants {
    store: Store,
    keyring: Arc<Keyring>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("keyring", &self.keyring.current_id())
            .finish()
    }
}

fn new_id() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

/// A fixed jitter per tenant, up to `max_ms`, so that tenants on one schedule do not all
/// start at the same second (derived from the id: stable across restarts).
fn jitter_for(id: &str, max_ms: i64) -> i64 {
    use sha2::{Digest, Sha256};
    if max_ms <= 0 {
        return 0;
    }
    let h = Sha256::digest(id.as_bytes());
    let n = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    (n % max_ms as u64) as i64
}

impl Tenants {
    /// Tenants of `store`, sealed with `keyring`.
    pub fn new(store: Store, keyring: Arc<Keyring>) -> Self {
        Self { store, keyring }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The keyring.
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }

    /// Creates a tenant (validated first; nothing is written when anything is wrong).
    pub async fn create(&self, new: NewTenant, actor: Option<&Actor>) -> Result<Tenant> {
        let id = new_id();
        let settings = Settings {
            name: validate_name(&new.name)?,
            api_url: normalize_api_url(&new.api_url)?,
            client_id: match new.client_id {
                Some(c) => validate::client_id(&c)?,
                None => format!("adsync-{id}"),
            },
            limit: validate::rate_limit(new.rate_limit.as_deref().unwrap_or("10/60s"))?,
            page_size: validate::page_size(new.page_size.unwrap_or(100))?,
            schedule: new
                .schedule
                .as_deref()
                .map(|c| Schedule::parse(c, new.time_zone.as_deref().unwrap_or("UTC")))
                .transpose()?,
            paused: new.paused,
        };
        if new.schedule.is_none()
            && let Some(tz) = &new.time_zone
        {
            Schedule::parse_zone(tz)?;
        }
        validate::credentials(&new.credentials)?;
        let sealed = self.keyring.seal(&id, &new.credentials)?;
        let jitter = settings
            .schedule
            .as_ref()
            .map_or(0, |s| jitter_for(&id, s.jitter_cap_ms()));
        let now = Utc::now();
        let next = settings.next_run_at(jitter, now);
        let detail = serde_json::json!({
            "name": settings.name, "api_url": settings.api_url, "client_id": settings.client_id,
            "rate_limit": settings.limit.to_string(), "page_size": settings.page_size,
            "schedule": settings.schedule.as_ref().map(|s| s.cron()),
            "paused": settings.paused,
        });
        let change = Change {
            action: "tenant.create",
            target_type: "tenant",
            target_id: &id,
            tenant_id: Some(&id),
            detail: Some(detail),
        };
        rows::insert(
            &self.store,
            &id,
            &settings,
            &sealed,
            jitter,
            next,
            now,
            actor.map(|a| (a, &change)),
        )
        .await?;
        self.get(&id).await
    }

    /// One tenant.
    pub async fn get(&self, id: &str) -> Result<Tenant> {
        rows::get(&self.store, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("tenant {id}")))
    }

    /// Every tenant, by name.
    pub async fn list(&self) -> Result<Vec<Tenant>> {
        rows::list(&self.store).await
    }

    /// The tenants `scope` sees: every one for an admin, its own (if it still exists) for a
    /// tenant key.
    pub async fn visible(&self, scope: &crate::api_keys::Scope) -> Result<Vec<Tenant>> {
        match scope {
            crate::api_keys::Scope::Admin => self.list().await,
            crate::api_keys::Scope::Tenant(id) => match self.get(id).await {
                Ok(t) => Ok(vec![t]),
                Err(ServiceError::NotFound(_)) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
        }
    }

    /// Changes a tenant (validated first). A new schedule or time zone, or a resume,
    /// recomputes the next run.
    pub async fn update(
        &self,
        id: &str,
        patch: TenantPatch,
        actor: Option<&Actor>,
    ) -> Result<Tenant> {
        let current = self.get(id).await?;
        let mut fields = serde_json::Map::new();
        let name = match &patch.name {
            Some(n) => {
                fields.insert("name".into(), n.clone().into());
                validate_name(n)?
            }
            None => current.name.clone(),
        };
        let api_url = match &patch.api_url {
            Some(u) => {
                let u = normalize_api_url(u)?;
                // The stored password goes to whatever platform the tenant names: moving it
                // elsewhere without new credentials would let anyone who may edit the tenant
                // read them back from a server of theirs.
                if u != current.api_url && patch.credentials.is_none() {
                    return Err(ServiceError::Invalid(
                        "changing api_url needs the platform's credentials in the same request \
                         (the stored ones are never sent to a new address)"
                            .into(),
                    ));
                }
                fields.insert("api_url".into(), u.clone().into());
                u
            }
            None => current.api_url.clone(),
        };
        let client_id = match &patch.client_id {
            Some(c) => {
                fields.insert("client_id".into(), c.clone().into());
                validate::client_id(c)?
            }
            None => current.client_id.clone(),
        };
        let limit = match &patch.rate_limit {
            Some(r) => {
                fields.insert("rate_limit".into(), r.clone().into());
                validate::rate_limit(r)?
            }
            None => current.limit(),
        };
        let page_size = match patch.page_size {
            Some(p) => {
                fields.insert("page_size".into(), p.into());
                validate::page_size(p)?
            }
            None => current.page_size,
        };
        let zone = patch.time_zone.clone().unwrap_or(current.time_zone.clone());
        if patch.time_zone.is_some() {
            fields.insert("time_zone".into(), zone.clone().into());
            Schedule::parse_zone(&zone)?;
        }
        let cron = match &patch.schedule {
            Some(s) => {
                fields.insert("schedule".into(), s.clone().into());
                s.clone()
            }
            None => current.schedule.clone(),
        };
        let schedule = cron
            .as_deref()
            .map(|c| Schedule::parse(c, &zone))
            .transpose()?;
        let paused = patch.paused.unwrap_or(current.paused);
        if let Some(p) = patch.paused {
            fields.insert("paused".into(), p.into());
        }
        let sealed = match &patch.credentials {
            Some(c) => {
                validate::credentials(c)?;
                fields.insert("credentials".into(), "changed".into());
                Some(self.keyring.seal(id, c)?)
            }
            None => None,
        };
        let settings = Settings {
            name,
            api_url,
            client_id,
            limit,
            page_size,
            schedule,
            paused,
        };
        let reschedule = patch.schedule.is_some()
            || patch.time_zone.is_some()
            || (patch.paused.is_some() && patch.paused != Some(current.paused));
        let jitter = settings
            .schedule
            .as_ref()
            .map_or(0, |s| jitter_for(id, s.jitter_cap_ms()));
        let next = if reschedule {
            Some(settings.next_run_at(jitter, Utc::now()))
        } else {
            None
        };
        let action = match (patch.paused, fields.len()) {
            (Some(true), 1) => "tenant.pause",
            (Some(false), 1) => "tenant.resume",
            _ => "tenant.update",
        };
        let change = Change {
            action,
            target_type: "tenant",
            target_id: id,
            tenant_id: Some(id),
            detail: Some(serde_json::Value::Object(fields)),
        };
        let found = rows::update(
            &self.store,
            id,
            &settings,
            sealed.as_ref(),
            next.map(|n| (jitter, n)),
            Utc::now(),
            actor.map(|a| (a, &change)),
        )
        .await?;
        if !found {
            return Err(ServiceError::NotFound(format!("tenant {id}")));
        }
        self.get(id).await
    }

    /// Deletes a tenant: its settings, credentials and API keys, and its data (runs,
    /// campaigns, metrics, dead letters). A running run is fenced out (its lease's writes
    /// fail) and stops.
    pub async fn delete(&self, id: &str, actor: Option<&Actor>) -> Result<()> {
        let change = Change {
            action: "tenant.delete",
            target_type: "tenant",
            target_id: id,
            tenant_id: Some(id),
            detail: None,
        };
        if rows::delete(&self.store, id, actor.map(|a| (a, &change))).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("tenant {id}")))
        }
    }

    /// The tenant's credentials in the clear, for a worker about to sync it.
    pub async fn credentials(&self, id: &str) -> Result<Credentials> {
        let sealed = rows::sealed(&self.store, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("credentials of tenant {id}")))?;
        Ok(self.keyring.open(id, &sealed)?)
    }

    /// Several tenants with their credentials opened (for the runs a worker just claimed):
    /// a few queries whatever their number. A tenant that is gone or has no credentials is
    /// left out; one whose credentials do not open is an error for it alone (`Err` in its
    /// place), so that the others' runs still start.
    pub async fn for_runs(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, Result<(Tenant, Credentials)>>> {
        Ok(rows::with_sealed(&self.store, ids)
            .await?
            .into_iter()
            .filter_map(|(tenant, sealed)| {
                let sealed = sealed?;
                let opened = self
                    .keyring
                    .open(&tenant.id, &sealed)
                    .map_err(ServiceError::from);
                Some((tenant.id.clone(), opened.map(|c| (tenant, c))))
            })
            .collect())
    }

    /// Rewraps every tenant's data key under the keyring's current master key (the field
    /// ciphertexts do not change). Returns (rewrapped, already current).
    pub async fn rotate_keys(&self) -> Result<(usize, usize)> {
        let mut done = (0, 0);
        for id in rows::ids_with_secrets(&self.store).await? {
            let Some(sealed) = rows::sealed(&self.store, &id).await? else {
                continue;
            };
            match self.keyring.rewrap(&id, &sealed)? {
                Some(new) => {
                    rows::replace_sealed(&self.store, &id, &sealed.key_id, &new).await?;
                    done.0 += 1;
                }
                None => done.1 += 1,
            }
        }
        Ok(done)
    }

    /// Tenants whose next run is due at `now`, with their next tick after it: for the
    /// scheduler.
    pub async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<(Tenant, i64)>> {
        rows::due(&self.store, now, limit).await
    }

    /// Fires due ticks (from [`Tenants::due`]) in one transaction: each tenant's next run
    /// moves from the `next_run_at` it was read with to its next tick after `now` if nobody
    /// else moved it (compare-and-set: of several schedulers, one fires each tick), its run is
    /// queued in the same transaction, and a tick finding a run still active is counted
    /// skipped. Outcomes in the order of `due`; `None`: another scheduler fired it (or the
    /// tenant has no next run). A tenant whose schedule no longer parses is left out (logged).
    pub async fn fire_ticks(
        &self,
        due: &[(Tenant, i64)],
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<crate::queue::Enqueued>>> {
        let mut ticks = Vec::with_capacity(due.len());
        let mut at = Vec::with_capacity(due.len());
        for (i, (tenant, jitter_ms)) in due.iter().enumerate() {
            let Some(expected) = tenant.next_run_at else {
                continue;
            };
            let schedule = match tenant
                .schedule
                .as_deref()
                .map(|c| Schedule::parse(c, &tenant.time_zone))
                .transpose()
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(tenant = %tenant.id, error = %e, "schedule does not parse; tick not fired");
                    continue;
                }
            };
            let next = schedule.and_then(|s| s.next_after(now, *jitter_ms));
            ticks.push(rows::Tick {
                tenant,
                expected,
                next,
            });
            at.push(i);
        }
        let fired = match rows::fire_ticks(&self.store, &ticks, now).await {
            Ok(fired) => fired,
            // A passing outage fails them all alike: the next tick tries again. Any other
            // failure may be one tenant's, which must not hold every other tick.
            Err(e) if ticks.len() > 1 && !e.is_transient() => {
                tracing::warn!(error = %e, ticks = ticks.len(), "firing the due ticks together failed; firing them one by one");
                let mut fired = Vec::with_capacity(ticks.len());
                for tick in &ticks {
                    match rows::fire_ticks(&self.store, std::slice::from_ref(tick), now).await {
                        Ok(mut one) => fired.push(one.pop().flatten()),
                        Err(e) => {
                            tracing::error!(tenant = %tick.tenant.id, error = %e, "scheduled tick not fired");
                            fired.push(None);
                        }
                    }
                }
                fired
            }
            Err(e) => return Err(e),
        };
        let mut outcomes = vec![None; due.len()];
        for (i, outcome) in at.into_iter().zip(fired) {
            outcomes[i] = outcome;
        }
        Ok(outcomes)
    }
}
