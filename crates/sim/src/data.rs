//! The simulated data set: deterministic per seed, with live counters that grow each time a
//! campaign is served, and a listing order that can change while clients page through it.
//!
//! Readers take an immutable snapshot of the listing (one read lock and one `Arc` clone per
//! page); changes copy the listing and swap it in. Changes are rare and reads are the hot path,
//! so this keeps a page as cheap as it was when the data set was immutable.

use std::{
    collections::HashMap,
    ops::Range,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

use crate::config::{Mutation, Profile, SimConfig};

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

/// The status of [`SimConfig::unknown_status_every`]'s campaigns.
const UNKNOWN_STATUS: &str = "archived_v2";

/// The fixed part of a campaign; its counters grow from `base` by `step` per serving.
struct Seeded {
    name: String,
    status: &'static str,
    budget_cents: i64,
    created_at: DateTime<Utc>,
    base: [u64; 3],
    step: [u64; 3],
}

/// A campaign that exists (listed, or removed and restorable).
struct Row {
    number: u64,
    /// Its place in the listing order: smaller first. Kept while removed, so a restored
    /// campaign comes back where it was.
    rank: i64,
    seeded: Seeded,
    served: AtomicU64,
}

/// An immutable state of the listing.
#[derive(Clone, Default)]
pub struct Listing {
    /// Every campaign ever created, in creation order.
    rows: Vec<Arc<Row>>,
    /// Campaign number to index in `rows`.
    by_number: HashMap<u64, usize>,
    /// By index in `rows`.
    removed: Vec<bool>,
    /// Indexes in `rows` of the listed campaigns, in listing order (ascending rank).
    order: Vec<usize>,
    min_rank: i64,
    max_rank: i64,
    /// The highest number of a created campaign, removed ones included.
    highest: u64,
}

impl Listing {
    /// Campaigns listed now: what `total` says.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The highest number of a real (created) campaign, removed ones included.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether campaign `number` is listed (created and not removed).
    pub fn listed(&self, number: u64) -> bool {
        self.by_number
            .get(&number)
            .is_some_and(|&idx| !self.removed[idx])
    }

    fn push(&mut self, row: Row) -> usize {
        let idx = self.rows.len();
        self.highest = self.highest.max(row.number);
        self.by_number.insert(row.number, idx);
        self.rows.push(Arc::new(row));
        self.removed.push(false);
        idx
    }
}

/// What distinguishes one simulator's campaigns from another's.
struct Shape {
    seed: u64,
    hostile_names: bool,
    reference: bool,
    invalid_every: Option<u64>,
    unknown_status_every: Option<u64>,
    extra_fields: bool,
    epoch: DateTime<Utc>,
}

/// The campaigns the simulator serves.
pub struct DataSet {
    shape: Shape,
    listing: RwLock<Arc<Listing>>,
    /// Highest number of an invented campaign served so far: new campaigns come after it.
    invented_high: AtomicU64,
    /// How often each invented campaign was served, so its counters grow too.
    invented_served: Mutex<HashMap<u64, u64>>,
}

/// `campaign_N` to `N`, for `N >= 1`.
pub fn campaign_number(id: &str) -> Option<u64> {
    id.strip_prefix("campaign_")
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n >= 1)
}

impl DataSet {
    /// The data set of `config`, with the mutations due at 0 listing calls already applied.
    pub fn generate(config: &SimConfig) -> Self {
        let nonzero = |k: Option<usize>| k.filter(|k| *k > 0).map(|k| k as u64);
        let shape = Shape {
            seed: config.seed,
            hostile_names: config.hostile_names,
            reference: config.profile == Profile::Reference && !config.hostile_names,
            invalid_every: nonzero(config.invalid_every),
            unknown_status_every: nonzero(config.unknown_status_every),
            extra_fields: config.extra_fields,
            epoch: Utc::now(),
        };
        // One generator for the initial data set, in order: the figures of a seed stay what
        // they were before campaigns could be added.
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut listing = Listing::default();
        for number in 1..=config.campaigns as u64 {
            let seeded = shape.seeded(number, &mut rng);
            let idx = listing.push(Row {
                number,
                rank: number as i64,
                seeded,
                served: AtomicU64::new(0),
            });
            listing.order.push(idx);
        }
        listing.min_rank = 1;
        listing.max_rank = config.campaigns as i64;
        let data = Self {
            shape,
            listing: RwLock::new(Arc::new(listing)),
            invented_high: AtomicU64::new(0),
            invented_served: Mutex::default(),
        };
        for m in config.mutations.iter().filter(|m| m.after_list_calls == 0) {
            data.apply(m);
        }
        data
    }

    /// The listing now. Cheap: one read lock and one `Arc` clone.
    pub fn view(&self) -> Arc<Listing> {
        self.listing.read().expect("listing lock").clone()
    }

    /// The JSON of the listed campaigns at `positions`, each served once more.
    pub fn render_listed(&self, view: &Listing, positions: Range<usize>, out: &mut Vec<Value>) {
        let end = positions.end.min(view.order.len());
        let start = positions.start.min(end);
        for &idx in &view.order[start..end] {
            let row = &view.rows[idx];
            let n = row.served.fetch_add(1, Ordering::Relaxed);
            out.push(self.shape.render(row.number, &row.seeded, n));
        }
    }

    /// The JSON of `count` invented campaigns numbered from `first`: same shape as real ones,
    /// derived from the seed and the number, with counters that grow too.
    pub fn render_invented(&self, first: u64, count: u64, out: &mut Vec<Value>) {
        if count == 0 {
            return;
        }
        let last = first.saturating_add(count - 1);
        self.invented_high.fetch_max(last, Ordering::Relaxed);
        let mut served = self.invented_served.lock().expect("invented lock");
        for number in first..=last {
            let n = served.entry(number).or_insert(0);
            let seeded = self.shape.seeded(number, &mut self.shape.rng_for(number));
            out.push(self.shape.render(number, &seeded, *n));
            *n += 1;
        }
    }

    /// Whether `number` is a listed campaign (not removed).
    pub fn is_listed(&self, number: u64) -> bool {
        self.view().listed(number)
    }

    /// The ids listed now, in listing order.
    pub fn ids(&self) -> Vec<String> {
        let view = self.view();
        view.order
            .iter()
            .map(|&idx| format!("campaign_{}", view.rows[idx].number))
            .collect()
    }

    /// Removes a listed campaign; false if `id` is not listed.
    pub fn remove(&self, id: &str) -> bool {
        let Some(number) = campaign_number(id) else {
            return false;
        };
        self.change(|l| {
            let Some(&idx) = l.by_number.get(&number).filter(|&&i| !l.removed[i]) else {
                return false;
            };
            l.removed[idx] = true;
            l.order.retain(|&i| i != idx);
            true
        })
    }

    /// Lists a removed campaign again, at its old place; false if `id` was not removed.
    pub fn restore(&self, id: &str) -> bool {
        let Some(number) = campaign_number(id) else {
            return false;
        };
        self.change(|l| {
            let Some(&idx) = l.by_number.get(&number).filter(|&&i| l.removed[i]) else {
                return false;
            };
            l.removed[idx] = false;
            let rank = l.rows[idx].rank;
            let at = l.order.partition_point(|&i| l.rows[i].rank < rank);
            l.order.insert(at, idx);
            true
        })
    }

    /// Creates `count` campaigns numbered after the highest number ever used (invented ones
    /// included), at the front (in number order) or at the back of the listing.
    pub fn insert(&self, count: usize, front: bool) -> Vec<String> {
        self.change(|l| self.insert_into(l, count, front))
    }

    /// Applies a scheduled change: removes from the front, then inserts at the front.
    pub fn apply(&self, m: &Mutation) {
        self.change(|l| {
            for idx in l.order.drain(..m.remove_front.min(l.order.len())) {
                l.removed[idx] = true;
            }
            self.insert_into(l, m.insert_front, true);
        });
    }

    fn insert_into(&self, l: &mut Listing, count: usize, front: bool) -> Vec<String> {
        let first = l
            .highest()
            .max(self.invented_high.load(Ordering::Relaxed))
            .saturating_add(1);
        let mut ids = Vec::with_capacity(count);
        let mut new = Vec::with_capacity(count);
        for k in 0..count as u64 {
            let number = first.saturating_add(k);
            let rank = if front {
                l.min_rank - count as i64 + k as i64
            } else {
                l.max_rank + 1 + k as i64
            };
            let seeded = self.shape.seeded(number, &mut self.shape.rng_for(number));
            new.push(l.push(Row {
                number,
                rank,
                seeded,
                served: AtomicU64::new(0),
            }));
            ids.push(format!("campaign_{number}"));
        }
        if front {
            l.min_rank -= count as i64;
            l.order.splice(0..0, new);
        } else {
            l.max_rank += count as i64;
            l.order.extend(new);
        }
        ids
    }

    /// Copies the listing, changes the copy and swaps it in: readers never wait on a change
    /// longer than the swap.
    fn change<T>(&self, f: impl FnOnce(&mut Listing) -> T) -> T {
        let mut guard = self.listing.write().expect("listing lock");
        let mut next = Listing::clone(&guard);
        let out = f(&mut next);
        *guard = Arc::new(next);
        out
    }
}

impl Shape {
    /// The generator of a campaign created after the initial data set.
    fn rng_for(&self, number: u64) -> StdRng {
        // splitmix64's increment spreads neighbouring numbers over unrelated seeds.
        StdRng::seed_from_u64(self.seed ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn seeded(&self, number: u64, rng: &mut StdRng) -> Seeded {
        let name = if self.hostile_names && number % 2 == 1 {
            format!(
                "{} #{number}",
                HOSTILE[(number / 2) as usize % HOSTILE.len()]
            )
        } else {
            format!("Campaign {number}")
        };
        let (status, budget_cents) = if self.reference {
            let dollars = i64::try_from(number)
                .unwrap_or(i64::MAX)
                .saturating_mul(100)
                .saturating_add(1000);
            ("active", dollars.saturating_mul(100))
        } else {
            (
                STATUSES[rng.random_range(0..STATUSES.len())],
                rng.random_range(10_000..5_000_000),
            )
        };
        let created_at = i64::try_from(number)
            .ok()
            .and_then(ChronoDuration::try_days)
            .and_then(|d| self.epoch.checked_sub_signed(d))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        Seeded {
            name,
            status,
            budget_cents,
            created_at,
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
        }
    }

    /// The JSON of campaign `number` served for the `n`-th time before this one.
    fn render(&self, number: u64, row: &Seeded, n: u64) -> Value {
        let [i, c, v] =
            std::array::from_fn(|k| row.base[k].saturating_add(n.saturating_mul(row.step[k])));
        // The reference sends whole-dollar budgets as integers.
        let budget: Value = if row.budget_cents % 100 == 0 {
            json!(row.budget_cents / 100)
        } else {
            serde_json::from_str(&format!(
                "{}.{:02}",
                row.budget_cents / 100,
                row.budget_cents % 100
            ))
            .expect("a decimal literal is JSON")
        };
        let status = if self
            .unknown_status_every
            .is_some_and(|k| number.is_multiple_of(k))
        {
            UNKNOWN_STATUS
        } else {
            row.status
        };
        let mut value = json!({
            "id": format!("campaign_{number}"),
            "name": row.name,
            "status": status,
            "budget": budget,
            "impressions": i,
            "clicks": c,
            "conversions": v,
            "created_at": row.created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        });
        if self.extra_fields {
            value["bid_strategy"] = json!({"kind": "cpc", "max_bid": 0.35, "caps": [1, 2, 3]});
            value["labels"] = json!(["q4", "brand"]);
        }
        // The n-th invalid record gets the n-th kind of defect, in turn.
        if let Some(n) = self
            .invalid_every
            .filter(|k| number.is_multiple_of(*k))
            .map(|k| number / k)
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(campaigns: usize) -> DataSet {
        DataSet::generate(&SimConfig {
            campaigns,
            ..SimConfig::default()
        })
    }

    #[test]
    fn a_restored_campaign_comes_back_at_its_old_place() {
        let data = data(5);
        data.insert(1, true);
        assert!(data.remove("campaign_3"));
        data.insert(1, false);

        assert!(data.restore("campaign_3"));

        assert_eq!(
            data.ids(),
            [6, 1, 2, 3, 4, 5, 7].map(|n| format!("campaign_{n}"))
        );
    }

    #[test]
    fn inserted_campaigns_are_numbered_after_invented_ones() {
        let data = data(3);
        data.render_invented(4, 10, &mut Vec::new());

        assert_eq!(data.insert(2, true), ["campaign_14", "campaign_15"]);
        assert_eq!(data.ids()[..2], ["campaign_14", "campaign_15"]);
    }

    #[test]
    fn only_well_formed_ids_have_a_number() {
        assert_eq!(campaign_number("campaign_12"), Some(12));
        for id in [
            "campaign_0",
            "campaign_",
            "campaign_+1",
            "campaign_-1",
            "x_1",
        ] {
            assert_eq!(campaign_number(id), None, "{id}");
        }
    }
}
