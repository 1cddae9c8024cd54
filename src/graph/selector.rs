//! The node selection grammar users know from dbt.
//!
//! A selection is a list of terms; terms are unions, and within a term commas intersect atoms. An atom is a method
//! and value (`tag:nightly`, `layer:silver`, `path:models/silver`, `config.materialized:incremental`,
//! `source:raw.orders`, `state:modified`, `resource_type:seed`) or a name or glob (`stg_*`), with graph operators:
//! `+m` (ancestors), `m+` (descendants), `2+m` / `m+1` (bounded depth), `@m` (descendants and their ancestors).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Dag, NodeId};

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    Model,
    Seed,
    Snapshot,
    Source,
}

impl ResourceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Model => "model",
            ResourceType::Seed => "seed",
            ResourceType::Snapshot => "snapshot",
            ResourceType::Source => "source",
        }
    }
}

/// Whether a node changed against a previous manifest (`--state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    New,
    Modified,
    Unchanged,
}

/// What changed in a modified node (`state:modified.body|configs|contract|macros`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modified {
    /// Its SQL (or seed file) as written.
    pub body: bool,
    pub configs: bool,
    /// Its contract: enforced or not, and the declared columns when enforced.
    pub contract: bool,
    /// A macro it calls.
    pub macros: bool,
}

/// What selection methods can see of a node. No SQL.
#[derive(Debug, Clone)]
pub struct NodeFacts<'a> {
    pub name: &'a str,
    /// A versioned model's name, which selects all its versions (`-s dim_customers`).
    pub model_of_version: Option<&'a str>,
    pub resource_type: ResourceType,
    pub layer: Option<&'a str>,
    pub path: &'a str,
    pub tags: &'a [String],
    pub config: &'a serde_json::Map<String, Value>,
    /// For sources: (source name, table name).
    pub source: Option<(&'a str, &'a str)>,
    /// `None` when no `--state` manifest was given.
    pub state: Option<StateChange>,
    /// What changed, when `state` is `Modified`.
    pub modified: Modified,
    /// Its status in the `--state` run's results (`success`, `error`, `skipped`, `fail`, `warn`), for `result:`.
    pub result: Option<&'a str>,
    /// For sources, whether its newest data is later than in the `--state` run's `sources.json`; `None` when
    /// either `sources.json` is missing.
    pub fresher: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// The expression does not parse or uses an unknown method.
    Invalid { selector: String, reason: String },
    /// `state:` was used without `--state`.
    StateMissing { selector: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Method {
    Name(String),
    Tag(String),
    Layer(String),
    Path(String),
    Config(String, String),
    Source(String),
    State(String),
    Result(String),
    SourceStatus(String),
    ResourceType(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Atom {
    method: Method,
    at: bool,
    /// `Some(None)`: unlimited; `Some(Some(n))`: n steps.
    parents: Option<Option<usize>>,
    children: Option<Option<usize>>,
}

const METHODS: &[&str] =
    &["tag", "layer", "path", "config.<key>", "source", "state", "result", "source_status", "resource_type", "fqn"];

/// `state:` values.
const STATES: &[&str] =
    &["new", "modified", "modified.body", "modified.configs", "modified.contract", "modified.macros"];

/// `result:` values: a node's status in the `--state` run, or its tests' (`fail`, `warn`).
const RESULTS: &[&str] = &["success", "error", "skipped", "fail", "warn"];

fn parse_atom(text: &str) -> Result<Atom, String> {
    let mut rest = text;
    let at = rest.starts_with('@');
    if at {
        rest = &rest[1..];
    }
    let mut parents = None;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if rest[digits.len()..].starts_with('+') && !at {
        parents = Some(digits.parse().ok());
        rest = &rest[digits.len() + 1..];
    } else if rest[digits.len()..].starts_with('+') {
        return Err("`@` cannot be combined with a `+` prefix".into());
    }
    let mut children = None;
    if let Some(plus) = rest.rfind('+') {
        let tail = &rest[plus + 1..];
        if tail.chars().all(|c| c.is_ascii_digit()) {
            if at {
                return Err("`@` cannot be combined with a `+` suffix".into());
            }
            children = Some(tail.parse().ok());
            rest = &rest[..plus];
        }
    }
    if rest.is_empty() {
        return Err("missing a name or `method:value`".into());
    }
    let method = match rest.split_once(':') {
        None if rest.contains('/') => Method::Path(rest.to_string()),
        None => Method::Name(rest.to_string()),
        Some((method, value)) => {
            if value.is_empty() {
                return Err(format!("`{method}:` needs a value"));
            }
            let value = value.to_string();
            match method {
                "tag" => Method::Tag(value),
                "layer" => Method::Layer(value),
                "path" => Method::Path(value),
                "source" => Method::Source(value),
                "state" if STATES.contains(&value.as_str()) => Method::State(value),
                "state" => {
                    return Err(format!("unknown state `{value}`; use one of `{}`", STATES.join("`, `")));
                }
                "result" if RESULTS.contains(&value.as_str()) => Method::Result(value),
                "result" => return Err(format!("unknown result `{value}`; use one of `{}`", RESULTS.join("`, `"))),
                "source_status" if value == "fresher" => Method::SourceStatus(value),
                "source_status" => return Err(format!("unknown source status `{value}`; use `fresher`")),
                "resource_type" => Method::ResourceType(value),
                "fqn" => Method::Name(value.rsplit('.').next().unwrap_or(&value).to_string()),
                m if m.starts_with("config.") && m.len() > "config.".len() => {
                    Method::Config(m["config.".len()..].to_string(), value)
                }
                other => {
                    return Err(format!("unknown selector method `{other}`; known methods: {}", METHODS.join(", ")))
                }
            }
        }
    };
    Ok(Atom { method, at, parents, children })
}

fn glob_match(pattern: &str, text: &str) -> bool {
    if pattern.contains(['*', '?', '[']) {
        glob::Pattern::new(pattern).is_ok_and(|p| p.matches(text))
    } else {
        pattern == text
    }
}

fn value_matches(expected: &str, value: &Value) -> bool {
    match value {
        Value::String(s) => glob_match(expected, s),
        Value::Bool(b) => expected == b.to_string(),
        Value::Number(n) => expected == n.to_string(),
        Value::Array(items) => items.iter().any(|v| value_matches(expected, v)),
        _ => false,
    }
}

fn matches(method: &Method, facts: &NodeFacts<'_>) -> Result<bool, ()> {
    Ok(match method {
        Method::Name(pattern) => {
            facts.source.is_none()
                && (glob_match(pattern, facts.name) || facts.model_of_version.is_some_and(|m| glob_match(pattern, m)))
        }
        Method::Tag(tag) => facts.tags.iter().any(|t| glob_match(tag, t)),
        Method::Layer(layer) => facts.layer == Some(layer.as_str()),
        Method::Path(path) => {
            let path = path.trim_end_matches('/');
            glob_match(path, facts.path) || facts.path.starts_with(&format!("{path}/"))
        }
        Method::Config(key, value) => facts.config.get(key).is_some_and(|v| value_matches(value, v)),
        Method::Source(pattern) => match facts.source {
            Some((source, table)) => match pattern.split_once('.') {
                Some((s, t)) => glob_match(s, source) && glob_match(t, table),
                None => glob_match(pattern, source),
            },
            None => false,
        },
        Method::State(which) => match facts.state {
            None => return Err(()),
            Some(StateChange::New) => which == "new" || which.starts_with("modified"),
            Some(StateChange::Modified) => match which.as_str() {
                "modified" => true,
                "modified.body" => facts.modified.body,
                "modified.configs" => facts.modified.configs,
                "modified.contract" => facts.modified.contract,
                "modified.macros" => facts.modified.macros,
                _ => false,
            },
            Some(StateChange::Unchanged) => false,
        },
        Method::Result(which) => match facts.state {
            None => return Err(()),
            Some(_) => facts.result == Some(which.as_str()),
        },
        Method::SourceStatus(_) => match (facts.source, facts.fresher) {
            (None, _) => false,
            (Some(_), None) => return Err(()),
            (Some(_), Some(fresher)) => fresher,
        },
        Method::ResourceType(kind) => facts.resource_type.as_str() == kind,
    })
}

fn select_atom(
    atom: &Atom,
    dag: &Dag,
    facts: &[NodeFacts<'_>],
    selector: &str,
) -> Result<BTreeSet<NodeId>, SelectError> {
    let mut base = BTreeSet::new();
    for (i, node) in facts.iter().enumerate() {
        let hit =
            matches(&atom.method, node).map_err(|()| SelectError::StateMissing { selector: selector.to_string() })?;
        if hit {
            base.insert(NodeId(i as u32));
        }
    }
    let mut selected = base.clone();
    for &node in &base {
        if atom.at {
            for child in dag.descendants(node, None).into_iter().chain([node]) {
                selected.insert(child);
                selected.extend(dag.ancestors(child, None));
            }
        }
        if let Some(depth) = atom.parents {
            selected.extend(dag.ancestors(node, depth));
        }
        if let Some(depth) = atom.children {
            selected.extend(dag.descendants(node, depth));
        }
    }
    Ok(selected)
}

/// The nodes one selection expression (one `--select` value, possibly several space-separated terms) picks, plus
/// the terms that matched nothing.
pub fn select_expr(
    expr: &str,
    dag: &Dag,
    facts: &[NodeFacts<'_>],
) -> Result<(BTreeSet<NodeId>, Vec<String>), SelectError> {
    let mut union = BTreeSet::new();
    let mut empty_terms = Vec::new();
    for term in expr.split_whitespace() {
        let mut intersection: Option<BTreeSet<NodeId>> = None;
        for atom_text in term.split(',') {
            let atom = parse_atom(atom_text)
                .map_err(|reason| SelectError::Invalid { selector: atom_text.to_string(), reason })?;
            let nodes = select_atom(&atom, dag, facts, atom_text)?;
            intersection = Some(match intersection {
                None => nodes,
                Some(prev) => prev.intersection(&nodes).copied().collect(),
            });
        }
        let nodes = intersection.unwrap_or_default();
        if nodes.is_empty() {
            empty_terms.push(term.to_string());
        }
        union.extend(nodes);
    }
    Ok((union, empty_terms))
}

/// The result of `--select`/`--exclude`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Selected nodes in topological order.
    pub nodes: Vec<NodeId>,
    /// Terms that matched nothing (a warning, as in dbt).
    pub unmatched: Vec<String>,
}

/// Applies `select` (default: every model and seed) minus `exclude`, in the order given by `topo_order`.
pub fn select(
    select: &[String],
    exclude: &[String],
    dag: &Dag,
    facts: &[NodeFacts<'_>],
    topo_order: &[NodeId],
) -> Result<Selection, SelectError> {
    let mut unmatched = Vec::new();
    let mut chosen: BTreeSet<NodeId> = if select.iter().all(|s| s.trim().is_empty()) {
        facts
            .iter()
            .enumerate()
            .filter(|(_, f)| f.resource_type != ResourceType::Source)
            .map(|(i, _)| NodeId(i as u32))
            .collect()
    } else {
        let mut chosen = BTreeSet::new();
        for expr in select {
            let (nodes, empty) = select_expr(expr, dag, facts)?;
            chosen.extend(nodes);
            unmatched.extend(empty);
        }
        chosen
    };
    for expr in exclude {
        let (nodes, empty) = select_expr(expr, dag, facts)?;
        unmatched.extend(empty);
        chosen.retain(|n| !nodes.contains(n));
    }
    let nodes = topo_order.iter().copied().filter(|n| chosen.contains(n)).collect();
    Ok(Selection { nodes, unmatched })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, kind, layer, path, tags, config) of a test node.
    type TestNode = (String, ResourceType, Option<&'static str>, String, Vec<String>, serde_json::Map<String, Value>);

    /// src(raw.orders) -> brz_orders -> stg_orders -> fct_sales ; stg_customers -> fct_sales ; fct_sales -> rpt
    fn fixture() -> (Dag, Vec<TestNode>) {
        let config = |m: &str| {
            let mut c = serde_json::Map::new();
            c.insert("materialized".into(), Value::String(m.into()));
            c
        };
        let nodes = vec![
            (
                "orders".to_string(),
                ResourceType::Source,
                None,
                "models/sources.yml".to_string(),
                vec![],
                serde_json::Map::new(),
            ),
            (
                "brz_orders".into(),
                ResourceType::Model,
                Some("bronze"),
                "models/bronze/brz_orders.sql".into(),
                vec!["raw".into()],
                config("incremental"),
            ),
            (
                "stg_orders".into(),
                ResourceType::Model,
                Some("silver"),
                "models/silver/stg_orders.sql".into(),
                vec![],
                config("table"),
            ),
            (
                "stg_customers".into(),
                ResourceType::Model,
                Some("silver"),
                "models/silver/stg_customers.sql".into(),
                vec!["pii".into()],
                config("view"),
            ),
            (
                "fct_sales".into(),
                ResourceType::Model,
                Some("gold"),
                "models/gold/fct_sales.sql".into(),
                vec![],
                config("table"),
            ),
            ("rpt".into(), ResourceType::Model, Some("gold"), "models/gold/rpt.sql".into(), vec![], config("view")),
        ];
        let dag = Dag::new(6, [(0, 1), (1, 2), (2, 4), (3, 4), (4, 5)].map(|(a, b)| (NodeId(a), NodeId(b))));
        (dag, nodes)
    }

    fn check(select_args: &[&str], exclude: &[&str], state: Option<&[StateChange]>, expected: &[&str]) {
        let (dag, nodes) = fixture();
        let facts: Vec<NodeFacts<'_>> = nodes
            .iter()
            .enumerate()
            .map(|(i, (name, kind, layer, path, tags, config))| NodeFacts {
                model_of_version: None,
                name,
                resource_type: *kind,
                layer: *layer,
                path,
                tags,
                config,
                source: (*kind == ResourceType::Source).then_some(("raw", name.as_str())),
                state: state.map(|s| s[i]),
                modified: Modified::default(),
                result: None,
                fresher: None,
            })
            .collect();
        let topo = dag.topological_order(|n| n.0);
        let select_args: Vec<String> = select_args.iter().map(|s| s.to_string()).collect();
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
        let got = select(&select_args, &exclude, &dag, &facts, &topo).unwrap();
        let names: Vec<&str> = got.nodes.iter().map(|n| nodes[n.index()].0.as_str()).collect();
        assert_eq!(names, expected, "select {select_args:?} exclude {exclude:?}");
    }

    #[test]
    fn grammar() {
        use StateChange::*;
        check(&[], &[], None, &["brz_orders", "stg_orders", "stg_customers", "fct_sales", "rpt"]);
        check(&["stg_*"], &[], None, &["stg_orders", "stg_customers"]);
        check(&["+fct_sales"], &[], None, &["orders", "brz_orders", "stg_orders", "stg_customers", "fct_sales"]);
        check(&["1+fct_sales"], &[], None, &["stg_orders", "stg_customers", "fct_sales"]);
        check(&["stg_orders+"], &[], None, &["stg_orders", "fct_sales", "rpt"]);
        check(&["stg_orders+1"], &[], None, &["stg_orders", "fct_sales"]);
        check(
            &["@stg_orders"],
            &[],
            None,
            &["orders", "brz_orders", "stg_orders", "stg_customers", "fct_sales", "rpt"],
        );
        check(&["tag:pii tag:raw"], &[], None, &["brz_orders", "stg_customers"]);
        check(&["layer:silver"], &[], None, &["stg_orders", "stg_customers"]);
        check(&["path:models/gold"], &[], None, &["fct_sales", "rpt"]);
        check(&["models/gold"], &[], None, &["fct_sales", "rpt"]);
        check(&["config.materialized:table"], &[], None, &["stg_orders", "fct_sales"]);
        check(&["source:raw.orders+"], &[], None, &["orders", "brz_orders", "stg_orders", "fct_sales", "rpt"]);
        check(&["layer:gold,config.materialized:view"], &[], None, &["rpt"]);
        check(&["layer:silver+"], &["fct_sales+"], None, &["stg_orders", "stg_customers"]);
        let state = [Unchanged, Unchanged, Modified, Unchanged, New, Unchanged];
        check(&["state:modified"], &[], Some(&state), &["stg_orders", "fct_sales"]);
        check(&["state:new"], &[], Some(&state), &["fct_sales"]);
        check(&["state:modified+"], &[], Some(&state), &["stg_orders", "fct_sales", "rpt"]);
    }

    #[test]
    fn errors_and_unmatched() {
        let (dag, nodes) = fixture();
        let facts: Vec<NodeFacts<'_>> = nodes
            .iter()
            .map(|(name, kind, layer, path, tags, config)| NodeFacts {
                model_of_version: None,
                name,
                resource_type: *kind,
                layer: *layer,
                path,
                tags,
                config,
                source: None,
                state: None,
                modified: Modified::default(),
                result: None,
                fresher: None,
            })
            .collect();
        let err = select_expr("colour:red", &dag, &facts).unwrap_err();
        assert_eq!(
            err,
            SelectError::Invalid {
                selector: "colour:red".into(),
                reason: "unknown selector method `colour`; known methods: tag, layer, path, config.<key>, source, state, result, source_status, resource_type, fqn".into()
            }
        );
        assert_eq!(
            select_expr("state:modified", &dag, &facts).unwrap_err(),
            SelectError::StateMissing { selector: "state:modified".into() }
        );
        let (nodes, empty) = select_expr("nope rpt", &dag, &facts).unwrap();
        assert_eq!((nodes.len(), empty), (1, vec!["nope".to_string()]));
    }
}
