//! The dependency graph as Graphviz DOT or Mermaid: solid edges for dependsOn, dashed edges for
//! "found in the parent's build", suspended and blocked nodes styled. Pure: no I/O.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::graph::Graph;
use crate::load::Fleet;
use crate::model::KsId;

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz DOT: one cluster per wave, edges from dependency to dependent.
pub fn dot(fleet: &Fleet, graph: &Graph, sel: &BTreeSet<KsId>) -> String {
    let blocked = graph.blocked_by_suspension();
    let mut s =
        String::from("digraph fleet {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for (i, wave) in graph.waves.iter().enumerate() {
        let members: Vec<&KsId> = wave.iter().filter(|k| sel.contains(*k)).collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "  subgraph cluster_wave{i} {{\n    label=\"wave {i}\";\n    style=dashed;"
        );
        for id in members {
            let n = &fleet.nodes[id];
            let style = if n.spec.suspend {
                ", style=\"rounded,dashed\", color=gray, fontcolor=gray, xlabel=\"suspended\""
            } else if blocked.contains_key(id) {
                ", color=orange, xlabel=\"blocked\""
            } else {
                ""
            };
            // `\n` is DOT's line break inside a label: added inside the quotes, after escaping.
            let quoted = quote(&id.to_string());
            let label = format!(
                "{}\\n{} objects\"",
                quoted.trim_end_matches('"'),
                n.objects.len()
            );
            let _ = writeln!(s, "    {quoted} [label={label}{style}];");
        }
        s.push_str("  }\n");
    }
    for id in sel {
        let n = &fleet.nodes[id];
        for d in n.spec.dependencies(&id.namespace) {
            if sel.contains(&d) {
                let _ = writeln!(
                    s,
                    "  {} -> {};",
                    quote(&d.to_string()),
                    quote(&id.to_string())
                );
            }
        }
        if let Some(p) = n.parent.as_ref().filter(|p| sel.contains(*p)) {
            let _ = writeln!(
                s,
                "  {} -> {} [style=dashed, label=\"applies\"];",
                quote(&p.to_string()),
                quote(&id.to_string())
            );
        }
    }
    s.push_str("}\n");
    s
}

/// Mermaid flowchart (left to right).
pub fn mermaid(fleet: &Fleet, graph: &Graph, sel: &BTreeSet<KsId>) -> String {
    let blocked = graph.blocked_by_suspension();
    let ids: Vec<&KsId> = sel.iter().collect();
    let idx = |k: &KsId| ids.iter().position(|x| *x == k).unwrap_or(0);
    let mut s = String::from("flowchart LR\n");
    for (i, wave) in graph.waves.iter().enumerate() {
        let members: Vec<&KsId> = wave.iter().filter(|k| sel.contains(*k)).collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(s, "  subgraph wave{i}[\"wave {i}\"]");
        for id in members {
            let n = &fleet.nodes[id];
            let note = if n.spec.suspend {
                " (suspended)"
            } else if blocked.contains_key(id) {
                " (blocked)"
            } else {
                ""
            };
            let _ = writeln!(s, "    k{}[\"{id}{note}\"]", idx(id));
        }
        s.push_str("  end\n");
    }
    for id in sel {
        let n = &fleet.nodes[id];
        for d in n.spec.dependencies(&id.namespace) {
            if sel.contains(&d) {
                let _ = writeln!(s, "  k{} --> k{}", idx(&d), idx(id));
            }
        }
        if let Some(p) = n.parent.as_ref().filter(|p| sel.contains(*p)) {
            let _ = writeln!(s, "  k{} -.->|applies| k{}", idx(p), idx(id));
        }
    }
    s
}
