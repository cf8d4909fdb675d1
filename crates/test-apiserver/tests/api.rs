//! HTTP-level behaviour of the test API server.

mod common;

use std::time::Duration;

use common::*;
use flux_order_test_apiserver::{Fault, FaultAction, Matcher, ServerOptions, TestServer, Verb};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

fn server() -> TestServer {
    TestServer::start(ServerOptions::default())
}

fn cm(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": data})
}

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

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DEPS: &str = "/apis/apps/v1/namespaces/default/deployments";

#[test]
fn discovery_documents() {
    let s = server();
    let v = get(&s, "/version");
    assert_eq!(v.status, 200);
    assert_eq!(v.body["major"], "1");
    let apis = get(&s, "/apis");
    assert!(
        apis.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps")
    );
    let apps = get(&s, "/apis/apps/v1");
    let res = apps.body["resources"].as_array().unwrap();
    assert!(res.iter().any(|r| r["name"] == "deployments"
        && r["namespaced"] == true
        && r["shortNames"] == json!(["deploy"])));
    assert!(res.iter().any(|r| r["name"] == "deployments/status"));
    let agg = try_req(
        &s,
        "GET",
        "/apis",
        None,
        "",
        &[(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )],
    )
    .unwrap();
    assert_eq!(agg.body["kind"], "APIGroupDiscoveryList");
    assert!(
        agg.header("content-type")
            .unwrap()
            .contains("as=APIGroupDiscoveryList")
    );
    assert_eq!(get(&s, "/apis/nope.example.com/v1").status, 404);
    let o = get(&s, "/openapi/v3");
    assert!(o.body["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
}

#[test]
fn crud_and_errors_are_status_objects() {
    let s = server();
    let r = post(&s, CMS, &cm("a", json!({"k": "v"})));
    assert_eq!(r.status, 201, "{}", r.raw);
    let m = &r.body["metadata"];
    assert!(
        m["uid"].is_string()
            && m["resourceVersion"].is_string()
            && m["creationTimestamp"].is_string()
    );
    // ConfigMaps have no generation on a real server (their strategy never sets one).
    assert!(m.get("generation").is_none(), "{}", r.raw);
    let again = post(&s, CMS, &cm("a", json!({})));
    assert_eq!(again.status, 409);
    assert_eq!(again.body["reason"], "AlreadyExists");
    let nf = get(&s, &format!("{CMS}/zzz"));
    assert_eq!(nf.status, 404);
    assert_eq!(nf.body["kind"], "Status");
    assert_eq!(nf.body["message"], "configmaps \"zzz\" not found");
    // Missing namespace.
    let r = post(
        &s,
        "/api/v1/namespaces/ghost/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.body["message"], "namespaces \"ghost\" not found");
    // Update with stale resourceVersion.
    let mut stale = cm("a", json!({"k": "2"}));
    stale["metadata"]["resourceVersion"] = json!("1");
    assert_eq!(put(&s, &format!("{CMS}/a"), &stale).status, 409);
    // List with selectors.
    let mut b = cm("b", json!({}));
    b["metadata"]["labels"] = json!({"tier": "web"});
    post(&s, CMS, &b);
    let l = get(&s, &format!("{CMS}?labelSelector=tier%20in%20(web,db)"));
    assert_eq!(l.body["items"].as_array().unwrap().len(), 1);
    let l = get(&s, &format!("{CMS}?fieldSelector=metadata.name%3Da"));
    assert_eq!(l.body["items"][0]["metadata"]["name"], "a");
    // The list says what its items are; the items themselves carry no type, as on a real
    // server (a single GET does).
    assert_eq!(l.body["kind"], "ConfigMapList");
    assert_eq!(l.body["apiVersion"], "v1");
    assert!(l.body["items"][0].get("kind").is_none(), "{}", l.raw);
    assert!(l.body["items"][0].get("apiVersion").is_none(), "{}", l.raw);
    assert_eq!(get(&s, &format!("{CMS}/a")).body["kind"], "ConfigMap");
    // Every namespace also holds the kube-root-ca.crt ConfigMap (4 built-in namespaces).
    let l = get(&s, "/api/v1/configmaps?labelSelector=!tier");
    let names: Vec<&str> = l.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .filter(|n| *n != "kube-root-ca.crt")
        .collect();
    assert_eq!(names, ["a"]);
    // Deleting a ConfigMap returns a Success Status naming it (not the object).
    let d = delete(&s, &format!("{CMS}/a"));
    assert_eq!(d.status, 200);
    assert_eq!(d.body["kind"], "Status", "{}", d.raw);
    assert_eq!(d.body["status"], "Success");
    assert_eq!(d.body["details"]["name"], "a");
    assert_eq!(d.body["details"]["kind"], "configmaps");
    assert!(s.get("v1", "ConfigMap", Some("default"), "a").is_none());
    // Unknown resource.
    assert_eq!(
        get(&s, "/apis/example.com/v1/namespaces/default/widgets").status,
        404
    );
}

#[test]
fn dry_run_stores_nothing_and_emits_nothing() {
    let s = server();
    let rv = s.resource_version();
    let r = post(
        &s,
        &format!("{CMS}?dryRun=All"),
        &cm("d", json!({"a": "1"})),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.body["data"]["a"], "1");
    let r = apply(
        &s,
        &format!("{DEPS}/x?fieldManager=m&dryRun=All"),
        &deploy("x", None, 1, "i"),
    );
    assert_eq!(r.status, 201, "{}", r.raw);
    assert_eq!(r.body["metadata"]["generation"], 1);
    assert!(s.get("v1", "ConfigMap", Some("default"), "d").is_none());
    assert!(
        s.get("apps/v1", "Deployment", Some("default"), "x")
            .is_none()
    );
    post(&s, CMS, &cm("e", json!({"a": "1"})));
    let rv2 = s.resource_version();
    assert_eq!(rv2, rv + 1);
    let r = merge(
        &s,
        &format!("{CMS}/e?dryRun=All"),
        &json!({"data": {"a": "2"}}),
    );
    assert_eq!(r.body["data"]["a"], "2");
    let r = delete(&s, &format!("{CMS}/e?dryRun=All"));
    assert_eq!(r.status, 200);
    assert_eq!(
        s.get("v1", "ConfigMap", Some("default"), "e").unwrap()["data"]["a"],
        "1"
    );
    assert_eq!(s.resource_version(), rv2);
    assert_eq!(s.writes().len(), 1, "only the real create is a write");
    assert!(s.requests().iter().filter(|r| r.dry_run).count() >= 4);
}

#[test]
fn server_side_apply_semantics() {
    let s = server();
    let path = format!("{CMS}/ssa?fieldManager=alice");
    let r1 = apply(&s, &path, &cm("ssa", json!({"a": "1", "b": "2"})));
    assert_eq!(r1.status, 201, "{}", r1.raw);
    let r2 = apply(&s, &path, &cm("ssa", json!({"a": "1", "b": "2"})));
    assert_eq!(r2.status, 200);
    assert_eq!(
        r1.body["metadata"]["resourceVersion"], r2.body["metadata"]["resourceVersion"],
        "no-op apply"
    );
    // Field removed from the applied config disappears.
    let r3 = apply(&s, &path, &cm("ssa", json!({"a": "1"})));
    assert_eq!(r3.body["data"], json!({"a": "1"}));
    // Another manager changing alice's field conflicts.
    let bob = format!("{CMS}/ssa?fieldManager=bob");
    let c = apply(&s, &bob, &cm("ssa", json!({"a": "9"})));
    assert_eq!(c.status, 409);
    assert_eq!(c.body["reason"], "Conflict");
    assert!(
        c.body["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"alice\""),
        "{}",
        c.raw
    );
    assert_eq!(c.body["details"]["causes"][0]["field"], ".data.a");
    // Same value: shared ownership, no conflict.
    assert_eq!(
        apply(&s, &bob, &cm("ssa", json!({"a": "1", "c": "3"}))).status,
        200
    );
    // Force moves the field.
    let f = apply(
        &s,
        &format!("{bob}&force=true"),
        &cm("ssa", json!({"a": "9", "c": "3"})),
    );
    assert_eq!(f.status, 200);
    assert_eq!(f.body["data"], json!({"a": "9", "c": "3"}));
    let mf = f.body["metadata"]["managedFields"].as_array().unwrap();
    assert!(mf.iter().any(|e| e["manager"] == "bob"
        && e["operation"] == "Apply"
        && e["fieldsV1"]["f:data"]["f:a"].is_object()));
    // Labels merge per key across managers.
    let mut l1 = cm("ssa", json!({"a": "9"}));
    l1["metadata"]["labels"] = json!({"x": "1"});
    apply(&s, &format!("{bob}&force=true"), &{
        let mut v = l1.clone();
        v["data"]["c"] = json!("3");
        v
    });
    let mut l2 = cm("ssa", json!({}));
    l2["metadata"]["labels"] = json!({"y": "2"});
    let r = apply(&s, &format!("{CMS}/ssa?fieldManager=carol"), &l2);
    assert_eq!(r.body["metadata"]["labels"], json!({"x": "1", "y": "2"}));
    // Missing fieldManager is rejected.
    assert_eq!(
        apply(&s, &format!("{CMS}/ssa"), &cm("ssa", json!({}))).status,
        400
    );
    // Keyed lists merge by name.
    let d = deploy("kl", Some("never"), 1, "img:1");
    apply(&s, &format!("{DEPS}/kl?fieldManager=a"), &d);
    let side = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kl", "namespace": "default"},
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}}});
    let r = apply(&s, &format!("{DEPS}/kl?fieldManager=b"), &side);
    assert_eq!(
        r.body["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{}",
        r.raw
    );
    // Apply to a status-subresource kind ignores status.
    let mut with_status = deploy("kl", Some("never"), 1, "img:1");
    with_status["status"] = json!({"replicas": 77});
    let r = apply(&s, &format!("{DEPS}/kl?fieldManager=a"), &with_status);
    assert_ne!(r.body["status"]["replicas"], 77);
}

#[test]
fn generation_rules_and_status_subresource() {
    // Controllers far away, so that nothing but this test writes the status.
    let s = TestServer::start(ServerOptions {
        controller_delay: Duration::from_secs(600),
        ..ServerOptions::default()
    });
    let p = format!("{DEPS}/g?fieldManager=m");
    let r = apply(&s, &p, &deploy("g", Some("never"), 1, "i:1"));
    assert_eq!(r.body["metadata"]["generation"], 1);
    let mut meta_only = deploy("g", Some("never"), 1, "i:1");
    meta_only["metadata"]["labels"] = json!({"new": "label"});
    let r = apply(&s, &p, &meta_only);
    assert_eq!(
        r.body["metadata"]["generation"], 1,
        "metadata change keeps generation"
    );
    // A Deployment's annotations are desired state: its strategy bumps generation for them.
    let mut annotated = meta_only.clone();
    annotated["metadata"]["annotations"]["team"] = json!("a");
    let r = apply(&s, &p, &annotated);
    assert_eq!(r.body["metadata"]["generation"], 2, "annotation bumps");
    let r = apply(&s, &p, &deploy("g", Some("never"), 1, "i:2"));
    assert_eq!(
        r.body["metadata"]["generation"], 3,
        "spec change bumps generation"
    );
    // Status writes change only status.
    let r = merge(
        &s,
        &format!("{DEPS}/g/status"),
        &json!({"status": {"replicas": 5}, "spec": {"replicas": 9}}),
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["status"]["replicas"], 5);
    assert_eq!(r.body["spec"]["replicas"], 1);
    assert_eq!(r.body["metadata"]["generation"], 3);
    // Main-resource writes ignore status.
    let r = merge(
        &s,
        &format!("{DEPS}/g"),
        &json!({"status": {"replicas": 6}}),
    );
    assert_eq!(r.body["status"]["replicas"], 5);
    let got = get(&s, &format!("{DEPS}/g/status"));
    assert_eq!(got.body["status"]["replicas"], 5);
    let d = s
        .get("apps/v1", "Deployment", Some("default"), "g")
        .unwrap();
    assert_eq!(d["metadata"]["generation"], 3);
}

#[test]
fn immutable_fields_are_refused() {
    let s = server();
    let job = |img: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "default"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": img}]}}}})
    };
    let p = "/apis/batch/v1/namespaces/default/jobs/j?fieldManager=m";
    assert_eq!(apply(&s, p, &job("a")).status, 201);
    let r = apply(&s, p, &job("b"));
    assert_eq!(r.status, 422, "{}", r.raw);
    assert_eq!(r.body["reason"], "Invalid");
    let msg = r.body["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Job.batch \"j\" is invalid: spec.template: Invalid value: "),
        "{msg}"
    );
    assert!(msg.ends_with("field is immutable"), "{msg}");
    assert_eq!(r.body["details"]["causes"][0]["field"], "spec.template");
    // Dry-run validates too.
    assert_eq!(apply(&s, &format!("{p}&dryRun=All"), &job("b")).status, 422);
    // Deployment selector.
    let dp = format!("{DEPS}/sel?fieldManager=m");
    apply(&s, &dp, &deploy("sel", None, 1, "i"));
    let mut d2 = deploy("sel", None, 1, "i");
    d2["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    assert_eq!(apply(&s, &dp, &d2).status, 422);
    // Service clusterIP is assigned and immutable.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]}});
    let r = apply(
        &s,
        "/api/v1/namespaces/default/services/s?fieldManager=m",
        &svc,
    );
    assert!(
        r.body["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96.")
    );
    let r = merge(
        &s,
        "/api/v1/namespaces/default/services/s",
        &json!({"spec": {"clusterIP": "10.0.0.99"}}),
    );
    assert_eq!(r.status, 422);
    // Re-apply without clusterIP is fine.
    assert_eq!(
        apply(
            &s,
            "/api/v1/namespaces/default/services/s?fieldManager=m",
            &svc
        )
        .status,
        200
    );
    // Immutable ConfigMap.
    let mut icm = cm("imm", json!({"a": "1"}));
    icm["immutable"] = json!(true);
    post(&s, CMS, &icm);
    let r = merge(&s, &format!("{CMS}/imm"), &json!({"data": {"a": "2"}}));
    assert_eq!(r.status, 422, "{}", r.raw);
    // Headless service keeps None.
    let hs = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "h", "namespace": "default"},
        "spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
    let r = post(&s, "/api/v1/namespaces/default/services", &hs);
    assert_eq!(r.body["spec"]["clusterIP"], "None");
}

#[test]
fn watch_streams_events_after_resource_version() {
    let s = server();
    post(&s, CMS, &cm("before", json!({})));
    let list = get(&s, CMS);
    let rv = list.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = Watch::open(&s, &format!("{CMS}?watch=true&resourceVersion={rv}"));
    assert_eq!(w.status, 200);
    post(&s, CMS, &cm("after", json!({"a": "1"})));
    merge(&s, &format!("{CMS}/after"), &json!({"data": {"a": "2"}}));
    delete(&s, &format!("{CMS}/after"));
    let e1 = w.next().unwrap();
    assert_eq!(e1["type"], "ADDED");
    assert_eq!(e1["object"]["metadata"]["name"], "after");
    assert_eq!(w.next().unwrap()["type"], "MODIFIED");
    assert_eq!(w.next().unwrap()["type"], "DELETED");
    // Field-selected watch from "0" gets the current state first; watch=1 works.
    let mut w2 = Watch::open(
        &s,
        &format!("{CMS}?watch=1&fieldSelector=metadata.name%3Dbefore"),
    );
    let e = w2.next().unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("before"))
    );
    // timeoutSeconds ends the stream.
    let mut w3 = Watch::open(
        &s,
        &format!(
            "{CMS}?watch=true&resourceVersion={}&timeoutSeconds=1",
            s.resource_version()
        ),
    );
    assert!(w3.next().is_none());
    // Old resourceVersions still work (full history, never 410).
    let mut w4 = Watch::open(&s, &format!("{CMS}?watch=true&resourceVersion=1"));
    assert_eq!(w4.status, 200);
    assert!(
        w4.next_matching(T, |e| e["object"]["metadata"]["name"] == "before")
            .is_some()
    );
}

#[test]
fn no_op_apply_emits_no_watch_event() {
    let s = server();
    let path = format!("{CMS}/n?fieldManager=m");
    apply(&s, &path, &cm("n", json!({"a": "1"})));
    let rv = s.resource_version();
    let mut w = Watch::open(&s, &format!("{CMS}?watch=true&resourceVersion={rv}"));
    apply(&s, &path, &cm("n", json!({"a": "1"})));
    apply(&s, &path, &cm("n", json!({"a": "2"})));
    let e = w.next().unwrap();
    assert_eq!(
        e["object"]["data"]["a"], "2",
        "first event is the real change"
    );
}

#[test]
fn controllers_make_workloads_ready() {
    let s = TestServer::start(ServerOptions {
        default_ready_after: Duration::from_millis(20),
        ..ServerOptions::default()
    });
    let r = apply(
        &s,
        &format!("{DEPS}/fast?fieldManager=m"),
        &deploy("fast", None, 3, "i"),
    );
    assert_eq!(r.status, 201);
    let ready = eventually(T, "deployment ready", || {
        let d = s.get("apps/v1", "Deployment", Some("default"), "fast")?;
        (d["status"]["availableReplicas"] == 3).then_some(d)
    });
    assert_eq!(ready["status"]["observedGeneration"], 1);
    assert_eq!(ready["status"]["updatedReplicas"], 3);
    let conds = ready["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
    );
    assert!(
        s.ready_events()
            .iter()
            .any(|e| e.object.name == "fast" && !e.failed)
    );
    // Fail.
    apply(
        &s,
        &format!("{DEPS}/bad?fieldManager=m"),
        &deploy("bad", Some("fail"), 1, "i"),
    );
    eventually(T, "deployment failed", || {
        let d = s.get("apps/v1", "Deployment", Some("default"), "bad")?;
        d["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| {
                c["type"] == "Progressing"
                    && c["status"] == "False"
                    && c["reason"] == "ProgressDeadlineExceeded"
            })
            .then_some(())
    });
    // Never: in progress with observedGeneration set.
    apply(
        &s,
        &format!("{DEPS}/slow?fieldManager=m"),
        &deploy("slow", Some("never"), 2, "i"),
    );
    let d = eventually(T, "slow observed", || {
        let d = s.get("apps/v1", "Deployment", Some("default"), "slow")?;
        (d["status"]["updatedReplicas"] == 2).then_some(d)
    });
    assert_eq!(d["status"]["observedGeneration"], 1);
    assert!(d["status"].get("availableReplicas").is_none());
    // Job completes; a failing one fails.
    let job = |n: &str, a: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": n, "namespace": "default", "annotations": {"test.flux-order/ready-after": a}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}})
    };
    post(
        &s,
        "/apis/batch/v1/namespaces/default/jobs",
        &job("ok", "10ms"),
    );
    post(
        &s,
        "/apis/batch/v1/namespaces/default/jobs",
        &job("ko", "fail"),
    );
    eventually(T, "jobs finished", || {
        let ok = s.get("batch/v1", "Job", Some("default"), "ok")?;
        let ko = s.get("batch/v1", "Job", Some("default"), "ko")?;
        let has = |o: &Value, t: &str| {
            o["status"]["conditions"]
                .as_array()
                .is_some_and(|a| a.iter().any(|c| c["type"] == t && c["status"] == "True"))
        };
        (has(&ok, "Complete") && has(&ko, "Failed")).then_some(())
    });
    // Spec change restarts: generation 2 observed after ready.
    apply(
        &s,
        &format!("{DEPS}/fast?fieldManager=m"),
        &deploy("fast", None, 3, "i:2"),
    );
    eventually(T, "gen 2 ready", || {
        let d = s.get("apps/v1", "Deployment", Some("default"), "fast")?;
        (d["status"]["observedGeneration"] == 2 && d["status"]["availableReplicas"] == 3)
            .then_some(())
    });
    // Pod and PVC.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default",
        "annotations": {"test.flux-order/ready-after": "fail"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    post(&s, "/api/v1/namespaces/default/pods", &pod);
    eventually(T, "pod crashloop", || {
        let p = s.get("v1", "Pod", Some("default"), "p")?;
        (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff")
            .then_some(())
    });
    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "v", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    post(
        &s,
        "/api/v1/namespaces/default/persistentvolumeclaims",
        &pvc,
    );
    eventually(T, "pvc bound", || {
        (s.get("v1", "PersistentVolumeClaim", Some("default"), "v")?["status"]["phase"] == "Bound")
            .then_some(())
    });
}

#[test]
fn crds_establish_and_serve_custom_resources() {
    let s = TestServer::start(ServerOptions {
        crd_establish_delay: Duration::from_millis(50),
        ..ServerOptions::default()
    });
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object"}}},
                {"name": "v2", "served": true, "storage": false}]}});
    let r = apply(
        &s,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com?fieldManager=m",
        &crd,
    );
    assert_eq!(r.status, 201, "{}", r.raw);
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": "default", "annotations": {"test.flux-order/ready-after": "10ms"}},
        "spec": {"size": 1}});
    let path = "/apis/example.com/v1/namespaces/default/widgets/w?fieldManager=m";
    // Before Established: 404 like a real server.
    let early = apply(&s, path, &w);
    if early.status == 404 {
        assert_eq!(get(&s, "/apis/example.com/v1").status, 404);
    }
    eventually(T, "crd established", || {
        (get(&s, "/apis/example.com/v1").status == 200).then_some(())
    });
    let c = s
        .get(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        )
        .unwrap();
    let conds = c["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "NamesAccepted" && c["status"] == "True")
    );
    assert_eq!(
        get(&s, "/apis/example.com/v2").status,
        200,
        "all served versions"
    );
    let r = apply(&s, path, &w);
    assert!(r.status == 200 || r.status == 201, "{}", r.raw);
    eventually(T, "widget ready", || {
        let o = s.get("example.com/v1", "Widget", Some("default"), "w")?;
        o["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True" && c["observedGeneration"] == 1)
            .then_some(())
    });
    // Served as v2 too.
    assert_eq!(
        get(&s, "/apis/example.com/v2/namespaces/default/widgets/w").body["apiVersion"],
        "example.com/v2"
    );
    // Un-annotated CRs get no status.
    let mut plain = w.clone();
    plain["metadata"] = json!({"name": "plain", "namespace": "default"});
    apply(
        &s,
        "/apis/example.com/v1/namespaces/default/widgets/plain?fieldManager=m",
        &plain,
    );
    assert!(
        s.get("example.com/v1", "Widget", Some("default"), "plain")
            .unwrap()
            .get("status")
            .is_none()
    );
    // Deleting the CRD: it terminates (cleanup finalizer, Terminating condition), then it and
    // its resources are gone.
    let d = delete(
        &s,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
    );
    assert_eq!(d.status, 200, "{}", d.raw);
    assert!(
        d.body["metadata"]["deletionTimestamp"].is_string(),
        "{}",
        d.raw
    );
    assert_eq!(
        d.body["metadata"]["finalizers"],
        json!(["customresourcecleanup.apiextensions.k8s.io"])
    );
    eventually(T, "CRD and widgets gone", || {
        (get(&s, "/apis/example.com/v1/namespaces/default/widgets/w").status == 404
            && get(
                &s,
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
            )
            .status
                == 404)
            .then_some(())
    });
}

#[test]
fn delayed_deletion_and_finalizers() {
    let s = server();
    let mut c = cm("slow", json!({}));
    c["metadata"]["annotations"] = json!({"test.flux-order/delete-after": "50ms"});
    post(&s, CMS, &c);
    let r = delete(&s, &format!("{CMS}/slow"));
    assert!(r.body["metadata"]["deletionTimestamp"].is_string());
    assert!(s.get("v1", "ConfigMap", Some("default"), "slow").is_some());
    eventually(T, "deleted", || {
        s.get("v1", "ConfigMap", Some("default"), "slow")
            .is_none()
            .then_some(())
    });
    let mut f = cm("fin", json!({}));
    f["metadata"]["finalizers"] = json!(["example.com/x"]);
    post(&s, CMS, &f);
    delete(&s, &format!("{CMS}/fin"));
    assert!(s.get("v1", "ConfigMap", Some("default"), "fin").is_some());
    let r = req(
        &s,
        "PATCH",
        &format!("{CMS}/fin"),
        Some("application/json-patch+json"),
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    );
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(s.get("v1", "ConfigMap", Some("default"), "fin").is_none());
    // Namespace deletion removes its contents.
    post(
        &s,
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}}),
    );
    post(
        &s,
        "/api/v1/namespaces/gone/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
    );
    // Namespace deletion: Terminating (its `kubernetes` finalizer) and refusing new content,
    // then it and its contents are gone.
    let d = delete(&s, "/api/v1/namespaces/gone");
    assert_eq!(d.status, 200, "{}", d.raw);
    assert_eq!(d.body["status"]["phase"], "Terminating");
    let r = post(
        &s,
        "/api/v1/namespaces/gone/configmaps",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}}),
    );
    assert_eq!(r.status, 403, "{}", r.raw);
    eventually(T, "namespace gone", || {
        (s.get("v1", "ConfigMap", Some("gone"), "x").is_none()
            && s.get("v1", "Namespace", None, "gone").is_none())
        .then_some(())
    });
}

#[test]
fn fault_injection() {
    let s = server();
    // 503 on the first two creates of configmaps.
    let id =
        s.inject(Fault::status(Matcher::verb(Verb::Create).resource("configmaps"), 503).first(2));
    assert_eq!(post(&s, CMS, &cm("f", json!({}))).status, 503);
    assert_eq!(post(&s, CMS, &cm("f", json!({}))).status, 503);
    assert_eq!(post(&s, CMS, &cm("f", json!({}))).status, 201);
    assert_eq!(s.fault_hits(id), 2);
    // 429 with Retry-After on the 2nd apply to a name.
    s.inject(
        Fault::new(
            Matcher::verb(Verb::Apply).name_contains("rl"),
            FaultAction::Status {
                code: 429,
                retry_after: Some(2),
            },
        )
        .nth(2),
    );
    let p = format!("{CMS}/rl?fieldManager=m");
    assert_eq!(apply(&s, &p, &cm("rl", json!({}))).status, 201);
    let r = apply(&s, &p, &cm("rl", json!({})));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.body["kind"], "Status");
    assert_eq!(r.body["code"], 429);
    assert_eq!(apply(&s, &p, &cm("rl", json!({}))).status, 200);
    // Dropped connection: no response at all.
    s.inject(Fault::drop_connection(
        Matcher::verb(Verb::Get).name_contains("drop"),
    ));
    assert!(try_req(&s, "GET", &format!("{CMS}/drop"), None, "", &[]).is_none());
    s.clear_faults();
    assert_eq!(get(&s, &format!("{CMS}/drop")).status, 404);
    // Dry-run only matcher.
    s.inject(Fault::status(Matcher::any().dry_run(true), 500));
    assert_eq!(
        post(&s, &format!("{CMS}?dryRun=All"), &cm("z", json!({}))).status,
        500
    );
    assert_eq!(post(&s, CMS, &cm("z", json!({}))).status, 201);
    s.clear_faults();
    // Latency.
    s.inject(Fault::latency(
        Matcher::verb(Verb::List),
        Duration::from_millis(100),
    ));
    let t = std::time::Instant::now();
    get(&s, CMS);
    assert!(t.elapsed() >= Duration::from_millis(100));
    s.clear_faults();
    // Fraction is deterministic for a seed.
    let run = |seed| {
        let s = server();
        s.inject(Fault::status(Matcher::verb(Verb::Get), 500).fraction(0.5, seed));
        (0..40)
            .map(|_| get(&s, &format!("{CMS}/x")).status)
            .collect::<Vec<_>>()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    let fails = a.iter().filter(|c| **c == 500).count();
    assert!((8..=32).contains(&fails), "{fails}");
    // The log records faults and attributes.
    let log = s.requests();
    let l = log.iter().find(|r| r.status == 429).unwrap();
    assert!(l.fault);
    assert_eq!(l.field_manager.as_deref(), Some("m"));
    assert_eq!(l.kind, "ConfigMap");
    assert_eq!(l.namespace.as_deref(), Some("default"));
    assert_eq!(l.name.as_deref(), Some("rl"));
    assert!(
        log.iter().any(|r| r.status == 0 && r.fault),
        "dropped request logged"
    );
    s.clear_requests();
    assert!(s.requests().is_empty());
}

#[test]
fn preload_and_set_status_hooks() {
    let s = server();
    let objs = s.preload_yaml("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: pre\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: pre\ndata:\n  k: v\n").unwrap();
    assert_eq!(objs.len(), 2);
    let mine = |s: &TestServer| {
        s.list("v1", "ConfigMap")
            .into_iter()
            .filter(|c| c["metadata"]["name"] != "kube-root-ca.crt")
            .count()
    };
    assert_eq!(mine(&s), 1);
    s.apply(deploy("h", Some("never"), 1, "i"), "tester")
        .unwrap();
    let st = s
        .set_status(
            "apps/v1",
            "Deployment",
            Some("default"),
            "h",
            json!({"observedGeneration": 1, "replicas": 1}),
        )
        .unwrap();
    assert_eq!(st["status"]["replicas"], 1);
    s.delete("v1", "ConfigMap", Some("pre"), "c").unwrap();
    assert_eq!(mine(&s), 0);
    assert!(s.writes().is_empty(), "hooks are not HTTP requests");
}

#[test]
fn many_objects_stay_fast() {
    let s = server();
    let t = std::time::Instant::now();
    for i in 0..2000 {
        s.create(cm(&format!("bulk-{i}"), json!({"i": i.to_string()})))
            .unwrap();
    }
    let l = get(&s, CMS);
    // Plus kube-root-ca.crt.
    assert_eq!(l.body["items"].as_array().unwrap().len(), 2001);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// LIST with `limit`/`continue` as kube-apiserver: pages in name order, an opaque token, the
/// later pages read from the first page's snapshot, `remainingItemCount` only without a
/// selector, 400 for a bad token, 410 Expired (with a token to go on) after a compaction.
#[test]
fn list_pagination_follows_the_real_server() {
    let s = server();
    for i in 0..7 {
        let mut c = cm(&format!("p-{i}"), json!({"i": i.to_string()}));
        if i % 2 == 0 {
            c["metadata"]["labels"] = json!({"even": "yes"});
        }
        assert_eq!(post(&s, CMS, &c).status, 201);
    }
    let names = |r: &Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .filter(|n| n.starts_with("p-"))
            .collect()
    };
    // The namespace also holds kube-root-ca.crt (first in key order).
    let first = get(&s, &format!("{CMS}?limit=3"));
    assert_eq!(first.status, 200, "{}", first.raw);
    assert_eq!(names(&first), ["p-0", "p-1"], "{}", first.raw);
    let meta = &first.body["metadata"];
    let token = meta["continue"].as_str().expect("continue").to_string();
    assert_eq!(meta["remainingItemCount"], 5, "{}", first.raw);
    let snapshot = meta["resourceVersion"].as_str().unwrap().to_string();

    // Changes after the first page do not show on the next ones.
    assert_eq!(delete(&s, &format!("{CMS}/p-3")).status, 200);
    assert_eq!(
        merge(
            &s,
            &format!("{CMS}/p-4"),
            &json!({"data": {"i": "changed"}})
        )
        .status,
        200
    );
    assert_eq!(post(&s, CMS, &cm("p-35", json!({}))).status, 201);

    let second = get(&s, &format!("{CMS}?limit=3&continue={token}"));
    assert_eq!(second.status, 200, "{}", second.raw);
    assert_eq!(names(&second), ["p-2", "p-3", "p-4"], "{}", second.raw);
    assert_eq!(second.body["items"][2]["data"]["i"], "4", "{}", second.raw);
    assert_eq!(
        second.body["metadata"]["resourceVersion"],
        snapshot.as_str()
    );
    assert_eq!(second.body["metadata"]["remainingItemCount"], 2);
    let token2 = second.body["metadata"]["continue"].as_str().unwrap();
    let last = get(&s, &format!("{CMS}?limit=3&continue={token2}"));
    assert_eq!(names(&last), ["p-5", "p-6"], "{}", last.raw);
    assert!(
        last.body["metadata"].get("continue").is_none(),
        "{}",
        last.raw
    );
    assert!(last.body["metadata"].get("remainingItemCount").is_none());

    // A selector: pages count matching objects; no remainingItemCount.
    let even = get(&s, &format!("{CMS}?labelSelector=even%3Dyes&limit=2"));
    assert_eq!(names(&even), ["p-0", "p-2"], "{}", even.raw);
    assert!(even.body["metadata"]["continue"].is_string());
    assert!(even.body["metadata"].get("remainingItemCount").is_none());

    // Without limit: everything, no continue.
    let all = get(&s, CMS);
    assert_eq!(names(&all).len(), 7, "{}", all.raw);
    assert!(all.body["metadata"].get("continue").is_none());

    // Bad tokens, as the real server answers them.
    let bad = get(&s, &format!("{CMS}?limit=3&continue=garbage!"));
    assert_eq!(bad.status, 400, "{}", bad.raw);
    assert_eq!(
        bad.body["message"],
        "invalid continue token: continue key is not valid"
    );
    let with_rv = get(
        &s,
        &format!("{CMS}?limit=3&continue={token}&resourceVersion={snapshot}"),
    );
    assert_eq!(with_rv.status, 400, "{}", with_rv.raw);
    assert_eq!(
        with_rv.body["message"],
        "specifying resource version is not allowed when using continue"
    );

    // After a compaction the old snapshot is gone: 410 with a token to go on at the latest.
    s.compact();
    let gone = get(&s, &format!("{CMS}?limit=3&continue={token}"));
    assert_eq!(gone.status, 410, "{}", gone.raw);
    assert_eq!(gone.body["reason"], "Expired");
    let on = gone.body["metadata"]["continue"]
        .as_str()
        .expect("continue");
    let latest = get(&s, &format!("{CMS}?limit=3&continue={on}"));
    assert_eq!(latest.status, 200, "{}", latest.raw);
    assert_eq!(names(&latest), ["p-2", "p-35", "p-4"], "{}", latest.raw);
    assert_eq!(latest.body["items"][2]["data"]["i"], "changed");
}
