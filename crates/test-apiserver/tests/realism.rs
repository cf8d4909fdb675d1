//! Shapes a real kube-apiserver (v1.36) gives that a client can tell apart: untyped LIST items,
//! defaulting, the status a fresh object has, the order in which controllers fill status.

mod common;

use std::time::Duration;

use common::*;
use flux_order_test_apiserver::{ServerOptions, TestServer};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
const DEPS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deploy(name: &str, ann: Option<&str>, replicas: i64, image: &str) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}});
    if let Some(a) = ann {
        d["metadata"]["annotations"] = json!({"test.flux-order/ready-after": a});
    }
    d
}

/// A server whose controllers never get to act.
fn frozen() -> TestServer {
    TestServer::start(ServerOptions {
        controller_delay: Duration::from_secs(600),
        ..ServerOptions::default()
    })
}

#[test]
fn list_items_are_untyped_but_gets_watch_events_and_custom_resources_are_typed() {
    let s = frozen();
    apply(
        &s,
        &format!("{DEPS}/a?fieldManager=m"),
        &deploy("a", None, 1, "i:1"),
    );
    let l = get(&s, DEPS);
    assert_eq!(l.body["kind"], "DeploymentList");
    assert_eq!(l.body["apiVersion"], "apps/v1");
    let item = &l.body["items"][0];
    assert_eq!(item["metadata"]["name"], "a");
    assert!(
        item.get("kind").is_none() && item.get("apiVersion").is_none(),
        "{item}"
    );
    // All-namespace lists too.
    let all = get(&s, "/apis/apps/v1/deployments");
    assert!(all.body["items"][0].get("kind").is_none());
    // A GET and watch events (including a watch's initial ADDED events) are typed.
    assert_eq!(get(&s, &format!("{DEPS}/a")).body["kind"], "Deployment");
    let mut w = Watch::open(&s, &format!("{DEPS}?watch=true"));
    let e = w.next().unwrap();
    assert_eq!(e["type"], "ADDED");
    assert_eq!(e["object"]["kind"], "Deployment");
    assert_eq!(e["object"]["apiVersion"], "apps/v1");
    // Table rows carry PartialObjectMetadata.
    let t = try_req(
        &s,
        "GET",
        DEPS,
        None,
        "",
        &[("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
    )
    .unwrap();
    assert_eq!(t.body["kind"], "Table");
    assert_eq!(t.body["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    // Custom resources are listed as unstructured objects: their items keep kind/apiVersion.
    s.create(
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}}),
    )
    .unwrap();
    // (The frozen controllers never establish it: do it by hand.)
    s.set_status(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        "widgets.example.com",
        json!({"conditions": [{"type": "Established", "status": "True"}]}),
    )
    .unwrap();
    s.create(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default"}}))
        .unwrap();
    let l = get(&s, "/apis/example.com/v1/namespaces/default/widgets");
    assert_eq!(l.body["items"][0]["kind"], "Widget", "{}", l.raw);
    assert_eq!(l.body["items"][0]["apiVersion"], "example.com/v1");
}

#[test]
fn writes_are_defaulted_like_kube_apiserver() {
    let s = frozen();
    let r = apply(
        &s,
        &format!("{DEPS}/d?fieldManager=m"),
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx",
                        "ports": [{"containerPort": 80}]}]}}}}),
    );
    assert_eq!(r.status, 201, "{}", r.raw);
    let d = &r.body;
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(
        d["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    let ps = &d["spec"]["template"]["spec"];
    assert_eq!(ps["restartPolicy"], "Always");
    assert_eq!(ps["dnsPolicy"], "ClusterFirst");
    assert_eq!(ps["terminationGracePeriodSeconds"], 30);
    assert_eq!(ps["schedulerName"], "default-scheduler");
    let c = &ps["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always", "untagged image");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(c["terminationMessagePolicy"], "File");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    // Fresh status: what the API server gives, no controller's yet.
    assert_eq!(d["status"], json!({}));
    assert_eq!(
        get(&s, &format!("{DEPS}/d")).body["status"],
        json!({}),
        "no controller has written yet"
    );
    // The applier owns only what it sent.
    let mf = &d["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
    assert!(mf.get("f:progressDeadlineSeconds").is_none(), "{mf}");

    // StatefulSet, DaemonSet, ReplicaSet: their near-empty statuses and defaults.
    let tmpl = json!({"metadata": {"labels": {"app": "x"}},
        "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
    let sts = s
        .create(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "serviceName": "s", "template": tmpl,
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}]}}))
        .unwrap();
    assert_eq!(
        sts["status"],
        json!({"replicas": 0, "availableReplicas": 0})
    );
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        sts["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    let vct = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(
        (&vct["apiVersion"], &vct["kind"]),
        (&json!("v1"), &json!("PersistentVolumeClaim"))
    );
    assert_eq!(vct["spec"]["volumeMode"], "Filesystem");
    assert_eq!(vct["status"], json!({"phase": "Pending"}));
    let ds = s
        .create(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "ds", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": tmpl}}))
        .unwrap();
    assert_eq!(
        ds["status"],
        json!({"currentNumberScheduled": 0, "numberMisscheduled": 0,
            "desiredNumberScheduled": 0, "numberReady": 0})
    );
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(
        ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"],
        "1"
    );
    let rs = s
        .create(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "rs", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": tmpl}}))
        .unwrap();
    assert_eq!(rs["status"], json!({"replicas": 0}));

    // Job: defaults, a generated selector, and a restartPolicy a Job may use.
    let job = |name: &str, rp: Option<&str>| {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        if let Some(rp) = rp {
            j["spec"]["template"]["spec"]["restartPolicy"] = json!(rp);
        }
        j
    };
    let r = post(
        &s,
        "/apis/batch/v1/namespaces/default/jobs",
        &job("bad", None),
    );
    assert_eq!(r.status, 422, "{}", r.raw);
    assert_eq!(
        r.body["message"],
        "Job.batch \"bad\" is invalid: spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""
    );
    let j = s.create(job("j", Some("Never"))).unwrap();
    let spec = &j["spec"];
    assert_eq!(
        (
            &spec["backoffLimit"],
            &spec["completions"],
            &spec["parallelism"]
        ),
        (&json!(6), &json!(1), &json!(1))
    );
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["manualSelector"], false);
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    let uid = j["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/job-name"], "j");
    assert_eq!(labels["controller-uid"], uid);
    assert_eq!(j["status"], json!({}));

    // Service: type, affinity, traffic policies, IP families, target ports, node ports.
    let svc = s
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "np", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "x"},
                "ports": [{"name": "http", "port": 80}]}}))
        .unwrap();
    let sp = &svc["spec"];
    assert_eq!(sp["sessionAffinity"], "None");
    assert_eq!(sp["externalTrafficPolicy"], "Cluster");
    assert_eq!(sp["internalTrafficPolicy"], "Cluster");
    assert_eq!(sp["ipFamilies"], json!(["IPv4"]));
    assert_eq!(sp["ipFamilyPolicy"], "SingleStack");
    assert_eq!(sp["ports"][0]["protocol"], "TCP");
    assert_eq!(sp["ports"][0]["targetPort"], 80);
    let np = sp["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&np), "{np}");
    assert_eq!(svc["status"], json!({"loadBalancer": {}}));
    assert!(svc["metadata"].get("generation").is_none());
    // A re-apply without nodePort keeps it.
    let r = apply(
        &s,
        "/api/v1/namespaces/default/services/np?fieldManager=m",
        &json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "np", "namespace": "default"},
            "spec": {"type": "NodePort", "selector": {"app": "x"},
                "ports": [{"name": "http", "port": 80}]}}),
    );
    assert_eq!(r.body["spec"]["ports"][0]["nodePort"], np, "{}", r.raw);

    // PVC: volumeMode and a Pending status at once.
    let pvc = s
        .create(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "v", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap();
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"], json!({"phase": "Pending"}));

    // CRD: names and conversion defaulted; the status of an unaccepted CRD.
    let crd = s
        .create(
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gadgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "gadgets", "kind": "Gadget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]}}),
        )
        .unwrap();
    assert_eq!(crd["spec"]["names"]["singular"], "gadget");
    assert_eq!(crd["spec"]["names"]["listKind"], "GadgetList");
    assert_eq!(crd["spec"]["conversion"], json!({"strategy": "None"}));
    assert_eq!(
        crd["status"],
        json!({"conditions": null, "acceptedNames": {"plural": "", "kind": ""},
            "storedVersions": ["v1"]})
    );
}

#[test]
fn a_deployment_controller_fills_status_in_the_real_order() {
    let s = TestServer::start(ServerOptions {
        default_ready_after: Duration::from_millis(100),
        ..ServerOptions::default()
    });
    // Open the watch first, then create.
    let rv = s.resource_version();
    let mut w = Watch::open(
        &s,
        &format!("{DEPS}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dd"),
    );
    let r = apply(
        &s,
        &format!("{DEPS}/d?fieldManager=m"),
        &deploy("d", None, 2, "i:1"),
    );
    assert_eq!(r.body["status"], json!({}));
    let seen = objects_until(&mut w, |o| {
        store_condition(o, "Progressing") == Some("NewReplicaSetAvailable")
    });
    let st: Vec<&Value> = seen.iter().map(|o| &o["status"]).collect();
    assert_eq!(st[0], &json!({}), "ADDED as created");
    // The new ReplicaSet's revision and condition come first, before any count.
    assert_eq!(
        seen[1]["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(st[1]["conditions"][0]["reason"], "NewReplicaSetCreated");
    assert!(st[1].get("observedGeneration").is_none());
    // Then the first calculated status: observed, nothing created, all unavailable.
    assert_eq!(st[2]["observedGeneration"], 1);
    assert_eq!(st[2]["unavailableReplicas"], 2);
    assert_eq!(st[2]["terminatingReplicas"], 0);
    assert!(st[2].get("replicas").is_none());
    let types: Vec<&str> = st[2]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Progressing", "Available"]);
    assert_eq!(
        store_condition(&seen[2], "Available"),
        Some("MinimumReplicasUnavailable")
    );
    // Then pods exist, not ready: replicas/updated before any ready count.
    assert_eq!(st[3]["replicas"], 2);
    assert_eq!(st[3]["updatedReplicas"], 2);
    assert_eq!(st[3]["unavailableReplicas"], 2);
    assert!(st[3].get("readyReplicas").is_none());
    assert_eq!(
        store_condition(&seen[3], "Progressing"),
        Some("ReplicaSetUpdated")
    );
    // Finally ready and available, conditions Available then Progressing.
    let last = seen.last().unwrap();
    let ls = &last["status"];
    assert_eq!(ls["readyReplicas"], 2);
    assert_eq!(ls["availableReplicas"], 2);
    assert!(ls.get("unavailableReplicas").is_none());
    let types: Vec<&str> = ls["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Available", "Progressing"]);
    assert_eq!(
        store_condition(last, "Available"),
        Some("MinimumReplicasAvailable")
    );
    // The controller's status updates make it a manager of what it wrote.
    let kcm = last["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kube-controller-manager")
        .unwrap_or_else(|| panic!("{last:#}"));
    assert_eq!(kcm["subresource"], "status");
    assert_eq!(kcm["operation"], "Update");
    let f = &kcm["fieldsV1"];
    assert!(f["f:status"]["f:availableReplicas"].is_object(), "{f}");
    assert!(
        f["f:metadata"]["f:annotations"]["f:deployment.kubernetes.io/revision"].is_object(),
        "{f}"
    );
    // No status ever has ready pods before the pods exist.
    for s in &st {
        if s.get("readyReplicas").is_some() {
            assert!(s.get("updatedReplicas").is_some(), "{s}");
        }
    }

    // An annotation-only change: a new generation, observed, with no new rollout.
    let mut d2 = deploy("d", None, 2, "i:1");
    d2["metadata"]["annotations"] = json!({"team": "a"});
    apply(&s, &format!("{DEPS}/d?fieldManager=m"), &d2);
    let d = eventually(T, "generation 2 observed", || {
        let d = s.get("apps/v1", "Deployment", Some("default"), "d")?;
        (d["status"]["observedGeneration"] == 2).then_some(d)
    });
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    // A new template: revision 2, old pods serve until the new ones are ready.
    let rv = s.resource_version();
    let mut w = Watch::open(
        &s,
        &format!("{DEPS}?watch=true&resourceVersion={rv}&fieldSelector=metadata.name%3Dd"),
    );
    let mut d3 = deploy("d", None, 2, "i:2");
    d3["metadata"]["annotations"] = json!({"team": "a"});
    apply(&s, &format!("{DEPS}/d?fieldManager=m"), &d3);
    let seen = objects_until(&mut w, |o| {
        o["status"]["observedGeneration"] == 3
            && store_condition(o, "Progressing") == Some("NewReplicaSetAvailable")
    });
    assert!(
        seen.iter().any(|o| o["status"]["observedGeneration"] == 3
            && o["status"]["updatedReplicas"] == 2
            && o["status"]["replicas"] == 4
            && o["status"]["availableReplicas"] == 2),
        "a surge with the old pods serving: {seen:#?}"
    );
    assert_eq!(
        seen.last().unwrap()["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
}

/// The objects of a watch's events, up to the first for which `done` holds.
fn objects_until(w: &mut Watch, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + T;
    let mut seen = vec![];
    while std::time::Instant::now() < deadline {
        let Some(e) = w.next() else { break };
        seen.push(e["object"].clone());
        if done(&e["object"]) {
            return seen;
        }
    }
    panic!("never reached the final state: {seen:#?}");
}

fn store_condition<'a>(obj: &'a Value, t: &str) -> Option<&'a str> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)?["reason"]
        .as_str()
}

#[test]
fn watch_list_parameters_are_validated_and_honoured() {
    let s = TestServer::start(ServerOptions::default());
    let cms = "/api/v1/namespaces/default/configmaps";
    s.create(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "default"}}))
        .unwrap();
    let r = get(&s, &format!("{cms}?watch=true&sendInitialEvents=true"));
    assert_eq!(r.status, 422, "{}", r.raw);
    assert!(
        r.body["message"].as_str().unwrap().starts_with(
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden"
        ),
        "{}",
        r.raw
    );
    assert_eq!(
        get(&s, &format!("{cms}?sendInitialEvents=true")).status,
        422
    );
    // With a resourceVersion, a watch-list still starts with the current state.
    let rv = s.resource_version();
    let mut w = Watch::open(
        &s,
        &format!(
            "{cms}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={rv}"
        ),
    );
    let mut added = vec![];
    let b = loop {
        let e = w.next().unwrap();
        if e["type"] != "ADDED" {
            break e;
        }
        assert_eq!(e["object"]["kind"], "ConfigMap");
        added.push(
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    };
    assert!(added.contains(&"a".to_string()), "{added:?}");
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(
        b["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[test]
fn unknown_fields_invalid_selectors_and_namespace_contents() {
    let s = TestServer::start(ServerOptions::default());
    let cms = "/api/v1/namespaces/default/configmaps";
    // Server-side apply builds a typed object: an undeclared field fails it (a 500 without
    // reason, as the real server answers).
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "u", "namespace": "default", "lables": {"a": "b"}},
        "data": {"a": "1"}, "spec": {}});
    let r = apply(&s, &format!("{cms}/u?fieldManager=m"), &bad);
    assert_eq!(r.status, 500, "{}", r.raw);
    assert!(r.body.get("reason").is_none(), "{}", r.raw);
    assert_eq!(
        r.body["message"],
        "failed to create typed patch object (default/u; /v1, Kind=ConfigMap): errors:\n  .spec: field not declared in schema\n  .metadata.lables: field not declared in schema"
    );
    // A create drops it (the real server warns).
    let r = post(&s, cms, &bad);
    assert_eq!(r.status, 201, "{}", r.raw);
    assert!(r.body.get("spec").is_none() && r.body["metadata"].get("lables").is_none());

    // A workload whose selector does not select its template.
    let mut d = deploy("sel", None, 1, "i:1");
    d["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    let r = apply(&s, &format!("{DEPS}/sel?fieldManager=m"), &d);
    assert_eq!(r.status, 422, "{}", r.raw);
    assert_eq!(
        r.body["message"],
        "Deployment.apps \"sel\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"sel\"}: `selector` does not match template `labels`"
    );

    // kube-controller-manager fills a new namespace; kube-apiserver has its Service.
    s.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fresh"}}))
        .unwrap();
    eventually(T, "default ServiceAccount and root CA", || {
        (s.get("v1", "ServiceAccount", Some("fresh"), "default")
            .is_some()
            && s.get("v1", "ConfigMap", Some("fresh"), "kube-root-ca.crt")
                .is_some())
        .then_some(())
    });
    let k = s
        .get("v1", "Service", Some("default"), "kubernetes")
        .unwrap();
    assert_eq!(k["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(get(&s, "/version").body["minor"], "36");
}
