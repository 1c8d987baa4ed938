//! What a running sync shows: a progress bar on a terminal, else a log line every few seconds.
//! When the platform is failing, the line says so (for how long, the last error, when the
//! next try goes) instead of an ETA that cannot move.

use std::{io::IsTerminal, sync::Arc, time::Duration};

use adsync_client::AdClient;
use adsync_sync::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

/// The status part of the line: the ETA, or what is wrong with the platform.
fn status(progress: &Progress, client: &AdClient) -> (String, String) {
    let s = progress.snapshot();
    let c = client.stats();
    let limit = client.config().rate_limit;
    let (calls_left, eta) = progress.eta(limit);
    let counts = format!(
        "pages {} · stored {} · synced {} · dead-lettered {} · retries {} · 429s {}",
        s.pages, s.stored, s.synced, s.dead_lettered, c.retries, c.rate_limited
    );
    let tail = match client.failing() {
        Some(f) => {
            let next = f.next_attempt_at.map_or_else(String::new, |at| {
                format!(
                    "; next try in {:.1} s",
                    at.saturating_duration_since(Instant::now()).as_secs_f64()
                )
            });
            format!(
                "platform failing for {:.0} s ({} attempts): {}{next}",
                f.since.elapsed().as_secs_f64(),
                f.attempts,
                crate::one_line(&f.last_error)
            )
        }
        None => format!(
            "{calls_left} calls left · ETA {}",
            humantime::format_duration(Duration::from_secs(eta.as_secs()))
        ),
    };
    (counts, tail)
}

/// Runs until aborted.
pub async fn show(progress: Arc<Progress>, client: AdClient) {
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        // The task is aborted at the end of the run: clear the bar then.
        let _clear = ClearOnDrop(bar.clone());
        loop {
            let s = progress.snapshot();
            let (counts, tail) = status(&progress, &client);
            bar.set_length(s.total_hint.max(s.seen));
            bar.set_position(s.synced + s.dead_lettered);
            bar.set_message(format!("{counts} · {tail}"));
            bar.tick();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let (counts, tail) = status(&progress, &client);
            tracing::info!("progress: {counts} · {tail}");
        }
    }
}

struct ClearOnDrop(ProgressBar);
impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
