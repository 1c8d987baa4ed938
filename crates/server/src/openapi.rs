//! The OpenAPI document: generated from the handlers' `#[utoipa::path]` attributes and the
//! body types' `ToSchema` derives (utoipa-axum collects them as routes are registered), so a
//! route cannot be served without being documented. Served at `/api/v1/openapi.json`.

use std::sync::OnceLock;

use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, Object, Ref, RefOr, Response, Type,
        header::HeaderBuilder,
        path::{Operation, ParameterIn},
        response::ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
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
        let mut doc = crate::protected_routes()
            .merge(crate::public_routes())
            .into_openapi();
        document_shared_answers(&mut doc);
        doc
    })
    .clone()
}

/// Adds to every operation the answers that come from what runs before its handler, so that
/// each handler's `responses(...)` need list only its own and a new endpoint cannot forget
/// them (schemathesis' status_code_conformance found them missing):
///
/// - a JSON body (`ApiJson`): 400 malformed, 413 too large, 415 not sent as JSON, 422 a value
///   of the wrong type, a missing or unknown field;
/// - query parameters (`ApiQuery`): 422 one that does not parse, or an unknown one;
/// - path parameters (`ApiPath`): 400 one that cannot be read (not a number where one is
///   wanted, percent-encoded bytes that are not UTF-8);
/// - a key needed (the default security; also `GET /api/v1/session`, which reads the
///   credential itself): 401 without a valid one, 403 for a cookie request from another origin
///   or a change made with the cookie without `X-Adsync-Csrf`;
/// - the database (everything but the process's own `operations`, which `readyz` documents
///   itself): 503 with `Retry-After` while it is unreachable.
///
/// An answer the handler documents already is left as it is.
fn document_shared_answers(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            document_operation(op);
        }
    }
}

fn document_operation(op: &mut Operation) {
    let has_in = |op: &Operation, place: ParameterIn| {
        op.parameters.iter().flatten().any(|p| match p {
            RefOr::T(p) => p.parameter_in == place,
            RefOr::Ref(_) => false,
        })
    };
    let mut add: Vec<(&str, &str)> = Vec::new();
    if op.request_body.is_some() {
        add.extend([
            ("400", "Malformed JSON"),
            ("413", "The body is too large"),
            (
                "415",
                "The body is not sent as JSON (`Content-Type: application/json`)",
            ),
            (
                "422",
                "A value is invalid: of the wrong type, missing, or a field unknown",
            ),
        ]);
    }
    if has_in(op, ParameterIn::Query) {
        add.push((
            "422",
            "A query parameter is invalid, or not one this endpoint takes",
        ));
    }
    if has_in(op, ParameterIn::Path) {
        add.push(("400", "A path parameter cannot be read"));
    }
    // `security(())` (public) is `Some([{}])`; the default (a key) is `None`.
    let needs_key = op.security.as_ref().is_none_or(|s| s.is_empty());
    if needs_key {
        add.extend([
            ("401", "No valid key"),
            (
                "403",
                "A request with the session cookie from another origin, or a change without \
                 the `X-Adsync-Csrf` header",
            ),
        ]);
    }
    let operations_tag = op.tags.iter().flatten().any(|t| t.as_str() == "operations");
    for (status, description) in add {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description).into());
    }
    if !operations_tag {
        op.responses
            .responses
            .entry("503".to_owned())
            .or_insert_with(|| {
                error_body("The database is unavailable; try again after `Retry-After`")
                    .header(
                        "Retry-After",
                        HeaderBuilder::new()
                            .schema(Some(Object::with_type(Type::Integer)))
                            .description(Some("Seconds to wait"))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}

fn error_body(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    )
}

fn error_response(description: &str) -> Response {
    error_body(description).build()
}
