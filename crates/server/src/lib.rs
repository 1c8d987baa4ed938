//! adsync's HTTP API (axum) over the [`Service`]: tenants, runs, campaigns and their metrics,
//! dead letters, API keys and the audit log under `/api/v1`, authenticated by bearer API keys
//! (a tenant key sees only its tenant; anything else is a 404); the OpenAPI document generated
//! from the handlers (`/api/v1/openapi.json`) and a reference page that needs no network
//! (`/api/v1/docs`); `/healthz`, `/readyz` and Prometheus `/metrics`. Every error is one JSON
//! shape, `{"error": kind, "message": what to fix}`; every mutation is audited by the service
//! with the caller's key id and address.
//!
//! [`app`] builds the router without a socket (tests can drive it); [`serve`] runs it on a
//! listener until a cancellation token fires, finishing the requests in flight.

mod auth;
mod dashboard;
mod error;
mod extract;
mod observe;
mod openapi;
mod routes;
mod session;
mod views;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use adsync_service::Service;
use axum::{Router, extract::DefaultBodyLimit, middleware};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use openapi::openapi;

/// How the API behaves beyond the service it serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// How long `/readyz` waits for the database's `SELECT 1`.
    pub ready_timeout: Duration,
    /// How often a live-event socket is pinged (keeps proxies from closing an idle socket,
    /// finds a dead client) and its credential checked again.
    pub events_ping: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            // Every body of this API is a few hundred bytes; 64 KiB leaves room and no more.
            body_limit: 64 * 1024,
            ready_timeout: Duration::from_secs(2),
            events_ping: Duration::from_secs(20),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub service: Service,
    pub options: Arc<ServerOptions>,
    /// The OpenAPI document, rendered once.
    pub openapi_json: Arc<String>,
}

/// The API with the default [`ServerOptions`].
pub fn app(service: Service) -> Router {
    app_with(service, ServerOptions::default())
}

/// The API over `service`. Installs the process's Prometheus recorder on first use.
pub fn app_with(service: Service, options: ServerOptions) -> Router {
    observe::init_metrics();
    let state = AppState {
        service,
        options: Arc::new(options.clone()),
        openapi_json: Arc::new(
            openapi()
                .to_pretty_json()
                .expect("the OpenAPI document serializes"),
        ),
    };
    let protected = protected_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::authenticate,
    ));
    let (router, _) = protected.merge(public_routes()).split_for_parts();
    router
        .merge(dashboard::pages())
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(middleware::from_fn(observe::track))
        .with_state(state)
}

/// The endpoints that need a key (the middleware is added by [`app_with`]).
pub(crate) fn protected_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    routes::protected().merge(dashboard::api())
}

/// The endpoints open to anyone, and the sign-in (which checks the key itself).
pub(crate) fn public_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    routes::public().merge(session::routes())
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops accepting and
/// lets the requests in flight finish. Handlers see the client's address (audit log).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
