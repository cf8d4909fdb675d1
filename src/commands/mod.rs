//! One module per subcommand. Each resolves its flags (`options`), runs the pipeline stages it
//! needs and hands data to a renderer. This is the binary's edge: errors become [`AppError`]s
//! with the whole list of problems, and nothing is printed as success before validation ends.

pub mod apply;
pub mod build;
pub mod delete;
pub mod diff;
pub mod graph;
pub mod plan;
pub mod status;

use std::collections::BTreeSet;

use crate::exit::AppError;
use crate::graph::{Graph, NodeInput};
use crate::load::{self, Fleet};
use crate::model::KsId;
use crate::options::FleetSettings;

/// A loaded, validated fleet with its graph and the selected Kustomizations.
pub struct Loaded {
    /// The fleet.
    pub fleet: Fleet,
    /// Its graph.
    pub graph: Graph,
    /// `--only` closure (everything when not given).
    pub selection: BTreeSet<KsId>,
}

/// Load, build, graph and select: every error of the fleet at once, as exit code 2.
pub async fn load_fleet(settings: &FleetSettings) -> Result<Loaded, AppError> {
    let started = std::time::Instant::now();
    let fleet = load::load(&settings.load, &settings.builder)
        .await
        .map_err(|errs| AppError::Invalid(errs.iter().map(|e| e.to_string()).collect()))?;
    let inputs = fleet
        .nodes
        .values()
        .map(|n| NodeInput {
            id: n.id.clone(),
            depends_on: n.spec.dependencies(&n.id.namespace),
            parent: n.parent.clone(),
            suspended: n.spec.suspend,
            file: n.file.clone(),
        })
        .collect();
    let graph = Graph::new(inputs)
        .map_err(|errs| AppError::Invalid(errs.iter().map(|e| e.to_string()).collect()))?;
    let selection = graph
        .select(&settings.only)
        .map_err(|errs| AppError::Invalid(errs.iter().map(|e| e.to_string()).collect()))?;
    tracing::debug!(
        "loaded {} Kustomizations in {:?}",
        fleet.nodes.len(),
        started.elapsed()
    );
    Ok(Loaded {
        fleet,
        graph,
        selection,
    })
}

/// Prints warnings to stderr, one per line.
pub fn print_warnings(fleet: &Fleet) {
    for w in &fleet.warnings {
        eprintln!("warning: {w}");
    }
}
