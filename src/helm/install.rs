//! Installing or upgrading one HelmRelease as Helm does under helm-controller: read the release
//! history from Helm's storage; compose values (the fleet's ConfigMaps/Secrets, else the
//! cluster's); apply the chart's CRDs by the install/upgrade policy (default Create) and wait for
//! them; render against the live cluster and post-render; when the deployed revision has the
//! same chart, values and manifest and its objects are healthy, write nothing; otherwise record
//! revision N+1 as pending, run `pre-*` hooks (weight, then name; delete policies, default
//! `before-hook-creation`; waiting only on Jobs and Pods), server-side apply the manifest with
//! field manager `helm-controller` and force plus Helm's ownership metadata, wait with kstatus
//! (Jobs must complete unless `disableWaitForJobs`; `disableWait` skips it) within the action's
//! timeout, run `post-*` hooks, delete what the previous revision had and this one does not, and
//! record the revision as deployed (or failed), the previous one superseded, at most
//! `maxHistory` (5) kept. Network-touching.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::Release;
use super::render::{ClusterTarget, Helm, Hook, RenderRequest, Rendered};
use super::storage;
use crate::build::Kustomize;
use crate::cluster::Cluster;
use crate::execute::events::{Action, Counts, Event, FailReason, Outcome};
use crate::health::gate::{self, Gate, Target};
use crate::health::watch::Watchers;
use crate::model::{object_meta, subject};

/// The field manager helm-controller applies with.
pub const FIELD_MANAGER: &str = "helm-controller";

/// What installing needs besides the cluster.
#[derive(Debug)]
pub struct Env {
    /// The helm binary.
    pub helm: Helm,
    /// kustomize, for `postRenderers`.
    pub kustomize: Kustomize,
    /// Where `helm --dry-run=server` renders.
    pub target: ClusterTarget,
    /// ConfigMaps and Secrets of the fleet, by (namespace, kind, name).
    pub fleet_values: Arc<BTreeMap<(String, String, String), Value>>,
}

fn now() -> (u64, String) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        d.as_secs(),
        crate::report::progress::timestamp(SystemTime::now()).replace(' ', "T"),
    )
}

/// Every revision's Secret of `rel`'s release in its storage namespace.
async fn release_secrets(
    cluster: &Cluster,
    rel: &Release,
) -> Result<Vec<Value>, crate::cluster::ClusterError> {
    cluster
        .list(
            "v1",
            "Secret",
            Some(&rel.storage_namespace),
            &storage::selector(&rel.release_name),
        )
        .await
}

/// Installs or upgrades `rel`; returns its outcome and object counts.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    cluster: &Cluster,
    watchers: &Arc<Watchers>,
    env: &Env,
    rel: &Release,
    timeout_override: Option<Duration>,
    force: bool,
    cancel: &CancellationToken,
    events: &tokio::sync::mpsc::UnboundedSender<Event>,
    applied_tx: impl FnOnce(),
) -> (Outcome, Counts) {
    let mut counts = Counts::default();
    let failed = |reason: String| Outcome::Failed {
        reason,
        flux_reason: FailReason::ReconciliationFailed,
    };
    if rel.spec.kube_config.is_some() {
        return (
            failed("spec.kubeConfig targets another cluster; flux-order installs into the current cluster only".into()),
            counts,
        );
    }
    let (_chart_copy, chart) = match super::prepared(&rel.chart) {
        Ok(c) => c,
        Err(e) => return (failed(e), counts),
    };
    let emit = |e: Event| {
        let _ = events.send(e);
    };
    let emit_applied = |object: String, action: Action| {
        let _ = events.send(Event::Applied {
            id: rel.id.clone(),
            object,
            action,
        });
    };

    // 1. History.
    let secrets = match release_secrets(cluster, rel).await {
        Ok(s) => s,
        Err(e) => return (failed(format!("reading the release history: {e}")), counts),
    };
    let history = storage::revisions(&secrets);
    let deployed = history
        .iter()
        .find(|r| storage::status(r) == "deployed")
        .cloned();
    let upgrade = deployed.is_some();
    let next = history
        .first()
        .and_then(|r| r["version"].as_u64())
        .unwrap_or(0)
        + 1;

    // 2. Values.
    let values = match compose_values(cluster, env, rel).await {
        Ok(v) => v,
        Err(e) => return (failed(e), counts),
    };

    // In sync, as helm-controller sees it: the deployed revision has this chart version, these
    // values and these post-render settings, and its objects are there and healthy.
    if let Some(d) = &deployed {
        let synced = match in_sync(env, rel, &chart, d, &secrets, &values.values).await {
            Ok(s) => s,
            Err(e) => return (failed(e), counts),
        };
        if synced && !force {
            let objects: Vec<Value> = crate::yaml::from_multi(d["manifest"].as_str().unwrap_or(""))
                .unwrap_or_default()
                .into_iter()
                .filter(|o| o.is_object())
                .map(|o| owned(&o, rel, cluster))
                .collect();
            let gate = Gate {
                targets: wait_targets(rel, true, &objects),
                exprs: None,
                timeout: Duration::from_secs(10),
                file: rel.file.clone(),
            };
            if gate::probe(cluster, watchers, &gate.targets, &gate).await {
                counts.unchanged = objects.len();
                applied_tx();
                return (Outcome::Unchanged, counts);
            }
        }
    }

    // 3. CRDs, before the render (a dry-run of custom resources needs them).
    let policy = rel.spec.crd_policy(upgrade);
    if policy != "Skip" {
        let crds = match env.helm.crds(&chart).await {
            Ok(c) => c,
            Err(e) => return (failed(e.to_string()), counts),
        };
        for mut crd in crds {
            label_origin(&mut crd, rel);
            let exists = matches!(cluster.get(&crd).await, Ok(Some(_)));
            if exists && policy == "Create" {
                continue;
            }
            match cluster.apply_as(&crd, FIELD_MANAGER).await {
                Ok(_) => {
                    counts.add(if exists {
                        Action::Configured
                    } else {
                        Action::Created
                    });
                    emit_applied(
                        subject(&crd),
                        if exists {
                            Action::Configured
                        } else {
                            Action::Created
                        },
                    );
                }
                Err(e) => return (failed(format!("CRD {}: {e}", subject(&crd))), counts),
            }
            if let Err(e) =
                crate::execute::stages::wait_crds(cluster, &[crd], Duration::from_secs(60)).await
            {
                return (failed(e), counts);
            }
        }
    }

    // 4–5. Render against the cluster, post-render.
    let (rendered, objects) = match render_live(cluster, env, rel, &chart, &values, upgrade).await {
        Ok(r) => r,
        Err(e) => return (failed(e), counts),
    };
    let timeout = timeout_override.unwrap_or_else(|| rel.spec.timeout(upgrade));
    let gate = Gate {
        targets: wait_targets(rel, upgrade, &objects),
        exprs: None,
        timeout,
        file: rel.file.clone(),
    };

    // 7. Record the pending revision.
    let (now_unix, now_text) = now();
    let mut record = rendered.release.clone();
    record["version"] = json!(next);
    record["namespace"] = json!(rel.release_namespace);
    record["config"] = values.values.clone();
    record["apply_method"] = json!("ssa");
    record["info"]["first_deployed"] = deployed
        .as_ref()
        .and_then(|d| d.pointer("/info/first_deployed").cloned())
        .unwrap_or_else(|| json!(now_text));
    record["info"]["last_deployed"] = json!(now_text);
    record["info"]["status"] = json!(if upgrade {
        "pending-upgrade"
    } else {
        "pending-install"
    });
    record["info"]["description"] = json!(if upgrade {
        "Preparing upgrade"
    } else {
        "Initial install underway"
    });
    if let Err(e) = cluster
        .apply_as(&record_secret(&record, rel, now_unix, true), FIELD_MANAGER)
        .await
    {
        return (failed(format!("writing the release record: {e}")), counts);
    }

    let result = async {
        if rel.spec.target_namespace.is_some()
            && rel.spec.install.as_ref().is_some_and(|i| i.create_namespace)
        {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": rel.release_namespace}});
            cluster.apply_as(&ns, FIELD_MANAGER).await.map_err(|e| e.to_string())?;
        }
        let hooks_on = !rel.spec.disable_hooks(upgrade);
        let pre = if upgrade { "pre-upgrade" } else { "pre-install" };
        let post = if upgrade { "post-upgrade" } else { "post-install" };
        if hooks_on {
            run_hooks(cluster, watchers, rel, &rendered.hooks, pre, timeout, cancel, &mut record).await?;
        }
        // 9. The manifest.
        let mut sorted = objects.clone();
        crate::execute::stages::sort_for_apply(&mut sorted);
        for o in &sorted {
            if cancel.is_cancelled() {
                return Err("interrupted".to_string());
            }
            let existed = matches!(cluster.get(o).await, Ok(Some(_)));
            cluster
                .apply_as(o, FIELD_MANAGER)
                .await
                .map_err(|e| format!("{}: {e}", subject(o)))?;
            let action = if existed { Action::Configured } else { Action::Created };
            counts.add(action);
            emit_applied(subject(o), action);
        }
        applied_tx();
        emit(Event::AllApplied { id: rel.id.clone() });
        // 10. Wait.
        gate::wait(
            cluster,
            watchers,
            &gate,
            cancel,
            |p| {
                emit(Event::Waiting {
                    id: rel.id.clone(),
                    ready: p.ready,
                    total: p.total,
                    pending: p.pending.clone(),
                });
            },
            |_| {},
        )
        .await?;
        // 11. post hooks.
        if hooks_on {
            run_hooks(cluster, watchers, rel, &rendered.hooks, post, timeout, cancel, &mut record).await?;
        }
        // 12. What left the chart.
        if let Some(d) = &deployed {
            let keep: BTreeSet<(String, String, String, String)> = objects.iter().map(key).collect();
            let old = d["manifest"].as_str().unwrap_or("");
            for o in crate::yaml::from_multi(old).unwrap_or_default() {
                if !o.is_object() {
                    continue;
                }
                let o = owned(&o, rel, cluster);
                if keep.contains(&key(&o)) {
                    continue;
                }
                let (api, kind, ns, name) = object_meta(&o);
                match cluster.delete(api, kind, ns, name).await {
                    Ok(true) => {
                        counts.add(Action::Deleted);
                        emit_applied(subject(&o), Action::Deleted);
                    }
                    Ok(false) => {}
                    Err(e) => return Err(format!("deleting {}: {e}", subject(&o))),
                }
            }
        }
        Ok::<(), String>(())
    }
    .await;

    // 13. Record the outcome.
    let (now_unix, _) = now();
    let (status, description) = match &result {
        Ok(()) if upgrade => ("deployed", "Upgrade complete".to_string()),
        Ok(()) => ("deployed", "Install complete".to_string()),
        Err(e) => ("failed", mask(e, &values.secret_strings)),
    };
    record["info"]["status"] = json!(status);
    record["info"]["description"] = json!(description);
    let mut write_err = None;
    if let Err(e) = cluster
        .apply_as(&record_secret(&record, rel, now_unix, false), FIELD_MANAGER)
        .await
    {
        write_err = Some(format!("writing the release record: {e}"));
    }
    if result.is_ok() {
        if let Some(mut d) = deployed {
            d["info"]["status"] = json!("superseded");
            let _ = cluster
                .apply_as(&record_secret(&d, rel, now_unix, false), FIELD_MANAGER)
                .await;
        }
        let max = rel.spec.max_history.unwrap_or(5).max(1) as usize;
        let mut versions: Vec<u64> = history
            .iter()
            .filter_map(|r| r["version"].as_u64())
            .collect();
        versions.push(next);
        versions.sort_unstable_by(|a, b| b.cmp(a));
        for old in versions.into_iter().skip(max) {
            let _ = cluster
                .delete(
                    "v1",
                    "Secret",
                    &rel.storage_namespace,
                    &storage::secret_name(&rel.release_name, old),
                )
                .await;
        }
    }
    match (result, write_err) {
        (Ok(()), None) => (Outcome::Ready, counts),
        (Ok(()), Some(e)) => (failed(e), counts),
        (Err(e), _) => (failed(mask(&e, &values.secret_strings)), counts),
    }
}

/// Renders `rel` against the cluster (`--dry-run=server`, as an upgrade when a deployed release
/// lives in the same namespace) and post-renders it; returns the render and its objects as they
/// would be applied (Helm's ownership metadata, namespaces defaulted).
async fn render_live(
    cluster: &Cluster,
    env: &Env,
    rel: &Release,
    chart: &std::path::Path,
    values: &super::values::Composed,
    upgrade: bool,
) -> Result<(Rendered, Vec<Value>), String> {
    let req = RenderRequest {
        release: &rel.release_name,
        namespace: &rel.release_namespace,
        chart,
        values: &values.values,
        cluster: Some(&env.target),
        upgrade: upgrade && rel.storage_namespace == rel.release_namespace,
        skip_schema_validation: rel.spec.skip_schema_validation(upgrade),
        disable_openapi_validation: rel.spec.disable_openapi_validation(upgrade),
    };
    let rendered = env
        .helm
        .render(&req)
        .await
        .map_err(|e| mask(&e.to_string(), &values.secret_strings))?;
    let rendered = super::render::post_render(
        rendered,
        &rel.spec,
        &rel.id.name,
        &rel.id.namespace,
        &env.kustomize,
    )
    .await
    .map_err(|e| e.to_string())?;
    let objects = rendered
        .objects
        .iter()
        .map(|o| owned(o, rel, cluster))
        .collect();
    Ok((rendered, objects))
}

/// Whether the deployed revision `d` is in sync, as helm-controller sees it: same chart name,
/// version and appVersion, same values, same post-render settings (the digest label).
async fn in_sync(
    env: &Env,
    rel: &Release,
    chart: &std::path::Path,
    d: &Value,
    secrets: &[Value],
    values: &Value,
) -> Result<bool, String> {
    let meta = env
        .helm
        .chart_metadata(chart)
        .await
        .map_err(|e| e.to_string())?;
    let same_chart = ["name", "version", "appVersion"]
        .iter()
        .all(|k| d.pointer(&format!("/chart/metadata/{k}")) == meta.get(*k));
    let same_values = d.get("config").cloned().unwrap_or(json!({})) == *values;
    let label = format!("/metadata/labels/{}", SPEC_DIGEST_LABEL.replace('/', "~1"));
    let digest = spec_digest(rel);
    let same_spec = secrets.iter().any(|s| {
        s.pointer("/metadata/labels/version")
            .and_then(Value::as_str)
            == d["version"].as_u64().map(|v| v.to_string()).as_deref()
            && s.pointer(&label).and_then(Value::as_str) == Some(digest.as_str())
    });
    Ok(same_chart && same_values && same_spec)
}

/// What installing `rel` now would apply (for `diff`): the deployed revision's objects when it is
/// in sync (apply would write nothing), else a render against the cluster; with the strings that
/// came from Secrets (to mask).
pub async fn objects_for_diff(
    cluster: &Cluster,
    env: &Env,
    rel: &Release,
) -> Result<(Vec<Value>, Vec<String>), String> {
    let (_copy, chart) = super::prepared(&rel.chart)?;
    let secrets = release_secrets(cluster, rel)
        .await
        .map_err(|e| e.to_string())?;
    let history = storage::revisions(&secrets);
    let deployed = history.iter().find(|r| storage::status(r) == "deployed");
    let values = compose_values(cluster, env, rel).await?;
    if let Some(d) = deployed
        && in_sync(env, rel, &chart, d, &secrets, &values.values).await?
    {
        let objects = manifest_objects(cluster, d)
            .iter()
            .map(|o| owned(o, rel, cluster))
            .collect();
        return Ok((objects, values.secret_strings));
    }
    let (_, objects) = render_live(cluster, env, rel, &chart, &values, deployed.is_some()).await?;
    Ok((objects, values.secret_strings))
}

/// Replaces every value that came from a Secret by `***`.
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), crate::build::postbuild::MASK);
    }
    out
}

/// [`mask`] on every string of `v`.
pub fn mask_value(v: &mut Value, secrets: &[String]) {
    match v {
        Value::String(s) if secrets.iter().any(|x| s.contains(x.as_str())) => {
            *s = mask(s, secrets);
        }
        Value::Array(a) => a.iter_mut().for_each(|x| mask_value(x, secrets)),
        Value::Object(m) => m.values_mut().for_each(|x| mask_value(x, secrets)),
        _ => {}
    }
}

/// Composes the values, reading valuesFrom objects the fleet does not define from the cluster.
async fn compose_values(
    cluster: &Cluster,
    env: &Env,
    rel: &Release,
) -> Result<super::values::Composed, String> {
    let ns = &rel.id.namespace;
    let mut found: BTreeMap<(String, String), Option<Value>> = BTreeMap::new();
    for r in &rel.spec.values_from {
        let key = (r.kind.clone(), r.name.clone());
        if found.contains_key(&key) {
            continue;
        }
        let v = match env
            .fleet_values
            .get(&(ns.clone(), r.kind.clone(), r.name.clone()))
        {
            Some(v) => Some(v.clone()),
            None => cluster
                .get_ref("v1", &r.kind, ns, &r.name)
                .await
                .map_err(|e| format!("valuesFrom {}/{}: {e}", r.kind, r.name))?,
        };
        found.insert(key, v);
    }
    let lookup = |kind: &str, name: &str| {
        found
            .get(&(kind.to_string(), name.to_string()))
            .cloned()
            .flatten()
    };
    super::values::compose(
        &rel.spec.values_from,
        rel.spec.values.as_ref(),
        &lookup,
        &format!("in namespace {ns} of the fleet or the cluster"),
    )
    .map_err(|e| e.to_string())
}

/// `app.kubernetes.io/managed-by: Helm` and the `meta.helm.sh/release-*` annotations, and the
/// release namespace on namespaced objects that have none.
fn owned(o: &Value, rel: &Release, cluster: &Cluster) -> Value {
    let mut o = o.clone();
    let (api, kind, ns, _) = object_meta(&o);
    let namespaced = cluster
        .kind(api, kind)
        .map(|k| k.namespaced)
        .unwrap_or(true);
    if namespaced && ns.is_empty() {
        o["metadata"]["namespace"] = json!(rel.release_namespace);
    }
    let meta = &mut o["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"]["meta.helm.sh/release-name"] = json!(rel.release_name);
    meta["annotations"]["meta.helm.sh/release-namespace"] = json!(rel.release_namespace);
    o
}

fn label_origin(o: &mut Value, rel: &Release) {
    let meta = &mut o["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"]["helm.toolkit.fluxcd.io/name"] = json!(rel.id.name);
    meta["labels"]["helm.toolkit.fluxcd.io/namespace"] = json!(rel.id.namespace);
}

fn key(o: &Value) -> (String, String, String, String) {
    let (api, kind, ns, name) = object_meta(o);
    (
        crate::model::api_group(api).to_string(),
        kind.to_string(),
        ns.to_string(),
        name.to_string(),
    )
}

/// What the release waits for: every object (Jobs only when they must complete), nothing with
/// `disableWait`.
fn wait_targets(rel: &Release, upgrade: bool, objects: &[Value]) -> Vec<Target> {
    if !rel.spec.wait(upgrade) {
        return Vec::new();
    }
    let jobs = rel.spec.wait_for_jobs(upgrade);
    let mut out: Vec<Target> = objects
        .iter()
        .filter(|o| jobs || object_meta(o).1 != "Job")
        .map(|o| {
            let (api, kind, ns, name) = object_meta(o);
            Target {
                api_version: api.into(),
                kind: kind.into(),
                namespace: ns.into(),
                name: name.into(),
                ttl_job: kind == "Job" && o.pointer("/spec/ttlSecondsAfterFinished").is_some(),
                min_generation: None,
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A label on flux-order's release Secrets: the digest of the HelmRelease settings that change
/// a render without changing chart or values (post-renderers, commonMetadata, names), which
/// helm-controller keeps on the HelmRelease's status instead. Helm ignores it.
pub const SPEC_DIGEST_LABEL: &str = "flux-order.dev/spec-digest";

fn spec_digest(rel: &Release) -> String {
    use sha2::Digest;
    let relevant = json!({
        "postRenderers": rel.object.pointer("/spec/postRenderers"),
        "commonMetadata": rel.object.pointer("/spec/commonMetadata"),
        "postRenderStrategy": rel.object.pointer("/spec/postRenderStrategy"),
        "release": [&rel.release_name, &rel.release_namespace],
    });
    let d = sha2::Sha256::digest(relevant.to_string().as_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The release Secret of `record`, with the spec digest label.
fn record_secret(record: &Value, rel: &Release, now_unix: u64, created: bool) -> Value {
    let mut s = storage::secret(record, &rel.storage_namespace, now_unix, created);
    let labels = &mut s["metadata"]["labels"];
    labels[SPEC_DIGEST_LABEL] = json!(spec_digest(rel));
    // Which HelmRelease installed it (for status and delete); Helm ignores them.
    labels["helm.toolkit.fluxcd.io/name"] = json!(rel.id.name);
    labels["helm.toolkit.fluxcd.io/namespace"] = json!(rel.id.namespace);
    s
}

/// The objects of a stored release's manifest, with the release namespace on namespaced objects
/// that have none (as Helm applied them).
pub fn manifest_objects(cluster: &Cluster, release: &Value) -> Vec<Value> {
    let ns = release["namespace"].as_str().unwrap_or("");
    crate::yaml::from_multi(release["manifest"].as_str().unwrap_or(""))
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.is_object())
        .map(|mut o| {
            let (api, kind, has_ns, _) = object_meta(&o);
            let namespaced = cluster
                .kind(api, kind)
                .map(|k| k.namespaced)
                .unwrap_or(true);
            if namespaced && has_ns.is_empty() {
                o["metadata"]["namespace"] = json!(ns);
            }
            o
        })
        .collect()
}

/// Uninstalls `rel` as `helm uninstall` does: `pre-delete` hooks, the objects of the last
/// revision's manifest, the release Secrets, `post-delete` hooks. Returns what was deleted; Ok(None)
/// when there is no release.
pub async fn uninstall(
    cluster: &Cluster,
    watchers: &Arc<Watchers>,
    rel: &Release,
    cancel: &CancellationToken,
) -> Result<Option<Vec<String>>, String> {
    let secrets = release_secrets(cluster, rel)
        .await
        .map_err(|e| e.to_string())?;
    let history = storage::revisions(&secrets);
    let Some(last) = history.first() else {
        return Ok(None);
    };
    let hooks: Vec<Hook> = last["hooks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| {
            let object = crate::yaml::from_multi(h["manifest"].as_str().unwrap_or(""))
                .ok()?
                .into_iter()
                .find(|v| v.is_object())?;
            Some(Hook { record: h, object })
        })
        .collect();
    let timeout = rel.spec.timeout(true);
    let mut record = last.clone();
    run_hooks(
        cluster,
        watchers,
        rel,
        &hooks,
        "pre-delete",
        timeout,
        cancel,
        &mut record,
    )
    .await?;
    let mut deleted = Vec::new();
    let mut objects = manifest_objects(cluster, last);
    crate::execute::stages::sort_for_apply(&mut objects);
    for o in objects.iter().rev() {
        let (api, kind, ns, name) = object_meta(o);
        if cluster
            .delete(api, kind, ns, name)
            .await
            .map_err(|e| e.to_string())?
        {
            deleted.push(subject(o));
        }
    }
    for s in &secrets {
        let name = s
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        cluster
            .delete("v1", "Secret", &rel.storage_namespace, name)
            .await
            .map_err(|e| e.to_string())?;
    }
    run_hooks(
        cluster,
        watchers,
        rel,
        &hooks,
        "post-delete",
        timeout,
        cancel,
        &mut record,
    )
    .await?;
    Ok(Some(deleted))
}

/// Runs the hooks of `event` in Helm's order, recording `last_run` in `record`.
#[allow(clippy::too_many_arguments)]
async fn run_hooks(
    cluster: &Cluster,
    watchers: &Arc<Watchers>,
    rel: &Release,
    hooks: &[Hook],
    event: &str,
    timeout: Duration,
    cancel: &CancellationToken,
    record: &mut Value,
) -> Result<(), String> {
    let mut selected: Vec<&Hook> = hooks
        .iter()
        .filter(|h| h.events().iter().any(|e| e == event))
        .collect();
    selected.sort_by(|a, b| {
        (a.weight(), a.record["name"].as_str()).cmp(&(b.weight(), b.record["name"].as_str()))
    });
    let mut done: Vec<&Hook> = Vec::new();
    for h in selected {
        let mut obj = h.object.clone();
        let (api, kind, ns, name) = {
            let (a, k, n, name) = object_meta(&obj);
            (
                a.to_string(),
                k.to_string(),
                n.to_string(),
                name.to_string(),
            )
        };
        let namespaced = cluster
            .kind(&api, &kind)
            .map(|k| k.namespaced)
            .unwrap_or(true);
        let ns = if namespaced && ns.is_empty() {
            obj["metadata"]["namespace"] = json!(rel.release_namespace);
            rel.release_namespace.clone()
        } else {
            ns
        };
        let policies = h.delete_policies();
        if policies.iter().any(|p| p == "before-hook-creation")
            && let Ok(true) = cluster.delete(&api, &kind, &ns, &name).await
        {
            cluster
                .wait_deleted(&api, &kind, &ns, &name, timeout)
                .await
                .map_err(|e| format!("hook {kind}/{name}: {e}"))?;
        }
        let (_, started) = now();
        set_last_run(record, &name, &started, "", "Running");
        cluster
            .apply_as(&obj, FIELD_MANAGER)
            .await
            .map_err(|e| format!("{event} hook {kind}/{name}: {e}"))?;
        let outcome = wait_hook(cluster, watchers, &obj, timeout, cancel).await;
        let (_, completed) = now();
        match outcome {
            Ok(()) => {
                set_last_run(record, &name, &started, &completed, "Succeeded");
                done.push(h);
            }
            Err(e) => {
                set_last_run(record, &name, &started, &completed, "Failed");
                if policies.iter().any(|p| p == "hook-failed") && kind != "CustomResourceDefinition"
                {
                    let _ = cluster.delete(&api, &kind, &ns, &name).await;
                }
                return Err(format!("{event} hook {kind}/{name} failed: {e}"));
            }
        }
    }
    for h in done.into_iter().rev() {
        if h.delete_policies().iter().any(|p| p == "hook-succeeded") {
            let mut obj = h.object.clone();
            if obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .is_empty()
            {
                obj["metadata"]["namespace"] = json!(rel.release_namespace);
            }
            let (api, kind, ns, name) = object_meta(&obj);
            if kind != "CustomResourceDefinition" {
                let _ = cluster.delete(api, kind, ns, name).await;
            }
        }
    }
    Ok(())
}

fn set_last_run(record: &mut Value, name: &str, started: &str, completed: &str, phase: &str) {
    if let Some(hooks) = record["hooks"].as_array_mut() {
        for h in hooks.iter_mut().filter(|h| h["name"] == name) {
            h["last_run"] =
                json!({"started_at": started, "completed_at": completed, "phase": phase});
        }
    }
}

/// Waits for a hook: a Job must complete, a Pod must succeed, anything else is ready at once.
async fn wait_hook(
    cluster: &Cluster,
    watchers: &Arc<Watchers>,
    obj: &Value,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let (api, kind, ns, name) = object_meta(obj);
    match kind {
        "Job" => {
            let gate = Gate {
                targets: vec![Target {
                    api_version: api.into(),
                    kind: kind.into(),
                    namespace: ns.into(),
                    name: name.into(),
                    ttl_job: obj.pointer("/spec/ttlSecondsAfterFinished").is_some(),
                    min_generation: None,
                }],
                exprs: None,
                timeout,
                file: String::new(),
            };
            gate::wait(cluster, watchers, &gate, cancel, |_| {}, |_| {}).await
        }
        "Pod" => {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let live = cluster
                    .get_ref(api, kind, ns, name)
                    .await
                    .map_err(|e| e.to_string())?;
                match live
                    .as_ref()
                    .and_then(|p| p.pointer("/status/phase"))
                    .and_then(Value::as_str)
                {
                    Some("Succeeded") => return Ok(()),
                    Some("Failed") => return Err("pod failed".into()),
                    _ => {}
                }
                if tokio::time::Instant::now() >= deadline || cancel.is_cancelled() {
                    return Err(format!("pod not succeeded within {timeout:?}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        _ => Ok(()),
    }
}

/// Renders `rel` offline (for plan and build): Helm's client-side dry-run, then Flux's
/// post-renderers. Values the fleet does not hold are left out with a note. Returns the render,
/// the notes and the strings that came from Secrets (to mask).
pub async fn render_offline(
    helm: &Helm,
    kustomize: &Kustomize,
    fleet_values: &BTreeMap<(String, String, String), Value>,
    rel: &Release,
) -> Result<(Rendered, Vec<String>, Vec<String>), String> {
    let (_chart_copy, chart) = super::prepared(&rel.chart)?;
    let ns = &rel.id.namespace;
    let lookup = |kind: &str, name: &str| {
        fleet_values
            .get(&(ns.clone(), kind.to_string(), name.to_string()))
            .cloned()
    };
    let mut notes = Vec::new();
    // Offline, a valuesFrom object only the cluster has is treated as optional, with a note.
    let refs: Vec<super::spec::ValuesReference> = rel
        .spec
        .values_from
        .iter()
        .cloned()
        .map(|mut r| {
            if lookup(&r.kind, &r.name).is_none() && !r.optional {
                notes.push(format!(
                    "valuesFrom {}/{} is not in the fleet: rendered without it (apply reads it from the cluster)",
                    r.kind, r.name
                ));
                r.optional = true;
            }
            r
        })
        .collect();
    let values = super::values::compose(&refs, rel.spec.values.as_ref(), &lookup, "in the fleet")
        .map_err(|e| e.to_string())?;
    let req = RenderRequest {
        release: &rel.release_name,
        namespace: &rel.release_namespace,
        chart: &chart,
        values: &values.values,
        cluster: None,
        upgrade: false,
        skip_schema_validation: rel.spec.skip_schema_validation(false),
        disable_openapi_validation: rel.spec.disable_openapi_validation(false),
    };
    let release = helm
        .render(&req)
        .await
        .map_err(|e| mask(&e.to_string(), &values.secret_strings))?;
    let rendered = super::render::post_render(release, &rel.spec, &rel.id.name, ns, kustomize)
        .await
        .map_err(|e| e.to_string())?;
    Ok((rendered, notes, values.secret_strings))
}
