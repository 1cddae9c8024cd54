//! Selection over a manifest: node facts for the selector grammar, and `state:` comparison with a previous manifest.

use std::collections::{BTreeMap, BTreeSet};

use crate::graph::selector::{self, Modified, NodeFacts, ResourceType, SelectError, Selection, StateChange};
use crate::graph::{Dag, NodeId};
use crate::manifest::{Manifest, NodeKind};
use crate::project::{ConfigMap, Layer};

/// Node facts for selection, in the node table order of `manifest.order`, plus the DAG over them.
pub struct SelectableGraph {
    pub ids: Vec<String>,
    pub dag: Dag,
    pub order: Vec<NodeId>,
}

impl SelectableGraph {
    pub fn new(manifest: &Manifest) -> SelectableGraph {
        let ids: Vec<String> = manifest.order.clone();
        let index: BTreeMap<&str, NodeId> =
            ids.iter().enumerate().map(|(i, id)| (id.as_str(), NodeId(i as u32))).collect();
        let edges = manifest.edges.iter().filter_map(|(a, b)| Some((*index.get(a.as_str())?, *index.get(b.as_str())?)));
        let dag = Dag::new(ids.len(), edges);
        let order = (0..ids.len()).map(|i| NodeId(i as u32)).collect();
        SelectableGraph { ids, dag, order }
    }

    /// Applies `--select`/`--exclude`; `state` is the previous manifest for `state:` methods, `results` the
    /// `--state` run's result per node (`success`, `error`, `skipped`, `fail`, `warn`) for `result:`.
    pub fn select(
        &self,
        manifest: &Manifest,
        select: &[String],
        exclude: &[String],
        state: Option<&Manifest>,
        results: Option<&BTreeMap<String, String>>,
        fresher: Option<&BTreeSet<String>>,
    ) -> Result<Selection, SelectError> {
        let empty_tags: Vec<String> = Vec::new();
        let empty_config = ConfigMap::new();
        let facts: Vec<NodeFacts<'_>> = self
            .ids
            .iter()
            .map(|id| {
                if let Some(node) = manifest.nodes.get(id) {
                    let modified = match state.and_then(|previous| Some((previous, previous.nodes.get(id)?))) {
                        Some((previous, old)) => modified(previous, old, manifest, node),
                        None => Modified::default(),
                    };
                    let state = state.map(|previous| match previous.nodes.get(id) {
                        None => StateChange::New,
                        Some(old) if old.checksum != node.checksum || modified != Modified::default() => {
                            StateChange::Modified
                        }
                        Some(_) => StateChange::Unchanged,
                    });
                    NodeFacts {
                        name: &node.name,
                        model_of_version: node.version.as_ref().map(|v| v.model.as_str()),
                        resource_type: match node.resource_type {
                            NodeKind::Model => ResourceType::Model,
                            NodeKind::Seed => ResourceType::Seed,
                            NodeKind::Snapshot => ResourceType::Snapshot,
                        },
                        layer: node.layer.map(Layer::as_str),
                        path: &node.path,
                        tags: &node.tags,
                        config: &node.config,
                        source: None,
                        state,
                        modified,
                        result: results.and_then(|r| r.get(id)).map(String::as_str),
                        fresher: None,
                    }
                } else {
                    let source = &manifest.sources[id];
                    let state = state.map(|previous| match previous.sources.get(id) {
                        None => StateChange::New,
                        Some(old) if old != source => StateChange::Modified,
                        Some(_) => StateChange::Unchanged,
                    });
                    NodeFacts {
                        name: &source.name,
                        model_of_version: None,
                        resource_type: ResourceType::Source,
                        layer: None,
                        path: &source.declared_in,
                        tags: &empty_tags,
                        config: &empty_config,
                        source: Some((&source.source_name, &source.name)),
                        state,
                        modified: Modified::default(),
                        result: None,
                        fresher: fresher.map(|f| f.contains(id)),
                    }
                }
            })
            .collect();
        selector::select(select, exclude, &self.dag, &facts, &self.order)
    }
}

/// What changed in `node` since `old` (in the manifest `previous`).
fn modified(
    previous: &Manifest,
    old: &crate::manifest::Node,
    manifest: &Manifest,
    node: &crate::manifest::Node,
) -> Modified {
    fn contract_of(n: &crate::manifest::Node) -> (bool, Vec<(&String, &Option<String>)>) {
        let enforced = n.settings.contract_enforced;
        let columns = match enforced {
            true => n.columns.values().map(|c| (&c.name, &c.data_type)).collect(),
            false => Vec::new(),
        };
        (enforced, columns)
    }
    let macro_checksum = |m: &Manifest, id: &str| m.macros.get(id).map(|x| x.checksum.clone());
    Modified {
        body: old.raw_sql != node.raw_sql,
        configs: old.config != node.config,
        contract: contract_of(old) != contract_of(node),
        macros: node.depends_on.macros.iter().any(|m| macro_checksum(previous, m) != macro_checksum(manifest, m)),
    }
}
