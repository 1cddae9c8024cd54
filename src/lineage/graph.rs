//! The project's lineage: models, seeds and sources with their column lineage (`target/lineage.json`), and walks
//! over it upstream or downstream, at model or column level, rendered as text, JSON, Graphviz dot or Mermaid.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use datafusion::logical_expr::LogicalPlan;
use serde::{Deserialize, Serialize};

use super::{model_lineage, Kind};
use crate::manifest::Manifest;

/// `target/lineage.json`: every node and, for planned models, every column's sources.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProjectLineage {
    pub nodes: BTreeMap<String, LineageNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LineageNode {
    pub unique_id: String,
    pub name: String,
    pub relation: String,
    /// `model`, `seed` or `source`.
    pub resource_type: String,
    pub layer: Option<String>,
    pub materialized: Option<String>,
    pub depends_on: Vec<String>,
    pub columns: Vec<LineageColumn>,
    /// Upstream columns that only decide which rows are kept (filters, join keys).
    pub row_deciders: Vec<ColumnRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LineageColumn {
    pub name: String,
    pub data_type: Option<String>,
    pub sources: Vec<ColumnSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ColumnRef {
    /// The unique id of the node owning the column (the relation when no node is known).
    pub node: String,
    pub column: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnSource {
    pub node: String,
    pub column: String,
    pub kind: Kind,
}

impl ProjectLineage {
    /// The lineage of every node of `manifest`, with column lineage from `plans` (by unique id).
    pub fn build(manifest: &Manifest, plans: &std::collections::HashMap<String, LogicalPlan>) -> ProjectLineage {
        let mut by_relation: BTreeMap<&str, &str> = BTreeMap::new();
        for node in manifest.nodes.values() {
            by_relation.insert(&node.relation, &node.unique_id);
        }
        for source in manifest.sources.values() {
            by_relation.insert(&source.relation, &source.unique_id);
        }
        let id_of = |relation: &str| by_relation.get(relation).map_or(relation.to_string(), |id| id.to_string());
        let mut nodes = BTreeMap::new();
        for source in manifest.sources.values() {
            let columns = without_sources(&source.planned_columns);
            nodes.insert(
                source.unique_id.clone(),
                LineageNode {
                    unique_id: source.unique_id.clone(),
                    name: format!("{}.{}", source.source_name, source.name),
                    relation: source.relation.clone(),
                    resource_type: "source".into(),
                    layer: None,
                    materialized: None,
                    depends_on: Vec::new(),
                    columns,
                    row_deciders: Vec::new(),
                },
            );
        }
        for node in manifest.nodes.values() {
            let types: BTreeMap<&str, &str> =
                node.planned_columns.iter().flatten().map(|c| (c.name.as_str(), c.data_type.as_str())).collect();
            let (columns, row_deciders) = match plans.get(&node.unique_id) {
                Some(plan) => {
                    let lineage = model_lineage(plan);
                    let columns = lineage
                        .columns
                        .into_iter()
                        .map(|(name, sources)| LineageColumn {
                            data_type: types.get(name.as_str()).map(|t| t.to_string()),
                            sources: sources
                                .into_iter()
                                .map(|s| ColumnSource { node: id_of(&s.relation), column: s.column, kind: s.kind })
                                .collect(),
                            name,
                        })
                        .collect();
                    let deciders = lineage
                        .row_deciders
                        .into_iter()
                        .map(|(relation, column)| ColumnRef { node: id_of(&relation), column })
                        .collect();
                    (columns, deciders)
                }
                None => (without_sources(&node.planned_columns), Vec::new()),
            };
            nodes.insert(
                node.unique_id.clone(),
                LineageNode {
                    unique_id: node.unique_id.clone(),
                    name: node.name.clone(),
                    relation: node.relation.clone(),
                    resource_type: node.resource_type.as_str().into(),
                    layer: node.layer.map(|l| l.as_str().to_string()),
                    materialized: Some(node.materialized.as_str().to_string()),
                    depends_on: node.depends_on.nodes.clone(),
                    columns,
                    row_deciders,
                },
            );
        }
        ProjectLineage { nodes }
    }

    /// The node a user names: a model or seed name, a relation, a unique id, or `source.table`.
    pub fn find(&self, name: &str) -> Option<&LineageNode> {
        self.nodes.get(name).or_else(|| self.nodes.values().find(|n| n.name == name || n.relation == name))
    }

    /// The edges reached from `start` going `direction`, at most `depth` steps away (all when `None`): between
    /// nodes when `column` is `None`, else between columns (`kind` set, and `row_decider` edges for the columns
    /// that filter or join).
    pub fn walk(&self, start: &str, column: Option<&str>, direction: Direction, depth: Option<usize>) -> Vec<Edge> {
        let mut edges = Vec::new();
        let mut seen = BTreeSet::new();
        let mut queue =
            VecDeque::from([(ColumnRef { node: start.to_string(), column: column.unwrap_or("").into() }, 0)]);
        let downstream = match direction {
            Direction::Downstream => self.downstream_index(column.is_some()),
            Direction::Upstream => BTreeMap::new(),
        };
        while let Some((at, steps)) = queue.pop_front() {
            if depth.is_some_and(|d| steps >= d) || !seen.insert(at.clone()) {
                continue;
            }
            let next: Vec<Edge> = match direction {
                Direction::Upstream => self.upstream_edges(&at, column.is_some()),
                Direction::Downstream => downstream.get(&at).cloned().unwrap_or_default(),
            };
            for edge in next {
                let other = match direction {
                    Direction::Upstream => edge.from.clone(),
                    Direction::Downstream => edge.to.clone(),
                };
                if !edge.row_decider {
                    queue.push_back((other, steps + 1));
                }
                edges.push(edge);
            }
        }
        edges
    }

    fn upstream_edges(&self, at: &ColumnRef, columns: bool) -> Vec<Edge> {
        let Some(node) = self.nodes.get(&at.node) else { return Vec::new() };
        if !columns {
            return node.depends_on.iter().map(|up| Edge::nodes(up, &node.unique_id)).collect();
        }
        let Some(column) = node.columns.iter().find(|c| c.name == at.column) else { return Vec::new() };
        column
            .sources
            .iter()
            .map(|s| Edge {
                from: ColumnRef { node: s.node.clone(), column: s.column.clone() },
                to: at.clone(),
                kind: Some(s.kind),
                row_decider: false,
            })
            .collect()
    }

    fn downstream_index(&self, columns: bool) -> BTreeMap<ColumnRef, Vec<Edge>> {
        let mut index: BTreeMap<ColumnRef, Vec<Edge>> = BTreeMap::new();
        for node in self.nodes.values() {
            if !columns {
                for up in &node.depends_on {
                    let edge = Edge::nodes(up, &node.unique_id);
                    index.entry(edge.from.clone()).or_default().push(edge);
                }
                continue;
            }
            for column in &node.columns {
                let to = ColumnRef { node: node.unique_id.clone(), column: column.name.clone() };
                for s in &column.sources {
                    let from = ColumnRef { node: s.node.clone(), column: s.column.clone() };
                    let edge = Edge { from: from.clone(), to: to.clone(), kind: Some(s.kind), row_decider: false };
                    index.entry(from).or_default().push(edge);
                }
            }
            for decider in &node.row_deciders {
                let to = ColumnRef { node: node.unique_id.clone(), column: String::new() };
                let edge = Edge { from: decider.clone(), to, kind: None, row_decider: true };
                index.entry(decider.clone()).or_default().push(edge);
            }
        }
        index
    }

    /// A label for a column or node reference: `name.column` with the node's short name.
    pub fn label(&self, at: &ColumnRef) -> String {
        let name = self.nodes.get(&at.node).map_or(at.node.as_str(), |n| n.name.as_str());
        match at.column.as_str() {
            "" => name.to_string(),
            column => format!("{name}.{column}"),
        }
    }
}

/// Planned columns with their types and no known sources (sources, and models whose plan was not kept).
fn without_sources(columns: &Option<Vec<crate::manifest::PlannedColumn>>) -> Vec<LineageColumn> {
    let column = |c: &crate::manifest::PlannedColumn| LineageColumn {
        name: c.name.clone(),
        data_type: Some(c.data_type.clone()),
        sources: Vec::new(),
    };
    columns.iter().flatten().map(column).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Upstream,
    Downstream,
}

/// One step of lineage, always pointing downstream (`from` feeds `to`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub from: ColumnRef,
    pub to: ColumnRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// `from` only filters or joins the rows of `to`'s model.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub row_decider: bool,
}

impl Edge {
    fn nodes(from: &str, to: &str) -> Edge {
        Edge {
            from: ColumnRef { node: from.to_string(), column: String::new() },
            to: ColumnRef { node: to.to_string(), column: String::new() },
            kind: None,
            row_decider: false,
        }
    }
}

/// Output formats of `pipe lineage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Dot,
    Mermaid,
}

/// Renders a walk from `start`.
pub fn render(
    lineage: &ProjectLineage,
    start: &ColumnRef,
    direction: Direction,
    edges: &[Edge],
    format: Format,
) -> String {
    let label = |at: &ColumnRef| lineage.label(at);
    let how = |edge: &Edge| match (edge.kind, edge.row_decider) {
        (_, true) => "filters/joins".to_string(),
        (Some(kind), _) => kind.as_str().to_string(),
        (None, _) => String::new(),
    };
    match format {
        Format::Json => {
            let value = serde_json::json!({
                "start": start,
                "direction": match direction { Direction::Upstream => "upstream", Direction::Downstream => "downstream" },
                "edges": edges,
            });
            serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
        }
        Format::Dot => {
            let mut out = String::from("digraph lineage {\n  rankdir=LR;\n  node [shape=box];\n");
            for edge in edges {
                let attrs = match how(edge).as_str() {
                    "" => String::new(),
                    h => format!(" [label=\"{h}\"{}]", if edge.row_decider { ", style=dashed" } else { "" }),
                };
                out.push_str(&format!("  {:?} -> {:?}{attrs};\n", label(&edge.from), label(&edge.to)));
            }
            out + "}\n"
        }
        Format::Mermaid => {
            let mut ids: BTreeMap<String, usize> = BTreeMap::new();
            let mut out = String::from("flowchart LR\n");
            let mut id = |name: String, out: &mut String| {
                let next = ids.len();
                let n = *ids.entry(name.clone()).or_insert_with(|| {
                    out.push_str(&format!("  n{next}[\"{}\"]\n", name.replace('"', "#quot;")));
                    next
                });
                format!("n{n}")
            };
            let mut lines = Vec::new();
            for edge in edges {
                let (a, b) = (id(label(&edge.from), &mut out), id(label(&edge.to), &mut out));
                let arrow = if edge.row_decider { "-.->" } else { "-->" };
                lines.push(match how(edge).as_str() {
                    "" => format!("  {a} {arrow} {b}"),
                    h => format!("  {a} {arrow}|{h}| {b}"),
                });
            }
            out + &lines.join("\n") + "\n"
        }
        Format::Text => {
            // A tree from the start, one line per edge, indented by distance.
            let mut children: BTreeMap<&ColumnRef, Vec<&Edge>> = BTreeMap::new();
            for edge in edges {
                let parent = match direction {
                    Direction::Upstream => &edge.to,
                    Direction::Downstream => &edge.from,
                };
                children.entry(parent).or_default().push(edge);
            }
            let mut out = format!("{}\n", label(start));
            let mut shown = BTreeSet::new();
            tree(lineage, &children, start, direction, 1, &mut shown, &mut out);
            out
        }
    }
}

fn tree<'a>(
    lineage: &ProjectLineage,
    children: &BTreeMap<&'a ColumnRef, Vec<&'a Edge>>,
    at: &'a ColumnRef,
    direction: Direction,
    level: usize,
    shown: &mut BTreeSet<&'a ColumnRef>,
    out: &mut String,
) {
    if !shown.insert(at) {
        return;
    }
    for edge in children.get(at).into_iter().flatten() {
        let (other, arrow) = match direction {
            Direction::Upstream => (&edge.from, "<-"),
            Direction::Downstream => (&edge.to, "->"),
        };
        let how = match (edge.kind, edge.row_decider) {
            (_, true) => " (filters/joins)".to_string(),
            (Some(kind), _) => format!(" ({})", kind.as_str()),
            (None, _) => String::new(),
        };
        out.push_str(&format!("{}{arrow} {}{how}\n", "  ".repeat(level), lineage.label(other)));
        if !edge.row_decider {
            tree(lineage, children, other, direction, level + 1, shown, out);
        }
    }
}
