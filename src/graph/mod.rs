//! The dependency graph over node ids: cycles, topological order, ancestors and descendants, and the selector
//! grammar (`selector`).
//!
//! **Architecture invariant:** `graph` sees ids, edges and node facts (names, tags, layers, paths, config), never SQL
//! text; petgraph's indices stay inside this module.

pub mod selector;

use std::collections::{BTreeSet, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

/// Index of a node in the compile's node table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A directed graph: an edge `a -> b` means `b` reads `a`.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<NodeId, ()>,
}

impl Dag {
    /// A graph of `n_nodes` nodes with ids `0..n_nodes`. Duplicate edges are kept once.
    pub fn new(n_nodes: usize, edges: impl IntoIterator<Item = (NodeId, NodeId)>) -> Dag {
        let mut graph = DiGraph::with_capacity(n_nodes, n_nodes * 2);
        for i in 0..n_nodes {
            graph.add_node(NodeId(i as u32));
        }
        let unique: BTreeSet<(NodeId, NodeId)> = edges.into_iter().collect();
        for (from, to) in unique {
            graph.add_edge(NodeIndex::new(from.index()), NodeIndex::new(to.index()), ());
        }
        Dag { graph }
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub fn parents(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.neighbors(node, Direction::Incoming)
    }

    pub fn children(&self, node: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.neighbors(node, Direction::Outgoing)
    }

    fn neighbors(&self, node: NodeId, direction: Direction) -> impl Iterator<Item = NodeId> + '_ {
        self.graph.neighbors_directed(NodeIndex::new(node.index()), direction).map(|i| NodeId(i.index() as u32))
    }

    /// Every cycle, each as a path `a -> b -> ... -> a` (the first node repeated at the end is left out),
    /// starting at its smallest node by `order`, listed in that order. One cycle per strongly connected component.
    pub fn cycles<K: Ord>(&self, order: impl Fn(NodeId) -> K) -> Vec<Vec<NodeId>> {
        let mut cycles = Vec::new();
        for component in petgraph::algo::tarjan_scc(&self.graph) {
            let members: BTreeSet<NodeId> = component.iter().map(|i| NodeId(i.index() as u32)).collect();
            let self_loop = component.len() == 1 && self.graph.contains_edge(component[0], component[0]);
            if component.len() < 2 && !self_loop {
                continue;
            }
            let Some(&start) = members.iter().min_by_key(|&&n| order(n)) else {
                continue;
            };
            if let Some(path) = self.path_back_to(start, &members, &order) {
                cycles.push(path);
            }
        }
        cycles.sort_by_key(|c| order(c[0]));
        cycles
    }

    /// Shortest path from `start` back to itself inside `members` (breadth first, neighbours in `order`).
    fn path_back_to<K: Ord>(
        &self,
        start: NodeId,
        members: &BTreeSet<NodeId>,
        order: &impl Fn(NodeId) -> K,
    ) -> Option<Vec<NodeId>> {
        let mut previous: Vec<Option<NodeId>> = vec![None; self.len()];
        let mut queue = VecDeque::from([start]);
        let mut seen = BTreeSet::from([start]);
        while let Some(node) = queue.pop_front() {
            let mut next: Vec<NodeId> = self.children(node).filter(|c| members.contains(c)).collect();
            next.sort_by_key(|&n| order(n));
            for child in next {
                if child == start {
                    let mut path = vec![node];
                    let mut at = node;
                    while let Some(p) = previous[at.index()] {
                        path.push(p);
                        at = p;
                    }
                    path.reverse();
                    return Some(path);
                }
                if seen.insert(child) {
                    previous[child.index()] = Some(node);
                    queue.push_back(child);
                }
            }
        }
        None
    }

    /// Topological order, ties broken by `order` so the result is deterministic. Nodes on cycles are left out.
    pub fn topological_order<K: Ord + Clone>(&self, order: impl Fn(NodeId) -> K) -> Vec<NodeId> {
        let mut in_degree: Vec<usize> = (0..self.len())
            .map(|i| self.graph.neighbors_directed(NodeIndex::new(i), Direction::Incoming).count())
            .collect();
        let mut ready: BTreeSet<(K, NodeId)> = (0..self.len())
            .filter(|&i| in_degree[i] == 0)
            .map(|i| (order(NodeId(i as u32)), NodeId(i as u32)))
            .collect();
        let mut sorted = Vec::with_capacity(self.len());
        while let Some((_, node)) = ready.pop_first() {
            sorted.push(node);
            for child in self.children(node) {
                in_degree[child.index()] -= 1;
                if in_degree[child.index()] == 0 {
                    ready.insert((order(child), child));
                }
            }
        }
        sorted
    }

    /// Nodes reachable upstream (`Incoming`) or downstream (`Outgoing`) within `depth` steps (`None`: unlimited).
    pub fn reachable(&self, node: NodeId, direction: Direction, depth: Option<usize>) -> BTreeSet<NodeId> {
        let mut found = BTreeSet::new();
        let mut frontier = vec![node];
        let mut level = 0;
        while !frontier.is_empty() && depth.is_none_or(|d| level < d) {
            let mut next = Vec::new();
            for n in frontier {
                for m in self.neighbors(n, direction) {
                    if found.insert(m) {
                        next.push(m);
                    }
                }
            }
            frontier = next;
            level += 1;
        }
        found
    }

    pub fn ancestors(&self, node: NodeId, depth: Option<usize>) -> BTreeSet<NodeId> {
        self.reachable(node, Direction::Incoming, depth)
    }

    pub fn descendants(&self, node: NodeId, depth: Option<usize>) -> BTreeSet<NodeId> {
        self.reachable(node, Direction::Outgoing, depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(n: usize, edges: &[(u32, u32)]) -> Dag {
        Dag::new(n, edges.iter().map(|&(a, b)| (NodeId(a), NodeId(b))))
    }

    #[test]
    fn topological_order_is_deterministic() {
        let g = dag(5, &[(3, 1), (0, 1), (1, 2), (4, 2)]);
        let order: Vec<u32> = g.topological_order(|n| n.0).iter().map(|n| n.0).collect();
        assert_eq!(order, vec![0, 3, 1, 4, 2]);
    }

    #[test]
    fn finds_whole_cycles() {
        let g = dag(5, &[(0, 1), (1, 2), (2, 0), (3, 3), (2, 4)]);
        let cycles: Vec<Vec<u32>> = g.cycles(|n| n.0).iter().map(|c| c.iter().map(|n| n.0).collect()).collect();
        assert_eq!(cycles, vec![vec![0, 1, 2], vec![3]]);
        assert_eq!(g.topological_order(|n| n.0), Vec::<NodeId>::new());
    }

    #[test]
    fn ancestors_and_descendants_with_depth() {
        let g = dag(4, &[(0, 1), (1, 2), (2, 3)]);
        assert_eq!(g.descendants(NodeId(0), Some(2)), BTreeSet::from([NodeId(1), NodeId(2)]));
        assert_eq!(g.ancestors(NodeId(3), None), BTreeSet::from([NodeId(0), NodeId(1), NodeId(2)]));
    }
}
