//! A campaign as adsync stores it, and the validation that turns one raw API record into a
//! [`Campaign`] or an [`InvalidCampaign`] whose reason goes to the dead-letter table.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde_json::Value;

/// Longest campaign id accepted, in bytes. Ids go into URL paths and primary keys.
pub const MAX_ID_BYTES: usize = 128;
/// Longest campaign name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;
/// Largest budget a `NUMERIC(15,2)` column holds, in cents (exclusive).
pub const MAX_BUDGET_CENTS: i64 = 10_i64.pow(15);

/// A campaign id as the platform sends it (`campaign_1`): 1 to [`MAX_ID_BYTES`] bytes, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CampaignId(String);

impl CampaignId {
    /// Validates an id.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("id is empty".into());
        }
        if s.len() > MAX_ID_BYTES {
            return Err(format!(
                "id is {} bytes long (at most {MAX_ID_BYTES})",
                s.len()
            ));
        }
        if s.chars().any(char::is_control) {
            return Err("id contains a control character".into());
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CampaignId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The statuses the platform is known to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CampaignStatus {
    /// Running.
    Active,
    /// Stopped for now.
    Paused,
    /// Ended.
    Completed,
}

impl CampaignStatus {
    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Completed => "completed",
        }
    }
}

impl FromStr for CampaignStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "paused" => Ok(Self::Paused),
            "completed" => Ok(Self::Completed),
            other => Err(format!(
                "unknown status {other:?} (expected active, paused or completed)"
            )),
        }
    }
}

impl fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

    /// From the exact text of a JSON number (`1100`, `1100.5`, `1100.50`, `1.1e3`). More than two
    /// decimal places is an error, not a rounding.
    pub fn parse_json_number(text: &str) -> Result<Self, String> {
        let d = if text.contains(['e', 'E']) {
            Decimal::from_scientific(text)
        } else {
            Decimal::from_str(text)
        }
        .map_err(|_| format!("budget {text} is not a decimal amount"))?
        .normalize();
        if d.scale() > 2 {
            return Err(format!("budget {text} has more than two decimal places"));
        }
        // Scale <= 2, so d * 100 is a whole number; to_i64 fails only when it does not fit.
        let cents = (d * Decimal::ONE_HUNDRED)
            .to_i64()
            .ok_or_else(|| format!("budget {text} is too large"))?;
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

/// A campaign that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// The platform's id.
    pub id: CampaignId,
    /// Any Unicode but NUL, quotes and newlines included, kept byte for byte.
    pub name: String,
    /// Known status.
    pub status: CampaignStatus,
    /// Exact budget.
    pub budget: Money,
    /// Live counter, non-negative.
    pub impressions: i64,
    /// Live counter, non-negative.
    pub clicks: i64,
    /// Live counter, non-negative.
    pub conversions: i64,
    /// When the platform created the campaign.
    pub created_at: DateTime<Utc>,
}

/// A raw record that is not a valid campaign, with every reason found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid campaign {}: {reason}", id.as_deref().unwrap_or("(no id)"))]
pub struct InvalidCampaign {
    /// The record's id as sent, when it had a string id at all.
    pub id: Option<String>,
    /// Every problem found, joined with `; `.
    pub reason: String,
}

impl Campaign {
    /// Validates one record of a campaigns page. Extra fields are ignored; every problem is
    /// reported, not only the first.
    pub fn from_json(raw: &Value) -> Result<Campaign, InvalidCampaign> {
        let mut problems: Vec<String> = Vec::new();
        let Some(obj) = raw.as_object() else {
            return Err(InvalidCampaign {
                id: None,
                reason: format!("record is {} rather than an object", kind(raw)),
            });
        };
        let raw_id = obj.get("id").and_then(Value::as_str).map(str::to_owned);

        let id = match obj.get("id") {
            Some(Value::String(s)) => CampaignId::parse(s).map_err(|e| problems.push(e)).ok(),
            Some(other) => {
                problems.push(format!("id is {} rather than a string", kind(other)));
                None
            }
            None => {
                problems.push("id is missing".into());
                None
            }
        };
        let name = match obj.get("name") {
            Some(Value::String(s)) if s.contains('\0') => {
                problems.push("name contains a NUL byte, which PostgreSQL cannot store".into());
                None
            }
            Some(Value::String(s)) if s.len() > MAX_NAME_BYTES => {
                problems.push(format!(
                    "name is {} bytes long (at most {MAX_NAME_BYTES})",
                    s.len()
                ));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                problems.push(format!("name is {} rather than a string", kind(other)));
                None
            }
            None => {
                problems.push("name is missing".into());
                None
            }
        };
        let status = match obj.get("status") {
            Some(Value::String(s)) => s.parse().map_err(|e| problems.push(e)).ok(),
            Some(other) => {
                problems.push(format!("status is {} rather than a string", kind(other)));
                None
            }
            None => {
                problems.push("status is missing".into());
                None
            }
        };
        let budget = match obj.get("budget") {
            Some(Value::Number(n)) => Money::parse_json_number(&n.to_string())
                .map_err(|e| problems.push(e))
                .ok(),
            Some(other) => {
                problems.push(format!("budget is {} rather than a number", kind(other)));
                None
            }
            None => {
                problems.push("budget is missing".into());
                None
            }
        };
        let mut counter = |field: &str| -> Option<i64> {
            match obj.get(field) {
                Some(Value::Number(n)) => match n.as_i64() {
                    Some(v) if v >= 0 => Some(v),
                    Some(v) => {
                        problems.push(format!("{field} is negative ({v})"));
                        None
                    }
                    None => {
                        problems.push(format!("{field} is {n}, not an integer that fits 64 bits"));
                        None
                    }
                },
                Some(other) => {
                    problems.push(format!("{field} is {} rather than an integer", kind(other)));
                    None
                }
                None => {
                    problems.push(format!("{field} is missing"));
                    None
                }
            }
        };
        let impressions = counter("impressions");
        let clicks = counter("clicks");
        let conversions = counter("conversions");
        let created_at = match obj.get("created_at") {
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc))
                .map_err(|e| problems.push(format!("created_at {s:?} is not RFC 3339 ({e})")))
                .ok(),
            Some(other) => {
                problems.push(format!(
                    "created_at is {} rather than a string",
                    kind(other)
                ));
                None
            }
            None => {
                problems.push("created_at is missing".into());
                None
            }
        };

        match (
            id,
            name,
            status,
            budget,
            impressions,
            clicks,
            conversions,
            created_at,
        ) {
            (
                Some(id),
                Some(name),
                Some(status),
                Some(budget),
                Some(impressions),
                Some(clicks),
                Some(conversions),
                Some(created_at),
            ) if problems.is_empty() => Ok(Campaign {
                id,
                name,
                status,
                budget,
                impressions,
                clicks,
                conversions,
                created_at,
            }),
            _ => Err(InvalidCampaign {
                id: raw_id,
                reason: problems.join("; "),
            }),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn reference() -> Value {
        serde_json::from_str(
            r#"{"id": "campaign_1", "name": "Campaign 1", "status": "active", "budget": 1100,
                "impressions": 8432, "clicks": 234, "conversions": 12,
                "created_at": "2024-12-11T10:30:00.000Z"}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_contracts_example_is_valid() {
        let c = Campaign::from_json(&reference()).unwrap();
        assert_eq!(c.id.as_str(), "campaign_1");
        assert_eq!(c.budget.cents(), 110_000);
        assert_eq!(c.budget.to_string(), "1100.00");
        assert_eq!(c.status, CampaignStatus::Active);
    }

    #[test]
    fn budgets_are_exact_to_the_cent() {
        for (text, cents) in [
            ("0", 0),
            ("0.1", 10),
            ("1100.50", 110_050),
            ("19.99", 1999),
            ("1.1e3", 110_000),
            ("9999999999999.99", 999_999_999_999_999),
            ("0.30", 30),
        ] {
            assert_eq!(
                Money::parse_json_number(text).unwrap().cents(),
                cents,
                "{text}"
            );
        }
    }

    #[test]
    fn budgets_that_would_need_rounding_or_do_not_fit_are_refused() {
        for text in ["10.005", "-1", "10000000000000", "1e20", "abc"] {
            assert!(Money::parse_json_number(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_budget_keeps_its_cents_through_json_parsing() {
        let mut v = reference();
        v["budget"] = serde_json::from_str("1234567890123.45").unwrap();
        let c = Campaign::from_json(&v).unwrap();
        assert_eq!(c.budget.to_string(), "1234567890123.45");
    }

    #[test]
    fn hostile_names_are_kept_verbatim() {
        let mut v = reference();
        let name = "Robert'); DROP TABLE campaigns;--\n\"Ünïcødé\" 广告 🚀\t\\";
        v["name"] = json!(name);
        assert_eq!(Campaign::from_json(&v).unwrap().name, name);
    }

    #[test]
    fn every_problem_is_reported() {
        let v = json!({"id": "c1", "name": "a\u{0}b", "status": "archived", "budget": -5,
                       "impressions": -1, "clicks": 1.5, "created_at": "yesterday"});
        let err = Campaign::from_json(&v).unwrap_err();
        assert_eq!(err.id.as_deref(), Some("c1"));
        for needle in [
            "NUL byte",
            "unknown status",
            "budget is negative",
            "impressions is negative",
            "clicks is 1.5",
            "conversions is missing",
            "created_at",
        ] {
            assert!(
                err.reason.contains(needle),
                "{needle} not in {}",
                err.reason
            );
        }
    }

    #[test]
    fn ids_are_bounded_and_typed() {
        let mut v = reference();
        v["id"] = json!("x".repeat(MAX_ID_BYTES + 1));
        assert!(
            Campaign::from_json(&v)
                .unwrap_err()
                .reason
                .contains("bytes long")
        );
        v["id"] = json!(42);
        let err = Campaign::from_json(&v).unwrap_err();
        assert_eq!(err.id, None);
        assert!(err.reason.contains("id is a number"));
        assert!(Campaign::from_json(&json!([1])).is_err());
    }

    proptest! {
        #[test]
        fn money_round_trips_through_its_text(cents in 0i64..MAX_BUDGET_CENTS) {
            let m = Money::from_cents(cents).unwrap();
            prop_assert_eq!(Money::parse_json_number(&m.to_string()).unwrap(), m);
        }

        #[test]
        fn any_name_without_nul_survives_validation(name in "[^\u{0}]{0,200}") {
            let mut v = reference();
            v["name"] = json!(name.clone());
            prop_assert_eq!(Campaign::from_json(&v).unwrap().name, name);
        }
    }
}
