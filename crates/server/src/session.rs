//! The dashboard's sign-in: `POST /api/v1/session` checks an API key and keeps it in the
//! `HttpOnly; SameSite=Strict` session cookie ([`SESSION_COOKIE`]), which the API then
//! accepts like a bearer key (see [`crate::auth`] for the CSRF rules); `GET` says who is
//! signed in; `DELETE` signs out. The key is never returned, logged or readable by a script.

use adsync_service::api_keys::{self, Principal, Scope};
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{KeySource, SESSION_COOKIE, check_cookie_request, request_key},
    error::{ApiError, ApiResult, ErrorBody},
    extract::ApiJson,
};

/// Sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// An API key: the admin key or a tenant's `adk_...` key.
    #[schema(value_type = String)]
    pub key: SecretString,
}

/// Who is signed in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// `admin` (the configured key) or the key's id.
    pub key_id: String,
    /// Whether the key sees every tenant.
    pub admin: bool,
    /// The one tenant a tenant key sees.
    pub tenant_id: Option<String>,
}

impl From<Principal> for SessionView {
    fn from(p: Principal) -> Self {
        let (admin, tenant_id) = match p.scope {
            Scope::Admin => (true, None),
            Scope::Tenant(t) => (false, Some(t)),
        };
        Self {
            key_id: p.key_id,
            admin,
            tenant_id,
        }
    }
}

/// The session routes (they check keys themselves: signing in has none yet).
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sign_in, whoami, sign_out))
}

fn cookie(value: &str, max_age: Option<u32>) -> HeaderValue {
    let age = max_age.map_or(String::new(), |s| format!("; Max-Age={s}"));
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{age}"
    ))
    // A key that authenticated is ASCII without `;` (admin keys are checked below too).
    .unwrap_or_else(|_| HeaderValue::from_static("adsync_session=; Path=/; Max-Age=0"))
}

/// Signs in with an API key: sets the session cookie the dashboard uses.
#[utoipa::path(post, path = "/api/v1/session", tag = "session", security(()),
    request_body = SessionBody,
    responses(
        (status = 200, description = "Signed in; the cookie is set", body = SessionView),
        (status = 401, description = "Not a valid key", body = ErrorBody),
        (status = 422, description = "No key, or an unknown field", body = ErrorBody),
    ))]
pub async fn sign_in(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<SessionBody>,
) -> ApiResult<Response> {
    let key = body.key.expose_secret().trim();
    let cookie_safe = !key.is_empty()
        && key.len() <= 200
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',' && b != b'"');
    if !cookie_safe {
        return Err(ApiError::unauthorized());
    }
    let service = &s.service;
    let Some(principal) =
        api_keys::authenticate(&service.store, service.admin_key.as_deref(), key).await?
    else {
        return Err(ApiError::unauthorized());
    };
    tracing::info!(key_id = %principal.key_id, "signed in to the dashboard");
    let mut response = Json(SessionView::from(principal)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::SET_COOKIE, cookie(key, None));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Who the session cookie (or bearer key) belongs to.
#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses(
        (status = 200, description = "Signed in", body = SessionView),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
pub async fn whoami(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Json<SessionView>> {
    let Some((key, source)) = request_key(&headers) else {
        return Err(ApiError::unauthorized());
    };
    if source == KeySource::Cookie {
        check_cookie_request(&Method::GET, &headers)?;
    }
    let service = &s.service;
    match api_keys::authenticate(&service.store, service.admin_key.as_deref(), key).await? {
        Some(p) => Ok(Json(p.into())),
        None => Err(ApiError::unauthorized()),
    }
}

/// Signs out: the cookie is cleared.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", security(()),
    responses((status = 204, description = "Signed out")))]
pub async fn sign_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", Some(0)));
    response
}
