//! Resolves raw flags (`cli.rs`) into validated settings: parsed `--source` mappings and `--only`
//! identities, the kustomize binary, build parallelism. Every flag error surfaces here, before
//! any build runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::build::{Builder, Kustomize};
use crate::cli::FleetArgs;
use crate::load::LoadOptions;
use crate::model::{GoDuration, KsId, SourceKey};

/// A Go duration flag that must be more than zero (a bound of zero would fail everything at once;
/// kubectl's "0 means none" has no place where every wait must end).
pub fn positive_duration(flag: &str, value: &str) -> anyhow::Result<std::time::Duration> {
    let d = GoDuration::parse(value)
        .map_err(|e| anyhow::anyhow!("{flag} {value}: {e}"))?
        .value();
    if d.is_zero() {
        bail!("{flag} {value}: must be more than 0");
    }
    Ok(d)
}

/// `4Gi`, `512Mi`, `64Ki` or a number of bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, shift) = [("Gi", 30), ("Mi", 20), ("Ki", 10)]
        .iter()
        .find_map(|(suffix, shift)| s.strip_suffix(suffix).map(|n| (n, *shift)))
        .unwrap_or((s, 0));
    num.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Validated fleet settings.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// What the load stage needs.
    pub load: LoadOptions,
    /// `--only` selection (empty: everything).
    pub only: Vec<KsId>,
    /// The build runner.
    pub builder: Builder,
    /// `--chart` and `--helm-bin`.
    pub helm: crate::helm::HelmSettings,
}

impl FleetSettings {
    /// Validates `args`.
    pub fn resolve(args: &FleetArgs) -> anyhow::Result<Self> {
        let mut sources = BTreeMap::new();
        for s in &args.sources {
            let (key, dir) = s
                .split_once('=')
                .with_context(|| format!("--source {s}: expected KIND/NAMESPACE/NAME=DIR"))?;
            let key = SourceKey::parse(key)
                .with_context(|| format!("--source {s}: expected KIND/NAMESPACE/NAME=DIR"))?;
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                bail!("--source {s}: {} is not a directory", dir.display());
            }
            sources.insert(key, dir);
        }
        let only = args
            .only
            .iter()
            .map(|o| KsId::parse(o).with_context(|| format!("--only {o}: expected NAMESPACE/NAME")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !args.path.is_dir() {
            bail!("{}: no such directory", args.path.display());
        }
        let mirrors = args
            .registry_mirrors
            .iter()
            .map(|m| {
                crate::sources::Mirror::parse(m)
                    .with_context(|| format!("--registry-mirror {m}: expected FROM=TO"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(d) = &args.from
            && !d.join(crate::sources::store::LOCK_FILE).is_file()
        {
            bail!(
                "--from {}: no {} there; make the bundle with `kubectl flux-order pull PATH --to {}`",
                d.display(),
                crate::sources::store::LOCK_FILE,
                d.display()
            );
        }
        let timeout = positive_duration("--build-timeout", &args.build_timeout)?;
        let memory = parse_size(&args.build_memory_limit)
            .filter(|m| *m > 0)
            .with_context(|| {
                format!(
                    "--build-memory-limit {}: expected a size such as 4Gi, 512Mi or 1000000",
                    args.build_memory_limit
                )
            })?;
        let kustomize = Kustomize::detect(args.kustomize_bin.as_deref())?
            .with_limits(crate::build::kustomize::Limits { timeout, memory });
        let jobs = match args.build_jobs {
            Some(0) => bail!("--build-jobs must be at least 1"),
            Some(n) => n,
            None => Builder::default_jobs(),
        };
        let charts = crate::helm::parse_chart_flags(&args.charts).map_err(anyhow::Error::msg)?;
        // SOPS age keys, as sops itself finds them: the files given, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY.
        let mut age_keys = crate::decrypt::Keyring::default();
        let mut files: Vec<(PathBuf, String)> = args
            .age_key_file
            .iter()
            .map(|f| (f.clone(), format!("--age-key-file {}", f.display())))
            .collect();
        if let Some(f) = std::env::var_os("SOPS_AGE_KEY_FILE").filter(|f| !f.is_empty()) {
            files.push((PathBuf::from(&f), "SOPS_AGE_KEY_FILE".to_string()));
        }
        for (f, source) in files {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("{source}: cannot read {}", f.display()))?;
            age_keys.add_text(&text, &source)?;
        }
        if let Ok(k) = std::env::var("SOPS_AGE_KEY")
            && !k.trim().is_empty()
        {
            age_keys.add_text(&k, "SOPS_AGE_KEY")?;
        }
        Ok(FleetSettings {
            helm: crate::helm::HelmSettings {
                charts,
                helm_bin: args.helm_bin.clone(),
            },
            load: LoadOptions {
                age_keys,
                path: args.path.clone(),
                scan: args.scan,
                sources,
                strict: args.strict_substitute,
                cluster_vars: None,
                fetch: crate::sources::FetchOptions {
                    offline: args.offline,
                    from: args.from.clone(),
                    mirrors,
                    cache: None,
                    cluster: None,
                },
            },
            only,
            builder: Builder::new(kustomize, jobs)
                .context("creating a temporary build directory")?
                .batching(!args.no_batch),
        })
    }
}
