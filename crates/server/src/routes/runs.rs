//! Runs: queue one for a tenant (`POST /tenants/{id}/runs`: 202, or 409 naming the run
//! already queued or running), list a tenant's, read one, cancel one.

use adsync_service::queue::{CancelOutcome, Enqueued, RunRequest};
use adsync_store::{RunId, RunRecord, StoreError};
use axum::{Json, extract::State, http::StatusCode};

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiPath, ApiQuery},
    views::{CancelView, RunAccepted, RunList, RunView, RunsQuery},
};

/// Queues a run of the tenant for `requested_by`, answering 202 with it, or 409 with the
/// run already queued or running.
pub(crate) async fn queue_run(
    s: &AppState,
    caller: &Caller,
    tenant_id: &str,
    requested_by: &str,
) -> ApiResult<(StatusCode, Json<RunAccepted>)> {
    caller.require_tenant(tenant_id)?;
    let tenant = s.service.tenants.get(tenant_id).await?;
    let request = RunRequest {
        tenant: &tenant.id,
        page_size: tenant.page_size,
        platform: &tenant.api_url,
        requested_by,
    };
    let (id, outcome) = match s
        .service
        .queue
        .enqueue(request, Some(&caller.actor))
        .await?
    {
        Enqueued::Queued(id) => (id, "queued"),
        Enqueued::Requeued(id) => (id, "requeued"),
        Enqueued::AlreadyActive(id) => {
            return Err(ApiError::run_conflict(
                id,
                format!(
                    "tenant {tenant_id} already has run {id} queued or running; wait for it or cancel it"
                ),
            ));
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(RunAccepted {
            id,
            status: "queued",
            outcome,
        }),
    ))
}

/// Queues a sync run of the tenant. An interrupted run is queued again (it resumes from its
/// checkpoint) rather than replaced.
#[utoipa::path(post, operation_id = "enqueue_run", path = "/api/v1/tenants/{id}/runs", tag = "runs",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 202, description = "Queued", body = RunAccepted),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
        (status = 409, description = "A run is already queued or running: `run_id` names it",
            body = ErrorBody),
    ))]
pub async fn enqueue(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<RunAccepted>)> {
    queue_run(&s, &caller, &id, &caller.requested_by()).await
}

/// The tenant's runs, newest first.
#[utoipa::path(get, operation_id = "list_runs", path = "/api/v1/tenants/{id}/runs", tag = "runs",
    params(("id" = String, Path, description = "Tenant id"), RunsQuery),
    responses(
        (status = 200, description = "Runs, newest first", body = RunList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<RunsQuery>,
) -> ApiResult<Json<RunList>> {
    caller.require_tenant(&id)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 200"));
    }
    s.service.tenants.get(&id).await?;
    let runs = s.service.store.runs(&id, limit).await?;
    Ok(Json(RunList {
        data: runs.into_iter().map(Into::into).collect(),
    }))
}

/// The run, if the caller may see it (404 otherwise).
async fn visible_run(s: &AppState, caller: &Caller, id: RunId) -> ApiResult<RunRecord> {
    match s.service.store.run(id).await {
        Ok(run) if caller.principal.sees(&run.tenant_id) => Ok(run),
        Ok(_) | Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!("run {id}"))),
        Err(e) => Err(e.into()),
    }
}

/// One run: status, counters, time against the platform's floor, its worker and attempts,
/// and the warnings it recorded.
#[utoipa::path(get, operation_id = "get_run", path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such run (or not the key's tenant's)", body = ErrorBody),
    ))]
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RunId>,
) -> ApiResult<Json<RunView>> {
    let run = visible_run(&s, &caller, id).await?;
    let warnings = s.service.store.run_warnings(id).await?;
    let mut view = RunView::from(run);
    view.warnings = Some(warnings.into_iter().map(Into::into).collect());
    Ok(Json(view))
}

/// Cancels a run: a queued or interrupted one at once; a running one by asking its worker,
/// which stops it within seconds (it ends `cancelled`).
#[utoipa::path(post, operation_id = "cancel_run", path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 202, description = "What the cancellation did", body = CancelView),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such run (or not the key's tenant's)", body = ErrorBody),
    ))]
pub async fn cancel(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<RunId>,
) -> ApiResult<(StatusCode, Json<CancelView>)> {
    visible_run(&s, &caller, id).await?;
    let outcome = match s.service.queue.cancel(id, Some(&caller.actor)).await? {
        CancelOutcome::Cancelled => "cancelled",
        CancelOutcome::Requested => "requested",
        CancelOutcome::AlreadyFinished(_) => "already_finished",
    };
    let status = s.service.store.run(id).await?.status.as_str().to_owned();
    Ok((
        StatusCode::ACCEPTED,
        Json(CancelView {
            id,
            outcome,
            status,
        }),
    ))
}
