//! `adsync serve` (the REST API, the scheduler and embedded workers) and `adsync worker`
//! (workers only; any number, on any number of machines, against one PostgreSQL). Both stop
//! gracefully on SIGINT/SIGTERM: runs are checkpointed and requeued, leases released.

use std::{future::Future, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use adsync_service::{
    Service,
    events::Events,
    vault::Keyring,
    worker::{Worker, WorkerConfig},
};
use adsync_store::Store;
use clap::Args;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::{apart::Apart, demo, keys::KeyArgs, platform::DbArgs};

/// What workers share between `serve` and `worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Runs this process works on at once (0: none, an API-only node).
    #[arg(long, env = "ADSYNC_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// How long a run's lease lasts without renewal: a worker that dies (kill -9, machine
    /// lost) delays its runs this long before another worker takes them over.
    #[arg(long, env = "ADSYNC_LEASE_TIMEOUT", default_value = "30s", value_parser = crate::platform::positive_duration)]
    pub lease_timeout: Duration,
    /// Database connections of the workers (the API has a pool of its own, so a busy queue
    /// cannot slow it down). Default: two per core of this machine, 4 to 32.
    #[arg(long, env = "ADSYNC_DB_POOL", default_value_t = adsync_service::worker::default_pool(), value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_pool: u32,
}

impl WorkerArgs {
    fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            slots: self.workers,
            lease_ttl: self.lease_timeout,
            ..WorkerConfig::default()
        }
    }
}

/// `adsync serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub work: WorkerArgs,
    /// Port of the API (0 picks a free one and prints it).
    #[arg(long, env = "ADSYNC_PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "ADSYNC_HOST", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// No configuration needed: a SQLite file (adsync-demo.db), the built-in simulator and
    /// three demo tenants (reference, chaos, a tiny rate limit), synced every 30 s.
    #[arg(long)]
    pub demo: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    pub no_scheduler: bool,
}

/// The admin key from `ADSYNC_ADMIN_KEY` (never a flag: flags show up in `ps`).
fn admin_key() -> Option<SecretString> {
    std::env::var("ADSYNC_ADMIN_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .map(|k| SecretString::from(k.trim().to_owned()))
}

/// What a second signal says: the runs this process held are resumed by a worker (this
/// one once restarted, or another) when their leases run out.
const QUITTING: &str =
    "quitting now; the runs this process held are resumed by a worker once their leases run out";

/// Runs `adsync serve`.
pub async fn serve(mut args: ServeArgs) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::sync::stop_on_signals(shutdown.clone(), QUITTING));
    let mut admin = admin_key();
    let demo = if args.demo {
        let d = demo::prepare(&mut args.work.db).await?;
        if admin.is_none() {
            admin = Some(d.admin_key.clone());
        }
        Some(d)
    } else {
        None
    };
    args.work.keys.precheck(args.work.db.url())?;
    let store = args.work.db.connect().await?;
    let keyring = args.work.keys.require(&store, args.work.db.url())?;
    let service = Service::new(store, keyring.clone(), admin.clone());
    if admin.is_none() {
        tracing::warn!(
            "ADSYNC_ADMIN_KEY is not set: only tenant API keys can call the API, and none can be created without it"
        );
    }
    if let Some(d) = &demo {
        demo::seed(&service, d).await?;
    }
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}; pick another --port"))?;
    let bound = listener.local_addr()?;
    println!(
        "adsync API listening on http://{bound}/api/v1 (reference: http://{bound}/api/v1/docs)"
    );
    if let Some(d) = &demo {
        demo::print_welcome(d, bound);
    }
    let router = adsync_server::app(service.clone());
    let api = tokio::spawn(adsync_server::serve(listener, router, shutdown.clone()));
    let scheduler = (!args.no_scheduler).then(|| {
        tokio::spawn(adsync_service::scheduler::run(
            service.clone(),
            Duration::from_secs(1),
            shutdown.clone(),
        ))
    });
    let worker = if args.work.workers > 0 {
        let (db, connections) = (args.work.db.clone(), args.work.db_pool);
        // On SQLite the API's hub carries this worker's events to the dashboard (in-process
        // channels, no runtime of their own); on PostgreSQL the workers notify through their
        // pool.
        let events = matches!(service.store, Store::Sqlite(_)).then(|| service.events.clone());
        Some(
            start_workers(
                async move { Ok(db.connect_pool(connections).await?) },
                keyring.clone(),
                events,
                args.work.worker_config(),
                shutdown.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    shutdown.cancelled().await;
    if let Some(w) = worker {
        w.join().await??;
    }
    if let Some(s) = scheduler {
        s.await?;
    }
    // Live-event sockets are upgraded connections that graceful shutdown does not wait for:
    // ending their streams closes them cleanly.
    service.events.close();
    api.await??;
    drop(demo);
    service.store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Workers on a runtime of their own (see [`crate::apart`]) with the pool `connect` opens
/// there (a thousand runs writing cannot make the API wait for a connection). Returns once
/// that pool is open, so that a database they cannot reach is reported at the start.
/// `events`: a hub to publish through instead of the pool's own.
pub(crate) async fn start_workers(
    connect: impl Future<Output = anyhow::Result<Store>> + Send + 'static,
    keyring: Arc<Keyring>,
    events: Option<Events>,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<Apart<anyhow::Result<()>>> {
    let (opened, ready) = tokio::sync::oneshot::channel();
    let apart = crate::apart::on_own_runtime("adsync-worker", async move {
        let store = match connect.await {
            Ok(store) => {
                let _ = opened.send(Ok(()));
                store
            }
            Err(e) => {
                let _ = opened.send(Err(e));
                return Ok(());
            }
        };
        let mut service = Service::new(store.clone(), keyring, None);
        if let Some(events) = events {
            service = service.with_events(events);
        }
        let outcome = Worker::new(service, config).run(shutdown).await;
        store.close().await;
        Ok(outcome?)
    })?;
    ready
        .await
        .map_err(|_| anyhow::anyhow!("the workers' runtime ended before opening its pool"))??;
    Ok(apart)
}

/// Runs `adsync worker`.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::sync::stop_on_signals(shutdown.clone(), QUITTING));
    args.keys.precheck(args.db.url())?;
    let store = args.db.connect_pool(args.db_pool).await?;
    let keyring = args.keys.require(&store, args.db.url())?;
    let service = Service::new(store, keyring, None);
    let worker = Worker::new(service.clone(), args.worker_config());
    worker.run(shutdown).await?;
    service.store.close().await;
    Ok(ExitCode::SUCCESS)
}
