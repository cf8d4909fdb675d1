//! The dependency graph as Graphviz DOT or Mermaid: solid edges for dependsOn, dashed edges for
//! "found in the parent's build", suspended and blocked nodes styled. Both renderers draw one
//! [`Layout`]. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::graph::Graph;
use crate::load::Fleet;
use crate::model::KsId;
use crate::problems::Problems;

/// How a node is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Applied normally.
    Normal,
    /// spec.suspend.
    Suspended,
    /// Waits on a suspended Kustomization.
    Blocked,
    /// Fails to load, build or validate.
    Failed,
    /// Waits on a failing Kustomization.
    BlockedByFailure,
}

/// One node: its identity, state and object count.
struct Node<'a> {
    id: &'a KsId,
    state: State,
    objects: usize,
}

/// One edge, from dependency (or parent) to dependent (or child).
struct Edge {
    from: KsId,
    to: KsId,
    /// The child of a parent's build (drawn dashed, "applies"), not a dependsOn.
    applies: bool,
}

/// What both renderers draw: the selected nodes per wave, and the edges between them.
struct Layout<'a> {
    waves: Vec<(usize, Vec<Node<'a>>)>,
    edges: Vec<Edge>,
}

fn layout<'a>(
    fleet: &'a Fleet,
    graph: &'a Graph,
    sel: &'a BTreeSet<KsId>,
    helm: &'a BTreeMap<KsId, crate::helm::Release>,
    problems: &Problems,
) -> Layout<'a> {
    let blocked = graph.blocked_by_suspension();
    let blocked_by_failure = graph.blocked_by(&problems.failed);
    let waves = graph
        .waves
        .iter()
        .enumerate()
        .map(|(i, wave)| {
            let nodes = wave
                .iter()
                .filter(|k| sel.contains(*k) || helm.contains_key(*k))
                .map(|id| {
                    let (suspended, objects) = match helm.get(id) {
                        Some(r) => (r.spec.suspend, 0),
                        None => {
                            let n = &fleet.nodes[id];
                            (n.spec.suspend, n.objects.len())
                        }
                    };
                    let state = if problems.failed.contains(id) {
                        State::Failed
                    } else if blocked_by_failure.contains_key(id) {
                        State::BlockedByFailure
                    } else if suspended {
                        State::Suspended
                    } else if blocked.contains_key(id) {
                        State::Blocked
                    } else {
                        State::Normal
                    };
                    Node { id, state, objects }
                })
                .collect::<Vec<_>>();
            (i, nodes)
        })
        .filter(|(_, nodes)| !nodes.is_empty())
        .collect();
    let mut edges = Vec::new();
    for (id, r) in helm {
        for d in r
            .spec
            .dependencies(&id.namespace)
            .into_iter()
            .filter(|d| helm.contains_key(d))
        {
            edges.push(Edge {
                from: d,
                to: id.clone(),
                applies: false,
            });
        }
        if sel.contains(&r.owner) {
            edges.push(Edge {
                from: r.owner.clone(),
                to: id.clone(),
                applies: true,
            });
        }
    }
    for id in sel {
        let n = &fleet.nodes[id];
        for d in n
            .spec
            .dependencies(&id.namespace)
            .into_iter()
            .filter(|d| sel.contains(d))
        {
            edges.push(Edge {
                from: d,
                to: id.clone(),
                applies: false,
            });
        }
        // A dependency's gating HelmReleases (its readiness includes theirs).
        for h in graph
            .predecessors(id)
            .filter(|p| p.is_helm_release() && helm.contains_key(*p))
        {
            edges.push(Edge {
                from: h.clone(),
                to: id.clone(),
                applies: false,
            });
        }
        if let Some(p) = n.parent.as_ref().filter(|p| sel.contains(*p)) {
            edges.push(Edge {
                from: p.clone(),
                to: id.clone(),
                applies: true,
            });
        }
    }
    Layout { waves, edges }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz DOT: one cluster per wave, edges from dependency to dependent.
pub fn dot(
    fleet: &Fleet,
    graph: &Graph,
    sel: &BTreeSet<KsId>,
    helm: &BTreeMap<KsId, crate::helm::Release>,
    problems: &Problems,
) -> String {
    let l = layout(fleet, graph, sel, helm, problems);
    let mut s =
        String::from("digraph fleet {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (i, nodes) in &l.waves {
        let _ = writeln!(
            s,
            "  subgraph cluster_wave{i} {{\n    label=\"wave {i}\";\n    style=dashed;"
        );
        for n in nodes {
            let style = match n.state {
                State::Suspended => {
                    ", style=\"rounded,dashed\", color=gray, fontcolor=gray, xlabel=\"suspended\""
                }
                State::Blocked => ", color=orange, xlabel=\"blocked\"",
                State::Failed => ", color=red, fontcolor=red, penwidth=2, xlabel=\"failed\"",
                State::BlockedByFailure => {
                    ", style=\"rounded,dashed\", color=red, xlabel=\"blocked by failure\""
                }
                State::Normal => "",
            };
            // `\n` is DOT's line break inside a label: added inside the quotes, after escaping.
            let quoted = quote(&n.id.to_string());
            let label = format!("{}\\n{} objects\"", quoted.trim_end_matches('"'), n.objects);
            let _ = writeln!(s, "    {quoted} [label={label}{style}];");
        }
        s.push_str("  }\n");
    }
    for e in &l.edges {
        let attrs = if e.applies {
            " [style=dashed, label=\"applies\"]"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  {} -> {}{attrs};",
            quote(&e.from.to_string()),
            quote(&e.to.to_string())
        );
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart (left to right).
pub fn mermaid(
    fleet: &Fleet,
    graph: &Graph,
    sel: &BTreeSet<KsId>,
    helm: &BTreeMap<KsId, crate::helm::Release>,
    problems: &Problems,
) -> String {
    let l = layout(fleet, graph, sel, helm, problems);
    // Mermaid ids: the node's position in the selection (Kustomizations, then HelmReleases).
    let idx: BTreeMap<&KsId, usize> = sel
        .iter()
        .chain(helm.keys())
        .enumerate()
        .map(|(i, k)| (k, i))
        .collect();
    let mut s = String::from("flowchart LR\n");
    for (i, nodes) in &l.waves {
        let _ = writeln!(s, "  subgraph wave{i}[\"wave {i}\"]");
        for n in nodes {
            let note = match n.state {
                State::Suspended => " (suspended)",
                State::Blocked => " (blocked)",
                State::Failed => " (failed)",
                State::BlockedByFailure => " (blocked by failure)",
                State::Normal => "",
            };
            let _ = writeln!(s, "    k{}[\"{}{note}\"]", idx[n.id], n.id);
        }
        s.push_str("  end\n");
    }
    for e in &l.edges {
        let arrow = if e.applies { "-.->|applies|" } else { "-->" };
        let _ = writeln!(s, "  k{} {arrow} k{}", idx[&e.from], idx[&e.to]);
    }
    s
}
