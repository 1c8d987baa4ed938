//! `/api/v1/tenants`: create and delete (admin), list (a tenant key sees only its own), read,
//! change, pause and resume.

use adsync_service::tenants::TenantPatch;
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::IntoResponse,
};

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath},
    views::{NewTenantBody, TenantList, TenantPatchBody, TenantView},
};

/// Lists the tenants the key sees: all of them for an admin key, its own for a tenant key.
#[utoipa::path(get, operation_id = "list_tenants", path = "/api/v1/tenants", tag = "tenants",
    responses(
        (status = 200, description = "Tenants, by name", body = TenantList),
        (status = 401, description = "No valid key", body = ErrorBody),
    ))]
pub async fn list(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<TenantList>> {
    let tenants = s.service.tenants.visible(&caller.principal.scope).await?;
    Ok(Json(TenantList {
        data: tenants.into_iter().map(Into::into).collect(),
    }))
}

/// Creates a tenant (admin key). Everything is validated before anything is written; the
/// credentials are sealed and never shown again.
#[utoipa::path(post, operation_id = "create_tenant", path = "/api/v1/tenants", tag = "tenants",
    request_body = NewTenantBody,
    responses(
        (status = 201, description = "Created", body = TenantView,
            headers(("Location" = String, description = "The tenant's URL"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "Not an admin key", body = ErrorBody),
        (status = 422, description = "A value is invalid, or a field unknown", body = ErrorBody),
    ))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewTenantBody>,
) -> ApiResult<impl IntoResponse> {
    caller.require_admin()?;
    let tenant = s
        .service
        .tenants
        .create(body.into(), Some(&caller.actor))
        .await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/tenants/{}", tenant.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(TenantView::from(tenant))))
}

/// One tenant.
#[utoipa::path(get, operation_id = "get_tenant", path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
    ))]
pub async fn get(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    caller.require_tenant(&id)?;
    Ok(Json(s.service.tenants.get(&id).await?.into()))
}

/// Changes a tenant: any subset of its fields; `schedule: null` removes the schedule;
/// credentials are write-only. Validated before anything is written.
#[utoipa::path(patch, operation_id = "update_tenant", path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = TenantPatchBody,
    responses(
        (status = 200, description = "The tenant as changed", body = TenantView),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
        (status = 422, description = "A value is invalid, or a field unknown", body = ErrorBody),
    ))]
pub async fn update(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TenantPatchBody>,
) -> ApiResult<Json<TenantView>> {
    caller.require_tenant(&id)?;
    if body.is_empty() {
        return Ok(Json(s.service.tenants.get(&id).await?.into()));
    }
    let patch = body.into_patch().map_err(|field| {
        ApiError::invalid(format!(
            "{field} cannot be null: leave it out to keep it (only schedule can be removed with null)"
        ))
    })?;
    Ok(Json(change(&s, &caller, &id, patch).await?))
}

async fn change(
    s: &AppState,
    caller: &Caller,
    id: &str,
    patch: TenantPatch,
) -> ApiResult<TenantView> {
    Ok(s.service
        .tenants
        .update(id, patch, Some(&caller.actor))
        .await?
        .into())
}

/// Deletes a tenant (admin key) with its credentials, keys and data; a running run stops.
#[utoipa::path(delete, operation_id = "delete_tenant", path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant, or not an admin key", body = ErrorBody),
    ))]
pub async fn delete(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    s.service.tenants.delete(&id, Some(&caller.actor)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a tenant: no scheduled runs, and queued runs wait.
#[utoipa::path(post, operation_id = "pause_tenant", path = "/api/v1/tenants/{id}/pause", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant, paused", body = TenantView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
    ))]
pub async fn pause(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    set_paused(&s, &caller, &id, true).await
}

/// Resumes a paused tenant (its next scheduled run is computed again).
#[utoipa::path(post, operation_id = "resume_tenant", path = "/api/v1/tenants/{id}/resume", tag = "tenants",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant, resumed", body = TenantView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
    ))]
pub async fn resume(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TenantView>> {
    set_paused(&s, &caller, &id, false).await
}

async fn set_paused(
    s: &AppState,
    caller: &Caller,
    id: &str,
    paused: bool,
) -> ApiResult<Json<TenantView>> {
    caller.require_tenant(id)?;
    let patch = TenantPatch {
        paused: Some(paused),
        ..TenantPatch::default()
    };
    Ok(Json(change(s, caller, id, patch).await?))
}
