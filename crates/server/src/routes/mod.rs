//! The endpoints, one module per resource. [`protected`] needs an API key (the caller's
//! [`crate::auth::Caller`]); [`public`] does not: health, metrics and the API's own reference.

mod api_keys;
mod audit;
mod campaigns;
mod dead_letters;
mod events;
mod ops;
mod runs;
mod tenants;

use utoipa::OpenApi as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{AppState, openapi::ApiDoc};

/// Endpoints that need a key.
pub(crate) fn protected() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(tenants::list, tenants::create))
        .routes(routes!(tenants::get, tenants::update, tenants::delete))
        .routes(routes!(tenants::pause))
        .routes(routes!(tenants::resume))
        .routes(routes!(runs::enqueue, runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(events::events))
        .routes(routes!(campaigns::list))
        .routes(routes!(campaigns::metrics))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::retry))
        .routes(routes!(dead_letters::dismiss))
        .routes(routes!(api_keys::create, api_keys::list))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(api_keys::create_admin, api_keys::list_admin))
        .routes(routes!(api_keys::revoke_admin))
        .routes(routes!(audit::list))
}

/// Endpoints open to anyone who can reach the server.
pub(crate) fn public() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(ops::docs))
}
