//! A campaign as adsync stores it, and the validation that turns one raw API record into a
//! [`Campaign`] (its exact JSON text kept alongside) or an [`InvalidCampaign`] whose reason goes
//! to the dead-letter table.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::Money;

/// Longest campaign id accepted, in bytes. Ids go into URL paths and primary keys.
pub const MAX_ID_BYTES: usize = 128;
/// Longest campaign name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 4096;
/// Longest status accepted, in bytes (an unknown status is stored verbatim, within reason).
pub const MAX_STATUS_BYTES: usize = 64;

/// A campaign id as the platform sends it (`campaign_1`): 1 to [`MAX_ID_BYTES`] bytes. Ids go
/// into URL paths, so nothing that could change the path's meaning is accepted: no `.` or
/// `..`, no `/`, `\`, `%`, `?` or `#`, no control characters, no whitespace at either end.
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
        if s == "." || s == ".." {
            return Err(format!("id {s:?} is a path segment, not an id"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| matches!(c, '/' | '\\' | '%' | '?' | '#'))
        {
            return Err(format!(
                "id {s:?} contains {c:?}, which is not allowed in an id"
            ));
        }
        if s.trim() != s {
            return Err(format!("id {s:?} starts or ends with whitespace"));
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

/// A campaign's status. The three the platform documents are named; any other non-empty
/// status is kept verbatim as [`CampaignStatus::Other`] (schema drift loses nothing), and the
/// run counts it as a warning.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CampaignStatus {
    /// Running.
    Active,
    /// Stopped for now.
    Paused,
    /// Ended.
    Completed,
    /// A status adsync does not know yet, exactly as sent.
    Other(String),
}

impl CampaignStatus {
    /// Validates a status: 1 to [`MAX_STATUS_BYTES`] bytes, no control characters. Unknown
    /// values are accepted as [`CampaignStatus::Other`].
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "active" => Self::Active,
            "paused" => Self::Paused,
            "completed" => Self::Completed,
            "" => return Err("status is empty".into()),
            s if s.len() > MAX_STATUS_BYTES => {
                return Err(format!(
                    "status is {} bytes long (at most {MAX_STATUS_BYTES})",
                    s.len()
                ));
            }
            s if s.chars().any(char::is_control) => {
                return Err("status contains a control character".into());
            }
            other => Self::Other(other.to_owned()),
        })
    }

    /// The wire and storage spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Other(s) => s,
        }
    }

    /// Whether this is one of the documented statuses.
    pub fn is_known(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

impl FromStr for CampaignStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for CampaignStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A campaign that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Campaign {
    /// The platform's id.
    pub id: CampaignId,
    /// Any Unicode but NUL, quotes and newlines included, kept byte for byte.
    pub name: String,
    /// Status; an unknown one is kept verbatim.
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
    /// The record exactly as received (JSON text), so fields adsync does not model yet are
    /// kept (`campaigns.raw`).
    pub raw: String,
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
    /// Validates one record of a campaigns page from its exact JSON text, which is kept as
    /// [`Campaign::raw`]. Every problem is reported, not only the first.
    pub fn from_json_text(text: &str) -> Result<Campaign, InvalidCampaign> {
        let value: Value = serde_json::from_str(text).map_err(|e| InvalidCampaign {
            id: None,
            reason: format!("record is not JSON ({e})"),
        })?;
        Self::validate(&value, text.to_owned())
    }

    /// Validates one record already parsed; its raw text is the value serialized again.
    pub fn from_json(value: &Value) -> Result<Campaign, InvalidCampaign> {
        Self::validate(value, value.to_string())
    }

    fn validate(raw: &Value, raw_text: String) -> Result<Campaign, InvalidCampaign> {
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
            Some(Value::String(s)) => CampaignStatus::parse(s).map_err(|e| problems.push(e)).ok(),
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
                raw: raw_text,
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
        let v = json!({"id": "c1", "name": "a\u{0}b", "status": "", "budget": -5,
                       "impressions": -1, "clicks": 1.5, "created_at": "yesterday"});
        let err = Campaign::from_json(&v).unwrap_err();
        assert_eq!(err.id.as_deref(), Some("c1"));
        for needle in [
            "NUL byte",
            "budget -5 is negative",
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

    #[test]
    fn an_unknown_status_is_kept_verbatim_and_flagged() {
        let mut v = reference();
        v["status"] = json!("archived_v2");
        let c = Campaign::from_json(&v).unwrap();
        assert_eq!(c.status.as_str(), "archived_v2");
        assert!(!c.status.is_known());
        assert!(Campaign::from_json(&reference()).unwrap().status.is_known());
        v["status"] = json!("x".repeat(MAX_STATUS_BYTES + 1));
        assert!(Campaign::from_json(&v).is_err());
    }

    #[test]
    fn the_raw_text_is_kept_byte_for_byte_with_fields_adsync_does_not_model() {
        let text = r#"{"id":"campaign_1","name":"Campaign 1","status":"active","budget":1100.50,"impressions":1,"clicks":0,"conversions":0,"created_at":"2024-12-11T10:30:00.000Z","bid_strategy":{"kind":"cpc","max":0.10}}"#;
        let c = Campaign::from_json_text(text).unwrap();
        assert_eq!(c.raw, text);
        assert_eq!(c.budget.to_string(), "1100.50");
        assert!(Campaign::from_json_text("{not json").is_err());
    }

    #[test]
    fn ids_that_could_change_a_url_path_are_refused() {
        for bad in [
            ".", "..", "a/b", "../x", "a\\b", "50%", "a?b", "a#b", " a", "a ", "",
        ] {
            assert!(CampaignId::parse(bad).is_err(), "{bad:?}");
        }
        for good in ["campaign_1", "act-123.4", "广告 1", "a b", "...", "a..b"] {
            assert!(CampaignId::parse(good).is_ok(), "{good:?}");
        }
    }

    proptest! {
        #[test]
        fn any_name_without_nul_survives_validation(name in "[^\u{0}]{0,200}") {
            let mut v = reference();
            v["name"] = json!(name.clone());
            prop_assert_eq!(Campaign::from_json(&v).unwrap().name, name);
        }
    }
}
