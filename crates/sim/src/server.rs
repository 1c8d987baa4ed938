//! The simulator's HTTP surface: routes, the per-client sliding window, token checks and the
//! chaos faults, over shared state.

use std::{
    collections::{HashMap, VecDeque},
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{SimConfig, SimStats, data::DataSet};

/// The simulator's state, shared by every request.
pub struct SimState {
    config: SimConfig,
    data: DataSet,
    started: Instant,
    tokens: Mutex<HashMap<String, Instant>>,
    windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    listing_calls: AtomicU64,
    in_flight: AtomicU64,
    rng: Mutex<StdRng>,
    stats: Mutex<SimStats>,
    shutdown: CancellationToken,
}

impl SimState {
    fn new(config: SimConfig) -> Self {
        Self {
            data: DataSet::generate(&config),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed ^ 0x5eed_c4a0)),
            config,
            started: Instant::now(),
            tokens: Mutex::default(),
            windows: Mutex::default(),
            listing_calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            stats: Mutex::default(),
            shutdown: CancellationToken::new(),
        }
    }

    fn record(&self, endpoint: &str, outcome: &str) {
        let mut stats = self.stats.lock().expect("stats lock");
        *stats
            .requests
            .entry(endpoint.into())
            .or_default()
            .entry(outcome.into())
            .or_default() += 1;
    }

    fn snapshot(&self) -> SimStats {
        let mut s = self.stats.lock().expect("stats lock").clone();
        s.in_flight = self.in_flight.load(Ordering::Relaxed);
        s
    }
}

/// The router, without a socket: tests may call it directly.
pub fn app(state: Arc<SimState>) -> Router {
    let api = Router::new()
        .route("/api/campaigns", get(list_campaigns))
        .route("/api/campaigns/{id}/sync", post(sync_campaign))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            track_in_flight,
        ));
    Router::new()
        .route("/auth/token", post(issue_token))
        .route("/health", get(health))
        .route("/__sim/stats", get(stats))
        .merge(api)
        .with_state(state)
}

/// A simulator bound to a socket, serving until dropped or shut down.
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<SimState>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and serves in a background task.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SimState::new(config));
        let router = app(state.clone());
        let shutdown = state.shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        Ok(Self {
            addr,
            state,
            task: Some(task),
        })
    }

    /// Starts on 127.0.0.1 with a free port: what tests want.
    pub async fn start_local(config: SimConfig) -> io::Result<Self> {
        Self::start(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, to hand to a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The configuration in force.
    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }

    /// What the simulator has seen so far.
    pub fn stats(&self) -> SimStats {
        self.state.snapshot()
    }

    /// Stops accepting, releases hanging requests and waits for the server task.
    pub async fn shutdown(mut self) -> io::Result<()> {
        self.state.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Serves until the task ends (for `adsync simulate`).
    pub async fn wait(mut self) -> io::Result<()> {
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

fn error(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({ "error": error, "message": message }))).into_response()
}

/// Seconds as JSON: an integer when whole (what the reference sends), else a float.
fn secs_json(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}

async fn issue_token(State(state): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let Some(creds) = creds else {
        state.record("auth", "401");
        return error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Missing or invalid Authorization header. Expected: Basic <base64>",
        );
    };
    let (email, password) = creds.split_once(':').unwrap_or((&creds, ""));
    if email != state.config.email || password != state.config.password {
        state.record("auth", "401");
        return error(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials",
            "Email or password is incorrect",
        );
    }
    let token: String = {
        let mut rng = rand::rng();
        (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect()
    };
    state
        .tokens
        .lock()
        .expect("tokens lock")
        .insert(token.clone(), Instant::now());
    state.record("auth", "200");
    state.stats.lock().expect("stats lock").tokens_issued += 1;
    Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": secs_json(state.config.scaled(state.config.token_ttl)),
        "issued_at": Utc::now().timestamp(),
    }))
    .into_response()
}

async fn health(State(state): State<Arc<SimState>>) -> Response {
    state.record("health", "200");
    Json(json!({
        "status": "ok",
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "uptime": state.started.elapsed().as_secs_f64(),
    }))
    .into_response()
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    Json(state.snapshot()).into_response()
}

/// Counts `/api` requests in flight, hangs included, and keeps the peak.
async fn track_in_flight(State(state): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    struct Guard<'a>(&'a AtomicU64);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    {
        let mut stats = state.stats.lock().expect("stats lock");
        stats.peak_concurrency = stats.peak_concurrency.max(now);
    }
    let _guard = Guard(&state.in_flight);
    next.run(req).await
}

/// The bearer check of every `/api` route. Unlike the reference server (one global issue
/// time, token value unchecked), each token has its own age, as on a real platform.
fn token_rejection(state: &SimState, headers: &HeaderMap, endpoint: &str) -> Option<Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        state.record(endpoint, "401");
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Missing or invalid Authorization header. Expected: Bearer <token>",
        ));
    };
    let issued = state
        .tokens
        .lock()
        .expect("tokens lock")
        .get(token)
        .copied();
    let Some(issued) = issued else {
        state.record(endpoint, "401");
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Invalid access token",
        ));
    };
    let ttl = state.config.scaled(state.config.token_ttl);
    if issued.elapsed() > ttl {
        state.record(endpoint, "401");
        let expired_at =
            Utc::now() - chrono::Duration::from_std(issued.elapsed() - ttl).unwrap_or_default();
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "error": "Token expired",
                    "message": "Access token has expired. Please obtain a new token.",
                    "expired_at": expired_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                })),
            )
                .into_response(),
        );
    }
    None
}

/// The reference's sliding window: a request is refused when `N` requests of the same client
/// arrived less than `W` ago. A refused request is not recorded.
fn rate_rejection(state: &SimState, headers: &HeaderMap, endpoint: &str) -> Option<Response> {
    let client = headers
        .get("x-client-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default")
        .to_owned();
    let limit = state.config.effective_rate_limit();
    let now = Instant::now();
    let allowed = {
        let mut windows = state.windows.lock().expect("windows lock");
        let log = windows.entry(client.clone()).or_default();
        while log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= limit.window)
        {
            log.pop_front();
        }
        let allowed = log.len() < limit.requests as usize;
        if allowed {
            log.push_back(now);
        }
        allowed
    };
    {
        let mut stats = state.stats.lock().expect("stats lock");
        let c = stats.clients.entry(client).or_default();
        c.requests += 1;
        if !allowed {
            c.rate_limited += 1;
            stats.rate_limited += 1;
        }
    }
    if allowed {
        return None;
    }
    state.record(endpoint, "429");
    let retry_after = state.config.scaled(state.config.rate_limit.window);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "error": "Rate limit exceeded",
            "message": format!("Too many requests. Limit: {} per minute", limit.requests),
            "retry_after": secs_json(retry_after),
        })),
    )
        .into_response();
    if state.config.retry_after_header {
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(response)
}

/// A chaos fault drawn for one request.
enum Fault {
    Unavailable,
    Hang,
    Reset,
    Truncate,
}

fn draw_fault(state: &SimState) -> Option<Fault> {
    let rates = state.config.chaos;
    let roll: f64 = state.rng.lock().expect("rng lock").random();
    let mut edge = 0.0;
    for (rate, fault) in [
        (rates.error, Fault::Unavailable),
        (rates.hang, Fault::Hang),
        (rates.reset, Fault::Reset),
        (rates.truncate, Fault::Truncate),
    ] {
        edge += rate;
        if roll < edge {
            return Some(fault);
        }
    }
    None
}

fn unavailable() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Service temporarily unavailable",
        "The service is experiencing issues. Please retry after a short delay.",
    )
}

/// Applies a fault, or serves `body` as JSON.
async fn respond(state: &SimState, endpoint: &str, fault: Option<Fault>, body: Value) -> Response {
    match fault {
        None => {
            state.record(endpoint, "200");
            Json(body).into_response()
        }
        Some(Fault::Unavailable) => {
            state.record(endpoint, "503");
            unavailable()
        }
        Some(Fault::Hang) => {
            state.record(endpoint, "hang");
            // No answer, ever: only the client's timeout gets out. Released at shutdown.
            state.shutdown.cancelled().await;
            unavailable()
        }
        Some(Fault::Reset) => {
            state.record(endpoint, "reset");
            // The body stream fails before its first byte: hyper aborts the connection, so the
            // client sees the connection die without a complete response.
            let stream = futures::stream::once(async {
                Err::<Bytes, io::Error>(io::Error::new(io::ErrorKind::ConnectionReset, "chaos"))
            });
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from_stream(stream))
                .expect("static response parts")
        }
        Some(Fault::Truncate) => {
            state.record(endpoint, "truncated");
            let full = serde_json::to_vec(&body).expect("JSON serializes");
            let cut = full.len() / 2;
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(full[..cut].to_vec()))
                .expect("static response parts")
        }
    }
}

#[derive(Deserialize)]
struct ListParams {
    page: Option<String>,
    limit: Option<String>,
}

/// Like the reference's `parseInt(x) || default`: junk and zero fall back to the default.
fn int_param(raw: Option<&str>, default: u64) -> u64 {
    raw.and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

async fn list_campaigns(
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
    if state
        .config
        .fail_every
        .is_some_and(|n| n > 0 && call % n == 0)
    {
        state.record(EP, "503");
        return unavailable();
    }
    let fault = draw_fault(&state);
    let page = int_param(params.page.as_deref(), 1);
    let mut limit = int_param(params.limit.as_deref(), 10);
    if let Some(cap) = state.config.max_limit {
        limit = limit.min(cap.max(1));
    }
    let total = state.data.len() as u64;
    let from = page.saturating_sub(1).saturating_mul(limit);
    let to = from.saturating_add(limit);
    let data = if from < total {
        state.data.page(from as usize, to.min(total) as usize)
    } else {
        Vec::new()
    };
    let body = json!({
        "data": data,
        "pagination": { "page": page, "limit": limit, "total": total, "has_more": to < total },
    });
    respond(&state, EP, fault, body).await
}

async fn sync_campaign(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    const EP: &str = "sync";
    if let Some(r) =
        token_rejection(&state, &headers, EP).or_else(|| rate_rejection(&state, &headers, EP))
    {
        return r;
    }
    if !state.data.contains(&id) {
        state.record(EP, "404");
        return error(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("Campaign {id} does not exist"),
        );
    }
    let fault = draw_fault(&state);
    if fault.is_none() {
        tokio::time::sleep(state.config.scaled(state.config.sync_delay)).await;
        *state
            .stats
            .lock()
            .expect("stats lock")
            .syncs
            .entry(id.clone())
            .or_default() += 1;
    }
    let body = json!({
        "success": true,
        "campaign_id": id,
        "synced_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "message": "Campaign data synced successfully",
    });
    respond(&state, EP, fault, body).await
}
