//! What the executor reports while it runs: typed events, consumed by the renderers in
//! `report::progress` (TTY bars, plain CI lines, JSON lines) and folded into the summary.
//! Tests assert on the JSON renderer's lines, never on terminal escapes.

use std::time::Duration;

use serde::Serialize;

use crate::model::KsId;

/// What applying one object did (Flux's change-set actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The object did not exist.
    Created,
    /// The object drifted and was applied.
    Configured,
    /// Nothing to change (no write).
    Unchanged,
    /// Skipped by a per-object policy (`ssa: Ignore`, `reconcile: disabled`, `IfNotPresent`).
    Skipped,
    /// Deleted (prune).
    Deleted,
}

/// Object counts of one Kustomization.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Created.
    pub created: usize,
    /// Configured.
    pub configured: usize,
    /// Unchanged.
    pub unchanged: usize,
    /// Skipped by policy.
    pub skipped: usize,
    /// Pruned.
    pub deleted: usize,
}

impl Counts {
    /// Adds one action.
    pub fn add(&mut self, a: Action) {
        match a {
            Action::Created => self.created += 1,
            Action::Configured => self.configured += 1,
            Action::Unchanged => self.unchanged += 1,
            Action::Skipped => self.skipped += 1,
            Action::Deleted => self.deleted += 1,
        }
    }
}

/// How one Kustomization ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Applied and healthy.
    Ready,
    /// Same build as the last run and still healthy: nothing written.
    Unchanged,
    /// Apply or health failed (after its last attempt).
    Failed {
        /// Why.
        reason: String,
        /// The Ready condition's reason kustomize-controller would set (`HealthCheckFailed`, …).
        flux_reason: FailReason,
    },
    /// A dependency or parent did not become Ready; never started.
    Skipped {
        /// What blocked it.
        blocked_by: Vec<String>,
    },
    /// spec.suspend: not applied.
    Suspended,
    /// Not started: interrupted, or `--fail-fast` after another failure.
    NotStarted {
        /// Why.
        reason: String,
    },
    /// Left out before the rollout: `--exclude`, or invalid under `--skip-invalid`.
    Excluded {
        /// Why.
        reason: String,
        /// Invalid (a failure), not the user's `--exclude`.
        invalid: bool,
    },
}

impl Outcome {
    /// Ready, or unchanged since a ready run.
    pub fn is_ready(&self) -> bool {
        matches!(self, Outcome::Ready | Outcome::Unchanged)
    }

    /// Counts against the exit code: not ready, not suspended, not left out by `--exclude`.
    pub fn is_failure(&self) -> bool {
        !(self.is_ready()
            || matches!(
                self,
                Outcome::Suspended | Outcome::Excluded { invalid: false, .. }
            ))
    }

    /// Short label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ready => "ready",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Suspended => "suspended",
            Outcome::NotStarted { .. } => "not started",
            Outcome::Excluded { .. } => "excluded",
        }
    }
}

/// What failed, named as kustomize-controller names the Ready condition's reason; it is also the
/// reason of the Kubernetes Event recorded for the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[allow(clippy::enum_variant_names)] // kustomize-controller's names, serialized as they are
pub enum FailReason {
    /// Applying (dry-run, apply, CRD establishment) failed, or the Kustomization was refused.
    ReconciliationFailed,
    /// The health checks failed or timed out.
    HealthCheckFailed,
    /// Pruning stale objects failed.
    PruneFailed,
}

impl FailReason {
    /// The reason as kustomize-controller spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::ReconciliationFailed => "ReconciliationFailed",
            FailReason::HealthCheckFailed => "HealthCheckFailed",
            FailReason::PruneFailed => "PruneFailed",
        }
    }
}

/// The result of one Kustomization.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KsResult {
    /// namespace/name.
    pub id: KsId,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Time from start to end (zero when never started).
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Object counts (an object counts once over all attempts, by its first change).
    pub objects: Counts,
    /// Attempts made (0 when never started; more than 1 after retries).
    pub attempts: u32,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// An executor event.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The rollout starts.
    RolloutStarted {
        /// Kustomizations selected.
        kustomizations: usize,
        /// Objects to apply.
        objects: usize,
    },
    /// A Kustomization started applying.
    Started {
        /// Which.
        id: KsId,
        /// Objects to apply.
        objects: usize,
        /// Its health-check timeout in seconds.
        timeout_seconds: u64,
    },
    /// One object was applied.
    Applied {
        /// Which Kustomization.
        id: KsId,
        /// `Kind/ns/name`.
        object: String,
        /// What happened.
        action: Action,
    },
    /// All objects of a Kustomization are applied; health checks follow.
    AllApplied {
        /// Which.
        id: KsId,
    },
    /// Health progress of a Kustomization.
    Waiting {
        /// Which.
        id: KsId,
        /// Objects ready.
        ready: usize,
        /// Objects checked.
        total: usize,
        /// Not ready yet, with their status (`Deployment apps/web: 1/3 replicas ready`).
        pending: Vec<String>,
    },
    /// An object of a health gate was first seen ready.
    ObjectReady {
        /// Which Kustomization.
        id: KsId,
        /// `Kind ns/name`.
        object: String,
        /// When flux-order noticed, milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// A Kustomization cannot start yet; what it waits on.
    Blocked {
        /// Which.
        id: KsId,
        /// The dependencies not Ready yet.
        waiting_on: Vec<String>,
    },
    /// Every health check of a Kustomization passed.
    HealthPassed {
        /// Which.
        id: KsId,
        /// Objects checked.
        objects: usize,
        /// How long the checks took, in seconds.
        seconds: f64,
    },
    /// An attempt of a Kustomization failed and it will be tried again; its dependents keep
    /// waiting.
    Retrying {
        /// Which.
        id: KsId,
        /// The attempt that comes next (2 for the first retry).
        attempt: u32,
        /// Seconds until it starts.
        delay_seconds: f64,
        /// Why the last attempt failed.
        reason: String,
        /// What failed, as kustomize-controller names it.
        flux_reason: FailReason,
    },
    /// A Kustomization finished (any outcome).
    Finished(KsResult),
    /// The rollout was interrupted.
    Interrupted,
}
