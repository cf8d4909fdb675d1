//! Computes an object's kstatus status, as Flux's health checks see it.
//!
//! This re-implements `status.Compute` of fluxcd/cli-utils
//! (`pkg/kstatus/status/{generic,core,status,util}.go`) together with the
//! Job rule Flux swaps in (fluxcd/pkg `runtime/statusreaders/job.go`):
//!
//! 1. Jobs (`batch/Job`) use Flux's Job reader **only**, without the generic
//!    checks below, exactly as Flux registers it: suspended or `Complete=True`
//!    → Current, `Failed=True` → Failed, anything else (running included) →
//!    InProgress.
//! 2. Every other object first goes through the generic checks:
//!    `metadata.deletionTimestamp` → Terminating; an integer
//!    `status.observedGeneration` different from `metadata.generation` →
//!    InProgress; then the first `Reconciling=True` (InProgress) or
//!    `Stalled=True` (Failed) condition decides.
//! 3. Then the kind's own rule, for Deployment, StatefulSet, DaemonSet,
//!    ReplicaSet, Pod, PersistentVolumeClaim, Service, CustomResourceDefinition,
//!    PodDisruptionBudget, Secret, ConfigMap and CronJob. Namespace has no rule.
//! 4. Any other kind: `Ready=True` → Current, `Ready` False or Unknown →
//!    InProgress, no `Ready` condition (or no status at all) → Current.
//!
//! Where kstatus would return an error (a malformed field, an unknown pod
//! phase), the status is [`Status::Unknown`], as kstatus's poller reports it.
//! Messages follow kstatus's, except that replica counts are spelled as
//! progress (`1/3 replicas ready` where kstatus says `Ready: 1/3`).

use serde_json::Value;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a pod may stay unschedulable before it counts as failed
/// (kstatus `ScheduleWindow`).
pub const SCHEDULE_WINDOW: Duration = Duration::from_secs(15);

/// A kstatus status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Status {
    /// The object is still being reconciled.
    InProgress,
    /// The object failed and will not get better without a change.
    Failed,
    /// The object is fully reconciled.
    Current,
    /// The object is being deleted.
    Terminating,
    /// The object does not exist (see [`StatusResult::not_found`]).
    NotFound,
    /// The status could not be computed.
    Unknown,
}

impl Status {
    /// Whether this status makes Flux's health check fail fast: only
    /// [`Status::Failed`] does (NotFound and Terminating keep waiting).
    pub fn is_terminal_failure(self) -> bool {
        self == Status::Failed
    }

    /// The status as kstatus prints it: `InProgress`, `Failed`, `Current`,
    /// `Terminating`, `NotFound` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::InProgress => "InProgress",
            Status::Failed => "Failed",
            Status::Current => "Current",
            Status::Terminating => "Terminating",
            Status::NotFound => "NotFound",
            Status::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A computed status and a short human message explaining it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StatusResult {
    /// The status.
    pub status: Status,
    /// Why, e.g. `1/3 replicas ready`; may be empty.
    pub message: String,
}

impl StatusResult {
    /// The result for an object the API server does not have, as kstatus's
    /// poller reports it (`compute` never returns it: the caller knows).
    pub fn not_found() -> Self {
        Self::new(Status::NotFound, "Resource not found")
    }

    fn new(status: Status, message: impl Into<String>) -> Self {
        StatusResult {
            status,
            message: message.into(),
        }
    }

    fn current(message: impl Into<String>) -> Self {
        Self::new(Status::Current, message)
    }

    fn in_progress(message: impl Into<String>) -> Self {
        Self::new(Status::InProgress, message)
    }

    fn failed(message: impl Into<String>) -> Self {
        Self::new(Status::Failed, message)
    }
}

/// Computes the status of `obj`, an object of `api_version`/`kind`, at the current time.
///
/// The type is the resource the caller read or watched, never the object's own fields: the API
/// server leaves `kind` and `apiVersion` off the items of a LIST, and a Deployment without them
/// would fall through to the generic "no conditions: Current" rule.
pub fn compute(api_version: &str, kind: &str, obj: &Value) -> StatusResult {
    compute_at(api_version, kind, obj, SystemTime::now())
}

/// [`compute`] as of `now`, which only the Pod rule reads (an unschedulable pod fails once it is
/// older than [`SCHEDULE_WINDOW`]).
pub fn compute_at(api_version: &str, kind: &str, obj: &Value, now: SystemTime) -> StatusResult {
    let same = |field: &str, want: &str| obj.get(field).and_then(Value::as_str) == Some(want);
    let obj: std::borrow::Cow<'_, Value> = if same("apiVersion", api_version) && same("kind", kind)
    {
        std::borrow::Cow::Borrowed(obj)
    } else {
        let mut typed = obj.clone();
        if let Some(m) = typed.as_object_mut() {
            m.insert("apiVersion".into(), Value::from(api_version));
            m.insert("kind".into(), Value::from(kind));
        }
        std::borrow::Cow::Owned(typed)
    };
    let obj = obj.as_ref();
    let result = if group_kind(obj) == ("batch", "Job") {
        job(obj)
    } else {
        match generic(obj) {
            Ok(Some(res)) => Ok(res),
            Ok(None) => by_kind(obj, now),
            Err(e) => Err(e),
        }
    };
    result.unwrap_or_else(|e| {
        StatusResult::new(Status::Unknown, format!("failed to compute status: {e}"))
    })
}

type Rule = Result<StatusResult, String>;

/// The group (empty for the core group) and kind of `obj`.
fn group_kind(obj: &Value) -> (&str, &str) {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let group = match api_version.rsplit_once('/') {
        Some((group, _)) => group,
        None => "",
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    (group, kind)
}

fn kind_of(obj: &Value) -> &str {
    group_kind(obj).1
}

fn by_kind(obj: &Value, now: SystemTime) -> Rule {
    match group_kind(obj) {
        ("", "Service") => Ok(service(obj)),
        ("", "Pod") => pod(obj, now),
        ("", "Secret") | ("", "ConfigMap") | ("batch", "CronJob") => {
            Ok(StatusResult::current("Resource is always ready"))
        }
        ("", "PersistentVolumeClaim") => Ok(pvc(obj)),
        ("apps", "StatefulSet") => Ok(statefulset(obj)),
        ("apps", "DaemonSet") | ("extensions", "DaemonSet") => daemonset(obj),
        ("apps", "Deployment") | ("extensions", "Deployment") => deployment(obj),
        ("apps", "ReplicaSet") | ("extensions", "ReplicaSet") => replicaset(obj),
        ("policy", "PodDisruptionBudget") => Ok(StatusResult::current(
            "AllowedDisruptions has been computed.",
        )),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        _ => {
            Ok(ready_condition(obj)?
                .unwrap_or_else(|| StatusResult::current("Resource is current")))
        }
    }
}

// ---------------------------------------------------------------------------
// Field access, with the semantics of apimachinery's unstructured helpers.

/// `NestedFieldNoCopy`: `Ok(None)` when a field on the way is missing or
/// null, an error when one on the way is not an object.
fn nested<'a>(obj: &'a Value, path: &[&str]) -> Result<Option<&'a Value>, String> {
    let mut val = obj;
    for (i, field) in path.iter().enumerate() {
        match val {
            Value::Null => return Ok(None),
            Value::Object(map) => match map.get(*field) {
                Some(v) => val = v,
                None => return Ok(None),
            },
            other => {
                return Err(format!(
                    ".{} accessor error: {} is not an object",
                    path[..i].join("."),
                    other
                ));
            }
        }
    }
    Ok(Some(val))
}

/// `NestedInt64`: found only if present; an error if present but not an
/// integer.
fn nested_int(obj: &Value, path: &[&str]) -> Result<Option<i64>, String> {
    match nested(obj, path)? {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!(".{} accessor error: {v} is not an integer", path.join("."))),
    }
}

/// kstatus `GetIntField`: the integer at `path`, or `default` when missing or
/// of another type.
fn int_field(obj: &Value, path: &[&str], default: i64) -> i64 {
    match nested(obj, path) {
        Ok(Some(v)) => v.as_i64().unwrap_or(default),
        _ => default,
    }
}

/// kstatus `GetStringField`: the string at `path`, or `default`.
fn str_field<'a>(obj: &'a Value, path: &[&str], default: &'a str) -> &'a str {
    match nested(obj, path) {
        Ok(Some(v)) => v.as_str().unwrap_or(default),
        _ => default,
    }
}

/// A `status.conditions` entry.
#[derive(Debug, Default)]
struct Condition {
    type_: String,
    status: String,
    reason: String,
    message: String,
}

/// kstatus `GetObjectWithConditions`: `status.conditions`, empty when absent;
/// an error when present with the wrong shape.
fn conditions(obj: &Value) -> Result<Vec<Condition>, String> {
    let status = match obj.get("status") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(status)) => status,
        Some(other) => return Err(format!("status is not an object: {other}")),
    };
    let list = match status.get("conditions") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("status.conditions is not a list: {other}")),
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let map = match item {
            Value::Null => {
                out.push(Condition::default());
                continue;
            }
            Value::Object(map) => map,
            other => return Err(format!("status.conditions item is not an object: {other}")),
        };
        let text = |key: &str| -> Result<String, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!("condition {key} is not a string: {other}")),
            }
        };
        out.push(Condition {
            type_: text("type")?,
            status: text("status")?,
            reason: text("reason")?,
            message: text("message")?,
        });
    }
    Ok(out)
}

fn find_condition<'a>(conds: &'a [Condition], type_: &str, status: &str) -> Option<&'a Condition> {
    conds
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
}

/// A condition's message, or a description of it when it has none.
fn condition_message(c: &Condition) -> String {
    if !c.message.is_empty() {
        c.message.clone()
    } else if !c.reason.is_empty() {
        format!("{}={} ({})", c.type_, c.status, c.reason)
    } else {
        format!("{}={}", c.type_, c.status)
    }
}

// ---------------------------------------------------------------------------
// Generic rules.

/// kstatus `checkGenericProperties`.
fn generic(obj: &Value) -> Result<Option<StatusResult>, String> {
    match nested(obj, &["metadata", "deletionTimestamp"])? {
        None => {}
        Some(Value::String(ts)) if ts.is_empty() => {}
        Some(Value::String(_)) => {
            return Ok(Some(StatusResult::new(
                Status::Terminating,
                "Resource scheduled for deletion",
            )));
        }
        Some(other) => {
            return Err(format!(
                ".metadata.deletionTimestamp is not a string: {other}"
            ));
        }
    }

    if let Some(generation) = nested_int(obj, &["metadata", "generation"])?
        && let Some(observed) = nested_int(obj, &["status", "observedGeneration"])?
        && observed != generation
    {
        return Ok(Some(StatusResult::in_progress(format!(
            "{} generation is {generation}, but latest observed generation is {observed}",
            kind_of(obj)
        ))));
    }

    for c in conditions(obj)? {
        if c.type_ == "Reconciling" && c.status == "True" {
            return Ok(Some(StatusResult::in_progress(condition_message(&c))));
        }
        if c.type_ == "Stalled" && c.status == "True" {
            return Ok(Some(StatusResult::failed(condition_message(&c))));
        }
    }
    Ok(None)
}

/// kstatus `checkReadyCondition`, for kinds without a rule of their own.
fn ready_condition(obj: &Value) -> Result<Option<StatusResult>, String> {
    for c in conditions(obj)? {
        if c.type_ != "Ready" {
            continue;
        }
        match c.status.as_str() {
            "True" => return Ok(Some(StatusResult::current("Resource is Ready"))),
            "False" | "Unknown" => {
                return Ok(Some(StatusResult::in_progress(condition_message(&c))));
            }
            _ => {}
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// Kind rules.

fn service(obj: &Value) -> StatusResult {
    let spec_type = str_field(obj, &["spec", "type"], "ClusterIP");
    let cluster_ip = str_field(obj, &["spec", "clusterIP"], "");
    if spec_type == "LoadBalancer" && cluster_ip.is_empty() {
        return StatusResult::in_progress("ClusterIP not set. Service type: LoadBalancer");
    }
    StatusResult::current("Service is ready")
}

fn pvc(obj: &Value) -> StatusResult {
    let phase = str_field(obj, &["status", "phase"], "unknown");
    if phase != "Bound" {
        return StatusResult::in_progress(format!("PVC is not Bound. phase: {phase}"));
    }
    StatusResult::current("PVC is Bound")
}

fn statefulset(obj: &Value) -> StatusResult {
    if str_field(obj, &["spec", "updateStrategy", "type"], "") == "OnDelete" {
        return StatusResult::current("StatefulSet is using the ondelete update strategy");
    }
    let spec = int_field(obj, &["spec", "replicas"], 1);
    let ready = int_field(obj, &["status", "readyReplicas"], 0);
    let current = int_field(obj, &["status", "currentReplicas"], 0);
    let updated = int_field(obj, &["status", "updatedReplicas"], 0);
    let replicas = int_field(obj, &["status", "replicas"], 0);
    let partition = int_field(
        obj,
        &["spec", "updateStrategy", "rollingUpdate", "partition"],
        -1,
    );

    if spec > replicas {
        return StatusResult::in_progress(format!("{replicas}/{spec} replicas created"));
    }
    if spec > ready {
        return StatusResult::in_progress(format!("{ready}/{spec} replicas ready"));
    }
    if replicas > spec {
        return StatusResult::in_progress(format!(
            "{} extra replicas pending termination",
            replicas - spec
        ));
    }
    if partition != -1 {
        if updated < spec - partition {
            return StatusResult::in_progress(format!(
                "{updated}/{} replicas updated (partition {partition})",
                spec - partition
            ));
        }
        return StatusResult::current(format!("Partition rollout complete. updated: {updated}"));
    }
    if spec > current {
        return StatusResult::in_progress(format!(
            "{current}/{spec} replicas at the current revision"
        ));
    }
    let current_revision = str_field(obj, &["status", "currentRevision"], "");
    let update_revision = str_field(obj, &["status", "updateRevision"], "");
    if current_revision != update_revision {
        return StatusResult::in_progress("Waiting for updated revision to match current");
    }
    StatusResult::current(format!(
        "All replicas scheduled as expected. Replicas: {replicas}"
    ))
}

fn deployment(obj: &Value) -> Rule {
    // Without progressDeadlineSeconds (or with MaxInt32) the controller never
    // sets Progressing, so it is taken as progressing.
    let mut progressing = int_field(
        obj,
        &["spec", "progressDeadlineSeconds"],
        i64::from(i32::MAX),
    ) == i64::from(i32::MAX);
    let mut available = false;
    for c in conditions(obj)? {
        match c.type_.as_str() {
            "Progressing" => {
                if c.reason == "ProgressDeadlineExceeded" {
                    let mut message = String::from("Progress deadline exceeded");
                    if !c.message.is_empty() {
                        message.push_str(": ");
                        message.push_str(&c.message);
                    }
                    return Ok(StatusResult::failed(message));
                }
                if c.status == "True" && c.reason == "NewReplicaSetAvailable" {
                    progressing = true;
                }
            }
            "Available" if c.status == "True" => available = true,
            _ => {}
        }
    }

    let spec = int_field(obj, &["spec", "replicas"], 1);
    let replicas = int_field(obj, &["status", "replicas"], 0);
    let updated = int_field(obj, &["status", "updatedReplicas"], 0);
    let ready = int_field(obj, &["status", "readyReplicas"], 0);
    let avail = int_field(obj, &["status", "availableReplicas"], 0);

    if spec > replicas {
        return Ok(StatusResult::in_progress(format!(
            "{replicas}/{spec} replicas created"
        )));
    }
    if spec > updated {
        return Ok(StatusResult::in_progress(format!(
            "{updated}/{spec} replicas updated"
        )));
    }
    if replicas > spec {
        return Ok(StatusResult::in_progress(format!(
            "{} old replicas pending termination",
            replicas - spec
        )));
    }
    if updated > avail {
        return Ok(StatusResult::in_progress(format!(
            "{avail}/{updated} updated replicas available"
        )));
    }
    if spec > ready {
        return Ok(StatusResult::in_progress(format!(
            "{ready}/{spec} replicas ready"
        )));
    }
    if !progressing {
        return Ok(StatusResult::in_progress("ReplicaSet not Available"));
    }
    if !available {
        return Ok(StatusResult::in_progress("Deployment not Available"));
    }
    Ok(StatusResult::current(format!(
        "Deployment is available. Replicas: {replicas}"
    )))
}

fn replicaset(obj: &Value) -> Rule {
    if find_condition(&conditions(obj)?, "ReplicaFailure", "True").is_some() {
        return Ok(StatusResult::in_progress(
            "Replica Failure condition. Check Pods",
        ));
    }
    let spec = int_field(obj, &["spec", "replicas"], 1);
    let replicas = int_field(obj, &["status", "replicas"], 0);
    let ready = int_field(obj, &["status", "readyReplicas"], 0);
    let avail = int_field(obj, &["status", "availableReplicas"], 0);
    let labelled = int_field(obj, &["status", "fullyLabeledReplicas"], 0);

    if spec > labelled {
        return Ok(StatusResult::in_progress(format!(
            "{labelled}/{spec} replicas labelled"
        )));
    }
    if spec > avail {
        return Ok(StatusResult::in_progress(format!(
            "{avail}/{spec} replicas available"
        )));
    }
    if spec > ready {
        return Ok(StatusResult::in_progress(format!(
            "{ready}/{spec} replicas ready"
        )));
    }
    if replicas > spec {
        return Ok(StatusResult::in_progress(format!(
            "{} extra replicas pending termination",
            replicas - spec
        )));
    }
    Ok(StatusResult::current(format!(
        "ReplicaSet is available. Replicas: {replicas}"
    )))
}

fn daemonset(obj: &Value) -> Rule {
    // Unlike the generic check, a DaemonSet needs both generations set.
    let kind = kind_of(obj);
    if nested_int(obj, &["metadata", "generation"])?.is_none() {
        return Ok(StatusResult::in_progress(format!(
            "{kind} metadata.generation not found"
        )));
    }
    if nested_int(obj, &["status", "observedGeneration"])?.is_none() {
        return Ok(StatusResult::in_progress(format!(
            "{kind} status.observedGeneration not found"
        )));
    }
    let desired = int_field(obj, &["status", "desiredNumberScheduled"], -1);
    let current = int_field(obj, &["status", "currentNumberScheduled"], 0);
    let updated = int_field(obj, &["status", "updatedNumberScheduled"], 0);
    let avail = int_field(obj, &["status", "numberAvailable"], 0);
    let ready = int_field(obj, &["status", "numberReady"], 0);

    if desired == -1 {
        return Ok(StatusResult::in_progress(
            "Missing .status.desiredNumberScheduled",
        ));
    }
    if desired > current {
        return Ok(StatusResult::in_progress(format!(
            "{current}/{desired} pods scheduled"
        )));
    }
    if desired > updated {
        return Ok(StatusResult::in_progress(format!(
            "{updated}/{desired} pods updated"
        )));
    }
    if desired > avail {
        return Ok(StatusResult::in_progress(format!(
            "{avail}/{desired} pods available"
        )));
    }
    if desired > ready {
        return Ok(StatusResult::in_progress(format!(
            "{ready}/{desired} pods ready"
        )));
    }
    Ok(StatusResult::current(format!(
        "All replicas scheduled as expected. Replicas: {desired}"
    )))
}

fn pod(obj: &Value, now: SystemTime) -> Rule {
    let conds = conditions(obj)?;
    let phase = str_field(obj, &["status", "phase"], "");
    match phase {
        "Succeeded" => Ok(StatusResult::current("Pod has completed successfully")),
        "Failed" => Ok(StatusResult::current(
            "Pod has completed, but not successfully",
        )),
        "Running" => {
            if find_condition(&conds, "Ready", "True").is_some() {
                return Ok(StatusResult::current("Pod is Ready"));
            }
            let looping = crash_looping_containers(obj);
            if !looping.is_empty() {
                return Ok(StatusResult::failed(format!(
                    "Containers in CrashLoop state: {}",
                    looping.join(",")
                )));
            }
            Ok(StatusResult::in_progress("Pod is running but is not Ready"))
        }
        "Pending" => {
            let unschedulable = find_condition(&conds, "PodScheduled", "False")
                .is_some_and(|c| c.reason == "Unschedulable");
            if !unschedulable {
                return Ok(StatusResult::in_progress("Pod is in the Pending phase"));
            }
            // A missing or unparsable creationTimestamp is Go's zero time:
            // long past the window.
            let created = obj
                .get("metadata")
                .and_then(|m| m.get("creationTimestamp"))
                .and_then(Value::as_str)
                .and_then(parse_rfc3339);
            let within_window = match (created, now.checked_sub(SCHEDULE_WINDOW)) {
                (Some(created), Some(cutoff)) => cutoff < created,
                _ => false,
            };
            if within_window {
                Ok(StatusResult::in_progress("Pod has not been scheduled"))
            } else {
                Ok(StatusResult::failed("Pod could not be scheduled"))
            }
        }
        "" => Ok(StatusResult::in_progress("Pod phase not available")),
        other => Err(format!("unknown phase {other}")),
    }
}

/// Names of the containers waiting with reason `CrashLoopBackOff`.
fn crash_looping_containers(obj: &Value) -> Vec<&str> {
    let Some(statuses) = obj
        .get("status")
        .and_then(|s| s.get("containerStatuses"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    statuses
        .iter()
        .filter(|cs| {
            cs.get("state")
                .and_then(|s| s.get("waiting"))
                .and_then(|w| w.get("reason"))
                .and_then(Value::as_str)
                == Some("CrashLoopBackOff")
        })
        .filter_map(|cs| cs.get("name").and_then(Value::as_str))
        .collect()
}

fn crd(obj: &Value) -> Rule {
    for c in conditions(obj)? {
        if c.type_ == "NamesAccepted" && c.status == "False" {
            return Ok(StatusResult::failed(condition_message(&c)));
        }
        if c.type_ == "Established" {
            if c.status == "False" && c.reason != "Installing" {
                return Ok(StatusResult::failed(condition_message(&c)));
            }
            if c.status == "True" {
                return Ok(StatusResult::current("CRD is established"));
            }
        }
    }
    Ok(StatusResult::in_progress("Install in progress"))
}

/// Flux's Job rule (fluxcd/pkg `runtime/statusreaders`), which replaces
/// kstatus's and runs without the generic checks.
fn job(obj: &Value) -> Rule {
    if matches!(
        nested(obj, &["spec", "suspend"]),
        Ok(Some(Value::Bool(true)))
    ) {
        return Ok(StatusResult::current("Job is suspended"));
    }
    let parallelism = int_field(obj, &["spec", "parallelism"], 1);
    let completions = int_field(obj, &["spec", "completions"], parallelism);
    let active = int_field(obj, &["status", "active"], 0);
    let succeeded = int_field(obj, &["status", "succeeded"], 0);
    let failed = int_field(obj, &["status", "failed"], 0);
    let start_time = str_field(obj, &["status", "startTime"], "");

    for c in conditions(obj)? {
        match c.type_.as_str() {
            "Complete" if c.status == "True" => {
                return Ok(StatusResult::current(format!(
                    "Job Completed. succeeded: {succeeded}/{completions}"
                )));
            }
            "Failed" if c.status == "True" => {
                let mut message = format!("Job Failed. failed: {failed}/{completions}");
                if !c.message.is_empty() {
                    message.push_str(&format!(" ({})", c.message));
                } else if !c.reason.is_empty() {
                    message.push_str(&format!(" ({})", c.reason));
                }
                return Ok(StatusResult::failed(message));
            }
            _ => {}
        }
    }
    if start_time.is_empty() {
        return Ok(StatusResult::in_progress(format!(
            "Job not started. active: 0/{parallelism}"
        )));
    }
    Ok(StatusResult::in_progress(format!(
        "Job in progress: {succeeded}/{completions} succeeded, {active} active, {failed} failed"
    )))
}

// ---------------------------------------------------------------------------
// Time.

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00Z`, with optional
/// fractional seconds and numeric offset); `None` if malformed or before
/// 1970.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut scaled = String::from(&frac[..digits.min(9)]);
        while scaled.len() < 9 {
            scaled.push('0');
        }
        nanos = scaled.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The rules' tables below write the type into each object; take it from there.
    fn compute(obj: &Value) -> StatusResult {
        let field = |f: &str| obj.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        super::compute(&field("apiVersion"), &field("kind"), obj)
    }

    fn compute_at(obj: &Value, now: SystemTime) -> StatusResult {
        let field = |f: &str| obj.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        super::compute_at(&field("apiVersion"), &field("kind"), obj, now)
    }

    fn st(obj: &Value) -> Status {
        compute(obj).status
    }

    /// A Deployment as an item of a LIST response (no kind, no apiVersion), whose one replica is
    /// unavailable: the type given by the resource decides, so it is InProgress, not the generic
    /// rule's Current.
    #[test]
    fn list_item_without_type_uses_the_resource_type() {
        let item = json!({
            "metadata": {"name": "stuck", "namespace": "default", "generation": 1},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                       "unavailableReplicas": 1,
                       "conditions": [{"type": "Available", "status": "False",
                                       "reason": "MinimumReplicasUnavailable"}]}
        });
        let s = super::compute("apps/v1", "Deployment", &item);
        assert_eq!(s.status, Status::InProgress, "{}", s.message);
        // The object's own (wrong or missing) type never wins over the resource's.
        let mut lying = item.clone();
        lying["kind"] = json!("ConfigMap");
        lying["apiVersion"] = json!("v1");
        assert_eq!(
            super::compute("apps/v1", "Deployment", &lying).status,
            Status::InProgress
        );
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    // --- Status ------------------------------------------------------------

    #[test]
    fn status_strings_match_kstatus() {
        for (s, text) in [
            (Status::InProgress, "InProgress"),
            (Status::Failed, "Failed"),
            (Status::Current, "Current"),
            (Status::Terminating, "Terminating"),
            (Status::NotFound, "NotFound"),
            (Status::Unknown, "Unknown"),
        ] {
            assert_eq!(s.as_str(), text);
            assert_eq!(s.to_string(), text);
            assert_eq!(serde_json::to_value(s).unwrap(), json!(text));
        }
        assert!(Status::Failed.is_terminal_failure());
        assert_eq!(StatusResult::not_found().status, Status::NotFound);
        for s in [
            Status::InProgress,
            Status::Current,
            Status::Terminating,
            Status::NotFound,
            Status::Unknown,
        ] {
            assert!(!s.is_terminal_failure());
        }
    }

    // --- generic -----------------------------------------------------------

    #[test]
    fn deletion_timestamp_is_terminating() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z"}});
        assert_eq!(
            compute(&obj),
            StatusResult::new(Status::Terminating, "Resource scheduled for deletion")
        );
        // An empty deletionTimestamp is ignored.
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "deletionTimestamp": ""}});
        assert_eq!(st(&obj), Status::Current);
    }

    #[test]
    fn generation_mismatch_is_in_progress() {
        // crdMismatchStatusGeneration, pdbNotObserved, dsDifferentGeneration
        let obj = json!({"apiVersion": "something/v1", "kind": "MyCR",
            "metadata": {"name": "test", "generation": 2}, "status": {"observedGeneration": 1}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("MyCR generation is 2, but latest observed generation is 1")
        );
        let obj = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"generation": 2}, "status": {"observedGeneration": 1}});
        assert_eq!(st(&obj), Status::InProgress);
        let obj = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"generation": 1}, "status": {"observedGeneration": 1}});
        assert_eq!(
            compute(&obj),
            StatusResult::current("AllowedDisruptions has been computed.")
        );
        // Without metadata.generation there is nothing to compare.
        let obj = json!({"apiVersion": "something/v1", "kind": "MyCR",
            "status": {"observedGeneration": 1}});
        assert_eq!(st(&obj), Status::Current);
    }

    #[test]
    fn reconciling_and_stalled_conditions() {
        let obj = json!({"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {"generation": 1},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "working"}]}});
        assert_eq!(compute(&obj), StatusResult::in_progress("working"));

        let obj = json!({"apiVersion": "x.io/v1", "kind": "Thing",
            "status": {"conditions": [
                {"type": "Stalled", "status": "True", "reason": "Broken", "message": "cannot proceed"},
                {"type": "Ready", "status": "True"}]}});
        assert_eq!(compute(&obj), StatusResult::failed("cannot proceed"));

        // The first of the two that is True wins.
        let obj = json!({"apiVersion": "x.io/v1", "kind": "Thing",
            "status": {"conditions": [
                {"type": "Stalled", "status": "True", "reason": "Broken"},
                {"type": "Reconciling", "status": "True"}]}});
        assert_eq!(compute(&obj), StatusResult::failed("Stalled=True (Broken)"));

        // Generic conditions apply to built-in kinds too.
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "status": {"conditions": [{"type": "Stalled", "status": "True", "message": "x"}]}});
        assert_eq!(st(&obj), Status::Failed);

        // False ones are ignored.
        let obj = json!({"apiVersion": "x.io/v1", "kind": "Thing",
            "status": {"conditions": [
                {"type": "Stalled", "status": "False"}, {"type": "Reconciling", "status": "False"}]}});
        assert_eq!(st(&obj), Status::Current);
    }

    #[test]
    fn malformed_objects_are_unknown() {
        let obj =
            json!({"apiVersion": "x.io/v1", "kind": "Thing", "status": {"conditions": "oops"}});
        let res = compute(&obj);
        assert_eq!(res.status, Status::Unknown);
        assert!(
            res.message.starts_with("failed to compute status:"),
            "{}",
            res.message
        );

        let obj = json!({"apiVersion": "x.io/v1", "kind": "Thing",
            "metadata": {"generation": "1"}});
        assert_eq!(st(&obj), Status::Unknown);

        let obj = json!({"apiVersion": "x.io/v1", "kind": "Thing",
            "metadata": {"generation": 1}, "status": {"observedGeneration": 1.5}});
        assert_eq!(st(&obj), Status::Unknown);

        let obj = json!({"apiVersion": "x.io/v1", "kind": "Thing",
            "status": {"conditions": [{"type": "Ready", "status": true}]}});
        assert_eq!(st(&obj), Status::Unknown);

        let obj = json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Weird"}});
        assert_eq!(
            compute(&obj),
            StatusResult::new(
                Status::Unknown,
                "failed to compute status: unknown phase Weird"
            )
        );
    }

    // --- other kinds (Ready condition) -------------------------------------

    #[test]
    fn generic_ready_condition() {
        // crdNoStatus
        let obj = json!({"apiVersion": "something/v1", "kind": "MyCR",
            "metadata": {"generation": 1, "name": "test"}});
        assert_eq!(compute(&obj), StatusResult::current("Resource is current"));
        // crdReady
        let obj = json!({"apiVersion": "something/v1", "kind": "MyCR", "metadata": {"generation": 1},
            "status": {"conditions": [{"type": "Ready", "status": "True", "message": "All looks ok", "reason": "AllOk"}]}});
        assert_eq!(compute(&obj), StatusResult::current("Resource is Ready"));
        // crdNotReady
        let obj = json!({"apiVersion": "something/v1", "kind": "MyCR", "metadata": {"generation": 1},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False", "reason": "NotReadyYet"}]}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Ready=False (NotReadyYet)")
        );
        // Ready Unknown, with a message
        let obj = json!({"apiVersion": "something/v1", "kind": "MyCR",
            "status": {"conditions": [{"type": "Ready", "status": "Unknown", "message": "reconciliation in progress"}]}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("reconciliation in progress")
        );
        // crdNoCondition
        let obj = json!({"apiVersion": "something/v1", "kind": "MyCR", "metadata": {"generation": 1},
            "status": {"conditions": [{"type": "SomeCondition", "status": "False"}]}});
        assert_eq!(st(&obj), Status::Current);
    }

    #[test]
    fn always_ready_kinds() {
        for (api_version, kind) in [
            ("v1", "Secret"),
            ("v1", "ConfigMap"),
            ("batch/v1", "CronJob"),
            ("v1", "Namespace"),
            ("v1", "ServiceAccount"),
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ] {
            let obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "generation": 1}});
            assert_eq!(st(&obj), Status::Current, "{kind}");
        }
        // cronjobWithStatus: `status:` null
        let obj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"generation": 1}, "status": null});
        assert_eq!(
            compute(&obj),
            StatusResult::current("Resource is always ready")
        );
        // A terminating namespace
        let obj = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "x", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Terminating"}});
        assert_eq!(st(&obj), Status::Terminating);
    }

    // --- Deployment --------------------------------------------------------

    fn deployment_obj(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "test", "namespace": "qual", "generation": 1},
            "spec": spec, "status": status})
    }

    #[test]
    fn deployment_rules() {
        // depNoStatus
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "test", "generation": 1}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("0/1 replicas created")
        );

        // depOK
        let ok_status = json!({"observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": 1,
            "availableReplicas": 1, "replicas": 1, "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                {"type": "Available", "status": "True"}]});
        assert_eq!(
            compute(&deployment_obj(json!({}), ok_status.clone())),
            StatusResult::current("Deployment is available. Replicas: 1")
        );

        // depNotProgressing
        let obj = deployment_obj(
            json!({"progressDeadlineSeconds": 45}),
            json!({"observedGeneration": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "replicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "Some reason"},
                           {"type": "Available", "status": "True"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("ReplicaSet not Available")
        );

        // progressDeadlineSeconds set, Progressing=True with a reason other than NewReplicaSetAvailable
        let obj = deployment_obj(
            json!({"progressDeadlineSeconds": 600}),
            json!({"observedGeneration": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "replicas": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
                           {"type": "Available", "status": "True"}]}),
        );
        assert_eq!(st(&obj), Status::InProgress);

        // progressDeadlineSeconds = MaxInt32 is the same as unset
        let obj = deployment_obj(
            json!({"progressDeadlineSeconds": 2147483647}),
            json!({"observedGeneration": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "replicas": 1,
            "conditions": [{"type": "Available", "status": "True"}]}),
        );
        assert_eq!(st(&obj), Status::Current);

        // depNoProgressDeadlineSeconds
        let obj = deployment_obj(
            json!({}),
            json!({"observedGeneration": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1, "replicas": 1,
            "conditions": [{"type": "Available", "status": "True"}]}),
        );
        assert_eq!(st(&obj), Status::Current);

        // depNotAvailable
        let obj = deployment_obj(
            json!({}),
            json!({"observedGeneration": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1, "replicas": 1,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                           {"type": "Available", "status": "False"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Deployment not Available")
        );

        // ProgressDeadlineExceeded is Failed, whatever the counts.
        let obj = deployment_obj(
            json!({"replicas": 3, "progressDeadlineSeconds": 600}),
            json!({
            "observedGeneration": 1, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 0,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"web-5d4\" has timed out progressing."}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::failed(
                "Progress deadline exceeded: ReplicaSet \"web-5d4\" has timed out progressing."
            )
        );
    }

    #[test]
    fn deployment_counts_in_order() {
        let conds = json!([{"type": "Available", "status": "True"}]);
        let case = |spec: i64, replicas: i64, updated: i64, ready: i64, available: i64| {
            compute(&deployment_obj(
                json!({"replicas": spec}),
                json!({"replicas": replicas,
                "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available,
                "conditions": conds.clone()}),
            ))
        };
        assert_eq!(
            case(3, 1, 1, 1, 1),
            StatusResult::in_progress("1/3 replicas created")
        );
        assert_eq!(
            case(3, 3, 2, 1, 1),
            StatusResult::in_progress("2/3 replicas updated")
        );
        assert_eq!(
            case(3, 4, 3, 3, 3),
            StatusResult::in_progress("1 old replicas pending termination")
        );
        assert_eq!(
            case(3, 3, 3, 3, 2),
            StatusResult::in_progress("2/3 updated replicas available")
        );
        assert_eq!(
            case(3, 3, 3, 1, 3),
            StatusResult::in_progress("1/3 replicas ready")
        );
        assert_eq!(case(3, 3, 3, 3, 3).status, Status::Current);
        // Scaled to zero
        assert_eq!(case(0, 0, 0, 0, 0).status, Status::Current);
    }

    #[test]
    fn deployment_generation_not_observed() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"generation": 3}, "status": {"observedGeneration": 2, "replicas": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Available", "status": "True"}]}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress(
                "Deployment generation is 3, but latest observed generation is 2"
            )
        );
    }

    // --- StatefulSet -------------------------------------------------------

    fn sts(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "test", "generation": 1}, "spec": spec, "status": status})
    }

    #[test]
    fn statefulset_rules() {
        // stsNoStatus
        let obj =
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"generation": 1}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("0/1 replicas created")
        );
        // stsBadStatus
        let obj = sts(
            json!({}),
            json!({"observedGeneration": 1, "currentReplicas": 1}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("0/1 replicas created")
        );
        // stsOK
        let obj = sts(
            json!({"replicas": 4}),
            json!({"observedGeneration": 1, "currentReplicas": 4,
            "readyReplicas": 4, "replicas": 4}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::current("All replicas scheduled as expected. Replicas: 4")
        );
        // stsLessReady
        let obj = sts(
            json!({"replicas": 4}),
            json!({"observedGeneration": 1, "currentReplicas": 4,
            "readyReplicas": 2, "replicas": 4}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("2/4 replicas ready")
        );
        // stsLessCurrent
        let obj = sts(
            json!({"replicas": 4}),
            json!({"observedGeneration": 1, "currentReplicas": 2,
            "readyReplicas": 4, "replicas": 4}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("2/4 replicas at the current revision")
        );
        // stsExtraPods
        let obj = sts(
            json!({"replicas": 4}),
            json!({"observedGeneration": 1, "currentReplicas": 4,
            "readyReplicas": 4, "replicas": 8}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("4 extra replicas pending termination")
        );
        // Revision mismatch
        let obj = sts(
            json!({"replicas": 2}),
            json!({"currentReplicas": 2, "readyReplicas": 2,
            "replicas": 2, "currentRevision": "web-1", "updateRevision": "web-2"}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Waiting for updated revision to match current")
        );
    }

    #[test]
    fn statefulset_on_delete_and_partition() {
        let obj = sts(
            json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}),
            json!({}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::current("StatefulSet is using the ondelete update strategy")
        );

        let partitioned = |updated: i64| {
            sts(
                json!({"replicas": 5, "updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"partition": 3}}}),
                json!({"replicas": 5, "readyReplicas": 5, "currentReplicas": 3,
                    "updatedReplicas": updated, "currentRevision": "a", "updateRevision": "b"}),
            )
        };
        assert_eq!(
            compute(&partitioned(1)),
            StatusResult::in_progress("1/2 replicas updated (partition 3)")
        );
        assert_eq!(
            compute(&partitioned(2)),
            StatusResult::current("Partition rollout complete. updated: 2")
        );
        // Partition 0 still takes the partition branch.
        let obj = sts(
            json!({"replicas": 2, "updateStrategy": {"rollingUpdate": {"partition": 0}}}),
            json!({"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}),
        );
        assert_eq!(st(&obj), Status::Current);
    }

    // --- DaemonSet ---------------------------------------------------------

    fn ds(metadata: Value, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": metadata, "status": status})
    }

    #[test]
    fn daemonset_rules() {
        // dsNoStatus
        let obj = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "test", "generation": 1}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("DaemonSet status.observedGeneration not found")
        );
        // no generation at all
        let obj = ds(json!({"name": "test"}), json!({"observedGeneration": 1}));
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("DaemonSet metadata.generation not found")
        );
        // dsBadStatus
        let obj = ds(
            json!({"generation": 1}),
            json!({"observedGeneration": 1, "currentReplicas": 1}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Missing .status.desiredNumberScheduled")
        );
        let full = |current: i64, updated: i64, available: i64, ready: i64| {
            compute(&ds(
                json!({"generation": 1}),
                json!({"observedGeneration": 1,
                "desiredNumberScheduled": 4, "currentNumberScheduled": current,
                "updatedNumberScheduled": updated, "numberAvailable": available, "numberReady": ready}),
            ))
        };
        // dsOK
        assert_eq!(
            full(4, 4, 4, 4),
            StatusResult::current("All replicas scheduled as expected. Replicas: 4")
        );
        assert_eq!(
            full(3, 4, 4, 4),
            StatusResult::in_progress("3/4 pods scheduled")
        );
        assert_eq!(
            full(4, 1, 4, 4),
            StatusResult::in_progress("1/4 pods updated")
        );
        // dsLessAvailable
        assert_eq!(
            full(4, 4, 2, 4),
            StatusResult::in_progress("2/4 pods available")
        );
        // dsLessReady
        assert_eq!(
            full(4, 4, 4, 2),
            StatusResult::in_progress("2/4 pods ready")
        );
        // dsDifferentGeneration
        let obj = ds(
            json!({"generation": 2}),
            json!({"observedGeneration": 1,
            "desiredNumberScheduled": 4, "currentNumberScheduled": 4, "updatedNumberScheduled": 4,
            "numberAvailable": 4, "numberReady": 4}),
        );
        assert_eq!(st(&obj), Status::InProgress);
    }

    // --- ReplicaSet --------------------------------------------------------

    #[test]
    fn replicaset_rules() {
        let rs = |spec: i64, status: Value| {
            compute(&json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"generation": 1}, "spec": {"replicas": spec}, "status": status}))
        };
        // rsNoStatus
        let obj =
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"generation": 1}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("0/1 replicas labelled")
        );
        // rsOK1
        assert_eq!(
            rs(
                2,
                json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2,
                "availableReplicas": 2, "fullyLabeledReplicas": 2,
                "conditions": [{"type": "ReplicaFailure", "status": "False"}]})
            ),
            StatusResult::current("ReplicaSet is available. Replicas: 2")
        );
        // rsLessReady
        assert_eq!(
            rs(
                4,
                json!({"replicas": 4, "readyReplicas": 2, "availableReplicas": 4, "fullyLabeledReplicas": 4})
            ),
            StatusResult::in_progress("2/4 replicas ready")
        );
        // rsLessAvailable
        assert_eq!(
            rs(
                4,
                json!({"replicas": 4, "readyReplicas": 4, "availableReplicas": 2, "fullyLabeledReplicas": 4})
            ),
            StatusResult::in_progress("2/4 replicas available")
        );
        // rsReplicaFailure
        assert_eq!(
            rs(
                4,
                json!({"replicas": 4, "readyReplicas": 4, "availableReplicas": 4, "fullyLabeledReplicas": 4,
                "conditions": [{"type": "ReplicaFailure", "status": "True"}]})
            ),
            StatusResult::in_progress("Replica Failure condition. Check Pods")
        );
        // extra pods
        assert_eq!(
            rs(
                2,
                json!({"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "fullyLabeledReplicas": 2})
            ),
            StatusResult::in_progress("1 extra replicas pending termination")
        );
    }

    // --- Job (Flux reader) -------------------------------------------------

    fn job_obj(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job", "generation": 1},
            "spec": spec, "status": status})
    }

    #[test]
    fn job_rules() {
        // jobNoStatus / job without status field
        let obj = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job"},
            "spec": {"parallelism": 2}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Job not started. active: 0/2")
        );
        let obj = job_obj(json!({"parallelism": 3}), json!({}));
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Job not started. active: 0/3")
        );

        // jobComplete
        let obj = job_obj(
            json!({}),
            json!({"succeeded": 1, "active": 0,
            "conditions": [{"type": "Complete", "status": "True"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::current("Job Completed. succeeded: 1/1")
        );

        // jobFailed
        let obj = job_obj(
            json!({"completions": 4}),
            json!({"succeeded": 3, "failed": 1,
            "conditions": [{"type": "Failed", "status": "True", "reason": "JobFailed"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::failed("Job Failed. failed: 1/4 (JobFailed)")
        );
        let obj = job_obj(
            json!({}),
            json!({"failed": 7, "conditions": [{"type": "Failed",
            "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::failed(
                "Job Failed. failed: 7/1 (Job has reached the specified backoff limit)"
            )
        );

        // jobInProgress: Current in upstream kstatus, InProgress in Flux.
        let obj = job_obj(
            json!({"completions": 10, "parallelism": 2}),
            json!({
            "startTime": "2019-06-04T01:17:13Z", "succeeded": 3, "failed": 1, "active": 2,
            "conditions": [{"type": "Failed", "status": "False"}, {"type": "Complete", "status": "False"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Job in progress: 3/10 succeeded, 2 active, 1 failed")
        );

        // suspended
        let obj = job_obj(json!({"suspend": true}), json!({}));
        assert_eq!(compute(&obj), StatusResult::current("Job is suspended"));
        let obj = job_obj(json!({"suspend": false}), json!({}));
        assert_eq!(st(&obj), Status::InProgress);
    }

    #[test]
    fn job_skips_generic_checks_like_flux() {
        // Flux's Job reader computes only the Job rule: no Terminating, no
        // Stalled/Reconciling shortcut.
        let obj = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}});
        assert_eq!(st(&obj), Status::Current);
        // Another group's Job is a generic object.
        let obj = json!({"apiVersion": "example.com/v1", "kind": "Job", "metadata": {}});
        assert_eq!(st(&obj), Status::Current);
    }

    // --- Pod ---------------------------------------------------------------

    fn pod_obj(metadata: Value, status: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "status": status})
    }

    #[test]
    fn pod_rules() {
        // podNoStatus
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generation": 1, "name": "test"}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Pod phase not available")
        );
        // podReady
        let obj = pod_obj(
            json!({"generation": 1}),
            json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(compute(&obj), StatusResult::current("Pod is Ready"));
        // podCompletedOK
        let obj = pod_obj(
            json!({}),
            json!({"phase": "Succeeded",
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::current("Pod has completed successfully")
        );
        // podCompletedFail: Current, as in kstatus
        let obj = pod_obj(
            json!({}),
            json!({"phase": "Failed",
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::current("Pod has completed, but not successfully")
        );
        // running, not ready
        let obj = pod_obj(
            json!({}),
            json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False"}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Pod is running but is not Ready")
        );
        // podCrashLooping
        let obj = pod_obj(
            json!({}),
            json!({"phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
            "containerStatuses": [
                {"name": "nginx", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
                {"name": "ok", "state": {"running": {}}},
                {"name": "sidecar", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        assert_eq!(
            compute(&obj),
            StatusResult::failed("Containers in CrashLoop state: nginx,sidecar")
        );
        // Pending, but not unschedulable
        let obj = pod_obj(json!({}), json!({"phase": "Pending"}));
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Pod is in the Pending phase")
        );
    }

    #[test]
    fn pod_unschedulable_window() {
        let created = "2024-05-01T12:00:00Z";
        let created_secs = 1_714_564_800;
        let obj = pod_obj(
            json!({"creationTimestamp": created}),
            json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}),
        );
        // podBeingScheduled
        assert_eq!(
            compute_at(&obj, at(created_secs + 5)),
            StatusResult::in_progress("Pod has not been scheduled")
        );
        assert_eq!(
            compute_at(&obj, at(created_secs + 14)).status,
            Status::InProgress
        );
        // At exactly 15s, now-15s is not before the creation time.
        assert_eq!(
            compute_at(&obj, at(created_secs + 15)).status,
            Status::Failed
        );
        assert_eq!(
            compute_at(&obj, at(created_secs + 60)),
            StatusResult::failed("Pod could not be scheduled")
        );
        // podUnschedulable: no creationTimestamp is long ago.
        let obj = pod_obj(
            json!({"generation": 1}),
            json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}),
        );
        assert_eq!(compute_at(&obj, at(created_secs)).status, Status::Failed);
    }

    // --- PVC, Service, CRD -------------------------------------------------

    #[test]
    fn pvc_rules() {
        let obj = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"generation": 1}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("PVC is not Bound. phase: unknown")
        );
        let obj = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Pending"}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("PVC is not Bound. phase: Pending")
        );
        let obj = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "status": {"phase": "Bound"}});
        assert_eq!(compute(&obj), StatusResult::current("PVC is Bound"));
    }

    #[test]
    fn service_rules() {
        let svc = |spec: Value| {
            compute(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {}, "spec": spec}))
        };
        assert_eq!(svc(json!({})), StatusResult::current("Service is ready"));
        assert_eq!(svc(json!({"type": "NodePort"})).status, Status::Current);
        assert_eq!(
            svc(json!({"type": "LoadBalancer"})),
            StatusResult::in_progress("ClusterIP not set. Service type: LoadBalancer")
        );
        assert_eq!(
            svc(json!({"type": "LoadBalancer", "clusterIP": "1.2.3.4"})).status,
            Status::Current
        );
        // No spec at all
        let obj = json!({"apiVersion": "v1", "kind": "Service"});
        assert_eq!(st(&obj), Status::Current);
    }

    #[test]
    fn crd_rules() {
        let crd = |conds: Value| {
            compute(
                &json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"generation": 1}, "status": {"conditions": conds}}),
            )
        };
        // crdNoConditions
        let obj = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"generation": 1}});
        assert_eq!(
            compute(&obj),
            StatusResult::in_progress("Install in progress")
        );
        // crdInstalling
        assert_eq!(
            crd(
                json!([{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                       {"type": "Established", "status": "False", "reason": "Installing"}])
            ),
            StatusResult::in_progress("Install in progress")
        );
        // crdNamesNotAccepted
        assert_eq!(
            crd(
                json!([{"type": "NamesAccepted", "status": "False", "reason": "SomeReason",
                "message": "\"foos\" is already in use"}])
            ),
            StatusResult::failed("\"foos\" is already in use")
        );
        // Established=False for another reason
        assert_eq!(
            crd(json!([{"type": "Established", "status": "False", "reason": "Other"}])).status,
            Status::Failed
        );
        // crdEstablished
        assert_eq!(
            crd(
                json!([{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                       {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}])
            ),
            StatusResult::current("CRD is established")
        );
    }

    // --- time --------------------------------------------------------------

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00Z"),
            Some(at(1_714_564_800))
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T14:00:00+02:00"),
            Some(at(1_714_564_800))
        );
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.5Z"),
            Some(at(1_714_564_800) + Duration::from_millis(500))
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(at(951_782_400)));
        assert_eq!(parse_rfc3339("not a time"), None);
        assert_eq!(parse_rfc3339("2024-05-01 12:00:00Z"), None);
        assert_eq!(parse_rfc3339("2024-13-01T12:00:00Z"), None);
        assert_eq!(parse_rfc3339("1960-01-01T00:00:00Z"), None);
    }
}
