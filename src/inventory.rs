//! What flux-order applied, kept in the cluster so that the next run can prune, skip unchanged
//! Kustomizations, and hand over to Flux. One ConfigMap per Kustomization, in the Kustomization's
//! namespace, named `flux-order-<name>`, holding Flux's inventory format (`entries[{id, v}]`, ids
//! `<namespace>_<name>_<group>_<kind>`), the source revision, a digest of the build and when it
//! was applied. Written by field manager `flux-order`, never with Flux's owner labels.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::build::postbuild::Manifest;
use crate::cluster::{Cluster, ClusterError};
use crate::model::{KsId, api_group, object_meta};

/// Label on every inventory ConfigMap.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "flux-order");
/// Label: the Kustomization's name.
pub const KS_NAME_LABEL: &str = "flux-order.dev/kustomization-name";
/// The field manager of inventory writes.
pub const INVENTORY_MANAGER: &str = "flux-order";

/// One inventory entry, Flux's format.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entry {
    /// `<namespace>_<name>_<group>_<kind>`.
    pub id: String,
    /// The version only, e.g. `v1`.
    pub v: String,
}

const RBAC_KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

impl Entry {
    /// The entry of a manifest.
    pub fn of(obj: &Value) -> Entry {
        let (api, kind, ns, name) = object_meta(obj);
        let group = api_group(api);
        let name = if RBAC_KINDS.contains(&kind) && group == "rbac.authorization.k8s.io" {
            name.replace(':', "__")
        } else {
            name.to_string()
        };
        let v = api.rsplit('/').next().unwrap_or(api).to_string();
        Entry {
            id: format!("{ns}_{name}_{group}_{kind}"),
            v,
        }
    }

    /// (apiVersion, kind, namespace, name) back from the id.
    pub fn parse(&self) -> Option<(String, String, String, String)> {
        let (ns, rest) = self.id.split_once('_')?;
        let (rest, kind) = rest.rsplit_once('_')?;
        let (name, group) = rest.rsplit_once('_')?;
        let name = if RBAC_KINDS.contains(&kind) {
            name.replace("__", ":")
        } else {
            name.to_string()
        };
        let api = if group.is_empty() {
            self.v.clone()
        } else {
            format!("{group}/{}", self.v)
        };
        Some((api, kind.to_string(), ns.to_string(), name))
    }
}

/// The inventory of one Kustomization as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Objects applied, in apply order.
    pub entries: Vec<Entry>,
    /// Source revision (git commit, or `sha256:<digest>` of the build outside git).
    pub revision: String,
    /// Digest of the build that was applied; empty while a run was incomplete.
    pub digest: String,
    /// When it was written (RFC 3339).
    pub applied_at: String,
    /// Whether the Kustomization was Ready after that run.
    pub ready: bool,
    /// The Kustomization whose build held this one (`namespace/name`, empty for none): when the
    /// parent prunes and no longer holds it, its objects are garbage-collected as Flux would.
    pub parent: String,
    /// spec.prune of the Kustomization at the time.
    pub prune: bool,
    /// spec.deletionPolicy at the time (empty: MirrorPrune).
    pub deletion_policy: String,
    /// How the last run ended, as kustomize-controller names the Ready reason
    /// (`ReconciliationSucceeded`, `HealthCheckFailed`, …); empty before any outcome.
    pub outcome: String,
    /// The message of that outcome (secret values masked).
    pub message: String,
    /// Attempts the last run made.
    pub attempts: u32,
}

impl Inventory {
    /// Whether deleting the Kustomization deletes its objects (Flux's finalizer rules).
    pub fn deletes_objects(&self) -> bool {
        match self.deletion_policy.as_str() {
            "Orphan" => false,
            "Delete" | "WaitForTermination" => true,
            _ => self.prune,
        }
    }
}

/// The entries of `old` that `new` no longer has (what prune would consider), in `old`'s order.
pub fn stale(old: &[Entry], new: &[Entry]) -> Vec<Entry> {
    let keep: std::collections::HashSet<&str> = new.iter().map(|e| e.id.as_str()).collect();
    old.iter()
        .filter(|e| !keep.contains(e.id.as_str()))
        .cloned()
        .collect()
}

/// The ConfigMap name for a Kustomization.
pub fn configmap_name(id: &KsId) -> String {
    format!("flux-order-{}", id.name)
}

/// sha256 of the objects as they will be applied (order-independent).
pub fn digest(objects: &[Manifest]) -> String {
    let mut texts: Vec<&str> = objects.iter().map(Manifest::json).collect();
    texts.sort_unstable();
    let mut h = Sha256::new();
    for t in texts {
        h.update(t.as_bytes());
        h.update(b"\n");
    }
    let bytes = h.finalize();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Reads the inventory of `id`; None when flux-order never applied it.
pub async fn read(cluster: &Cluster, id: &KsId) -> Result<Option<Inventory>, ClusterError> {
    let Some(cm) = cluster
        .get_ref("v1", "ConfigMap", &id.namespace, &configmap_name(id))
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(from_configmap(&cm)))
}

/// Decodes an inventory ConfigMap.
pub fn from_configmap(cm: &Value) -> Inventory {
    let get = |k: &str| {
        cm.pointer(&format!("/data/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let entries = serde_json::from_str::<Value>(&get("inventory"))
        .ok()
        .and_then(|v| v.get("entries").cloned())
        .and_then(|e| serde_json::from_value(e).ok())
        .unwrap_or_default();
    Inventory {
        entries,
        revision: get("revision"),
        digest: get("digest"),
        applied_at: get("appliedAt"),
        ready: get("ready") == "true",
        parent: get("parent"),
        prune: get("prune") == "true",
        deletion_policy: get("deletionPolicy"),
        outcome: get("outcome"),
        message: get("message"),
        attempts: get("attempts").parse().unwrap_or(0),
    }
}

/// Writes the inventory of `id` (one server-side apply: atomic), creating the namespace if needed.
pub async fn write(cluster: &Cluster, id: &KsId, inv: &Inventory) -> Result<(), ClusterError> {
    let mut data = serde_json::Map::new();
    data.insert(
        "inventory".into(),
        json!(json!({"entries": inv.entries}).to_string()),
    );
    data.insert("revision".into(), json!(inv.revision));
    data.insert("digest".into(), json!(inv.digest));
    data.insert("appliedAt".into(), json!(inv.applied_at));
    data.insert("ready".into(), json!(inv.ready.to_string()));
    data.insert("parent".into(), json!(inv.parent));
    data.insert("prune".into(), json!(inv.prune.to_string()));
    data.insert("deletionPolicy".into(), json!(inv.deletion_policy));
    data.insert("outcome".into(), json!(inv.outcome));
    data.insert("message".into(), json!(inv.message));
    data.insert("attempts".into(), json!(inv.attempts.to_string()));
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(id),
            "namespace": id.namespace,
            "labels": {
                MANAGED_BY.0: MANAGED_BY.1,
                KS_NAME_LABEL: id.name,
            },
        },
        "data": data,
    });
    match cluster.apply_as(&cm, INVENTORY_MANAGER).await {
        Err(e) if e.code() == Some(404) => {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": id.namespace}});
            cluster.apply_as(&ns, INVENTORY_MANAGER).await?;
            cluster.apply_as(&cm, INVENTORY_MANAGER).await.map(|_| ())
        }
        r => r.map(|_| ()),
    }
}

/// Every inventory ConfigMap in the cluster (or one namespace).
pub async fn list(
    cluster: &Cluster,
    namespace: Option<&str>,
) -> Result<Vec<(KsId, Inventory)>, ClusterError> {
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let items = cluster
        .list("v1", "ConfigMap", namespace, &selector)
        .await?;
    let mut out: Vec<(KsId, Inventory)> = items
        .iter()
        .filter_map(|cm| {
            let ns = cm.pointer("/metadata/namespace")?.as_str()?;
            let name = cm
                .pointer(&format!(
                    "/metadata/labels/{}",
                    KS_NAME_LABEL.replace('/', "~1")
                ))?
                .as_str()?;
            Some((KsId::new(ns, name), from_configmap(cm)))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Deletes the inventory ConfigMap of `id`.
pub async fn remove(cluster: &Cluster, id: &KsId) -> Result<(), ClusterError> {
    cluster
        .delete("v1", "ConfigMap", &id.namespace, &configmap_name(id))
        .await
        .map(|_| ())
}

/// The git commit of `dir` (with `-dirty` when it has uncommitted changes), if it is in git.
pub fn git_revision(dir: &std::path::Path) -> Option<String> {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = run(&["rev-parse", "HEAD"])?;
    let dirty = run(&["status", "--porcelain", "--", "."]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_flux_format_and_round_trip() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "podinfo", "namespace": "default"}});
        let e = Entry::of(&svc);
        assert_eq!(
            e,
            Entry {
                id: "default_podinfo__Service".into(),
                v: "v1".into()
            }
        );
        assert_eq!(
            e.parse().unwrap(),
            (
                "v1".into(),
                "Service".into(),
                "default".into(),
                "podinfo".into()
            )
        );
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}});
        assert_eq!(Entry::of(&ns).id, "_apps__Namespace");
        let cr = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:x"}});
        let e = Entry::of(&cr);
        assert_eq!(e.id, "_system__x_rbac.authorization.k8s.io_ClusterRole");
        assert_eq!(e.parse().unwrap().3, "system:x");
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "a"}});
        assert_eq!(Entry::of(&d).parse().unwrap().0, "apps/v1");
    }

    #[test]
    fn digest_ignores_order() {
        let a = Manifest::new(&json!({"a": 1}), None);
        let b = Manifest::new(&json!({"b": 2}), None);
        assert_eq!(digest(&[a.clone(), b.clone()]), digest(&[b, a]));
    }
}
