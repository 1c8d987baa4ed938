//! `adsync serve --demo`: a living system with no configuration. A SQLite file
//! (`adsync-demo.db`, its master key beside it), three in-process simulators at time scale 60
//! (one platform minute is one second) and three tenants synced every 30 s: `reference` (the
//! reference server's behaviour), `chaos` (503s, hangs, resets, truncated bodies, hostile
//! names), `tiny-rate-limit` (2 requests per window: its runs outlast the schedule, so ticks
//! are skipped, not piled up).

use std::net::SocketAddr;

use adsync_domain::RateLimit;
use adsync_service::{Service, tenants::NewTenant, tenants::TenantPatch, vault::Credentials};
use adsync_sim::{Profile, SimConfig, Simulator};
use secrecy::SecretString;

use crate::platform::DbArgs;

const SCALE: f64 = 60.0;
const SCHEDULE: &str = "*/30 * * * * *";

/// The demo's simulators and admin key.
pub struct Demo {
    pub admin_key: SecretString,
    sims: Vec<(&'static str, Simulator)>,
}

/// Points the database at the demo file (unless one is configured) and starts the
/// simulators.
pub async fn prepare(db: &mut DbArgs) -> anyhow::Result<Demo> {
    if db.database_url.is_none() {
        db.database_url = Some("sqlite://adsync-demo.db".into());
    }
    let mut sims = Vec::new();
    for (name, profile, limit) in [
        ("reference", Profile::Reference, RateLimit::PLATFORM_DEFAULT),
        ("chaos", Profile::Chaos, RateLimit::PLATFORM_DEFAULT),
        (
            "tiny-rate-limit",
            Profile::Reference,
            RateLimit::new(2, std::time::Duration::from_secs(60)).expect("2/60s"),
        ),
    ] {
        let config = SimConfig {
            time_scale: SCALE,
            rate_limit: limit,
            ..SimConfig::for_profile(profile)
        };
        sims.push((name, Simulator::start_local(config).await?));
    }
    let mut bytes = [0u8; 24];
    rand_bytes(&mut bytes);
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Demo {
        admin_key: SecretString::from(format!("demo_{key}")),
        sims,
    })
}

fn rand_bytes(buf: &mut [u8]) {
    use std::io::Read;
    // The OS generator; the demo key only guards a local demo.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom")
        && f.read_exact(buf).is_ok()
    {
        return;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seed >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
    }
}

/// Creates the demo tenants, or points them at this start's simulators, and queues a first
/// run for each so there is something to see at once.
pub async fn seed(service: &Service, demo: &Demo) -> anyhow::Result<()> {
    let existing = service.tenants.list().await?;
    for (name, sim) in &demo.sims {
        let config = sim.config();
        let limit = config.effective_rate_limit().to_string();
        let creds = || {
            Credentials::new(
                config.email.clone(),
                SecretString::from(config.password.clone()),
            )
        };
        match existing.iter().find(|t| t.name == *name) {
            Some(t) => {
                service
                    .tenants
                    .update(
                        &t.id,
                        TenantPatch {
                            api_url: Some(sim.url()),
                            rate_limit: Some(limit),
                            ..TenantPatch::default()
                        },
                        None,
                    )
                    .await?;
            }
            None => {
                service
                    .tenants
                    .create(
                        NewTenant {
                            name: (*name).to_owned(),
                            api_url: sim.url(),
                            client_id: None,
                            rate_limit: Some(limit),
                            page_size: Some(100),
                            schedule: Some(SCHEDULE.into()),
                            time_zone: None,
                            paused: false,
                            credentials: creds(),
                        },
                        None,
                    )
                    .await?;
            }
        }
    }
    for t in service.tenants.list().await? {
        service
            .queue
            .enqueue(
                adsync_service::queue::RunRequest {
                    tenant: &t.id,
                    page_size: t.page_size,
                    platform: &t.api_url,
                    requested_by: "demo",
                },
                None,
            )
            .await?;
    }
    Ok(())
}

/// What to try next, on stdout.
pub fn print_welcome(demo: &Demo, addr: SocketAddr) {
    use secrecy::ExposeSecret;
    println!(
        "demo: 3 tenants (reference, chaos, tiny-rate-limit) against built-in simulators at time scale {SCALE}, synced every 30 s"
    );
    println!(
        "demo admin key (this run only): {}",
        demo.admin_key.expose_secret()
    );
    println!("dashboard: open http://{addr}/ and sign in with the demo admin key");
    println!("try: curl -s -H \"Authorization: Bearer $KEY\" http://{addr}/api/v1/tenants");
}
