//! `Money::parse_json_number` (what a campaign's budget goes through) against a plain
//! reference: the text's exact value in cents, decided with integers only.
#![no_main]

use adsync_domain::{MAX_BUDGET_CENTS, Money};
use libfuzzer_sys::fuzz_target;

/// `Some(Some(cents))`: must parse to that; `Some(None)`: must be refused.
fn reference(text: &str) -> Option<Option<i64>> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) if digits(f) => (i, f),
        Some(_) => return Some(None),
        None => (mantissa, ""),
    };
    if !digits(int) {
        return Some(None);
    }
    let exponent: i128 = match exponent {
        None => 0,
        Some(e) => {
            let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
            if !digits(unsigned) {
                return Some(None);
            }
            match e.parse::<i128>() {
                Ok(v) => v,
                // Beyond i128: no non-zero value is a whole number of cents below the cap.
                Err(_) => {
                    let zero = format!("{int}{frac}").bytes().all(|b| b == b'0');
                    return Some(zero.then_some(0));
                }
            }
        }
    };
    let all = format!("{int}{frac}");
    let significant = all.trim_start_matches('0');
    if significant.is_empty() {
        return Some(Some(0));
    }
    if negative {
        return Some(None);
    }
    let trimmed = significant.trim_end_matches('0');
    let trailing = (significant.len() - trimmed.len()) as i128;
    let shift = exponent - frac.len() as i128 + 2 + trailing;
    if shift < 0 || trimmed.len() as i128 + shift > 15 {
        return Some(None);
    }
    let cents: i64 = format!("{trimmed}{}", "0".repeat(shift as usize))
        .parse()
        .ok()?;
    Some((cents < MAX_BUDGET_CENTS).then_some(cents))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Money::parse_json_number(text);
    if let Ok(m) = parsed {
        assert!((0..MAX_BUDGET_CENTS).contains(&m.cents()));
        assert_eq!(
            Money::parse_json_number(&m.to_string()),
            Ok(m),
            "round trip"
        );
        assert_eq!(
            m.to_decimal() * rust_decimal::Decimal::from(100),
            m.cents().into()
        );
    }
    if let Some(expected) = reference(text) {
        assert_eq!(parsed.ok().map(Money::cents), expected, "{text:?}");
    }
    assert_eq!(
        text.trim().parse::<Money>(),
        Money::parse_json_number(text.trim())
    );
});
