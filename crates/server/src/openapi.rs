//! The OpenAPI document: generated from the handlers' `#[utoipa::path]` attributes and the
//! body types' `ToSchema` derives (utoipa-axum collects them as routes are registered), so a
//! route cannot be served without being documented. Served at `/api/v1/openapi.json`.

use std::sync::OnceLock;

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::error::ErrorBody;

/// The document's frame: title, the bearer scheme required by default (public operations say
/// `security(())`), tags.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "adsync API",
        description = "Tenants (ad accounts), their sync runs, campaigns, metric history, dead \
            letters, API keys and the audit log. Authenticate with `Authorization: Bearer <key>`: \
            the admin key sees everything; a tenant key sees only its tenant, and gets 404 for \
            anything else. Every error is `{\"error\": kind, \"message\": what to fix}`."
    ),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    tags(
        (name = "tenants", description = "Ad accounts: settings, schedule, write-only credentials"),
        (name = "runs", description = "Sync runs: queue, inspect, cancel"),
        (name = "campaigns", description = "Campaigns as last synced, and their metric history"),
        (name = "dead-letters", description = "What could not be listed, stored or synced"),
        (name = "api-keys", description = "Keys of a tenant, and admin keys"),
        (name = "audit", description = "Who changed what, when, from where"),
        (name = "session", description = "The dashboard's sign-in cookie"),
        (name = "operations", description = "Health, readiness, metrics, this reference"),
    ),
    components(schemas(ErrorBody))
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`adk_...`) or the configured admin key".to_owned(),
                    ))
                    .build(),
            ),
        );
    }
}

/// The API's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        crate::protected_routes()
            .merge(crate::public_routes())
            .into_openapi()
    })
    .clone()
}
