//! No secret in any output: a whole chaotic run at trace level holds no password, no Basic
//! credentials and no token.

mod common;

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{EMAIL, PASSWORD, TempDir, adsync, all_text, run, text};

#[test]
fn trace_logs_of_a_whole_run_hold_no_password_basic_header_or_token() {
    let dir = TempDir::new("secrets");

    let o = run(adsync(dir.path())
        .args([
            "-vv",
            "sync",
            "--sim-time-scale",
            "600",
            "--sim-profile",
            "chaos",
            "--request-timeout",
            "300ms",
        ])
        .env("AD_PLATFORM_EMAIL", EMAIL)
        .env("AD_PLATFORM_PASSWORD", PASSWORD));

    let (_, err) = text(&o);
    assert!(
        o.status.success(),
        "{}",
        &err[err.len().saturating_sub(3000)..]
    );
    assert!(
        err.len() > 50_000,
        "trace logging was not on: {} bytes",
        err.len()
    );
    let all = all_text(&o);
    assert!(!all.contains(PASSWORD), "password leaked");
    let basic = STANDARD.encode(format!("{EMAIL}:{PASSWORD}"));
    assert!(!all.contains(&basic), "Basic credentials leaked");
    assert!(
        !all.contains("Basic ") && !all.contains("Bearer "),
        "an auth header leaked"
    );
    let hex_runs: Vec<_> = all
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() >= 64)
        .collect();
    assert!(hex_runs.is_empty(), "a token leaked: {hex_runs:?}");
}
