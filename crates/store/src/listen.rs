//! `LISTEN` on a session of its own.

use sqlx::{
    PgPool,
    postgres::{PgListener, PgPoolOptions},
};

/// A listener on `channel`, on its own one-session pool built from `pool`'s connect options.
///
/// Not on `pool` itself: a listener holds its session for as long as it lives (one of the
/// pool's few), and after a lost connection `recv` reconnects by taking a session from its
/// pool and sending `LISTEN` on it. A caller that drops `recv` there (every `select!` on it
/// does) would return a shared session still listening, whose notifications then reach
/// whoever borrows it next. On a pool of its own, that session is only ever the listener's.
pub async fn listener(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&own).await?;
    listener.listen(channel).await?;
    Ok(listener)
}
