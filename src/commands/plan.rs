//! `plan`: load, build and validate a fleet and print its waves, objects and health gates.

use crate::cli::{PlanArgs, PlanFormat};
use crate::exit::AppError;
use crate::options::FleetSettings;
use crate::report::plan;

/// Runs `plan`.
pub async fn run(args: &PlanArgs) -> Result<(), AppError> {
    let settings = FleetSettings::resolve(&args.fleet)?;
    let loaded = super::load_fleet(&settings).await?;
    let helm = super::helm_reports(&loaded, &settings).await;
    let mut report = plan::plan(
        &loaded.fleet,
        &loaded.graph,
        &loaded.selection,
        helm,
        &loaded.problems,
    );
    if args.cluster.kubeconfig.is_some() || args.cluster.context.is_some() {
        let cluster = super::apply::connect(&args.cluster).await?;
        for k in report
            .waves
            .iter_mut()
            .flat_map(|w| w.kustomizations.iter_mut())
        {
            let Some(id) = crate::model::KsId::parse(&k.id) else {
                continue;
            };
            let node = &loaded.fleet.nodes[&id];
            if !node.spec.prune || node.failed {
                continue;
            }
            let objects: Vec<serde_json::Value> = node.objects.iter().map(|m| m.object()).collect();
            k.would_prune = super::diff::stale(&cluster, &id, &objects).await?;
        }
    }
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
    loaded.partial()
}
