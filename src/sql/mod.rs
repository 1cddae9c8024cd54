//! Parses rendered model SQL with DataFusion's re-exported sqlparser and finds what it reads.
//!
//! In: rendered SQL and the template's `OffsetMap`. Out: `AnalyzedModel` (the parsed query, the relations it names
//! with their spans, its CTE names) or diagnostics that point back into the model file.
//! **Architecture invariant:** this stage never executes a query and never opens the warehouse.

pub mod duckdb;
pub mod plan;
pub mod source_schema;
pub mod storage;

use std::collections::BTreeSet;
use std::ops::{ControlFlow, Range};

use datafusion::sql::sqlparser::ast::{ObjectName, ObjectNamePart, Query, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Location;

use crate::diagnostics::{Code, Diagnostic, FileId, SourceFile};
use crate::template::OffsetMap;

/// A table a query reads, as written (lower-cased, dot-joined), with its span in the rendered SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationRef {
    pub name: String,
    pub span: Range<usize>,
}

/// What a model's query reads. The syntax tree itself is dropped after analysis: at ten thousand models, keeping
/// every tree costs hundreds of megabytes.
#[derive(Debug, Clone, Default)]
pub struct AnalyzedModel {
    pub relations: Vec<RelationRef>,
    pub ctes: BTreeSet<String>,
}

/// Where rendered SQL came from, for mapping parser positions back to what the user wrote.
pub struct SqlOrigin<'a> {
    pub file_id: FileId,
    pub file: &'a SourceFile,
    pub offsets: &'a OffsetMap,
}

/// Table functions DataFusion provides; reading them is not a hidden dependency.
const TABLE_FUNCTIONS: &[&str] = &["range", "generate_series", "unnest"];

/// DataFusion's error text without its internal prefixes (`Error during planning: ` and the like).
pub fn clean_message(text: &str) -> String {
    let mut text = text.trim();
    let prefixes = [
        "Error during planning: ",
        "Schema error: ",
        "Arrow error: ",
        "External error: ",
        "Execution error: ",
        "Optimizer rule ",
    ];
    while let Some(rest) = prefixes.iter().find_map(|p| text.strip_prefix(p)) {
        text = rest;
    }
    // A data file that is not Parquet (corrupt, truncated, overwritten): name it and say how to recover.
    if let Some(rest) = text.split("Failed to fetch metadata for file ").nth(1) {
        let path = rest.split(": ").next().unwrap_or(rest).trim();
        return format!(
            "the data file `/{}` cannot be read: it is not valid Parquet (corrupt or truncated); restore it from a backup, or rebuild its table with `pipe build -s <model> --full-refresh`",
            path.trim_start_matches('/')
        );
    }
    if let Some(message) = no_matching_function(text) {
        return message;
    }
    // DataFusion asks for bug reports on errors it labels internal; the user's query is what to fix here.
    let noise = ["bug in DataFusion", "filing a bug report", "issue tracker", "Internal error"];
    if !noise.iter().any(|n| text.contains(n)) {
        return text.trim().to_string();
    }
    // The request for a bug report goes; the sentence an "Internal error" labels is what went wrong, and stays.
    let mut text: String =
        text.split_inclusive(". ").filter(|sentence| !noise[..3].iter().any(|n| sentence.contains(n))).collect();
    for noise in ["Internal error: ", "This issue was likely caused by a bug in DataFusion's code."] {
        text = text.replace(noise, "");
    }
    let text = text.trim().trim_end_matches('.').to_string();
    text
}

/// `No function matches the given name and argument types 'sum(Timestamp(ns))'`, however DataFusion wraps it (a
/// failed coercion of `coalesce` says it after two "Execution error"s): which function, and the types it was given.
fn no_matching_function(text: &str) -> Option<String> {
    let rest = text.split("No function matches the given name and argument types '").nth(1)?;
    let (call, _) = rest.split_once('\'')?;
    let (name, args) = call.split_once('(')?;
    let args = args.strip_suffix(')').unwrap_or(args);
    Some(format!("`{name}` does not take arguments of type ({args}); cast them to types it takes"))
}

/// Where the output column `name` is named in `sql`: its alias (`as name`, `as "name"`), else the first mention
/// of the name as a word, as a 1-based line and column.
pub fn column_name_location(name: &str, sql: &str) -> Option<(u64, u64)> {
    let lower = sql.to_lowercase();
    let name = name.to_lowercase();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let word_at = |start: usize, len: usize| {
        lower[..start].chars().next_back().is_none_or(|c| !is_ident(c))
            && lower[start + len..].chars().next().is_none_or(|c| !is_ident(c))
    };
    let mentions: Vec<usize> = lower.match_indices(&name).map(|(i, _)| i).filter(|i| word_at(*i, name.len())).collect();
    let aliased = mentions.iter().copied().find(|&i| {
        let before = lower[..i].trim_end().trim_end_matches('"').trim_end();
        before.ends_with(" as") || before.ends_with("\nas")
    });
    let start = aliased.or_else(|| mentions.first().copied())?;
    let line = sql[..start].matches('\n').count() + 1;
    let column = sql[..start].rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line as u64, column as u64))
}

/// Where a message of `clean_message` names a function (`` `coalesce` does not take ``): the first call of it in
/// `sql`, as a 1-based line and column, for a planning error DataFusion gave no position.
pub fn function_call_location(message: &str, sql: &str) -> Option<(u64, u64)> {
    let name = message.strip_prefix('`')?.split('`').next()?.to_lowercase();
    let lower = sql.to_lowercase();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(found) = lower[from..].find(&name) {
        let start = from + found;
        let before_ok = lower[..start].chars().next_back().is_none_or(|c| !is_ident(c));
        let after = lower[start + name.len()..].trim_start();
        if before_ok && after.starts_with('(') {
            let line = sql[..start].matches('\n').count() + 1;
            let column = sql[..start].rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Some((line as u64, column as u64));
        }
        from = start + name.len();
    }
    None
}

/// How deeply expressions may nest (sqlparser's default, 50, rejects 48 nested `CASE`s). pipe parses and plans on
/// threads with a large stack (`cli::STACK_SIZE`), so a deeper query plans or fails with a message.
pub const RECURSION_LIMIT: usize = 1_000;

/// Parses one model's rendered SQL: exactly one query, or a diagnostic.
pub fn analyze(
    sql: &str,
    origin: &SqlOrigin<'_>,
    dialect: crate::project::SqlDialect,
) -> Result<AnalyzedModel, Diagnostic> {
    let (generic, duckdb) = (GenericDialect {}, datafusion::sql::sqlparser::dialect::DuckDbDialect {});
    let dialect: &dyn datafusion::sql::sqlparser::dialect::Dialect =
        if dialect.is_duckdb() { &duckdb } else { &generic };
    let statements = Parser::new(dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|err| syntax_diagnostic(&err, sql, origin))?;
    let mut statements = statements.into_iter();
    let (first, rest) = (statements.next(), statements.next());
    let query = match (first, rest) {
        (Some(Statement::Query(query)), None) => query,
        (None, _) => {
            return Err(Diagnostic::error(Code::NotAQuery, "model is empty: it must be one query")
                .with_primary(origin.file_id, 0..0, "no SQL here")
                .with_help("write a `select` statement"));
        }
        (Some(Statement::Query(_)), Some(_)) => {
            return Err(Diagnostic::error(Code::NotAQuery, "model has more than one statement")
                .with_primary(origin.file_id, 0..0, "this model")
                .with_help("a model is one query; pipe materializes it, so remove the other statements"));
        }
        (Some(other), _) => {
            let kind = other.to_string().split_whitespace().next().unwrap_or("statement").to_ascii_uppercase();
            let article = if kind.starts_with(['A', 'E', 'I', 'O', 'U']) { "an" } else { "a" };
            return Err(Diagnostic::error(
                Code::NotAQuery,
                format!("model is {article} `{kind}` statement, not a query"),
            )
            .with_primary(origin.file_id, 0..0, "this model")
            .with_help("a model is a `select`; pipe creates and writes the table itself"));
        }
    };
    let mut collector = RelationCollector {
        sql,
        line_starts: line_starts(sql),
        relations: Vec::new(),
        ctes: BTreeSet::new(),
        aggregate_positions: Vec::new(),
    };
    let _ = query.visit(&mut collector);
    if let Some((position, item, span)) = collector.aggregate_positions.into_iter().next() {
        let (span, _) = map_span(origin, span);
        return Err(Diagnostic::error(
            Code::PlanError,
            format!(
                "`GROUP BY {position}` points at `{item}`, an aggregate: a group cannot be keyed by its own aggregate"
            ),
        )
        .with_primary(origin.file_id, span, "this position")
        .with_help("group by the positions (or names) of the columns that are not aggregated"));
    }
    Ok(AnalyzedModel { relations: collector.relations, ctes: collector.ctes })
}

/// Aggregate functions a `GROUP BY` position must not point at.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "listagg",
    "median",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "bool_and",
    "bool_or",
    "any_value",
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "min_by",
    "max_by",
    "arg_min",
    "arg_max",
    "first_value",
    "last_value",
];

/// Whether `expr` holds an aggregate function call (not a window function).
fn has_aggregate(expr: &datafusion::sql::sqlparser::ast::Expr) -> bool {
    use datafusion::sql::sqlparser::ast::{visit_expressions, Expr};
    visit_expressions(expr, |e| match e {
        Expr::Function(f) if f.over.is_none() => {
            let name = f.name.0.last().map(|p| p.to_string().to_lowercase()).unwrap_or_default();
            match AGGREGATES.contains(&name.trim_matches('"')) {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

struct RelationCollector<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
    relations: Vec<RelationRef>,
    ctes: BTreeSet<String>,
    /// `GROUP BY n` where the n-th select item is an aggregate: (n, the item, the span of `n`).
    aggregate_positions: Vec<(u64, String, Range<usize>)>,
}

impl Visitor for RelationCollector<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        use datafusion::sql::sqlparser::ast::{Expr, GroupByExpr, SelectItem, SetExpr, Spanned, Value};
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
            }
        }
        if let SetExpr::Select(select) = query.body.as_ref() {
            if let GroupByExpr::Expressions(keys, _) = &select.group_by {
                for key in keys {
                    let Expr::Value(value) = key else { continue };
                    let Value::Number(text, _) = &value.value else { continue };
                    let Ok(position) = text.parse::<u64>() else { continue };
                    let item = select.projection.get((position as usize).wrapping_sub(1));
                    let expr = match item {
                        Some(SelectItem::UnnamedExpr(expr)) | Some(SelectItem::ExprWithAlias { expr, .. }) => expr,
                        _ => continue,
                    };
                    if has_aggregate(expr) {
                        let span = key.span();
                        let start = location_offset(self.sql, &self.line_starts, span.start);
                        let end = location_offset(self.sql, &self.line_starts, span.end);
                        self.aggregate_positions.push((position, expr.to_string(), start..end.max(start + 1)));
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let mut parts = Vec::new();
        let mut span: Option<Range<usize>> = None;
        for part in &relation.0 {
            if let ObjectNamePart::Identifier(ident) = part {
                parts.push(ident.value.to_lowercase());
                let start = location_offset(self.sql, &self.line_starts, ident.span.start);
                let end = location_offset(self.sql, &self.line_starts, ident.span.end);
                span = Some(span.map_or(start..end, |s| s.start..end));
            }
        }
        let name = parts.join(".");
        if !TABLE_FUNCTIONS.contains(&name.as_str()) {
            self.relations.push(RelationRef { name, span: span.unwrap_or(0..0) });
        }
        ControlFlow::Continue(())
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    starts
}

/// Byte offset of a sqlparser `Location` (1-based line and character column).
fn location_offset(sql: &str, line_starts: &[usize], location: Location) -> usize {
    let Some(&start) = line_starts.get((location.line as usize).saturating_sub(1)) else {
        return sql.len();
    };
    sql[start..].char_indices().nth((location.column as usize).saturating_sub(1)).map_or(sql.len(), |(i, _)| start + i)
}

/// Maps a span of rendered SQL to the model file; `exact` is false when it falls in text a tag produced.
pub fn map_span(origin: &SqlOrigin<'_>, span: Range<usize>) -> (Range<usize>, bool) {
    let start = origin.offsets.to_raw(span.start);
    if start.exact {
        let end = origin.offsets.to_raw(span.end.saturating_sub(1).max(span.start));
        let end = if end.exact { end.offset + 1 } else { start.offset + (span.end - span.start) };
        (start.offset..end.max(start.offset), true)
    } else {
        let tag_end = origin.file.text[start.offset..].find("}}").map_or(start.offset, |e| start.offset + e + 2);
        (start.offset..tag_end, false)
    }
}

fn syntax_diagnostic(err: &ParserError, sql: &str, origin: &SqlOrigin<'_>) -> Diagnostic {
    let text = match err {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m.clone(),
        ParserError::RecursionLimitExceeded => "query is nested too deeply".to_string(),
    };
    // sqlparser appends " at Line: L, Column: C"; the label shows the position instead.
    let (message, location) = match text.rsplit_once(" at Line: ") {
        Some((message, position)) => {
            let mut numbers = position.split(", Column: ").map(|n| n.trim().parse::<u64>().ok());
            match (numbers.next().flatten(), numbers.next().flatten()) {
                (Some(line), Some(column)) => (message.to_string(), Some(Location { line, column })),
                _ => (text.clone(), None),
            }
        }
        None => (text.clone(), None),
    };
    let mut diagnostic = Diagnostic::error(Code::SqlSyntax, format!("SQL syntax error: {message}"));
    match location {
        Some(location) => {
            let offset = location_offset(sql, &line_starts(sql), location);
            let token_len =
                sql[offset..].chars().take_while(|c| !c.is_whitespace()).map(char::len_utf8).sum::<usize>().max(1);
            let (span, exact) = map_span(origin, offset..offset + token_len);
            diagnostic = diagnostic.with_primary(origin.file_id, span, "the parser stopped here");
            if !exact {
                let rendered_line = sql.lines().nth((location.line as usize).saturating_sub(1)).unwrap_or("").trim();
                diagnostic = diagnostic.with_note(format!(
                    "in the rendered SQL at {}:{}: `{rendered_line}`",
                    location.line, location.column
                ));
            }
        }
        None => diagnostic = diagnostic.with_primary(origin.file_id, 0..0, "in this model"),
    }
    diagnostic.with_help("correct the SQL; `pipe compile` writes the rendered SQL under `target/compiled/`")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::SourceMap;

    fn check(sql: &str) -> Result<AnalyzedModel, Diagnostic> {
        let mut map = SourceMap::default();
        let id = map.add("m.sql", sql);
        let offsets = OffsetMap::build(sql, sql);
        analyze(sql, &SqlOrigin { file_id: id, file: map.get(id), offsets: &offsets }, Default::default())
    }

    #[test]
    fn a_column_is_located_at_its_alias() {
        let sql = "select since_x, since,\n  ts - t0 AS \"since\" from t";
        assert_eq!(column_name_location("since", sql), Some((2, 15)));
        assert_eq!(column_name_location("since", "select since from t"), Some((1, 8)));
        assert_eq!(column_name_location("gone", "select 1"), None);
    }

    #[test]
    fn a_function_error_is_located_at_the_first_call_of_the_function() {
        let message = "`coalesce` does not take arguments of type (Timestamp(µs), Utf8); cast them to types it takes";
        let sql = "select my_coalesce(a), coalesce_x,\n  COALESCE (ts, 'x') from t";
        assert_eq!(function_call_location(message, sql), Some((2, 3)));
        assert_eq!(function_call_location(message, "select coalesce_x from t"), None);
        assert_eq!(function_call_location("unknown column `a`", "select a from t"), None);
        let wrapped =
            "Function 'coalesce' user-defined coercion failed with: Execution error: Fail to find the coerced \
                       type. No function matches the given name and argument types 'coalesce(Int64, Utf8)'. You might \
                       need to add explicit type casts";
        assert_eq!(
            clean_message(wrapped),
            "`coalesce` does not take arguments of type (Int64, Utf8); cast them to types it takes"
        );
    }

    #[test]
    fn an_internal_error_relayed_whole_keeps_its_words() {
        let relayed = "Execution error: Status { code: Internal, message: \"Could not parse plan: DataFusion error: \
                       Internal error: No suitable object store found for s3://w/. See `RuntimeEnv::register_object_store`.\" }";
        let message = clean_message(relayed);
        assert!(
            message.contains("Could not parse plan") && message.contains("No suitable object store found"),
            "{message}"
        );
        assert!(!message.contains("Internal error"), "{message}");
    }

    #[test]
    fn finds_relations_and_ctes() {
        let sql = "with a as (select * from silver.orders)\nselect * from a join Raw.Customers c on true, range(3)";
        let model = check(sql).unwrap();
        let names: Vec<_> = model.relations.iter().map(|r| (r.name.as_str(), &sql[r.span.clone()])).collect();
        assert_eq!(names, vec![("silver.orders", "silver.orders"), ("a", "a"), ("raw.customers", "Raw.Customers")]);
        assert_eq!(model.ctes, BTreeSet::from(["a".to_string()]));
    }

    #[test]
    fn rejects_statements_that_are_not_one_query() {
        let cases = [
            ("", "model is empty: it must be one query"),
            ("select 1; select 2", "model has more than one statement"),
            ("create table x (a int)", "model is a `CREATE` statement, not a query"),
        ];
        for (sql, message) in cases {
            let err = check(sql).unwrap_err();
            assert_eq!((err.code, err.message.as_str()), (Code::NotAQuery, message), "{sql}");
        }
    }

    #[test]
    fn syntax_error_points_at_the_token() {
        let sql = "select a\nfrom t\nwhere a = = 1";
        let err = check(sql).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (Code::SqlSyntax, "SQL syntax error: Expected: an expression, found: =")
        );
        assert_eq!(err.primary.unwrap().span, sql.find("= 1").unwrap()..sql.find("= 1").unwrap() + 1);
    }
}
