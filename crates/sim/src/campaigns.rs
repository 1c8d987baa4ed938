//! `GET /api/campaigns` and `POST /api/campaigns/{id}/sync`: pages cut by the configured
//! [`HasMore`] mode, the reference's every-n-th 503, wrong-shape answers and the slow sync.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
};

use axum::{
    Json,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    HasMore,
    auth::token_rejection,
    data::campaign_number,
    faults::{draw_fault, error, serve_fault, unavailable},
    gate::rate_rejection,
    server::SimState,
};

/// Most invented campaigns on one page: `limit` is uncapped by default, and a client asking
/// for `limit=1000000000` past the end must not take the simulator's memory with it.
const MAX_INVENTED_PER_PAGE: u64 = 10_000;

/// The listing's query string, raw: the reference parses leniently (see [`int_param`]).
#[derive(Deserialize)]
pub struct ListParams {
    page: Option<String>,
    limit: Option<String>,
}

/// Like the reference's `parseInt(x) || default`: junk and zero fall back to the default.
fn int_param(raw: Option<&str>, default: u64) -> u64 {
    raw.and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// One page as the configured [`HasMore`] mode cuts it.
struct Page {
    data: Vec<Value>,
    total: u64,
    has_more: bool,
}

fn cut_page(state: &SimState, page: u64, limit: u64) -> Page {
    let data = &state.data;
    let view = data.view();
    let live = view.len() as u64;
    let from = page.saturating_sub(1).saturating_mul(limit);
    let to = from.saturating_add(limit);
    let mut out = Vec::with_capacity(limit.min(live.max(MAX_INVENTED_PER_PAGE)) as usize);
    // Positions below `live` are listed campaigns; both ends are at most `live` here.
    let listed = |out: &mut Vec<Value>, a: u64, b: u64| {
        data.render_listed(&view, a as usize..b as usize, out);
    };
    listed(&mut out, from.min(live), to.min(live));
    let invented = |out: &mut Vec<Value>| {
        let start = from.max(live);
        if to > start {
            // Numbered after the highest real campaign: without changes to the data set,
            // position p holds campaign_(p+1), as on the reference server.
            let first = view.highest().saturating_add(1 + (start - live));
            data.render_invented(first, (to - start).min(MAX_INVENTED_PER_PAGE), out);
        }
    };
    let has_more = match state.config.has_more {
        HasMore::Honest => to < live,
        HasMore::Endless => true,
        HasMore::Repeat => {
            if from >= live && live > 0 {
                let last = (live - 1) / limit * limit;
                listed(&mut out, last, live);
            }
            true
        }
        HasMore::Invent => {
            invented(&mut out);
            true
        }
        HasMore::Reference => {
            invented(&mut out);
            page < live.div_ceil(10)
        }
    };
    Page {
        data: out,
        total: live,
        has_more,
    }
}

fn page_body(state: &SimState, page: u64, limit: u64) -> Value {
    let Page {
        data,
        total,
        has_more,
    } = cut_page(state, page, limit);
    let mut body = json!({
        "data": data,
        "pagination": { "page": page, "limit": limit, "total": total, "has_more": has_more },
    });
    if state.config.omit_total {
        body["pagination"]
            .as_object_mut()
            .expect("pagination is an object")
            .remove("total");
    }
    body
}

/// `GET /api/campaigns?page=P&limit=L`.
pub async fn list(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Response {
    const EP: &str = "list";
    if let Some(r) =
        token_rejection(&state, &headers, EP).or_else(|| rate_rejection(&state, &headers, EP))
    {
        return r;
    }
    let call = state.listing_calls.fetch_add(1, Ordering::Relaxed) + 1;
    let page = int_param(params.page.as_deref(), 1);
    let mut limit = int_param(params.limit.as_deref(), 10);
    if let Some(cap) = state.config.max_limit {
        limit = limit.min(cap.max(1));
    }
    // Before the 503s and the chaos: a wrong shape is the answer every time, so no retry
    // ever fixes it.
    if state.config.wrong_shape_pages.contains(&page) {
        let data = cut_page(&state, page, limit).data;
        state.record(EP, "wrong_shape");
        return Json(json!({ "campaigns": data, "next": null })).into_response();
    }
    if state
        .config
        .fail_every
        .is_some_and(|n| n > 0 && call % n == 0)
    {
        state.record(EP, "503");
        return unavailable();
    }
    match draw_fault(&state) {
        None => {
            let body = page_body(&state, page, limit);
            state.record_list_ok(page);
            Json(body).into_response()
        }
        Some(fault) => serve_fault(&state, EP, fault, || page_body(&state, page, limit)).await,
    }
}

/// Whether the sync endpoint knows `id`: a listed campaign; with [`HasMore::Reference`] any
/// `campaign_N` (the reference checks nothing); with [`HasMore::Invent`] also every number
/// past the real campaigns (the invented ones).
fn sync_target(state: &SimState, id: &str) -> Option<u64> {
    let number = campaign_number(id)?;
    let known = match state.config.has_more {
        HasMore::Reference => true,
        HasMore::Invent => {
            let view = state.data.view();
            number > view.highest() || view.listed(number)
        }
        _ => state.data.is_listed(number),
    };
    known.then_some(number)
}

/// `POST /api/campaigns/{id}/sync`.
pub async fn sync(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    extensions: axum::http::Extensions,
) -> Response {
    const EP: &str = "sync";
    if let Some(r) =
        token_rejection(&state, &headers, EP).or_else(|| rate_rejection(&state, &headers, EP))
    {
        return r;
    }
    let Some(number) = sync_target(&state, &id) else {
        state.record(EP, "404");
        return error(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("Campaign {id} does not exist"),
        );
    };
    let delay = state.config.scaled(state.config.sync_delay);
    if state
        .config
        .wrong_shape_sync_every
        .is_some_and(|k| k > 0 && number.is_multiple_of(k as u64))
    {
        tokio::time::sleep(delay).await;
        state.record(EP, "wrong_shape");
        return Json(json!({ "ok": true })).into_response();
    }
    let body = || {
        json!({
            "success": true,
            "campaign_id": id,
            "synced_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "message": "Campaign data synced successfully",
        })
    };
    match draw_fault(&state) {
        None => {
            tokio::time::sleep(delay).await;
            {
                let mut stats = state.stats.lock().expect("stats lock");
                if let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() {
                    let peers = stats.sync_peers.entry(id.clone()).or_default();
                    if !peers.contains(&peer.ip()) {
                        peers.push(peer.ip());
                    }
                }
                *stats.syncs.entry(id.clone()).or_default() += 1;
            }
            state.record(EP, "200");
            Json(body()).into_response()
        }
        Some(fault) => serve_fault(&state, EP, fault, body).await,
    }
}
