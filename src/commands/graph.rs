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
    let out = match args.output {
        GraphFormat::Dot => graph::dot(&loaded.fleet, &loaded.graph, &loaded.selection),
        GraphFormat::Mermaid => graph::mermaid(&loaded.fleet, &loaded.graph, &loaded.selection),
    };
    print!("{out}");
    Ok(())
}
