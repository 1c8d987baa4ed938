//! A tenant's schedule: `Schedule::parse(cron, zone)` on any text, and for what parses, the
//! next ticks. A schedule that parses prints a cron that parses again to the same ticks; its
//! next tick after any time is strictly later (or none), and the one after that later still;
//! its jitter cap is within 0..=60 s.
#![no_main]

use adsync_service::schedule::Schedule;
use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // [after: 4 bytes of seconds from 2000-01-01, signed][jitter: 2 bytes][cron]\n[zone]
    let Some((after, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Some((jitter, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (cron, zone) = text.split_once('\n').unwrap_or((text, "UTC"));
    let Ok(schedule) = Schedule::parse(cron, zone) else {
        return;
    };
    // 2000-01-01 plus or minus 68 years.
    let after =
        DateTime::<Utc>::from_timestamp(946_684_800 + i64::from(i32::from_le_bytes(*after)), 0)
            .expect("in range");
    let cap = schedule.jitter_cap_ms();
    assert!((0..=60_000).contains(&cap), "jitter cap {cap}");
    let jitter = i64::from(u16::from_le_bytes(*jitter)) % (cap + 1);

    let again = Schedule::parse(schedule.cron(), &schedule.zone_name())
        .expect("a schedule's own cron and zone parse again");
    assert_eq!(again.cron(), schedule.cron());

    let Some(first) = schedule.next_after(after, jitter) else {
        return;
    };
    assert!(
        first > after,
        "{cron:?} in {zone}: {first} is not after {after}"
    );
    assert_eq!(again.next_after(after, jitter), Some(first));
    if let Some(second) = schedule.next_after(first, jitter) {
        assert!(
            second > first,
            "{cron:?} in {zone}: {second} is not after {first}"
        );
    }
    // Without jitter the tick is no later than with it, less the jitter.
    if let Some(plain) = schedule.next_after(after, 0) {
        assert!(plain > after);
    }
});
