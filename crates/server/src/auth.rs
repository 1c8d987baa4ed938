//! Authentication: `Authorization: Bearer <key>` checked by `api_keys::authenticate` before
//! any protected handler runs (401 otherwise), and the [`Caller`] it leaves for handlers: who
//! (the principal, which tenant it sees) and, for the audit log, the key id and the client's
//! address. A tenant key is told 404 for anything outside its tenant, admin endpoints included,
//! so it cannot learn what exists. The key itself is never logged or kept.

use std::net::SocketAddr;

use adsync_service::{
    api_keys::{self, Principal},
    audit::Actor,
};
use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    AppState,
    error::{ApiError, ApiResult},
    observe::KeyId,
};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who, and what it may see.
    pub principal: Principal,
    /// The same, as the audit log records it.
    pub actor: Actor,
}

impl Caller {
    /// Admin endpoints: a tenant key gets the 404 of an unknown endpoint.
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.principal.is_admin() {
            Ok(())
        } else {
            Err(ApiError::no_such_endpoint())
        }
    }

    /// Whether the caller may see `tenant`; a 404 for it otherwise.
    pub fn require_tenant(&self, tenant: &str) -> ApiResult<()> {
        if self.principal.sees(tenant) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("tenant {tenant}")))
        }
    }

    /// `api:<key id>`, for the runs it asks for.
    pub fn requested_by(&self) -> String {
        format!("api:{}", self.principal.key_id)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            // Only a handler mounted outside the authenticated router gets here.
            .ok_or_else(ApiError::unauthorized)
    }
}

/// The key of `Authorization: Bearer <key>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Middleware of the protected routes: 401 unless the key is valid; else the [`Caller`] goes
/// into the request for the handler.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(key) = bearer(req.headers()) else {
        return ApiError::unauthorized().into_response();
    };
    let service = &state.service;
    let principal =
        match api_keys::authenticate(&service.store, service.admin_key.as_deref(), key).await {
            Ok(Some(p)) => p,
            Ok(None) => return ApiError::unauthorized().into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        };
    let remote_addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    let key_id = principal.key_id.clone();
    let actor = Actor {
        key_id: key_id.clone(),
        remote_addr,
    };
    req.extensions_mut().insert(Caller { principal, actor });
    let mut response = next.run(req).await;
    response.extensions_mut().insert(KeyId(key_id));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_key_is_taken() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert_eq!(bearer(&with("Bearer adk_x")), Some("adk_x"));
        assert_eq!(bearer(&with("bearer  adk_x ")), Some("adk_x"));
        assert_eq!(bearer(&with("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
