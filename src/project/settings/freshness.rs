//! A source's `freshness:` (dbt's `warn_after` / `error_after` / `filter`), parsed once from its YAML.

use chrono::TimeDelta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How old a source's newest row may be before `pipe source freshness` warns or fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshnessRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_after: Option<FreshnessPeriod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_after: Option<FreshnessPeriod>,
    /// A SQL condition the newest row is looked for under (dbt's `filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// `{count: 12, period: hour}`, as dbt writes it in `manifest.json` and `sources.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreshnessPeriod {
    pub count: i64,
    /// `minute`, `hour` or `day` (also `second` and `week`).
    pub period: String,
}

impl FreshnessPeriod {
    pub fn duration(&self) -> TimeDelta {
        let unit = |n: i64| match self.period.trim_end_matches('s') {
            "second" => TimeDelta::seconds(n),
            "minute" => TimeDelta::minutes(n),
            "day" => TimeDelta::days(n),
            "week" => TimeDelta::weeks(n),
            _ => TimeDelta::hours(n),
        };
        unit(self.count)
    }

    /// `{count: 12, period: hour}` or `12 hours`.
    fn parse(value: &Value) -> Result<FreshnessPeriod, String> {
        let (count, period) = match value {
            Value::String(text) => {
                let mut words = text.split_whitespace();
                match (words.next().and_then(|n| n.parse::<i64>().ok()), words.next(), words.next()) {
                    (Some(count), Some(period), None) => (count, period.to_string()),
                    _ => return Err(format!("`{text}` is not a period such as `12 hours`")),
                }
            }
            Value::Object(map) => {
                let count = map.get("count").and_then(Value::as_i64);
                let period = map.get("period").and_then(Value::as_str);
                match (count, period) {
                    (Some(count), Some(period)) => (count, period.to_string()),
                    _ => return Err("needs `count` (a whole number) and `period` (minute, hour or day)".into()),
                }
            }
            other => return Err(format!("`{other}` is not `{{count: 12, period: hour}}`")),
        };
        let singular = period.trim_end_matches('s');
        if !["second", "minute", "hour", "day", "week"].contains(&singular) {
            return Err(format!("unknown period `{period}`: use `minute`, `hour` or `day`"));
        }
        if count <= 0 {
            return Err(format!("the count must be positive, not {count}"));
        }
        Ok(FreshnessPeriod { count, period: singular.to_string() })
    }
}

impl FreshnessRule {
    /// The rule of a source table: its own `freshness:` keys over its source's (dbt merges them key by key, and
    /// `warn_after` / `error_after` one level deeper). `None` when neither declares a threshold.
    pub fn merged(source: Option<&Value>, table: Option<&Value>) -> Result<Option<FreshnessRule>, String> {
        let source = source.map(FreshnessRule::parse).transpose()?;
        let table = table.map(FreshnessRule::parse).transpose()?;
        let rule = match (source, table) {
            (None, None) => return Ok(None),
            (Some(rule), None) | (None, Some(rule)) => rule,
            (Some(base), Some(over)) => FreshnessRule {
                warn_after: over.warn_after.or(base.warn_after),
                error_after: over.error_after.or(base.error_after),
                filter: over.filter.or(base.filter),
            },
        };
        Ok((rule.warn_after.is_some() || rule.error_after.is_some()).then_some(rule))
    }

    fn parse(value: &Value) -> Result<FreshnessRule, String> {
        let Value::Object(map) = value else {
            return Err("`freshness` is a mapping with `warn_after`, `error_after` and `filter`".into());
        };
        let mut rule = FreshnessRule::default();
        for (key, value) in map {
            match key.as_str() {
                "warn_after" if !value.is_null() => {
                    rule.warn_after = Some(FreshnessPeriod::parse(value).map_err(|e| format!("`warn_after`: {e}"))?)
                }
                "error_after" if !value.is_null() => {
                    rule.error_after = Some(FreshnessPeriod::parse(value).map_err(|e| format!("`error_after`: {e}"))?)
                }
                "filter" => rule.filter = value.as_str().map(str::to_string),
                "warn_after" | "error_after" => {}
                other => return Err(format!("unknown key `{other}`: use `warn_after`, `error_after` or `filter`")),
            }
        }
        Ok(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_keys_override_the_sources_key_by_key() {
        let source =
            json!({"warn_after": {"count": 12, "period": "hour"}, "error_after": {"count": 1, "period": "day"}});
        let table = json!({"warn_after": "30 minutes", "filter": "region = 'eu'"});
        let rule = FreshnessRule::merged(Some(&source), Some(&table)).unwrap().unwrap();
        assert_eq!(rule.warn_after.as_ref().unwrap().duration(), TimeDelta::minutes(30));
        assert_eq!(rule.error_after.as_ref().unwrap().duration(), TimeDelta::days(1));
        assert_eq!(rule.filter.as_deref(), Some("region = 'eu'"));
    }

    #[test]
    fn a_rule_without_thresholds_is_none_and_bad_periods_say_why() {
        assert_eq!(FreshnessRule::merged(Some(&json!({"filter": "x"})), None), Ok(None));
        let err = FreshnessRule::merged(None, Some(&json!({"warn_after": {"count": 2, "period": "fortnight"}})));
        assert_eq!(err, Err("`warn_after`: unknown period `fortnight`: use `minute`, `hour` or `day`".into()));
    }
}
