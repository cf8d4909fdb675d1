//! The executor: starts each Kustomization the moment its dependencies are Ready and its parent
//! has applied it (or, with `--wave-barrier`, when the previous wave is done), at most
//! `--concurrency` at once; applies its objects in Flux's stages ([`stages`]); waits on its health
//! gate (`health::gate`, the single readiness point); isolates failures (dependents are skipped,
//! independent branches go on; `--fail-fast` stops new starts); stops starting work on
//! interruption. It reports through [`events`] and returns every Kustomization's result.

pub mod events;
pub mod stages;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::health::cel_expr::HealthExprs;
use crate::health::gate::{self, Gate};
use crate::health::watch::Watchers;
use crate::model::{KsId, KustomizationSpec, subject};
use events::{Action, Counts, Event, KsResult, Outcome};

/// One Kustomization to run.
#[derive(Debug, Clone)]
pub struct Unit {
    /// namespace/name.
    pub id: KsId,
    /// Its spec.
    pub spec: KustomizationSpec,
    /// Objects to apply (Flux objects excluded), substituted and labelled.
    pub objects: Vec<Value>,
    /// Defining file.
    pub file: String,
    /// dependsOn inside the selection.
    pub deps: Vec<KsId>,
    /// The parent inside the selection.
    pub parent: Option<KsId>,
    /// Its wave.
    pub wave: usize,
    /// Compiled healthCheckExprs.
    pub exprs: Option<Arc<HealthExprs>>,
    /// Why it must not be applied (remote cluster, SOPS), if so.
    pub refuse: Option<String>,
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
}

enum Msg {
    Applied(KsId),
    Done(KsResult),
}

enum State {
    Pending,
    Running,
    Done(Outcome),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the rollout; returns one result per unit, in wave order.
pub async fn run(
    cluster: Arc<Cluster>,
    units: Vec<Unit>,
    opts: ExecOptions,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) -> Vec<KsResult> {
    let emit = |e: Event| {
        let _ = events.send(e);
    };
    let watch_cancel = CancellationToken::new();
    let watchers = Watchers::new(cluster.client().clone(), watch_cancel.clone());
    let mut order: Vec<&Unit> = units.iter().collect();
    order.sort_by(|a, b| (a.wave, &a.id).cmp(&(b.wave, &b.id)));
    emit(Event::RolloutStarted {
        kustomizations: units.len(),
        objects: units.iter().map(|u| u.objects.len()).sum(),
    });

    let mut states: BTreeMap<KsId, State> = BTreeMap::new();
    let mut results: BTreeMap<KsId, KsResult> = BTreeMap::new();
    let mut applied: BTreeSet<KsId> = BTreeSet::new();
    let mut blocked_shown: BTreeMap<KsId, Vec<String>> = BTreeMap::new();
    for u in &order {
        if u.spec.suspend {
            let r = KsResult {
                id: u.id.clone(),
                outcome: Outcome::Suspended,
                duration: Duration::ZERO,
                objects: Counts::default(),
            };
            emit(Event::Finished(r.clone()));
            results.insert(u.id.clone(), r);
            states.insert(u.id.clone(), State::Done(Outcome::Suspended));
        } else {
            states.insert(u.id.clone(), State::Pending);
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut tasks = tokio::task::JoinSet::new();
    let mut running = 0usize;
    let mut failed_any = false;
    let mut interrupted = false;
    loop {
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
                    .filter(
                        |d| matches!(states.get(*d), Some(State::Done(o)) if *o != Outcome::Ready),
                    )
                    .map(|d| d.to_string())
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
                let outcome = Outcome::Skipped { blocked_by };
                let r = KsResult {
                    id: id.clone(),
                    outcome: outcome.clone(),
                    duration: Duration::ZERO,
                    objects: Counts::default(),
                };
                emit(Event::Finished(r.clone()));
                results.insert(id.clone(), r);
                states.insert(id, State::Done(outcome));
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
                .filter(|d| !matches!(states.get(*d), Some(State::Done(Outcome::Ready))))
                .map(|d| d.to_string())
                .collect();
            if let Some(p) = u.parent.as_ref().filter(|p| !applied.contains(*p)) {
                waiting_on.push(format!("{p} (parent)"));
            }
            if opts.wave_barrier {
                let earlier_busy = order
                    .iter()
                    .any(|o| o.wave < u.wave && !matches!(states.get(&o.id), Some(State::Done(_))));
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
            let (cluster, watchers, opts, events, tx, cancel) = (
                cluster.clone(),
                watchers.clone(),
                opts.clone(),
                events.clone(),
                tx.clone(),
                cancel.clone(),
            );
            tasks.spawn(async move {
                let r = run_unit(&cluster, &watchers, &unit, &opts, &events, &tx, &cancel).await;
                let _ = tx.send(Msg::Done(r));
            });
        }
        if running == 0 {
            break;
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Applied(id)) => { applied.insert(id); }
                Some(Msg::Done(r)) => {
                    running -= 1;
                    if r.outcome != Outcome::Ready {
                        failed_any = true;
                    } else {
                        applied.insert(r.id.clone());
                    }
                    emit(Event::Finished(r.clone()));
                    states.insert(r.id.clone(), State::Done(r.outcome.clone()));
                    results.insert(r.id.clone(), r);
                }
                None => break,
            },
            _ = cancel.cancelled(), if !interrupted => {
                interrupted = true;
                emit(Event::Interrupted);
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    watch_cancel.cancel();
    let reason = if interrupted {
        "interrupted"
    } else if opts.fail_fast && failed_any {
        "--fail-fast: stopped after a failure"
    } else {
        "never became startable"
    };
    for u in &order {
        if matches!(states.get(&u.id), Some(State::Pending)) {
            let r = KsResult {
                id: u.id.clone(),
                outcome: Outcome::NotStarted {
                    reason: reason.into(),
                },
                duration: Duration::ZERO,
                objects: Counts::default(),
            };
            emit(Event::Finished(r.clone()));
            results.insert(u.id.clone(), r);
        }
    }
    order.iter().filter_map(|u| results.remove(&u.id)).collect()
}

async fn run_unit(
    cluster: &Cluster,
    watchers: &Arc<Watchers>,
    unit: &Unit,
    opts: &ExecOptions,
    events: &mpsc::UnboundedSender<Event>,
    tx: &mpsc::UnboundedSender<Msg>,
    cancel: &CancellationToken,
) -> KsResult {
    let start = Instant::now();
    let timeout = opts
        .timeout
        .unwrap_or_else(|| unit.spec.effective_timeout());
    let _ = events.send(Event::Started {
        id: unit.id.clone(),
        objects: unit.objects.len(),
        timeout_seconds: timeout.as_secs(),
    });
    let mut counts = Counts::default();
    let done = |outcome: Outcome, counts: Counts| KsResult {
        id: unit.id.clone(),
        outcome,
        duration: start.elapsed(),
        objects: counts,
    };
    if let Some(reason) = &unit.refuse {
        return done(
            Outcome::Failed {
                reason: reason.clone(),
            },
            counts,
        );
    }
    let force = opts.force || unit.spec.force;
    let applied = stages::apply_staged(
        cluster,
        unit.objects.clone(),
        force,
        opts.object_parallelism,
        cancel,
        |o, a| {
            let _ = events.send(Event::Applied {
                id: unit.id.clone(),
                object: subject(o),
                action: a,
            });
        },
    )
    .await;
    let applied = match applied {
        Ok(a) => a,
        Err(reason) => {
            return done(Outcome::Failed { reason }, counts);
        }
    };
    for (_, a) in &applied {
        counts.add(*a);
    }
    let _ = tx.send(Msg::Applied(unit.id.clone()));
    let _ = events.send(Event::AllApplied {
        id: unit.id.clone(),
    });
    let checked: Vec<Value> = applied
        .into_iter()
        .filter(|(_, a)| *a != Action::Skipped)
        .map(|(o, _)| o)
        .collect();
    let g = Gate {
        targets: gate::targets(&unit.spec, &checked),
        exprs: unit.exprs.clone(),
        timeout,
        file: unit.file.clone(),
    };
    let r = gate::wait(
        cluster,
        watchers,
        &g,
        cancel,
        |p| {
            let _ = events.send(Event::Waiting {
                id: unit.id.clone(),
                ready: p.ready,
                total: p.total,
                pending: p.pending.clone(),
            });
        },
        |t| {
            let _ = events.send(Event::ObjectReady {
                id: unit.id.clone(),
                object: t.label(),
                at_ms: now_ms(),
            });
        },
    )
    .await;
    match r {
        Ok(()) => done(Outcome::Ready, counts),
        Err(reason) => done(Outcome::Failed { reason }, counts),
    }
}
