//! The resource catalog: the built-in resource table, resources derived from established CRDs,
//! and the discovery documents (`/api`, `/apis`, legacy and aggregated) rendered from it.

use serde_json::{Value, json};

/// One served resource (group/version/plural), as discovery describes it.
#[derive(Clone, Debug)]
pub(crate) struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource (writes to the main resource ignore `.status`).
    pub status: bool,
    /// Has a `/scale` subresource (advertised only).
    pub scale: bool,
}

impl ResourceInfo {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` (or `plural` for core), as the real server names resources in messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// A kind compiled into the server (typed), as opposed to a custom resource (unstructured).
    pub fn is_builtin(&self) -> bool {
        builtin()
            .iter()
            .any(|b| b.group == self.group && b.plural == self.plural)
    }

    /// The real server keeps `metadata.generation` only for kinds whose registry strategy sets
    /// it (workloads, Pods, Ingresses, PodDisruptionBudgets, CRDs, ...) and for every custom
    /// resource; ConfigMaps, Secrets, Services, Namespaces, PVCs, RBAC objects, HPAs and the
    /// like have none.
    pub fn has_generation(&self) -> bool {
        !self.is_builtin()
            || matches!(
                (self.group.as_str(), self.kind.as_str()),
                (
                    "apps",
                    "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
                ) | ("batch", "Job" | "CronJob")
                    | ("", "Pod" | "ReplicationController" | "PodTemplate")
                    | (
                        "networking.k8s.io",
                        "Ingress" | "IngressClass" | "NetworkPolicy"
                    )
                    | ("policy", "PodDisruptionBudget")
                    | ("apiextensions.k8s.io", "CustomResourceDefinition")
            )
    }

    /// `Kind.group` (or `Kind` for core), as used in "is invalid" messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

#[allow(clippy::too_many_arguments)]
fn b(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    all: bool,
    status: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: if all { vec!["all".into()] } else { vec![] },
        status,
        scale: false,
    }
}

/// The built-in kinds this server knows.
pub(crate) fn builtin() -> &'static [ResourceInfo] {
    static B: std::sync::OnceLock<Vec<ResourceInfo>> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        let mut v = vec![
            b(
                "",
                "v1",
                "Namespace",
                "namespaces",
                false,
                &["ns"],
                false,
                true,
            ),
            b(
                "",
                "v1",
                "ConfigMap",
                "configmaps",
                true,
                &["cm"],
                false,
                false,
            ),
            b("", "v1", "Secret", "secrets", true, &[], false, false),
            b("", "v1", "Service", "services", true, &["svc"], true, true),
            b(
                "",
                "v1",
                "ServiceAccount",
                "serviceaccounts",
                true,
                &["sa"],
                false,
                false,
            ),
            b("", "v1", "Pod", "pods", true, &["po"], true, true),
            b(
                "",
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
                &["pvc"],
                false,
                true,
            ),
            b(
                "",
                "v1",
                "PersistentVolume",
                "persistentvolumes",
                false,
                &["pv"],
                false,
                true,
            ),
            b("", "v1", "Event", "events", true, &["ev"], false, false),
            b(
                "",
                "v1",
                "Endpoints",
                "endpoints",
                true,
                &["ep"],
                false,
                false,
            ),
            b(
                "",
                "v1",
                "LimitRange",
                "limitranges",
                true,
                &["limits"],
                false,
                false,
            ),
            b(
                "",
                "v1",
                "ResourceQuota",
                "resourcequotas",
                true,
                &["quota"],
                false,
                true,
            ),
            b(
                "apps",
                "v1",
                "Deployment",
                "deployments",
                true,
                &["deploy"],
                true,
                true,
            ),
            b(
                "apps",
                "v1",
                "StatefulSet",
                "statefulsets",
                true,
                &["sts"],
                true,
                true,
            ),
            b(
                "apps",
                "v1",
                "DaemonSet",
                "daemonsets",
                true,
                &["ds"],
                true,
                true,
            ),
            b(
                "apps",
                "v1",
                "ReplicaSet",
                "replicasets",
                true,
                &["rs"],
                true,
                true,
            ),
            b(
                "apps",
                "v1",
                "ControllerRevision",
                "controllerrevisions",
                true,
                &[],
                false,
                false,
            ),
            b("batch", "v1", "Job", "jobs", true, &[], true, true),
            b(
                "batch",
                "v1",
                "CronJob",
                "cronjobs",
                true,
                &["cj"],
                true,
                true,
            ),
            b(
                "networking.k8s.io",
                "v1",
                "Ingress",
                "ingresses",
                true,
                &["ing"],
                false,
                true,
            ),
            b(
                "networking.k8s.io",
                "v1",
                "IngressClass",
                "ingressclasses",
                false,
                &[],
                false,
                false,
            ),
            b(
                "networking.k8s.io",
                "v1",
                "NetworkPolicy",
                "networkpolicies",
                true,
                &["netpol"],
                false,
                false,
            ),
            b(
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                true,
                &["pdb"],
                false,
                true,
            ),
            b(
                "rbac.authorization.k8s.io",
                "v1",
                "Role",
                "roles",
                true,
                &[],
                false,
                false,
            ),
            b(
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                true,
                &[],
                false,
                false,
            ),
            b(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRole",
                "clusterroles",
                false,
                &[],
                false,
                false,
            ),
            b(
                "rbac.authorization.k8s.io",
                "v1",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
                &[],
                false,
                false,
            ),
            b(
                "storage.k8s.io",
                "v1",
                "StorageClass",
                "storageclasses",
                false,
                &["sc"],
                false,
                false,
            ),
            b(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                &["crd", "crds"],
                false,
                true,
            ),
            b(
                "coordination.k8s.io",
                "v1",
                "Lease",
                "leases",
                true,
                &[],
                false,
                false,
            ),
            b(
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                true,
                &["hpa"],
                true,
                true,
            ),
        ];
        for r in v.iter_mut() {
            if matches!(r.kind.as_str(), "Deployment" | "StatefulSet" | "ReplicaSet") {
                r.scale = true;
            }
            if r.kind == "Endpoints" {
                r.singular = "endpoints".into();
            }
        }
        v
    })
}

/// Resources a CRD object defines (one per served version), regardless of its conditions.
pub(crate) fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let kind = names["kind"].as_str().unwrap_or_default();
    let plural = names["plural"].as_str().unwrap_or_default();
    if group.is_empty() || kind.is_empty() || plural.is_empty() {
        return vec![];
    }
    let singular = names["singular"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let mut out = vec![];
    for ver in spec["versions"].as_array().into_iter().flatten() {
        if ver["served"].as_bool() == Some(false) {
            continue;
        }
        let Some(name) = ver["name"].as_str() else {
            continue;
        };
        out.push(ResourceInfo {
            group: group.into(),
            version: name.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: singular.clone(),
            namespaced,
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            status: ver["subresources"]["status"].is_object(),
            scale: ver["subresources"]["scale"].is_object(),
        });
    }
    out
}

/// True when a CRD object carries `Established=True`.
pub(crate) fn crd_established(crd: &Value) -> bool {
    crate::store::condition_true(crd, "Established")
}

/// A snapshot of everything served: built-ins plus established CRDs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Catalog {
    pub all: Vec<ResourceInfo>,
}

impl Catalog {
    /// Built-ins plus the resources of the given CRD objects (the caller filters established ones).
    pub fn new<'a>(crds: impl Iterator<Item = &'a Value>) -> Catalog {
        let mut all = builtin().to_vec();
        for crd in crds {
            for r in from_crd(crd) {
                if !all
                    .iter()
                    .any(|x| x.group == r.group && x.version == r.version && x.plural == r.plural)
                {
                    all.push(r);
                }
            }
        }
        Catalog { all }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.all
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Find by apiVersion and kind.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        let (g, v) = split_api_version(api_version);
        self.all
            .iter()
            .find(|r| r.group == g && r.version == v && r.kind == kind)
    }

    /// Group names in order of first appearance (core excluded).
    fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for r in &self.all {
            if !r.group.is_empty() && !out.contains(&r.group) {
                out.push(r.group.clone());
            }
        }
        out
    }

    fn versions(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for r in self.all.iter().filter(|r| r.group == group) {
            if !out.contains(&r.version) {
                out.push(r.version.clone());
            }
        }
        // Kubernetes-style priority: v1 > v1beta1 > v1alpha1 roughly; keep stable ones first.
        out.sort_by_key(|v| version_priority(v));
        out
    }

    /// `/api` (legacy): APIVersions.
    pub fn api_versions(&self) -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
    }

    /// `/apis` (legacy): APIGroupList.
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self.groups().iter().map(|g| self.api_group(g)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/GROUP`: APIGroup.
    pub fn api_group(&self, group: &str) -> Value {
        let versions: Vec<Value> = self
            .versions(group)
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        let preferred = versions.first().cloned().unwrap_or(Value::Null);
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
               "preferredVersion": preferred})
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.all
            .iter()
            .any(|r| r.group == group && r.version == version)
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.all.iter().any(|r| r.group == group)
    }

    /// `/api/v1`, `/apis/G/V`: APIResourceList.
    pub fn resource_list(&self, group: &str, version: &str) -> Value {
        let mut resources = vec![];
        for r in self
            .all
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            let mut o = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                "kind": r.kind, "verbs": VERBS});
            if !r.short_names.is_empty() {
                o["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                o["categories"] = json!(r.categories);
            }
            resources.push(o);
            if r.status {
                resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "",
                    "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
            }
            if r.scale {
                resources.push(json!({"name": format!("{}/scale", r.plural), "singularName": "",
                    "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale",
                    "verbs": ["get", "patch", "update"]}));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }

    fn group_discovery(&self, group: &str) -> Value {
        let versions: Vec<Value> = self
            .versions(group)
            .iter()
            .map(|v| {
                let resources: Vec<Value> = self
                    .all
                    .iter()
                    .filter(|r| r.group == group && &r.version == v)
                    .map(|r| {
                        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
                        let mut subs = vec![];
                        if r.status {
                            subs.push(json!({"subresource": "status", "responseKind": gvk,
                                "verbs": ["get", "patch", "update"]}));
                        }
                        if r.scale {
                            subs.push(json!({"subresource": "scale", "responseKind":
                                {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                                "verbs": ["get", "patch", "update"]}));
                        }
                        let mut o = json!({"resource": r.plural, "responseKind": gvk,
                            "scope": if r.namespaced {"Namespaced"} else {"Cluster"},
                            "singularResource": r.singular, "verbs": VERBS});
                        if !r.short_names.is_empty() {
                            o["shortNames"] = json!(r.short_names);
                        }
                        if !r.categories.is_empty() {
                            o["categories"] = json!(r.categories);
                        }
                        if !subs.is_empty() {
                            o["subresources"] = json!(subs);
                        }
                        o
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
    }

    /// Aggregated discovery (apidiscovery.k8s.io/v2) for `/api` (core) or `/apis` (all groups).
    pub fn aggregated(&self, core: bool) -> Value {
        let items: Vec<Value> = if core {
            vec![self.group_discovery("")]
        } else {
            self.groups()
                .iter()
                .map(|g| self.group_discovery(g))
                .collect()
        };
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
               "metadata": {}, "items": items})
    }
}

fn version_priority(v: &str) -> (u8, i64, i64) {
    // v1 < v2 ... among GA sorted descending by number; beta before alpha.
    let rest = v.strip_prefix('v').unwrap_or(v);
    let num: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: i64 = num.parse().unwrap_or(0);
    let tail = &rest[num.len()..];
    if tail.is_empty() {
        (0, -n, 0)
    } else if let Some(b) = tail.strip_prefix("beta") {
        (1, -n, -b.parse::<i64>().unwrap_or(0))
    } else if let Some(a) = tail.strip_prefix("alpha") {
        (2, -n, -a.parse::<i64>().unwrap_or(0))
    } else {
        (3, 0, 0)
    }
}

/// Split `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

impl Catalog {
    /// `/openapi/v3`: the index of group-version documents.
    pub fn openapi_v3_root(&self) -> Value {
        let mut paths = serde_json::Map::new();
        let mut gvs: Vec<(String, String)> = vec![];
        for r in &self.all {
            let gv = (r.group.clone(), r.version.clone());
            if !gvs.contains(&gv) {
                gvs.push(gv);
            }
        }
        for (g, v) in gvs {
            let p = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            let hash = self.gv_hash(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash:016X}")}),
            );
        }
        json!({"paths": paths})
    }

    fn gv_hash(&self, group: &str, version: &str) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for r in self
            .all
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            for b in r
                .plural
                .bytes()
                .chain(r.kind.bytes())
                .chain([r.namespaced as u8])
            {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/G/V`: a minimal document with one PATCH operation
    /// per resource listing the query parameters (kubectl checks `fieldValidation` support here)
    /// and permissive schemas.
    pub fn openapi_v3_gv(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force", "pretty"]
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect();
        let mut paths = serde_json::Map::new();
        let mut schemas = serde_json::Map::new();
        for r in self
            .all
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            let p = if r.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
            } else {
                format!("{prefix}/{}/{{name}}", r.plural)
            };
            let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
            paths.insert(
                p,
                json!({"patch": {"operationId": format!("patch{}", r.kind), "parameters": params,
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk}}),
            );
            let schema_name = format!(
                "{}.{}.{}",
                if r.group.is_empty() {
                    "io.k8s.api.core"
                } else {
                    r.group.as_str()
                },
                r.version,
                r.kind
            );
            schemas.insert(
                schema_name,
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "x-kubernetes-group-version-kind": [gvk]}),
            );
        }
        Some(
            json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": schemas}}),
        )
    }
}
