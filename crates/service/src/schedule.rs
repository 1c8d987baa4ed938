//! A tenant's schedule: a cron expression (5 fields, or 6 with seconds first; croner) in an
//! IANA time zone (chrono-tz), plus a fixed per-tenant jitter.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::{Result, ServiceError};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses `cron` (5 fields `min hour dom month dow`, or 6 with a leading seconds field)
    /// in time zone `zone`.
    pub fn parse(cron: &str, zone: &str) -> Result<Schedule> {
        let text = cron.split_whitespace().collect::<Vec<_>>().join(" ");
        let fields = text.split(' ').filter(|f| !f.is_empty()).count();
        if !(5..=6).contains(&fields) {
            return Err(ServiceError::Invalid(format!(
                "schedule {cron:?} has {fields} fields: use 5 (minute hour day-of-month month day-of-week, e.g. \"0 * * * *\" for hourly) or 6 with seconds first"
            )));
        }
        let parsed = Cron::from_str(&text).map_err(|e| {
            ServiceError::Invalid(format!(
                "schedule {cron:?} is not a valid cron expression ({e}); e.g. \"0 * * * *\" for hourly"
            ))
        })?;
        let zone = Self::parse_zone(zone)?;
        // A time-of-day field that matches nothing (`,` parses as an empty list) would make
        // croner's search below step through a year second by second (minutes of CPU).
        let p = &parsed.pattern;
        let any =
            |n: u32, f: &dyn Fn(u32) -> std::result::Result<bool, croner::errors::CronError>| {
                (0..n).any(|v| f(v).unwrap_or(false))
            };
        if !any(60, &|v| p.second_match(v))
            || !any(60, &|v| p.minute_match(v))
            || !any(24, &|v| p.hour_match(v))
        {
            return Err(ServiceError::Invalid(format!(
                "schedule {cron:?} never fires"
            )));
        }
        // An expression that never fires (30 February) is refused now, not at the first tick.
        parsed
            .find_next_occurrence(&Utc::now().with_timezone(&zone), false)
            .map_err(|_| ServiceError::Invalid(format!("schedule {cron:?} never fires")))?;
        Ok(Schedule {
            text,
            cron: parsed,
            zone,
        })
    }

    /// Parses an IANA time zone name (`UTC`, `Europe/Paris`).
    pub fn parse_zone(zone: &str) -> Result<Tz> {
        zone.trim().parse::<Tz>().map_err(|_| {
            ServiceError::Invalid(format!(
                "time zone {zone:?} is unknown: use an IANA name such as \"UTC\" or \"Europe/Paris\""
            ))
        })
    }

    /// The time zone's IANA name.
    pub fn zone_name(&self) -> String {
        self.zone.name().to_owned()
    }

    /// The expression as written (whitespace normalized).
    pub fn cron(&self) -> &str {
        &self.text
    }

    /// The first tick strictly after `after`, plus `jitter_ms`. `None` if it never fires
    /// again.
    pub fn next_after(&self, after: DateTime<Utc>, jitter_ms: i64) -> Option<DateTime<Utc>> {
        // The jittered tick must be after `after` too: search from `after - jitter`.
        let from = after - chrono::Duration::milliseconds(jitter_ms);
        let next = self
            .cron
            .find_next_occurrence(&from.with_timezone(&self.zone), false)
            .ok()?
            .with_timezone(&Utc);
        Some(next + chrono::Duration::milliseconds(jitter_ms))
    }

    /// The largest jitter for this schedule: a tenth of the interval between two ticks, at
    /// most 60 s, so jitter spreads tenants without moving a tick near the next.
    pub fn jitter_cap_ms(&self) -> i64 {
        let now = Utc::now().with_timezone(&self.zone);
        let Ok(a) = self.cron.find_next_occurrence(&now, false) else {
            return 0;
        };
        let Ok(b) = self.cron.find_next_occurrence(&a, false) else {
            return 0;
        };
        ((b - a).num_milliseconds() / 10).clamp(0, 60_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields_parse_and_others_do_not() {
        assert!(Schedule::parse("0 * * * *", "UTC").is_ok());
        assert!(Schedule::parse("*/5 0 * * * *", "Europe/Paris").is_ok());
        for bad in ["* * * *", "0 0 0 0 0 0 0", "61 * * * *", "nonsense", ""] {
            let e = Schedule::parse(bad, "UTC").unwrap_err().to_string();
            assert!(e.contains("schedule"), "{bad}: {e}");
        }
        assert!(Schedule::parse("0 * * * *", "Mars/Base").is_err());
    }

    #[test]
    fn next_tick_is_after_and_jitter_is_added() {
        let s = Schedule::parse("0 * * * *", "UTC").unwrap();
        let at = "2026-11-29T10:15:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            s.next_after(at, 0).unwrap(),
            "2026-11-29T11:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            s.next_after(at, 5_000).unwrap(),
            "2026-11-29T11:00:05Z".parse::<DateTime<Utc>>().unwrap()
        );
        // Just before a jittered tick: that tick, not the next one.
        let just_before = "2026-11-29T11:00:03Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            s.next_after(just_before, 5_000).unwrap(),
            "2026-11-29T11:00:05Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(s.jitter_cap_ms(), 60_000);
    }

    #[test]
    fn missed_ticks_fold_into_the_next_one_after_now() {
        let s = Schedule::parse("* * * * *", "UTC").unwrap();
        let now = "2026-11-29T10:15:30Z".parse::<DateTime<Utc>>().unwrap();
        // Whatever was missed, the next tick is the first after now.
        assert_eq!(
            s.next_after(now, 0).unwrap(),
            "2026-11-29T10:16:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
