//! dbt-duckdb's `external_location` of a source: a path (`data/{name}.parquet`) or a DuckDB reader call
//! (`read_csv('data/{name}.csv', header=true, delim=';')`), with `{name}`, `{identifier}` and `{source_name}`
//! (also `{schema}`) filled in per table. A call's reader gives the format and its options the source's options.

use std::collections::BTreeMap;

use serde_json::Value;

use super::SourceFormat;

/// What a location says: the path, and the format and options when it is a reader call.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub path: String,
    pub format: Option<SourceFormat>,
    pub options: BTreeMap<String, Value>,
}

/// `template` with the table's placeholders filled, as Python's `str.format` would.
pub fn fill(template: &str, name: &str, identifier: &str, source_name: &str) -> String {
    template
        .replace("{name}", name)
        .replace("{identifier}", identifier)
        .replace("{source_name}", source_name)
        .replace("{schema}", source_name)
}

/// Reads a filled-in location.
pub fn parse(location: &str) -> Result<Location, String> {
    let text = location.trim();
    let Some(open) = text.find('(').filter(|_| text.ends_with(')')) else {
        let path = text.trim_matches(|c| c == '\'' || c == '"').to_string();
        return Ok(Location { format: SourceFormat::from_path(&path), path, options: BTreeMap::new() });
    };
    let function = text[..open].trim().to_ascii_lowercase();
    let format = match function.as_str() {
        "read_csv" | "read_csv_auto" => SourceFormat::Csv,
        "read_parquet" | "parquet_scan" => SourceFormat::Parquet,
        "read_json" | "read_json_auto" | "read_ndjson" | "read_ndjson_auto" => SourceFormat::Json,
        "delta_scan" => SourceFormat::Delta,
        other => {
            return Err(format!(
                "`{other}(...)` is not a reader pipe knows (read_csv, read_parquet, read_json, delta_scan)"
            ))
        }
    };
    let arguments = split_arguments(&text[open + 1..text.len() - 1]);
    let mut arguments = arguments.into_iter();
    let first = arguments.next().unwrap_or_default();
    let path = string_literal(&first).ok_or_else(|| {
        format!("the first argument of `{function}` must be one path in quotes, not `{first}` (pipe reads one path or glob)")
    })?;
    let mut options = BTreeMap::new();
    for argument in arguments {
        let Some((key, value)) = argument.split_once('=') else {
            return Err(format!("`{argument}`: reader options are written `name=value`"));
        };
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        match key.as_str() {
            "header" => {
                options.insert("header".to_string(), Value::Bool(boolean(value)?));
            }
            "delim" | "sep" | "delimiter" => {
                let delimiter = string_literal(value).ok_or_else(|| format!("`{key}` takes a quoted character"))?;
                options.insert("delimiter".to_string(), Value::String(delimiter));
            }
            // Options that do not change what pipe reads (type detection and file naming it does itself).
            "auto_detect" | "filename" | "hive_partitioning" | "union_by_name" | "sample_size" | "format"
            | "records" | "compression" | "all_varchar" | "normalize_names" => {}
            other => return Err(format!("the reader option `{other}` is not supported by pipe yet")),
        }
    }
    Ok(Location { path, format: Some(format), options })
}

fn boolean(text: &str) -> Result<bool, String> {
    match text.trim_matches(|c| c == '\'' || c == '"').to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("`{other}` is not true or false")),
    }
}

/// The text of a quoted string literal (`'a''b'` is `a'b`), or `None` when `text` is not one.
fn string_literal(text: &str) -> Option<String> {
    let text = text.trim();
    let quote = text.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = text.strip_prefix(quote)?.strip_suffix(quote)?;
    Some(inner.replace(&format!("{quote}{quote}"), &quote.to_string()))
}

/// Arguments split at top-level commas (not inside quotes, brackets or braces).
fn split_arguments(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_dbt_duckdb_projects_write() {
        let filled = fill("data/{source_name}/{name}.csv", "orders", "orders_v2", "raw");
        assert_eq!(filled, "data/raw/orders.csv");
        let parsed = parse("'data/orders.parquet'").unwrap();
        assert_eq!((parsed.path.as_str(), parsed.format), ("data/orders.parquet", Some(SourceFormat::Parquet)));
        let parsed = parse("read_csv('data/o.txt', header = false, delim=';', auto_detect=true)").unwrap();
        assert_eq!(parsed.path, "data/o.txt");
        assert_eq!(parsed.format, Some(SourceFormat::Csv));
        assert_eq!(parsed.options["header"], Value::Bool(false));
        assert_eq!(parsed.options["delimiter"], Value::String(";".into()));
        assert!(parse("read_csv(['a.csv', 'b.csv'])").unwrap_err().contains("one path in quotes"));
        assert!(parse("read_excel('a.xlsx')").unwrap_err().contains("not a reader pipe knows"));
        assert!(parse("read_csv('a.csv', columns={'a': 'INT'})").unwrap_err().contains("`columns` is not supported"));
    }
}
