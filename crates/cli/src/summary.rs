//! The end-of-run table, and the pieces of it `adsync runs show` reuses.

use std::time::Duration;

use adsync_store::{ListingCursor, StoredWarning};
use adsync_sync::RunReport;

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The listing in words: pages, passes, what the platform reported, completeness.
pub fn listing_line(c: &ListingCursor, pages: i64) -> String {
    let total = c.reported_total.map_or_else(
        || "no total reported".to_owned(),
        |t| format!("platform total {t}"),
    );
    let per_page = c
        .page_limit
        .map_or_else(String::new, |l| format!(", {l} per page"));
    let state = match (c.done, c.complete) {
        (true, true) => "complete",
        (true, false) => "could not be proven complete",
        (false, _) => "in progress",
    };
    let drift = if c.drift_events > 0 {
        format!(
            " · drift {}",
            plural(c.drift_events.into(), "time", "times")
        )
    } else {
        String::new()
    };
    format!(
        "{} in {}, {state} ({total}{per_page}){drift}",
        plural(pages.max(0) as u64, "page", "pages"),
        plural(c.pass.into(), "pass", "passes"),
    )
}

/// Warnings, one per line, the lines after the first indented by `indent` columns (where the
/// caller's values start).
pub fn warnings_block(warnings: &[StoredWarning], indent: usize) -> String {
    if warnings.is_empty() {
        return "none".into();
    }
    warnings
        .iter()
        .map(|w| {
            format!(
                "{} ×{}: {}",
                w.kind,
                w.occurrences,
                w.message.escape_debug()
            )
        })
        .collect::<Vec<_>>()
        .join(&format!("\n{}", " ".repeat(indent)))
}

/// The end-of-run table.
pub fn table(r: &RunReport) -> String {
    let c = &r.counters;
    let k = &r.client;
    let duration = if r.resumed && r.active > r.duration + Duration::from_millis(10) {
        format!(
            "{} in this process, {} over every process that worked on the run",
            secs(r.duration),
            secs(r.active)
        )
    } else {
        secs(r.duration)
    };
    let floor = match (r.floor, r.floor_ratio) {
        (Some(f), Some(ratio)) => match &r.learned_limit {
            None => format!("{} · duration/floor {ratio:.3}", secs(f)),
            Some(learned) => format!(
                "{} · duration/floor {ratio:.3} at the platform's {learned}, learned from its 429s (set --rate-limit to it)",
                secs(f)
            ),
        },
        _ => "unknown (the platform reported no campaigns)".into(),
    };
    let mut rows = [
        (
            "run",
            format!(
                "{} for tenant {:?}: {}{}",
                r.run_id,
                r.tenant,
                r.status,
                if r.resumed { " (resumed)" } else { "" }
            ),
        ),
        (
            "campaigns",
            format!(
                "stored {} · synced {} · dead-lettered {} · removed {} · returned {}",
                c.campaigns_stored,
                c.campaigns_synced,
                c.dead_lettered,
                c.campaigns_removed,
                c.campaigns_returned
            ),
        ),
        ("listing", listing_line(&r.listing, c.pages)),
        (
            "requests",
            format!(
                "{} · ok {} · 429 {} · 5xx {} · timeouts {} · connection {} · malformed {} · 401 {} · other 4xx {}",
                k.requests,
                k.ok,
                k.rate_limited,
                k.server_errors,
                k.timeouts,
                k.transport_errors,
                k.malformed,
                k.unauthorized,
                k.rejected
            ),
        ),
        ("retries", k.retries.to_string()),
        ("token refreshes", k.token_refreshes.to_string()),
        ("duration", duration),
        (
            "throttled",
            format!(
                "{} (time the rate limiter held requests back)",
                secs(Duration::from_micros(k.throttled_us))
            ),
        ),
        ("rate-limit floor", floor),
        ("warnings", String::new()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    // Values start after two spaces, the key column and two more.
    if let Some(last) = rows.last_mut() {
        last.1 = warnings_block(&r.warnings, width + 4);
    }
    let mut out = String::from("Summary\n");
    for (key, value) in rows {
        out.push_str(&format!("  {key:<width$}  {value}\n"));
    }
    out.pop();
    out
}
