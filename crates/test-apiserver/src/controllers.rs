//! Simulated controllers, level-triggered like the real ones and driven by one timer heap (one
//! background task). A create or spec change wakes the object's controller
//! `ServerOptions::controller_delay` later (never within the write); it decides whether new pods
//! are needed (a first rollout, a new pod template, a scale-up) and writes the status the real
//! controller writes first (observedGeneration, pods not yet ready, `Available=False`); the
//! pods exist one delay later; and the rollout becomes ready, fails, or never finishes, as the
//! `test.flux-order/ready-after` annotation or the server default says. Statuses follow the
//! v1.36 controllers' fields, counters and condition order.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::apply::{self, PE, Part};
use crate::discovery::ResourceInfo;
use crate::store::{self, Ctl, Key, State, TimerAction};
use crate::{ObjectKey, ReadyEvent, ServerOptions, Shared};

/// Parse a Go-like duration (`2s`, `500ms`, `1m30s`, `1.5h`, `0`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    Some(Duration::from_secs_f64(total))
}

/// How a controller should finish this object.
enum Plan {
    After(Duration, bool),
    Never,
}

fn plan(obj: &Value, default: Duration) -> Option<Plan> {
    let ann = obj["metadata"]["annotations"][crate::READY_AFTER_ANNOTATION].as_str();
    match ann {
        None => Some(Plan::After(default, false)),
        Some("never") => Some(Plan::Never),
        Some("fail") => Some(Plan::After(default, true)),
        Some(s) => match s
            .strip_prefix("fail:")
            .or_else(|| s.strip_prefix("fail-after:"))
        {
            Some(d) => parse_duration(d).map(|d| Plan::After(d, true)),
            None => Some(
                parse_duration(s).map_or(Plan::After(default, false), |d| Plan::After(d, false)),
            ),
        },
    }
}

fn managed(info: &ResourceInfo, obj: &Value) -> bool {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Namespace") => true,
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => true,
        ("batch", "Job") => true,
        ("", "Pod" | "PersistentVolumeClaim") => true,
        ("", "Service") => obj["spec"]["type"] == "LoadBalancer",
        ("apiextensions.k8s.io", "CustomResourceDefinition") => true,
        _ => {
            !info.is_builtin()
                && obj["metadata"]["annotations"][crate::READY_AFTER_ANNOTATION].is_string()
        }
    }
}

fn replicas(obj: &Value) -> i64 {
    obj["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// Insert `k: v` unless v is 0 (the `omitempty` counters of the real types).
fn set_nz(s: &mut Value, k: &str, v: i64) {
    if v != 0 {
        s[k] = json!(v);
    }
}

/// A Deployment condition (with `lastUpdateTime`).
fn dcond(t: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": t, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
           "reason": reason, "message": message})
}

/// A condition without `lastUpdateTime` (Jobs have one; CRDs, Pods and the rest do not).
fn cond(t: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": t, "status": status, "lastTransitionTime": now, "reason": reason,
           "message": message})
}

/// `SetDeploymentCondition` (and its ReplicaSet/CRD twins): no change when a condition of this
/// type has the same status and reason; otherwise the old one is dropped and the new one
/// appended, keeping `lastTransitionTime` when the status did not change.
fn set_condition(conds: &mut Vec<Value>, mut c: Value) {
    let t = c["type"].clone();
    if let Some(cur) = conds.iter().find(|x| x["type"] == t) {
        if cur["status"] == c["status"] && cur["reason"] == c["reason"] {
            return;
        }
        if cur["status"] == c["status"] {
            c["lastTransitionTime"] = cur["lastTransitionTime"].clone();
        }
    }
    conds.retain(|x| x["type"] != t);
    conds.push(c);
}

fn conditions_of(status: &Value) -> Vec<Value> {
    status["conditions"].as_array().cloned().unwrap_or_default()
}

/// `rand.SafeEncodeString(fmt.Sprint(fnv32a(x)))`: the pod-template-hash style suffix.
fn template_hash(v: &Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in v.to_string().bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// The name of the ReplicaSet (or ControllerRevision) running `obj`'s current template.
fn revision_name(obj: &Value) -> String {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    format!("{name}-{}", template_hash(&obj["spec"]["template"]))
}

/// An int-or-percent of `total` (`intstr.GetScaledValueFromIntOrPercent`).
fn scaled(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            if round_up {
                (p * total + 99) / 100
            } else {
                p * total / 100
            }
        }
        _ => 0,
    }
}

/// `deploymentutil.MaxUnavailable`.
fn max_unavailable(obj: &Value) -> i64 {
    let r = replicas(obj);
    let ru = &obj["spec"]["strategy"]["rollingUpdate"];
    if obj["spec"]["strategy"]["type"] != "RollingUpdate" || r == 0 {
        return 0;
    }
    let surge = scaled(&ru["maxSurge"], r, true);
    let mut unavailable = scaled(&ru["maxUnavailable"], r, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    unavailable.min(r)
}

/// Pod counts of a workload's current rollout, as its controller would count them.
struct Counts {
    /// Pods that exist (not terminating).
    pods: i64,
    /// Pods of the current template.
    updated: i64,
    /// Ready (and, with minReadySeconds 0, available) pods.
    ready: i64,
    /// Pods of the previous template still running.
    old: i64,
}

fn counts(c: &Ctl, r: i64) -> Counts {
    let done = c.done && !c.failed;
    let started = c.created || c.done;
    if c.same_template {
        let kept = c.prev_ready.min(r);
        let pods = if started { r } else { kept };
        Counts {
            pods,
            updated: pods,
            ready: if done { r } else { kept },
            old: 0,
        }
    } else {
        let old = if done { 0 } else { c.prev_ready };
        let new = if started { r } else { 0 };
        Counts {
            pods: old + new,
            updated: new,
            ready: old + if done { r } else { 0 },
            old,
        }
    }
}

/// The Deployment controller's `calculateStatus` + `syncRolloutStatus`.
fn deployment_status(obj: &Value, c: &Ctl, fail: bool, now: &str) -> Value {
    let prev = &obj["status"];
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let r = replicas(obj);
    let n = counts(c, r);
    let mut s = json!({"observedGeneration": g});
    set_nz(&mut s, "replicas", n.pods);
    set_nz(&mut s, "updatedReplicas", n.updated);
    set_nz(&mut s, "readyReplicas", n.ready);
    set_nz(&mut s, "availableReplicas", n.ready);
    set_nz(&mut s, "unavailableReplicas", (r + n.old - n.ready).max(0));
    // DeploymentReplicaSetTerminatingReplicas is on (beta) in v1.36; the simulated rollouts leave
    // no pod terminating.
    s["terminatingReplicas"] = json!(0);
    let mut conds = conditions_of(prev);
    if n.ready >= r - max_unavailable(obj) {
        set_condition(
            &mut conds,
            dcond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                now,
            ),
        );
    } else {
        set_condition(
            &mut conds,
            dcond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                now,
            ),
        );
    }
    let deadline = obj["spec"]["progressDeadlineSeconds"]
        .as_i64()
        .is_some_and(|d| d != i64::from(i32::MAX));
    let rs = revision_name(obj);
    let cur = conds.iter().find(|x| x["type"] == "Progressing").cloned();
    if !deadline {
        conds.retain(|x| x["type"] != "Progressing");
    } else {
        let complete_already = n.pods == n.updated
            && cur
                .as_ref()
                .is_some_and(|x| x["reason"] == "NewReplicaSetAvailable");
        let complete = n.updated == r && n.pods == r && n.ready == r;
        let int = |k: &str| prev[k].as_i64().unwrap_or(0);
        let progressing = n.updated > int("updatedReplicas")
            || (n.pods - n.updated) < (int("replicas") - int("updatedReplicas"))
            || n.ready > int("readyReplicas")
            || n.ready > int("availableReplicas");
        if complete_already {
        } else if complete {
            set_condition(
                &mut conds,
                dcond(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{rs}\" has successfully progressed."),
                    now,
                ),
            );
        } else if progressing {
            let mut p = dcond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs}\" is progressing."),
                now,
            );
            if let Some(cur) = &cur
                && cur["status"] == "True"
            {
                p["lastTransitionTime"] = cur["lastTransitionTime"].clone();
            }
            conds.retain(|x| x["type"] != "Progressing");
            conds.push(p);
        } else if fail {
            set_condition(
                &mut conds,
                dcond(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{rs}\" has timed out progressing."),
                    now,
                ),
            );
        }
    }
    if !conds.is_empty() {
        s["conditions"] = json!(conds);
    }
    if let Some(cc) = prev.get("collisionCount") {
        s["collisionCount"] = cc.clone();
    }
    s
}

fn statefulset_status(obj: &Value, c: &Ctl) -> Value {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let r = replicas(obj);
    let rev = revision_name(obj);
    let done = c.done && !c.failed;
    let started = c.created || c.done;
    let (pods, current, updated, ready, current_rev) = if c.same_template {
        let kept = c.prev_ready.min(r);
        let pods = if started { r } else { kept };
        (pods, pods, pods, if done { r } else { kept }, rev.clone())
    } else if c.prev_revision.is_empty() {
        // First rollout: pods are created at the (only) revision.
        let pods = if started { r } else { 0 };
        (pods, pods, pods, if done { r } else { 0 }, rev.clone())
    } else {
        // Rolling update: pods are replaced one at a time, highest ordinal first.
        let updated = if done {
            r
        } else if started {
            r.min(1)
        } else {
            0
        };
        let ready = if done {
            r
        } else {
            (c.prev_ready - updated).max(0)
        };
        let current_rev = if done {
            rev.clone()
        } else {
            c.prev_revision.clone()
        };
        (r, r - updated, updated, ready, current_rev)
    };
    let mut s = json!({"observedGeneration": g, "replicas": pods});
    set_nz(&mut s, "readyReplicas", ready);
    set_nz(&mut s, "currentReplicas", current);
    set_nz(&mut s, "updatedReplicas", updated);
    s["currentRevision"] = json!(current_rev);
    s["updateRevision"] = json!(rev);
    s["collisionCount"] = json!(0);
    s["availableReplicas"] = json!(ready);
    s
}

fn daemonset_status(obj: &Value, c: &Ctl) -> Value {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let done = c.done && !c.failed;
    let started = c.created || c.done;
    // One node.
    let (current, updated, ready) = if c.prev_revision.is_empty() {
        let n = i64::from(started);
        (n, n, i64::from(done))
    } else {
        // maxUnavailable 1: the old pod goes, the new one starts.
        let ready = if done {
            1
        } else if started {
            0
        } else {
            c.prev_ready.min(1)
        };
        (1, i64::from(started), ready)
    };
    let mut s = json!({"currentNumberScheduled": current, "numberMisscheduled": 0,
        "desiredNumberScheduled": 1, "numberReady": ready, "observedGeneration": g});
    set_nz(&mut s, "updatedNumberScheduled", updated);
    set_nz(&mut s, "numberAvailable", ready);
    set_nz(&mut s, "numberUnavailable", 1 - ready);
    s
}

fn replicaset_status(obj: &Value, c: &Ctl) -> Value {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let r = replicas(obj);
    let n = counts(
        &Ctl {
            same_template: true,
            ..c.clone()
        },
        r,
    );
    let mut s = json!({"replicas": n.pods});
    set_nz(&mut s, "fullyLabeledReplicas", n.pods);
    set_nz(&mut s, "readyReplicas", n.ready);
    set_nz(&mut s, "availableReplicas", n.ready);
    s["terminatingReplicas"] = json!(0);
    s["observedGeneration"] = json!(g);
    s
}

fn job_status(obj: &Value, c: &Ctl, now: &str) -> Value {
    let prev = &obj["status"];
    let start = prev["startTime"].as_str().unwrap_or(now).to_string();
    let parallelism = obj["spec"]["parallelism"].as_i64().unwrap_or(1);
    if c.done && c.failed {
        let failed = obj["spec"]["backoffLimit"].as_i64().unwrap_or(6) + 1;
        let msg = "Job has reached the specified backoff limit";
        return json!({"conditions": [
                dcond("FailureTarget", "True", "BackoffLimitExceeded", msg, now),
                dcond("Failed", "True", "BackoffLimitExceeded", msg, now)],
            "startTime": start, "failed": failed, "terminating": 0,
            "uncountedTerminatedPods": {}, "ready": 0});
    }
    if c.done {
        let completions = obj["spec"]["completions"].as_i64().unwrap_or(1);
        let msg = "Reached expected number of succeeded pods";
        return json!({"conditions": [
                dcond("SuccessCriteriaMet", "True", "CompletionsReached", msg, now),
                dcond("Complete", "True", "CompletionsReached", msg, now)],
            "startTime": start, "completionTime": now, "succeeded": completions,
            "terminating": 0, "uncountedTerminatedPods": {}, "ready": 0});
    }
    let ready = if c.created { parallelism } else { 0 };
    json!({"startTime": start, "active": parallelism, "terminating": 0,
        "uncountedTerminatedPods": {}, "ready": ready})
}

fn pod_status(obj: &Value, c: &Ctl, now: &str) -> Value {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let qos = obj["status"]["qosClass"].clone();
    let pc = |t: &str, s: &str| {
        json!({"type": t, "observedGeneration": g, "status": s, "lastProbeTime": null,
            "lastTransitionTime": now})
    };
    if !c.created && !c.done {
        // Scheduled (bound to the one node), nothing started yet.
        return json!({"observedGeneration": g, "phase": "Pending",
            "conditions": [pc("PodScheduled", "True")], "qosClass": qos});
    }
    let fail = c.done && c.failed;
    let ready = c.done && !c.failed;
    let containers: Vec<Value> = obj["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ct| {
            if fail {
                json!({"name": ct["name"], "image": ct["image"], "ready": false, "started": false,
                "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff",
                    "message": "back-off 40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
            } else {
                json!({"name": ct["name"], "image": ct["image"], "ready": ready, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": now}}})
            }
        })
        .collect();
    let r = if ready { "True" } else { "False" };
    let mut ready_c = pc("Ready", r);
    let mut cready_c = pc("ContainersReady", r);
    if !ready {
        for x in [&mut ready_c, &mut cready_c] {
            x["reason"] = json!("ContainersNotReady");
        }
    }
    json!({"observedGeneration": g, "phase": "Running", "conditions": [
            pc("PodReadyToStartContainers", "True"), pc("Initialized", "True"), ready_c,
            cready_c, pc("PodScheduled", "True")],
        "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}], "podIP": "10.244.0.10",
        "podIPs": [{"ip": "10.244.0.10"}], "startTime": now, "containerStatuses": containers,
        "qosClass": qos})
}

fn crd_status(obj: &Value, c: &Ctl, now: &str) -> Value {
    let mut s = obj["status"].clone();
    s["acceptedNames"] = obj["spec"]["names"].clone();
    let mut conds = conditions_of(&s);
    set_condition(
        &mut conds,
        cond(
            "NamesAccepted",
            "True",
            "NoConflicts",
            "no conflicts found",
            now,
        ),
    );
    let (st, reason) = if c.done {
        ("True", "InitialNamesAccepted")
    } else {
        ("False", "Installing")
    };
    set_condition(
        &mut conds,
        cond(
            "Established",
            st,
            reason,
            "the initial names have been accepted",
            now,
        ),
    );
    s["conditions"] = json!(conds);
    s
}

fn custom_status(obj: &Value, c: &Ctl, now: &str) -> Value {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let rc = |t: &str, st: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": st, "reason": reason, "message": msg,
            "observedGeneration": g, "lastTransitionTime": now})
    };
    let conds = match (c.done, c.failed) {
        (false, _) => vec![
            rc(
                "Ready",
                "False",
                "Progressing",
                "Reconciliation in progress",
            ),
            rc(
                "Reconciling",
                "True",
                "Progressing",
                "Reconciliation in progress",
            ),
        ],
        (true, true) => vec![
            rc("Ready", "False", "Failed", "Reconciliation failed"),
            rc("Stalled", "True", "Failed", "Reconciliation failed"),
        ],
        (true, false) => vec![rc("Ready", "True", "Succeeded", "Reconciliation succeeded")],
    };
    json!({"observedGeneration": g, "conditions": conds})
}

/// The status `obj`'s controller writes for the state `c`, or None when it writes nothing
/// (a StatefulSet, DaemonSet, ReplicaSet, PVC or Service has no way to fail; its rollout just
/// never finishes).
fn status_for(info: &ResourceInfo, obj: &Value, c: &Ctl, now: &str) -> Option<Value> {
    let fail = c.done && c.failed;
    Some(match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment") => deployment_status(obj, c, fail, now),
        ("apps", "StatefulSet" | "DaemonSet" | "ReplicaSet") if fail => return None,
        ("apps", "StatefulSet") => statefulset_status(obj, c),
        ("apps", "DaemonSet") => daemonset_status(obj, c),
        ("apps", "ReplicaSet") => replicaset_status(obj, c),
        ("batch", "Job") => {
            if obj["spec"]["suspend"] == json!(true) && !c.done {
                let mut conds = conditions_of(&obj["status"]);
                set_condition(
                    &mut conds,
                    dcond("Suspended", "True", "JobSuspended", "Job suspended", now),
                );
                let mut s = obj["status"].clone();
                s["conditions"] = json!(conds);
                s
            } else {
                job_status(obj, c, now)
            }
        }
        ("", "Pod") => pod_status(obj, c, now),
        ("", "PersistentVolumeClaim") if !c.done || fail => return None,
        ("", "PersistentVolumeClaim") => {
            let mut s = json!({"phase": "Bound", "accessModes": obj["spec"]["accessModes"]});
            if let Some(st) = obj["spec"]["resources"]["requests"]["storage"].as_str() {
                s["capacity"] = json!({"storage": st});
            }
            s
        }
        ("", "Service") if !c.done || fail => return None,
        ("", "Service") => {
            json!({"loadBalancer": {"ingress": [{"ip": "172.18.255.200", "ipMode": "VIP"}]}})
        }
        ("apiextensions.k8s.io", _) => crd_status(obj, c, now),
        _ => custom_status(obj, c, now),
    })
}

/// Whether observing `obj` (with the controller's memory `c`) starts pods: a first
/// observation, a new pod template, or more replicas than the current rollout runs.
/// Returns (starts, same_template).
fn starts_rollout(info: &ResourceInfo, obj: &Value, c: &Ctl) -> (bool, bool) {
    let first = c.rollout == 0;
    let new_template = c.template.as_ref() != Some(template_of(info, obj));
    let scale_up = replicas(obj) > c.replicas;
    match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet") => {
            if new_template {
                (true, false)
            } else {
                (scale_up, true)
            }
        }
        ("apps", "DaemonSet") | ("", "Pod") => (new_template, false),
        // A ReplicaSet does not replace pods for a new template; it only adds missing ones.
        ("apps", "ReplicaSet") => (first || scale_up, true),
        ("batch", "Job") => (first && obj["spec"]["suspend"] != json!(true), false),
        ("", "PersistentVolumeClaim" | "Service") | ("apiextensions.k8s.io", _) => (first, false),
        // Custom resources: their controller reconciles every generation.
        _ => (true, false),
    }
}

/// What a rollout runs: the pod template of a workload, a Pod's spec.
fn template_of<'a>(info: &ResourceInfo, obj: &'a Value) -> &'a Value {
    if info.kind == "Pod" {
        &obj["spec"]
    } else {
        &obj["spec"]["template"]
    }
}
/// Write `.status` (no generation bump); returns the stored object.
pub(crate) fn write_status(st: &mut State, k: &Key, status: Value) -> Option<Value> {
    let mut obj = st.objects.get(k)?.clone();
    if obj.get("status") == Some(&status) {
        return Some(obj);
    }
    obj["status"] = status;
    Some(st.put(k.clone(), obj))
}

/// The field manager a real cluster's controller for this kind writes status as.
fn manager_of(info: &ResourceInfo) -> &'static str {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => "kubelet",
        ("", "Service") => "cloud-controller-manager",
        ("apiextensions.k8s.io", _) => "kube-apiserver",
        _ if !info.is_builtin() => "test-controller",
        _ => "kube-controller-manager",
    }
}

/// A controller's status update (`PUT .../status`): like [`write_status`], and the controller
/// becomes the manager of the fields it changed (an Update entry for the status subresource).
/// `extra` are metadata paths it also set through the status subresource (a Deployment's
/// revision annotation).
fn controller_write(
    st: &mut State,
    info: &ResourceInfo,
    k: &Key,
    obj: Value,
    extra: &[&str],
) -> Option<Value> {
    let old = st.objects.get(k)?.clone();
    if old == obj {
        return Some(old);
    }
    let mut new = obj;
    let manager = manager_of(info);
    let now = store::now();
    apply::track_update(
        Some(&old),
        &mut new,
        manager,
        &info.api_version(),
        Part::Status,
        &now,
    );
    if !extra.is_empty() {
        let mut entries = apply::read_entries(&new);
        if let Some(e) = entries
            .iter_mut()
            .find(|e| e.manager == manager && e.subresource == "status")
        {
            for a in extra {
                e.set.insert(vec![
                    PE::F("metadata".into()),
                    PE::F("annotations".into()),
                    PE::F((*a).into()),
                ]);
            }
        }
        apply::write_entries(&mut new, &entries);
    }
    Some(st.put(k.clone(), new))
}

/// [`controller_write`] of a new status.
fn set_status(st: &mut State, info: &ResourceInfo, k: &Key, status: Value) -> Option<Value> {
    let mut obj = st.objects.get(k)?.clone();
    if obj.get("status") == Some(&status) {
        return Some(obj);
    }
    obj["status"] = status;
    controller_write(st, info, k, obj, &[])
}

/// Called after a create or a spec change of a main resource. Like a real controller, the
/// simulated one acts after the write that woke it (`ServerOptions::controller_delay` later),
/// never within it: the create's response and an immediate GET show the fresh status.
pub(crate) fn on_spec_change(st: &mut State, opts: &ServerOptions, info: &ResourceInfo, k: &Key) {
    let Some(obj) = st.objects.get(k) else {
        return;
    };
    if !managed(info, obj) || obj["metadata"].get("deletionTimestamp").is_some() {
        return;
    }
    if info.group == "apiextensions.k8s.io" && crate::discovery::crd_established(obj) {
        return;
    }
    let uid = uid_of(obj);
    let c = st.ctl.entry(uid.clone()).or_default();
    c.spec += 1;
    let spec = c.spec;
    st.schedule(
        opts.controller_delay,
        k.clone(),
        uid,
        TimerAction::Observe { spec },
    );
}

fn uid_of(obj: &Value) -> String {
    obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The controller sees the object's latest spec: it starts a rollout (new pods) when one is
/// needed, and writes the status it would write first.
fn observe(st: &mut State, opts: &ServerOptions, info: &ResourceInfo, k: &Key, obj: &Value) {
    if info.kind == "Namespace" {
        populate_namespace(st, opts, &k.3);
        return;
    }
    let uid = uid_of(obj);
    let mut c = st.ctl.get(&uid).cloned().unwrap_or_default();
    let now = store::now();
    let (start, same) = starts_rollout(info, obj, &c);
    if !start {
        if replicas(obj) < c.replicas {
            c.replicas = replicas(obj);
        }
        st.ctl.insert(uid, c.clone());
        let quiet = info.kind == "Job" && obj["spec"]["suspend"] != json!(true);
        if !quiet && let Some(s) = status_for(info, obj, &c, &now) {
            set_status(st, info, k, s);
        }
        return;
    }
    let prev_ready = if c.rollout == 0 {
        0
    } else {
        counts(&c, c.replicas).ready
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    c.prev_revision = c
        .template
        .as_ref()
        .map(|t| format!("{name}-{}", template_hash(t)))
        .unwrap_or_default();
    c.rollout += 1;
    c.template = Some(template_of(info, obj).clone());
    c.replicas = replicas(obj);
    c.same_template = same;
    c.prev_ready = prev_ready;
    c.created = false;
    c.done = false;
    c.failed = false;
    if !same {
        c.revision += 1;
    }
    st.ctl.insert(uid.clone(), c.clone());
    let mut obj = obj.clone();
    if info.kind == "Deployment" && !same {
        // getNewReplicaSet: the new ReplicaSet's revision and condition, in one status update.
        if !obj["metadata"]["annotations"].is_object() {
            obj["metadata"]["annotations"] = json!({});
        }
        obj["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
            json!(c.revision.to_string());
        let deadline = obj["spec"]["progressDeadlineSeconds"]
            .as_i64()
            .is_some_and(|d| d != i64::from(i32::MAX));
        if deadline {
            let mut conds = conditions_of(&obj["status"]);
            set_condition(
                &mut conds,
                dcond(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    &format!("Created new replica set \"{}\"", revision_name(&obj)),
                    &now,
                ),
            );
            obj["status"]["conditions"] = json!(conds);
        }
        obj = controller_write(st, info, k, obj, &["deployment.kubernetes.io/revision"])
            .unwrap_or_default();
    }
    if let Some(s) = status_for(info, &obj, &c, &now) {
        set_status(st, info, k, s);
    }
    let rollout = c.rollout;
    st.schedule(
        opts.controller_delay,
        k.clone(),
        uid.clone(),
        TimerAction::Pods { rollout },
    );
    let default = if info.group == "apiextensions.k8s.io" {
        opts.crd_establish_delay
    } else {
        opts.default_ready_after
    };
    if let Some(Plan::After(d, fail)) = plan(&obj, default) {
        st.schedule(d, k.clone(), uid, TimerAction::Ready { rollout, fail });
    }
}

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// What kube-controller-manager puts in every new namespace: the `default` ServiceAccount and
/// the `kube-root-ca.crt` ConfigMap.
pub(crate) fn populate_namespace(st: &mut State, opts: &ServerOptions, ns: &str) {
    let objects = [
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nMIIBflux+order+test+CA\n-----END CERTIFICATE-----\n"}}),
    ];
    for obj in objects {
        crate::verbs::create_internal(st, opts, obj, "kube-controller-manager");
    }
}

fn fire(st: &mut State, shared: &Shared, t: store::Timer) {
    let Some(obj) = st.objects.get(&t.key).cloned() else {
        return;
    };
    if obj["metadata"]["uid"].as_str() != Some(t.uid.as_str()) {
        return;
    }
    let catalog = st.catalog_all();
    let Some(info) = catalog
        .all
        .iter()
        .find(|r| r.group == t.key.0 && r.plural == t.key.1)
        .cloned()
    else {
        return;
    };
    let deleting = obj["metadata"].get("deletionTimestamp").is_some();
    let current = |st: &State, rollout: u64| {
        st.ctl
            .get(&t.uid)
            .filter(|c| c.rollout == rollout && !c.done)
            .cloned()
    };
    match t.action {
        TimerAction::Remove => {
            st.pending_removal.remove(&t.uid);
            if obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|a| a.iter().all(|f| f == crate::verbs::CRD_CLEANUP_FINALIZER))
            {
                crate::verbs::finish_delete(st, &info, &t.key);
            }
        }
        TimerAction::Observe { spec } => {
            if deleting || st.ctl.get(&t.uid).is_none_or(|c| c.spec != spec) {
                return;
            }
            observe(st, &shared.opts, &info, &t.key, &obj);
        }
        TimerAction::Pods { rollout } => {
            let Some(mut c) = current(st, rollout).filter(|c| !c.created) else {
                return;
            };
            if deleting {
                return;
            }
            c.created = true;
            st.ctl.insert(t.uid.clone(), c.clone());
            if let Some(s) = status_for(&info, &obj, &c, &store::now()) {
                set_status(st, &info, &t.key, s);
            }
        }
        TimerAction::Ready { rollout, fail } => {
            let Some(mut c) = current(st, rollout) else {
                return;
            };
            if deleting {
                return;
            }
            let now = store::now();
            if !c.created {
                c.created = true;
                if let Some(s) = status_for(&info, &obj, &c, &now) {
                    set_status(st, &info, &t.key, s);
                }
            }
            c.done = true;
            c.failed = fail;
            st.ctl.insert(t.uid.clone(), c.clone());
            let obj = st.objects.get(&t.key).cloned().unwrap_or(obj);
            let Some(status) = status_for(&info, &obj, &c, &now) else {
                return;
            };
            set_status(st, &info, &t.key, status);
            let wall = SystemTime::now();
            st.ready_events.push(ReadyEvent {
                object: ObjectKey {
                    api_version: info.api_version(),
                    kind: info.kind.clone(),
                    namespace: if info.namespaced {
                        Some(t.key.2.clone())
                    } else {
                        None
                    },
                    name: t.key.3.clone(),
                },
                failed: fail,
                at: Instant::now(),
                wall,
                since_start: Instant::now().saturating_duration_since(shared.start),
                generation: obj["metadata"]["generation"].as_i64().unwrap_or(1),
            });
        }
    }
}

/// The controller loop: sleeps until the earliest timer, fires what is due.
pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        let notified = shared.timer_wake.notified();
        let next = {
            let mut st = shared.state.lock().expect("state lock");
            let now = Instant::now();
            while st.timers.peek().is_some_and(|t| t.0.at <= now) {
                let t = st.timers.pop().expect("peeked").0;
                fire(&mut st, &shared, t);
            }
            st.timers.peek().map(|t| t.0.at)
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("x"), None);
    }
}
