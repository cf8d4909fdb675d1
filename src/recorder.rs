//! Kubernetes Events for a rollout, so that `kubectl get events -n NS --sort-by=.lastTimestamp`
//! tells its story as it does for kustomize-controller: one core/v1 Event per outcome, in the
//! Kustomization's namespace, involving flux-order's inventory ConfigMap `flux-order-<name>`,
//! reported by component `flux-order`, with kustomize-controller's reasons (`Progressing` for
//! the change set, the prune and the passed health check, `ReconciliationSucceeded`,
//! `HealthCheckFailed`, `ReconciliationFailed`, `PruneFailed`, `DependencyNotReady`) and
//! `ProgressingWithRetry` for a scheduled retry.
//!
//! It consumes the executor's events like a renderer and writes off the critical path: the
//! executor never waits for it; writes run in the background (a few at once) and the command
//! gives them a few seconds to finish at the end. A write that fails (no permission, namespace
//! gone) is logged at debug level and dropped: events never fail a run. Messages are failure
//! reasons already masked by the executor, object subjects and counts: never a secret value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::cluster::Cluster;
use crate::execute::events::{Action, Event, Outcome};
use crate::inventory::configmap_name;
use crate::model::KsId;
use crate::report::progress::{human, timestamp};

/// The reporting component of every Event.
pub const COMPONENT: &str = "flux-order";

/// Longest message written (kubectl shows one line; the rest is in the run's output).
const MAX_MESSAGE: usize = 1024;
/// Objects named in a change-set message.
const MAX_LINES: usize = 20;
/// Writes in flight at once.
const PARALLEL: usize = 4;

/// One Event to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The Kustomization.
    pub id: KsId,
    /// `Normal` or `Warning`.
    pub kind: &'static str,
    /// kustomize-controller's reason.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// Turns executor events into Event records. Pure: keeps what it needs of earlier events (the
/// objects changed by the current attempt).
#[derive(Default)]
pub struct Story {
    changes: BTreeMap<KsId, Vec<(String, Action)>>,
}

impl Story {
    /// The Events `e` calls for (often none).
    pub fn record(&mut self, e: &Event) -> Vec<Record> {
        let rec = |id: &KsId, kind, reason, message: String| Record {
            id: id.clone(),
            kind,
            reason,
            message,
        };
        match e {
            Event::Started { id, .. } => {
                self.changes.remove(id);
                vec![]
            }
            Event::Applied { id, object, action } => {
                self.changes
                    .entry(id.clone())
                    .or_default()
                    .push((object.clone(), *action));
                vec![]
            }
            Event::AllApplied { id } => {
                let changes = self.changes.remove(id).unwrap_or_default();
                let applied: Vec<&(String, Action)> = changes
                    .iter()
                    .filter(|(_, a)| *a != Action::Deleted)
                    .collect();
                let deleted: Vec<&(String, Action)> = changes
                    .iter()
                    .filter(|(_, a)| *a == Action::Deleted)
                    .collect();
                let mut out = Vec::new();
                if applied
                    .iter()
                    .any(|(_, a)| matches!(a, Action::Created | Action::Configured))
                {
                    out.push(rec(
                        id,
                        "Normal",
                        "Progressing",
                        change_set("Applied", &applied),
                    ));
                }
                if !deleted.is_empty() {
                    out.push(rec(
                        id,
                        "Normal",
                        "Progressing",
                        change_set("Pruned", &deleted),
                    ));
                }
                out
            }
            Event::HealthPassed {
                id,
                objects,
                seconds,
            } => vec![rec(
                id,
                "Normal",
                "Progressing",
                format!(
                    "Health check passed in {} ({objects} objects)",
                    human(Duration::from_secs_f64(*seconds))
                ),
            )],
            Event::Retrying {
                id,
                attempt,
                delay_seconds,
                reason,
                flux_reason,
            } => vec![rec(
                id,
                "Warning",
                "ProgressingWithRetry",
                format!(
                    "attempt {} failed ({}), retrying in {}: {reason}",
                    attempt - 1,
                    flux_reason.as_str(),
                    human(Duration::from_secs_f64(*delay_seconds))
                ),
            )],
            Event::Finished(r) => {
                let tries = if r.attempts > 1 {
                    format!(" after {} attempts", r.attempts)
                } else {
                    String::new()
                };
                match &r.outcome {
                    Outcome::Ready => vec![rec(
                        &r.id,
                        "Normal",
                        "ReconciliationSucceeded",
                        format!("Reconciliation finished in {}{tries}", human(r.duration)),
                    )],
                    Outcome::Failed {
                        reason,
                        flux_reason,
                    } => vec![rec(
                        &r.id,
                        "Warning",
                        flux_reason.as_str(),
                        format!("{reason}{tries}"),
                    )],
                    Outcome::Skipped { blocked_by } => vec![rec(
                        &r.id,
                        "Warning",
                        "DependencyNotReady",
                        format!(
                            "Dependencies do not meet ready condition ({} not ready): not applied",
                            blocked_by.join(", ")
                        ),
                    )],
                    // Nothing happened to the cluster: no write (an unchanged run writes nothing).
                    Outcome::Unchanged
                    | Outcome::Suspended
                    | Outcome::NotStarted { .. }
                    | Outcome::Excluded { .. } => vec![],
                }
            }
            _ => vec![],
        }
    }
}

/// One line, as `kubectl get events` shows one: `Applied 1 created, 1 configured, 3 unchanged:
/// Namespace/apps created, Deployment/apps/web configured` (`Pruned …` for deletions), at most
/// [`MAX_LINES`] objects named.
fn change_set(verb: &str, entries: &[&(String, Action)]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, a) in entries {
        *counts.entry(action_word(*a)).or_default() += 1;
    }
    let head: Vec<String> = ["created", "configured", "unchanged", "skipped", "deleted"]
        .iter()
        .filter_map(|w| counts.get(w).map(|n| format!("{n} {w}")))
        .collect();
    let changed: Vec<String> = entries
        .iter()
        .filter(|(_, a)| !matches!(a, Action::Unchanged | Action::Skipped))
        .map(|(s, a)| format!("{s} {}", action_word(*a)))
        .collect();
    let mut named = changed
        .iter()
        .take(MAX_LINES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if changed.len() > MAX_LINES {
        named.push_str(&format!(" and {} more", changed.len() - MAX_LINES));
    }
    format!("{verb} {}: {named}", head.join(", "))
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Created => "created",
        Action::Configured => "configured",
        Action::Unchanged => "unchanged",
        Action::Skipped => "skipped",
        Action::Deleted => "deleted",
    }
}

/// The core/v1 Event of a record, involving the inventory ConfigMap (with its uid when known, so
/// `kubectl describe configmap` lists it too).
pub fn event_object(
    r: &Record,
    revision: Option<&str>,
    uid: Option<&str>,
    at: SystemTime,
) -> Value {
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let inventory = configmap_name(&r.id);
    let mut message = r.message.clone();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    // A HelmRelease's Events involve the HelmRelease, as helm-controller's do (flux-order keeps
    // no inventory ConfigMap for it: Helm's release storage is its inventory).
    let (mut involved, inventory) = if r.id.is_helm_release() {
        let hr = json!({
            "apiVersion": crate::helm::API_VERSION,
            "kind": "HelmRelease",
            "namespace": r.id.namespace,
            "name": r.id.name,
        });
        (hr, format!("{}.helmrelease", r.id.name))
    } else {
        let cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "namespace": r.id.namespace,
            "name": inventory,
        });
        (cm, inventory)
    };
    if let Some(uid) = uid {
        involved["uid"] = json!(uid);
    }
    let mut meta = json!({
        "name": format!("{inventory}.{nanos:x}"),
        "namespace": r.id.namespace,
    });
    if let Some(rev) = revision {
        meta["annotations"] = json!({"kustomize.toolkit.fluxcd.io/revision": rev});
    }
    let now = timestamp(at);
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": meta,
        "involvedObject": involved,
        "type": r.kind,
        "reason": r.reason,
        "message": message,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance(),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// This host's name (the reporting instance), or `flux-order`.
fn instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| COMPONENT.to_string())
}

/// What the recorder did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    /// Events created.
    pub ok: usize,
    /// Events the API server refused or that failed (dropped).
    pub failed: usize,
}

/// Consumes executor events until the channel closes, writing the Events they call for in the
/// background; returns once every write has finished. `revisions` annotate each Kustomization's
/// Events with its source revision.
pub async fn run(
    cluster: Arc<Cluster>,
    revisions: BTreeMap<KsId, String>,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Written {
    let mut story = Story::default();
    let limit = Arc::new(Semaphore::new(PARALLEL));
    let uids: Arc<tokio::sync::Mutex<BTreeMap<KsId, Option<String>>>> = Arc::default();
    let mut writes = tokio::task::JoinSet::new();
    let started = Instant::now();
    while let Some(e) = rx.recv().await {
        for r in story.record(&e) {
            let at = SystemTime::now();
            let (cluster, limit, uids) = (cluster.clone(), limit.clone(), uids.clone());
            let revision = revisions.get(&r.id).cloned();
            writes.spawn(async move {
                let _permit = limit.acquire().await;
                let uid = inventory_uid(&cluster, &uids, &r.id).await;
                let ev = event_object(&r, revision.as_deref(), uid.as_deref(), at);
                let api: Api<k8s_openapi::api::core::v1::Event> =
                    Api::namespaced(cluster.client().clone(), &r.id.namespace);
                let parsed = serde_json::from_value(ev);
                let result = match parsed {
                    Ok(ev) => api
                        .create(&PostParams::default(), &ev)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = &result {
                    tracing::debug!("event for {} ({}) not recorded: {e}", r.id, r.reason);
                }
                result.is_ok()
            });
        }
    }
    let mut written = Written::default();
    while let Some(done) = writes.join_next().await {
        match done {
            Ok(true) => written.ok += 1,
            _ => written.failed += 1,
        }
    }
    tracing::debug!(
        "{} events recorded, {} dropped, {:?}",
        written.ok,
        written.failed,
        started.elapsed()
    );
    written
}

/// The uid of `id`'s inventory ConfigMap, read once (None while it does not exist).
async fn inventory_uid(
    cluster: &Cluster,
    cache: &tokio::sync::Mutex<BTreeMap<KsId, Option<String>>>,
    id: &KsId,
) -> Option<String> {
    if id.is_helm_release() {
        return None;
    }
    if let Some(Some(uid)) = cache.lock().await.get(id) {
        return Some(uid.clone());
    }
    let got = cluster
        .get_ref("v1", "ConfigMap", &id.namespace, &configmap_name(id))
        .await
        .ok()
        .flatten()
        .and_then(|cm| {
            cm.pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(String::from)
        });
    cache.lock().await.insert(id.clone(), got.clone());
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execute::events::{Counts, FailReason, KsResult};

    fn id() -> KsId {
        KsId::new("flux-system", "apps")
    }

    fn finished(outcome: Outcome, attempts: u32) -> Event {
        Event::Finished(KsResult {
            id: id(),
            outcome,
            duration: Duration::from_millis(4200),
            objects: Counts::default(),
            attempts,
        })
    }

    #[test]
    fn a_rollout_reads_as_flux_tells_it() {
        let mut s = Story::default();
        let applied = |object: &str, action| Event::Applied {
            id: id(),
            object: object.into(),
            action,
        };
        let mut out = Vec::new();
        for e in [
            Event::Started {
                id: id(),
                objects: 3,
                timeout_seconds: 30,
            },
            applied("Namespace/apps", Action::Created),
            applied("ConfigMap/apps/cfg", Action::Unchanged),
            applied("Deployment/apps/web", Action::Configured),
            applied("ConfigMap/apps/old", Action::Deleted),
            Event::AllApplied { id: id() },
            Event::Retrying {
                id: id(),
                attempt: 2,
                delay_seconds: 1.0,
                reason: "health check failed after 4s".into(),
                flux_reason: FailReason::HealthCheckFailed,
            },
            Event::HealthPassed {
                id: id(),
                objects: 2,
                seconds: 1.5,
            },
            finished(Outcome::Ready, 2),
        ] {
            out.extend(s.record(&e));
        }
        let reasons: Vec<(&str, &str)> = out.iter().map(|r| (r.kind, r.reason)).collect();
        assert_eq!(
            reasons,
            vec![
                ("Normal", "Progressing"),
                ("Normal", "Progressing"),
                ("Warning", "ProgressingWithRetry"),
                ("Normal", "Progressing"),
                ("Normal", "ReconciliationSucceeded"),
            ]
        );
        assert_eq!(
            out[0].message,
            "Applied 1 created, 1 configured, 1 unchanged: Namespace/apps created, Deployment/apps/web configured"
        );
        assert_eq!(
            out[1].message,
            "Pruned 1 deleted: ConfigMap/apps/old deleted"
        );
        assert_eq!(
            out[2].message,
            "attempt 1 failed (HealthCheckFailed), retrying in 1.0s: health check failed after 4s"
        );
        assert_eq!(
            out[4].message,
            "Reconciliation finished in 4.2s after 2 attempts"
        );
    }

    #[test]
    fn failures_and_skips_are_warnings_and_unchanged_writes_nothing() {
        let mut s = Story::default();
        let failed = s.record(&finished(
            Outcome::Failed {
                reason: "timeout".into(),
                flux_reason: FailReason::HealthCheckFailed,
            },
            1,
        ));
        assert_eq!(failed[0].reason, "HealthCheckFailed");
        assert_eq!(failed[0].kind, "Warning");
        let skipped = s.record(&finished(
            Outcome::Skipped {
                blocked_by: vec!["flux-system/crds".into()],
            },
            0,
        ));
        assert_eq!(skipped[0].reason, "DependencyNotReady");
        assert!(skipped[0].message.contains("flux-system/crds"));
        assert!(s.record(&finished(Outcome::Unchanged, 1)).is_empty());
    }

    #[test]
    fn the_event_involves_the_inventory_and_names_flux_order() {
        let r = Record {
            id: id(),
            kind: "Normal",
            reason: "ReconciliationSucceeded",
            message: "x".repeat(2000),
        };
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let e = event_object(&r, Some("abc"), Some("u-1"), at);
        assert_eq!(e["involvedObject"]["name"], "flux-order-apps");
        assert_eq!(e["involvedObject"]["uid"], "u-1");
        assert_eq!(e["metadata"]["namespace"], "flux-system");
        assert!(
            e["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("flux-order-apps.")
        );
        assert_eq!(e["source"]["component"], "flux-order");
        assert_eq!(e["reportingComponent"], "flux-order");
        assert_eq!(
            e["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/revision"],
            "abc"
        );
        assert!(e["message"].as_str().unwrap().chars().count() <= MAX_MESSAGE + 1);
        assert_eq!(e["lastTimestamp"], "2027-01-15T08:00:00.000Z");
    }
}
