//! The simulator's shared state, its router and [`Simulator`], the router bound to a socket.
//!
//! The handlers live next door: `auth` (tokens), `gate` (what every `/api` request passes
//! first: in-flight count, arrival jitter, rate limit), `campaigns` (listing and sync),
//! `faults` (503s, hangs, resets, truncation) and `admin` (`/__sim/...`).

use std::{
    collections::{HashMap, VecDeque},
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::State,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{SecondsFormat, Utc};
use rand::{SeedableRng, rngs::StdRng};
use serde_json::json;
use tokio::{net::TcpListener, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{Mutation, SimConfig, SimStats, admin, auth, campaigns, data::DataSet, gate};

/// The simulator's state, shared by every request.
pub struct SimState {
    pub(crate) config: SimConfig,
    pub(crate) data: DataSet,
    pub(crate) started: Instant,
    pub(crate) tokens: Mutex<HashMap<String, Instant>>,
    pub(crate) windows: Mutex<HashMap<String, VecDeque<Instant>>>,
    pub(crate) listing_calls: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) rng: Mutex<StdRng>,
    /// Apart from `rng`, so that turning jitter on does not change the chaos draws.
    pub(crate) jitter_rng: Mutex<StdRng>,
    /// Scheduled changes not applied yet, soonest first.
    pending: Mutex<VecDeque<Mutation>>,
    pub(crate) stats: Mutex<SimStats>,
    pub(crate) shutdown: CancellationToken,
    /// [`SimConfig::arrivals_log`], open.
    pub(crate) arrivals: Option<Mutex<std::io::LineWriter<std::fs::File>>>,
}

impl SimState {
    /// Fresh state for `config`: the data set generated, mutations due at 0 calls applied.
    pub fn new(config: SimConfig) -> Self {
        let mut pending: Vec<Mutation> = config
            .mutations
            .iter()
            .filter(|m| m.after_list_calls > 0)
            .copied()
            .collect();
        pending.sort_by_key(|m| m.after_list_calls);
        // One write per line: the simulator may be killed at any moment (a bench ends so).
        let arrivals = config.arrivals_log.as_ref().and_then(|path| {
            std::fs::File::create(path)
                .inspect_err(|e| {
                    tracing::warn!(path = %path.display(), error = %e, "arrivals log not written");
                })
                .ok()
                .map(|f| Mutex::new(std::io::LineWriter::new(f)))
        });
        Self {
            data: DataSet::generate(&config),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed ^ 0x5eed_c4a0)),
            jitter_rng: Mutex::new(StdRng::seed_from_u64(config.seed ^ 0x0717_7e42)),
            pending: Mutex::new(pending.into()),
            config,
            started: Instant::now(),
            tokens: Mutex::default(),
            windows: Mutex::default(),
            listing_calls: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            stats: Mutex::default(),
            shutdown: CancellationToken::new(),
            arrivals,
        }
    }

    /// Counts one answer of `endpoint` with `outcome`.
    pub(crate) fn record(&self, endpoint: &str, outcome: &str) {
        let mut stats = self.stats.lock().expect("stats lock");
        *stats
            .requests
            .entry(endpoint.into())
            .or_default()
            .entry(outcome.into())
            .or_default() += 1;
    }

    /// Records a well-formed 200 listing answer of `page`, then applies the scheduled changes
    /// now due: the answer just given still shows the data before them.
    pub(crate) fn record_list_ok(&self, page: u64) {
        let answered = {
            let mut stats = self.stats.lock().expect("stats lock");
            *stats
                .requests
                .entry("list".into())
                .or_default()
                .entry("200".into())
                .or_default() += 1;
            *stats.pages_served.entry(page).or_default() += 1;
            stats.list_calls_ok += 1;
            stats.list_calls_ok
        };
        if self.config.mutations.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().expect("pending lock");
        while pending
            .front()
            .is_some_and(|m| m.after_list_calls <= answered)
        {
            let m = pending.pop_front().expect("front checked");
            self.data.apply(&m);
            tracing::debug!(mutation = %m, answered, "data set changed");
        }
    }

    /// The stats now, in-flight count included.
    pub(crate) fn snapshot(&self) -> SimStats {
        let mut s = self.stats.lock().expect("stats lock").clone();
        s.in_flight = self.in_flight.load(Ordering::Relaxed);
        s
    }
}

/// The router, without a socket: tests may call it directly.
pub fn app(state: Arc<SimState>) -> Router {
    // The last layer runs first: a request is in flight while it waits out its jitter.
    let api = Router::new()
        .route("/api/campaigns", get(campaigns::list))
        .route("/api/campaigns/{id}/sync", post(campaigns::sync))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gate::arrival_jitter,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            gate::track_in_flight,
        ));
    Router::new()
        .route("/auth/token", post(auth::issue_token))
        .route("/health", get(health))
        .merge(admin::routes())
        .merge(api)
        .with_state(state)
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
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
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

    /// The ids listed now, in listing order (what pages would hold, read without serving
    /// anything: no counter grows).
    pub fn campaign_ids(&self) -> Vec<String> {
        self.state.data.ids()
    }

    /// Removes a listed campaign: it disappears from listings, `total` drops, and its sync
    /// call answers 404 (except with [`HasMore::Reference`](crate::HasMore::Reference)).
    /// False if `id` is not listed. Same as `POST /__sim/campaigns/{id}/remove`.
    pub fn remove_campaign(&self, id: &str) -> bool {
        self.state.data.remove(id)
    }

    /// Lists a removed campaign again, at its old place, with its counters where they were.
    /// False if `id` was not removed. Same as `POST /__sim/campaigns/{id}/restore`.
    pub fn restore_campaign(&self, id: &str) -> bool {
        self.state.data.restore(id)
    }

    /// Creates `n` campaigns numbered after the highest number ever used, at the front of
    /// the listing (in number order) or at its back, and returns their ids. Same as
    /// `POST /__sim/campaigns?count=N&at=front|back`.
    pub fn insert_campaigns(&self, n: usize, front: bool) -> Vec<String> {
        self.state.data.insert(n, front)
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
