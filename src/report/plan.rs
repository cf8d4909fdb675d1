//! The plan: a serialisable description of what `apply` would do (waves, per-Kustomization path,
//! source, dependencies, objects by kind, health gates with Flux's defaults, substitution
//! variables with Secret values masked, the critical path), and its text rendering.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::build::postbuild::MASK;
use crate::graph::Graph;
use crate::load::{Fleet, Node, display_path};
use crate::model::KsId;
use crate::problems::{Problem, Problems};

/// The whole plan (`-o json|yaml` prints exactly this).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// PATH as given.
    pub path: String,
    /// Number of selected Kustomizations.
    pub kustomizations: usize,
    /// Number of selected HelmReleases.
    pub helm_releases: usize,
    /// Number of objects to apply.
    pub objects: usize,
    /// Topological levels, first to last.
    pub waves: Vec<WaveReport>,
    /// The longest dependency chain.
    pub critical_path: Vec<String>,
    /// Objects directly under PATH that no Kustomization applies.
    pub unowned_objects: Vec<String>,
    /// Every source of the selection: how it maps, what it resolved to, where it came from.
    pub sources: Vec<SourceReport>,
    /// Every problem of the selection (file, Kustomization, cause): those Kustomizations are
    /// marked `failures` and what waits on them `blockedByFailure`.
    pub failures: Vec<Problem>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// One source of the plan.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    /// `Kind/namespace/name`.
    pub source: String,
    /// How it maps to a directory.
    pub mapping: crate::load::Mapping,
    /// The fetched artifact's URL (fetched sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What was asked (URL and reference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
    /// Flux's revision string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// sha256 of the artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `local`, `cache`, `bundle` or `network`.
    pub origin: String,
}

/// One wave.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveReport {
    /// Its index, from 0.
    pub wave: usize,
    /// Its Kustomizations.
    pub kustomizations: Vec<KsReport>,
    /// Its HelmReleases.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub helm_releases: Vec<HelmReport>,
}

/// One HelmRelease in the plan.
#[derive(Debug, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct HelmReport {
    /// `HelmRelease/namespace/name`.
    pub id: String,
    /// Defining file.
    pub file: String,
    /// The Kustomization whose build holds it (it starts once that one has applied).
    pub kustomization: String,
    /// `chart`/`chartRef` source.
    pub source: String,
    /// Chart name and version as rendered (empty when not rendered).
    pub chart: String,
    /// Requested version constraint (chart.spec.version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Helm release name.
    pub release_name: String,
    /// Namespace of its objects.
    pub release_namespace: String,
    /// Namespace of its release Secrets.
    pub storage_namespace: String,
    /// dependsOn (HelmReleases).
    pub depends_on: Vec<String>,
    /// spec.suspend.
    pub suspended: bool,
    /// Objects of the rendered manifest (hooks apart).
    pub object_count: usize,
    /// Objects by kind.
    pub kinds: BTreeMap<String, usize>,
    /// Objects (`Kind/namespace/name`).
    pub objects: Vec<String>,
    /// Hooks (`Kind/name: events`).
    pub hooks: Vec<String>,
    /// Why it was not rendered, or what the render left out.
    pub notes: Vec<String>,
    /// Why it fails (a spec that does not decode, a chart source the fleet lacks, …): not
    /// installed.
    pub failures: Vec<String>,
    /// The failing Kustomizations and HelmReleases it waits on.
    pub blocked_by_failure: Vec<String>,
}

/// One Kustomization in the plan.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KsReport {
    /// `namespace/name`.
    pub id: String,
    /// Defining file.
    pub file: String,
    /// spec.path as written.
    pub path: String,
    /// Directory built; null for an ExternalArtifact assembled from an ArtifactGenerator (its
    /// temporary directory is gone once the command ends).
    pub dir: Option<String>,
    /// `Kind/namespace/name` of the source.
    pub source: String,
    /// How the source maps to a directory (null: it could not be mapped).
    pub source_mapping: Option<crate::load::Mapping>,
    /// dependsOn (namespaces defaulted).
    pub depends_on: Vec<String>,
    /// The Kustomization whose build contains this one.
    pub parent: Option<String>,
    /// Kustomizations found in this one's build.
    pub children: Vec<String>,
    /// spec.suspend.
    pub suspended: bool,
    /// Suspended Kustomizations this one waits on (it will not be applied).
    pub blocked_by: Vec<String>,
    /// Why this Kustomization fails to load, build or validate (empty: it does not).
    pub failures: Vec<String>,
    /// Failing Kustomizations this one waits on (dependsOn or parent): it cannot be applied
    /// until they are fixed.
    pub blocked_by_failure: Vec<String>,
    /// spec.kubeConfig is set: another cluster, refused by apply.
    pub remote_cluster: bool,
    /// spec.prune.
    pub prune: bool,
    /// spec.interval as written.
    pub interval: String,
    /// Health gates.
    pub health: HealthReport,
    /// Number of objects to apply.
    pub object_count: usize,
    /// Objects to apply, by kind.
    pub kinds: BTreeMap<String, usize>,
    /// Objects to apply (`Kind/namespace/name`).
    pub objects: Vec<String>,
    /// Flux objects that need a Flux controller: not applied.
    pub not_applied: Vec<String>,
    /// Objects apply would prune (listed only when plan reads a cluster).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_prune: Vec<String>,
    /// Variables the build references, with their values (Secret-backed ones masked, `<unset>`
    /// when nothing defines them).
    pub variables: BTreeMap<String, String>,
}

/// Health gates of one Kustomization, defaults applied as Flux applies them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// spec.wait: every applied object is checked.
    pub wait: bool,
    /// spec.healthChecks (`Kind/namespace/name`).
    pub health_checks: Vec<String>,
    /// Number of spec.healthCheckExprs.
    pub health_check_exprs: usize,
    /// Effective timeout, Go format.
    pub timeout: String,
    /// Where the timeout comes from (`spec.timeout`, or the default rule).
    pub timeout_source: String,
}

/// What blocks a Kustomization: suspended and failing ones upstream, and its own failures.
struct Blocks {
    suspended: BTreeMap<KsId, BTreeSet<KsId>>,
    failing: BTreeMap<KsId, BTreeSet<KsId>>,
    causes: BTreeMap<KsId, Vec<String>>,
}

fn names(set: Option<&BTreeSet<KsId>>) -> Vec<String> {
    set.into_iter().flatten().map(|b| b.to_string()).collect()
}

fn ks_report(n: &Node, blocks: &Blocks, decrypted: &[String]) -> KsReport {
    let mut kinds = BTreeMap::new();
    for m in &n.objects {
        *kinds.entry(m.meta().1.to_string()).or_insert(0) += 1;
    }
    let timeout = n.spec.effective_timeout();
    let timeout_source = match &n.spec.timeout {
        Some(t) if t.value() >= std::time::Duration::from_secs(30) => format!("spec.timeout {t}"),
        Some(t) => format!("spec.timeout {t}, raised to Flux's 30s floor"),
        None => format!("default: interval {} − 30s, at least 30s", n.spec.interval),
    };
    let referenced = match (&n.spec.post_build, &n.raw) {
        (Some(_), Some(raw)) => {
            crate::build::envsubst::referenced_vars(&raw.output).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let variables = referenced
        .into_iter()
        .map(|k| {
            let v = match n.vars.values.get(&k) {
                Some(_) if n.vars.secret.contains(&k) => MASK.to_string(),
                Some(v) => crate::redact::redact(v, decrypted),
                None => "<unset>".to_string(),
            };
            (k, v)
        })
        .collect();
    KsReport {
        id: n.id.to_string(),
        file: n.file.clone(),
        path: n.spec.path.clone().unwrap_or_default(),
        dir: (n.mapping != Some(crate::load::Mapping::ArtifactGenerator))
            .then(|| display_path(&n.dir())),
        source: n.source.to_string(),
        source_mapping: n.mapping.clone(),
        depends_on: n
            .spec
            .dependencies(&n.id.namespace)
            .iter()
            .map(|d| d.to_string())
            .collect(),
        parent: n.parent.as_ref().map(|p| p.to_string()),
        children: n.children.iter().map(|c| c.to_string()).collect(),
        suspended: n.spec.suspend,
        blocked_by: names(blocks.suspended.get(&n.id)),
        failures: blocks.causes.get(&n.id).cloned().unwrap_or_default(),
        blocked_by_failure: names(blocks.failing.get(&n.id)),
        remote_cluster: n.spec.kube_config.is_some(),
        prune: n.spec.prune,
        interval: n.spec.interval.to_string(),
        health: HealthReport {
            wait: n.spec.wait,
            health_checks: n
                .spec
                .health_checks
                .iter()
                .map(|h| {
                    let mut h = h.clone();
                    if h.api_version.as_deref().unwrap_or("").is_empty() {
                        h.api_version = Some("apps/v1".into());
                    }
                    if crate::model::is_flux_api(h.api_version.as_deref().unwrap_or("")) {
                        format!("{h} (needs a Flux controller: not waited on)")
                    } else {
                        h.to_string()
                    }
                })
                .collect(),
            health_check_exprs: n.spec.health_check_exprs.len(),
            timeout: crate::model::duration::format_go(timeout),
            timeout_source,
        },
        object_count: n.objects.len(),
        kinds,
        objects: {
            let secrets =
                crate::redact::secret_values(&[], n.vars.secret_values().chain(decrypted));
            n.objects
                .iter()
                .map(|m| crate::redact::redact(&m.subject(), &secrets))
                .collect()
        },
        not_applied: n
            .flux_objects
            .iter()
            .filter(|m| {
                let (api, kind, _, _) = m.meta();
                !m.is_flux_kustomization() && !crate::helm::is_helm_release_kind(api, kind)
            })
            .map(|m| m.subject())
            .collect(),
        variables,
        would_prune: Vec::new(),
    }
}

/// Builds the plan of the `selection` of `fleet`, failing Kustomizations marked; `helm`
/// holds the selected HelmReleases' reports by identity.
pub fn plan(
    fleet: &Fleet,
    graph: &Graph,
    selection: &BTreeSet<KsId>,
    mut helm: BTreeMap<KsId, HelmReport>,
    problems: &Problems,
) -> PlanReport {
    let blocks = Blocks {
        suspended: graph.blocked_by_suspension(),
        failing: graph.blocked_by(&problems.failed),
        causes: problems.by_kustomization(),
    };
    let helm_count = helm.len();
    let helm_ids: BTreeSet<KsId> = helm.keys().cloned().collect();
    for (id, h) in helm.iter_mut() {
        h.failures = blocks.causes.get(id).cloned().unwrap_or_default();
        h.blocked_by_failure = names(blocks.failing.get(id));
    }
    let reported: BTreeSet<KsId> = selection.union(&helm_ids).cloned().collect();
    let waves: Vec<WaveReport> = graph
        .waves
        .iter()
        .map(|w| {
            w.iter()
                .filter(|id| selection.contains(*id) || helm_ids.contains(*id))
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .enumerate()
        .map(|(i, w)| WaveReport {
            wave: i,
            kustomizations: w
                .iter()
                .filter(|id| !id.is_helm_release())
                .map(|id| ks_report(&fleet.nodes[*id], &blocks, &fleet.decrypted))
                .collect(),
            helm_releases: w.iter().filter_map(|id| helm.remove(*id)).collect(),
        })
        .collect();
    let objects = waves
        .iter()
        .flat_map(|w| &w.kustomizations)
        .map(|k| k.object_count)
        .sum::<usize>()
        + waves
            .iter()
            .flat_map(|w| &w.helm_releases)
            .map(|h| h.object_count)
            .sum::<usize>();
    let critical = graph.critical_path(selection);
    PlanReport {
        path: fleet.path.display().to_string(),
        helm_releases: helm_count,
        kustomizations: selection.len(),
        objects,
        waves,
        critical_path: critical.iter().map(|k| k.to_string()).collect(),
        unowned_objects: fleet.unowned.iter().map(|m| m.subject()).collect(),
        sources: source_reports(fleet, selection),
        failures: problems.within(&reported).cloned().collect(),
        warnings: fleet.warnings.clone(),
    }
}

/// The state flags of a Kustomization or HelmRelease line (`  [FAILED…; BLOCKED by …]`), or
/// nothing: failing (`failed`: what is not done then), blocked by a failure, suspended (`held`:
/// what is not done then), then `more`.
fn flags(
    failed: Option<&str>,
    blocked_by_failure: &[String],
    held: Option<&str>,
    more: Vec<String>,
) -> String {
    let mut flags = Vec::new();
    if let Some(what) = failed {
        flags.push(format!("FAILED: {what}, see below"));
    }
    if !blocked_by_failure.is_empty() {
        flags.push(format!(
            "BLOCKED by failing {}",
            blocked_by_failure.join(", ")
        ));
    }
    if let Some(what) = held {
        flags.push(format!("SUSPENDED: {what}"));
    }
    flags.extend(more);
    if flags.is_empty() {
        String::new()
    } else {
        format!("  [{}]", flags.join("; "))
    }
}

fn render_helm(s: &mut String, h: &HelmReport) {
    let flag = flags(
        (!h.failures.is_empty()).then_some("not installed"),
        &h.blocked_by_failure,
        h.suspended.then_some("not installed"),
        Vec::new(),
    );
    let _ = writeln!(s, "  {}{flag}", h.id);
    let _ = writeln!(s, "      file       {}", h.file);
    let _ = writeln!(s, "      after      {} (applies it)", h.kustomization);
    let chart = if h.chart.is_empty() {
        "(not rendered)"
    } else {
        &h.chart
    };
    let version = h
        .version
        .as_deref()
        .map(|v| format!(", version {v}"))
        .unwrap_or_default();
    let _ = writeln!(s, "      chart      {chart} from {}{version}", h.source);
    let _ = writeln!(
        s,
        "      release    {} in {} (storage {})",
        h.release_name, h.release_namespace, h.storage_namespace
    );
    if !h.depends_on.is_empty() {
        let _ = writeln!(s, "      dependsOn  {}", h.depends_on.join(", "));
    }
    let kinds: Vec<String> = h.kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let _ = writeln!(
        s,
        "      objects    {}{}",
        h.object_count,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        }
    );
    if !h.hooks.is_empty() {
        let _ = writeln!(s, "      hooks      {}", h.hooks.join(", "));
    }
    for n in &h.notes {
        let _ = writeln!(s, "      note       {n}");
    }
}

/// The sources of the selected Kustomizations, each once.
fn source_reports(fleet: &Fleet, selection: &BTreeSet<KsId>) -> Vec<SourceReport> {
    let records = fleet.fetcher.records();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in selection.iter().filter_map(|id| fleet.nodes.get(id)) {
        // A source that could not be mapped is listed with its Kustomization's failure.
        let Some(mapping) = n.mapping.clone() else {
            continue;
        };
        let key = n.source.to_string();
        if !seen.insert(key.clone()) {
            continue;
        }
        let record = records.iter().find(|r| r.used_by.contains(&key));
        out.push(SourceReport {
            source: key,
            mapping,
            url: record.map(|r| r.url.clone()),
            resolution: record.map(|r| r.resolution.clone()),
            revision: record.map(|r| r.revision.clone()),
            digest: record.map(|r| r.digest.clone()),
            origin: record.map_or("local".to_string(), |r| r.origin.to_string()),
        });
    }
    out
}

/// `1 wave`, `7 waves`.
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Renders the plan as text.
pub fn render_text(p: &PlanReport) -> String {
    let mut s = String::new();
    let releases = if p.helm_releases > 0 {
        format!(", {}", plural(p.helm_releases, "HelmRelease"))
    } else {
        String::new()
    };
    let failed = p
        .waves
        .iter()
        .flat_map(|w| &w.kustomizations)
        .filter(|k| !k.failures.is_empty())
        .count();
    let _ = writeln!(
        s,
        "Plan for {}: {}{}{releases}, {}, {}",
        p.path,
        plural(p.kustomizations, "Kustomization"),
        if failed > 0 {
            format!(" ({failed} failed)")
        } else {
            String::new()
        },
        plural(p.objects, "object"),
        plural(p.waves.len(), "wave")
    );
    for w in &p.waves {
        let hr = if w.helm_releases.is_empty() {
            String::new()
        } else {
            format!(", {}", plural(w.helm_releases.len(), "HelmRelease"))
        };
        let _ = writeln!(
            s,
            "\nWave {} ({}{hr})",
            w.wave,
            plural(w.kustomizations.len(), "Kustomization")
        );
        for h in &w.helm_releases {
            render_helm(&mut s, h);
        }
        for k in &w.kustomizations {
            let mut more = Vec::new();
            if !k.blocked_by.is_empty() {
                more.push(format!("BLOCKED by suspended {}", k.blocked_by.join(", ")));
            }
            if k.remote_cluster {
                more.push("REMOTE CLUSTER (spec.kubeConfig): apply refuses it".into());
            }
            let flags = flags(
                (!k.failures.is_empty()).then_some("not planned"),
                &k.blocked_by_failure,
                k.suspended.then_some("not applied"),
                more,
            );
            let _ = writeln!(s, "  {}{}", k.id, flags);
            let _ = writeln!(s, "      file       {}", k.file);
            let path = if k.path.is_empty() { "./" } else { &k.path };
            // The directory only when it is not just the path as written (emulated artifacts,
            // --source mappings, sources outside the current directory).
            match &k.dir {
                None => {
                    let _ = writeln!(
                        s,
                        "      path       {path} (in the artifact the fleet's ArtifactGenerator assembles)"
                    );
                }
                Some(dir)
                    if dir.trim_end_matches('/')
                        == path.trim_start_matches("./").trim_end_matches('/') =>
                {
                    let _ = writeln!(s, "      path       {path}");
                }
                Some(dir) => {
                    let _ = writeln!(s, "      path       {path} ({dir})");
                }
            }
            let _ = writeln!(s, "      source     {}", k.source);
            if !k.depends_on.is_empty() {
                let _ = writeln!(s, "      dependsOn  {}", k.depends_on.join(", "));
            }
            if let Some(p) = &k.parent {
                let _ = writeln!(s, "      parent     {p} (applied by it)");
            }
            let kinds: Vec<String> = k
                .kinds
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect();
            let _ = writeln!(
                s,
                "      objects    {}{}",
                k.object_count,
                if kinds.is_empty() {
                    String::new()
                } else {
                    format!(": {}", kinds.join(", "))
                }
            );
            let h = &k.health;
            let gate = if h.wait {
                "wait: every applied object".to_string()
            } else if !h.health_checks.is_empty() {
                format!("healthChecks: {}", h.health_checks.join(", "))
            } else {
                "none (Ready once applied)".to_string()
            };
            let exprs = if h.health_check_exprs > 0 {
                format!(", {} healthCheckExprs", h.health_check_exprs)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "      health     {gate}{exprs}; timeout {} ({})",
                h.timeout, h.timeout_source
            );
            if !k.variables.is_empty() {
                let vars: Vec<String> = k
                    .variables
                    .iter()
                    .map(|(a, b)| format!("{a}={b}"))
                    .collect();
                let _ = writeln!(s, "      variables  {}", vars.join(", "));
            }
            if !k.would_prune.is_empty() {
                let _ = writeln!(
                    s,
                    "      prune      {} (no longer in the build)",
                    k.would_prune.join(", ")
                );
            }
            if !k.not_applied.is_empty() {
                let _ = writeln!(
                    s,
                    "      needs a Flux controller, not applied: {}",
                    k.not_applied.join(", ")
                );
            }
        }
    }
    if !p.critical_path.is_empty() {
        let _ = writeln!(
            s,
            "\nCritical path ({}): {}",
            plural(p.critical_path.len(), "Kustomization"),
            p.critical_path.join(" → ")
        );
    }
    let fetched: Vec<&SourceReport> = p.sources.iter().filter(|x| x.revision.is_some()).collect();
    if !fetched.is_empty() {
        let _ = writeln!(s, "\nFetched sources:");
        for x in fetched {
            let _ = writeln!(
                s,
                "  {}  {} {} ({})",
                x.source,
                x.url.as_deref().unwrap_or(""),
                x.revision.as_deref().unwrap_or(""),
                x.origin
            );
        }
    }
    if !p.failures.is_empty() {
        let failed: BTreeSet<&KsId> = p
            .failures
            .iter()
            .filter_map(|f| f.kustomization.as_ref())
            .collect();
        let releases = failed.iter().filter(|k| k.is_helm_release()).count();
        let mut whom = plural(failed.len() - releases, "Kustomization");
        if releases > 0 {
            whom = format!("{whom} and {}", plural(releases, "HelmRelease"));
        }
        let _ = writeln!(
            s,
            "\nFailures ({} in {whom}; everything else is planned):",
            p.failures.len()
        );
        for f in &p.failures {
            let ks = f
                .kustomization
                .as_ref()
                .map_or("(no identity)".to_string(), |k| k.to_string());
            let _ = writeln!(s, "  ✗ {ks}  {}\n      {}", f.file, f.cause);
        }
    }
    if !p.warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings:");
        for w in &p.warnings {
            let _ = writeln!(s, "  ! {w}");
        }
    }
    s
}
