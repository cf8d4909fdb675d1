//! Simulated controllers: on create or spec change they write an in-progress status at once, then
//! a timer heap (one background task) makes the object ready, failed, or leaves it in progress,
//! as told by the `test.flux-order/ready-after` annotation or the server default.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::discovery::ResourceInfo;
use crate::store::{self, Key, State, TimerAction};
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
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => true,
        ("batch", "Job") => true,
        ("", "Pod" | "PersistentVolumeClaim") => true,
        ("", "Service") => obj["spec"]["type"] == "LoadBalancer",
        ("apiextensions.k8s.io", "CustomResourceDefinition") => true,
        _ => {
            is_custom(info)
                && obj["metadata"]["annotations"][crate::READY_AFTER_ANNOTATION].is_string()
        }
    }
}

fn is_custom(info: &ResourceInfo) -> bool {
    !crate::discovery::builtin()
        .iter()
        .any(|b| b.group == info.group && b.plural == info.plural)
}

fn replicas(obj: &Value) -> i64 {
    obj["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// Insert `k: v` unless v is 0 (Kubernetes omits zero counters).
fn set_nz(s: &mut Value, k: &str, v: i64) {
    if v != 0 {
        s[k] = json!(v);
    }
}

fn cond(t: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": t, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
           "reason": reason, "message": message})
}

fn revision(name: &str, generation: i64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(generation.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{name}-{:010x}", h & 0xff_ffff_ffff)
}

/// The status a controller writes while working on the current generation.
fn in_progress(info: &ResourceInfo, obj: &Value, now: &str) -> Option<Value> {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let r = replicas(obj);
    Some(match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment") => {
            let mut s = json!({"observedGeneration": g});
            set_nz(&mut s, "replicas", r);
            set_nz(&mut s, "unavailableReplicas", r);
            s["conditions"] = json!([
                cond(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                    now
                ),
                cond(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    &format!("ReplicaSet \"{}\" is progressing.", revision(name, g)),
                    now
                ),
            ]);
            s
        }
        ("apps", "StatefulSet") => {
            let rev = revision(name, g);
            let cur = obj["status"]["updateRevision"]
                .as_str()
                .unwrap_or(&rev)
                .to_string();
            let mut s = json!({"observedGeneration": g, "currentRevision": cur, "updateRevision": rev,
                "collisionCount": 0, "availableReplicas": 0});
            set_nz(&mut s, "replicas", r);
            s
        }
        ("apps", "DaemonSet") => json!({"observedGeneration": g, "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": 0, "numberUnavailable": 1}),
        ("apps", "ReplicaSet") => {
            let mut s = json!({"observedGeneration": g});
            set_nz(&mut s, "replicas", r);
            set_nz(&mut s, "fullyLabeledReplicas", r);
            s
        }
        ("batch", "Job") => {
            if store::condition_true(obj, "Complete") || store::condition_true(obj, "Failed") {
                return None;
            }
            json!({"startTime": now, "active": 1, "ready": 0, "uncountedTerminatedPods": {}})
        }
        ("", "Pod") => json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}],
            "qosClass": "BestEffort"}),
        ("", "PersistentVolumeClaim") => json!({"phase": "Pending"}),
        ("", "Service") => json!({"loadBalancer": {}}),
        ("apiextensions.k8s.io", _) => return None,
        _ => json!({"observedGeneration": g, "conditions": [
            {"type": "Ready", "status": "False", "reason": "Progressing", "message": "Reconciliation in progress",
             "observedGeneration": g, "lastTransitionTime": now},
            {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "Reconciliation in progress",
             "observedGeneration": g, "lastTransitionTime": now}]}),
    })
}

/// The status a controller writes when done (or failed).
fn finished(info: &ResourceInfo, obj: &Value, fail: bool, now: &str) -> Option<Value> {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let r = replicas(obj);
    let rev = revision(name, g);
    Some(match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment") if fail => {
            let mut s = json!({"observedGeneration": g});
            set_nz(&mut s, "replicas", r);
            set_nz(&mut s, "updatedReplicas", r);
            set_nz(&mut s, "unavailableReplicas", r);
            s["conditions"] = json!([
                cond(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                    now
                ),
                cond(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    &format!("ReplicaSet \"{rev}\" has timed out progressing."),
                    now
                ),
            ]);
            s
        }
        ("apps", "Deployment") => {
            let mut s = json!({"observedGeneration": g});
            for k in [
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
            ] {
                set_nz(&mut s, k, r);
            }
            s["conditions"] = json!([
                cond(
                    "Available",
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                    now
                ),
                cond(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    &format!("ReplicaSet \"{rev}\" has successfully progressed."),
                    now
                ),
            ]);
            s
        }
        ("apps", "StatefulSet") if fail => return None,
        ("apps", "StatefulSet") => {
            let mut s = json!({"observedGeneration": g, "currentRevision": rev, "updateRevision": rev,
                "collisionCount": 0});
            for k in [
                "replicas",
                "readyReplicas",
                "currentReplicas",
                "updatedReplicas",
                "availableReplicas",
            ] {
                set_nz(&mut s, k, r);
            }
            if r == 0 {
                s["availableReplicas"] = json!(0);
            }
            s
        }
        ("apps", "DaemonSet") if fail => return None,
        ("apps", "DaemonSet") => json!({"observedGeneration": g, "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1, "updatedNumberScheduled": 1, "numberMisscheduled": 0,
            "numberReady": 1, "numberAvailable": 1}),
        ("apps", "ReplicaSet") if fail => return None,
        ("apps", "ReplicaSet") => {
            let mut s = json!({"observedGeneration": g});
            for k in [
                "replicas",
                "fullyLabeledReplicas",
                "readyReplicas",
                "availableReplicas",
            ] {
                set_nz(&mut s, k, r);
            }
            s
        }
        ("batch", "Job") => {
            let start = obj["status"]["startTime"]
                .as_str()
                .unwrap_or(now)
                .to_string();
            if fail {
                json!({"startTime": start, "failed": 1, "ready": 0, "uncountedTerminatedPods": {}, "conditions": [
                    cond("FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now),
                    cond("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now)]})
            } else {
                let c = obj["spec"]["completions"].as_i64().unwrap_or(1);
                json!({"startTime": start, "completionTime": now, "succeeded": c, "ready": 0,
                    "uncountedTerminatedPods": {}, "conditions": [
                    cond("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", now),
                    cond("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", now)]})
            }
        }
        ("", "Pod") => {
            let containers: Vec<Value> = obj["spec"]["containers"].as_array().into_iter().flatten().map(|c| {
                if fail {
                    json!({"name": c["name"], "image": c["image"], "ready": false, "started": false, "restartCount": 3,
                        "state": {"waiting": {"reason": "CrashLoopBackOff",
                            "message": "back-off 40s restarting failed container"}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
                } else {
                    json!({"name": c["name"], "image": c["image"], "ready": true, "started": true, "restartCount": 0,
                        "state": {"running": {"startedAt": now}}})
                }
            }).collect();
            let ready = if fail { "False" } else { "True" };
            let pc = |t: &str, s: &str| json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": now});
            json!({"phase": "Running", "conditions": [pc("Initialized", "True"), pc("Ready", ready),
                pc("ContainersReady", ready), pc("PodScheduled", "True")], "hostIP": "10.0.0.1",
                "podIP": "10.244.0.10", "startTime": now, "containerStatuses": containers, "qosClass": "BestEffort"})
        }
        ("", "PersistentVolumeClaim") if fail => return None,
        ("", "PersistentVolumeClaim") => {
            let mut s = json!({"phase": "Bound", "accessModes": obj["spec"]["accessModes"]});
            if let Some(st) = obj["spec"]["resources"]["requests"]["storage"].as_str() {
                s["capacity"] = json!({"storage": st});
            }
            s
        }
        ("", "Service") if fail => return None,
        ("", "Service") => {
            json!({"loadBalancer": {"ingress": [{"ip": "172.18.255.200", "ipMode": "VIP"}]}})
        }
        ("apiextensions.k8s.io", _) => {
            let mut names = obj["spec"]["names"].clone();
            if names["singular"].is_null() {
                names["singular"] =
                    json!(names["kind"].as_str().unwrap_or_default().to_lowercase());
            }
            let stored: Vec<Value> = obj["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"] == json!(true))
                .map(|v| v["name"].clone())
                .collect();
            json!({"conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}],
                "acceptedNames": names, "storedVersions": stored})
        }
        _ if fail => json!({"observedGeneration": g, "conditions": [
            {"type": "Ready", "status": "False", "reason": "Failed", "message": "Reconciliation failed",
             "observedGeneration": g, "lastTransitionTime": now},
            {"type": "Stalled", "status": "True", "reason": "Failed", "message": "Reconciliation failed",
             "observedGeneration": g, "lastTransitionTime": now}]}),
        _ => json!({"observedGeneration": g, "conditions": [
            {"type": "Ready", "status": "True", "reason": "Succeeded", "message": "Reconciliation succeeded",
             "observedGeneration": g, "lastTransitionTime": now}]}),
    })
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

/// Called after a create or a generation change of a main resource.
pub(crate) fn on_spec_change(st: &mut State, opts: &ServerOptions, info: &ResourceInfo, k: &Key) {
    let Some(obj) = st.objects.get(k).cloned() else {
        return;
    };
    if !managed(info, &obj) || obj["metadata"].get("deletionTimestamp").is_some() {
        return;
    }
    let is_crd = info.group == "apiextensions.k8s.io";
    if is_crd && crate::discovery::crd_established(&obj) {
        return;
    }
    let default = if is_crd {
        opts.crd_establish_delay
    } else {
        opts.default_ready_after
    };
    let Some(plan) = plan(&obj, default) else {
        return;
    };
    let now = store::now();
    let Some(status) = in_progress(info, &obj, &now) else {
        if !is_crd {
            return;
        }
        if let Plan::After(d, _) = plan {
            schedule_ready(st, &obj, k, d, false);
        }
        return;
    };
    write_status(st, k, status);
    if let Plan::After(d, fail) = plan {
        schedule_ready(st, &obj, k, d, fail);
    }
}

fn schedule_ready(st: &mut State, obj: &Value, k: &Key, d: Duration, fail: bool) {
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    st.schedule(d, k.clone(), uid, TimerAction::Ready { generation, fail });
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
    match t.action {
        TimerAction::Remove => {
            st.pending_removal.remove(&t.uid);
            if obj["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|a| a.is_empty())
            {
                crate::verbs::finish_delete(st, &info, &t.key);
            }
        }
        TimerAction::Ready { generation, fail } => {
            if obj["metadata"]["generation"].as_i64().unwrap_or(1) != generation {
                return;
            }
            let now = store::now();
            let Some(status) = finished(&info, &obj, fail, &now) else {
                return;
            };
            write_status(st, &t.key, status);
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
                generation,
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
