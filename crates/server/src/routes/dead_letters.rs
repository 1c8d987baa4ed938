//! A tenant's dead letters: list, retry (queue a run that lists and syncs again), dismiss.

use axum::{Json, extract::State, http::StatusCode};

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery},
    routes::runs::queue_run,
    views::{DeadLetterList, DeadLettersQuery, DismissBody, DismissedView, RunAccepted},
};

/// The tenant's dead letters, latest failure first; unresolved ones unless
/// `include_resolved=true`.
#[utoipa::path(get, operation_id = "list_dead_letters", path = "/api/v1/tenants/{id}/dead-letters", tag = "dead-letters",
    params(("id" = String, Path, description = "Tenant id"), DeadLettersQuery),
    responses(
        (status = 200, description = "Dead letters", body = DeadLetterList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
    ))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeadLettersQuery>,
) -> ApiResult<Json<DeadLetterList>> {
    caller.require_tenant(&id)?;
    s.service.tenants.get(&id).await?;
    let letters = s
        .service
        .store
        .dead_letters(&id, query.include_resolved.unwrap_or(false))
        .await?;
    Ok(Json(DeadLetterList {
        data: letters.into_iter().map(Into::into).collect(),
    }))
}

/// Retries the tenant's dead letters: queues a run (requested by `retry`) that lists and
/// syncs again; letters it stores or syncs are resolved.
#[utoipa::path(post, operation_id = "retry_dead_letters", path = "/api/v1/tenants/{id}/dead-letters/retry", tag = "dead-letters",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 202, description = "The run queued", body = RunAccepted),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
        (status = 409, description = "A run is already queued or running: `run_id` names it",
            body = ErrorBody),
    ))]
pub async fn retry(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<RunAccepted>)> {
    queue_run(&s, &caller, &id, "retry").await
}

/// Dismisses unresolved dead letters: `{"ids": [...]}`, or `{"all": true}`.
#[utoipa::path(post, operation_id = "dismiss_dead_letters", path = "/api/v1/tenants/{id}/dead-letters/dismiss", tag = "dead-letters",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = DismissBody,
    responses(
        (status = 200, description = "How many were dismissed", body = DismissedView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
        (status = 422, description = "Neither ids nor all, or both", body = ErrorBody),
    ))]
pub async fn dismiss(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<DismissBody>,
) -> ApiResult<Json<DismissedView>> {
    caller.require_tenant(&id)?;
    let ids = match (body.ids, body.all) {
        (Some(ids), None | Some(false)) if !ids.is_empty() && ids.len() <= 1000 => ids,
        (None, Some(true)) => Vec::new(),
        _ => {
            return Err(ApiError::invalid(
                "give either ids (1 to 1000 dead-letter ids) or all: true",
            ));
        }
    };
    s.service.tenants.get(&id).await?;
    // The dismissal and its audit entry commit together.
    let dismissed =
        adsync_service::dead_letters::dismiss(&s.service.store, &id, &ids, &caller.actor).await?;
    Ok(Json(DismissedView { dismissed }))
}
