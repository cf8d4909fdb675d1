//! The dependency graph of a fleet: dependsOn edges (namespace defaulted to the dependent's) and
//! parent edges (a child found in a parent's build comes after that parent). Validates it (missing
//! dependencies, self-dependencies, cycles printed as the full loop the way fluxcd/pkg does),
//! computes waves (topological levels), the critical path, `--only` subsets and what suspension
//! blocks. Pure: no I/O; deterministic order everywhere.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::KsId;

/// One node's edges, as the graph needs them.
#[derive(Debug, Clone)]
pub struct NodeInput {
    /// The node.
    pub id: KsId,
    /// dependsOn, namespaces defaulted.
    pub depends_on: Vec<KsId>,
    /// The Kustomization whose build contains it.
    pub parent: Option<KsId>,
    /// spec.suspend.
    pub suspended: bool,
    /// Defining file, for messages.
    pub file: String,
}

/// A graph error, naming files and objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// dependsOn names a Kustomization that is not in the fleet.
    #[error("{file}: {}: dependency '{dep}' not found in the fleet", ks.label())]
    Missing {
        /// The dependent.
        ks: KsId,
        /// Its file.
        file: String,
        /// The missing dependency.
        dep: KsId,
    },
    /// A Kustomization depends on itself.
    #[error("{file}: {} depends on itself", ks.label())]
    SelfDependency {
        /// The Kustomization.
        ks: KsId,
        /// Its file.
        file: String,
    },
    /// A cycle.
    #[error("circular dependency detected: {} (defined in {})", fmt_cycle(.cycle), .files.join(", "))]
    Cycle {
        /// The loop, first node repeated at the end.
        cycle: Vec<KsId>,
        /// Files of the nodes in the loop.
        files: Vec<String>,
    },
    /// `--only` names an unknown Kustomization.
    #[error("--only {0}: no such Kustomization in the fleet")]
    UnknownSelection(KsId),
}

impl GraphError {
    /// The Kustomizations it makes fail.
    pub fn nodes(&self) -> Vec<KsId> {
        match self {
            GraphError::Missing { ks, .. } | GraphError::SelfDependency { ks, .. } => {
                vec![ks.clone()]
            }
            GraphError::Cycle { cycle, .. } => {
                let set: BTreeSet<KsId> = cycle.iter().cloned().collect();
                set.into_iter().collect()
            }
            GraphError::UnknownSelection(_) => Vec::new(),
        }
    }
}

fn fmt_cycle(c: &[KsId]) -> String {
    c.iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// A validated DAG.
#[derive(Debug, Clone)]
pub struct Graph {
    inputs: BTreeMap<KsId, NodeInput>,
    /// Predecessors (dependsOn ∪ parent) of each node.
    preds: BTreeMap<KsId, BTreeSet<KsId>>,
    /// Topological levels.
    pub waves: Vec<Vec<KsId>>,
    wave_of: BTreeMap<KsId, usize>,
    /// Missing dependencies, self-dependencies and cycles, each naming its Kustomizations.
    pub errors: Vec<GraphError>,
}

impl Graph {
    /// Validates and levels the graph. Every problem is in [`Graph::errors`]; the graph is made
    /// of what remains (edges to missing dependencies, self-dependencies and the edges of cycles
    /// left out), so the rest of the fleet is still levelled.
    pub fn new(nodes: Vec<NodeInput>) -> Graph {
        let inputs: BTreeMap<KsId, NodeInput> =
            nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
        let mut errors = Vec::new();
        let mut preds: BTreeMap<KsId, BTreeSet<KsId>> = BTreeMap::new();
        for (id, n) in &inputs {
            let p = preds.entry(id.clone()).or_default();
            for d in &n.depends_on {
                if d == id {
                    errors.push(GraphError::SelfDependency {
                        ks: id.clone(),
                        file: n.file.clone(),
                    });
                } else if !inputs.contains_key(d) {
                    errors.push(GraphError::Missing {
                        ks: id.clone(),
                        file: n.file.clone(),
                        dep: d.clone(),
                    });
                } else {
                    p.insert(d.clone());
                }
            }
            if let Some(parent) = n
                .parent
                .as_ref()
                .filter(|p| inputs.contains_key(*p) && *p != id)
            {
                p.insert(parent.clone());
            }
        }
        // Each round reports the cycles left and drops the edges inside them, until none is left.
        loop {
            let cycles = find_cycles(&preds, &inputs);
            if cycles.is_empty() {
                break;
            }
            for c in &cycles {
                if let GraphError::Cycle { cycle, .. } = c {
                    for pair in cycle.windows(2) {
                        if let Some(p) = preds.get_mut(&pair[0]) {
                            p.remove(&pair[1]);
                        }
                    }
                }
            }
            errors.extend(cycles);
        }
        let mut wave_of = BTreeMap::new();
        for id in inputs.keys() {
            level(id, &preds, &mut wave_of);
        }
        let depth = wave_of.values().copied().max().map_or(0, |m| m + 1);
        let mut waves = vec![Vec::new(); depth];
        for (id, w) in &wave_of {
            waves[*w].push(id.clone());
        }
        Graph {
            inputs,
            preds,
            waves,
            wave_of,
            errors,
        }
    }

    /// The wave of a node.
    pub fn wave(&self, id: &KsId) -> usize {
        self.wave_of.get(id).copied().unwrap_or(0)
    }

    /// All predecessors (dependsOn and parent) of a node.
    pub fn predecessors(&self, id: &KsId) -> impl Iterator<Item = &KsId> {
        self.preds.get(id).into_iter().flatten()
    }

    /// The longest chain among `within`, first to last (ties broken by name).
    pub fn critical_path(&self, within: &BTreeSet<KsId>) -> Vec<KsId> {
        let mut len: BTreeMap<&KsId, usize> = BTreeMap::new();
        for id in self.waves.iter().flatten().filter(|k| within.contains(*k)) {
            let best = self
                .predecessors(id)
                .filter_map(|p| len.get(p))
                .max()
                .copied()
                .unwrap_or(0);
            len.insert(id, best + 1);
        }
        let Some((&last, &n)) = len.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))) else {
            return Vec::new();
        };
        let mut path = vec![last.clone()];
        let (mut cur, mut n) = (last, n);
        while n > 1 {
            let Some(prev) = self
                .predecessors(cur)
                .filter(|p| len.get(p) == Some(&(n - 1)))
                .min()
            else {
                break;
            };
            path.push(prev.clone());
            cur = prev;
            n -= 1;
        }
        path.reverse();
        path
    }

    /// `only` plus everything they transitively need (dependsOn and parents).
    pub fn select(&self, only: &[KsId]) -> Result<BTreeSet<KsId>, Vec<GraphError>> {
        if only.is_empty() {
            return Ok(self.inputs.keys().cloned().collect());
        }
        let unknown: Vec<GraphError> = only
            .iter()
            .filter(|o| !self.inputs.contains_key(*o))
            .map(|o| GraphError::UnknownSelection(o.clone()))
            .collect();
        if !unknown.is_empty() {
            return Err(unknown);
        }
        let mut out = BTreeSet::new();
        let mut stack: Vec<KsId> = only.to_vec();
        while let Some(id) = stack.pop() {
            if out.insert(id.clone()) {
                stack.extend(self.predecessors(&id).cloned());
            }
        }
        Ok(out)
    }

    /// For each node blocked by a suspended Kustomization (directly or transitively), the
    /// suspended one(s) it waits on.
    pub fn blocked_by_suspension(&self) -> BTreeMap<KsId, BTreeSet<KsId>> {
        let suspended: BTreeSet<KsId> = self
            .inputs
            .values()
            .filter(|n| n.suspended)
            .map(|n| n.id.clone())
            .collect();
        self.blocked_by(&suspended)
    }

    /// For each node that waits, directly or transitively (dependsOn or parent), on one of
    /// `roots`: those roots.
    pub fn blocked_by(&self, roots: &BTreeSet<KsId>) -> BTreeMap<KsId, BTreeSet<KsId>> {
        let mut blocked: BTreeMap<KsId, BTreeSet<KsId>> = BTreeMap::new();
        for wave in &self.waves {
            for id in wave {
                let mut by = BTreeSet::new();
                for p in self.predecessors(id) {
                    if roots.contains(p) {
                        by.insert(p.clone());
                    }
                    if let Some(b) = blocked.get(p) {
                        by.extend(b.iter().cloned());
                    }
                }
                if !by.is_empty() {
                    blocked.insert(id.clone(), by);
                }
            }
        }
        blocked
    }
}

fn level(
    id: &KsId,
    preds: &BTreeMap<KsId, BTreeSet<KsId>>,
    memo: &mut BTreeMap<KsId, usize>,
) -> usize {
    if let Some(w) = memo.get(id) {
        return *w;
    }
    let w = preds[id]
        .iter()
        .map(|p| level(p, preds, memo) + 1)
        .max()
        .unwrap_or(0);
    memo.insert(id.clone(), w);
    w
}

/// Depth-first search over the predecessor edges; each cycle is reported once, as the full loop.
fn find_cycles(
    preds: &BTreeMap<KsId, BTreeSet<KsId>>,
    inputs: &BTreeMap<KsId, NodeInput>,
) -> Vec<GraphError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        id: &KsId,
        preds: &BTreeMap<KsId, BTreeSet<KsId>>,
        marks: &mut BTreeMap<KsId, Mark>,
        stack: &mut Vec<KsId>,
        cycles: &mut Vec<Vec<KsId>>,
    ) {
        marks.insert(id.clone(), Mark::Visiting);
        stack.push(id.clone());
        for dep in preds.get(id).into_iter().flatten() {
            match marks.get(dep) {
                Some(Mark::Visiting) => {
                    let start = stack.iter().position(|s| s == dep).unwrap_or(0);
                    let mut c: Vec<KsId> = stack[start..].to_vec();
                    c.push(dep.clone());
                    cycles.push(c);
                }
                Some(Mark::Done) => {}
                None => visit(dep, preds, marks, stack, cycles),
            }
        }
        stack.pop();
        marks.insert(id.clone(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut cycles = Vec::new();
    for id in preds.keys() {
        if !marks.contains_key(id) {
            visit(id, preds, &mut marks, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
        .into_iter()
        .map(|cycle| {
            let files: BTreeSet<String> = cycle
                .iter()
                .filter_map(|k| inputs.get(k))
                .map(|n| n.file.clone())
                .collect();
            GraphError::Cycle {
                cycle,
                files: files.into_iter().collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: &str, deps: &[&str]) -> NodeInput {
        NodeInput {
            id: KsId::parse(id).unwrap(),
            depends_on: deps.iter().map(|d| KsId::parse(d).unwrap()).collect(),
            parent: None,
            suspended: false,
            file: format!("{}.yaml", id.replace('/', "-")),
        }
    }

    #[test]
    fn waves_and_critical_path() {
        let g = Graph::new(vec![
            n("a/x", &[]),
            n("a/y", &["a/x"]),
            n("a/z", &["a/y", "a/x"]),
            n("a/w", &[]),
        ]);
        assert!(g.errors.is_empty());
        assert_eq!(g.waves.len(), 3);
        assert_eq!(
            g.waves[0],
            vec![KsId::parse("a/w").unwrap(), KsId::parse("a/x").unwrap()]
        );
        let all = g.select(&[]).unwrap();
        let cp: Vec<String> = g
            .critical_path(&all)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(cp, vec!["a/x", "a/y", "a/z"]);
    }

    #[test]
    fn cycles_print_the_full_loop() {
        let g = Graph::new(vec![
            n("f/a", &["f/b"]),
            n("f/b", &["f/a"]),
            n("f/c", &["f/a"]),
            n("f/d", &[]),
        ]);
        let errs = &g.errors;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].nodes().len(), 2);
        // The rest is still levelled; what the loop blocks is known.
        assert_eq!(g.waves.iter().flatten().count(), 4);
        let roots: BTreeSet<KsId> = errs[0].nodes().into_iter().collect();
        assert!(
            g.blocked_by(&roots)
                .contains_key(&KsId::parse("f/c").unwrap())
        );
        let msg = errs[0].to_string();
        assert!(
            msg.starts_with("circular dependency detected: f/a -> f/b -> f/a"),
            "{msg}"
        );
    }

    #[test]
    fn missing_and_self_dependencies() {
        let g = Graph::new(vec![n("f/a", &["f/a", "f/zz"])]);
        assert_eq!(g.errors.len(), 2);
        assert_eq!(g.waves, vec![vec![KsId::parse("f/a").unwrap()]]);
    }

    #[test]
    fn only_selects_transitive_dependencies() {
        let g = Graph::new(vec![n("a/x", &[]), n("a/y", &["a/x"]), n("a/z", &[])]);
        let s = g.select(&[KsId::parse("a/y").unwrap()]).unwrap();
        assert_eq!(s.len(), 2);
        assert!(g.select(&[KsId::parse("a/q").unwrap()]).is_err());
    }
}
