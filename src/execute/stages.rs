//! Applies one Kustomization's objects as Flux's `ApplyAllStaged` does: stage 1 (CRDs, Namespaces,
//! ClusterRoles) then stage 2 (kinds ending in `Class`), each waited on (CRDs until Established,
//! then discovery refreshed), then everything else, sorted by Flux's kind rank; objects of a stage
//! are applied concurrently (bounded). Per object: GET live, dry-run, apply only on drift; Flux's
//! per-object policies; immutable-field errors recreate under `force`.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::events::Action;
use crate::cluster::{Cluster, ClusterError};
use crate::model::{api_group, object_meta, subject};

/// Flux's kind order within a stage (fluxcd/pkg ssa sort).
const KIND_RANK: [&str; 23] = [
    "CustomResourceDefinition",
    "Namespace",
    "ClusterRole",
    "ClusterClass",
    "RuntimeClass",
    "PriorityClass",
    "StorageClass",
    "VolumeSnapshotClass",
    "IngressClass",
    "GatewayClass",
    "ClusterRoleBinding",
    "ResourceQuota",
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "LimitRange",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];

fn rank(obj: &Value) -> usize {
    let (_, kind, _, _) = object_meta(obj);
    match kind {
        "MutatingWebhookConfiguration" => KIND_RANK.len() + 1,
        "ValidatingWebhookConfiguration" => KIND_RANK.len() + 2,
        k => KIND_RANK
            .iter()
            .position(|r| *r == k)
            .unwrap_or(KIND_RANK.len()),
    }
}

/// Flux's apply stage of an object: 0 cluster definitions, 1 classes, 2 the rest.
pub fn stage(obj: &Value) -> usize {
    let (api, kind, _, _) = object_meta(obj);
    let group = api_group(api);
    if (group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition")
        || (api == "v1" && kind == "Namespace")
        || (group == "rbac.authorization.k8s.io" && kind == "ClusterRole")
    {
        0
    } else if kind.ends_with("Class") {
        1
    } else {
        2
    }
}

/// The sort key of Flux's apply order: stage, kind rank, then group, kind, namespace, name.
pub fn apply_key(o: &Value) -> (usize, usize, String, String, String, String) {
    let (api, kind, ns, name) = object_meta(o);
    (
        stage(o),
        rank(o),
        api_group(api).to_string(),
        kind.to_string(),
        ns.to_string(),
        name.to_string(),
    )
}

/// Sorts objects in Flux's apply order.
pub fn sort_for_apply(objects: &mut [Value]) {
    objects.sort_by_cached_key(apply_key);
}

/// A per-object policy key, read from labels or annotations of the desired or live object,
/// case-insensitively, as Flux does.
fn policy(obj: &Value, live: Option<&Value>, key: &str) -> Option<String> {
    [Some(obj), live].into_iter().flatten().find_map(|o| {
        ["labels", "annotations"].iter().find_map(|f| {
            o.pointer(&format!("/metadata/{f}"))
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_lowercase)
        })
    })
}

/// Whether the object asks for Flux's force path (`kustomize.toolkit.fluxcd.io/force: enabled`
/// on the desired or live object).
pub fn forced(obj: &Value, live: Option<&Value>) -> bool {
    policy(obj, live, "kustomize.toolkit.fluxcd.io/force").as_deref() == Some("enabled")
}

/// The parts of an object Flux compares for drift: labels, annotations, and everything outside
/// metadata and status.
fn drift_view(o: &Value) -> Value {
    let mut v = o.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
        let meta = m.remove("metadata").unwrap_or(Value::Null);
        let mut keep = serde_json::Map::new();
        for f in ["labels", "annotations"] {
            if let Some(x) = meta.get(f) {
                keep.insert(f.into(), x.clone());
            }
        }
        m.insert("metadata".into(), Value::Object(keep));
    }
    v
}

/// Why an object could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("{subject} {phase} failed: {source}")]
pub struct ApplyError {
    /// `Kind/ns/name`.
    pub subject: String,
    /// `dry-run` or `apply`.
    pub phase: &'static str,
    /// The API error.
    pub source: ClusterError,
}

/// Applies one object; `force` allows recreating it on immutable-field errors.
pub async fn apply_object(
    cluster: &Cluster,
    obj: &Value,
    force: bool,
    known: bool,
) -> Result<(Action, Option<i64>), ApplyError> {
    let subj = subject(obj);
    let err = |phase, source| ApplyError {
        subject: subj.clone(),
        phase,
        source,
    };
    let generation = |v: &Value| v.pointer("/metadata/generation").and_then(Value::as_i64);
    // A kind discovery did not know (its CRD established since, by another branch or another
    // process): look it up again before the request, so a retry sees it.
    let (api, kind, _, _) = object_meta(obj);
    if cluster.kind(api, kind).is_none() {
        cluster.refresh_kind(api, kind).await;
    }
    // An object the previous run did not apply is almost always new: apply it at once instead of
    // GET + dry-run first (one round trip instead of two or three), and tell created from
    // configured by who else manages it. Anything unusual (an immutable field, IfNotPresent)
    // takes the full path below.
    let ssa_desired = policy(obj, None, "kustomize.toolkit.fluxcd.io/ssa");
    if !known && ssa_desired.as_deref() != Some("ifnotpresent") {
        if ssa_desired.as_deref() == Some("ignore")
            || policy(obj, None, "kustomize.toolkit.fluxcd.io/reconcile").as_deref()
                == Some("disabled")
        {
            return Ok((Action::Skipped, None));
        }
        match cluster.apply(obj, false).await {
            Ok(applied) => {
                let managers = applied
                    .pointer("/metadata/managedFields")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let action = if managers <= 1 && generation(&applied).unwrap_or(1) <= 1 {
                    Action::Created
                } else {
                    Action::Configured
                };
                return Ok((action, generation(&applied)));
            }
            Err(e) if e.is_immutable() => {}
            Err(e) => return Err(err("apply", e)),
        }
    }
    let live = cluster.get(obj).await.map_err(|e| err("apply", e))?;
    let ssa = policy(obj, live.as_ref(), "kustomize.toolkit.fluxcd.io/ssa");
    if ssa.as_deref() == Some("ignore")
        || policy(obj, live.as_ref(), "kustomize.toolkit.fluxcd.io/reconcile").as_deref()
            == Some("disabled")
        || (ssa.as_deref() == Some("ifnotpresent") && live.is_some())
    {
        return Ok((Action::Skipped, live.as_ref().and_then(generation)));
    }
    let force = force || forced(obj, live.as_ref());
    let Some(live) = live else {
        let applied = cluster
            .apply(obj, false)
            .await
            .map_err(|e| err("apply", e))?;
        return Ok((Action::Created, generation(&applied)));
    };
    match cluster.apply(obj, true).await {
        Ok(dry) if drift_view(&dry) == drift_view(&live) => {
            Ok((Action::Unchanged, generation(&live)))
        }
        Ok(_) => match cluster.apply(obj, false).await {
            Ok(applied) => Ok((Action::Configured, generation(&applied))),
            Err(e) if e.is_immutable() && force => {
                recreate(cluster, obj).await.map_err(|e| err("apply", e))
            }
            Err(e) => Err(err("apply", e)),
        },
        Err(e) if e.is_immutable() && force => {
            recreate(cluster, obj).await.map_err(|e| err("dry-run", e))
        }
        Err(e) => Err(err("dry-run", e)),
    }
}

/// Flux's force path: delete (background), wait until gone, apply again.
async fn recreate(cluster: &Cluster, obj: &Value) -> Result<(Action, Option<i64>), ClusterError> {
    let (api, kind, ns, name) = object_meta(obj);
    cluster.delete(api, kind, ns, name).await?;
    cluster
        .wait_deleted(api, kind, ns, name, Duration::from_secs(60))
        .await?;
    let applied = cluster.apply(obj, false).await?;
    Ok((
        Action::Created,
        applied
            .pointer("/metadata/generation")
            .and_then(Value::as_i64),
    ))
}

/// Waits until every CRD among `objects` is Established, then refreshes discovery for the kinds
/// they define.
pub async fn wait_crds(
    cluster: &Cluster,
    objects: &[Value],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    for crd in objects
        .iter()
        .filter(|o| object_meta(o).1 == "CustomResourceDefinition")
    {
        let name = object_meta(crd).3;
        loop {
            let live = cluster.get(crd).await.map_err(|e| e.to_string())?;
            let established = live
                .as_ref()
                .and_then(|l| l.pointer("/status/conditions"))
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.get("type").and_then(Value::as_str) == Some("Established")
                            && c.get("status").and_then(Value::as_str) == Some("True")
                    })
                });
            if established {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "CustomResourceDefinition/{name} not Established after {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (api_version, kind, _) in crate::model::crd_served_kinds(crd) {
            let deadline_kind = tokio::time::Instant::now() + Duration::from_secs(10);
            while !cluster.refresh_kind(&api_version, &kind).await {
                if tokio::time::Instant::now() >= deadline_kind {
                    return Err(format!(
                        "{kind} ({api_version}) not served after its CRD was Established"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(())
}

/// What a staged apply did: every object applied (in apply order) and, if it stopped early, why.
#[derive(Debug, Default)]
pub struct Staged {
    /// Objects applied, with their action.
    pub applied: Vec<(Value, Action)>,
    /// The first error (the stages after it did not run), or an interruption.
    pub error: Option<String>,
    /// Why that error cannot heal by waiting, if it cannot (see `retry::permanent`).
    pub permanent: Option<&'static str>,
}

/// Applies `objects` stage by stage, `parallel` at a time within a stage, calling `on_applied`
/// for each. Stops after a stage with an error, or when `cancel` fires (objects in flight finish).
pub async fn apply_staged(
    cluster: &Cluster,
    mut objects: Vec<Value>,
    known: &std::collections::HashSet<String>,
    force: bool,
    parallel: usize,
    cancel: &tokio_util::sync::CancellationToken,
    mut on_applied: impl FnMut(&Value, Action),
) -> Staged {
    sort_for_apply(&mut objects);
    let total = objects.len();
    let mut out = Staged::default();
    for st in 0..3 {
        let batch: Vec<Value> = objects.iter().filter(|o| stage(o) == st).cloned().collect();
        if batch.is_empty() {
            continue;
        }
        let mut results = futures::stream::iter(batch.iter().cloned().map(|o| async move {
            if cancel.is_cancelled() {
                return (o, Err(None));
            }
            let is_known = known.contains(&crate::inventory::Entry::of(&o).id);
            let r = apply_object(cluster, &o, force, is_known)
                .await
                .map_err(Some);
            (o, r)
        }))
        .buffered(parallel.max(1));
        while let Some((o, r)) = results.next().await {
            match r {
                Ok((a, generation)) => {
                    on_applied(&o, a);
                    // Remember the generation the server gave it: the health gate must not
                    // trust a watched copy older than this.
                    let mut o = o;
                    if let (Some(g), Some(meta)) = (
                        generation,
                        o.get_mut("metadata").and_then(Value::as_object_mut),
                    ) {
                        meta.insert("generation".into(), Value::from(g));
                    }
                    out.applied.push((o, a));
                }
                Err(e) => {
                    if out.error.is_none() {
                        out.permanent = e.as_ref().and_then(|e| super::retry::permanent(&e.source));
                        out.error = Some(match e {
                            Some(e) => e.to_string(),
                            None => "interrupted".to_string(),
                        });
                    }
                }
            }
        }
        if let Some(e) = out.error.as_mut() {
            if e == "interrupted" {
                *e = format!("interrupted after {} of {total} objects", out.applied.len());
            }
            return out;
        }
        if st == 0
            && let Err(e) = wait_crds(cluster, &batch, Duration::from_secs(60)).await
        {
            out.error = Some(e);
            return out;
        }
    }
    out
}

/// Whether Flux's prune would delete `live` for `owner`: it must carry both of the owner's labels
/// and no `prune: disabled`, `reconcile: disabled` or `ssa: Ignore`.
pub fn prunable(live: &Value, owner: &crate::model::KsId) -> bool {
    let label = |k: &str| {
        live.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
    };
    let owned = label(crate::build::postbuild::OWNER_NAME_LABEL) == Some(owner.name.as_str())
        && label(crate::build::postbuild::OWNER_NAMESPACE_LABEL) == Some(owner.namespace.as_str());
    let protected = policy(live, None, "kustomize.toolkit.fluxcd.io/prune").as_deref()
        == Some("disabled")
        || policy(live, None, "kustomize.toolkit.fluxcd.io/reconcile").as_deref()
            == Some("disabled")
        || policy(live, None, "kustomize.toolkit.fluxcd.io/ssa").as_deref() == Some("ignore");
    owned && !protected
}

/// Prunes `stale` inventory entries of `owner` in reverse apply order (CRDs and Namespaces last),
/// as Flux does: a missing object counts as deleted; an object without both of `owner`'s labels,
/// or protected by `prune: disabled`, `reconcile: disabled` or `ssa: Ignore`, is skipped.
/// Returns the entries that could not be deleted (kept in the inventory) and the first error.
pub async fn prune(
    cluster: &Cluster,
    owner: &crate::model::KsId,
    stale: &[crate::inventory::Entry],
    mut on_pruned: impl FnMut(&str, Action),
) -> (Vec<crate::inventory::Entry>, Option<String>) {
    let mut objs: Vec<(Value, crate::inventory::Entry)> = stale
        .iter()
        .filter_map(|e| {
            let (api, kind, ns, name) = e.parse()?;
            let mut meta = serde_json::Map::new();
            meta.insert("name".into(), Value::String(name));
            if !ns.is_empty() {
                meta.insert("namespace".into(), Value::String(ns));
            }
            Some((
                serde_json::json!({"apiVersion": api, "kind": kind, "metadata": meta}),
                e.clone(),
            ))
        })
        .collect();
    // Reverse apply order: webhooks and unknown kinds first, CRDs and Namespaces last.
    objs.sort_by_cached_key(|(o, _)| std::cmp::Reverse(apply_key(o)));
    let mut kept = Vec::new();
    let mut first_err = None;
    for (o, entry) in objs {
        let subj = subject(&o);
        let (api, kind, ns, name) = object_meta(&o);
        let live = match cluster.get(&o).await {
            Ok(l) => l,
            Err(e) => {
                kept.push(entry);
                first_err.get_or_insert(format!("prune {subj}: {e}"));
                continue;
            }
        };
        let Some(live) = live else {
            on_pruned(&subj, Action::Deleted);
            continue;
        };
        if !prunable(&live, owner) {
            on_pruned(&subj, Action::Skipped);
            continue;
        }
        match cluster.delete(api, kind, ns, name).await {
            Ok(_) => on_pruned(&subj, Action::Deleted),
            Err(e) => {
                kept.push(entry);
                first_err.get_or_insert(format!("delete failed, errors: {subj}: {e}"));
            }
        }
    }
    (kept, first_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_order_follows_flux_stages_and_ranks() {
        let mut objs = vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}),
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "n"}}),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "s"}}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "c"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}}),
        ];
        sort_for_apply(&mut objs);
        let kinds: Vec<&str> = objs.iter().map(|o| object_meta(o).1).collect();
        assert_eq!(
            kinds,
            vec![
                "CustomResourceDefinition",
                "Namespace",
                "StorageClass",
                "ConfigMap",
                "Deployment",
                "Widget"
            ]
        );
    }

    #[test]
    fn drift_ignores_server_fields() {
        let a = json!({"kind": "X", "metadata": {"name": "a", "resourceVersion": "1", "labels": {"x": "1"}}, "spec": {"a": 1}, "status": {"s": 1}});
        let b = json!({"kind": "X", "metadata": {"name": "a", "resourceVersion": "2", "labels": {"x": "1"}}, "spec": {"a": 1}});
        assert_eq!(drift_view(&a), drift_view(&b));
    }
}
