//! `graph`: the dependency graph as DOT or Mermaid.

use crate::cli::{GraphArgs, GraphFormat};
use crate::exit::AppError;
use crate::options::FleetSettings;
use crate::report::graph;

/// Runs `graph`.
pub async fn run(args: &GraphArgs) -> Result<(), AppError> {
    let settings = FleetSettings::resolve(&args.fleet)?;
    let loaded = super::load_fleet(&settings).await?;
    super::print_warnings(&loaded.fleet);
    let helm: std::collections::BTreeMap<_, _> = loaded
        .releases
        .iter()
        .filter(|(id, _)| loaded.helm_selection.contains(*id))
        .map(|(id, r)| (id.clone(), r.clone()))
        .collect();
    let out = match args.output {
        GraphFormat::Dot => graph::dot(
            &loaded.fleet,
            &loaded.graph,
            &loaded.selection,
            &helm,
            &loaded.problems,
        ),
        GraphFormat::Mermaid => graph::mermaid(
            &loaded.fleet,
            &loaded.graph,
            &loaded.selection,
            &helm,
            &loaded.problems,
        ),
    };
    print!("{out}");
    loaded.partial()
}
