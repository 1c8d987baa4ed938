//! Money, exact to the cent: parsed from the exact text of a JSON number, never through a
//! float and never rounded.

use std::{fmt, str::FromStr};

use rust_decimal::Decimal;

/// Largest budget a `NUMERIC(15,2)` column holds, in cents (exclusive).
pub const MAX_BUDGET_CENTS: i64 = 10_i64.pow(15);

/// An amount of money, exact to the cent, never a float. Non-negative and below
/// [`MAX_BUDGET_CENTS`] so that it fits `NUMERIC(15,2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money {
    cents: i64,
}

impl Money {
    /// From whole cents.
    pub fn from_cents(cents: i64) -> Result<Self, String> {
        if cents < 0 {
            return Err("budget is negative".into());
        }
        if cents >= MAX_BUDGET_CENTS {
            return Err("budget is too large for NUMERIC(15,2)".into());
        }
        Ok(Self { cents })
    }

    /// From the exact text of a JSON number (`1100`, `1100.5`, `1100.50`, `1.1e3`,
    /// `1100.500000`). An amount that is not a whole number of cents (`10.005`, `1e-3`) is an
    /// error, never a rounding; so is one that does not fit.
    // Hand-written rather than rust_decimal's `from_str` / `from_scientific`: those round a
    // number with more than 28 significant digits instead of refusing it, and an exponent
    // such as `1e999999999` must be refused without building the number.
    pub fn parse_json_number(text: &str) -> Result<Self, String> {
        let bad = || format!("budget {text} is not a decimal amount");
        let (negative, rest) = match text.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits_only(int) || !digits_only(frac) || mantissa.ends_with('.') {
            return Err(bad());
        }
        // The value is DIGITS x 10^(exponent - frac.len()); in cents, x 10^(... + 2).
        let exponent: i64 = match exponent {
            None => 0,
            Some(e) => {
                let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                if unsigned.is_empty() || !digits_only(unsigned) {
                    return Err(bad());
                }
                // Anything beyond 18 digits is beyond any budget either way; saturate.
                e.parse::<i64>().unwrap_or(if e.starts_with('-') {
                    i64::MIN / 2
                } else {
                    i64::MAX / 2
                })
            }
        };
        let digits = format!("{int}{frac}");
        let significant = digits.trim_start_matches('0');
        if significant.is_empty() {
            return Ok(Self { cents: 0 });
        }
        if negative {
            return Err(format!("budget {text} is negative"));
        }
        let shift = exponent - frac.len() as i64 + 2;
        let cents_digits = if shift >= 0 {
            // At most 15 digits fit below MAX_BUDGET_CENTS; check before building anything.
            if significant.len() as i64 + shift > 15 {
                return Err(format!("budget {text} is too large for NUMERIC(15,2)"));
            }
            format!("{significant}{}", "0".repeat(shift as usize))
        } else {
            let drop = shift.unsigned_abs();
            let keep = (significant.len() as u64).saturating_sub(drop) as usize;
            if significant[keep..].bytes().any(|b| b != b'0') {
                return Err(format!(
                    "budget {text} is not a whole number of cents (more than two decimal places)"
                ));
            }
            let kept = &significant[..keep];
            if kept.is_empty() {
                return Ok(Self { cents: 0 });
            }
            if kept.len() > 15 {
                return Err(format!("budget {text} is too large for NUMERIC(15,2)"));
            }
            kept.to_owned()
        };
        let cents: i64 = cents_digits.parse().map_err(|_| bad())?;
        Self::from_cents(cents).map_err(|e| format!("{e}: {text}"))
    }

    /// Whole cents.
    pub fn cents(self) -> i64 {
        self.cents
    }

    /// As a decimal with two places, for `NUMERIC` columns.
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.cents, 2)
    }
}

impl fmt::Display for Money {
    /// Always two decimals: `1100.00`, `12.50`. This is also the exact text stored in SQLite.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

impl FromStr for Money {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_json_number(s.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn budgets_are_exact_to_the_cent() {
        for (text, cents) in [
            ("0", 0),
            ("-0", 0),
            ("0.0", 0),
            ("0.1", 10),
            ("1100.50", 110_050),
            ("1100.500000000000000000000000000000", 110_050),
            ("19.99", 1999),
            ("1.1e3", 110_000),
            ("1.1E+3", 110_000),
            ("1e-2", 1),
            ("123e-2", 123),
            ("0.00e999999999999999999999", 0),
            ("9999999999999.99", 999_999_999_999_999),
            ("0.30", 30),
        ] {
            assert_eq!(
                Money::parse_json_number(text).map(Money::cents),
                Ok(cents),
                "{text}"
            );
        }
    }

    #[test]
    fn budgets_that_would_need_rounding_or_do_not_fit_are_refused() {
        for text in [
            "10.005",
            "1e-3",
            // 29 significant digits: rust_decimal would round this to 1.
            "1.0000000000000000000000000001",
            "-1",
            "-0.01",
            "10000000000000",
            "1e20",
            "1e999999999999999999999",
            "1e-999999999999999999999",
            "abc",
            "1.",
            ".5",
            "1e",
            "1e+",
            "0x10",
            "",
        ] {
            assert!(Money::parse_json_number(text).is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn money_round_trips_through_its_text(cents in 0i64..MAX_BUDGET_CENTS) {
            let m = Money::from_cents(cents).unwrap();
            prop_assert_eq!(Money::parse_json_number(&m.to_string()).unwrap(), m);
        }

        #[test]
        fn scientific_and_plain_forms_agree(cents in 0i64..MAX_BUDGET_CENTS, extra in 0u32..6) {
            // cents x 10^-2 written as (cents x 10^extra) e-(2 + extra).
            let text = format!("{}e-{}", cents as i128 * 10i128.pow(extra), 2 + extra);
            prop_assert_eq!(Money::parse_json_number(&text).unwrap().cents(), cents);
        }

        #[test]
        fn any_third_decimal_digit_is_refused(whole in 0u32..1_000_000, d in 1u8..10) {
            let text = format!("{whole}.00{d}");
            prop_assert!(Money::parse_json_number(&text).is_err());
        }
    }
}
