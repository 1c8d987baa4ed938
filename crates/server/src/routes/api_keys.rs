//! API keys: a tenant's (`/tenants/{id}/api-keys`) and admin keys (`/api-keys`, admin only).
//! A key's secret is in the creation response only; the database keeps a hash.

use adsync_service::api_keys;
use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret as _;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath},
    views::{ApiKeyList, CreatedApiKey, NewApiKeyBody},
};

async fn create_for(
    s: &AppState,
    caller: &Caller,
    tenant: Option<&str>,
    body: NewApiKeyBody,
) -> ApiResult<Response> {
    let (key, secret) = api_keys::create(
        &s.service.store,
        tenant,
        body.name.as_deref(),
        &caller.actor,
    )
    .await?;
    let created = CreatedApiKey {
        id: key.id,
        key: secret.expose_secret().to_owned(),
        tenant_id: key.tenant_id,
        name: key.name,
        created_at: key.created_at,
    };
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    // The one response that carries a secret: no cache may keep it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn revoke_for(
    s: &AppState,
    caller: &Caller,
    tenant: Option<&str>,
    key_id: &str,
) -> ApiResult<StatusCode> {
    if api_keys::revoke(&s.service.store, tenant, key_id, &caller.actor).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("api key {key_id}")))
    }
}

/// Creates a key for the tenant; the response is the only time its secret is shown.
#[utoipa::path(post, operation_id = "create_api_key", path = "/api/v1/tenants/{id}/api-keys", tag = "api-keys",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = NewApiKeyBody,
    responses(
        (status = 201, description = "The key, with its secret", body = CreatedApiKey),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
        (status = 422, description = "A value is invalid", body = ErrorBody),
    ))]
pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NewApiKeyBody>,
) -> ApiResult<Response> {
    caller.require_tenant(&id)?;
    create_for(&s, &caller, Some(&id), body).await
}

/// The tenant's keys, newest first, revoked ones included; never their secrets.
#[utoipa::path(get, operation_id = "list_api_keys", path = "/api/v1/tenants/{id}/api-keys", tag = "api-keys",
    params(("id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The keys", body = ApiKeyList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
    ))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ApiKeyList>> {
    caller.require_tenant(&id)?;
    s.service.tenants.get(&id).await?;
    let keys = api_keys::list(&s.service.store, Some(&id)).await?;
    Ok(Json(ApiKeyList {
        data: keys.into_iter().map(Into::into).collect(),
    }))
}

/// Revokes one of the tenant's keys: it is refused (401) from then on.
#[utoipa::path(delete, operation_id = "revoke_api_key", path = "/api/v1/tenants/{id}/api-keys/{key_id}", tag = "api-keys",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("key_id" = String, Path, description = "Key id (`key_...`)"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant or live key", body = ErrorBody),
    ))]
pub async fn revoke(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_tenant(&id)?;
    revoke_for(&s, &caller, Some(&id), &key_id).await
}

/// Creates an admin key (admin only): it sees every tenant.
#[utoipa::path(post, operation_id = "create_admin_key", path = "/api/v1/api-keys", tag = "api-keys",
    request_body = NewApiKeyBody,
    responses(
        (status = 201, description = "The key, with its secret", body = CreatedApiKey),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "Not an admin key", body = ErrorBody),
        (status = 422, description = "A value is invalid", body = ErrorBody),
    ))]
pub async fn create_admin(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewApiKeyBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    create_for(&s, &caller, None, body).await
}

/// The admin keys (admin only), newest first; never their secrets.
#[utoipa::path(get, operation_id = "list_admin_keys", path = "/api/v1/api-keys", tag = "api-keys",
    responses(
        (status = 200, description = "The keys", body = ApiKeyList),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "Not an admin key", body = ErrorBody),
    ))]
pub async fn list_admin(State(s): State<AppState>, caller: Caller) -> ApiResult<Json<ApiKeyList>> {
    caller.require_admin()?;
    let keys = api_keys::list(&s.service.store, None).await?;
    Ok(Json(ApiKeyList {
        data: keys.into_iter().map(Into::into).collect(),
    }))
}

/// Revokes an admin key (admin only).
#[utoipa::path(delete, operation_id = "revoke_admin_key", path = "/api/v1/api-keys/{key_id}", tag = "api-keys",
    params(("key_id" = String, Path, description = "Key id (`key_...`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such live key, or not an admin key", body = ErrorBody),
    ))]
pub async fn revoke_admin(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(key_id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    revoke_for(&s, &caller, None, &key_id).await
}
