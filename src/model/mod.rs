//! The Flux objects flux-order reads: Kustomization specs (kustomize.toolkit.fluxcd.io/v1), object
//! references and identities, and the Go durations they carry. Serde types only, plus the defaults
//! Flux applies (timeout = interval − 30s, floored at 30s). Pure: no I/O.

#[allow(dead_code)] // `from_duration`/`as_str` complete the type; not every caller needs them
pub mod duration;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use duration::GoDuration;

/// The API group of Flux Kustomizations.
pub const KUSTOMIZE_GROUP: &str = "kustomize.toolkit.fluxcd.io";

/// What kind of unit of the rollout an identity names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum UnitKind {
    /// A Flux Kustomization (`kustomize.toolkit.fluxcd.io`).
    #[default]
    Kustomization,
    /// A Flux HelmRelease (`helm.toolkit.fluxcd.io/v2`), rendered and installed by flux-order.
    HelmRelease,
}

/// The identity of a unit of the rollout: `namespace/name` of a Flux Kustomization, or of a
/// HelmRelease (shown and serialised as `HelmRelease/namespace/name`, so the two never clash).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KsId {
    /// Kustomization or HelmRelease.
    pub kind: UnitKind,
    /// metadata.namespace (Flux Kustomizations are namespaced; empty is invalid).
    pub namespace: String,
    /// metadata.name.
    pub name: String,
}

impl KsId {
    /// Builds the identity of a Kustomization.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        KsId {
            kind: UnitKind::Kustomization,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Builds the identity of a HelmRelease.
    pub fn helm_release(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        KsId {
            kind: UnitKind::HelmRelease,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Whether this names a HelmRelease.
    pub fn is_helm_release(&self) -> bool {
        self.kind == UnitKind::HelmRelease
    }

    /// `Kustomization namespace/name` or `HelmRelease namespace/name`, for messages.
    pub fn label(&self) -> String {
        format!("{} {}/{}", self.kind_name(), self.namespace, self.name)
    }

    /// `Kustomization` or `HelmRelease`, for messages.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            UnitKind::Kustomization => "Kustomization",
            UnitKind::HelmRelease => "HelmRelease",
        }
    }

    /// Parses `NAMESPACE/NAME`.
    pub fn parse(s: &str) -> Option<Self> {
        let (ns, name) = s.split_once('/')?;
        (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then(|| KsId::new(ns, name))
    }
}

impl Serialize for KsId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for KsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            UnitKind::Kustomization => write!(f, "{}/{}", self.namespace, self.name),
            UnitKind::HelmRelease => write!(f, "HelmRelease/{}/{}", self.namespace, self.name),
        }
    }
}

/// `spec.sourceRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// Optional apiVersion of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// GitRepository, OCIRepository, Bucket or ExternalArtifact.
    pub kind: String,
    /// Name of the source.
    pub name: String,
    /// Namespace of the source; defaults to the Kustomization's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A source as a key for `--source KIND/NAMESPACE/NAME=DIR`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceKey {
    /// Source kind.
    pub kind: String,
    /// Source namespace (defaulted).
    pub namespace: String,
    /// Source name.
    pub name: String,
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

impl SourceKey {
    /// Parses `KIND/NAMESPACE/NAME`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('/');
        let (k, ns, n) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() || k.is_empty() || ns.is_empty() || n.is_empty() {
            return None;
        }
        Some(SourceKey {
            kind: k.into(),
            namespace: ns.into(),
            name: n.into(),
        })
    }
}

/// One `spec.dependsOn` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DependsOn {
    /// Name of the dependency.
    pub name: String,
    /// Namespace; defaults to the dependent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// CEL readiness expression (Flux ≥ 2.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_expr: Option<String>,
}

/// A reference to a Kubernetes object (`healthChecks[]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// apiVersion; Flux treats an empty one as `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace (not defaulted, as in Flux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) if !ns.is_empty() => write!(f, "{}/{}/{}", self.kind, ns, self.name),
            _ => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// `spec.commonMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommonMetadata {
    /// Labels set on every object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations set on every object.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec.patches[]`: a kustomize patch with an optional target selector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    /// The patch text (strategic merge or JSON 6902).
    pub patch: String,
    /// Target selector (group, version, kind, name, namespace, labelSelector, annotationSelector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Value>,
}

/// `spec.images[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Image name to match.
    pub name: String,
    /// Replacement name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_name: Option<String>,
    /// Replacement tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_tag: Option<String>,
    /// Replacement digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// `spec.postBuild.substituteFrom[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubstituteReference {
    /// `ConfigMap` or `Secret`.
    pub kind: String,
    /// Name, in the Kustomization's namespace.
    pub name: String,
    /// Tolerate NotFound.
    #[serde(default)]
    pub optional: bool,
}

/// `spec.postBuild`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostBuild {
    /// `WithVariables` (default) or `Always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitute_strategy: Option<String>,
    /// Inline variables (win over substituteFrom).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub substitute: BTreeMap<String, String>,
    /// ConfigMaps and Secrets, read in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<SubstituteReference>,
}

/// `spec` of a Flux Kustomization (the fields flux-order reads; unknown ones are kept in `raw`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    /// Reconcile interval (required by the CRD).
    pub interval: GoDuration,
    /// Retry interval after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<GoDuration>,
    /// Health-check timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Path inside the source; empty = the source root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The source.
    pub source_ref: SourceRef,
    /// Dependencies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependsOn>,
    /// Suspended Kustomizations are not applied.
    #[serde(default)]
    pub suspend: bool,
    /// Garbage-collect objects that left the source (required by the CRD).
    pub prune: bool,
    /// MirrorPrune, Delete, WaitForTermination or Orphan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<String>,
    /// Health-check every applied object.
    #[serde(default)]
    pub wait: bool,
    /// Objects to health-check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<ObjectRef>,
    /// CEL health expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_check_exprs: Vec<Value>,
    /// Recreate objects on immutable-field errors.
    #[serde(default)]
    pub force: bool,
    /// Namespace override for every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Name prefix (replaces the kustomization.yaml's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_prefix: Option<String>,
    /// Name suffix (replaces the kustomization.yaml's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_suffix: Option<String>,
    /// Labels and annotations set last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common_metadata: Option<CommonMetadata>,
    /// Extra kustomize patches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<Patch>,
    /// Image overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Image>,
    /// Extra kustomize components (local, relative).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// Drop missing components instead of failing.
    #[serde(default)]
    pub ignore_missing_components: bool,
    /// Replaces kustomization.yaml buildMetadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_metadata: Option<Vec<String>>,
    /// Variable substitution after the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
    /// SOPS decryption (not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Value>,
    /// Impersonated service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Remote cluster kubeconfig reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_config: Option<Value>,
}

/// Flux's minimum timeout and the margin subtracted from the interval.
const THIRTY_SECONDS: Duration = Duration::from_secs(30);

impl KustomizationSpec {
    /// The health-check timeout as the controller computes it: spec.timeout when set, else
    /// interval − 30s; either way floored at 30s.
    pub fn effective_timeout(&self) -> Duration {
        let t = match &self.timeout {
            Some(t) => t.value(),
            None => self.interval.value().saturating_sub(THIRTY_SECONDS),
        };
        t.max(THIRTY_SECONDS)
    }

    /// The source key with its namespace defaulted to `own_namespace`.
    pub fn source_key(&self, own_namespace: &str) -> SourceKey {
        SourceKey {
            kind: self.source_ref.kind.clone(),
            namespace: self
                .source_ref
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| own_namespace.to_string()),
            name: self.source_ref.name.clone(),
        }
    }

    /// dependsOn as identities, namespaces defaulted to `own_namespace`.
    pub fn dependencies(&self, own_namespace: &str) -> Vec<KsId> {
        self.depends_on
            .iter()
            .map(|d| {
                let ns = d
                    .namespace
                    .as_deref()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(own_namespace);
                KsId::new(ns, &d.name)
            })
            .collect()
    }
}

/// The fields of a Flux Kustomization (kustomize.toolkit.fluxcd.io/v1) below `spec`, as the CRD's
/// schema has them: `(path, fields)`, where a path names an object (`spec.sourceRef`) or the
/// items of a list (`spec.dependsOn[]`). Objects whose keys are free (`postBuild.substitute`,
/// labels, patch targets' selectors) are not listed, so nothing below them is checked.
const SCHEMA: &[(&str, &[&str])] = &[
    (
        "spec",
        &[
            "commonMetadata",
            "components",
            "decryption",
            "deletionPolicy",
            "dependsOn",
            "force",
            "healthCheckExprs",
            "healthChecks",
            "ignore",
            "ignoreMissingComponents",
            "images",
            "interval",
            "kubeConfig",
            "namePrefix",
            "nameSuffix",
            "patches",
            "path",
            "postBuild",
            "prune",
            "retryInterval",
            "serviceAccountName",
            "sourceRef",
            "suspend",
            "targetNamespace",
            "timeout",
            "wait",
            "buildMetadata",
        ],
    ),
    (
        "spec.sourceRef",
        &["apiVersion", "kind", "name", "namespace"],
    ),
    ("spec.dependsOn[]", &["name", "namespace", "readyExpr"]),
    (
        "spec.healthChecks[]",
        &["apiVersion", "kind", "name", "namespace"],
    ),
    (
        "spec.healthCheckExprs[]",
        &["apiVersion", "kind", "current", "inProgress", "failed"],
    ),
    ("spec.images[]", &["name", "newName", "newTag", "digest"]),
    ("spec.patches[]", &["patch", "target"]),
    (
        "spec.patches[].target",
        &[
            "group",
            "version",
            "kind",
            "name",
            "namespace",
            "labelSelector",
            "annotationSelector",
        ],
    ),
    (
        "spec.postBuild",
        &["substitute", "substituteFrom", "substituteStrategy"],
    ),
    (
        "spec.postBuild.substituteFrom[]",
        &["kind", "name", "optional"],
    ),
    ("spec.commonMetadata", &["labels", "annotations"]),
    (
        "spec.decryption",
        &["provider", "secretRef", "serviceAccountName"],
    ),
    ("spec.decryption.secretRef", &["name"]),
    ("spec.kubeConfig", &["secretRef", "configMapRef"]),
    ("spec.kubeConfig.secretRef", &["name", "key"]),
    ("spec.kubeConfig.configMapRef", &["name"]),
    ("spec.ignore[]", &["paths", "target"]),
];

/// Fields of `spec` the CRD does not define, as `spec.x.y` paths each with the known field of
/// the same name in another case, if any (`dependson` → `dependsOn`). The API server drops such
/// fields with a warning; flux-order warns as it does.
pub fn unknown_fields(spec: &Value) -> Vec<(String, Option<&'static str>)> {
    fn walk(v: &Value, path: &str, shown: &str, out: &mut Vec<(String, Option<&'static str>)>) {
        match v {
            Value::Array(items) => {
                let item_path = format!("{path}[]");
                if SCHEMA.iter().any(|(p, _)| *p == item_path) {
                    for (i, x) in items.iter().enumerate() {
                        walk(x, &item_path, &format!("{shown}[{i}]"), out);
                    }
                }
            }
            Value::Object(m) => {
                let Some((_, known)) = SCHEMA.iter().find(|(p, _)| *p == path) else {
                    return;
                };
                for (k, x) in m {
                    let field = format!("{shown}.{k}");
                    if known.contains(&k.as_str()) {
                        walk(x, &format!("{path}.{k}"), &field, out);
                    } else {
                        let close = known.iter().copied().find(|f| f.eq_ignore_ascii_case(k));
                        out.push((field, close));
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(spec, "spec", "spec", &mut out);
    out
}

/// Numbers of `obj` that are whole and beyond every 64-bit integer (`99999999999999999999` in
/// the YAML): YAML readers, kustomize's and flux-order's alike, turn them into floats. As
/// `(path, value)`, the path like `spec.replicas` or `spec.items[2]`.
pub fn huge_integers(obj: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or_default();
                if f.is_finite() && f.fract() == 0.0 && (f > u64::MAX as f64 || f < i64::MIN as f64)
                {
                    out.push((path.to_string(), format!("{f:e}")));
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), out);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, &p, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(obj, "", &mut out);
    out
}

/// Why `name` cannot name a Flux Kustomization, if it cannot: it must be a lowercase RFC 1123
/// subdomain (as the API server checks every object name), and at most 63 characters, because
/// Flux's owner label `kustomize.toolkit.fluxcd.io/name` carries it on every applied object (and
/// flux-order's inventory labels it the same way).
pub fn invalid_kustomization_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("metadata.name is not set".into());
    }
    if let Some(why) = invalid_dns1123(name, 253, true) {
        return Some(format!(
            "metadata.name '{name}' is not a valid Kubernetes name: {why}"
        ));
    }
    if name.len() > 63 {
        return Some(format!(
            "metadata.name '{name}' has {} characters: at most 63, since Flux's owner label kustomize.toolkit.fluxcd.io/name carries it",
            name.len()
        ));
    }
    None
}

/// Why `ns` cannot be a namespace (an RFC 1123 label), if it cannot.
pub fn invalid_namespace(ns: &str) -> Option<String> {
    invalid_dns1123(ns, 63, false)
        .map(|why| format!("metadata.namespace '{ns}' is not a valid namespace: {why}"))
}

/// The API server's RFC 1123 rule: a label (`subdomain` false) or a subdomain of dot-separated
/// labels, at most `max` characters.
fn invalid_dns1123(s: &str, max: usize, subdomain: bool) -> Option<String> {
    let what = if subdomain {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
    } else {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
    };
    if s.len() > max {
        return Some(format!("must be no more than {max} characters"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = if subdomain {
        s.split('.').all(label_ok)
    } else {
        label_ok(s)
    };
    (!ok).then(|| what.to_string())
}

/// Group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// Whether an object of this apiVersion belongs to Flux (`*.toolkit.fluxcd.io`,
/// `*.extensions.fluxcd.io`) and so needs a Flux controller to do anything.
pub fn is_flux_api(api_version: &str) -> bool {
    let g = api_group(api_version);
    g.ends_with(".toolkit.fluxcd.io") || g.ends_with(".extensions.fluxcd.io")
}

/// Reads `apiVersion`, `kind`, `metadata.namespace`, `metadata.name` of a manifest.
pub fn object_meta(obj: &Value) -> (&str, &str, &str, &str) {
    fn s(v: Option<&Value>) -> &str {
        v.and_then(Value::as_str).unwrap_or("")
    }
    (
        s(obj.get("apiVersion")),
        s(obj.get("kind")),
        s(obj.pointer("/metadata/namespace")),
        s(obj.pointer("/metadata/name")),
    )
}

/// The kinds a CustomResourceDefinition serves: `(apiVersion, kind, namespaced)` per served
/// version.
pub fn crd_served_kinds(crd: &Value) -> Vec<(String, String, bool)> {
    let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (group, kind) = (s("/spec/group"), s("/spec/names/kind"));
    let namespaced = s("/spec/scope") != "Cluster";
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .map(|ver| (format!("{group}/{ver}"), kind.to_string(), namespaced))
        .collect()
}

/// `Kind/namespace/name`, or `Kind/name` for cluster-scoped objects: Flux's subject format.
pub fn subject(obj: &Value) -> String {
    let (_, kind, ns, name) = object_meta(obj);
    subject_of(kind, ns, name)
}

/// `Kind/namespace/name`, or `Kind/name` without a namespace.
pub fn subject_of(kind: &str, ns: &str, name: &str) -> String {
    if ns.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{ns}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(y: &str) -> KustomizationSpec {
        crate::yaml::from_str(y).unwrap()
    }

    #[test]
    fn timeout_defaults_like_the_controller() {
        let base = "sourceRef: {kind: GitRepository, name: x}\nprune: true\n";
        let s = spec(&format!("interval: 10m\n{base}"));
        assert_eq!(s.effective_timeout(), Duration::from_secs(570));
        let s = spec(&format!("interval: 40s\n{base}"));
        assert_eq!(s.effective_timeout(), Duration::from_secs(30));
        let s = spec(&format!("interval: 1h\ntimeout: 5s\n{base}"));
        assert_eq!(s.effective_timeout(), Duration::from_secs(30));
        let s = spec(&format!("interval: 1h\ntimeout: 5m\n{base}"));
        assert_eq!(s.effective_timeout(), Duration::from_secs(300));
    }

    #[test]
    fn kustomization_names_follow_the_api_server_and_the_owner_label() {
        assert_eq!(invalid_kustomization_name("apps-1.prod"), None);
        for bad in ["", "MyApp", "A_Bad", "-a", "a-", "a..b"] {
            assert!(invalid_kustomization_name(bad).is_some(), "{bad:?}");
        }
        assert!(invalid_kustomization_name(&"a".repeat(63)).is_none());
        let long = format!("{}.{}", "a".repeat(30), "b".repeat(33));
        assert!(
            invalid_kustomization_name(&long)
                .unwrap()
                .contains("at most 63")
        );
        assert_eq!(invalid_namespace("flux-system"), None);
        assert!(invalid_namespace("flux.system").is_some());
    }

    #[test]
    fn unknown_spec_fields_are_found_at_any_depth() {
        let spec = serde_json::json!({
            "interval": "1m", "dependson": [{"name": "x"}],
            "dependsOn": [{"name": "a", "namespce": "b"}],
            "postBuild": {"substitute": {"anything": "goes"}, "substitutefrom": []},
            "patches": [{"patch": "p", "target": {"kind": "X", "labelselector": "a=b"}}],
        });
        let found: Vec<(String, Option<&str>)> = unknown_fields(&spec);
        assert_eq!(
            found,
            vec![
                ("spec.dependson".to_string(), Some("dependsOn")),
                ("spec.dependsOn[0].namespce".to_string(), None),
                (
                    "spec.postBuild.substitutefrom".to_string(),
                    Some("substituteFrom")
                ),
                (
                    "spec.patches[0].target.labelselector".to_string(),
                    Some("labelSelector")
                ),
            ]
        );
    }

    #[test]
    fn ids_and_keys_parse() {
        assert_eq!(KsId::parse("a/b"), Some(KsId::new("a", "b")));
        assert_eq!(KsId::parse("a"), None);
        assert_eq!(KsId::parse("a/b/c"), None);
        let k = SourceKey::parse("GitRepository/flux-system/flux-system").unwrap();
        assert_eq!(k.to_string(), "GitRepository/flux-system/flux-system");
        assert!(SourceKey::parse("GitRepository/x").is_none());
    }
}
