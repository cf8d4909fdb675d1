//! `build --name NS/NAME`: the final multi-document YAML one Kustomization would apply, like
//! `flux build kustomization`. Secret values, and values substituted from Secrets, are masked
//! unless `--show-secrets`.

use anyhow::{Context, anyhow};

use crate::build::postbuild::{self, PostBuildOptions};
use crate::cli::BuildArgs;
use crate::exit::AppError;
use crate::model::KsId;
use crate::options::FleetSettings;

/// Runs `build`.
pub async fn run(args: &BuildArgs) -> Result<(), AppError> {
    let id = KsId::parse(&args.name)
        .with_context(|| format!("--name {}: expected NAMESPACE/NAME", args.name))?;
    let mut settings = FleetSettings::resolve(&args.fleet)?;
    settings.only = vec![id.clone()];
    let loaded = super::load_fleet(&settings).await?;
    super::print_warnings(&loaded.fleet);
    let node = loaded.fleet.nodes.get(&id).ok_or_else(|| {
        anyhow!(
            "Kustomization {id} not found in {}",
            args.fleet.path.display()
        )
    })?;
    let mut objects: Vec<serde_json::Value> =
        node.objects.iter().map(|m| m.object.clone()).collect();
    objects.extend(node.flux_objects.iter().map(|m| m.object.clone()));
    if !args.show_secrets {
        let masked = node.vars.masked();
        if let Some(raw) = node.raw.as_ref().filter(|_| !node.vars.secret.is_empty()) {
            let rebuilt = postbuild::post_build(
                &raw.output,
                &PostBuildOptions {
                    owner: Some(&node.id),
                    spec: Some(&node.spec),
                    vars: &masked,
                    strict: false,
                    strip_origin: raw.strip_origin,
                    origin_map: raw.origin_map.as_ref(),
                },
            )
            .map_err(anyhow::Error::from)?;
            objects = rebuilt
                .into_iter()
                .map(|mut m| {
                    postbuild::unmask_tokens(&mut m.object);
                    m.object
                })
                .collect();
        }
        objects = objects.iter().map(postbuild::mask_secret).collect();
    }
    print!(
        "{}",
        crate::yaml::to_multi(&objects).map_err(anyhow::Error::from)?
    );
    Ok(())
}
