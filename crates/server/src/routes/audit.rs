//! The audit log: an admin key reads all of it (or one tenant's), a tenant key its tenant's.

use adsync_service::{api_keys::Scope, audit};
use axum::{Json, extract::State};

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::ApiQuery,
    views::{AuditPage, AuditQuery},
};

/// Changes made through the API, newest first: who (key id), what, to what, when, from where.
#[utoipa::path(get, operation_id = "list_audit_log", path = "/api/v1/audit-log", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the log", body = AuditPage),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "A tenant key asked for another tenant", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let tenant = match (&caller.principal.scope, query.tenant_id) {
        (Scope::Admin, asked) => asked,
        (Scope::Tenant(own), None) => Some(own.clone()),
        (Scope::Tenant(own), Some(asked)) if asked == *own => Some(asked),
        (Scope::Tenant(_), Some(asked)) => {
            return Err(ApiError::not_found(format!("tenant {asked}")));
        }
    };
    let entries = audit::list(&s.service.store, tenant.as_deref(), query.before, limit).await?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage {
        data: entries.into_iter().map(Into::into).collect(),
        next_before,
    }))
}
