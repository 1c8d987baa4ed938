//! The API's one error shape, `{"error": kind, "message": what to fix}`, and how service and
//! store errors map onto it: the caller's mistakes say what to fix; failures of the database
//! say to try again (503) or nothing beyond "internal error" (500), the detail going to the
//! log only.

use adsync_service::ServiceError;
use adsync_store::StoreError;
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// An error as the API returns it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `unauthorized`, `not_found`, `bad_request`, `invalid`, `conflict`,
    /// `forbidden`, `payload_too_large`, `unsupported_media_type`, `method_not_allowed`, `unavailable`,
    /// `internal`.
    #[schema(example = "invalid")]
    pub error: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The run already queued or running (with `conflict` on a run request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
}

/// A request that failed: its status and body.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
                run_id: None,
            },
        }
    }

    /// 401: no key, or not a valid one.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid API key as `Authorization: Bearer <key>`",
        )
    }

    /// 401 with a message of its own.
    pub fn unauthorized_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: refused whoever asks (a cookie request another site may have forged).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for `what` (also what a caller gets for something it may not see).
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 404 for a path that is not an endpoint, and for an admin endpoint called with a tenant
    /// key (which must not learn that it exists).
    pub fn no_such_endpoint() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint, or not one this key may use (a tenant key sees only its tenant's resources); the reference is at /api/v1/docs",
        )
    }

    /// 400: the request cannot be read.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: the request is readable but a value is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 409 because of run `run`, already queued or running.
    pub fn run_conflict(run: i64, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::CONFLICT, "conflict", message);
        e.body.run_id = Some(run);
        e
    }

    /// 500, with `detail` logged and never returned.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the detail",
        )
    }

    /// 503: the database is unavailable for now.
    pub fn unavailable(detail: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "database unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database is unavailable; try again shortly",
        )
    }

    /// A rejection of axum's by its status: 413, 415, 422, or 400 for anything else.
    pub(crate) fn from_rejection(status: StatusCode, message: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(status, "payload_too_large", "the request body is too large")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Self::invalid(message),
            _ => Self::bad_request(message),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(m) => ApiError::invalid(m),
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            ServiceError::Store(e) => e.into(),
            e @ ServiceError::Vault(_) => ApiError::internal(&e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::RunInProgress(tenant) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a run of tenant {tenant} is in progress"),
            ),
            e if e.is_transient() => ApiError::unavailable(&e),
            e => ApiError::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = (self.status, Json(self.body)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// Results of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// The fallback of every unknown path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::no_such_endpoint()
}

/// A known path with another method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method; the reference is at /api/v1/docs",
    )
}
