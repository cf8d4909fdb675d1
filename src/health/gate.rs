//! The single readiness point of the executor: given what a Kustomization applied, decide which
//! objects Flux would health-check (`wait`, `healthChecks`, `healthCheckExprs`), then wait until
//! they are all Current, one is terminally Failed, or the timeout passes — woken by watch events,
//! with a polling fallback while a watch is failing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::cel_expr::HealthExprs;
use super::kstatus::{self, Status, StatusResult};
use super::watch::Watchers;
use crate::cluster::Cluster;
use crate::model::{KustomizationSpec, is_flux_api, object_meta};

/// One object a gate checks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    /// apiVersion.
    pub api_version: String,
    /// kind.
    pub kind: String,
    /// namespace (empty for cluster-scoped).
    pub namespace: String,
    /// name.
    pub name: String,
    /// A Job whose ttlSecondsAfterFinished lets it vanish once done (NotFound counts as success).
    pub ttl_job: bool,
    /// The generation this run's apply produced: a watched copy older than that is stale.
    pub min_generation: Option<i64>,
}

impl Target {
    /// `Kind ns/name`, as progress and errors show it.
    pub fn label(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// What one Kustomization waits for.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Objects to check.
    pub targets: Vec<Target>,
    /// Compiled healthCheckExprs.
    pub exprs: Option<Arc<HealthExprs>>,
    /// The timeout.
    pub timeout: Duration,
    /// The file that defines the gate (for errors).
    pub file: String,
}

/// The objects Flux would check for `spec`, given what was applied (not skipped).
pub fn targets(spec: &KustomizationSpec, applied: &[Value]) -> Vec<Target> {
    let mk = |api: &str, kind: &str, ns: &str, name: &str, obj: Option<&Value>| Target {
        api_version: api.into(),
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
        ttl_job: kind == "Job"
            && obj
                .and_then(|o| o.pointer("/spec/ttlSecondsAfterFinished"))
                .is_some(),
        min_generation: obj
            .and_then(|o| o.pointer("/metadata/generation"))
            .and_then(Value::as_i64),
    };
    let mut out: Vec<Target> = if spec.wait {
        applied
            .iter()
            .map(|o| {
                let (a, k, n, name) = object_meta(o);
                mk(a, k, n, name, Some(o))
            })
            .collect()
    } else {
        spec.health_checks
            .iter()
            .map(|h| {
                let api = h
                    .api_version
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .unwrap_or("apps/v1");
                let obj = applied.iter().find(|o| {
                    let (a, k, n, name) = object_meta(o);
                    a == api
                        && k == h.kind
                        && n == h.namespace.as_deref().unwrap_or("")
                        && name == h.name
                });
                mk(
                    api,
                    &h.kind,
                    h.namespace.as_deref().unwrap_or(""),
                    &h.name,
                    obj,
                )
            })
            .collect()
    };
    // A Flux object is checked only when it was applied (`--apply-flux-objects`): otherwise no
    // controller of flux-order's would ever make it Ready.
    out.retain(|t| {
        !is_flux_api(&t.api_version)
            || applied.iter().any(|o| {
                let (a, k, n, name) = object_meta(o);
                a == t.api_version && k == t.kind && n == t.namespace && name == t.name
            })
    });
    out.sort();
    out.dedup();
    out
}

/// Progress of a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Ready objects.
    pub ready: usize,
    /// Checked objects.
    pub total: usize,
    /// Not-ready objects with their status.
    pub pending: Vec<String>,
}

/// What a wait remembers between wake-ups, so that a wake-up costs only a version check per
/// unchanged target: each target's watch entry, and its status with the version it came from.
#[derive(Default)]
struct Cache {
    entries: BTreeMap<Target, Arc<super::watch::Entry>>,
    statuses: BTreeMap<Target, (Option<u64>, StatusResult)>,
}

impl Cache {
    /// Resolves the watch entry of every target up front, so that changes can be subscribed to
    /// before the first look.
    fn prime<'a>(
        &mut self,
        cluster: &Cluster,
        watchers: &Arc<Watchers>,
        targets: impl IntoIterator<Item = &'a Target>,
    ) {
        for t in targets {
            if self.entries.contains_key(t) {
                continue;
            }
            if let Some(kind) = cluster.kind(&t.api_version, &t.kind) {
                self.entries
                    .insert(t.clone(), watchers.entry(&kind, &t.namespace));
            }
        }
    }
}

/// What wakes a wait: one receiver per distinct watch entry of its targets, so that a change
/// elsewhere wakes nobody here.
struct Wakeups {
    rxs: Vec<tokio::sync::watch::Receiver<u64>>,
    /// How many targets had an entry when subscribed.
    subscribed: usize,
}

impl Wakeups {
    fn new(cache: &Cache) -> Wakeups {
        let mut seen = std::collections::HashSet::new();
        Wakeups {
            rxs: cache
                .entries
                .values()
                .filter(|e| seen.insert(Arc::as_ptr(e)))
                .map(|e| e.subscribe())
                .collect(),
            subscribed: cache.entries.len(),
        }
    }

    /// Subscribes again when targets gained an entry since (a kind served only later).
    fn refresh(&mut self, cache: &Cache) {
        if cache.entries.len() != self.subscribed {
            *self = Wakeups::new(cache);
        }
    }

    /// Marks every current value seen.
    fn seen(&mut self) {
        for r in &mut self.rxs {
            r.borrow_and_update();
        }
    }

    /// Resolves when any entry changes (never when there is none).
    async fn changed(&mut self) {
        if self.rxs.is_empty() {
            return std::future::pending().await;
        }
        let changes = self.rxs.iter_mut().map(|r| {
            Box::pin(async move {
                // A watcher never goes away before the gates; if it did, wait for the timer.
                if r.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
        });
        futures::future::select_all(changes).await;
    }
}

fn status_of(
    cluster: &Cluster,
    watchers: &Arc<Watchers>,
    gate: &Gate,
    t: &Target,
    polled: &BTreeMap<Target, Option<Value>>,
    cache: &mut Cache,
) -> StatusResult {
    let entry = match cache.entries.get(t) {
        Some(e) => e.clone(),
        None => {
            let Some(kind) = cluster.kind(&t.api_version, &t.kind) else {
                return StatusResult {
                    status: Status::NotFound,
                    message: "kind not served".into(),
                };
            };
            let e = watchers.entry(&kind, &t.namespace);
            cache.entries.insert(t.clone(), e.clone());
            e
        }
    };
    let obj = match polled.get(t) {
        Some(p) => p.clone(),
        None if entry.synced() => {
            // Unchanged since the last look: reuse the status (Pods excepted: their rule
            // depends on the clock).
            let version = entry.version(&t.name);
            if t.kind != "Pod"
                && let Some((v, s)) = cache.statuses.get(t)
                && *v == version
            {
                return s.clone();
            }
            let s = evaluate(gate, t, entry.get(&t.name));
            cache.statuses.insert(t.clone(), (version, s.clone()));
            return s;
        }
        None => {
            return StatusResult {
                status: Status::Unknown,
                message: "waiting for the first watch event".into(),
            };
        }
    };
    evaluate(gate, t, obj)
}

/// The status of one target given its latest object (None: not found).
fn evaluate(gate: &Gate, t: &Target, obj: Option<Value>) -> StatusResult {
    let Some(obj) = obj else {
        if t.ttl_job {
            return StatusResult {
                status: Status::Current,
                message: "Job finished and was removed (ttlSecondsAfterFinished)".into(),
            };
        }
        return StatusResult::not_found();
    };
    let seen = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    if let (Some(min), Some(seen)) = (t.min_generation, seen)
        && seen < min
    {
        return StatusResult {
            status: Status::InProgress,
            message: format!("waiting for the watch to see generation {min} (has {seen})"),
        };
    }
    if let Some(exprs) = gate
        .exprs
        .as_ref()
        .filter(|e| e.matches(&t.api_version, &t.kind))
        && let Some(r) = exprs.evaluate(&t.api_version, &t.kind, &obj)
    {
        return r.unwrap_or_else(|e| StatusResult {
            status: Status::Unknown,
            message: format!("healthCheckExprs: {e}"),
        });
    }
    kstatus::compute(&t.api_version, &t.kind, &obj)
}

/// Waits for the gate. `on_progress` is called whenever the progress changes; `on_ready` once per
/// object when it is first seen Current.
pub async fn wait(
    cluster: &Cluster,
    watchers: &Arc<Watchers>,
    gate: &Gate,
    cancel: &CancellationToken,
    mut on_progress: impl FnMut(&Progress),
    mut on_ready: impl FnMut(&Target),
) -> Result<(), String> {
    if gate.targets.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    let mut last: Option<Progress> = None;
    let mut seen_ready = std::collections::BTreeSet::new();
    let mut polled: BTreeMap<Target, Option<Value>> = BTreeMap::new();
    let mut cache = Cache::default();
    cache.prime(cluster, watchers, &gate.targets);
    let mut wakeups = Wakeups::new(&cache);
    let mut last_poll = Instant::now();
    loop {
        wakeups.seen();
        let statuses: Vec<(&Target, StatusResult)> = gate
            .targets
            .iter()
            .map(|t| {
                (
                    t,
                    status_of(cluster, watchers, gate, t, &polled, &mut cache),
                )
            })
            .collect();
        for (t, s) in &statuses {
            if s.status == Status::Current && seen_ready.insert((*t).clone()) {
                on_ready(t);
            }
        }
        let pending: Vec<String> = statuses
            .iter()
            .filter(|(_, s)| s.status != Status::Current)
            .map(|(t, s)| {
                format!(
                    "{}: {}",
                    t.label(),
                    if s.message.is_empty() {
                        s.status.as_str().to_string()
                    } else {
                        s.message.clone()
                    }
                )
            })
            .collect();
        let progress = Progress {
            ready: statuses.len() - pending.len(),
            total: statuses.len(),
            pending: pending.clone(),
        };
        wakeups.refresh(&cache);
        if last.as_ref() != Some(&progress) {
            on_progress(&progress);
            last = Some(progress);
        }
        if pending.is_empty() {
            return Ok(());
        }
        let failed: Vec<String> = statuses
            .iter()
            .filter(|(_, s)| s.status.is_terminal_failure())
            .map(|(t, s)| format!("{}: {}", t.label(), s.message))
            .collect();
        if !failed.is_empty() {
            return Err(format!(
                "health check failed early due to stalled resources: [{}] (health gate in {})",
                failed.join(", "),
                gate.file
            ));
        }
        let elapsed = start.elapsed();
        if elapsed >= gate.timeout {
            return Err(format!(
                "health check failed after {}: timeout waiting for: [{}] (health gate in {})",
                crate::model::duration::format_go(gate.timeout),
                pending.join(", "),
                gate.file
            ));
        }
        // Polling fallback for objects whose watch is not synced or failing.
        if last_poll.elapsed() >= Duration::from_secs(2) {
            last_poll = Instant::now();
            for t in &gate.targets {
                let Some(kind) = cluster.kind(&t.api_version, &t.kind) else {
                    continue;
                };
                let entry = watchers.entry(&kind, &t.namespace);
                if !entry.synced() || entry.errors() > 0 {
                    match cluster
                        .get_ref(&t.api_version, &t.kind, &t.namespace, &t.name)
                        .await
                    {
                        Ok(v) => {
                            polled.insert(t.clone(), v);
                        }
                        // The server is gone (the request and its retries failed): say so, not
                        // "timeout" later.
                        Err(e) if e.is_unreachable() => {
                            return Err(format!(
                                "health check stopped: the API server stopped answering: {e} (health gate in {})",
                                gate.file
                            ));
                        }
                        Err(_) => {}
                    }
                } else {
                    polled.remove(t);
                }
            }
        }
        let remaining = gate
            .timeout
            .saturating_sub(elapsed)
            .min(Duration::from_secs(2));
        tokio::select! {
            _ = cancel.cancelled() => return Err("interrupted while waiting for health checks".into()),
            _ = wakeups.changed() => {}
            _ = tokio::time::sleep(remaining) => {}
        }
    }
}

/// One look, once the watches have listed: do all of `existing` exist, and is `gate` healthy now?
/// Used to skip a Kustomization whose build has not changed. Gives up (false) after 10s.
pub async fn probe(
    cluster: &Cluster,
    watchers: &Arc<Watchers>,
    existing: &[Target],
    gate: &Gate,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let none = BTreeMap::new();
    let mut cache = Cache::default();
    cache.prime(cluster, watchers, existing.iter().chain(&gate.targets));
    let mut wakeups = Wakeups::new(&cache);
    loop {
        wakeups.seen();
        let all: Vec<StatusResult> = existing
            .iter()
            .chain(gate.targets.iter())
            .map(|t| status_of(cluster, watchers, gate, t, &none, &mut cache))
            .collect();
        wakeups.refresh(&cache);
        if all.iter().all(|s| s.status != Status::Unknown) {
            let exist = all[..existing.len()]
                .iter()
                .all(|s| s.status != Status::NotFound);
            let healthy = all[existing.len()..]
                .iter()
                .all(|s| s.status == Status::Current);
            return exist && healthy;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::select! {
            _ = wakeups.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
