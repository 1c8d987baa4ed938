//! `adsync keys`: make a master key, rotate credentials to a new one; and how every command
//! of the service finds its keyring (`ADSYNC_MASTER_KEY` or `--master-key-file`).

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use adsync_service::vault::{Keyring, MasterKey};
use adsync_store::Store;
use clap::{Args, Subcommand};
use secrecy::ExposeSecret;

use crate::{exit::config_error, platform::DbArgs};

/// Where the master key comes from.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// A file holding the master key (base64 of 32 bytes; several, comma-separated, during a
    /// rotation: the first encrypts, all decrypt). Default: the ADSYNC_MASTER_KEY variable.
    #[arg(long, env = "ADSYNC_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

impl KeyArgs {
    /// The keyring, from the file or `ADSYNC_MASTER_KEY`. `None` when neither is set.
    pub fn keyring(&self) -> anyhow::Result<Option<Keyring>> {
        if let Some(path) = &self.master_key_file {
            return Ok(Some(Keyring::from_file(path)?));
        }
        match self.text()? {
            Some(text) => Ok(Some(
                Keyring::parse(text.expose_secret())
                    .map_err(|e| anyhow::anyhow!("ADSYNC_MASTER_KEY: {e}"))?,
            )),
            None => Ok(None),
        }
    }

    /// The key text as given (file or variable).
    fn text(&self) -> anyhow::Result<Option<secrecy::SecretString>> {
        if let Some(path) = &self.master_key_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            return Ok(Some(text.trim().to_owned().into()));
        }
        Ok(std::env::var("ADSYNC_MASTER_KEY")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_owned().into()))
    }

    /// Refuses, before anything touches the database, a PostgreSQL database with no master
    /// key (and a key that does not parse, on any database).
    pub fn precheck(&self, db_url: &str) -> anyhow::Result<()> {
        let ring = self.keyring()?;
        if ring.is_none()
            && (db_url.starts_with("postgres://") || db_url.starts_with("postgresql://"))
        {
            return Err(no_master_key().into());
        }
        Ok(())
    }

    /// The keyring the service needs. On PostgreSQL (shared by many machines) a key must be
    /// given; on SQLite (one machine) one is created next to the database file when none is.
    pub fn require(&self, store: &Store, db_url: &str) -> anyhow::Result<Arc<Keyring>> {
        if let Some(ring) = self.keyring()? {
            return Ok(Arc::new(ring));
        }
        match store {
            Store::Postgres(_) => Err(no_master_key().into()),
            Store::Sqlite(_) => Ok(Arc::new(local_key(db_url)?)),
        }
    }
}

fn no_master_key() -> crate::exit::Failure {
    config_error(
        "no master key: set ADSYNC_MASTER_KEY to the output of `adsync keys generate` (or pass --master-key-file FILE); it encrypts the tenants' credentials",
    )
}

/// The key file kept next to a SQLite database (`FILE.db.key`, mode 0600), created once.
fn local_key(db_url: &str) -> anyhow::Result<Keyring> {
    let file = db_url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or("adsync.db");
    let path = PathBuf::from(format!("{file}.key"));
    if path.exists() {
        return Ok(Keyring::from_file(&path)?);
    }
    let key = MasterKey::generate();
    write_private(&path, key.to_base64().expose_secret())?;
    tracing::warn!(
        path = %path.display(),
        "no master key given: created one next to the SQLite database (keep it with the database; losing it loses the stored credentials)"
    );
    Ok(Keyring::new(key, Vec::new()))
}

fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create the key file {}: {e}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}

/// `adsync keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a new random master key (base64 of 32 bytes) for ADSYNC_MASTER_KEY.
    Generate,
    /// Rewrap every tenant's data key under a new master key. Without downtime: first run
    /// the servers with ADSYNC_MASTER_KEY="NEW,OLD", then rotate, then drop OLD.
    Rotate {
        #[command(flatten)]
        db: DbArgs,
        /// The current key(s) (or ADSYNC_MASTER_KEY).
        #[command(flatten)]
        keys: KeyArgs,
        /// A file holding the new master key.
        #[arg(long)]
        new_master_key_file: PathBuf,
    },
}

/// Runs `adsync keys`.
pub async fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Generate => {
            println!("{}", MasterKey::generate().to_base64().expose_secret());
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rotate {
            db,
            keys,
            new_master_key_file,
        } => {
            let new = Keyring::from_file(&new_master_key_file)?;
            let old = keys.text()?.ok_or_else(|| {
                config_error("the current master key is needed to rotate: set ADSYNC_MASTER_KEY or pass --master-key-file")
            })?;
            // The new key first (it wraps), then the current ones (they unwrap).
            let new_text = std::fs::read_to_string(&new_master_key_file).map_err(|e| {
                anyhow::anyhow!("cannot read {}: {e}", new_master_key_file.display())
            })?;
            let ring = Keyring::parse(&format!("{},{}", new_text.trim(), old.expose_secret()))?;
            let store = db.connect().await?;
            let service = adsync_service::Service::new(store, Arc::new(ring), None);
            let (rewrapped, current) = service.tenants.rotate_keys().await?;
            println!(
                "rotated: {rewrapped} tenant(s) rewrapped under {}, {current} already under it",
                new.current_id()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
