//! `plan`: load, build and validate a fleet and print its waves, objects and health gates.

use crate::cli::{PlanArgs, PlanFormat};
use crate::exit::AppError;
use crate::options::FleetSettings;
use crate::report::plan;

/// Runs `plan`.
pub async fn run(args: &PlanArgs) -> Result<(), AppError> {
    let settings = FleetSettings::resolve(&args.fleet)?;
    let loaded = super::load_fleet(&settings).await?;
    let report = plan::plan(&loaded.fleet, &loaded.graph, &loaded.selection);
    let out = match args.output {
        PlanFormat::Text => plan::render_text(&report),
        PlanFormat::Json => {
            serde_json::to_string_pretty(&report).map_err(anyhow::Error::from)? + "\n"
        }
        PlanFormat::Yaml => crate::yaml::to_string(&report).map_err(anyhow::Error::from)?,
    };
    if args.output != PlanFormat::Text {
        super::print_warnings(&loaded.fleet);
    }
    print!("{out}");
    Ok(())
}
