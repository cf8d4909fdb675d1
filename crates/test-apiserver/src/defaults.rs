//! What kube-apiserver (v1.36) adds to an object on its way into storage, for the built-in kinds
//! this server knows: the `SetDefaults_*` functions of the typed APIs (run whenever a body is
//! decoded, so on every write), and the registry strategies' `PrepareForCreate` /
//! `PrepareForUpdate` (the initial status, generated Job selectors, bookkeeping annotations).
//!
//! Sources: `pkg/apis/{apps,batch,core}/v1/defaults.go` and their generated defaulters,
//! `pkg/registry/*/strategy.go` and apiextensions' `pkg/apis/apiextensions/v1/defaults.go`, at
//! Kubernetes v1.36 with default feature gates.

use serde_json::{Map, Value, json};

use crate::discovery::ResourceInfo;

/// `deprecated.daemonset.template.generation`: apps/v1's rendering of a DaemonSet's
/// `spec.templateGeneration`.
pub(crate) const DS_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// The object map at `v[key]` if present and a map (never creates it).
fn field<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    v.as_object_mut()?.get_mut(key)?.as_object_mut()
}

/// Every element of the list at `v[key]` if present.
fn items<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.as_object_mut()
        .and_then(|m| m.get_mut(key))
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

/// Set `m[key] = value` unless present with a non-null value (Go's "if x == nil/\"\"").
fn or_insert(m: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    };
    if empty {
        m.insert(key.into(), value);
    }
}

/// `m[key]` as a map, created (or replaced when null) if needed.
fn map_at<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.into(), json!({}));
    }
    m.get_mut(key)
        .and_then(Value::as_object_mut)
        .expect("just made a map")
}

/// The image pull policy `SetDefaults_Container` picks: `Always` for `:latest` or an untagged,
/// undigested reference; `IfNotPresent` otherwise (and for references that do not parse).
fn pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let (repo_last, tag) = match last.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (last, None),
    };
    // docker's reference grammar: non-empty components, a lowercase repository path.
    let path = name
        .rsplit_once(':')
        .filter(|_| tag.is_some())
        .map_or(name, |(p, _)| p);
    let skip = usize::from(path.contains('/') && is_domain(path));
    let parses = !repo_last.is_empty()
        && path.split('/').all(|c| !c.is_empty())
        && !path
            .split('/')
            .skip(skip)
            .any(|c| c.chars().any(|ch| ch.is_ascii_uppercase()));
    match (tag, digest) {
        (Some("latest"), _) => "Always",
        (None, None) if parses => "Always",
        _ => "IfNotPresent",
    }
}

/// Whether the first path component of a reference is a registry host (docker's rule).
fn is_domain(name: &str) -> bool {
    let first = name.split('/').next().unwrap_or_default();
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn probe(p: &mut Value) {
    let Some(m) = p.as_object_mut() else { return };
    for (k, v) in [
        ("timeoutSeconds", 1),
        ("periodSeconds", 10),
        ("successThreshold", 1),
        ("failureThreshold", 3),
    ] {
        if m.get(k).and_then(Value::as_i64).unwrap_or(0) == 0 {
            m.insert(k.into(), json!(v));
        }
    }
    http_get(p);
    if let Some(g) = field(p, "grpc") {
        g.entry("service").or_insert(json!(""));
    }
}

fn http_get(handler: &mut Value) {
    if let Some(h) = field(handler, "httpGet") {
        or_insert(h, "path", json!("/"));
        or_insert(h, "scheme", json!("HTTP"));
    }
}

fn container(c: &mut Value, host_network: bool) {
    let Some(m) = c.as_object_mut() else { return };
    if m.get("imagePullPolicy")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        let policy = pull_policy(m.get("image").and_then(Value::as_str).unwrap_or(""));
        m.insert("imagePullPolicy".into(), json!(policy));
    }
    or_insert(m, "terminationMessagePath", json!("/dev/termination-log"));
    or_insert(m, "terminationMessagePolicy", json!("File"));
    for p in items(c, "ports") {
        if let Some(p) = p.as_object_mut() {
            or_insert(p, "protocol", json!("TCP"));
            if host_network && p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0 {
                let cp = p.get("containerPort").cloned().unwrap_or(json!(0));
                p.insert("hostPort".into(), cp);
            }
        }
    }
    for e in items(c, "env") {
        if let Some(vf) = field(e, "valueFrom") {
            if let Some(fr) = vf.get_mut("fieldRef").and_then(Value::as_object_mut) {
                or_insert(fr, "apiVersion", json!("v1"));
            }
            if let Some(fk) = vf.get_mut("fileKeyRef").and_then(Value::as_object_mut) {
                fk.entry("optional").or_insert(json!(false));
            }
        }
    }
    for k in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(k).filter(|p| p.is_object()) {
            probe(p);
        }
    }
    if let Some(l) = field(c, "lifecycle") {
        for k in ["postStart", "preStop"] {
            if let Some(h) = l.get_mut(k) {
                http_get(h);
            }
        }
    }
}

fn volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    if m.keys().all(|k| k == "name") {
        m.insert("emptyDir".into(), json!({}));
    }
    for (k, mode) in [
        ("secret", true),
        ("configMap", true),
        ("downwardAPI", true),
        ("projected", true),
        ("hostPath", false),
    ] {
        let Some(src) = m.get_mut(k).and_then(Value::as_object_mut) else {
            continue;
        };
        if mode {
            src.entry("defaultMode").or_insert(json!(420));
        } else {
            src.entry("type").or_insert(json!(""));
        }
    }
    if let Some(d) = m.get_mut("downwardAPI") {
        for i in items(d, "items") {
            if let Some(fr) = field(i, "fieldRef") {
                or_insert(fr, "apiVersion", json!("v1"));
            }
        }
    }
    if let Some(p) = m.get_mut("projected") {
        for s in items(p, "sources") {
            if let Some(t) = field(s, "serviceAccountToken") {
                t.entry("expirationSeconds").or_insert(json!(3600));
            }
            if let Some(d) = s.get_mut("downwardAPI") {
                for i in items(d, "items") {
                    if let Some(fr) = field(i, "fieldRef") {
                        or_insert(fr, "apiVersion", json!("v1"));
                    }
                }
            }
        }
    }
    if let Some(e) = m.get_mut("ephemeral")
        && let Some(t) = field(e, "volumeClaimTemplate")
        && let Some(s) = t.get_mut("spec").and_then(Value::as_object_mut)
    {
        or_insert(s, "volumeMode", json!("Filesystem"));
    }
}

/// `SetDefaults_PodSpec` and the generated defaulters below it (containers, volumes, probes).
fn pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    or_insert(m, "dnsPolicy", json!("ClusterFirst"));
    or_insert(m, "restartPolicy", json!("Always"));
    or_insert(m, "securityContext", json!({}));
    or_insert(m, "terminationGracePeriodSeconds", json!(30));
    or_insert(m, "schedulerName", json!("default-scheduler"));
    let host_network = m.get("hostNetwork") == Some(&json!(true));
    for k in ["initContainers", "containers", "ephemeralContainers"] {
        for c in items(spec, k) {
            container(c, host_network && k != "ephemeralContainers");
        }
    }
    for v in items(spec, "volumes") {
        volume(v);
    }
}

/// A pod template (`spec.template` of a workload).
fn pod_template(t: Option<&mut Value>) {
    if let Some(t) = t
        && let Some(spec) = t.get_mut("spec")
    {
        pod_spec(spec);
    }
}

fn pvc_spec(spec: Option<&mut Value>) {
    if let Some(s) = spec.and_then(Value::as_object_mut) {
        or_insert(s, "volumeMode", json!("Filesystem"));
    }
}

/// The Pod's quality-of-service class (`qos.GetPodQOS`, simplified to cpu and memory).
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let (q, l) = (req.get(r).or(lim.get(r)), lim.get(r));
            if q.is_some() || l.is_some() {
                any = true;
            }
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// `SetDefaults_*` for `obj` (every write: create, update, patch, apply; dry-run too).
pub(crate) fn set_defaults(info: &ResourceInfo, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    let spec = obj.get_mut("spec");
    match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment") => {
            let Some(s) = spec.and_then(Value::as_object_mut) else {
                return;
            };
            or_insert(s, "replicas", json!(1));
            let strategy = map_at(s, "strategy");
            or_insert(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let ru = map_at(strategy, "rollingUpdate");
                or_insert(ru, "maxUnavailable", json!("25%"));
                or_insert(ru, "maxSurge", json!("25%"));
            }
            or_insert(s, "revisionHistoryLimit", json!(10));
            or_insert(s, "progressDeadlineSeconds", json!(600));
            pod_template(s.get_mut("template"));
        }
        ("apps", "StatefulSet") => {
            let Some(s) = spec.and_then(Value::as_object_mut) else {
                return;
            };
            or_insert(s, "podManagementPolicy", json!("OrderedReady"));
            let us = map_at(s, "updateStrategy");
            if us
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                us.insert("type".into(), json!("RollingUpdate"));
                or_insert(us, "rollingUpdate", json!({}));
            }
            if us["type"] == "RollingUpdate"
                && let Some(ru) = us.get_mut("rollingUpdate").and_then(Value::as_object_mut)
            {
                or_insert(ru, "partition", json!(0));
            }
            let pol = map_at(s, "persistentVolumeClaimRetentionPolicy");
            or_insert(pol, "whenDeleted", json!("Retain"));
            or_insert(pol, "whenScaled", json!("Retain"));
            or_insert(s, "replicas", json!(1));
            or_insert(s, "revisionHistoryLimit", json!(10));
            pod_template(s.get_mut("template"));
            if let Some(vcts) = s
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for t in vcts.iter_mut().filter_map(Value::as_object_mut) {
                    // apps/v1 renders the templates with their type (conversion.go).
                    t.insert("apiVersion".into(), json!("v1"));
                    t.insert("kind".into(), json!("PersistentVolumeClaim"));
                    pvc_spec(t.get_mut("spec"));
                    let st = map_at(t, "status");
                    or_insert(st, "phase", json!("Pending"));
                }
            }
        }
        ("apps", "DaemonSet") => {
            let Some(s) = spec.and_then(Value::as_object_mut) else {
                return;
            };
            let us = map_at(s, "updateStrategy");
            or_insert(us, "type", json!("RollingUpdate"));
            if us["type"] == "RollingUpdate" {
                let ru = map_at(us, "rollingUpdate");
                or_insert(ru, "maxUnavailable", json!(1));
                or_insert(ru, "maxSurge", json!(0));
            }
            or_insert(s, "revisionHistoryLimit", json!(10));
            pod_template(s.get_mut("template"));
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            let Some(s) = spec.and_then(Value::as_object_mut) else {
                return;
            };
            or_insert(s, "replicas", json!(1));
            pod_template(s.get_mut("template"));
        }
        ("batch", "Job") => {
            job_spec(spec);
            let template_labels = obj["spec"]["template"]["metadata"]["labels"].clone();
            if template_labels.is_object()
                && obj["metadata"]["labels"]
                    .as_object()
                    .is_none_or(|l| l.is_empty())
                && let Some(meta) = field(obj, "metadata")
            {
                meta.insert("labels".into(), template_labels);
            }
        }
        ("batch", "CronJob") => {
            let Some(s) = spec.and_then(Value::as_object_mut) else {
                return;
            };
            or_insert(s, "concurrencyPolicy", json!("Allow"));
            or_insert(s, "suspend", json!(false));
            or_insert(s, "successfulJobsHistoryLimit", json!(3));
            or_insert(s, "failedJobsHistoryLimit", json!(1));
            if let Some(jt) = s.get_mut("jobTemplate")
                && let Some(js) = jt.get_mut("spec")
            {
                pod_template(js.get_mut("template"));
            }
        }
        ("", "Pod") => {
            if let Some(s) = spec {
                pod_spec(s);
                if let Some(m) = s.as_object_mut() {
                    m.entry("enableServiceLinks").or_insert(json!(true));
                }
                for list in ["containers", "initContainers"] {
                    for c in items(s, list) {
                        // SetDefaults_Pod: requests default to limits.
                        let lim = c["resources"]["limits"].as_object().cloned();
                        if let Some(lim) = lim
                            && let Some(r) = field(c, "resources")
                        {
                            let req = map_at(r, "requests");
                            for (k, v) in lim {
                                req.entry(k).or_insert(v);
                            }
                        }
                    }
                }
            }
        }
        ("", "PodTemplate") => pod_template(obj.get_mut("template")),
        ("", "Service") => service(obj),
        ("", "PersistentVolumeClaim") => {
            pvc_spec(spec);
            let st = map_at(obj.as_object_mut().expect("object"), "status");
            or_insert(st, "phase", json!("Pending"));
        }
        ("", "PersistentVolume") => {
            if let Some(s) = spec.and_then(Value::as_object_mut) {
                or_insert(s, "persistentVolumeReclaimPolicy", json!("Retain"));
                or_insert(s, "volumeMode", json!("Filesystem"));
            }
            let st = map_at(obj.as_object_mut().expect("object"), "status");
            or_insert(st, "phase", json!("Pending"));
        }
        ("", "Secret") => {
            let m = obj.as_object_mut().expect("object");
            or_insert(m, "type", json!("Opaque"));
        }
        ("", "Namespace") => {
            let name = obj["metadata"]["name"].clone();
            if name.as_str().is_some_and(|n| !n.is_empty())
                && let Some(meta) = field(obj, "metadata")
            {
                map_at(meta, "labels").insert("kubernetes.io/metadata.name".into(), name);
            }
            let st = map_at(obj.as_object_mut().expect("object"), "status");
            or_insert(st, "phase", json!("Active"));
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if let Some(s) = spec.and_then(Value::as_object_mut) {
                let names = map_at(s, "names");
                let kind = names
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                or_insert(names, "singular", json!(kind.to_lowercase()));
                if !kind.is_empty() {
                    or_insert(names, "listKind", json!(format!("{kind}List")));
                }
                or_insert(s, "conversion", json!({"strategy": "None"}));
                if let Some(svc) = s
                    .get_mut("conversion")
                    .and_then(|c| c.get_mut("webhook"))
                    .and_then(|w| w.get_mut("clientConfig"))
                    .and_then(|c| c.get_mut("service"))
                    .and_then(Value::as_object_mut)
                {
                    svc.entry("port").or_insert(json!(443));
                }
            }
        }
        _ => {}
    }
}

fn job_spec(spec: Option<&mut Value>) {
    let Some(s) = spec.and_then(Value::as_object_mut) else {
        return;
    };
    let unset = |s: &Map<String, Value>, k: &str| s.get(k).is_none_or(Value::is_null);
    if unset(s, "completions") && unset(s, "parallelism") {
        s.insert("completions".into(), json!(1));
        s.insert("parallelism".into(), json!(1));
    }
    or_insert(s, "parallelism", json!(1));
    if unset(s, "backoffLimit") {
        let limit = if unset(s, "backoffLimitPerIndex") {
            6
        } else {
            i32::MAX as i64
        };
        s.insert("backoffLimit".into(), json!(limit));
    }
    or_insert(s, "completionMode", json!("NonIndexed"));
    or_insert(s, "suspend", json!(false));
    let replacement = if unset(s, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    or_insert(s, "podReplacementPolicy", json!(replacement));
    or_insert(s, "manualSelector", json!(false));
    pod_template(s.get_mut("template"));
}

/// `SetDefaults_Service`; the cluster IP and node ports are allocated in [`prepare_service`].
fn service(obj: &mut Value) {
    let Some(s) = field(obj, "spec") else {
        return;
    };
    or_insert(s, "sessionAffinity", json!("None"));
    if s["sessionAffinity"] == "None" {
        s.remove("sessionAffinityConfig");
    } else if s["sessionAffinity"] == "ClientIP"
        && s.get("sessionAffinityConfig")
            .and_then(|c| c.get("clientIP"))
            .and_then(|c| c.get("timeoutSeconds"))
            .is_none()
    {
        s.insert(
            "sessionAffinityConfig".into(),
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
    or_insert(s, "type", json!("ClusterIP"));
    let ty = s["type"].as_str().unwrap_or_default().to_string();
    if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            or_insert(p, "protocol", json!("TCP"));
            let tp = p.get("targetPort");
            if tp.is_none_or(|t| t.is_null() || *t == json!(0) || *t == json!("")) {
                let port = p.get("port").cloned().unwrap_or(json!(0));
                p.insert("targetPort".into(), port);
            }
        }
    }
    let external = ty == "NodePort"
        || ty == "LoadBalancer"
        || (ty == "ClusterIP"
            && s.get("externalIPs")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()));
    if external {
        or_insert(s, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        or_insert(s, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        s.entry("allocateLoadBalancerNodePorts")
            .or_insert(json!(true));
    }
}

/// The status a fresh object of this kind has when the create returns: the typed status
/// struct with its non-`omitempty` fields (`status: {}` for a Deployment, `replicas: 0` for a
/// ReplicaSet, ...), after the strategy's `PrepareForCreate` dropped whatever the client sent.
/// `None` for kinds without a status (and for custom resources, whose status is kept as sent
/// only when they have no status subresource).
pub(crate) fn initial_status(info: &ResourceInfo, obj: &Value) -> Option<Value> {
    Some(match (info.group.as_str(), info.kind.as_str()) {
        ("apps", "Deployment") | ("batch", "Job" | "CronJob") | ("", "ResourceQuota") => {
            json!({})
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => json!({"replicas": 0}),
        ("apps", "StatefulSet") => json!({"replicas": 0, "availableReplicas": 0}),
        ("apps", "DaemonSet") => json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
            "desiredNumberScheduled": 0, "numberReady": 0}),
        ("", "Pod") => json!({"phase": "Pending", "qosClass": qos_class(obj)}),
        ("", "Service") | ("networking.k8s.io", "Ingress") => json!({"loadBalancer": {}}),
        ("", "PersistentVolumeClaim") => json!({"phase": "Pending"}),
        ("", "PersistentVolume") => {
            json!({"phase": "Pending", "lastPhaseTransitionTime": crate::store::now()})
        }
        ("", "Namespace") => json!({"phase": "Active"}),
        ("policy", "PodDisruptionBudget") => json!({"disruptionsAllowed": 0,
            "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            json!({"currentMetrics": null, "desiredReplicas": 0})
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let stored: Vec<Value> = obj["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["storage"] == json!(true))
                .take(1)
                .map(|v| v["name"].clone())
                .collect();
            json!({"conditions": null, "acceptedNames": {"plural": "", "kind": ""},
                "storedVersions": stored})
        }
        _ => return None,
    })
}

/// `PrepareForCreate`: the initial status, Job selectors, the DaemonSet template generation,
/// Namespace finalizers. `uid` is the new object's.
pub(crate) fn prepare_for_create(info: &ResourceInfo, obj: &mut Value, uid: &str) {
    if info.is_builtin() {
        match initial_status(info, obj) {
            Some(s) => obj["status"] = s,
            None => {
                if info.status
                    && let Some(m) = obj.as_object_mut()
                {
                    m.shift_remove("status");
                }
            }
        }
    }
    match (info.group.as_str(), info.kind.as_str()) {
        ("batch", "Job")
            if obj["spec"]["manualSelector"] != json!(true) && obj["spec"].is_object() =>
        {
            let name = obj["metadata"]["name"].clone();
            let t = &mut obj["spec"]["template"];
            if !t["metadata"]["labels"].is_object() {
                t["metadata"]["labels"] = json!({});
            }
            let labels = t["metadata"]["labels"]
                .as_object_mut()
                .expect("just made a map");
            for k in ["job-name", "batch.kubernetes.io/job-name"] {
                labels.entry(k).or_insert(name.clone());
            }
            for k in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
                labels.entry(k).or_insert(json!(uid));
            }
            let sel = &mut obj["spec"]["selector"];
            if !sel["matchLabels"].is_object() {
                sel["matchLabels"] = json!({});
            }
            sel["matchLabels"]
                .as_object_mut()
                .expect("just made a map")
                .entry("batch.kubernetes.io/controller-uid")
                .or_insert(json!(uid));
        }
        ("apps", "DaemonSet") => {
            if !obj["metadata"]["annotations"].is_object() {
                obj["metadata"]["annotations"] = json!({});
            }
            obj["metadata"]["annotations"][DS_TEMPLATE_GENERATION] = json!("1");
        }
        ("", "Namespace") => {
            let fins = &mut obj["spec"]["finalizers"];
            match fins.as_array_mut() {
                Some(a) if !a.iter().any(|f| f == "kubernetes") => a.push(json!("kubernetes")),
                Some(_) => {}
                None => *fins = json!(["kubernetes"]),
            }
        }
        _ => {}
    }
}

/// `PrepareForUpdate` of the main resource: what the strategy keeps or bumps.
pub(crate) fn prepare_for_update(info: &ResourceInfo, old: &Value, new: &mut Value) {
    if let ("apps", "DaemonSet") = (info.group.as_str(), info.kind.as_str()) {
        let old_gen: i64 = old["metadata"]["annotations"][DS_TEMPLATE_GENERATION]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let g = if old["spec"]["template"] != new["spec"]["template"] {
            old_gen + 1
        } else {
            old_gen
        };
        if !new["metadata"]["annotations"].is_object() {
            new["metadata"]["annotations"] = json!({});
        }
        new["metadata"]["annotations"][DS_TEMPLATE_GENERATION] = json!(g.to_string());
    }
}

/// Allocations the Service registry makes: cluster IPs, IP families, node ports (kept across
/// updates by port name, as `patchAllocatedValues` does).
pub(crate) fn prepare_service(
    spec: &mut Value,
    old: Option<&Value>,
    next_ip: &mut dyn FnMut() -> String,
    next_node_port: &mut dyn FnMut() -> i64,
) {
    if !spec.is_object() {
        return;
    }
    let ty = spec["type"].as_str().unwrap_or("ClusterIP").to_string();
    let old_spec = old.map(|o| &o["spec"]);
    if ty == "ExternalName" {
        return;
    }
    let cur = spec["clusterIP"].as_str().unwrap_or_default().to_string();
    if cur.is_empty() {
        let ip = match old_spec.and_then(|o| o["clusterIP"].as_str()) {
            Some(ip) if !ip.is_empty() => ip.to_string(),
            _ => next_ip(),
        };
        spec["clusterIP"] = json!(ip);
    }
    if spec.get("clusterIPs").is_none_or(Value::is_null) {
        let ip = spec["clusterIP"].clone();
        spec["clusterIPs"] = json!([ip]);
    }
    if spec.get("ipFamilies").is_none_or(Value::is_null) {
        spec["ipFamilies"] = json!(["IPv4"]);
    }
    if spec.get("ipFamilyPolicy").is_none_or(Value::is_null) {
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
    let needs_node_ports = ty == "NodePort"
        || (ty == "LoadBalancer" && spec["allocateLoadBalancerNodePorts"] != json!(false));
    if !needs_node_ports {
        return;
    }
    let old_ports: Vec<(String, i64)> = old_spec
        .and_then(|o| o["ports"].as_array())
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["nodePort"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    if let Some(ports) = spec["ports"].as_array_mut() {
        for p in ports.iter_mut() {
            if p["nodePort"].as_i64().unwrap_or(0) != 0 {
                continue;
            }
            let name = p["name"].as_str().unwrap_or_default();
            let np = old_ports
                .iter()
                .find(|(n, np)| n == name && *np != 0)
                .map(|(_, np)| *np)
                .unwrap_or_else(&mut *next_node_port);
            p["nodePort"] = json!(np);
        }
    }
}

/// The top-level fields a built-in kind's schema declares (besides apiVersion/kind/metadata);
/// None for kinds this server does not check (Events).
fn top_level_fields(info: &ResourceInfo) -> Option<&'static [&'static str]> {
    Some(match (info.group.as_str(), info.kind.as_str()) {
        ("", "ConfigMap") => &["data", "binaryData", "immutable"],
        ("", "Secret") => &["data", "stringData", "type", "immutable"],
        ("", "ServiceAccount") => &[
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
        ("", "Endpoints") => &["subsets"],
        ("", "Event") => return None,
        ("rbac.authorization.k8s.io", "Role") => &["rules"],
        ("rbac.authorization.k8s.io", "ClusterRole") => &["rules", "aggregationRule"],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            &["subjects", "roleRef"]
        }
        ("apps", "ControllerRevision") => &["data", "revision"],
        ("storage.k8s.io", "StorageClass") => &[
            "provisioner",
            "parameters",
            "reclaimPolicy",
            "mountOptions",
            "allowVolumeExpansion",
            "volumeBindingMode",
            "allowedTopologies",
        ],
        ("", "PodTemplate") => &["template"],
        _ => &["spec", "status"],
    })
}

const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Fields of a built-in object its schema does not declare, as `.path`s (checked at the top
/// level and in `metadata` only). Custom resources are not checked.
pub(crate) fn unknown_fields(info: &ResourceInfo, obj: &Value) -> Vec<String> {
    let Some(known) = info.is_builtin().then(|| top_level_fields(info)).flatten() else {
        return vec![];
    };
    let mut out = vec![];
    if let Some(m) = obj.as_object() {
        for k in m.keys() {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                && !known.contains(&k.as_str())
            {
                out.push(format!(".{k}"));
            }
        }
    }
    if let Some(m) = obj["metadata"].as_object() {
        for k in m.keys() {
            if !META_FIELDS.contains(&k.as_str()) {
                out.push(format!(".metadata.{k}"));
            }
        }
    }
    out
}

/// Drop what [`unknown_fields`] finds, as decoding a non-apply body does (the real server also
/// sends a `Warning` header for each; this one does not).
pub(crate) fn drop_unknown_fields(info: &ResourceInfo, obj: &mut Value) {
    for path in unknown_fields(info, obj) {
        let mut parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let parent = if parts.is_empty() {
            obj.as_object_mut()
        } else {
            obj["metadata"].as_object_mut()
        };
        if let Some(m) = parent {
            m.shift_remove(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policies() {
        assert_eq!(pull_policy("nginx"), "Always");
        assert_eq!(pull_policy("nginx:latest"), "Always");
        assert_eq!(pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(pull_policy("localhost:5000/app"), "Always");
        assert_eq!(pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(pull_policy("ghcr.io/x/y@sha256:abc"), "IfNotPresent");
        assert_eq!(pull_policy(""), "IfNotPresent");
        assert_eq!(pull_policy("Bad/Name"), "IfNotPresent");
    }

    #[test]
    fn deployment_defaults() {
        let info = crate::discovery::builtin()
            .iter()
            .find(|r| r.kind == "Deployment")
            .unwrap();
        let mut d = json!({"metadata": {"name": "d"}, "spec": {"selector": {},
            "template": {"spec": {"containers": [{"name": "c", "image": "i:1",
                "ports": [{"containerPort": 80}]}]}}}});
        set_defaults(info, &mut d);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let ps = &s["template"]["spec"];
        assert_eq!(ps["restartPolicy"], "Always");
        assert_eq!(ps["dnsPolicy"], "ClusterFirst");
        assert_eq!(ps["terminationGracePeriodSeconds"], 30);
        assert_eq!(ps["schedulerName"], "default-scheduler");
        assert_eq!(ps["securityContext"], json!({}));
        let c = &ps["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        // Idempotent.
        let again = {
            let mut x = d.clone();
            set_defaults(info, &mut x);
            x
        };
        assert_eq!(again, d);
    }
}
