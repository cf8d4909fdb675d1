//! The parts of a `helm.toolkit.fluxcd.io/v2` HelmRelease flux-order reads, and helm-controller's
//! naming rules (`api/v2/helmrelease_types.go`, `internal/release/name.go`): release name (with
//! the 53-character shortening), release, storage and HelmChart namespaces, timeouts.
//! Pure: no I/O.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sha2::Digest;

use crate::model::{DependsOn, GoDuration, Image, KsId, Patch};

/// `spec` of a HelmRelease (fields flux-order does not act on are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    /// `chart` (a HelmChart template).
    #[serde(default)]
    pub chart: Option<ChartTemplate>,
    /// `chartRef` (an OCIRepository, HelmChart or ExternalArtifact).
    #[serde(default)]
    pub chart_ref: Option<ChartRef>,
    /// `releaseName`.
    #[serde(default)]
    pub release_name: Option<String>,
    /// `targetNamespace`.
    #[serde(default)]
    pub target_namespace: Option<String>,
    /// `storageNamespace`.
    #[serde(default)]
    pub storage_namespace: Option<String>,
    /// `dependsOn` (HelmReleases; namespace defaults to the HelmRelease's).
    #[serde(default)]
    pub depends_on: Vec<DependsOn>,
    /// `timeout` (default 5m).
    #[serde(default)]
    pub timeout: Option<GoDuration>,
    /// `suspend`.
    #[serde(default)]
    pub suspend: bool,
    /// `kubeConfig` (another cluster: refused).
    #[serde(default)]
    pub kube_config: Option<Value>,
    /// `serviceAccountName` (impersonation: warned about).
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// `values`.
    #[serde(default)]
    pub values: Option<Value>,
    /// `valuesFrom`.
    #[serde(default)]
    pub values_from: Vec<ValuesReference>,
    /// `install`.
    #[serde(default)]
    pub install: Option<Action>,
    /// `upgrade`.
    #[serde(default)]
    pub upgrade: Option<Action>,
    /// `postRenderers`.
    #[serde(default)]
    pub post_renderers: Vec<PostRenderer>,
    /// `commonMetadata`.
    #[serde(default)]
    pub common_metadata: Option<crate::model::CommonMetadata>,
    /// `postRenderStrategy` (`combined`, the default; `nohooks`; `separate`).
    #[serde(default)]
    pub post_render_strategy: Option<String>,
    /// `maxHistory` (default 5).
    #[serde(default)]
    pub max_history: Option<u32>,
}

/// `spec.chart`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChartTemplate {
    /// `spec.chart.spec`.
    #[serde(default)]
    pub spec: ChartTemplateSpec,
}

/// `spec.chart.spec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartTemplateSpec {
    /// Chart name (HelmRepository) or path (GitRepository, Bucket).
    #[serde(default)]
    pub chart: String,
    /// Version constraint (default `*`).
    #[serde(default)]
    pub version: Option<String>,
    /// The source.
    #[serde(default)]
    pub source_ref: SourceRef,
    /// `valuesFiles` (replace the chart's values.yaml with their merge).
    #[serde(default)]
    pub values_files: Vec<String>,
}

/// A source reference of a chart.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// `HelmRepository`, `GitRepository`, `Bucket`, `OCIRepository`, `HelmChart`, `ExternalArtifact`.
    #[serde(default)]
    pub kind: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (defaults to the HelmRelease's).
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `spec.chartRef`.
pub type ChartRef = SourceRef;

/// One `valuesFrom` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValuesReference {
    /// `ConfigMap` or `Secret`.
    pub kind: String,
    /// Name, in the HelmRelease's namespace.
    pub name: String,
    /// Key (default `values.yaml`).
    #[serde(default)]
    pub values_key: Option<String>,
    /// Where to put the value (strvals path); the whole key is YAML values without it.
    #[serde(default)]
    pub target_path: Option<String>,
    /// A missing resource or key is not an error.
    #[serde(default)]
    pub optional: bool,
}

/// `spec.install` or `spec.upgrade` (the fields flux-order acts on are the same).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    /// `crds`: Create (the default for installs and, in the code, upgrades), CreateReplace, Skip.
    #[serde(default)]
    pub crds: Option<String>,
    /// `createNamespace` (install only; only with targetNamespace, as helm-controller).
    #[serde(default)]
    pub create_namespace: bool,
    /// `disableWait`.
    #[serde(default)]
    pub disable_wait: bool,
    /// `disableWaitForJobs`.
    #[serde(default)]
    pub disable_wait_for_jobs: bool,
    /// `disableHooks`.
    #[serde(default)]
    pub disable_hooks: bool,
    /// `disableSchemaValidation`.
    #[serde(default)]
    pub disable_schema_validation: bool,
    /// `disableOpenAPIValidation`.
    #[serde(default, rename = "disableOpenAPIValidation")]
    pub disable_openapi_validation: bool,
    /// `timeout`.
    #[serde(default)]
    pub timeout: Option<GoDuration>,
}

/// One `postRenderers` entry.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostRenderer {
    /// The kustomize post-renderer.
    #[serde(default)]
    pub kustomize: Option<KustomizePostRenderer>,
}

/// `postRenderers[].kustomize`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KustomizePostRenderer {
    /// `patches`.
    #[serde(default)]
    pub patches: Vec<Patch>,
    /// `images`.
    #[serde(default)]
    pub images: Vec<Image>,
}

/// The helm-controller default timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest release name Helm stores.
const MAX_RELEASE_NAME: usize = 53;

impl HelmReleaseSpec {
    /// The release name: `releaseName`, else `[targetNamespace-]name`, shortened past 53
    /// characters to the first 40 + `-` + 12 hex of its sha256.
    pub fn release_name(&self, name: &str) -> String {
        let full = match (&self.release_name, &self.target_namespace) {
            (Some(r), _) if !r.is_empty() => r.clone(),
            (_, Some(t)) if !t.is_empty() => format!("{t}-{name}"),
            _ => name.to_string(),
        };
        if full.len() <= MAX_RELEASE_NAME {
            return full;
        }
        let digest = sha2::Sha256::digest(full.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{}", &full[..40], &hex[..12])
    }

    /// The namespace the release's objects go to: `targetNamespace`, else the HelmRelease's.
    pub fn release_namespace(&self, own: &str) -> String {
        self.target_namespace
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| own.to_string())
    }

    /// The namespace of Helm's release Secrets: `storageNamespace`, else the HelmRelease's.
    pub fn storage_namespace(&self, own: &str) -> String {
        self.storage_namespace
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| own.to_string())
    }

    /// `spec.upgrade` for an upgrade, else `spec.install`.
    pub fn action(&self, upgrade: bool) -> Option<&Action> {
        if upgrade {
            self.upgrade.as_ref()
        } else {
            self.install.as_ref()
        }
    }

    fn flag(&self, upgrade: bool, f: impl Fn(&Action) -> bool) -> bool {
        self.action(upgrade).is_some_and(f)
    }

    /// The action timeout: install/upgrade.timeout, else spec.timeout, else 5m.
    pub fn timeout(&self, upgrade: bool) -> Duration {
        self.action(upgrade)
            .and_then(|a| a.timeout.as_ref())
            .or(self.timeout.as_ref())
            .map(|t| t.value())
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// The CRD policy of the action (Create when unset, for installs and upgrades alike, as the
    /// code does).
    pub fn crd_policy(&self, upgrade: bool) -> String {
        self.action(upgrade)
            .and_then(|a| a.crds.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "Create".into())
    }

    /// Whether resources are waited for (hooks always are).
    pub fn wait(&self, upgrade: bool) -> bool {
        !self.flag(upgrade, |a| a.disable_wait)
    }

    /// Whether Jobs must complete (helm-controller's default: yes).
    pub fn wait_for_jobs(&self, upgrade: bool) -> bool {
        !self.flag(upgrade, |a| a.disable_wait_for_jobs)
    }

    /// Whether hooks are disabled for the action.
    pub fn disable_hooks(&self, upgrade: bool) -> bool {
        self.flag(upgrade, |a| a.disable_hooks)
    }

    /// `disableSchemaValidation` of the action.
    pub fn skip_schema_validation(&self, upgrade: bool) -> bool {
        self.flag(upgrade, |a| a.disable_schema_validation)
    }

    /// `disableOpenAPIValidation` of the action.
    pub fn disable_openapi_validation(&self, upgrade: bool) -> bool {
        self.flag(upgrade, |a| a.disable_openapi_validation)
    }

    /// dependsOn as identities (HelmReleases), namespaces defaulted to `own`.
    pub fn dependencies(&self, own: &str) -> Vec<KsId> {
        self.depends_on
            .iter()
            .map(|d| {
                KsId::helm_release(
                    d.namespace
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .unwrap_or(own),
                    &d.name,
                )
            })
            .collect()
    }

    /// Hooks go through the post-renderers (`combined`, the default since helm-controller 1.6).
    pub fn post_render_hooks(&self) -> bool {
        !matches!(
            self.post_render_strategy.as_deref(),
            Some("nohooks") | Some("separate")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> HelmReleaseSpec {
        serde_json::from_value(v).expect("spec")
    }

    #[test]
    fn release_names_follow_helm_controller() {
        assert_eq!(
            spec(serde_json::json!({})).release_name("podinfo"),
            "podinfo"
        );
        assert_eq!(
            spec(serde_json::json!({"targetNamespace": "apps"})).release_name("podinfo"),
            "apps-podinfo"
        );
        assert_eq!(
            spec(serde_json::json!({"targetNamespace": "apps", "releaseName": "x"}))
                .release_name("podinfo"),
            "x"
        );
        let long = "a".repeat(60);
        let short = spec(serde_json::json!({})).release_name(&long);
        assert_eq!(short.len(), 53);
        assert!(short.starts_with(&"a".repeat(40)));
        assert_eq!(&short[40..41], "-");
    }

    #[test]
    fn namespaces_and_timeouts() {
        let s = spec(serde_json::json!({"targetNamespace": "t", "timeout": "2m",
            "upgrade": {"timeout": "3m", "crds": "CreateReplace"}}));
        assert_eq!(s.release_namespace("own"), "t");
        assert_eq!(s.storage_namespace("own"), "own");
        assert_eq!(s.timeout(false), Duration::from_secs(120));
        assert_eq!(s.timeout(true), Duration::from_secs(180));
        assert_eq!(s.crd_policy(false), "Create");
        assert_eq!(s.crd_policy(true), "CreateReplace");
        assert_eq!(spec(serde_json::json!({})).timeout(false), DEFAULT_TIMEOUT);
        assert!(s.wait_for_jobs(false));
    }
}
