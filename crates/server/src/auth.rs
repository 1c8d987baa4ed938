//! Authentication: `Authorization: Bearer <key>`, or the dashboard's session cookie
//! ([`SESSION_COOKIE`], set by `POST /api/v1/session`), checked by `api_keys::authenticate`
//! before any protected handler runs (401 otherwise), and the [`Caller`] it leaves for
//! handlers: who (the principal, which tenant it sees) and, for the audit log, the key id and
//! the client's address. A tenant key is told 404 for anything outside its tenant, admin
//! endpoints included, so it cannot learn what exists. The key itself is never logged.
//!
//! **CSRF.** The cookie is `HttpOnly; SameSite=Strict`, so another site's page cannot send it.
//! Beyond that, a request authenticated by the cookie that changes something must carry the
//! header [`CSRF_HEADER`] (a page of another origin cannot add a custom header without a CORS
//! preflight, which this server never grants), and any cookie request whose `Origin` is not
//! this server is refused (this covers the WebSocket handshake, which has no preflight).

use std::net::SocketAddr;

use adsync_service::{
    api_keys::{self, Principal},
    audit::Actor,
    sessions,
};
use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use secrecy::{ExposeSecret as _, SecretString};

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
    /// What authenticated it, kept (as a secret) so that a long-lived connection can check it
    /// again ([`still_valid`]).
    pub(crate) credential: Credential,
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

/// The dashboard's session cookie: a session's random token (see
/// `adsync_service::sessions`), `HttpOnly` (no script reads it) and `SameSite=Strict`.
pub const SESSION_COOKIE: &str = "adsync_session";

/// The header a cookie-authenticated request that changes something must carry (any value).
pub const CSRF_HEADER: &str = "x-adsync-csrf";

/// The key of `Authorization: Bearer <key>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Every value of the session cookie the request carries (a browser sends one per path it
/// was set for).
pub(crate) fn session_cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
        .collect()
}

/// What a request authenticates with.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// `Authorization: Bearer <key>`.
    Bearer(SecretString),
    /// The session cookie's token.
    Session(SecretString),
}

/// The request's credential: the bearer header first, then the session cookie. `Err` for a
/// request with several session cookies: one was set by something else on this host (another
/// port shares the cookie jar), and which one to believe cannot be known.
pub(crate) fn credential(headers: &HeaderMap) -> Result<Option<Credential>, ApiError> {
    if let Some(key) = bearer(headers) {
        return Ok(Some(Credential::Bearer(SecretString::from(key))));
    }
    match session_cookies(headers).as_slice() {
        [] => Ok(None),
        [token] => Ok(Some(Credential::Session(SecretString::from(*token)))),
        _ => Err(ApiError::unauthorized_with(
            "the request carries several session cookies (another site on this host may have \
             set one); sign out and sign in again",
        )),
    }
}

/// Who `credential` belongs to now (`None`: nobody; revoked, expired or never valid).
pub(crate) async fn principal(
    state: &AppState,
    credential: &Credential,
) -> ApiResult<Option<Principal>> {
    let service = &state.service;
    let admin = service.admin_key.as_deref();
    Ok(match credential {
        Credential::Bearer(key) => {
            api_keys::authenticate(&service.store, admin, key.expose_secret()).await?
        }
        Credential::Session(token) => {
            sessions::principal(&service.store, admin, token.expose_secret()).await?
        }
    })
}

/// Whether `caller`'s credential still names the same principal (for connections that
/// outlive a request: a revoked key or an ended session closes them).
pub(crate) async fn still_valid(state: &AppState, caller: &Caller) -> ApiResult<bool> {
    Ok(principal(state, &caller.credential)
        .await?
        .is_some_and(|p| p == caller.principal))
}

/// Whether the request's `Origin` (if any) is this server, as the `Host` header names it.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Refuses a cookie-authenticated request that another origin may have forged: a foreign
/// `Origin`, or a change without [`CSRF_HEADER`].
pub(crate) fn check_cookie_request(method: &Method, headers: &HeaderMap) -> ApiResult<()> {
    if !same_origin(headers) {
        return Err(ApiError::forbidden(
            "a request from another origin cannot use the dashboard's session cookie",
        ));
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !headers.contains_key(CSRF_HEADER) {
        return Err(ApiError::forbidden(format!(
            "a change made with the session cookie needs the header `{CSRF_HEADER}: 1` \
             (or use `Authorization: Bearer <key>`)"
        )));
    }
    Ok(())
}

/// Middleware of the protected routes: 401 unless the key is valid; else the [`Caller`] goes
/// into the request for the handler.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let credential = match credential(req.headers()) {
        Ok(Some(c)) => c,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(e) => return e.into_response(),
    };
    if matches!(credential, Credential::Session(_))
        && let Err(e) = check_cookie_request(req.method(), req.headers())
    {
        return e.into_response();
    }
    let principal = match principal(&state, &credential).await {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::unauthorized().into_response(),
        Err(e) => return e.into_response(),
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
    req.extensions_mut().insert(Caller {
        principal,
        actor,
        credential,
    });
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

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_the_bearer_header_wins() {
        let h = headers(&[("cookie", "a=1; adsync_session=ads_s ; b=2")]);
        assert!(
            matches!(credential(&h), Ok(Some(Credential::Session(t))) if t.expose_secret() == "ads_s")
        );
        let h = headers(&[("cookie", "a=1"), ("cookie", "adsync_session=ads_t")]);
        assert_eq!(session_cookies(&h), vec!["ads_t"]);
        assert!(matches!(
            credential(&headers(&[("cookie", "adsync_session=")])),
            Ok(None)
        ));
        let h = headers(&[
            ("cookie", "adsync_session=ads_s"),
            ("authorization", "Bearer adk_b"),
        ]);
        assert!(
            matches!(credential(&h), Ok(Some(Credential::Bearer(k))) if k.expose_secret() == "adk_b")
        );
    }

    #[test]
    fn two_session_cookies_are_refused() {
        let h = headers(&[("cookie", "adsync_session=ads_a; adsync_session=ads_b")]);
        assert!(credential(&h).is_err());
    }

    #[test]
    fn cookie_changes_need_the_csrf_header_and_this_origin() {
        let host = ("host", "127.0.0.1:8080");
        assert!(check_cookie_request(&Method::GET, &headers(&[host])).is_ok());
        assert!(check_cookie_request(&Method::POST, &headers(&[host])).is_err());
        assert!(check_cookie_request(&Method::POST, &headers(&[host, (CSRF_HEADER, "1")])).is_ok());
        let same = ("origin", "http://127.0.0.1:8080");
        assert!(check_cookie_request(&Method::GET, &headers(&[host, same])).is_ok());
        let foreign = ("origin", "https://evil.example");
        assert!(check_cookie_request(&Method::GET, &headers(&[host, foreign])).is_err());
        assert!(
            check_cookie_request(
                &Method::POST,
                &headers(&[host, foreign, (CSRF_HEADER, "1")])
            )
            .is_err()
        );
    }
}
