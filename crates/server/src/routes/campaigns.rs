//! A tenant's campaigns (filtered, sorted, cursor-paged) and one campaign's metric history.
//! The queries are `adsync_service::reads`.

use adsync_service::reads::{self, CampaignQuery, Removed, Sort};
use axum::{Json, extract::State};

use crate::{
    AppState,
    auth::Caller,
    error::{ApiResult, ErrorBody},
    extract::{ApiPath, ApiQuery},
    views::{CampaignPageView, CampaignsQuery, MetricHistory, MetricsQuery},
};

/// The tenant's campaigns. Removed ones (the platform no longer lists them) only with
/// `removed=true` or `include_removed=true`.
#[utoipa::path(get, operation_id = "list_campaigns", path = "/api/v1/tenants/{id}/campaigns", tag = "campaigns",
    params(("id" = String, Path, description = "Tenant id"), CampaignsQuery),
    responses(
        (status = 200, description = "A page of campaigns", body = CampaignPageView),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant (or not the key's)", body = ErrorBody),
        (status = 422, description = "A parameter is invalid (sort, limit, cursor)",
            body = ErrorBody),
    ))]
pub async fn list(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<CampaignsQuery>,
) -> ApiResult<Json<CampaignPageView>> {
    caller.require_tenant(&id)?;
    let sort = match &query.sort {
        Some(text) => text.parse::<Sort>()?,
        None => Sort::default(),
    };
    let removed = match (query.removed, query.include_removed) {
        (Some(true), _) => Removed::Only,
        (Some(false), _) => Removed::Exclude,
        (None, Some(true)) => Removed::Include,
        (None, _) => Removed::Exclude,
    };
    let read = CampaignQuery {
        status: query.status,
        q: query.q.filter(|q| !q.is_empty()),
        sort,
        removed,
        limit: query.limit.unwrap_or(reads::DEFAULT_LIMIT),
        cursor: query.cursor.filter(|c| !c.is_empty()),
    };
    s.service.tenants.get(&id).await?;
    Ok(Json(
        reads::campaigns(&s.service.store, &id, &read).await?.into(),
    ))
}

/// A campaign's metric history (one point per run that stored it), oldest first.
#[utoipa::path(get, operation_id = "campaign_metrics", path = "/api/v1/tenants/{id}/campaigns/{campaign_id}/metrics",
    tag = "campaigns",
    params(
        ("id" = String, Path, description = "Tenant id"),
        ("campaign_id" = String, Path, description = "Campaign id"),
        MetricsQuery,
    ),
    responses(
        (status = 200, description = "The history", body = MetricHistory),
        (status = 401, description = "No valid key", body = ErrorBody),
        (status = 404, description = "No such tenant or campaign", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
    ))]
pub async fn metrics(
    State(s): State<AppState>,
    caller: Caller,
    ApiPath((id, campaign_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<MetricsQuery>,
) -> ApiResult<Json<MetricHistory>> {
    caller.require_tenant(&id)?;
    let limit = query.limit.unwrap_or(reads::DEFAULT_METRICS_LIMIT);
    let points = reads::metrics(&s.service.store, &id, &campaign_id, limit).await?;
    Ok(Json(MetricHistory {
        campaign_id,
        data: points.into_iter().map(Into::into).collect(),
    }))
}
