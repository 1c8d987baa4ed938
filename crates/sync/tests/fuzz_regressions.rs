//! Inputs the fuzz targets (`fuzz/`, `scripts/fuzz`) once failed on, kept as plain tests.

use adsync_domain::wire::Pagination;
use adsync_sync::{Pager, PagerLimits};

/// fuzz/fuzz_targets/pager.rs: a platform reporting `total: u64::MAX` with `limit: 1`
/// overflowed the page cap (`... * 2 + 3`).
#[test]
fn a_total_of_u64_max_does_not_overflow_the_page_cap() {
    let mut pager = Pager::new(1, PagerLimits::default());
    let page = Pagination {
        page: 1,
        limit: 1,
        total: Some(u64::MAX),
        has_more: true,
    };
    let verdict = pager.on_page(&page, &[Some("campaign_1")]);
    assert_eq!(verdict.keep, 1);
    assert_eq!(pager.next_request(), Some((2, 1)));
}
