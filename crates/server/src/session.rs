//! The dashboard's sign-in: `POST /api/v1/session` checks an API key and opens a session
//! (`adsync_service::sessions`: a random token, its hash in the database, 12 hours) whose token
//! goes into the `HttpOnly; SameSite=Strict` session cookie ([`SESSION_COOKIE`]), which the API
//! then accepts like a bearer key (see [`crate::auth`] for the CSRF rules); `GET` says who is
//! signed in; `DELETE` ends the session on the server and clears the cookie. The key itself is
//! never stored in the browser, returned or logged.

use adsync_service::{
    api_keys::{self, Principal, Scope},
    sessions,
};
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
    auth::{self, Credential, SESSION_COOKIE, check_cookie_request},
    error::{ApiError, ApiResult, ErrorBody},
    extract::ApiJson,
};

/// Sign-in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    /// An API key: the admin key or an `adk_...` key (a tenant's sees only its tenant).
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

fn cookie(value: &str, path: &str, max_age: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    ))
    // The token is base64url; a path of ours is ASCII.
    .unwrap_or_else(|_| HeaderValue::from_static("adsync_session=; Path=/; Max-Age=0"))
}

/// Refuses a sign-in or sign-out sent from another origin.
fn check_origin(headers: &HeaderMap) -> ApiResult<()> {
    if auth::same_origin(headers) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "signing in or out from another origin is not allowed",
        ))
    }
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
    headers: HeaderMap,
    ApiJson(body): ApiJson<SessionBody>,
) -> ApiResult<Response> {
    check_origin(&headers)?;
    let key = body.key.expose_secret().trim();
    let service = &s.service;
    let Some(principal) =
        api_keys::authenticate(&service.store, service.admin_key.as_deref(), key).await?
    else {
        return Err(ApiError::unauthorized());
    };
    let token = sessions::open(&service.store, &principal, service.admin_key.as_deref()).await?;
    tracing::info!(key_id = %principal.key_id, "signed in to the dashboard");
    let mut response = Json(SessionView::from(principal)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::SET_COOKIE,
        cookie(token.expose_secret(), "/", sessions::SESSION_TTL.as_secs()),
    );
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
    let Some(credential) = auth::credential(&headers)? else {
        return Err(ApiError::unauthorized());
    };
    if matches!(credential, Credential::Session(_)) {
        check_cookie_request(&Method::GET, &headers)?;
    }
    match auth::principal(&s, &credential).await? {
        Some(p) => Ok(Json(p.into())),
        None => Err(ApiError::unauthorized()),
    }
}

/// Signs out: the session ends on the server and the cookie is cleared (on every path a
/// cookie of that name could have been set for by this API).
#[utoipa::path(delete, path = "/api/v1/session", tag = "session", security(()),
    responses(
        (status = 204, description = "Signed out"),
        (status = 403, description = "Sent from another origin", body = ErrorBody),
    ))]
pub async fn sign_out(State(s): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    check_origin(&headers)?;
    for token in auth::session_cookies(&headers) {
        sessions::close(&s.service.store, token).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    for path in ["/", "/api", "/api/v1"] {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie("", path, 0));
    }
    Ok(response)
}
