//! The simulated data set: deterministic per seed, with live counters that grow each time a
//! campaign is served.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

use crate::config::{Profile, SimConfig};

/// Names that break naive SQL, CSV, logs and encodings.
const HOSTILE: &[&str] = &[
    "O'Brien \"Summer\" Sale",
    "Robert'); DROP TABLE campaigns;--",
    "Ünïcødé Kampagne – Größe ß",
    "広告キャンペーン 🚀",
    "multi\nline\r\nname",
    "tab\tand back\\slash",
    "שלום RTL عربى",
    "family 👩‍👩‍👧‍👦 zwj",
    "  leading and trailing spaces  ",
    "%s %n {} ${x} <script>alert(1)</script>",
];

const STATUSES: &[&str] = &["active", "paused", "completed"];

struct Seeded {
    name: String,
    status: &'static str,
    budget_cents: i64,
    created_at: DateTime<Utc>,
    base: [u64; 3],
    step: [u64; 3],
    invalid: Option<usize>,
}

/// The campaigns the simulator serves.
pub struct DataSet {
    rows: Vec<Seeded>,
    served: Vec<AtomicU64>,
}

impl DataSet {
    pub fn generate(config: &SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let reference = config.profile == Profile::Reference && !config.hostile_names;
        let epoch = Utc::now();
        let rows = (1..=config.campaigns)
            .map(|i| {
                let name = if config.hostile_names && i % 2 == 1 {
                    format!("{} #{i}", HOSTILE[(i / 2) % HOSTILE.len()])
                } else {
                    format!("Campaign {i}")
                };
                let (status, budget_cents) = if reference {
                    ("active", (1000 + i as i64 * 100) * 100)
                } else {
                    (
                        STATUSES[rng.random_range(0..STATUSES.len())],
                        rng.random_range(10_000..5_000_000),
                    )
                };
                Seeded {
                    name,
                    status,
                    budget_cents,
                    created_at: epoch - ChronoDuration::days(i as i64),
                    base: [
                        rng.random_range(0..10_000),
                        rng.random_range(0..500),
                        rng.random_range(0..50),
                    ],
                    step: [
                        rng.random_range(1..200),
                        rng.random_range(1..20),
                        rng.random_range(1..3),
                    ],
                    invalid: config
                        .invalid_every
                        .filter(|k| *k > 0 && i % k == 0)
                        .map(|k| i / k),
                }
            })
            .collect::<Vec<_>>();
        let served = rows.iter().map(|_| AtomicU64::new(0)).collect();
        Self { rows, served }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn contains(&self, id: &str) -> bool {
        id.strip_prefix("campaign_")
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n >= 1 && n <= self.rows.len())
    }

    /// The JSON of campaigns `[from, to)`, each served once more (its counters grow).
    pub fn page(&self, from: usize, to: usize) -> Vec<Value> {
        (from..to.min(self.rows.len()))
            .map(|idx| self.campaign_json(idx))
            .collect()
    }

    fn campaign_json(&self, idx: usize) -> Value {
        let row = &self.rows[idx];
        let n = self.served[idx].fetch_add(1, Ordering::Relaxed);
        let [i, c, v] = std::array::from_fn(|k| row.base[k] + n * row.step[k]);
        let budget: Value = serde_json::from_str(&format!(
            "{}.{:02}",
            row.budget_cents / 100,
            row.budget_cents % 100
        ))
        .expect("a decimal literal is JSON");
        // The reference sends whole-dollar budgets as integers.
        let budget = if row.budget_cents % 100 == 0 {
            json!(row.budget_cents / 100)
        } else {
            budget
        };
        let mut value = json!({
            "id": format!("campaign_{}", idx + 1),
            "name": row.name,
            "status": row.status,
            "budget": budget,
            "impressions": i,
            "clicks": c,
            "conversions": v,
            "created_at": row.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        // The n-th invalid record gets the n-th kind of defect, in turn.
        if let Some(n) = row.invalid {
            match n % 5 {
                0 => value["clicks"] = json!(-1),
                1 => value["status"] = json!("archived"),
                2 => value["name"] = json!(format!("nul\u{0}byte {n}")),
                3 => {
                    value.as_object_mut().expect("object").remove("budget");
                }
                _ => value["budget"] = json!("lots"),
            }
        }
        value
    }
}
