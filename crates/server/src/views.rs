//! The API's bodies, requests and responses, with their OpenAPI schemas. Responses mirror the
//! service's types field by field; each `From` destructures its source without `..`, so a
//! field added to the service fails to compile here until the API decides whether to show it.
//! Requests refuse unknown fields (a typo is a 422, not a silent no-op).

use adsync_service::{
    api_keys::ApiKey,
    audit::AuditEntry,
    reads::{CampaignPage, CampaignRow, MetricPoint},
    tenants::Tenant,
};
use adsync_store::{DeadLetter, RunRecord, RunStatus, StoredWarning};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `Some(value)` for a field that is present, `null` included, so that "absent" (`None`)
/// and "null" (`Some(None)`) differ.
fn present<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

// ---- Tenants ------------------------------------------------------------------------------

/// A tenant (an ad account). Its credentials are never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// Id (`t_` + 16 hex digits).
    #[schema(example = "t_0123456789abcdef")]
    pub id: String,
    /// Display name.
    pub name: String,
    /// The platform's base URL.
    pub api_url: String,
    /// Client id sent as `X-Client-ID`; the rate budget is shared per (api_url, client_id).
    pub client_id: String,
    /// `N/W`, e.g. `10/60s`.
    #[schema(example = "10/60s")]
    pub rate_limit: String,
    /// Campaigns per page asked for.
    pub page_size: u64,
    /// Cron expression (5 fields, or 6 with seconds first); `null`: runs only when asked.
    pub schedule: Option<String>,
    /// IANA time zone of the schedule.
    pub time_zone: String,
    /// A paused tenant is neither scheduled nor worked on.
    pub paused: bool,
    /// The next scheduled run.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last scheduled tick that fired.
    pub last_tick_at: Option<DateTime<Utc>>,
    /// Ticks skipped because a run was still queued or running.
    pub ticks_skipped: i64,
    /// Whether credentials are stored (they are write-only).
    pub has_credentials: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        let Tenant {
            id,
            name,
            api_url,
            client_id,
            rate_limit,
            page_size,
            schedule,
            time_zone,
            paused,
            next_run_at,
            last_tick_at,
            ticks_skipped,
            has_credentials,
            created_at,
            updated_at,
        } = t;
        Self {
            id,
            name,
            api_url,
            client_id,
            rate_limit,
            page_size,
            schedule,
            time_zone,
            paused,
            next_run_at,
            last_tick_at,
            ticks_skipped,
            has_credentials,
            created_at,
            updated_at,
        }
    }
}

/// Tenants.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    /// By name.
    pub data: Vec<TenantView>,
}

/// The platform login of a tenant: write-only, encrypted at rest.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    /// Login email.
    pub email: String,
    /// Password (never returned, never logged).
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

impl From<CredentialsBody> for adsync_service::vault::Credentials {
    fn from(c: CredentialsBody) -> Self {
        adsync_service::vault::Credentials::new(c.email, c.password)
    }
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenantBody {
    /// Display name.
    pub name: String,
    /// The platform's base URL (http or https).
    #[schema(example = "https://ads.example.com")]
    pub api_url: String,
    /// Default: `adsync-<tenant id>` (a rate budget of its own).
    pub client_id: Option<String>,
    /// `N/W`; default `10/60s`.
    pub rate_limit: Option<String>,
    /// Default 100.
    pub page_size: Option<u64>,
    /// Cron (5 fields, or 6 with seconds first); default none (runs only when asked).
    #[schema(example = "*/15 * * * *")]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule; default UTC.
    pub time_zone: Option<String>,
    /// Start paused; default false.
    #[serde(default)]
    pub paused: bool,
    /// The platform login.
    pub credentials: CredentialsBody,
}

impl From<NewTenantBody> for adsync_service::tenants::NewTenant {
    fn from(b: NewTenantBody) -> Self {
        Self {
            name: b.name,
            api_url: b.api_url,
            client_id: b.client_id,
            rate_limit: b.rate_limit,
            page_size: b.page_size,
            schedule: b.schedule,
            time_zone: b.time_zone,
            paused: b.paused,
            credentials: b.credentials.into(),
        }
    }
}

/// A change to a tenant: any subset of the fields of a new tenant. `schedule: null` removes
/// the schedule; no other field may be null.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatchBody {
    /// Display name.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// The platform's base URL.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub api_url: Option<Option<String>>,
    /// Client id.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub client_id: Option<Option<String>>,
    /// `N/W`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub rate_limit: Option<Option<String>>,
    /// Page size.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub page_size: Option<Option<u64>>,
    /// Cron, or `null` to remove the schedule.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub schedule: Option<Option<String>>,
    /// IANA time zone.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub time_zone: Option<Option<String>>,
    /// Pause or resume.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>)]
    pub paused: Option<Option<bool>>,
    /// New credentials (write-only).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<CredentialsBody>)]
    pub credentials: Option<Option<CredentialsBody>>,
}

impl TenantPatchBody {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.api_url.is_none()
            && self.client_id.is_none()
            && self.rate_limit.is_none()
            && self.page_size.is_none()
            && self.schedule.is_none()
            && self.time_zone.is_none()
            && self.paused.is_none()
            && self.credentials.is_none()
    }

    /// The service's patch; `Err(field)` when a field other than `schedule` is null.
    pub fn into_patch(self) -> Result<adsync_service::tenants::TenantPatch, &'static str> {
        fn value<T>(
            field: Option<Option<T>>,
            name: &'static str,
        ) -> Result<Option<T>, &'static str> {
            match field {
                None => Ok(None),
                Some(Some(v)) => Ok(Some(v)),
                Some(None) => Err(name),
            }
        }
        Ok(adsync_service::tenants::TenantPatch {
            name: value(self.name, "name")?,
            api_url: value(self.api_url, "api_url")?,
            client_id: value(self.client_id, "client_id")?,
            rate_limit: value(self.rate_limit, "rate_limit")?,
            page_size: value(self.page_size, "page_size")?,
            schedule: self.schedule,
            time_zone: value(self.time_zone, "time_zone")?,
            paused: value(self.paused, "paused")?,
            credentials: value(self.credentials, "credentials")?.map(Into::into),
        })
    }
}

// ---- Runs ---------------------------------------------------------------------------------

/// What a run counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountersView {
    /// Pages stored (every pass).
    pub pages: i64,
    /// Records the platform sent (duplicates included).
    pub campaigns_seen: i64,
    /// Distinct valid campaigns stored.
    pub campaigns_stored: i64,
    /// Campaigns whose sync call succeeded.
    pub campaigns_synced: i64,
    /// Unresolved dead letters of the run.
    pub dead_lettered: i64,
    /// Campaigns marked removed (absent from a complete listing).
    pub campaigns_removed: i64,
    /// Removed campaigns that came back.
    pub campaigns_returned: i64,
    /// Warnings (see `warnings`).
    pub warnings: i64,
    /// HTTP requests to the platform.
    pub requests: i64,
    /// Retries after transient failures.
    pub retries: i64,
    /// 429 answers.
    pub rate_limited: i64,
    /// Tokens obtained.
    pub token_refreshes: i64,
    /// Seconds requests waited on the rate limiter, summed over requests.
    pub limiter_wait_seconds: f64,
}

/// Where a run's listing stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListingView {
    /// The pass (a listing the platform changed under it is listed again).
    pub pass: u32,
    /// The next page to fetch.
    pub next_page: u64,
    /// The platform's latest `total`.
    pub reported_total: Option<u64>,
    /// The listing is over.
    pub done: bool,
    /// The last pass saw everything with nothing moving.
    pub complete: bool,
    /// Times the platform's data moved during the listing.
    pub drift_events: u32,
}

/// Something the platform did that the run worked around.
#[derive(Debug, Serialize, ToSchema)]
pub struct WarningView {
    /// Label, e.g. `unknown_status`.
    pub kind: String,
    /// The first occurrence, in words.
    pub message: String,
    /// How many times.
    pub occurrences: i64,
    /// When first seen.
    pub first_seen_at: DateTime<Utc>,
}

impl From<StoredWarning> for WarningView {
    fn from(w: StoredWarning) -> Self {
        let StoredWarning {
            kind,
            message,
            occurrences,
            first_seen_at,
        } = w;
        Self {
            kind,
            message,
            occurrences,
            first_seen_at,
        }
    }
}

/// A sync run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// Run id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// `queued`, `running`, `succeeded`, `partial`, `failed`, `interrupted`, `cancelled`.
    #[schema(example = "queued")]
    pub status: String,
    /// Why an interrupted run stopped: `cancelled`, `platform_down`, `database_down`,
    /// `lease_lost`.
    pub stop_reason: Option<String>,
    /// `cli`, `schedule`, `api:<key id>`, `retry`.
    pub requested_by: Option<String>,
    /// When it was (last) queued.
    pub queued_at: Option<DateTime<Utc>>,
    /// When a worker first started it (`null` while it waits for its first worker).
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to end (or to now while it runs).
    pub duration_seconds: Option<f64>,
    /// Seconds workers spent on it, summed over resumes.
    pub active_seconds: f64,
    /// Of which, seconds the rate limiter held requests back.
    pub throttled_seconds: f64,
    /// The least time the platform's rate limit allows for what it reported.
    pub floor_seconds: Option<f64>,
    /// `active_seconds / floor_seconds`: 1.0 is as fast as the platform allows.
    pub floor_ratio: Option<f64>,
    /// The worker (`host:pid`) that holds or last held it.
    pub worker: Option<String>,
    /// The worker's last heartbeat.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// When its lease runs out unless renewed.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Claims by workers (the first, and each take-over after a lease ran out).
    pub attempts: i64,
    /// Take-overs by a new process.
    pub resumes: i64,
    /// When a cancellation was asked while it ran.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The platform's base URL (or `simulator`).
    pub platform: Option<String>,
    /// Page size it lists with.
    pub page_size: u64,
    /// Why it failed or stopped.
    pub error: Option<String>,
    /// Counters.
    pub counters: CountersView,
    /// The listing checkpoint.
    pub listing: ListingView,
    /// What the platform did that the run worked around (on `GET /runs/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<WarningView>>,
}

impl From<RunRecord> for RunView {
    fn from(r: RunRecord) -> Self {
        let floor_ratio = r.floor_ratio();
        let RunRecord {
            id,
            tenant_id,
            status,
            stop_reason,
            started_at,
            finished_at,
            platform,
            page_size,
            cursor,
            resumes,
            owner,
            heartbeat_at,
            lease_epoch: _,
            lease_expires_at,
            counters,
            active_seconds,
            throttled_seconds,
            floor_seconds,
            error,
            requested_by,
            queued_at,
            attempts,
            cancel_requested_at,
        } = r;
        // A queued run's start time is its queueing time until a worker claims it.
        let started = !(status == RunStatus::Queued && attempts == 0);
        let duration_seconds = match (started, status, finished_at) {
            (true, _, Some(end)) => Some((end - started_at).as_seconds_f64().max(0.0)),
            (true, RunStatus::Running, None) => {
                Some((Utc::now() - started_at).as_seconds_f64().max(0.0))
            }
            _ => None,
        };
        let c = counters;
        Self {
            id,
            tenant_id,
            status: status.as_str().to_owned(),
            stop_reason: stop_reason.map(|s| s.as_str().to_owned()),
            requested_by,
            queued_at,
            started_at: started.then_some(started_at),
            finished_at,
            duration_seconds,
            active_seconds,
            throttled_seconds,
            floor_seconds,
            floor_ratio,
            worker: owner,
            heartbeat_at,
            lease_expires_at,
            attempts,
            resumes,
            cancel_requested_at,
            platform,
            page_size,
            error,
            counters: CountersView {
                pages: c.pages,
                campaigns_seen: c.campaigns_seen,
                campaigns_stored: c.campaigns_stored,
                campaigns_synced: c.campaigns_synced,
                dead_lettered: c.dead_lettered,
                campaigns_removed: c.campaigns_removed,
                campaigns_returned: c.campaigns_returned,
                warnings: c.warnings,
                requests: c.requests,
                retries: c.retries,
                rate_limited: c.rate_limited,
                token_refreshes: c.token_refreshes,
                limiter_wait_seconds: c.limiter_wait_seconds,
            },
            listing: ListingView {
                pass: cursor.pass,
                next_page: cursor.next_page,
                reported_total: cursor.reported_total,
                done: cursor.done,
                complete: cursor.complete,
                drift_events: cursor.drift_events,
            },
            warnings: None,
        }
    }
}

/// Runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// The runs.
    pub data: Vec<RunView>,
}

/// A run request that was accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    /// The run.
    pub id: i64,
    /// Always `queued`.
    #[schema(example = "queued")]
    pub status: &'static str,
    /// `queued` (a new run) or `requeued` (the tenant's interrupted run, resumed from its
    /// checkpoint).
    #[schema(example = "queued")]
    pub outcome: &'static str,
}

/// What a cancellation did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelView {
    /// The run.
    pub id: i64,
    /// `cancelled` (it was queued or interrupted), `requested` (it is running: its worker
    /// stops it within seconds), `already_finished` (nothing changed).
    #[schema(example = "cancelled")]
    pub outcome: &'static str,
    /// The run's status now.
    pub status: String,
}

/// `limit` of a run listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// At most this many (1..=200, default 20).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

// ---- Campaigns ----------------------------------------------------------------------------

/// A stored campaign.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Status, verbatim from the platform.
    pub status: String,
    /// Budget, exact, two decimals.
    #[schema(example = "1100.50")]
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
    pub last_run_id: i64,
    /// The record as last received from the platform (numbers exact).
    #[schema(value_type = Option<Object>)]
    pub raw: Option<serde_json::Value>,
}

impl From<CampaignRow> for CampaignView {
    fn from(c: CampaignRow) -> Self {
        let CampaignRow {
            id,
            name,
            status,
            budget,
            impressions,
            clicks,
            conversions,
            created_at,
            first_seen_at,
            updated_at,
            synced_at,
            removed_at,
            last_run_id,
            raw,
        } = c;
        Self {
            id,
            name,
            status,
            budget,
            impressions,
            clicks,
            conversions,
            created_at,
            first_seen_at,
            updated_at,
            synced_at,
            removed_at,
            last_run_id,
            raw,
        }
    }
}

/// A page of campaigns.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignPageView {
    /// The campaigns.
    pub data: Vec<CampaignView>,
    /// Pass as `cursor` (with the same `sort`) for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl From<CampaignPage> for CampaignPageView {
    fn from(p: CampaignPage) -> Self {
        Self {
            data: p.data.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
        }
    }
}

/// Filters, order and page of a campaign listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CampaignsQuery {
    /// Exact status.
    pub status: Option<String>,
    /// Case-insensitive substring of the name (`%` and `_` match themselves).
    pub q: Option<String>,
    /// `id` (default), `name`, `status`, `budget`, `impressions`, `clicks`, `conversions`,
    /// `created_at`, `updated_at`; a leading `-` sorts largest first. Ties go by id.
    #[param(
        example = "-impressions",
        pattern = "^-?(id|name|status|budget|impressions|clicks|conversions|created_at|updated_at)$"
    )]
    pub sort: Option<String>,
    /// 1..=500, default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `true`: only campaigns the platform no longer lists; `false`: only listed ones.
    pub removed: Option<bool>,
    /// `true`: listed and removed campaigns alike (when `removed` is not given).
    pub include_removed: Option<bool>,
}

/// One run's observation of a campaign's counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricPointView {
    /// The run.
    pub run_id: i64,
    /// When the run stored it.
    pub observed_at: DateTime<Utc>,
    /// Counter.
    pub impressions: i64,
    /// Counter.
    pub clicks: i64,
    /// Counter.
    pub conversions: i64,
}

impl From<MetricPoint> for MetricPointView {
    fn from(m: MetricPoint) -> Self {
        let MetricPoint {
            run_id,
            observed_at,
            impressions,
            clicks,
            conversions,
        } = m;
        Self {
            run_id,
            observed_at,
            impressions,
            clicks,
            conversions,
        }
    }
}

/// A campaign's metric history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricHistory {
    /// The campaign.
    pub campaign_id: String,
    /// One point per run that stored it.
    pub data: Vec<MetricPointView>,
}

/// How much history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    /// The last this many runs (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

// ---- Dead letters -------------------------------------------------------------------------

/// A record that could not be listed, stored or synced.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    /// Id.
    pub id: i64,
    /// Tenant.
    pub tenant_id: String,
    /// The last run that failed it.
    pub run_id: i64,
    /// Campaign id (`page P #I` for a record without a usable id, `page P` for a page).
    pub campaign_id: String,
    /// `listing`, `validation` or `sync`.
    pub stage: String,
    /// The raw record (or page) as received, as text.
    pub payload: String,
    /// Why.
    pub reason: String,
    /// Failures so far.
    pub attempts: i64,
    /// First failure.
    pub first_failed_at: DateTime<Utc>,
    /// Latest failure.
    pub last_failed_at: DateTime<Utc>,
    /// Resolved.
    pub resolved: bool,
    /// How: `synced`, `stored`, `listed`, `removed`, `dismissed`.
    pub resolution: Option<String>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        let DeadLetter {
            id,
            tenant_id,
            run_id,
            campaign_id,
            stage,
            payload,
            reason,
            attempts,
            first_failed_at,
            last_failed_at,
            resolved,
            resolution,
        } = d;
        Self {
            id,
            tenant_id,
            run_id,
            campaign_id,
            stage: stage.as_str().to_owned(),
            payload,
            reason,
            attempts,
            first_failed_at,
            last_failed_at,
            resolved,
            resolution: resolution.map(|r| r.as_str().to_owned()),
        }
    }
}

/// Dead letters, latest failure first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterList {
    /// The letters.
    pub data: Vec<DeadLetterView>,
}

/// Which dead letters to show.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLettersQuery {
    /// Resolved ones too (default false).
    pub include_resolved: Option<bool>,
}

/// Which unresolved dead letters to dismiss: `{"ids": [...]}` or `{"all": true}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DismissBody {
    /// These letters.
    pub ids: Option<Vec<i64>>,
    /// Every unresolved letter of the tenant.
    pub all: Option<bool>,
}

/// What a dismissal did.
#[derive(Debug, Serialize, ToSchema)]
pub struct DismissedView {
    /// Letters dismissed (already resolved ones are left alone).
    pub dismissed: u64,
}

// ---- API keys -----------------------------------------------------------------------------

/// A new API key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKeyBody {
    /// A label (at most 200 characters).
    pub name: Option<String>,
}

/// An API key, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    /// Id (`key_` + 12 hex digits): what the audit log shows.
    pub id: String,
    /// Its tenant; `null`: an admin key.
    pub tenant_id: Option<String>,
    /// Label.
    pub name: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(k: ApiKey) -> Self {
        let ApiKey {
            id,
            tenant_id,
            name,
            created_at,
            revoked_at,
        } = k;
        Self {
            id,
            tenant_id,
            name,
            created_at,
            revoked_at,
        }
    }
}

/// API keys, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    /// The keys.
    pub data: Vec<ApiKeyView>,
}

/// A key just created: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// Id.
    pub id: String,
    /// The key: send it as `Authorization: Bearer <key>`. Shown once; only a hash is kept.
    #[schema(example = "adk_…")]
    pub key: String,
    /// Its tenant; `null`: an admin key.
    pub tenant_id: Option<String>,
    /// Label.
    pub name: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

// ---- Audit log ----------------------------------------------------------------------------

/// A recorded change.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    /// Sequence number.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The key id that made it (`admin` for the configured admin key).
    pub actor: String,
    /// `tenant.create`, `tenant.update`, `run.create`, `run.cancel`, `api_key.create`, ...
    pub action: String,
    /// `tenant`, `run`, `api_key`, `dead_letter`.
    pub target_type: String,
    /// Target id.
    pub target_id: String,
    /// Tenant concerned.
    pub tenant_id: Option<String>,
    /// The client's address.
    pub remote_addr: Option<String>,
    /// Details (never a secret).
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(a: AuditEntry) -> Self {
        let AuditEntry {
            id,
            at,
            actor,
            action,
            target_type,
            target_id,
            tenant_id,
            remote_addr,
            detail,
        } = a;
        Self {
            id,
            at,
            actor,
            action,
            target_type,
            target_id,
            tenant_id,
            remote_addr,
            detail,
        }
    }
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The entries.
    pub data: Vec<AuditEntryView>,
    /// Pass as `before` for the next (older) page; `null` on the last one.
    pub next_before: Option<i64>,
}

/// Which part of the audit log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries older than this id (`next_before` of the previous page).
    pub before: Option<i64>,
    /// 1..=1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// One tenant's entries (an admin key; a tenant key sees only its own anyway).
    pub tenant_id: Option<String>,
}
