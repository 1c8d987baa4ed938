//! The dashboard: a single page (plain HTML, CSS and JavaScript written for this project,
//! embedded in the binary: no build step, no third-party file, nothing fetched from the
//! internet) served at `/`, which signs in through [`crate::session`] and then uses only the
//! public API (`/api/v1/...`) and its WebSocket of run events. Its one endpoint of its own,
//! `GET /api/v1/overview`, is public API too: every tenant with its latest runs and counts in
//! a few grouped queries, so the overview of a thousand tenants is one request.

use std::collections::HashMap;

use adsync_service::{
    api_keys::Scope,
    budget::{self, BudgetKey, BudgetRow},
    reads::overview,
};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::Caller,
    error::{ApiResult, ErrorBody},
    views::RunView,
};

/// Runs per tenant in the overview's history (its sparkline).
const RECENT_RUNS: u32 = 12;

/// One run, as the overview shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunBrief {
    /// Run id.
    pub id: i64,
    /// `queued`, `running`, `succeeded`, `partial`, `failed`, `interrupted`, `cancelled`.
    pub status: String,
    /// When it started (or was queued).
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Wall time so far or in all, seconds.
    pub duration_seconds: Option<f64>,
    /// Active time over the platform's floor (1.0: as fast as the rate limit allows).
    pub floor_ratio: Option<f64>,
    /// Campaigns synced.
    pub synced: i64,
    /// 429s met.
    pub rate_limited: i64,
}

impl From<RunView> for RunBrief {
    fn from(r: RunView) -> Self {
        Self {
            id: r.id,
            status: r.status,
            started_at: r.started_at.or(r.queued_at),
            finished_at: r.finished_at,
            duration_seconds: r.duration_seconds,
            floor_ratio: r.floor_ratio,
            synced: r.counters.campaigns_synced,
            rate_limited: r.counters.rate_limited,
        }
    }
}

/// A tenant in the overview.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewTenant {
    /// Tenant id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Paused tenants are not scheduled.
    pub paused: bool,
    /// The schedule (cron), if any.
    pub schedule: Option<String>,
    /// Its time zone.
    pub time_zone: String,
    /// The next scheduled run.
    pub next_run_at: Option<DateTime<Utc>>,
    /// `N/W`, e.g. `10/60s`.
    pub rate_limit: String,
    /// The share of its client id's rate budget granted within the last window (0 to 1;
    /// shared with every tenant of the same platform and client id); `null` before any.
    pub budget_use: Option<f64>,
    /// 429s its client id's budget has seen, from every holder.
    pub budget_rate_limited: Option<i64>,
    /// Campaigns not marked removed.
    pub campaigns: i64,
    /// Dead letters not yet resolved.
    pub open_dead_letters: i64,
    /// Its latest runs, newest first (at most 12).
    pub recent_runs: Vec<RunBrief>,
}

/// Totals over the tenants shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct OverviewTotals {
    /// Tenants.
    pub tenants: usize,
    /// Of which paused.
    pub paused: usize,
    /// Campaigns not marked removed.
    pub campaigns: i64,
    /// Dead letters not yet resolved.
    pub open_dead_letters: i64,
    /// Runs started today (UTC) by status.
    pub runs_today: HashMap<String, i64>,
    /// 429s those runs met.
    pub rate_limited_today: i64,
}

/// The overview.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// When it was read.
    pub generated_at: DateTime<Utc>,
    /// Totals.
    pub totals: OverviewTotals,
    /// Every tenant the caller sees, by name.
    pub tenants: Vec<OverviewTenant>,
}

/// A worker holding runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerView {
    /// Its name (the lease owner).
    pub worker: String,
    /// Whether it is alive: its last beat is within its lease ttl, and none of its leases
    /// ran out.
    pub alive: bool,
    /// Runs it may hold at once (`null` for a worker known only from its leases).
    pub slots: Option<i64>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// Runs it holds.
    pub runs_held: usize,
    /// Their ids.
    pub runs: Vec<i64>,
    /// Seconds since its latest heartbeat.
    pub heartbeat_age_seconds: Option<f64>,
    /// Seconds since its oldest run started.
    pub oldest_run_seconds: Option<f64>,
}

/// Workers holding runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    /// By name.
    pub data: Vec<WorkerView>,
}

/// The dashboard's API endpoints (behind the key check).
pub(crate) fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_overview))
        .routes(routes!(list_workers))
}

/// Every worker (admin key): registered ones (each beats about every half lease; a worker that
/// stopped cleanly is gone), and any other that holds a lease. Alive while it beats and renews
/// its leases; how many runs each holds, and how old its heartbeat is.
#[utoipa::path(get, path = "/api/v1/workers", tag = "runs",
    responses(
        (status = 200, description = "Workers holding runs", body = WorkerList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "Not an admin key", body = ErrorBody),
    ))]
pub async fn list_workers(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<WorkerList>> {
    caller.require_admin()?;
    let now = Utc::now();
    let age = |t: Option<DateTime<Utc>>| t.map(|t| (now - t).as_seconds_f64().max(0.0));
    let (registered, holdings) = tokio::try_join!(
        adsync_service::workers::list(&s.service.store),
        overview::workers(&s.service.store),
    )?;
    let mut holdings: HashMap<String, overview::WorkerHolding> = holdings
        .into_iter()
        .map(|h| (h.worker.clone(), h))
        .collect();
    let leases_alive = |h: Option<&overview::WorkerHolding>| {
        h.is_none_or(|h| h.lease_expires_at.is_some_and(|e| e > now))
    };
    let mut data: Vec<WorkerView> = registered
        .into_iter()
        .map(|w| {
            let held = holdings.remove(&w.id);
            WorkerView {
                alive: w.alive && leases_alive(held.as_ref()),
                slots: Some(w.slots),
                started_at: Some(w.started_at),
                runs_held: held.as_ref().map_or(0, |h| h.runs.len()),
                heartbeat_age_seconds: age(held
                    .as_ref()
                    .and_then(|h| h.last_heartbeat)
                    .max(Some(w.seen_at))),
                oldest_run_seconds: age(held.as_ref().and_then(|h| h.oldest_started_at)),
                runs: held.map(|h| h.runs).unwrap_or_default(),
                worker: w.id,
            }
        })
        .collect();
    data.extend(holdings.into_values().map(|h| WorkerView {
        alive: leases_alive(Some(&h)),
        slots: None,
        started_at: None,
        runs_held: h.runs.len(),
        heartbeat_age_seconds: age(h.last_heartbeat),
        oldest_run_seconds: age(h.oldest_started_at),
        worker: h.worker,
        runs: h.runs,
    }));
    data.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(Json(WorkerList { data }))
}

/// Every tenant the caller sees with its latest runs, campaigns and open dead letters, and
/// today's totals: the dashboard's first page in one request.
#[utoipa::path(get, path = "/api/v1/overview", tag = "tenants",
    responses(
        (status = 200, description = "The overview", body = Overview),
        (status = 401, description = "No valid key", body = ErrorBody),
    ))]
pub async fn get_overview(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<Overview>> {
    let service = &s.service;
    let scope = match &caller.principal.scope {
        Scope::Admin => None,
        Scope::Tenant(t) => Some(t.as_str()),
    };
    let tenants = service.tenants.visible(&caller.principal.scope).await?;
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or_else(Utc::now, |d| d.and_utc());
    let (runs, counts, totals, budgets) = tokio::try_join!(
        async { Ok(service.store.recent_runs(scope, RECENT_RUNS).await?) },
        overview::tenant_counts(&service.store, scope),
        overview::run_totals(&service.store, scope, today),
        async { Ok(budget::all_budgets(&service.store).await?) },
    )?;
    let mut by_tenant: HashMap<String, Vec<RunBrief>> = HashMap::new();
    for run in runs {
        let view = RunView::from(run);
        by_tenant
            .entry(view.tenant_id.clone())
            .or_default()
            .push(view.into());
    }
    let mut out = Vec::with_capacity(tenants.len());
    for t in tenants {
        let c = counts.get(&t.id).copied().unwrap_or_default();
        let budget = BudgetKey::of(&t.api_url, &t.client_id).and_then(|k| budgets.get(&k));
        let view = crate::views::TenantView::from(t);
        out.push(OverviewTenant {
            recent_runs: by_tenant.remove(&view.id).unwrap_or_default(),
            id: view.id,
            name: view.name,
            paused: view.paused,
            schedule: view.schedule,
            time_zone: view.time_zone,
            next_run_at: view.next_run_at,
            rate_limit: view.rate_limit,
            budget_use: budget.map(BudgetRow::use_now),
            budget_rate_limited: budget.map(|b| b.rate_limited),
            campaigns: c.campaigns,
            open_dead_letters: c.open_dead_letters,
        });
    }
    Ok(Json(Overview {
        generated_at: Utc::now(),
        totals: OverviewTotals {
            tenants: out.len(),
            paused: out.iter().filter(|t| t.paused).count(),
            campaigns: out.iter().map(|t| t.campaigns).sum(),
            open_dead_letters: out.iter().map(|t| t.open_dead_letters).sum(),
            runs_today: totals.by_status.into_iter().collect(),
            rate_limited_today: totals.rate_limited,
        },
        tenants: out,
    }))
}

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// The page and its two assets (no key needed: they hold no data).
pub(crate) fn pages() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Only this server's own script, style and connections; no frames, no inline script.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
