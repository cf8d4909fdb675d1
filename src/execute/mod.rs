//! The executor: starts each Kustomization the moment its dependencies are Ready and its parent
//! has applied it (or, with `--wave-barrier`, when the previous wave is done), at most
//! `--concurrency` at once; applies its objects in Flux's stages ([`stages`]); waits on its health
//! gate (`health::gate`, the single readiness point); isolates failures (dependents are skipped,
//! independent branches go on; `--fail-fast` stops new starts); tries a failed Kustomization
//! again after a growing wait while the run's budget allows ([`retry`]), its dependents waiting;
//! stops starting work on interruption. It reports through [`events`] and returns every
//! Kustomization's result.

pub mod events;
pub mod retry;
pub mod stages;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::build::postbuild::Manifest;
use crate::cluster::Cluster;
use crate::health::cel_expr::{HealthExprs, ReadyExpr};
use crate::health::gate::{self, Gate};
use crate::health::watch::Watchers;
use crate::inventory;
use crate::model::{KsId, KustomizationSpec, subject};
use events::{Action, Counts, Event, FailReason, KsResult, Outcome};

/// One Kustomization to run.
#[derive(Debug, Clone)]
pub struct Unit {
    /// namespace/name.
    pub id: KsId,
    /// Its spec.
    pub spec: KustomizationSpec,
    /// Objects to apply (Flux objects excluded), substituted and labelled; parsed only while
    /// the unit runs.
    pub objects: Vec<Manifest>,
    /// Defining file.
    pub file: String,
    /// dependsOn inside the selection.
    pub deps: Vec<KsId>,
    /// The parent inside the selection.
    pub parent: Option<KsId>,
    /// The parent whose build holds it (selected or not), recorded in the inventory.
    pub owner: Option<KsId>,
    /// Its wave.
    pub wave: usize,
    /// Compiled healthCheckExprs.
    pub exprs: Option<Arc<HealthExprs>>,
    /// Why it must not be applied (remote cluster, SOPS), if so.
    pub refuse: Option<String>,
    /// Source revision recorded in the inventory.
    pub revision: String,
    /// The Kustomization object (`self` of its dependencies' `readyExpr`, `dep` of its
    /// dependents').
    pub object: Manifest,
    /// `dependsOn[].readyExpr` by dependency: replaces the Ready check for that dependency.
    pub ready_exprs: BTreeMap<KsId, Arc<ReadyExpr>>,
    /// Secret values of its build and substitutions, masked in every reported message.
    pub secrets: Vec<String>,
    /// A HelmRelease unit: installed by the helm stage instead of applied.
    pub helm: Option<Arc<crate::helm::Release>>,
    /// HelmReleases that must be Ready before this Kustomization is (its `wait: true`, or its
    /// `healthChecks` naming them), as helm-controller's readiness would gate it.
    pub gated_by: Vec<KsId>,
    /// Left out before the rollout ([`Outcome::Excluded`]): settled at once, never applied.
    pub excluded: Option<Outcome>,
}

/// Whether a dependency lets its dependent start.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DepState {
    /// Not finished yet.
    Waiting,
    /// Ready (or its readyExpr is true).
    Satisfied,
    /// Finished and not Ready (or its readyExpr is false or fails): the dependent is skipped.
    Blocked(String),
}

/// The dependency as a Flux Kustomization object with the status kustomize-controller would
/// have written for `outcome`: what `dep` holds in a `readyExpr`.
fn dep_object(unit: &Unit, outcome: &Outcome) -> Value {
    let mut obj = unit.object.object();
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("generation".into(), generation.into());
    }
    let (status, reason, message) = match outcome {
        Outcome::Ready | Outcome::Unchanged => (
            "True",
            "ReconciliationSucceeded",
            format!("Applied revision: {}", unit.revision),
        ),
        Outcome::Failed {
            reason,
            flux_reason,
        } => ("False", flux_reason.as_str(), reason.clone()),
        Outcome::Skipped { blocked_by } => (
            "False",
            "DependencyNotReady",
            format!("dependencies not ready: {}", blocked_by.join(", ")),
        ),
        Outcome::Suspended => ("False", "Suspended", "suspended".into()),
        Outcome::NotStarted { reason } | Outcome::Excluded { reason, .. } => {
            ("False", "Progressing", reason.clone())
        }
    };
    let mut st = serde_json::json!({
        "observedGeneration": generation,
        "lastAttemptedRevision": unit.revision,
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}],
    });
    if outcome.is_ready() {
        st["lastAppliedRevision"] = Value::String(unit.revision.clone());
    }
    if let Some(o) = obj.as_object_mut() {
        o.insert("status".into(), st);
    }
    obj
}

/// Decides whether `dep` lets `unit` start: Flux's check (Ready), or the unit's `readyExpr`
/// for it, evaluated once the dependency has finished.
fn dep_state(
    unit: &Unit,
    dep: &KsId,
    states: &BTreeMap<KsId, State>,
    by_id: &BTreeMap<&KsId, &Unit>,
) -> DepState {
    let Some(State::Done(outcome)) = states.get(dep) else {
        return DepState::Waiting;
    };
    match (unit.ready_exprs.get(dep), by_id.get(dep)) {
        (Some(expr), Some(d)) => match expr.eval(&unit.object.object(), &dep_object(d, outcome)) {
            Ok(true) => DepState::Satisfied,
            Ok(false) => DepState::Blocked(format!("{dep} (readyExpr is false)")),
            Err(e) => DepState::Blocked(format!("{dep} (readyExpr: {e})")),
        },
        _ if outcome.is_ready() => DepState::Satisfied,
        _ => DepState::Blocked(dep.to_string()),
    }
}

/// Executor settings.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Kustomizations in flight at most.
    pub concurrency: usize,
    /// Hold each wave until the previous one is done.
    pub wave_barrier: bool,
    /// Stop starting new Kustomizations after the first failure.
    pub fail_fast: bool,
    /// Recreate objects on immutable-field errors for every Kustomization.
    pub force: bool,
    /// Health timeout for every Kustomization (overrides spec.timeout).
    pub timeout: Option<Duration>,
    /// Objects applied at once within a stage.
    pub object_parallelism: usize,
    /// Re-apply Kustomizations whose build digest matches the inventory.
    pub force_apply: bool,
    /// Retry budget: a failed Kustomization is tried again only while the retry starts within
    /// this long after the rollout started (zero: never).
    pub retry_for: Duration,
    /// What installing HelmReleases needs (None: the selection has none).
    pub helm: Option<Arc<crate::helm::install::Env>>,
}

/// What every Kustomization's task shares.
struct Ctx {
    cluster: Arc<Cluster>,
    watchers: Arc<Watchers>,
    opts: ExecOptions,
    events: mpsc::UnboundedSender<Event>,
    tx: mpsc::UnboundedSender<Msg>,
    cancel: CancellationToken,
}

enum Msg {
    Applied(KsId),
    Done(Attempt),
    /// The wait before a retry is over.
    Retry(KsId),
}

enum State {
    Pending,
    Running,
    /// Failed; tried again when its wait is over. Holds the failed attempt.
    Waiting(Box<KsResult>),
    Done(Outcome),
}

/// What one attempt of a Kustomization did.
struct Attempt {
    /// Its result (duration and counts of this attempt).
    result: KsResult,
    /// Every object action, to count each object once over all attempts.
    actions: Vec<(String, Action)>,
    /// Why its failure cannot heal by waiting, if it cannot.
    permanent: Option<&'static str>,
}

/// Every attempt of one Kustomization so far.
#[derive(Default)]
struct Tries {
    made: u32,
    first_start: Option<Instant>,
    actions: BTreeMap<String, Action>,
}

impl Tries {
    /// Folds an attempt's actions in: an object keeps its strongest action (created, then
    /// configured, deleted, skipped, unchanged), so a retry re-applying it unchanged does not hide
    /// that this run created it.
    fn fold(&mut self, actions: &[(String, Action)]) {
        let rank = |a: Action| match a {
            Action::Created => 4,
            Action::Configured => 3,
            Action::Deleted => 2,
            Action::Skipped => 1,
            Action::Unchanged => 0,
        };
        for (subject, a) in actions {
            let e = self.actions.entry(subject.clone()).or_insert(*a);
            if rank(*a) > rank(*e) {
                *e = *a;
            }
        }
    }

    /// The final result: this run's duration, counts over all attempts, attempts made.
    fn finish(&self, mut r: KsResult) -> KsResult {
        if self.made > 1 {
            let mut c = Counts::default();
            for a in self.actions.values() {
                c.add(*a);
            }
            r.objects = c;
        }
        if let Some(t) = self.first_start {
            r.duration = t.elapsed();
        }
        r.attempts = self.made;
        r
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the rollout; returns one result per unit, in wave order. `inventories` are every
/// inventory read up front in one request (None: each Kustomization reads its own when it starts,
/// e.g. without permission to list ConfigMaps cluster-wide).
pub async fn run(
    cluster: Arc<Cluster>,
    units: Vec<Unit>,
    inventories: Option<BTreeMap<KsId, inventory::Inventory>>,
    opts: ExecOptions,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) -> Vec<KsResult> {
    let emit = |e: Event| {
        let _ = events.send(e);
    };
    let watch_cancel = CancellationToken::new();
    let keep_data = units.iter().any(|u| {
        u.exprs
            .as_ref()
            .is_some_and(|e| e.matches("v1", "ConfigMap") || e.matches("v1", "Secret"))
    });
    let watchers = Watchers::new(cluster.client().clone(), watch_cancel.clone(), keep_data);
    let inventories = inventories.map(Arc::new);
    let mut order: Vec<&Unit> = units.iter().collect();
    order.sort_by(|a, b| (a.wave, &a.id).cmp(&(b.wave, &b.id)));
    let by_id: BTreeMap<&KsId, &Unit> = units.iter().map(|u| (&u.id, u)).collect();
    emit(Event::RolloutStarted {
        kustomizations: units.len(),
        objects: units.iter().map(|u| u.objects.len()).sum(),
    });

    let mut states: BTreeMap<KsId, State> = BTreeMap::new();
    let mut results: BTreeMap<KsId, KsResult> = BTreeMap::new();
    let mut applied: BTreeSet<KsId> = BTreeSet::new();
    let mut blocked_shown: BTreeMap<KsId, Vec<String>> = BTreeMap::new();
    for u in &order {
        if let Some(outcome) = &u.excluded {
            settle(&u.id, outcome.clone(), &events, &mut results, &mut states);
        } else if u.spec.suspend {
            settle(
                &u.id,
                Outcome::Suspended,
                &events,
                &mut results,
                &mut states,
            );
        } else {
            states.insert(u.id.clone(), State::Pending);
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut tasks = tokio::task::JoinSet::new();
    let rollout_start = Instant::now();
    let mut tries: BTreeMap<KsId, Tries> = BTreeMap::new();
    // Ready Kustomizations waiting for the HelmReleases that gate them.
    let mut held: BTreeMap<KsId, KsResult> = BTreeMap::new();
    let gates: BTreeMap<KsId, Vec<KsId>> = units
        .iter()
        .filter(|u| !u.gated_by.is_empty())
        .map(|u| (u.id.clone(), u.gated_by.clone()))
        .collect();
    let mut running = 0usize;
    let mut failed_any = false;
    let mut interrupted = false;
    loop {
        // A finished task keeps its memory until it is joined: reap them as they end (at 5,000
        // Kustomizations they held ~46 MB by the end of the rollout).
        while tasks.try_join_next().is_some() {}
        // Messages already queued are taken first: a pass over the units costs O(units), and one
        // pass after a batch of messages decides what one pass after each would (with thousands
        // of Kustomizations, a pass per message made the rollout quadratic).
        if rx.is_empty() {
            // Skip whatever a finished non-Ready dependency or parent blocks.
            loop {
                let mut newly = Vec::new();
                for u in &order {
                    if !matches!(states.get(&u.id), Some(State::Pending)) {
                        continue;
                    }
                    let mut blockers: Vec<String> = u
                        .deps
                        .iter()
                        .filter_map(|d| match dep_state(u, d, &states, &by_id) {
                            DepState::Blocked(why) => Some(why),
                            _ => None,
                        })
                        .collect();
                    if let Some(p) = &u.parent
                        && !applied.contains(p)
                        && matches!(states.get(p), Some(State::Done(_)))
                    {
                        blockers.push(format!("{p} (parent)"));
                    }
                    if !blockers.is_empty() {
                        newly.push((u.id.clone(), blockers));
                    }
                }
                if newly.is_empty() {
                    break;
                }
                for (id, blocked_by) in newly {
                    settle(
                        &id,
                        Outcome::Skipped { blocked_by },
                        &events,
                        &mut results,
                        &mut states,
                    );
                }
            }
            // Start whatever is ready.
            let stop_starting = interrupted || (opts.fail_fast && failed_any);
            for u in &order {
                if !matches!(states.get(&u.id), Some(State::Pending)) {
                    continue;
                }
                let mut waiting_on: Vec<String> = u
                    .deps
                    .iter()
                    .filter(|d| dep_state(u, d, &states, &by_id) != DepState::Satisfied)
                    .map(|d| d.to_string())
                    .collect();
                if let Some(p) = u.parent.as_ref().filter(|p| !applied.contains(*p)) {
                    waiting_on.push(format!("{p} (parent)"));
                }
                if opts.wave_barrier {
                    let earlier_busy = order.iter().any(|o| {
                        o.wave < u.wave && !matches!(states.get(&o.id), Some(State::Done(_)))
                    });
                    if earlier_busy && waiting_on.is_empty() {
                        waiting_on.push(format!("wave {}", u.wave.saturating_sub(1)));
                    }
                }
                if !waiting_on.is_empty() {
                    if blocked_shown.get(&u.id) != Some(&waiting_on) {
                        blocked_shown.insert(u.id.clone(), waiting_on.clone());
                        emit(Event::Blocked {
                            id: u.id.clone(),
                            waiting_on,
                        });
                    }
                    continue;
                }
                if stop_starting || running >= opts.concurrency.max(1) {
                    continue;
                }
                states.insert(u.id.clone(), State::Running);
                running += 1;
                let unit = (*u).clone();
                let t = tries.entry(u.id.clone()).or_default();
                t.made += 1;
                t.first_start.get_or_insert_with(Instant::now);
                let attempt = t.made;
                // A retry reads the inventory its failed attempt wrote.
                let known = inventories
                    .as_ref()
                    .filter(|_| attempt == 1)
                    .map(|m| m.get(&u.id).cloned());
                let ctx = Ctx {
                    cluster: cluster.clone(),
                    watchers: watchers.clone(),
                    opts: opts.clone(),
                    events: events.clone(),
                    tx: tx.clone(),
                    cancel: cancel.clone(),
                };
                tasks.spawn(async move {
                    let r = run_unit(&ctx, &unit, known, attempt).await;
                    let _ = ctx.tx.send(Msg::Done(r));
                });
            }
            // Release held Kustomizations whose HelmReleases are all done.
            let releasable: Vec<KsId> = held
                .keys()
                .filter(|id| {
                    gates[*id].iter().all(|g| {
                        matches!(states.get(g), Some(State::Done(_))) || !states.contains_key(g)
                    })
                })
                .cloned()
                .collect();
            if !releasable.is_empty() {
                for id in releasable {
                    let Some(mut r) = held.remove(&id) else {
                        continue;
                    };
                    let not_ready: Vec<String> = gates[&id]
                        .iter()
                        .filter(|g| !matches!(states.get(*g), Some(State::Done(o)) if o.is_ready()))
                        .map(|g| g.label())
                        .collect();
                    if !not_ready.is_empty() {
                        r.outcome = Outcome::Failed {
                            reason: format!(
                                "health check failed: {} not ready",
                                not_ready.join(", ")
                            ),
                            flux_reason: FailReason::HealthCheckFailed,
                        };
                        failed_any = true;
                    }
                    emit(Event::Finished(r.clone()));
                    states.insert(r.id.clone(), State::Done(r.outcome.clone()));
                    results.insert(r.id.clone(), r);
                }
                continue;
            }
            let waiting = states.values().any(|s| matches!(s, State::Waiting(_)));
            if running == 0 && !waiting {
                break;
            }
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Applied(id)) => { applied.insert(id); }
                Some(Msg::Done(a)) => {
                    running -= 1;
                    let id = a.result.id.clone();
                    let t = tries.entry(id.clone()).or_default();
                    t.fold(&a.actions);
                    let retry_in = match &a.result.outcome {
                        Outcome::Failed { .. }
                            if a.permanent.is_none() && !interrupted && !cancel.is_cancelled() =>
                        {
                            order
                                .iter()
                                .find(|u| u.id == id)
                                .map(|u| retry::delay(&u.spec, t.made))
                                .filter(|d| {
                                    retry::within_budget(rollout_start.elapsed(), *d, opts.retry_for)
                                })
                        }
                        _ => None,
                    };
                    if let (Some(delay), Outcome::Failed { reason, flux_reason }) =
                        (retry_in, &a.result.outcome)
                    {
                        emit(Event::Retrying {
                            id: id.clone(),
                            attempt: t.made + 1,
                            delay_seconds: (delay.as_secs_f64() * 1000.0).round() / 1000.0,
                            reason: reason.clone(),
                            flux_reason: *flux_reason,
                        });
                        states.insert(id.clone(), State::Waiting(Box::new(a.result)));
                        let (tx, cancel) = (tx.clone(), cancel.clone());
                        tasks.spawn(async move {
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => { let _ = tx.send(Msg::Retry(id)); }
                                _ = cancel.cancelled() => {}
                            }
                        });
                        continue;
                    }
                    let r = t.finish(a.result);
                    let r = match (r.outcome.clone(), a.permanent) {
                        (Outcome::Failed { reason, flux_reason }, Some(why)) => KsResult {
                            outcome: Outcome::Failed {
                                reason: format!("{reason} (not retried: {why})"),
                                flux_reason,
                            },
                            ..r
                        },
                        _ => r,
                    };
                    if !r.outcome.is_ready() {
                        failed_any = true;
                    } else {
                        applied.insert(r.id.clone());
                        if gates.contains_key(&r.id) {
                            // Ready itself; Ready for its dependents once its HelmReleases are.
                            held.insert(r.id.clone(), r);
                            continue;
                        }
                    }
                    emit(Event::Finished(r.clone()));
                    states.insert(r.id.clone(), State::Done(r.outcome.clone()));
                    results.insert(r.id.clone(), r);
                }
                Some(Msg::Retry(id)) => {
                    if matches!(states.get(&id), Some(State::Waiting(_))) {
                        states.insert(id, State::Pending);
                    }
                }
                None => break,
            },
            _ = cancel.cancelled(), if !interrupted => {
                interrupted = true;
                emit(Event::Interrupted);
                // Whatever waits for a retry ends now, with its last failure.
                let waiting: Vec<KsId> = states
                    .iter()
                    .filter(|(_, s)| matches!(s, State::Waiting(_)))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in waiting {
                    let Some(State::Waiting(last)) = states.remove(&id) else { continue };
                    let t = tries.entry(id.clone()).or_default();
                    let mut r = t.finish(*last);
                    if let Outcome::Failed { reason, .. } = &mut r.outcome {
                        reason.push_str("; interrupted while waiting to retry");
                    }
                    failed_any = true;
                    emit(Event::Finished(r.clone()));
                    states.insert(id.clone(), State::Done(r.outcome.clone()));
                    results.insert(id, r);
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    watch_cancel.cancel();
    // Kustomizations still waiting for HelmReleases that never finished (interrupted).
    for (id, mut r) in std::mem::take(&mut held) {
        r.outcome = Outcome::NotStarted {
            reason: "interrupted while its HelmReleases were installing".into(),
        };
        let _ = events.send(Event::Finished(r.clone()));
        states.insert(id.clone(), State::Done(r.outcome.clone()));
        results.insert(id, r);
    }
    let reason = if interrupted {
        "interrupted"
    } else if opts.fail_fast && failed_any {
        "--fail-fast: stopped after a failure"
    } else {
        "never became startable"
    };
    for u in &order {
        if matches!(states.get(&u.id), Some(State::Pending)) {
            let outcome = Outcome::NotStarted {
                reason: reason.into(),
            };
            settle(&u.id, outcome, &events, &mut results, &mut states);
        }
    }
    order.iter().filter_map(|u| results.remove(&u.id)).collect()
}

/// Records the outcome of a Kustomization that never ran (suspended, skipped, not started).
fn settle(
    id: &KsId,
    outcome: Outcome,
    events: &mpsc::UnboundedSender<Event>,
    results: &mut BTreeMap<KsId, KsResult>,
    states: &mut BTreeMap<KsId, State>,
) {
    let r = KsResult {
        id: id.clone(),
        outcome: outcome.clone(),
        duration: Duration::ZERO,
        objects: Counts::default(),
        attempts: 0,
    };
    let _ = events.send(Event::Finished(r.clone()));
    results.insert(id.clone(), r);
    states.insert(id.clone(), State::Done(outcome));
}

async fn run_unit(
    ctx: &Ctx,
    unit: &Unit,
    known: Option<Option<inventory::Inventory>>,
    attempt: u32,
) -> Attempt {
    let Ctx {
        cluster,
        watchers,
        opts,
        events,
        tx,
        cancel,
    } = ctx;
    let start = Instant::now();
    if let Some(rel) = &unit.helm {
        return run_helm(ctx, unit, rel, attempt).await;
    }
    let timeout = opts
        .timeout
        .unwrap_or_else(|| unit.spec.effective_timeout());
    let _ = events.send(Event::Started {
        id: unit.id.clone(),
        objects: unit.objects.len(),
        timeout_seconds: timeout.as_secs(),
    });
    let mut counts = Counts::default();
    let mut actions: Vec<(String, Action)> = Vec::new();
    let done = |outcome: Outcome, counts: Counts, actions, permanent| Attempt {
        result: KsResult {
            id: unit.id.clone(),
            outcome,
            duration: start.elapsed(),
            objects: counts,
            attempts: attempt,
        },
        actions,
        permanent,
    };
    let failed = |reason: &str, flux_reason| Outcome::Failed {
        reason: crate::redact::redact(reason, &unit.secrets),
        flux_reason,
    };
    if let Some(reason) = &unit.refuse {
        return done(
            failed(reason, FailReason::ReconciliationFailed),
            counts,
            actions,
            Some("flux-order cannot apply it"),
        );
    }
    let read = match known {
        Some(inv) => Ok(inv),
        None => inventory::read(cluster, &unit.id).await,
    };
    let old = match read {
        Ok(inv) => inv.unwrap_or_default(),
        Err(e) => {
            return done(
                failed(
                    &format!("cannot read the inventory: {e}"),
                    FailReason::ReconciliationFailed,
                ),
                counts,
                actions,
                None,
            );
        }
    };
    let digest = inventory::digest(&unit.objects);
    let objects: Vec<Value> = unit.objects.iter().map(Manifest::object).collect();
    let gate_of = |objects: &[Value]| Gate {
        targets: gate::targets(&unit.spec, objects),
        exprs: unit.exprs.clone(),
        timeout,
        file: unit.file.clone(),
    };

    // Incremental: same build as last time, every object still there and healthy → no writes.
    if !opts.force_apply && old.ready && old.digest == digest {
        let existing: Vec<gate::Target> = old
            .entries
            .iter()
            .filter_map(|e| e.parse())
            .map(|(a, k, n, name)| gate::Target {
                api_version: a,
                kind: k,
                namespace: n,
                name,
                ttl_job: false,
                min_generation: None,
            })
            .collect();
        if gate::probe(cluster, watchers, &existing, &gate_of(&objects)).await {
            counts.unchanged = unit.objects.len();
            let _ = tx.send(Msg::Applied(unit.id.clone()));
            // Same objects; only the bookkeeping (a new commit, prune, parent) may need recording.
            let fresh = inventory::Inventory {
                revision: unit.revision.clone(),
                ..bookkeeping(unit, old.clone())
            };
            if fresh != old
                && let Err(e) = inventory::write(cluster, &unit.id, &fresh).await
            {
                return done(
                    failed(
                        &format!("writing the inventory failed: {e}"),
                        FailReason::ReconciliationFailed,
                    ),
                    counts,
                    actions,
                    None,
                );
            }
            return done(Outcome::Unchanged, counts, actions, None);
        }
    }

    let force = opts.force || unit.spec.force;
    let known: std::collections::HashSet<String> =
        old.entries.iter().map(|e| e.id.clone()).collect();
    let staged = stages::apply_staged(
        cluster,
        objects.clone(),
        &known,
        force,
        opts.object_parallelism,
        cancel,
        |o, a| {
            let _ = events.send(Event::Applied {
                id: unit.id.clone(),
                object: crate::redact::redact(&subject(o), &unit.secrets),
                action: a,
            });
        },
    )
    .await;
    for (o, a) in &staged.applied {
        counts.add(*a);
        actions.push((subject(o), *a));
    }
    let applied_entries: Vec<inventory::Entry> = staged
        .applied
        .iter()
        .map(|(o, _)| inventory::Entry::of(o))
        .collect();
    let mut inv = bookkeeping(
        unit,
        inventory::Inventory {
            revision: unit.revision.clone(),
            applied_at: crate::report::progress::timestamp(SystemTime::now()),
            attempts: attempt,
            ..Default::default()
        },
    );
    if let Some(reason) = staged.error {
        // Keep everything that may exist: the old entries and what this run applied.
        inv.entries = union(&old.entries, &applied_entries);
        let reason = crate::redact::redact(&reason, &unit.secrets);
        inv.outcome = FailReason::ReconciliationFailed.as_str().into();
        inv.message = reason.clone();
        let reason = match inventory::write(cluster, &unit.id, &inv).await {
            Ok(()) => reason,
            Err(e) => format!(
                "{reason}; and {}",
                inventory_failure(&e, &old.entries, &inv.entries)
            ),
        };
        return done(
            failed(&reason, FailReason::ReconciliationFailed),
            counts,
            actions,
            staged.permanent,
        );
    }
    // The new set is what was applied, in apply order (Flux's inventory order; every object,
    // skipped ones included, since nothing failed), plus whatever prune could not delete.
    let stale = inventory::stale(&old.entries, &applied_entries);
    let mut entries = applied_entries;
    let mut failure = None;
    if unit.spec.prune && !stale.is_empty() {
        let (kept, err) = stages::prune(cluster, &unit.id, &stale, |s, a| {
            counts.add(a);
            actions.push((s.to_string(), a));
            let _ = events.send(Event::Applied {
                id: unit.id.clone(),
                object: crate::redact::redact(s, &unit.secrets),
                action: a,
            });
        })
        .await;
        entries.extend(kept);
        failure = err.map(|e| (e, FailReason::PruneFailed));
    }
    inv.entries = entries;
    let _ = tx.send(Msg::Applied(unit.id.clone()));
    let _ = events.send(Event::AllApplied {
        id: unit.id.clone(),
    });
    let checked: Vec<Value> = staged
        .applied
        .into_iter()
        .filter(|(_, a)| *a != Action::Skipped)
        .map(|(o, _)| o)
        .collect();
    let r = match failure {
        Some(e) => Err(e),
        None => {
            let gate = gate_of(&checked);
            let health_start = Instant::now();
            let r = gate::wait(
                cluster,
                watchers,
                &gate,
                cancel,
                |p| {
                    let _ = events.send(Event::Waiting {
                        id: unit.id.clone(),
                        ready: p.ready,
                        total: p.total,
                        pending: p
                            .pending
                            .iter()
                            .map(|x| crate::redact::redact(x, &unit.secrets))
                            .collect(),
                    });
                },
                |t| {
                    let _ = events.send(Event::ObjectReady {
                        id: unit.id.clone(),
                        object: crate::redact::redact(&t.label(), &unit.secrets),
                        at_ms: now_ms(),
                    });
                },
            )
            .await;
            if r.is_ok() && !gate.targets.is_empty() {
                let _ = events.send(Event::HealthPassed {
                    id: unit.id.clone(),
                    objects: gate.targets.len(),
                    seconds: (health_start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                });
            }
            r.map_err(|e| (e, FailReason::HealthCheckFailed))
        }
    };
    inv.ready = r.is_ok();
    inv.digest = digest;
    match &r {
        Ok(()) => inv.outcome = "ReconciliationSucceeded".into(),
        Err((e, why)) => {
            inv.outcome = why.as_str().into();
            inv.message = crate::redact::redact(e, &unit.secrets);
        }
    }
    let write = inventory::write(cluster, &unit.id, &inv).await;
    match (r, write) {
        (Ok(()), Ok(())) => done(Outcome::Ready, counts, actions, None),
        (Ok(()), Err(e)) => done(
            failed(
                &inventory_failure(&e, &old.entries, &inv.entries),
                FailReason::ReconciliationFailed,
            ),
            counts,
            actions,
            None,
        ),
        (Err((reason, why)), Ok(())) => done(failed(&reason, why), counts, actions, None),
        (Err((reason, why)), Err(e)) => done(
            failed(
                &format!(
                    "{reason}; and {}",
                    inventory_failure(&e, &old.entries, &inv.entries)
                ),
                why,
            ),
            counts,
            actions,
            None,
        ),
    }
}

/// A failed inventory write, naming what it leaves unrecorded: the objects of `new` that the
/// stored inventory (`old`) does not list (the next run cannot prune them until it applies them
/// again).
fn inventory_failure(
    e: &crate::cluster::ClusterError,
    old: &[inventory::Entry],
    new: &[inventory::Entry],
) -> String {
    let missing: Vec<String> = inventory::stale(new, old)
        .iter()
        .filter_map(|e| e.parse())
        .map(|(_, kind, ns, name)| crate::model::subject_of(&kind, &ns, &name))
        .collect();
    let what = match missing.len() {
        0 => "nothing new is left unrecorded".to_string(),
        n if n <= 5 => format!("not recorded: {}", missing.join(", ")),
        n => format!(
            "not recorded: {} and {} more",
            missing[..5].join(", "),
            n - 5
        ),
    };
    format!("writing the inventory failed: {e} ({what})")
}

/// A HelmRelease unit: the helm stage installs it.
async fn run_helm(ctx: &Ctx, unit: &Unit, rel: &crate::helm::Release, attempt: u32) -> Attempt {
    let start = Instant::now();
    let timeout = ctx.opts.timeout.unwrap_or_else(|| rel.spec.timeout(false));
    let _ = ctx.events.send(Event::Started {
        id: unit.id.clone(),
        objects: 0,
        timeout_seconds: timeout.as_secs(),
    });
    let (outcome, objects) = match &ctx.opts.helm {
        Some(env) => {
            crate::helm::install::run(
                &ctx.cluster,
                &ctx.watchers,
                env,
                rel,
                ctx.opts.timeout,
                ctx.opts.force_apply,
                &ctx.cancel,
                &ctx.events,
                || {
                    let _ = ctx.tx.send(Msg::Applied(unit.id.clone()));
                },
            )
            .await
        }
        None => (
            Outcome::Failed {
                reason: "helm is not available".into(),
                flux_reason: FailReason::ReconciliationFailed,
            },
            Counts::default(),
        ),
    };
    // A chart that is not there, or another cluster, does not heal by waiting.
    let permanent = matches!(&rel.chart, crate::helm::Chart::Unavailable(_))
        .then_some("the chart is not available")
        .or(rel.spec.kube_config.is_some().then_some("another cluster"));
    Attempt {
        result: KsResult {
            id: unit.id.clone(),
            outcome,
            duration: start.elapsed(),
            objects,
            attempts: attempt,
        },
        actions: Vec::new(),
        permanent,
    }
}

/// `inv` with the unit's parent, prune and deletionPolicy recorded.
fn bookkeeping(unit: &Unit, inv: inventory::Inventory) -> inventory::Inventory {
    inventory::Inventory {
        parent: unit
            .owner
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        prune: unit.spec.prune,
        deletion_policy: unit.spec.deletion_policy.clone().unwrap_or_default(),
        ..inv
    }
}

/// `a` followed by the entries of `b` not in `a`.
fn union(a: &[inventory::Entry], b: &[inventory::Entry]) -> Vec<inventory::Entry> {
    let mut out = a.to_vec();
    for e in b {
        if !out.iter().any(|x| x.id == e.id) {
            out.push(e.clone());
        }
    }
    out
}
