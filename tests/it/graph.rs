//! `graph -o dot|mermaid` on the example fleet: every dependsOn edge solid, every parent edge
//! dashed, suspended and blocked nodes marked, and output that looks like valid syntax.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::util::*;

const DEMO: &str = "examples/fleet/clusters/demo";

fn demo_graph(args: &[&str]) -> String {
    let out = flux_order()
        .current_dir(repo_root())
        .args(["graph", DEMO])
        .args(args)
        .assert()
        .success()
        .get_output()
        .clone();
    let (stdout, stderr) = text(&out);
    assert_no_panic(&stderr);
    stdout
}

/// (dependency, dependent) pairs and (parent, child) pairs, read from the plan: the graph must
/// draw exactly these.
/// A set of (from, to) edges.
type Edges = BTreeSet<(String, String)>;

fn demo_edges() -> (Edges, Edges) {
    let out = flux_order()
        .current_dir(repo_root())
        .args(["plan", DEMO, "-o", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    let plan: Value = serde_json::from_str(&text(&out).0).expect("json");
    let (mut deps, mut parents) = (BTreeSet::new(), BTreeSet::new());
    for id in waves(&plan).concat() {
        let k = plan_entry(&plan, &id);
        for d in k["dependsOn"].as_array().unwrap() {
            deps.insert((d.as_str().unwrap().to_string(), id.clone()));
        }
        if let Some(p) = k["parent"].as_str() {
            parents.insert((p.to_string(), id.clone()));
        }
    }
    (deps, parents)
}

fn assert_balanced(s: &str, open: char, close: char) {
    let mut depth = 0i64;
    for c in s.chars() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            assert!(depth >= 0, "unbalanced {close}:\n{s}");
        }
    }
    assert_eq!(depth, 0, "unbalanced {open}{close}:\n{s}");
}

#[test]
fn dot_draws_every_dependency_solid_and_every_parent_dashed() {
    let dot = demo_graph(&["-o", "dot"]);
    assert!(dot.starts_with("digraph fleet {\n"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");
    assert_balanced(&dot, '{', '}');
    assert_balanced(&dot, '[', ']');
    assert_eq!(dot.matches('"').count() % 2, 0, "unbalanced quotes:\n{dot}");

    let (deps, parents) = demo_edges();
    assert_eq!(deps.len(), 18, "the example fleet has 18 dependsOn edges");
    assert_eq!(parents.len(), 14, "and 14 parent edges");
    let mut solid = BTreeSet::new();
    let mut dashed = BTreeSet::new();
    for line in dot.lines().map(str::trim).filter(|l| l.contains(" -> ")) {
        let (from, rest) = line.split_once(" -> ").unwrap();
        let to = rest.split(['[', ';']).next().unwrap().trim();
        let edge = (
            from.trim_matches('"').to_string(),
            to.trim_matches('"').to_string(),
        );
        if rest.contains("style=dashed") {
            dashed.insert(edge);
        } else {
            solid.insert(edge);
        }
    }
    assert_eq!(solid, deps);
    assert_eq!(dashed, parents);
}

#[test]
fn dot_groups_nodes_by_wave_and_marks_suspension() {
    let dot = demo_graph(&[]);
    for i in 0..7 {
        assert!(
            dot.contains(&format!("subgraph cluster_wave{i} {{")),
            "wave {i}:\n{dot}"
        );
    }
    assert!(!dot.contains("cluster_wave7"), "{dot}");
    let node = |id: &str| {
        dot.lines()
            .find(|l| l.trim_start().starts_with(&format!("\"{id}\" [")))
            .unwrap_or_else(|| panic!("no node {id}:\n{dot}"))
            .to_string()
    };
    assert!(node("flux-system/db-migrations").contains("xlabel=\"suspended\""));
    assert!(node("flux-system/reporting").contains("xlabel=\"blocked\""));
    assert!(!node("flux-system/backend").contains("xlabel"));
    let nodes = dot
        .lines()
        .filter(|l| l.trim_start().starts_with('"') && !l.contains(" -> "))
        .count();
    assert_eq!(nodes, 15);
}

#[test]
fn dot_labels_break_the_line_before_the_object_count() {
    let dot = demo_graph(&[]);
    assert!(
        dot.contains("\"flux-system/crds\" [label=\"flux-system/crds\\n2 objects\"]"),
        "{dot}"
    );
    assert!(!dot.contains("\\\\n"), "{dot}");
}

#[test]
fn mermaid_draws_every_dependency_solid_and_every_parent_dashed() {
    let m = demo_graph(&["-o", "mermaid"]);
    assert!(m.starts_with("flowchart LR\n"), "{m}");
    assert_balanced(&m, '[', ']');
    let subgraphs = m
        .lines()
        .filter(|l| l.trim_start().starts_with("subgraph "))
        .count();
    let ends = m.lines().filter(|l| l.trim() == "end").count();
    assert_eq!((subgraphs, ends), (7, 7), "{m}");

    // Node ids: `kN["ns/name…"]`.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for line in m.lines().map(str::trim) {
        if let Some((key, rest)) = line.split_once("[\"")
            && key.starts_with('k')
            && !line.contains("-->")
            && !line.contains("-.->")
        {
            let label = rest.trim_end_matches("\"]");
            let id = label.split(' ').next().unwrap();
            assert!(
                names.insert(key.to_string(), id.to_string()).is_none(),
                "duplicate node id {key}"
            );
        }
    }
    assert_eq!(names.len(), 15, "{m}");
    let (deps, parents) = demo_edges();
    let mut solid = BTreeSet::new();
    let mut dashed = BTreeSet::new();
    for line in m.lines().map(str::trim) {
        if let Some((a, b)) = line.split_once(" --> ") {
            solid.insert((names[a].clone(), names[b].clone()));
        } else if let Some((a, b)) = line.split_once(" -.->|applies| ") {
            dashed.insert((names[a].clone(), names[b].clone()));
        }
    }
    assert_eq!(solid, deps);
    assert_eq!(dashed, parents);
    assert!(
        m.contains("[\"flux-system/db-migrations (suspended)\"]"),
        "{m}"
    );
    assert!(m.contains("[\"flux-system/reporting (blocked)\"]"), "{m}");
}

#[test]
fn graph_only_draws_the_selection() {
    let dot = demo_graph(&["--only", "flux-system/operators"]);
    let nodes: BTreeSet<&str> = dot
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('"') && !l.contains(" -> "))
        .map(|l| l.split('"').nth(1).unwrap())
        .collect();
    assert_eq!(
        nodes,
        BTreeSet::from([
            "flux-system/flux-system",
            "flux-system/crds",
            "flux-system/namespaces",
            "flux-system/operators"
        ])
    );
}
