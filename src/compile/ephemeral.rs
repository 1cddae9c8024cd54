//! Ephemeral models are never written: compile inlines each into its readers as a CTE named
//! `__pipe_cte__<model>`, merged into the reader's own `with` clause when it has one.

use std::collections::BTreeMap;

use crate::manifest::Node;
use crate::project::Materialization;

use super::EPHEMERAL_PREFIX;

/// Inlines ephemeral models into their dependents as CTEs named `__pipe_cte__<model>`, in topological order so an
/// ephemeral model's own ephemeral upstreams are already inlined in its SQL.
pub(super) fn inline_ephemerals(nodes: &mut BTreeMap<String, Node>, order: &[String]) {
    for id in order {
        let Some(node) = nodes.get(id) else { continue };
        let ephemerals = ephemeral_upstreams(node, nodes);
        if ephemerals.is_empty() {
            continue;
        }
        let Some(node) = nodes.get_mut(id) else {
            continue;
        };
        node.compiled_sql = with_ctes(&node.compiled_sql, &ephemerals);
        if let Some(incremental) = &node.compiled_sql_incremental {
            node.compiled_sql_incremental = Some(with_ctes(incremental, &ephemerals));
        }
    }
}

/// `sql` of `node` with its ephemeral upstreams (already inlined in topological order) as CTEs.
pub(super) fn inline_into(sql: &str, node: &Node, nodes: &BTreeMap<String, Node>) -> String {
    let ephemerals = ephemeral_upstreams(node, nodes);
    if ephemerals.is_empty() {
        sql.to_string()
    } else {
        with_ctes(sql, &ephemerals)
    }
}

/// (name, compiled SQL) of the ephemeral models `node` reads directly.
fn ephemeral_upstreams(node: &Node, nodes: &BTreeMap<String, Node>) -> Vec<(String, String)> {
    node.depends_on
        .nodes
        .iter()
        .filter_map(|dep| nodes.get(dep))
        .filter(|dep| dep.materialized == Materialization::Ephemeral)
        .map(|dep| (dep.name.clone(), dep.compiled_sql.clone()))
        .collect()
}

/// Prepends CTEs to a query, merging them into its own `with` clause when it has one.
pub(super) fn with_ctes(sql: &str, ctes: &[(String, String)]) -> String {
    let definitions: Vec<String> = ctes
        .iter()
        .map(|(name, body)| format!("{EPHEMERAL_PREFIX}{name} as (\n{}\n)", body.trim().trim_end_matches(';')))
        .collect();
    let definitions = definitions.join(",\n");
    match leading_with(sql) {
        Some(after_with) => format!("{}\n{definitions},{}", &sql[..after_with], &sql[after_with..]),
        None => format!("with {definitions}\n{}", sql.trim_start()),
    }
}

/// Offset just after a leading `with` (or `with recursive`) keyword, skipping whitespace and comments.
fn leading_with(sql: &str) -> Option<usize> {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start();
        if let Some(comment) = trimmed.strip_prefix("--") {
            rest = comment.find('\n').map_or("", |i| &comment[i..]);
        } else if let Some(comment) = trimmed.strip_prefix("/*") {
            rest = comment.find("*/").map_or("", |i| &comment[i + 2..]);
        } else {
            rest = trimmed;
            break;
        }
    }
    let offset = sql.len() - rest.len();
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    if !word.eq_ignore_ascii_case("with") {
        return None;
    }
    let mut end = offset + 4;
    let after = &sql[end..];
    let next = after.trim_start();
    let next_word: String = next.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    if next_word.eq_ignore_ascii_case("recursive") {
        end += (after.len() - next.len()) + "recursive".len();
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctes_merge_into_an_existing_with() {
        let ctes = [("e".to_string(), "select 1 as x".to_string())];
        assert_eq!(
            with_ctes("select * from __pipe_cte__e", &ctes),
            "with __pipe_cte__e as (\nselect 1 as x\n)\nselect * from __pipe_cte__e"
        );
        assert_eq!(
            with_ctes("-- note\nWITH a as (select 2) select * from a, __pipe_cte__e", &ctes),
            "-- note\nWITH\n__pipe_cte__e as (\nselect 1 as x\n), a as (select 2) select * from a, __pipe_cte__e"
        );
        assert_eq!(leading_with("with recursive t as (select 1) select 1"), Some(14));
        assert_eq!(leading_with("select 1 -- with"), None);
    }
}
