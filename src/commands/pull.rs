//! `pull`: resolves every source and HelmRelease chart the selection needs (plan's discovery,
//! including children found through fetched sources) and writes them into a bundle directory
//! with a lock file, for `--from DIR` where there is no network.

use crate::cli::PullArgs;
use crate::exit::AppError;
use crate::options::FleetSettings;

/// Runs `pull`.
pub async fn run(args: &PullArgs) -> Result<(), AppError> {
    let settings = FleetSettings::resolve(&args.fleet)?;
    if settings
        .load
        .fetch
        .from
        .as_ref()
        .and_then(|f| f.canonicalize().ok())
        .is_some_and(|f| args.to.canonicalize().ok() == Some(f))
    {
        return Err(anyhow::anyhow!("--from and --to name the same directory").into());
    }
    let loaded = super::load_fleet(&settings).await?;
    let fetcher = loaded.fleet.fetcher.clone();
    let mut errors = Vec::new();
    let mut charts = Vec::new();
    for id in &loaded.selection {
        let node = &loaded.fleet.nodes[id];
        for m in &node.flux_objects {
            let (api, kind, ns, name) = m.meta();
            if kind != "HelmRelease" || crate::model::api_group(api) != "helm.toolkit.fluxcd.io" {
                continue;
            }
            let spec = m.object().get("spec").cloned().unwrap_or_default();
            let hr = format!("{ns}/{name}");
            match fetcher.resolve_chart(&hr, ns, &spec).await {
                Ok(c) => charts.push(format!(
                    "HelmRelease {hr}: chart {} {} from {} {} ({}, {})",
                    c.name,
                    c.flux_version(),
                    c.source,
                    c.revision,
                    c.path.extension().map_or("directory", |_| "archive"),
                    c.origin.map_or("local".to_string(), |o| o.to_string())
                )),
                Err(e) => errors.push(format!("{}: Kustomization {id}: {e}", node.file)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Invalid(errors));
    }
    super::print_warnings(&loaded.fleet);
    let (count, bytes) = fetcher
        .write_bundle(&args.to)
        .map_err(|e| anyhow::anyhow!("writing the bundle: {e}"))?;
    for r in fetcher.records() {
        println!(
            "{}  {}  {} ({})",
            r.used_by.join(", "),
            r.url,
            r.revision,
            r.origin
        );
    }
    for c in charts {
        println!("{c}");
    }
    println!(
        "Pulled {count} artifact(s), {:.1} MiB, into {} (lock file {})",
        bytes as f64 / 1048576.0,
        args.to.display(),
        crate::sources::store::LOCK_FILE
    );
    Ok(())
}
