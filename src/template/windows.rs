//! Event-time windows as built-in macros, under `pipe.`: they render to DataFusion SQL.
//! - `{{ pipe.tumble('ts', '1 hour') }}`: the start of the fixed window holding `ts`;
//! - `{{ pipe.hop('ts', '1 hour', '15 minutes') }}`: one row per sliding window holding `ts` (its start), so
//!   select it in a subquery and group by it outside;
//! - `{{ pipe.session('relation', 'ts', 'user_id', '30 minutes') }}`: `relation` with `session_id` and
//!   `session_start`: a session ends when the same key is quiet for longer than the gap;
//! - `{{ pipe.window_end('window_start', '1 hour') }}`.
//!
//! Windows are aligned on 1970-01-01 00:00:00 UTC. Late data is handled by the model's materialization: a
//! microbatch model with `allowed_lateness` recomputes the windows within it and reports events beyond it.

use std::collections::BTreeMap;

use minijinja::value::Value as JValue;
use minijinja::{Error, ErrorKind};

const ORIGIN: &str = "timestamp '1970-01-01 00:00:00'";

/// An interval literal, checked to be `<number> <unit>` so nothing else reaches the SQL.
fn interval(text: &str) -> Result<String, Error> {
    let mut parts = text.split_whitespace();
    let valid = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(unit), None) => {
            n.parse::<u64>().is_ok()
                && matches!(
                    unit.trim_end_matches('s'),
                    "second" | "minute" | "hour" | "day" | "week" | "month" | "year"
                )
        }
        _ => false,
    };
    if valid {
        Ok(format!("interval '{text}'"))
    } else {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("`{text}` is not an interval like `15 minutes` or `1 hour`"),
        ))
    }
}

/// A column or relation name: letters, digits, `_` and `.` only.
fn name(text: &str) -> Result<&str, Error> {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        Ok(text)
    } else {
        Err(Error::new(ErrorKind::InvalidOperation, format!("`{text}` is not a column or relation name")))
    }
}

fn tumble(column: String, size: String) -> Result<String, Error> {
    Ok(format!("date_bin({}, {}, {ORIGIN})", interval(&size)?, name(&column)?))
}

fn hop(column: String, size: String, slide: String) -> Result<String, Error> {
    let (size, slide, column) = (interval(&size)?, interval(&slide)?, name(&column)?);
    let last = format!("date_bin({slide}, {column}, {ORIGIN})");
    Ok(format!("unnest(range({last} - ({size} - {slide}), {last} + {slide}, {slide}))"))
}

fn session(relation: String, column: String, key: String, gap: String) -> Result<String, Error> {
    let (relation, column, key, gap) = (name(&relation)?, name(&column)?, name(&key)?, interval(&gap)?);
    Ok(format!(
        "(select *, min({column}) over (partition by {key}, session_id) as session_start from (\
         select *, sum(case when __pipe_previous is null or {column} - __pipe_previous > {gap} then 1 else 0 end) \
         over (partition by {key} order by {column} rows between unbounded preceding and current row) as session_id \
         from (select *, lag({column}) over (partition by {key} order by {column}) as __pipe_previous \
         from {relation}) __pipe_s0) __pipe_s1)"
    ))
}

fn window_end(start: String, size: String) -> Result<String, Error> {
    Ok(format!("({} + {})", name(&start)?, interval(&size)?))
}

/// The `pipe` global: `pipe.tumble`, `pipe.hop`, `pipe.session`, `pipe.window_end`.
pub(super) fn namespace() -> JValue {
    let mut functions = BTreeMap::new();
    functions.insert("tumble", JValue::from_function(tumble));
    functions.insert("hop", JValue::from_function(hop));
    functions.insert("session", JValue::from_function(session));
    functions.insert("window_end", JValue::from_function(window_end));
    JValue::from_iter(functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str) -> Result<String, Error> {
        let mut env = minijinja::Environment::new();
        env.add_global("pipe", namespace());
        env.render_str(template, ())
    }

    #[test]
    fn windows_render_to_sql() {
        assert_eq!(
            render("{{ pipe.tumble('ts', '1 hour') }}").unwrap(),
            "date_bin(interval '1 hour', ts, timestamp '1970-01-01 00:00:00')"
        );
        assert!(render("{{ pipe.hop('ts', '1 hour', '15 minutes') }}").unwrap().starts_with("unnest(range("));
        assert!(render("{{ pipe.session('e', 'ts', 'user_id', '30 minutes') }}").unwrap().contains("lag(ts)"));
        let err = render("{{ pipe.tumble('ts', '1 hour; drop table x') }}").unwrap_err();
        assert!(err.to_string().contains("is not an interval"), "{err}");
        assert!(render("{{ pipe.tumble('ts) --', '1 hour') }}").is_err());
    }
}
