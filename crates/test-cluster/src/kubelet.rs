//! The kubelet stand-in: one Node (`flux-order-node`, Ready), every pod bound to it, and each pod's
//! status written as a kubelet would after the delay its [`READY_AFTER`](crate::READY_AFTER)
//! annotation asks for: Running and Ready (restartPolicy Always), Succeeded (Never/OnFailure), or —
//! with `fail` — Failed / a crash-looping container; `never` leaves it Pending. Pods being
//! deleted are removed at once (grace 0), as a kubelet confirms the deletion. PVCs are marked Bound
//! (the volume binder controller is off in this control plane). It runs on a runtime of its own,
//! for as long as the process lives.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use serde_json::json;

/// The node every pod is bound to.
pub const NODE: &str = "flux-order-node";

/// Keeps the stand-in's runtime alive.
pub struct Handle {
    _thread: std::thread::JoinHandle<()>,
}

/// Starts the stand-in with this kubeconfig; returns once the node exists.
pub fn start(kubeconfig: &Path) -> Result<Handle, String> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.to_string()));
                return;
            }
        };
        rt.block_on(async move {
            let client = match connect(kc).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = ensure_node(&client).await {
                let _ = tx.send(Err(e));
                return;
            }
            let _ = tx.send(Ok(()));
            tokio::join!(run_pods(client.clone()), run_pvcs(client));
        });
    });
    rx.recv_timeout(Duration::from_secs(60))
        .map_err(|_| "the kubelet stand-in did not start".to_string())??;
    Ok(Handle { _thread: thread })
}

async fn connect(kc: Kubeconfig) -> Result<Client, String> {
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(config).map_err(|e| e.to_string())
}

async fn ensure_node(client: &Client) -> Result<(), String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
    }))
    .map_err(|e| e.to_string())?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(format!("create node: {e}")),
    }
    let now = now();
    let status = json!({"status": {
        "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet stand-in",
             "lastHeartbeatTime": now, "lastTransitionTime": now},
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.36.3",
                     "kubeProxyVersion": "", "containerRuntimeVersion": "stand-in://1", "osImage": "stand-in",
                     "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| format!("node status: {e}"))?;
    Ok(())
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// What the annotation asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    After(Duration),
    Never,
    Fail,
}

fn plan_of(pod: &Pod) -> Plan {
    let ann = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::READY_AFTER))
        .map(String::as_str);
    match ann {
        None => Plan::After(Duration::ZERO),
        Some("never") => Plan::Never,
        Some("fail") => Plan::Fail,
        Some(d) => Plan::After(parse_duration(d).unwrap_or(Duration::ZERO)),
    }
}

/// `200ms`, `2s`, `1m`, `1.5s`.
fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

async fn run_pods(client: Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let started: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stream = watcher::watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let Ok(pod) = ev else { continue };
        let client = client.clone();
        let started = started.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_pod(client, pod, started).await {
                eprintln!("kubelet stand-in: {e}");
            }
        });
    }
}

async fn handle_pod(
    client: Client,
    pod: Pod,
    started: Arc<Mutex<HashSet<String>>>,
) -> Result<(), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &ns);
    let spec = pod.spec.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_some() {
        // Confirm the deletion, as a kubelet does once the containers stopped.
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        return match api.delete(&name, &dp).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(format!("delete {ns}/{name}: {e}")),
        };
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return Ok(());
    }
    if !started
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(uid.clone())
    {
        return Ok(());
    }
    if spec.node_name.as_deref().unwrap_or("").is_empty() {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
        });
        if let Err(e) = api
            .create_subresource::<Value, Value>("binding", &name, &PostParams::default(), &binding)
            .await
        {
            started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
            return Err(format!("bind {ns}/{name}: {e}"));
        }
    }
    let plan = plan_of(&pod);
    let run_to_completion = spec
        .restart_policy
        .as_deref()
        .is_some_and(|p| p != "Always");
    let status = match plan {
        Plan::Never => return Ok(()),
        Plan::After(d) => {
            tokio::time::sleep(d).await;
            if run_to_completion {
                terminated_status(&spec, 0)
            } else {
                running_status(&spec, true)
            }
        }
        Plan::Fail => {
            if run_to_completion {
                terminated_status(&spec, 1)
            } else {
                running_status(&spec, false)
            }
        }
    };
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
        Err(e) => Err(format!("status {ns}/{name}: {e}")),
    }
}

type Value = serde_json::Value;

fn containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(String, String)> {
    spec.containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

fn condition(t: &str, ok: bool, now: &str) -> Value {
    json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now, "lastProbeTime": null})
}

fn running_status(spec: &k8s_openapi::api::core::v1::PodSpec, ready: bool) -> Value {
    let now = now();
    let statuses: Vec<Value> = containers(spec)
        .into_iter()
        .map(|(name, image)| {
            let state = if ready {
                json!({"running": {"startedAt": now}})
            } else {
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}})
            };
            json!({"name": name, "image": image, "imageID": format!("stand-in://{image}"),
                   "ready": ready, "started": ready, "restartCount": if ready { 0 } else { 3 },
                   "state": state})
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": now,
        "conditions": [
            condition("PodScheduled", true, &now),
            condition("Initialized", true, &now),
            condition("ContainersReady", ready, &now),
            condition("Ready", ready, &now),
        ],
        "containerStatuses": statuses,
    }})
}

fn terminated_status(spec: &k8s_openapi::api::core::v1::PodSpec, exit_code: i32) -> Value {
    let now = now();
    let statuses: Vec<Value> = containers(spec)
        .into_iter()
        .map(|(name, image)| {
            json!({"name": name, "image": image, "imageID": format!("stand-in://{image}"),
                   "ready": false, "started": false, "restartCount": 0,
                   "state": {"terminated": {"exitCode": exit_code,
                       "reason": if exit_code == 0 { "Completed" } else { "Error" },
                       "startedAt": now, "finishedAt": now}}})
        })
        .collect();
    json!({"status": {
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": now,
        "conditions": [
            condition("PodScheduled", true, &now),
            condition("Initialized", true, &now),
            condition("ContainersReady", false, &now),
            condition("Ready", false, &now),
        ],
        "containerStatuses": statuses,
    }})
}

async fn run_pvcs(client: Client) {
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let stream = watcher::watcher(pvcs, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let Ok(pvc) = ev else { continue };
        let bound = pvc
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Bound");
        if bound || pvc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let capacity = pvc
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage").cloned());
        let status = json!({"status": {"phase": "Bound", "accessModes": pvc.spec.as_ref().and_then(|s| s.access_modes.clone()), "capacity": {"storage": capacity}}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            eprintln!("kubelet stand-in: bind PVC {ns}/{name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Some(Duration::from_millis(200)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("x"), None);
    }
}
