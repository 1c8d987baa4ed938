//! The listing logic (`Pager`, what decides which page to fetch and when to stop) against a
//! hostile platform: any page numbers, limits, totals, `has_more` and ids, pages that cannot
//! be used. Each verdict keeps at most the page's records; once the platform has nothing new
//! to say (it repeats its last answer), the listing ends within a bounded number of requests
//! whenever the totals it reported were small.
#![no_main]

use adsync_domain::wire::Pagination;
use adsync_sync::{Pager, PagerLimits};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Clone, Arbitrary)]
enum Total {
    None,
    Small(u8),
    Any(u64),
}

#[derive(Debug, Clone, Arbitrary)]
struct Answer {
    /// The page the answer claims to be, relative to the one asked for.
    page_offset: i8,
    limit: u8,
    total: Total,
    has_more: bool,
    /// Record ids from a small space (repeats happen); `None`: a record without a usable id.
    ids: Vec<Option<u8>>,
    /// The page could not be used (a contract error): dead-lettered.
    unusable: bool,
}

#[derive(Debug, Arbitrary)]
struct Input {
    requested_limit: u8,
    answers: Vec<Answer>,
}

const LIMITS: PagerLimits = PagerLimits {
    max_passes: 3,
    max_pages: 50,
};

fn answer(pager: &mut Pager, asked: u64, a: &Answer, huge: &mut bool) {
    if a.unusable {
        let v = pager.on_unusable_page();
        assert_eq!(v.keep, 0);
        return;
    }
    let total = match a.total {
        Total::None => None,
        Total::Small(t) => Some(u64::from(t)),
        Total::Any(t) => {
            *huge |= t > 255;
            Some(t)
        }
    };
    let pagination = Pagination {
        page: asked.saturating_add_signed(i64::from(a.page_offset)),
        limit: u64::from(a.limit),
        total,
        has_more: a.has_more,
    };
    let names: Vec<Option<String>> = a
        .ids
        .iter()
        .map(|id| id.map(|n| format!("campaign_{n}")))
        .collect();
    let ids: Vec<Option<&str>> = names.iter().map(Option::as_deref).collect();
    let v = pager.on_page(&pagination, &ids);
    assert!(v.keep <= ids.len());
    assert_eq!(v.new_to_run.len(), v.keep);
    assert!(v.cursor.pass <= LIMITS.max_passes, "{:?}", v.cursor);
    assert!(v.cursor.next_page >= 1);
    if v.cursor.complete {
        assert!(v.cursor.done);
    }
}

fuzz_target!(|input: Input| {
    let mut pager = Pager::new(u64::from(input.requested_limit), LIMITS);
    let mut huge = false;
    let mut last = None;
    for a in &input.answers {
        let Some((page, _)) = pager.next_request() else {
            return;
        };
        answer(&mut pager, page, a, &mut huge);
        last = Some(a);
    }
    let Some(last) = last else {
        return;
    };
    // The platform repeats itself from now on.
    let bound = (u64::from(LIMITS.max_passes) + 1) * (2 * 256 + 3 + LIMITS.max_pages + 1);
    let mut requests = 0u64;
    while let Some((page, _)) = pager.next_request() {
        requests += 1;
        if huge && requests > bound {
            // A total beyond 255 allows a pass of as many pages as it implies.
            return;
        }
        assert!(
            requests <= bound,
            "the listing goes on after {requests} repeats of {last:?}: {:?}",
            pager.cursor()
        );
        answer(&mut pager, page, last, &mut huge);
    }
});
