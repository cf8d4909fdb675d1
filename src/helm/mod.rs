//! HelmReleases: what helm-controller does, without it. Every `helm.toolkit.fluxcd.io/v2`
//! HelmRelease in a Kustomization's build becomes a unit of the rollout ([`discover`]): it starts
//! once its Kustomization has applied its objects (when Flux would have applied the HelmRelease
//! object) and its own `dependsOn` HelmReleases are Ready. Its chart is resolved ([`chart`]),
//! values composed ([`values`]), rendered by the real Helm 4 and post-rendered as helm-controller
//! does ([`render`]), then installed ([`install`]: CRDs, hooks, server-side apply as
//! `helm-controller`, kstatus wait, Helm's release storage ([`storage`]) so `helm list` shows it
//! and a later Flux adopts it).
//!
//! In: the loaded fleet. Out: units for the graph and the executor; only [`install`] touches the
//! network.

pub mod install;
pub mod render;
pub mod spec;
pub mod storage;
pub mod values;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::load::Fleet;
use crate::model::KsId;
use spec::HelmReleaseSpec;

/// The API version flux-order renders.
pub const API_VERSION: &str = "helm.toolkit.fluxcd.io/v2";

/// Whether (apiVersion, kind) is a Flux HelmRelease's.
pub fn is_helm_release_kind(api_version: &str, kind: &str) -> bool {
    kind == "HelmRelease" && api_version.starts_with("helm.toolkit.fluxcd.io/")
}

/// Where a chart comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    /// A local chart directory or `.tgz` (`--chart`, a path in a mapped source, or fetched).
    Local {
        /// The chart.
        path: PathBuf,
        /// How it was found, for the plan.
        how: String,
        /// The version helm-controller renders it with when it differs from Chart.yaml's (OCI
        /// charts: `<version>+<12 hex of the manifest digest>`).
        version: Option<String>,
    },
    /// Not available here; why, and what would help.
    Unavailable(String),
}

/// One HelmRelease of the fleet.
#[derive(Debug, Clone)]
pub struct Release {
    /// `HelmRelease/namespace/name`.
    pub id: KsId,
    /// The object as its Kustomization's build produced it.
    pub object: Value,
    /// Its spec.
    pub spec: HelmReleaseSpec,
    /// The Kustomization whose build holds it.
    pub owner: KsId,
    /// The file that defines it (for messages).
    pub file: String,
    /// Helm release name.
    pub release_name: String,
    /// Namespace of the release's objects.
    pub release_namespace: String,
    /// Namespace of Helm's release Secrets.
    pub storage_namespace: String,
    /// The chart.
    pub chart: Chart,
    /// `chart`/`chartRef` as the plan shows it (`OCIRepository/flux-system/podinfo`, …).
    pub source: String,
    /// The requested chart version (chart.spec.version), if any.
    pub version: Option<String>,
}

/// Helm-related settings shared by the commands.
#[derive(Debug, Clone, Default)]
pub struct HelmSettings {
    /// `--chart NAMESPACE/NAME=PATH` overrides.
    pub charts: BTreeMap<KsId, PathBuf>,
    /// `--helm-bin`.
    pub helm_bin: Option<PathBuf>,
}

/// A HelmRelease that cannot be installed, found while loading: it fails alone (its dependents
/// wait on it), as a failing Kustomization does.
#[derive(Debug, Clone)]
pub struct HelmProblem {
    /// `HelmRelease/namespace/name` (None: it has no namespace, so no identity).
    pub release: Option<KsId>,
    /// The file that defines it.
    pub file: String,
    /// What is wrong.
    pub cause: String,
    /// The whole message: `FILE: HelmRelease NS/NAME: CAUSE`.
    pub message: String,
}

impl HelmProblem {
    fn new(release: Option<KsId>, file: &str, shown: &str, cause: String) -> HelmProblem {
        HelmProblem {
            release,
            file: file.to_string(),
            message: format!("{file}: HelmRelease {shown}: {cause}"),
            cause,
        }
    }
}

/// What [`discover`] found.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Every HelmRelease with an identity; a broken one with what of its spec decodes
    /// (`dependsOn`, `suspend`) and its chart unavailable, so that the graph holds it.
    pub releases: Vec<Release>,
    /// The broken HelmReleases: why each fails.
    pub problems: Vec<HelmProblem>,
    /// Usage errors (a `--chart` naming no HelmRelease).
    pub errors: Vec<String>,
    /// Things the user should know.
    pub warnings: Vec<String>,
}

/// A stand-in spec for a HelmRelease whose spec does not decode: its `dependsOn` and `suspend`,
/// when those parts decode.
fn placeholder_spec(spec: &Value) -> HelmReleaseSpec {
    let mut v = serde_json::json!({});
    for k in ["dependsOn", "suspend"] {
        if let Some(x) = spec.get(k) {
            v[k] = x.clone();
            if serde_json::from_value::<HelmReleaseSpec>(v.clone()).is_err() {
                v.as_object_mut().map(|m| m.remove(k));
            }
        }
    }
    serde_json::from_value(v).unwrap_or_default()
}

/// Finds every HelmRelease in the fleet's builds. Problems and warnings name the file.
pub fn discover(fleet: &Fleet, settings: &HelmSettings) -> Discovered {
    let mut found = Discovered::default();
    let mut out = Vec::new();
    for node in fleet.nodes.values() {
        for m in &node.flux_objects {
            let (api, kind, ns, name) = m.meta();
            if !is_helm_release_kind(api, kind) {
                continue;
            }
            let file = m
                .origin
                .as_ref()
                .map(|o| crate::load::display_path(&node.dir().join(o)))
                .unwrap_or_else(|| node.file.clone());
            let shown = format!("{}/{}", if ns.is_empty() { "?" } else { ns }, name);
            if ns.is_empty() {
                found.problems.push(HelmProblem::new(
                    None,
                    &file,
                    &shown,
                    "metadata.namespace is not set (Flux never defaults a namespace)".into(),
                ));
                continue;
            }
            let id = KsId::helm_release(ns, name);
            let raw_spec = m.object().get("spec").cloned().unwrap_or(Value::Null);
            let decoded: Result<HelmReleaseSpec, String> = if api != API_VERSION {
                Err(format!("unsupported apiVersion {api}; use {API_VERSION}"))
            } else {
                serde_path_to_error::deserialize(raw_spec.clone()).map_err(|e| format!("spec.{e}"))
            };
            let (spec, (chart, source, version)) = match decoded {
                Ok(spec) => {
                    if spec.service_account_name.is_some() {
                        found.warnings.push(format!("{file}: HelmRelease {shown}: spec.serviceAccountName is not impersonated; flux-order installs with your own credentials"));
                    }
                    if spec
                        .chart
                        .as_ref()
                        .is_some_and(|c| !c.spec.values_files.is_empty())
                    {
                        found.warnings.push(format!("{file}: HelmRelease {shown}: spec.chart.spec.valuesFiles is not supported yet; the chart's own values.yaml is used"));
                    }
                    if spec.storage_namespace.as_deref().is_some_and(|s| s != ns) {
                        found.warnings.push(format!("{file}: HelmRelease {shown}: spec.storageNamespace differs from the HelmRelease's namespace; renders run as installs (Helm's CLI reads history from the release namespace)"));
                    }
                    if spec.chart.is_none() && spec.chart_ref.is_none() {
                        found.problems.push(HelmProblem::new(
                            Some(id.clone()),
                            &file,
                            &shown,
                            "neither spec.chart nor spec.chartRef is set".into(),
                        ));
                    }
                    let chart = resolve_chart(fleet, &id, &spec, settings);
                    (spec, chart)
                }
                Err(cause) => {
                    found.problems.push(HelmProblem::new(
                        Some(id.clone()),
                        &file,
                        &shown,
                        cause.clone(),
                    ));
                    // Kept as a node of the graph, never installed.
                    let unavailable = (Chart::Unavailable(cause), String::new(), None);
                    (placeholder_spec(&raw_spec), unavailable)
                }
            };
            out.push(Release {
                release_name: spec.release_name(name),
                release_namespace: spec.release_namespace(ns),
                storage_namespace: spec.storage_namespace(ns),
                id,
                object: m.object(),
                owner: node.id.clone(),
                file,
                chart,
                source,
                version,
                spec,
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out.dedup_by(|a, b| a.id == b.id);
    for id in settings.charts.keys() {
        if !out.iter().any(|r| &r.id == id) {
            found.errors.push(format!(
                "--chart {}/{}: no such HelmRelease in the fleet",
                id.namespace, id.name
            ));
        }
    }
    found.releases = out;
    found
}

/// The chart of a HelmRelease: `--chart` first, else a path in a source the fleet maps (the
/// fleet's own GitRepository), else unavailable (fetched from registries by the sources stage).
fn resolve_chart(
    fleet: &Fleet,
    id: &KsId,
    spec: &HelmReleaseSpec,
    settings: &HelmSettings,
) -> (Chart, String, Option<String>) {
    let own_ns = &id.namespace;
    let (source, chart_name, version, kind, src_key) = match (&spec.chart_ref, &spec.chart) {
        (Some(r), _) => {
            let ns = r.namespace.clone().unwrap_or_else(|| own_ns.clone());
            (
                format!("{}/{}/{}", r.kind, ns, r.name),
                String::new(),
                None,
                r.kind.clone(),
                (r.kind.clone(), ns, r.name.clone()),
            )
        }
        (None, Some(c)) => {
            let r = &c.spec.source_ref;
            let ns = r.namespace.clone().unwrap_or_else(|| own_ns.clone());
            (
                format!("{}/{}/{} chart {}", r.kind, ns, r.name, c.spec.chart),
                c.spec.chart.clone(),
                c.spec.version.clone(),
                r.kind.clone(),
                (r.kind.clone(), ns, r.name.clone()),
            )
        }
        (None, None) => {
            return (
                Chart::Unavailable("neither spec.chart nor spec.chartRef is set".into()),
                String::new(),
                None,
            );
        }
    };
    if let Some(p) = settings.charts.get(id) {
        return (
            Chart::Local {
                path: p.clone(),
                how: "--chart".into(),
                version: None,
            },
            source,
            version,
        );
    }
    if matches!(kind.as_str(), "GitRepository" | "Bucket") {
        let mapped = fleet.nodes.values().find(|n| {
            n.source.kind == src_key.0
                && n.source.namespace == src_key.1
                && n.source.name == src_key.2
        });
        if let Some(n) = mapped {
            let rel = chart_name.trim_start_matches("./");
            let path = n.source_dir.join(rel);
            if path.join("Chart.yaml").is_file() {
                return (
                    Chart::Local {
                        path,
                        how: format!(
                            "{} (mapped to {})",
                            src_key.0,
                            crate::load::display_path(&n.source_dir)
                        ),
                        version: None,
                    },
                    source,
                    version,
                );
            }
            return (
                Chart::Unavailable(format!(
                    "no Chart.yaml at {}",
                    crate::load::display_path(&path)
                )),
                source,
                version,
            );
        }
    }
    (
        Chart::Unavailable(format!(
            "{source} is not available offline: pass --chart {}/{}=PATH (a chart directory or .tgz)",
            id.namespace, id.name
        )),
        source,
        version,
    )
}

/// The HelmReleases whose readiness a Kustomization's own readiness includes, as with
/// helm-controller: all of those its build holds when it has `wait: true`, else those its
/// `healthChecks` name.
pub fn gates<'a>(
    node: &crate::load::Node,
    releases: impl IntoIterator<Item = &'a Release>,
) -> Vec<KsId> {
    releases
        .into_iter()
        .filter(|r| {
            (node.spec.wait && r.owner == node.id)
                || node.spec.health_checks.iter().any(|h| {
                    h.kind == "HelmRelease"
                        && h.name == r.id.name
                        && h.namespace.as_deref().unwrap_or(&node.id.namespace) == r.id.namespace
                })
        })
        .map(|r| r.id.clone())
        .collect()
}

/// Fetches the charts of `selected` HelmReleases that are not local, through the sources stage
/// (OCIRepository, HelmRepository, GitRepository as source-controller resolves them). A chart
/// that cannot be had stays unavailable with the fetch error (plan notes it; apply refuses); one
/// whose source the fleet does not define, or whose chart reference is invalid, makes its
/// HelmRelease fail (returned), as a Kustomization whose source is missing fails.
pub async fn fetch_charts<'a>(
    fetcher: &crate::sources::Fetcher,
    selected: impl IntoIterator<Item = &'a mut Release>,
    failed: &std::collections::BTreeSet<KsId>,
) -> Vec<HelmProblem> {
    let mut problems = Vec::new();
    for r in selected {
        if matches!(r.chart, Chart::Local { .. }) || r.spec.suspend || failed.contains(&r.id) {
            continue;
        }
        let spec = r.object.get("spec").cloned().unwrap_or(Value::Null);
        let hr = format!("{}/{}", r.id.namespace, r.id.name);
        r.chart = match fetcher.resolve_chart(&hr, &r.id.namespace, &spec).await {
            Ok(c) => Chart::Local {
                how: format!("{} {}", c.source, c.revision),
                version: c.manifest_digest.is_some().then(|| c.flux_version()),
                path: c.path,
            },
            Err(e) => {
                use crate::sources::FetchError;
                let why = format!(
                    "{e}; or pass --chart {}/{}=PATH (a chart directory or .tgz)",
                    r.id.namespace, r.id.name
                );
                if matches!(
                    e,
                    FetchError::NotDefined { .. }
                        | FetchError::Invalid { .. }
                        | FetchError::Unsupported { .. }
                ) {
                    problems.push(HelmProblem::new(
                        Some(r.id.clone()),
                        &r.file,
                        &hr,
                        format!("chart: {why}"),
                    ));
                }
                Chart::Unavailable(why)
            }
        };
    }
    problems
}

/// The chart to hand helm: as it is, or — when helm-controller renders it with another version
/// — a copy with that version in its Chart.yaml (kept alive by the returned directory).
pub fn prepared(chart: &Chart) -> Result<(Option<tempfile::TempDir>, PathBuf), String> {
    let (path, version) = match chart {
        Chart::Local { path, version, .. } => (path, version),
        Chart::Unavailable(why) => return Err(format!("chart: {why}")),
    };
    let Some(version) = version else {
        return Ok((None, path.clone()));
    };
    let tmp = tempfile::Builder::new()
        .prefix("flux-order-chart-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = if path.is_dir() {
        let to = tmp.path().join("chart");
        copy_tree(path, &to).map_err(|e| format!("copying {}: {e}", path.display()))?;
        to
    } else {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        crate::sources::archive::unpack_tar_gz(&data, tmp.path())?;
        std::fs::read_dir(tmp.path())
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.join("Chart.yaml").is_file())
            .ok_or_else(|| format!("{}: no Chart.yaml in the archive", path.display()))?
    };
    let file = dir.join("Chart.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut meta: Value =
        crate::yaml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    meta["version"] = Value::String(version.clone());
    std::fs::write(
        &file,
        crate::yaml::to_string(&meta).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    Ok((Some(tmp), dir))
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_tree(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), t)?;
        }
    }
    Ok(())
}

/// Parses `--chart NAMESPACE/NAME=PATH` flags.
pub fn parse_chart_flags(flags: &[String]) -> Result<BTreeMap<KsId, PathBuf>, String> {
    let mut out = BTreeMap::new();
    for f in flags {
        let (id, path) = f
            .split_once('=')
            .ok_or_else(|| format!("--chart {f}: expected NAMESPACE/NAME=PATH"))?;
        let id =
            KsId::parse(id).ok_or_else(|| format!("--chart {f}: expected NAMESPACE/NAME=PATH"))?;
        let path = PathBuf::from(path);
        if !path.exists() {
            return Err(format!("--chart {f}: {} does not exist", path.display()));
        }
        let path = path
            .canonicalize()
            .map_err(|e| format!("--chart {f}: {e}"))?;
        out.insert(KsId::helm_release(id.namespace, id.name), path);
    }
    Ok(out)
}

/// Values sources a HelmRelease can read from the fleet: ConfigMaps and Secrets of every build,
/// by (namespace, kind, name).
pub fn fleet_value_sources<'a>(
    fleet: &Fleet,
    releases: impl IntoIterator<Item = &'a Release>,
) -> Arc<BTreeMap<(String, String, String), Value>> {
    // Only those some release reads: a fleet may hold tens of thousands of ConfigMaps.
    let wanted: std::collections::HashSet<(&str, &str, &str)> = releases
        .into_iter()
        .flat_map(|r| {
            r.spec
                .values_from
                .iter()
                .map(|v| (r.id.namespace.as_str(), v.kind.as_str(), v.name.as_str()))
        })
        .collect();
    let mut out = BTreeMap::new();
    if wanted.is_empty() {
        return Arc::new(out);
    }
    for n in fleet.nodes.values() {
        for m in &n.objects {
            let (api, kind, ns, name) = m.meta();
            if api == "v1"
                && (kind == "ConfigMap" || kind == "Secret")
                && wanted.contains(&(ns, kind, name))
            {
                let mut o = m.object();
                if !m.decrypted.is_empty() {
                    crate::build::postbuild::set_meta(
                        &mut o,
                        "annotations",
                        values::DECRYPTED_MARK,
                        "true",
                    );
                }
                out.insert((ns.to_string(), kind.to_string(), name.to_string()), o);
            }
        }
    }
    Arc::new(out)
}
