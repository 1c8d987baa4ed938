//! No secret in any log line, error or Debug output, even at trace level.

mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use adsync_client::AdClient;
use adsync_domain::{CampaignId, RateLimit};
use adsync_sim::{Profile, SimConfig};
use base64::{Engine, engine::general_purpose::STANDARD};
use common::*;

use tracing_subscriber::fmt::MakeWriter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Every 64-hex-digit run in `text`: the simulator's tokens look like that.
fn hex_tokens(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() >= 64)
        .collect()
}

// current_thread: the subscriber set by set_default is thread-local, and every task of this
// runtime (the simulator's included) runs on this thread.
#[tokio::test(flavor = "current_thread")]
async fn trace_logs_errors_and_debug_output_hold_no_secret() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // Short tokens (refreshes), an underestimated limit (429s), 503s: every path that
    // touches credentials or tokens.
    let mut config = SimConfig::for_profile(Profile::Reference);
    config.token_ttl = Duration::from_secs(30);
    let sim = start_sim(config, 300.0).await;
    let window = sim.config().effective_rate_limit().window;
    let client = AdClient::new(config_for(&sim, RateLimit::new(14, window).unwrap())).unwrap();
    let campaigns: Vec<_> = list_records(&client, 10).await;
    for c in campaigns.iter().take(15) {
        client
            .sync_campaign(
                &CampaignId::parse(
                    serde_json::from_str::<serde_json::Value>(c.get()).unwrap()["id"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let mut bad = config_for(&sim, window_limit(window));
    bad.credentials = credentials("Wr0ng-Secret!");
    let bad_client = AdClient::new(bad.clone()).unwrap();
    let err = bad_client.list_campaigns(1, 10).await.unwrap_err();
    let debug_dump = format!(
        "{client:?} {bad:?} {err:?} {err} {:?}",
        client.tokens().current().await.unwrap()
    );

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.len() > 10_000,
        "trace logging captured too little: {} bytes",
        logs.len()
    );
    assert!(
        sim.stats().rate_limited > 0 && sim.stats().tokens_issued > 1,
        "paths not exercised"
    );
    for text in [&logs, &debug_dump] {
        for secret in [
            PASSWORD.to_owned(),
            "Wr0ng-Secret!".to_owned(),
            STANDARD.encode(format!("{}:{PASSWORD}", adsync_sim::REFERENCE_EMAIL)),
            STANDARD.encode(format!("{}:Wr0ng-Secret!", adsync_sim::REFERENCE_EMAIL)),
        ] {
            assert!(!text.contains(&secret), "a secret leaked");
        }
        assert!(!text.contains("Basic "), "a Basic header leaked");
        assert!(!text.contains("Bearer "), "a Bearer header leaked");
        assert!(
            hex_tokens(text).is_empty(),
            "a token leaked: {:?}",
            hex_tokens(text)
        );
    }
}

fn window_limit(window: Duration) -> RateLimit {
    RateLimit::new(10, window).unwrap()
}
