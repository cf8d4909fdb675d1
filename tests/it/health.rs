//! Health gates end to end: which objects a Kustomization waits for (`wait`, `healthChecks`,
//! `healthCheckExprs`, none), timeouts and terminal failures, how fast dependents are released,
//! and the readiness rules per kind, against the test API server's simulated controllers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::util::*;

/// Kustomizations `flux-system/<name>` building `./apps/<name>` with these extra spec fields.
fn fleet(ks: &[(&str, &str)]) -> Fleet {
    let mut f = Fleet::new();
    for (name, spec) in ks {
        f = f.file(
            &format!("clusters/c/{name}.yaml"),
            &kustomization(name, &format!("./apps/{name}"), spec),
        );
    }
    f
}

fn reason(run: &Run, id: &str) -> String {
    run.result(id)["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} has no reason\n{run}"))
        .to_string()
}

fn duration(run: &Run, id: &str) -> f64 {
    run.result(id)["duration"].as_f64().expect("duration")
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// The gates

#[test]
fn wait_true_gates_on_every_object() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/one.yaml",
            &deployment("default", "a-one", Some("200ms")),
        )
        .file(
            "apps/a/two.yaml",
            &deployment("default", "a-two", Some("600ms")),
        )
        .file(
            "apps/a/cm.yaml",
            &config_map("default", "a-cfg", &[("k", "v")]),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    let last_ready = cluster.ready_event("Deployment", "a-two").since_start;
    assert!(cluster.ready_event("Deployment", "a-one").since_start < last_ready);
    let b = cluster.first_write("b-").since_start;
    assert!(
        b > last_ready,
        "b written at {}ms before a-two was ready at {}ms\n{}",
        ms(b),
        ms(last_ready),
        cluster.log_text()
    );
    let mut ready: Vec<String> = run
        .events_named("object-ready")
        .iter()
        .filter(|e| e["id"] == "flux-system/a")
        .map(|e| e["object"].as_str().unwrap().to_string())
        .collect();
    ready.sort();
    assert_eq!(
        ready,
        [
            "ConfigMap default/a-cfg",
            "Deployment default/a-one",
            "Deployment default/a-two"
        ],
        "{run}"
    );
}

#[test]
fn health_checks_gate_on_the_listed_objects_even_outside_the_kustomization() {
    let cluster = Cluster::start();
    // `ext` is not part of the fleet: it exists beforehand and becomes ready after 800ms.
    cluster
        .create(yaml(&deployment("default", "ext", Some("800ms"))))
        .expect("create ext");
    // a's own Deployment never becomes ready but is not listed: it is not checked.
    let f = fleet(&[
        (
            "a",
            "
            healthChecks:
              - apiVersion: apps/v1
                kind: Deployment
                name: ext
                namespace: default
            ",
        ),
        ("b", &depends_on(&["a"])),
    ])
    .file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v")]),
    )
    .file(
        "apps/a/deploy.yaml",
        &deployment("default", "a-web", Some("never")),
    )
    .file(
        "apps/b/cm.yaml",
        &config_map("default", "b-cfg", &[("k", "v")]),
    );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("a"), "ready", "{run}");
    let ext_ready = cluster.ready_event("Deployment", "ext").since_start;
    let b = cluster.first_write("b-").since_start;
    assert!(
        b > ext_ready,
        "b written at {}ms, ext ready at {}ms\n{}",
        ms(b),
        ms(ext_ready),
        cluster.log_text()
    );
    let ready: Vec<Value> = run.events_named("object-ready");
    assert_eq!(ready.len(), 1, "only ext is checked\n{run}");
    assert_eq!(ready[0]["object"], "Deployment default/ext", "{run}");
}

#[test]
fn health_check_exprs_decide_custom_resources_current_and_failed() {
    let cluster = Cluster::start();
    cluster.install_widget_crd();
    let exprs = "
        wait: true
        timeout: 1m
        healthCheckExprs:
          - apiVersion: example.com/v1
            kind: Widget
            current: status.phase == 'Done'
            failed: status.phase == 'Broken'
        ";
    let f = fleet(&[("a", exprs), ("c", exprs), ("b", &depends_on(&["a"]))])
        .file("apps/a/w.yaml", &widget("default", "a-w", None))
        .file("apps/c/w.yaml", &widget("default", "c-w", None))
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        );
    let child = f.spawn_apply(&cluster, &[]);
    let both = cluster.wait_until(Duration::from_secs(20), |s| {
        ["a-w", "c-w"].iter().all(|n| {
            s.get("example.com/v1", "Widget", Some("default"), n)
                .is_some()
        })
    });
    if !both {
        panic!(
            "widgets never written\n{}",
            finish(child, Duration::from_secs(1))
        );
    }
    // Without a phase, neither expression holds: the gates wait. Then the "controller" reports.
    let done_at = SystemTime::now();
    cluster
        .set_status(
            "example.com/v1",
            "Widget",
            Some("default"),
            "a-w",
            json!({"phase": "Done"}),
        )
        .expect("status");
    cluster
        .set_status(
            "example.com/v1",
            "Widget",
            Some("default"),
            "c-w",
            json!({"phase": "Broken", "message": "gear stripped"}),
        )
        .expect("status");
    let run = finish(child, Duration::from_secs(30));
    run.expect_code(1);
    assert_eq!(run.outcome("a"), "ready", "{run}");
    assert_eq!(run.outcome("b"), "ready", "{run}");
    let b = cluster.first_write("b-").wall;
    assert!(b > done_at, "b started before a's Widget was Done\n{run}");
    assert_eq!(run.outcome("c"), "failed", "{run}");
    assert!(reason(&run, "c").contains("Widget default/c-w"), "{run}");
    assert!(
        duration(&run, "c") < 20.0,
        "the failed expression ends the wait before the timeout\n{run}"
    );
}

#[test]
fn without_wait_or_health_checks_a_kustomization_is_ready_once_applied() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", ""), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("never")),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("a"), "ready", "{run}");
    assert_eq!(run.outcome("b"), "ready", "{run}");
    assert!(run.events_named("object-ready").is_empty(), "{run}");
}

// ---------------------------------------------------------------------------------------------
// Timeouts and failures

#[test]
fn timeout_flag_fails_the_gate_listing_the_laggard_and_the_gate_file() {
    let cluster = Cluster::start();
    let f = fleet(&[
        ("a", "wait: true\ntimeout: 10m"),
        ("b", &depends_on(&["a"])),
    ])
    .file(
        "apps/a/slow.yaml",
        &deployment("default", "a-slow", Some("never")),
    )
    .file("apps/a/fast.yaml", &deployment("default", "a-fast", None))
    .file(
        "apps/b/cm.yaml",
        &config_map("default", "b-cfg", &[("k", "v")]),
    );
    let run = f.apply(&cluster, &["--timeout", "1s"]);
    run.expect_code(1);
    assert_eq!(run.outcome("a"), "failed", "{run}");
    let r = reason(&run, "a");
    assert!(r.contains("timeout"), "{r}");
    assert!(r.contains("Deployment default/a-slow: "), "{r}");
    assert!(!r.contains("a-fast"), "only laggards are listed: {r}");
    assert!(r.contains("clusters/c/a.yaml"), "{r}");
    let d = duration(&run, "a");
    assert!((1.0..10.0).contains(&d), "took {d}s\n{run}");
    assert_eq!(run.outcome("b"), "skipped", "{run}");
}

#[test]
fn spec_timeout_sets_the_gate_timeout_as_flux_computes_it() {
    // spec.timeout when set, else interval − 30s; floored at 30s (kustomize-controller's
    // GetTimeout). Read from the `started` events; the objects are ready at once.
    let cluster = Cluster::start();
    let f = fleet(&[
        ("a", "wait: true\ntimeout: 45s"),
        ("b", "wait: true\ntimeout: 1s"),
        ("c", "wait: true"),
    ])
    .file("apps/a/d.yaml", &deployment("default", "a-web", None))
    .file("apps/b/d.yaml", &deployment("default", "b-web", None))
    .file("apps/c/d.yaml", &deployment("default", "c-web", None));
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    let timeout = |id: &str| {
        run.events_named("started")
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} never started\n{run}"))["timeout_seconds"]
            .as_u64()
            .expect("timeout_seconds")
    };
    assert_eq!(timeout("flux-system/a"), 45);
    assert_eq!(timeout("flux-system/b"), 30);
    assert_eq!(timeout("flux-system/c"), 570); // interval 10m − 30s

    // --timeout overrides them all.
    let run = f.apply(&Cluster::start(), &["--timeout", "2m"]);
    run.expect_code(0);
    for e in run.events_named("started") {
        assert_eq!(e["timeout_seconds"], 120, "{run}");
    }
}

#[test]
fn a_terminal_failure_ends_the_wait_well_before_the_timeout() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true\ntimeout: 1m")]).file(
        "apps/a/bad.yaml",
        &deployment("default", "a-bad", Some("fail:300ms")),
    );
    let run = f.apply(&cluster, &[]);
    run.expect_code(1);
    let r = reason(&run, "a");
    assert!(r.contains("Deployment default/a-bad"), "{r}");
    assert!(r.contains("clusters/c/a.yaml"), "{r}");
    let d = duration(&run, "a");
    assert!(d < 10.0, "waited {d}s for a terminal failure\n{run}");
}

#[test]
fn dependents_are_released_the_moment_their_dependency_is_ready() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("500ms")),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    let ready = cluster.ready_event("Deployment", "a-web").since_start;
    // The dependent's first request of any kind (its GET comes before its write).
    let b = cluster.first_write("b-").since_start;
    assert!(b > ready, "{}", cluster.log_text());
    assert!(
        b - ready < Duration::from_secs(1),
        "b released {}ms after a was ready\n{}",
        ms(b - ready),
        cluster.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// Readiness per kind

fn ann(ready_after: &str) -> String {
    format!("  annotations:\n    test.flux-order/ready-after: \"{ready_after}\"\n")
}

fn per_kind_fleet() -> Fleet {
    let a = ann("300ms");
    let kinds: Vec<(&str, &str, String)> = vec![
        (
            "deploy",
            "Deployment",
            deployment("default", "deploy-x", Some("300ms")),
        ),
        (
            "sts",
            "StatefulSet",
            format!(
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: sts-x\n  namespace: default\n{a}spec:\n  serviceName: sts-x\n  replicas: 1\n  selector:\n    matchLabels: {{app: sts-x}}\n  template:\n    metadata:\n      labels: {{app: sts-x}}\n    spec:\n      containers:\n        - name: main\n          image: nginx:1.27\n"
            ),
        ),
        (
            "ds",
            "DaemonSet",
            format!(
                "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: ds-x\n  namespace: default\n{a}spec:\n  selector:\n    matchLabels: {{app: ds-x}}\n  template:\n    metadata:\n      labels: {{app: ds-x}}\n    spec:\n      containers:\n        - name: main\n          image: nginx:1.27\n"
            ),
        ),
        (
            "job",
            "Job",
            format!(
                "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: job-x\n  namespace: default\n{a}spec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: main\n          image: busybox:1\n"
            ),
        ),
        (
            "pvc",
            "PersistentVolumeClaim",
            format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: pvc-x\n  namespace: default\n{a}spec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n"
            ),
        ),
        (
            "lb",
            "Service",
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: lb-x\n  namespace: default\n{a}spec:\n  type: LoadBalancer\n  selector: {{app: x}}\n  ports:\n    - port: 80\n"
            ),
        ),
        ("cr", "Widget", widget("default", "cr-x", Some("300ms"))),
    ];
    let mut f = Fleet::new();
    for (ks, _, manifest) in &kinds {
        f = f
            .file(
                &format!("clusters/c/{ks}.yaml"),
                &kustomization(ks, &format!("./apps/{ks}"), "wait: true\ntimeout: 30s"),
            )
            .file(&format!("apps/{ks}/object.yaml"), manifest);
    }
    f
}

#[test]
fn readiness_rules_per_kind_wait_for_the_simulated_controllers() {
    let cluster = Cluster::start();
    cluster.install_widget_crd();
    let run = per_kind_fleet().apply(&cluster, &[]);
    run.expect_code(0);
    let noticed: Vec<Value> = run.events_named("object-ready");
    for (ks, kind, name) in [
        ("deploy", "Deployment", "deploy-x"),
        ("sts", "StatefulSet", "sts-x"),
        ("ds", "DaemonSet", "ds-x"),
        ("job", "Job", "job-x"),
        ("pvc", "PersistentVolumeClaim", "pvc-x"),
        ("lb", "Service", "lb-x"),
        ("cr", "Widget", "cr-x"),
    ] {
        assert_eq!(run.outcome(ks), "ready", "{ks}\n{run}");
        let label = format!("{kind} default/{name}");
        let seen = noticed
            .iter()
            .find(|e| e["object"] == label.as_str())
            .unwrap_or_else(|| panic!("{label} never reported ready\n{run}"));
        let at = seen["at_ms"].as_u64().expect("at_ms");
        if kind == "Service" {
            // kstatus: a LoadBalancer Service is Current once it has a clusterIP; Flux does not
            // wait for the load balancer's ingress.
            let svc = cluster
                .get("v1", "Service", Some("default"), name)
                .expect("Service");
            assert!(svc["spec"]["clusterIP"].is_string(), "{svc}");
            continue;
        }
        if kind == "Widget" {
            // kstatus (and so Flux): a custom resource without any status is Current. Until its
            // controller writes the first status (a moment after the create, as on a real
            // cluster) the gate may already pass it; the ordering below holds only for kinds
            // whose fresh status the API server itself makes in progress.
            continue;
        }
        let server_ready = wall_ms(cluster.ready_event(kind, name).wall);
        assert!(
            at >= server_ready,
            "{label} reported ready at {at}, before the server made it ready at {server_ready}"
        );
    }
}

#[test]
fn health_gate_polls_when_watches_fail() {
    let cluster = Cluster::start();
    for verb in [Verb::List, Verb::Watch] {
        cluster.inject(Fault::status(
            Matcher::verb(verb).resource("deployments"),
            500,
        ));
    }
    let f = fleet(&[("a", "wait: true\ntimeout: 30s")]).file(
        "apps/a/deploy.yaml",
        &deployment("default", "a-web", Some("300ms")),
    );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("a"), "ready", "{run}");
    let d = duration(&run, "a");
    assert!(d < 10.0, "took {d}s to notice through polling\n{run}");
    assert!(
        cluster.requests().iter().any(|r| r.verb == Verb::Get
            && r.name.as_deref() == Some("a-web")
            && r.since_start > cluster.ready_event("Deployment", "a-web").since_start),
        "no polling GET after the Deployment became ready\n{}",
        cluster.log_text()
    );
}

#[test]
fn a_changed_deployment_is_waited_for_at_its_new_generation() {
    // x starts the Deployment watch of `default` before a applies its changed Deployment: the
    // watch cache still holds a-web's previous, ready generation when a's gate starts.
    let cluster = Cluster::start();
    let f = |image: &str, ready_after: &str| {
        fleet(&[
            ("x", "wait: true"),
            ("a", &format!("wait: true\n{}", depends_on(&["x"]))),
            ("b", &depends_on(&["a"])),
        ])
        .file("apps/x/deploy.yaml", &deployment("default", "x-web", None))
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some(ready_after)).replace("nginx:1.27", image),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        )
    };
    f("nginx:1.27", "0s").apply(&cluster, &[]).expect_code(0);
    cluster.clear_requests();
    let run = f("nginx:1.28", "700ms").apply(&cluster, &["--force-apply"]);
    run.expect_code(0);
    let gen2 = cluster
        .ready_events()
        .into_iter()
        .find(|e| e.object.name == "a-web" && e.generation == 2)
        .unwrap_or_else(|| panic!("a-web generation 2 never ready\n{run}"));
    // b's first request (its GET; its unchanged ConfigMap is not written again).
    let b = cluster
        .requests()
        .into_iter()
        .find(|r| r.name.as_deref() == Some("b-cfg"))
        .unwrap_or_else(|| panic!("b never ran\n{run}"));
    assert!(
        b.since_start > gen2.since_start,
        "b started at {}ms, before a-web's new generation was ready at {}ms\n{run}\n{}",
        ms(b.since_start),
        ms(gen2.since_start),
        cluster.log_text()
    );
    let a_done = run.result("a")["duration"].as_f64().unwrap();
    assert!(a_done >= 0.6, "a ready after {a_done}s\n{run}");
}
