//! `build --name NS/NAME`: the final multi-document YAML one Kustomization would apply, like
//! `flux build kustomization`. Secret values, and values substituted from Secrets, are masked
//! unless `--show-secrets`.

use anyhow::{Context, anyhow};

use crate::build::postbuild;
use crate::cli::BuildArgs;
use crate::exit::AppError;
use crate::model::KsId;
use crate::options::FleetSettings;

/// Runs `build`.
pub async fn run(args: &BuildArgs) -> Result<(), AppError> {
    let (wants_helm, name) = match args.name.strip_prefix("HelmRelease/") {
        Some(rest) => (true, rest),
        None => (false, args.name.as_str()),
    };
    let id = KsId::parse(name).with_context(|| {
        format!(
            "--name {}: expected NAMESPACE/NAME (or HelmRelease/NAMESPACE/NAME)",
            args.name
        )
    })?;
    let settings = FleetSettings::resolve(&args.fleet)?;
    let loaded = super::load_fleet(&settings).await?;
    super::print_warnings(&loaded.fleet);
    let hr = KsId::helm_release(&id.namespace, &id.name);
    if wants_helm || (!loaded.fleet.nodes.contains_key(&id) && loaded.releases.contains_key(&hr)) {
        let Some(rel) = loaded.releases.get(&hr) else {
            return Err(anyhow!(
                "HelmRelease {id} not found in {}",
                args.fleet.path.display()
            )
            .into());
        };
        return build_release(rel, &loaded, &settings, args.show_secrets).await;
    }
    let node = loaded.fleet.nodes.get(&id).ok_or_else(|| {
        let known: Vec<String> = loaded.fleet.nodes.keys().map(|k| k.to_string()).collect();
        let hint = match known.len() {
            0 => " (it has no Kustomization)".to_string(),
            n if n <= 12 => format!(" (it has: {})", known.join(", ")),
            n => format!(
                " (it has {n} Kustomizations: {}, …)",
                known[..12].join(", ")
            ),
        };
        anyhow!(
            "--name {id}: no such Kustomization in {}{hint}",
            args.fleet.path.display()
        )
    })?;
    if loaded.problems.failed.contains(&id) {
        return Err(AppError::Invalid(
            loaded.problems.messages(&loaded.selection),
        ));
    }
    let mut objects: Vec<serde_json::Value> = node.objects.iter().map(|m| m.object()).collect();
    objects.extend(node.flux_objects.iter().map(|m| m.object()));
    if !args.show_secrets {
        // Values from Secrets (substituted, in Secret data) and values that were SOPS-encrypted
        // (in any kind of object) print as `***`.
        let manifests = match node.masked_build() {
            Some(masked) => {
                let (payload, flux) = masked.map_err(anyhow::Error::from)?;
                payload.into_iter().chain(flux).collect()
            }
            None => node
                .objects
                .iter()
                .chain(&node.flux_objects)
                .cloned()
                .collect::<Vec<_>>(),
        };
        objects = manifests
            .iter()
            .map(|m| {
                let mut o = postbuild::mask_secret(&m.masked());
                postbuild::unmask_tokens(&mut o);
                crate::redact::redact_value(&mut o, &loaded.fleet.decrypted);
                o
            })
            .collect();
    }
    print!(
        "{}",
        crate::yaml::to_multi(&objects).map_err(anyhow::Error::from)?
    );
    loaded.partial()
}

/// The manifest a HelmRelease renders to (hooks after the manifest), post-rendered as
/// helm-controller would, like `helm template` after Flux's post-renderers. Secrets and values
/// that came from Secrets are masked unless `show_secrets`.
async fn build_release(
    rel: &crate::helm::Release,
    loaded: &super::Loaded,
    settings: &FleetSettings,
    show_secrets: bool,
) -> Result<(), AppError> {
    let helm = crate::helm::render::Helm::detect(settings.helm.helm_bin.as_deref())
        .map_err(|e| AppError::Invalid(vec![format!("{}: {}: {e}", rel.file, rel.id.label())]))?;
    let values = crate::helm::fleet_value_sources(&loaded.fleet, [rel]);
    let (rendered, notes, secrets) =
        crate::helm::install::render_offline(&helm, settings.builder.kustomize(), &values, rel)
            .await
            .map_err(|e| {
                AppError::Invalid(vec![format!("{}: {}: {e}", rel.file, rel.id.label())])
            })?;
    for n in notes {
        eprintln!("warning: {}: {n}", rel.id.label());
    }
    let mut objects = rendered.objects;
    objects.extend(rendered.hooks.into_iter().map(|h| h.object));
    if !show_secrets {
        objects = objects.iter().map(postbuild::mask_secret).collect();
        for o in &mut objects {
            crate::helm::install::mask_value(o, &secrets);
        }
    }
    let text = crate::yaml::to_multi(&objects).map_err(anyhow::Error::from)?;
    print!("{text}");
    Ok(())
}
