use super::*;
use proptest::prelude::*;

/// An offset-paginated platform in memory, with the reference server's quirks on demand and
/// campaigns inserted or removed after a given number of listing calls.
#[derive(Clone, Debug)]
struct Platform {
    ids: Vec<String>,
    next_number: usize,
    mode: Mode,
    report_total: bool,
    calls: u64,
    /// (after this many calls, insert this many at the front, remove this many at the front)
    mutations: Vec<(u64, usize, usize)>,
    /// The campaigns as of the last page served (a listing cannot see later changes).
    last_served: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Honest,
    /// `has_more = page < ceil(total / 10)` whatever the limit; pages past the data invent.
    Reference,
    /// `has_more` always true; past the end, empty pages.
    Endless,
    /// `has_more` always true; past the end, the last page again.
    Repeat,
    /// `has_more` always true; past the end, new ids forever.
    Invent,
}

impl Platform {
    fn new(n: usize, mode: Mode) -> Self {
        Self {
            ids: (1..=n).map(|i| format!("c{i}")).collect(),
            next_number: n + 1,
            mode,
            report_total: true,
            calls: 0,
            mutations: Vec::new(),
            last_served: Vec::new(),
        }
    }

    fn page(&mut self, page: u64, limit: u64) -> (Pagination, Vec<String>) {
        self.calls += 1;
        let total = self.ids.len() as u64;
        let from = (page - 1) * limit;
        let to = from + limit;
        let real: Vec<String> = self
            .ids
            .iter()
            .skip(from as usize)
            .take(limit as usize)
            .cloned()
            .collect();
        let (data, has_more) = match self.mode {
            Mode::Honest => (real, to < total),
            Mode::Reference => {
                let data = (from..to)
                    .map(|i| {
                        self.ids
                            .get(i as usize)
                            .cloned()
                            .unwrap_or(format!("invented{}", i + 1))
                    })
                    .collect();
                (data, page < total.div_ceil(10))
            }
            Mode::Endless => (real, true),
            Mode::Repeat if real.is_empty() => {
                let last = total.saturating_sub(1) / limit;
                let data = self
                    .ids
                    .iter()
                    .skip((last * limit) as usize)
                    .take(limit as usize)
                    .cloned()
                    .collect();
                (data, true)
            }
            Mode::Repeat => (real, true),
            Mode::Invent if real.is_empty() => {
                let data = (0..limit).map(|i| format!("new{page}_{i}")).collect();
                (data, true)
            }
            Mode::Invent => (real, true),
        };
        self.last_served = self.ids.clone();
        for m in self.mutations.clone() {
            if m.0 == self.calls {
                self.ids.drain(..m.2.min(self.ids.len()));
                for _ in 0..m.1 {
                    self.ids.insert(0, format!("c{}", self.next_number));
                    self.next_number += 1;
                }
            }
        }
        let pagination = Pagination {
            page,
            limit,
            total: self.report_total.then_some(total),
            has_more,
        };
        (pagination, data)
    }
}

/// Runs a listing to its end; returns the pager, every warning kind, and the calls made.
fn list(platform: &mut Platform, limit: u64, limits: PagerLimits) -> (Pager, Vec<String>, u64) {
    let mut pager = Pager::new(limit, limits);
    let mut kinds = Vec::new();
    let mut calls = 0;
    while let Some((page, limit)) = pager.next_request() {
        calls += 1;
        assert!(calls < 100_000, "the listing never ended");
        let (p, data) = platform.page(page, limit);
        let ids: Vec<Option<&str>> = data.iter().map(|s| Some(s.as_str())).collect();
        let v = pager.on_page(&p, &ids);
        assert_eq!(v.new_to_run.len(), v.keep);
        kinds.extend(v.warnings.into_iter().map(|w| w.kind));
    }
    (pager, kinds, calls)
}

#[test]
fn the_reference_quirk_with_100_per_page_takes_one_call_and_is_complete() {
    let mut platform = Platform::new(100, Mode::Reference);

    let (pager, kinds, calls) = list(&mut platform, 100, PagerLimits::default());

    assert_eq!(calls, 1);
    assert!(pager.cursor().complete);
    assert_eq!(pager.run_ids.len(), 100);
    assert!(!pager.seen_by_run("invented101"));
    assert_eq!(kinds, ["has_more_ignores_total"]);
}

#[test]
fn the_reference_quirk_with_the_default_page_size_lists_ten_pages() {
    let mut platform = Platform::new(100, Mode::Reference);

    let (pager, kinds, calls) = list(&mut platform, 10, PagerLimits::default());

    assert_eq!(calls, 10);
    assert!(pager.cursor().complete);
    assert!(kinds.is_empty(), "{kinds:?}");
}

#[test]
fn a_page_size_that_does_not_divide_the_total_ignores_invented_records_past_it() {
    let mut platform = Platform::new(100, Mode::Reference);

    let (pager, kinds, calls) = list(&mut platform, 30, PagerLimits::default());

    assert_eq!(calls, 4);
    assert!(pager.cursor().complete);
    assert_eq!(pager.run_ids.len(), 100, "no invented campaign listed");
    assert!(kinds.contains(&"records_past_total".to_owned()));
}

#[test]
fn an_endless_has_more_ends_at_the_first_empty_page_or_at_the_total() {
    let mut platform = Platform::new(25, Mode::Endless);
    platform.report_total = false;

    let (pager, kinds, calls) = list(&mut platform, 10, PagerLimits::default());

    assert_eq!(calls, 4, "three pages of data, then one empty page");
    assert!(pager.cursor().done);
    assert!(kinds.contains(&"empty_page_has_more".to_owned()));

    let mut with_total = Platform::new(25, Mode::Endless);
    let (pager, _, calls) = list(&mut with_total, 10, PagerLimits::default());
    assert_eq!(calls, 3);
    assert!(pager.cursor().complete);
}

#[test]
fn a_platform_that_repeats_its_last_page_is_stopped_and_not_trusted_as_complete() {
    let mut platform = Platform::new(25, Mode::Repeat);
    platform.report_total = false;

    let (pager, kinds, calls) = list(&mut platform, 10, PagerLimits::default());

    assert_eq!(calls, 4);
    assert!(pager.cursor().done && !pager.cursor().complete);
    assert!(kinds.contains(&"no_new_ids".to_owned()));
}

#[test]
fn a_platform_that_invents_campaigns_forever_is_capped() {
    let mut platform = Platform::new(25, Mode::Invent);
    platform.report_total = false;
    let limits = PagerLimits {
        max_pages: 50,
        ..PagerLimits::default()
    };

    let (pager, kinds, calls) = list(&mut platform, 10, limits);

    assert_eq!(calls, 50);
    assert!(!pager.cursor().complete);
    assert!(kinds.contains(&"page_cap".to_owned()));
    assert!(kinds.contains(&"incomplete_listing".to_owned()));

    let mut with_total = Platform::new(25, Mode::Invent);
    let (pager, _, calls) = list(&mut with_total, 10, limits);
    assert_eq!(calls, 3, "the total ends it");
    assert!(pager.cursor().complete);
}

#[test]
fn campaigns_inserted_mid_listing_are_all_listed_by_a_second_pass() {
    let mut platform = Platform::new(100, Mode::Honest);
    platform.mutations = vec![(3, 5, 0)];

    let (pager, kinds, _) = list(&mut platform, 10, PagerLimits::default());

    assert!(pager.cursor().complete);
    assert_eq!(pager.cursor().pass, 2);
    assert_eq!(pager.cursor().drift_events, 1);
    for id in &platform.ids {
        assert!(pager.seen_by_run(id), "{id} was skipped");
    }
    assert!(kinds.contains(&"total_changed".to_owned()));
    assert!(kinds.contains(&"listing_again".to_owned()));
}

#[test]
fn campaigns_removed_mid_listing_do_not_make_the_listing_skip_others() {
    let mut platform = Platform::new(100, Mode::Honest);
    platform.mutations = vec![(4, 0, 7)];

    let (pager, _, _) = list(&mut platform, 10, PagerLimits::default());

    assert!(pager.cursor().complete);
    let final_pass: HashSet<&String> = pager.pass_ids.iter().collect();
    assert_eq!(
        final_pass,
        platform.last_served.iter().collect::<HashSet<_>>()
    );
}

#[test]
fn drift_that_never_stops_ends_after_the_last_pass_incomplete() {
    let mut platform = Platform::new(100, Mode::Honest);
    platform.mutations = (1..100).map(|c| (c * 3, 1, 0)).collect();

    let (pager, kinds, _) = list(&mut platform, 10, PagerLimits::default());

    assert!(pager.cursor().done && !pager.cursor().complete);
    assert_eq!(pager.cursor().pass, 3);
    assert!(kinds.contains(&"incomplete_listing".to_owned()));
}

#[test]
fn an_unusable_page_is_skipped_and_the_listing_is_not_complete() {
    let mut platform = Platform::new(30, Mode::Honest);
    let mut pager = Pager::new(10, PagerLimits::default());
    let (p, data) = platform.page(1, 10);
    let ids: Vec<Option<&str>> = data.iter().map(|s| Some(s.as_str())).collect();
    pager.on_page(&p, &ids);

    let v = pager.on_unusable_page();
    assert_eq!(pager.next_request(), Some((3, 10)));
    let (p, data) = platform.page(3, 10);
    let ids: Vec<Option<&str>> = data.iter().map(|s| Some(s.as_str())).collect();
    pager.on_page(&p, &ids);

    assert_eq!(v.warnings[0].kind, "unusable_page");
    assert!(pager.cursor().done && !pager.cursor().complete);
    assert_eq!(
        pager.cursor().pass,
        1,
        "listing again would hit the same page"
    );
}

#[test]
fn inconsistent_pages_are_reported() {
    let mut pager = Pager::new(10, PagerLimits::default());
    let p = Pagination {
        page: 7,
        limit: 2,
        total: Some(100),
        has_more: true,
    };

    let v = pager.on_page(&p, &[Some("a"), Some("a"), Some("b")]);

    let kinds: Vec<_> = v.warnings.iter().map(|w| w.kind.as_str()).collect();
    assert_eq!(kinds, ["page_mismatch", "page_over_limit", "duplicate_ids"]);
    assert_eq!(v.new_to_run, [true, false, true]);
    assert_eq!(v.cursor.page_limit, Some(2));
}

#[test]
fn a_resumed_listing_continues_where_the_checkpoint_says() {
    let mut platform = Platform::new(50, Mode::Honest);
    let mut first = Pager::new(10, PagerLimits::default());
    let mut listed = Vec::new();
    for _ in 0..2 {
        let (page, limit) = first.next_request().unwrap();
        let (p, data) = platform.page(page, limit);
        let ids: Vec<Option<&str>> = data.iter().map(|s| Some(s.as_str())).collect();
        first.on_page(&p, &ids);
        listed.extend(data.into_iter().map(|id| (id, 1)));
    }

    let mut resumed = Pager::resume(first.cursor(), 10, PagerLimits::default(), listed);
    let mut calls = 0;
    while let Some((page, limit)) = resumed.next_request() {
        calls += 1;
        let (p, data) = platform.page(page, limit);
        let ids: Vec<Option<&str>> = data.iter().map(|s| Some(s.as_str())).collect();
        let v = resumed.on_page(&p, &ids);
        assert!(
            v.new_to_run.iter().all(|n| *n),
            "page {page} was listed before"
        );
    }

    assert_eq!(calls, 3);
    assert!(resumed.cursor().complete);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the data set, page size and mid-listing changes: a listing that says it is
    /// complete saw exactly the platform's final campaigns in its last pass, and with drift
    /// that stops before the passes run out, no campaign present at the end was skipped.
    /// Changes move the count (inserts or removals between two page fetches): an insert and
    /// a removal of the same size at the same moment leave `total` as it was, which no
    /// count-based check can see (the next run lists them).
    #[test]
    fn a_complete_listing_is_exactly_the_final_data_set(
        n in 0usize..120,
        limit in 1u64..40,
        mode in prop_oneof![Just(Mode::Honest), Just(Mode::Reference), Just(Mode::Endless),
                            Just(Mode::Repeat), Just(Mode::Invent)],
        changes in proptest::collection::btree_map(1u64..15, (any::<bool>(), 1usize..6), 0..3),
    ) {
        let mut platform = Platform::new(n, mode);
        platform.mutations = changes
            .into_iter()
            .map(|(after, (insert, k))| if insert { (after, k, 0) } else { (after, 0, k) })
            .collect();

        let (pager, _, calls) = list(&mut platform, limit, PagerLimits::default());

        prop_assert!(pager.cursor().done);
        let bound = 3 * ((n as u64 + 12).div_ceil(limit) * 2 + 3);
        prop_assert!(calls <= bound, "{calls} calls");
        if pager.cursor().complete {
            let final_pass: HashSet<&String> = pager.pass_ids.iter().collect();
            prop_assert_eq!(final_pass, platform.last_served.iter().collect::<HashSet<_>>());
        }
        if mode == Mode::Honest && pager.cursor().complete {
            for id in &platform.last_served {
                prop_assert!(pager.seen_by_run(id), "{} was skipped", id);
            }
        }
    }
}
