//! Every problem of a fleet, each attributed to the Kustomization it makes fail (when it has an
//! identity), with its file and cause. Loading and graphing collect them instead of stopping, so
//! `plan`, `graph` and `build` show the rest of the fleet and what the failures block, and
//! `apply`/`diff` can refuse (or, asked to, exclude) exactly the failing Kustomizations. Pure.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::graph::{Graph, GraphError};
use crate::load::{Fleet, LoadError};
use crate::model::KsId;

/// One problem.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The file it is about.
    pub file: String,
    /// The Kustomization that fails because of it (`null`: one without an identity, e.g. no
    /// namespace).
    pub kustomization: Option<KsId>,
    /// What is wrong, without the file and Kustomization.
    pub cause: String,
    /// The whole message, as printed.
    pub message: String,
}

impl Problem {
    fn new(file: String, kustomization: Option<KsId>, message: String) -> Problem {
        let prefix = match &kustomization {
            Some(k) => format!("{file}: Kustomization {k}: "),
            None => format!("{file}: "),
        };
        let cause = message
            .strip_prefix(&prefix)
            .unwrap_or(&message)
            .to_string();
        Problem {
            file,
            kustomization,
            cause,
            message,
        }
    }

    fn from_load(e: &LoadError, fleet: &Fleet) -> Problem {
        let mut p = Problem::new(e.file(), e.ks(), e.to_string());
        // One without an identity (no namespace) is no node: it concerns every selection.
        if p.kustomization
            .as_ref()
            .is_some_and(|k| !fleet.nodes.contains_key(k))
        {
            p.kustomization = None;
        }
        p
    }

    fn from_graph(e: &GraphError, fleet: &Fleet, build_failed: bool) -> Vec<Problem> {
        let nodes = e.nodes();
        let mut message = e.to_string();
        if build_failed && matches!(e, GraphError::Missing { .. }) {
            message.push_str(" (a Kustomization whose build failed may define it)");
        }
        nodes
            .into_iter()
            .map(|k| {
                let file = fleet
                    .nodes
                    .get(&k)
                    .map(|n| n.file.clone())
                    .unwrap_or_default();
                Problem::new(file, Some(k), message.clone())
            })
            .collect()
    }
}

/// The problems of a fleet and the Kustomizations they make fail.
#[derive(Debug, Default)]
pub struct Problems {
    /// Every problem, in the order found (load, then graph).
    pub all: Vec<Problem>,
    /// Kustomizations that failed to load, build or validate.
    pub failed: BTreeSet<KsId>,
}

impl Problems {
    /// Collects the problems of `fleet` and `graph`.
    pub fn collect(fleet: &Fleet, graph: &Graph) -> Problems {
        let mut all: Vec<Problem> = fleet
            .failures
            .iter()
            .map(|e| Problem::from_load(e, fleet))
            .collect();
        let build_failed = fleet
            .failures
            .iter()
            .any(|e| matches!(e, LoadError::Build { .. } | LoadError::PostBuild { .. }));
        for e in &graph.errors {
            all.extend(Problem::from_graph(e, fleet, build_failed));
        }
        let mut failed: BTreeSet<KsId> = fleet
            .nodes
            .values()
            .filter(|n| n.failed)
            .map(|n| n.id.clone())
            .collect();
        failed.extend(graph.errors.iter().flat_map(|e| e.nodes()));
        for p in &mut all {
            p.message = crate::redact::redact(&p.message, &fleet.decrypted);
            p.cause = crate::redact::redact(&p.cause, &fleet.decrypted);
        }
        Problems { all, failed }
    }

    /// Adds the problems of broken HelmReleases: each fails (and so blocks what waits on it) as
    /// a failing Kustomization does.
    pub fn add_helm(&mut self, problems: Vec<crate::helm::HelmProblem>) {
        for p in problems {
            if let Some(id) = &p.release {
                self.failed.insert(id.clone());
            }
            self.all.push(Problem {
                file: p.file,
                kustomization: p.release,
                cause: p.cause,
                message: p.message,
            });
        }
    }

    /// The problems that concern `selection` (and those of no Kustomization).
    pub fn within<'a>(
        &'a self,
        selection: &'a BTreeSet<KsId>,
    ) -> impl Iterator<Item = &'a Problem> {
        self.all.iter().filter(move |p| {
            p.kustomization
                .as_ref()
                .is_none_or(|k| selection.contains(k))
        })
    }

    /// The messages of the problems within `selection`, each once (a cycle is one problem of
    /// several Kustomizations).
    pub fn messages(&self, selection: &BTreeSet<KsId>) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.within(selection)
            .filter(|p| seen.insert(p.message.clone()))
            .map(|p| p.message.clone())
            .collect()
    }

    /// Causes per failed Kustomization.
    pub fn by_kustomization(&self) -> BTreeMap<KsId, Vec<String>> {
        let mut m: BTreeMap<KsId, Vec<String>> = BTreeMap::new();
        for p in &self.all {
            if let Some(k) = &p.kustomization {
                m.entry(k.clone()).or_default().push(p.cause.clone());
            }
        }
        for k in &self.failed {
            m.entry(k.clone()).or_default();
        }
        m
    }
}
