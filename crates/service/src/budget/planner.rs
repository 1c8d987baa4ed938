//! The pure rule of a shared budget: given the log of granted send times, when may the next
//! requests go? No I/O and no clock; times are milliseconds on the database's clock.
//!
//! The log holds the last `N` granted times, ascending, future reservations included. A new
//! slot `t` is appended after the last entry and needs fewer than `N` entries in
//! `(t - W - M, t]`: with the log sorted, that is `t >= log[len - N] + W + M`. So any `N + 1`
//! consecutive entries span at least `W + M`, whoever granted them, and the log never needs
//! more than its last `N` entries.
//!
//! A holder that is the budget's only recent spender (no entry of another holder lies within
//! `W + M` of now) paces itself: its own limiter holds the exact log of its sends and keeps
//! each slot only as long as its answer showed it needs, while the rule above spaces every
//! slot by the widest margin plus the late tolerance (about 50 ms a window at a 1 s window).
//! Such a grant follows the times the holder's limiter gives ([`PlanRequest::paced`]). The
//! property still holds across holders: another one reading the log appends after its last
//! entry and keeps the rule against it, and once its send is in the log neither is alone.

/// What one grant is asked for, all times in ms on the budget's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRequest<'a> {
    /// Granted send times, ascending (future reservations included).
    pub log: &'a [i64],
    /// The earliest a granted slot may be (the database's now, plus the time the grant still
    /// needs to reach its holder).
    pub now_ms: i64,
    /// `N`, requests per window (at least 1).
    pub requests: u32,
    /// `W`, the window.
    pub window_ms: i64,
    /// `M`, the extra time each slot stays busy (arrival spread, lateness).
    pub margin_ms: i64,
    /// No slot before this (a 429's hold).
    pub hold_until_ms: i64,
    /// Slots wanted (at most `N` are granted, at least one).
    pub want: u32,
    /// Slots after the first are granted only up to this long after it, so one holder cannot
    /// reserve far ahead and starve the others.
    pub horizon_ms: i64,
    /// `Some` when the holder is the budget's only recent spender: the times its own limiter
    /// lets its next requests go (ascending, budget clock). The grant follows them (never
    /// before `now_ms`, the hold or the log's last entry) instead of the `N`-th-last rule.
    pub paced: Option<&'a [i64]>,
}

/// The answer: the granted times, ascending (at least one), and the log to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Granted send times, ascending; never empty (the caller sleeps until the first).
    pub granted: Vec<i64>,
    /// The new log: the last `N` of the old log and the granted times.
    pub log: Vec<i64>,
}

/// Grants between one and `min(want, N)` slots (see the module documentation). A log that is
/// not ascending is treated by its maximum so far, which keeps the rule safe.
pub fn plan(req: &PlanRequest<'_>) -> Plan {
    let n = req.requests.max(1) as usize;
    let span = req.window_ms.max(0).saturating_add(req.margin_ms.max(0));
    let want = (req.want.max(1) as usize).min(n);
    let floor = req.now_ms.max(req.hold_until_ms);
    let mut log = ascending(req.log);
    let mut granted: Vec<i64> = Vec::with_capacity(want);
    let mut paced = req.paced.unwrap_or_default().iter();
    while granted.len() < want {
        let mut t = floor;
        if let Some(&last) = log.last() {
            t = t.max(last);
        }
        match (req.paced, paced.next()) {
            (Some(_), Some(&own)) => t = t.max(own),
            // The holder's limiter gave no more times.
            (Some(_), None) if !granted.is_empty() => break,
            _ => {
                if log.len() >= n {
                    t = t.max(log[log.len() - n].saturating_add(span));
                }
            }
        }
        if let Some(&first) = granted.first()
            && t > first.saturating_add(req.horizon_ms.max(0))
        {
            break;
        }
        granted.push(t);
        log.push(t);
    }
    let keep = log.len().saturating_sub(n);
    log.drain(..keep);
    Plan { granted, log }
}

/// `log` with every entry raised to the largest before it: ascending, and never earlier
/// than what was granted (an entry out of order cannot hide a later one).
fn ascending(log: &[i64]) -> Vec<i64> {
    let mut max = i64::MIN;
    log.iter()
        .map(|&t| {
            max = max.max(t);
            max
        })
        .collect()
}

/// Whether some `N + 1` of `times` (any order) lie within a span shorter than `span_ms`:
/// the property the planner guarantees never holds for its logs. For tests and checks.
pub fn exceeds(times: &[i64], requests: u32, span_ms: i64) -> bool {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let n = requests as usize;
    sorted.windows(n + 1).any(|w| w[n] - w[0] < span_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(log: &[i64], now_ms: i64, want: u32) -> PlanRequest<'_> {
        PlanRequest {
            log,
            now_ms,
            requests: 3,
            window_ms: 1000,
            margin_ms: 10,
            hold_until_ms: 0,
            want,
            horizon_ms: 1000,
            paced: None,
        }
    }

    #[test]
    fn an_empty_budget_grants_every_slot_wanted_at_once_up_to_n() {
        let plan = plan(&request(&[], 5000, 7));

        assert_eq!(plan.granted, vec![5000, 5000, 5000]);
        assert_eq!(plan.log, vec![5000, 5000, 5000]);
    }

    #[test]
    fn a_full_window_grants_when_the_nth_last_send_leaves_it_plus_the_margin() {
        let plan = plan(&request(&[4000, 4100, 4200], 4500, 1));

        assert_eq!(plan.granted, vec![5010]);
        assert_eq!(plan.log, vec![4100, 4200, 5010]);
    }

    #[test]
    fn future_reservations_are_queued_behind() {
        let plan = plan(&request(&[4000, 4100, 6000], 4500, 1));

        assert_eq!(plan.granted, vec![6000], "not before a later reservation");
    }

    #[test]
    fn a_hold_delays_the_first_slot() {
        let mut req = request(&[], 5000, 2);
        req.hold_until_ms = 9000;

        assert_eq!(plan(&req).granted, vec![9000, 9000]);
    }

    #[test]
    fn slots_beyond_the_horizon_after_the_first_are_not_granted() {
        let mut req = request(&[4000, 4500, 4990], 4000, 3);
        req.horizon_ms = 100;

        let plan = plan(&req);

        // 5010 first, then 5510 is more than 100 ms after it.
        assert_eq!(plan.granted, vec![5010]);
    }

    #[test]
    fn at_least_one_slot_is_granted_even_when_none_is_wanted() {
        assert_eq!(plan(&request(&[], 1, 0)).granted, vec![1]);
    }

    #[test]
    fn an_unsorted_log_is_read_by_its_running_maximum() {
        let plan = plan(&request(&[4200, 4000, 4100], 0, 1));

        assert_eq!(plan.granted, vec![5210]);
    }

    #[test]
    fn a_sole_spender_is_granted_the_times_its_limiter_gives() {
        let mut req = request(&[4000, 4100, 4200], 4500, 3);
        let own = [4500, 5020, 5110];
        req.paced = Some(&own);

        let plan = plan(&req);

        // Not 5010 and on: its limiter keeps each slot as long as it needs.
        assert_eq!(plan.granted, vec![4500, 5020, 5110]);
        assert_eq!(plan.log, own.to_vec());
    }

    #[test]
    fn paced_times_never_go_before_now_the_hold_or_the_last_entry() {
        let mut req = request(&[4000, 4100, 6000], 4500, 3);
        let own = [4200, 4300, 6500];
        req.paced = Some(&own);
        req.hold_until_ms = 4400;

        assert_eq!(plan(&req).granted, vec![6000, 6000, 6500]);
        let none: [i64; 0] = [];
        req.paced = Some(&none);
        assert_eq!(plan(&req).granted, vec![6000], "at least one slot");
    }

    #[test]
    fn exceeds_finds_n_plus_one_within_a_span() {
        assert!(exceeds(&[0, 10, 20, 30], 3, 31));
        assert!(!exceeds(&[0, 10, 20, 30], 3, 30));
        assert!(!exceeds(&[0, 10, 20], 3, 1_000_000));
    }
}
