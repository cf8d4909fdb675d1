//! The same end-to-end scenarios against both API servers: the project's test API server (fast,
//! simulated controllers) and a real kube-apiserver + etcd + kube-controller-manager with the
//! kubelet stand-in (`crates/test-cluster`). Each scenario is written once over [`Tier`]; the
//! [`both!`] macro makes a `fake` and a `real` test of it. Where the two disagree, the real one
//! is right and the test API server gets fixed.
//!
//! Every scenario names its namespaces through [`Tier::ns`] (prefixed with the session's user on
//! the real tier, which one control plane serves to every test of the run), and counts writes
//! from the request log (test API server) or the real audit log (real tier, filtered by the
//! session's own user).

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// One read of a resource: `get` (one object), `list` or `watch`.
#[derive(Debug, Clone)]
pub struct Read {
    /// `get`, `list`, `watch`.
    pub verb: String,
    /// Resource plural (with `/subresource`).
    pub resource: String,
    /// Namespace, empty for cluster-wide.
    pub namespace: String,
    /// Object name (gets).
    pub name: String,
    /// The query string.
    pub query: String,
}

impl std::fmt::Display for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}/{} ?{}",
            self.verb, self.resource, self.namespace, self.name, self.query
        )
    }
}

/// Where a scenario runs.
pub enum Tier {
    /// The test API server.
    Fake(Cluster),
    /// A session of the shared real control plane; `mark` counts requests already seen.
    Real(flux_order_test_cluster::Session, Cell<usize>),
}

impl Kube for Tier {
    fn kubeconfig(&self) -> &Path {
        match self {
            Tier::Fake(c) => c.kubeconfig(),
            Tier::Real(s, _) => &s.kubeconfig,
        }
    }
}

/// One effective write (2xx, not a dry run): `verb resource ns/name`.
#[derive(Debug, Clone)]
pub struct Write {
    /// `create`, `patch`, `update`, `delete`, …
    pub verb: String,
    /// Object name.
    pub name: String,
    /// For failure messages.
    pub line: String,
}

impl Tier {
    /// The test API server (workloads ready at once unless annotated).
    pub fn fake() -> Tier {
        Tier::Fake(Cluster::start())
    }

    /// A new session of the real control plane.
    pub fn real() -> Tier {
        let s = flux_order_test_cluster::shared().session();
        Tier::Real(s, Cell::new(0))
    }

    /// A namespace name unique to this test on the shared real control plane.
    pub fn ns(&self, base: &str) -> String {
        match self {
            Tier::Fake(_) => base.to_string(),
            Tier::Real(s, _) => format!("{}-{base}", s.user),
        }
    }

    /// Effective writes since the last [`Tier::mark`].
    pub fn writes(&self) -> Vec<Write> {
        match self {
            Tier::Fake(c) => c
                .writes()
                .into_iter()
                .map(|r| Write {
                    // The audit log calls a server-side apply a patch.
                    verb: match r.verb.as_str() {
                        "apply" => "patch",
                        v => v,
                    }
                    .to_string(),
                    name: r.name.clone().unwrap_or_default(),
                    line: format!(
                        "{} {} {}/{}",
                        r.verb,
                        r.kind,
                        r.namespace.as_deref().unwrap_or(""),
                        r.name.as_deref().unwrap_or("")
                    ),
                })
                .collect(),
            Tier::Real(s, mark) => s
                .requests()
                .into_iter()
                .skip(mark.get())
                .filter(|r| r.is_write())
                .map(|r| Write {
                    verb: r.verb.clone(),
                    name: r.name.clone().unwrap_or_default(),
                    line: r.to_string(),
                })
                .collect(),
        }
    }

    /// Reads of resources (get, list, watch) since the last [`Tier::mark`], in arrival order.
    pub fn reads(&self) -> Vec<Read> {
        match self {
            Tier::Fake(c) => c
                .requests()
                .into_iter()
                .filter(|r| {
                    !r.resource.is_empty() && matches!(r.verb.as_str(), "get" | "list" | "watch")
                })
                .map(|r| Read {
                    verb: r.verb.as_str().to_string(),
                    resource: r.resource.clone(),
                    namespace: r.namespace.clone().unwrap_or_default(),
                    name: r.name.clone().unwrap_or_default(),
                    query: r.query.clone(),
                })
                .collect(),
            Tier::Real(s, mark) => s
                .requests()
                .into_iter()
                .skip(mark.get())
                .filter(|r| {
                    !r.resource.is_empty() && matches!(r.verb.as_str(), "get" | "list" | "watch")
                })
                .map(|r| Read {
                    verb: r.verb.clone(),
                    resource: r.resource.clone(),
                    namespace: r.namespace.clone().unwrap_or_default(),
                    name: r.name.clone().unwrap_or_default(),
                    query: r
                        .uri
                        .split_once('?')
                        .map(|(_, q)| q.to_string())
                        .unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Forget the requests so far: [`Tier::writes`] counts from here.
    pub fn mark(&self) {
        match self {
            Tier::Fake(c) => c.clear_requests(),
            Tier::Real(s, mark) => mark.set(s.requests().len()),
        }
    }

    /// The live object, through `kubectl get -o json` with this tier's kubeconfig.
    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["get", resource, name, "-o", "json", "--show-managed-fields"])
            .args(if ns.is_empty() {
                vec![]
            } else {
                vec!["-n", ns]
            })
            .output()
            .expect("run kubectl");
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Runs kubectl with this tier's kubeconfig and returns stdout (panics on failure).
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a flux-order command that needs no fleet (`status`, `delete`).
    pub fn run(&self, subcommand: &str, args: &[&str]) -> Run {
        let out = flux_order()
            .arg(subcommand)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .timeout(Duration::from_secs(90))
            .output()
            .expect("run the binary");
        Run::from_output(&out)
    }

    /// Polls `f` until it holds or `timeout` passes.
    pub fn eventually(&self, timeout: Duration, mut f: impl FnMut(&Tier) -> bool) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if f(self) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Makes `mod <scenario> { fake, real }` tests of a scenario `fn(Tier)`.
macro_rules! both {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn fake() {
                    super::$scenario(super::Tier::fake())
                }
                #[test]
                fn real() {
                    super::$scenario(super::Tier::real())
                }
            }
        )*
    };
}

both!(
    a_deployment_that_never_becomes_ready_fails_its_gate_and_skips_dependents,
    wait_releases_dependents_only_once_every_object_is_ready,
    health_checks_gate_on_the_named_objects_only,
    cel_health_expressions_decide_for_custom_resources,
    a_job_must_complete_before_its_kustomization_is_ready,
    an_unchanged_second_apply_writes_nothing_and_diff_reports_nothing,
    diff_shows_a_changed_object_and_writes_nothing,
    a_removed_manifest_is_pruned,
    status_reports_readiness_from_the_live_objects,
    status_and_an_unchanged_apply_read_objects_by_list_never_one_by_one,
    delete_removes_the_objects_and_the_inventory,
    an_interrupt_during_the_wait_exits_130_with_the_inventory_written,
    kustomize_controller_applying_the_same_build_changes_nothing,
    ready_expr_replaces_the_ready_check_of_its_dependency,
    a_custom_resource_is_retried_until_its_crd_exists_and_its_dependent_runs_after_it,
    a_health_check_that_times_out_is_retried_and_passes,
    an_invalid_object_fails_at_once_without_retry,
    a_secret_value_echoed_by_the_server_is_masked_in_output_inventory_and_events,
    a_partly_broken_fleet_is_refused_whole_then_applied_around_its_failures,
    a_sops_encrypted_secret_is_applied_decrypted_with_the_key_from_the_cluster,
    sops_encrypted_values_of_a_config_map_never_print_but_are_applied,
    a_broken_helm_release_is_refused_then_left_out_with_its_dependents,
);

// ---------------------------------------------------------------------------------------------
// Fleets

/// A Kustomization `<ns>/<name>` on the bootstrap source, building `./apps/<name>`.
fn ks(ns: &str, name: &str, spec: &str) -> String {
    kustomization(name, &format!("./apps/{name}"), spec)
        .replace(
            "  namespace: flux-system\nspec:",
            &format!("  namespace: {ns}\nspec:"),
        )
        .replace(
            "    name: flux-system\n",
            "    name: flux-system\n    namespace: flux-system\n",
        )
}

/// A fleet of Kustomizations in namespace `ks_ns` (one file each under clusters/c).
fn fleet(ks_ns: &str, items: &[(&str, &str)]) -> Fleet {
    let mut f = Fleet::new();
    for (name, spec) in items {
        f = f.file(&format!("clusters/c/{name}.yaml"), &ks(ks_ns, name, spec));
    }
    f
}

fn outcome(run: &Run, id: &str) -> String {
    run.outcome(id)
}

fn reason(run: &Run, id: &str) -> String {
    run.result(id)["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn job(ns: &str, name: &str, ready_after: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n    test.flux-order/ready-after: \"{ready_after}\"\nspec:\n  backoffLimit: 0\n  template:\n    metadata:\n      annotations:\n        test.flux-order/ready-after: \"{ready_after}\"\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: main\n          image: busybox:1.36\n"
    )
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// The bug the test API server hid: a Deployment whose pod never becomes ready must fail the
/// `wait: true` gate on timeout, naming the Deployment, and skip the dependent — on the first
/// apply and on the incremental second one.
fn a_deployment_that_never_becomes_ready_fails_its_gate_and_skips_dependents(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("stuck"));
    let f = fleet(
        &ks_ns,
        &[
            ("stuck", "wait: true\ntimeout: 20s"),
            ("child", &depends_on(&["stuck"])),
        ],
    )
    .file("apps/stuck/ns.yaml", &namespace(&app))
    .file(
        "apps/stuck/deploy.yaml",
        &deployment(&app, "web", Some("never")),
    )
    .file(
        "apps/child/cm.yaml",
        &config_map(&app, "child-cfg", &[("k", "v")]),
    );
    let stuck = format!("{ks_ns}/stuck");
    let child = format!("{ks_ns}/child");
    for attempt in ["first", "second (incremental)"] {
        let run = f.apply(&t, &["--timeout", "4s"]);
        run.expect_code(1);
        assert_eq!(outcome(&run, &stuck), "failed", "{attempt} apply\n{run}");
        let why = reason(&run, &stuck);
        assert!(
            why.contains("Deployment") && why.contains("/web"),
            "{attempt}: {why}\n{run}"
        );
        assert_eq!(outcome(&run, &child), "skipped", "{attempt} apply\n{run}");
    }
    assert!(
        t.writes().iter().all(|w| w.name != "child-cfg"),
        "the dependent was applied: {:?}",
        t.writes()
    );
    // `status NAMESPACE/NAME` tells why, like `kubectl describe`.
    let run = t.run("status", &[&stuck, "-o", "json"]);
    run.expect_code(0);
    let d: Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"));
    assert_eq!(d["lastOutcome"], "HealthCheckFailed", "{}", pretty(&d));
    assert_eq!(d["ready"], false, "{}", pretty(&d));
    assert_eq!(d["attempts"], 1, "{}", pretty(&d));
    let not_ready = d["notReady"].to_string();
    assert!(
        not_ready.contains("Deployment") && not_ready.contains("web"),
        "{}",
        pretty(&d)
    );
    let reasons: Vec<&str> = d["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["reason"].as_str()).collect())
        .unwrap_or_default();
    assert!(reasons.contains(&"HealthCheckFailed"), "{}", pretty(&d));
    // The skipped dependent was never applied: no inventory, and status says so.
    let run = t.run("status", &[&child]);
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("never applied"), "{run}");
    let story = kubectl_events(&t, &ks_ns);
    assert!(story.contains("DependencyNotReady"), "{story}");
}

fn wait_releases_dependents_only_once_every_object_is_ready(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let f = fleet(&ks_ns, &[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file("apps/a/ns.yaml", &namespace(&app))
        .file("apps/a/one.yaml", &deployment(&app, "one", Some("300ms")))
        .file("apps/a/two.yaml", &deployment(&app, "two", Some("1500ms")))
        .file("apps/b/cm.yaml", &config_map(&app, "b-cfg", &[("k", "v")]));
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    let a = format!("{ks_ns}/a");
    let ready: Vec<String> = run
        .events_named("object-ready")
        .iter()
        .filter(|e| e["id"] == a.as_str())
        .map(|e| e["object"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(ready.iter().any(|o| o.contains("two")), "{run}");
    // b starts only after a is ready: its event order says so.
    let events = run.events();
    let pos = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred);
    let a_ready = pos(&|e| e["event"] == "finished" && e["id"] == a.as_str())
        .unwrap_or_else(|| panic!("no ready event for {a}\n{run}"));
    let b_started = pos(&|e| e["event"] == "started" && e["id"] == format!("{ks_ns}/b").as_str())
        .unwrap_or_else(|| panic!("b never started\n{run}"));
    assert!(b_started > a_ready, "{run}");
    let live = t.get("deployment", &app, "two").expect("deployment two");
    assert_eq!(live["status"]["readyReplicas"], 1, "{}", pretty(&live));
}

fn health_checks_gate_on_the_named_objects_only(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let spec = format!(
        "healthChecks:\n  - apiVersion: apps/v1\n    kind: Deployment\n    name: good\n    namespace: {app}"
    );
    let f = fleet(&ks_ns, &[("a", &spec)])
        .file("apps/a/ns.yaml", &namespace(&app))
        .file("apps/a/good.yaml", &deployment(&app, "good", Some("200ms")))
        .file("apps/a/bad.yaml", &deployment(&app, "bad", Some("never")));
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    assert_eq!(outcome(&run, &format!("{ks_ns}/a")), "ready", "{run}");

    // Naming the never-ready one instead fails on the timeout and names it.
    let spec = spec.replace("name: good", "name: bad");
    let f2 = fleet(&ks_ns, &[("a", &spec)]);
    for (rel, body) in [
        ("apps/a/ns.yaml", namespace(&app)),
        ("apps/a/good.yaml", deployment(&app, "good", Some("200ms"))),
        ("apps/a/bad.yaml", deployment(&app, "bad", Some("never"))),
    ] {
        std::fs::create_dir_all(f2.root().join("apps/a")).expect("mkdir");
        std::fs::write(f2.root().join(rel), body).expect("write");
    }
    let run = f2.apply(&t, &["--timeout", "4s"]);
    run.expect_code(1);
    let why = reason(&run, &format!("{ks_ns}/a"));
    assert!(why.contains("bad"), "{why}\n{run}");
    assert!(!why.contains("good"), "{why}\n{run}");
}

fn cel_health_expressions_decide_for_custom_resources(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    // One CRD per test on the real tier: CRDs are cluster-wide.
    let group = format!("{}.example.com", t.ns("g"));
    let crd = widget_crd().replace("example.com", &group);
    let exprs = format!(
        "healthCheckExprs:\n  - apiVersion: {group}/v1\n    kind: Widget\n    current: \"spec.size >= 1\"\n    failed: \"spec.size < 0\""
    );
    let f = fleet(
        &ks_ns,
        &[
            ("crds", ""),
            (
                "a",
                &format!("wait: true\n{exprs}\n{}", depends_on(&["crds"])),
            ),
        ],
    )
    .file("apps/crds/crd.yaml", &crd)
    .file("apps/a/ns.yaml", &namespace(&app))
    .file(
        "apps/a/w.yaml",
        &widget(&app, "w", None).replace("example.com", &group),
    );
    let run = f.apply(&t, &["--timeout", "10s"]);
    run.expect_code(0);
    assert_eq!(outcome(&run, &format!("{ks_ns}/a")), "ready", "{run}");

    // size -1: the failed expression ends the wait at once.
    std::fs::write(
        f.root().join("apps/a/w.yaml"),
        widget(&app, "w", None)
            .replace("example.com", &group)
            .replace("size: 1", "size: -1"),
    )
    .expect("write");
    let start = std::time::Instant::now();
    let run = f.apply(&t, &["--timeout", "20s"]);
    run.expect_code(1);
    assert_eq!(outcome(&run, &format!("{ks_ns}/a")), "failed", "{run}");
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "waited for the timeout\n{run}"
    );
    let cleanup = format!("widgets.{group}");
    t.kubectl(&["delete", "crd", &cleanup, "--wait=false"]);
}

fn a_job_must_complete_before_its_kustomization_is_ready(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let f = fleet(
        &ks_ns,
        &[
            ("migrate", "wait: true\ntimeout: 30s"),
            ("app", &depends_on(&["migrate"])),
        ],
    )
    .file("apps/migrate/ns.yaml", &namespace(&app))
    .file("apps/migrate/job.yaml", &job(&app, "migrate", "800ms"))
    .file(
        "apps/app/cm.yaml",
        &config_map(&app, "after", &[("k", "v")]),
    );
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    let live = t.get("job", &app, "migrate").expect("job");
    let complete = live["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    });
    assert!(
        complete,
        "the Job was not complete when its dependent ran: {}",
        pretty(&live)
    );
    assert_eq!(outcome(&run, &format!("{ks_ns}/app")), "ready", "{run}");

    // A failing Job fails the gate at once (a terminal failure, no timeout wait).
    let (ks_ns2, app2) = (t.ns("fleet2"), t.ns("app2"));
    let f = fleet(&ks_ns2, &[("migrate", "wait: true\ntimeout: 60s")])
        .file("apps/migrate/ns.yaml", &namespace(&app2))
        .file("apps/migrate/job.yaml", &job(&app2, "migrate", "fail"));
    let start = std::time::Instant::now();
    let run = f.apply(&t, &[]);
    run.expect_code(1);
    assert!(
        start.elapsed() < Duration::from_secs(45),
        "waited for the timeout\n{run}"
    );
    assert_eq!(
        outcome(&run, &format!("{ks_ns2}/migrate")),
        "failed",
        "{run}"
    );
}

fn small_fleet(t: &Tier) -> (Fleet, String, String) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let f = fleet(&ks_ns, &[("a", "wait: true")])
        .file("apps/a/ns.yaml", &namespace(&app))
        .file("apps/a/deploy.yaml", &deployment(&app, "web", Some("100ms")))
        .file("apps/a/cm.yaml", &config_map(&app, "cfg", &[("k", "v")]))
        .file(
            "apps/a/svc.yaml",
            &format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: {app}\nspec:\n  selector: {{app: web}}\n  ports:\n    - port: 80\n"),
        );
    (f, ks_ns, app)
}

fn an_unchanged_second_apply_writes_nothing_and_diff_reports_nothing(t: Tier) {
    let (f, ks_ns, _) = small_fleet(&t);
    f.apply(&t, &[]).expect_code(0);
    t.mark();
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    assert_eq!(outcome(&run, &format!("{ks_ns}/a")), "unchanged", "{run}");
    let writes = t.writes();
    assert!(
        writes.is_empty(),
        "an unchanged apply wrote: {:#?}",
        writes.iter().map(|w| &w.line).collect::<Vec<_>>()
    );
    let run = f.diff(&t, &[]);
    run.expect_code(0);
    let objects: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.trim_start().starts_with('►') && !l.trim().is_empty())
        .collect();
    assert_eq!(objects.len(), 4, "{run}");
    assert!(
        objects.iter().all(|l| l.trim_end().ends_with(" unchanged")),
        "{run}"
    );
    assert!(t.writes().is_empty(), "diff wrote: {:?}", t.writes());
}

fn diff_shows_a_changed_object_and_writes_nothing(t: Tier) {
    let (f, _, app) = small_fleet(&t);
    f.apply(&t, &[]).expect_code(0);
    std::fs::write(
        f.root().join("apps/a/cm.yaml"),
        config_map(&app, "cfg", &[("k", "changed")]),
    )
    .expect("write");
    t.mark();
    let run = f.diff(&t, &[]);
    run.expect_code(1);
    assert!(run.stdout.contains("changed"), "{run}");
    assert!(run.stdout.contains("cfg"), "{run}");
    assert!(t.writes().is_empty(), "diff wrote: {:?}", t.writes());
    let live = t.get("configmap", &app, "cfg").expect("cm");
    assert_eq!(live["data"]["k"], "v");
}

fn a_removed_manifest_is_pruned(t: Tier) {
    let (f, ks_ns, app) = small_fleet(&t);
    f.apply(&t, &[]).expect_code(0);
    assert!(t.get("configmap", &app, "cfg").is_some());
    f.remove("apps/a/cm.yaml");
    t.mark();
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    assert!(
        t.eventually(Duration::from_secs(20), |t| t
            .get("configmap", &app, "cfg")
            .is_none()),
        "cfg was not pruned\n{run}"
    );
    let deletes: Vec<String> = t
        .writes()
        .into_iter()
        .filter(|w| w.verb == "delete")
        .map(|w| w.name)
        .collect();
    assert_eq!(deletes, vec!["cfg".to_string()], "{run}");
    assert!(t.get("deployment", &app, "web").is_some());
    let story = kubectl_events(&t, &ks_ns);
    assert!(
        story.contains(&format!("Pruned 1 deleted: ConfigMap/{app}/cfg deleted")),
        "{story}"
    );
}

fn status_reports_readiness_from_the_live_objects(t: Tier) {
    let (f, ks_ns, app) = small_fleet(&t);
    f.apply(&t, &[]).expect_code(0);
    let id = format!("{ks_ns}/a");
    let rows = |t: &Tier| -> Vec<Value> {
        let run = t.run("status", &["-n", &ks_ns, "-o", "json"]);
        run.expect_code(0);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
    };
    let row = |rows: &[Value]| {
        rows.iter()
            .find(|r| r["id"] == id.as_str())
            .cloned()
            .expect("row")
    };
    let r = row(&rows(&t));
    assert_eq!(r["ready"], true, "{}", pretty(&r));
    assert_eq!(r["objects"], 4, "{}", pretty(&r));

    // Replace the deployment's pods with never-ready ones: status must see it (kind from the
    // resource read, not from the object).
    t.kubectl(&[
        "-n", &app, "patch", "deployment", "web", "--type", "merge", "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"test.flux-order/ready-after":"never"}}}},"metadata":{"annotations":{"test.flux-order/ready-after":"never"}}}"#,
    ]);
    let turned = t.eventually(Duration::from_secs(20), |t| row(&rows(t))["ready"] == false);
    assert!(
        turned,
        "status still says ready: {}",
        pretty(&row(&rows(&t)))
    );
    let r = row(&rows(&t));
    assert!(
        r["message"].as_str().unwrap_or("").contains("web"),
        "{}",
        pretty(&r)
    );
}

/// `status` reads each (kind, namespace) of the inventories with one LIST (filtered by Flux's
/// owner label; listed again unfiltered when an object is missing from it) and never GETs an
/// object; an unchanged apply reads through its watchers' paginated lists, never object by
/// object.
fn status_and_an_unchanged_apply_read_objects_by_list_never_one_by_one(t: Tier) {
    let (ks_ns, one, two) = (t.ns("fleet"), t.ns("one"), t.ns("two"));
    let f = fleet(&ks_ns, &[("a", ""), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/objects.yaml",
            &[
                namespace(&one),
                namespace(&two),
                config_map(&one, "a-one", &[("k", "v")]),
                config_map(&two, "a-two", &[("k", "v")]),
                deployment(&one, "a-web", None),
            ]
            .join("---\n"),
        )
        .file(
            "apps/b/objects.yaml",
            &[
                config_map(&one, "b-one", &[("k", "v")]),
                config_map(&two, "b-two", &[("k", "v")]),
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: b-sec\n  namespace: NS\nstringData:\n  k: v\n"
                    .replace("NS", &two),
            ]
            .join("---\n"),
        );
    f.apply(&t, &[]).expect_code(0);
    let names = ["a-one", "a-two", "a-web", "b-one", "b-two", "b-sec"];
    let gets = |reads: &[Read]| -> Vec<String> {
        reads
            .iter()
            .filter(|r| {
                r.verb == "get"
                    && (names.contains(&r.name.as_str()) || r.name == one || r.name == two)
            })
            .map(|r| r.to_string())
            .collect()
    };
    let lists_of = |reads: &[Read], resource: &str, ns: &str| -> Vec<Read> {
        reads
            .iter()
            .filter(|r| r.verb == "list" && r.resource == resource && r.namespace == ns)
            .cloned()
            .collect()
    };
    let show = |reads: &[Read]| reads.iter().map(|r| format!("{r}\n")).collect::<String>();

    // An unchanged apply: no object read one by one; the watchers list in pages of 100.
    t.mark();
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    assert_eq!(outcome(&run, &format!("{ks_ns}/a")), "unchanged", "{run}");
    let reads = t.reads();
    assert!(
        gets(&reads).is_empty(),
        "per-object GETs:\n{}",
        show(&reads)
    );
    let cms = lists_of(&reads, "configmaps", &one);
    assert!(
        !cms.is_empty(),
        "no list of configmaps in {one}:\n{}",
        show(&reads)
    );
    assert!(
        reads
            .iter()
            // The inventories are read by one labelled LIST of their own (pages of 500).
            .filter(|r| {
                r.verb == "list" && r.namespace != ks_ns && !r.query.contains("labelSelector")
            })
            .all(|r| r.query.contains("limit=100")),
        "a watcher listed without its page size (100):\n{}",
        show(&reads)
    );

    // status: one LIST per (kind, namespace), with the owner label, and no GET.
    let status = |t: &Tier| -> Vec<Value> {
        let run = t.run("status", &["-n", &ks_ns, "-o", "json"]);
        run.expect_code(0);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"))
    };
    t.mark();
    let rows = status(&t);
    assert_eq!(rows.len(), 2, "{}", pretty(&rows));
    assert!(rows.iter().all(|r| r["ready"] == true), "{}", pretty(&rows));
    let reads = t.reads();
    assert!(
        gets(&reads).is_empty(),
        "per-object GETs:\n{}",
        show(&reads)
    );
    for (resource, ns) in [
        ("configmaps", one.as_str()),
        ("configmaps", two.as_str()),
        ("deployments", one.as_str()),
        ("secrets", two.as_str()),
        ("namespaces", ""),
    ] {
        let lists = lists_of(&reads, resource, ns);
        assert_eq!(lists.len(), 1, "{resource} in {ns:?}:\n{}", show(&reads));
        assert!(
            lists[0].query.contains("limit=500")
                && lists[0]
                    .query
                    .contains("labelSelector=kustomize.toolkit.fluxcd.io%2Fname"),
            "{}",
            lists[0]
        );
    }

    // A missing object: its group is listed again without the selector, and reported as before.
    t.kubectl(&["-n", &two, "delete", "configmap", "b-two"]);
    t.mark();
    let rows = status(&t);
    let b = rows
        .iter()
        .find(|r| r["id"] == format!("{ks_ns}/b"))
        .expect("row b");
    assert_eq!(
        b["message"],
        format!("2/3 objects ready; ConfigMap/{two}/b-two: not found"),
        "{}",
        pretty(&rows)
    );
    let reads = t.reads();
    assert!(
        gets(&reads).is_empty(),
        "per-object GETs:\n{}",
        show(&reads)
    );
    assert_eq!(
        lists_of(&reads, "configmaps", &two).len(),
        2,
        "{}",
        show(&reads)
    );
    assert_eq!(
        lists_of(&reads, "configmaps", &one).len(),
        1,
        "{}",
        show(&reads)
    );
}

fn delete_removes_the_objects_and_the_inventory(t: Tier) {
    let (f, ks_ns, app) = small_fleet(&t);
    f.apply(&t, &[]).expect_code(0);
    let run = f.run("delete", &t, &["--yes"]);
    run.expect_code(0);
    assert!(
        t.eventually(Duration::from_secs(30), |t| t
            .get("configmap", &app, "cfg")
            .is_none()
            && t.get("deployment", &app, "web").is_none()),
        "{run}"
    );
    assert!(
        t.get("configmap", &ks_ns, "flux-order-a").is_none(),
        "the inventory is left\n{run}"
    );
}

fn an_interrupt_during_the_wait_exits_130_with_the_inventory_written(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let f = fleet(&ks_ns, &[("a", "wait: true\ntimeout: 2m")])
        .file("apps/a/ns.yaml", &namespace(&app))
        .file("apps/a/cm.yaml", &config_map(&app, "cfg", &[("k", "v")]))
        .file(
            "apps/a/deploy.yaml",
            &deployment(&app, "web", Some("never")),
        );
    let child = f.spawn_apply(&t, &[]);
    let applied = t.eventually(Duration::from_secs(30), |t| {
        t.get("deployment", &app, "web").is_some()
    });
    assert!(applied, "the deployment was never applied");
    std::thread::sleep(Duration::from_millis(500));
    sigint(&child);
    let run = finish(child, Duration::from_secs(20));
    run.expect_code(130);
    let inv = t
        .get("configmap", &ks_ns, "flux-order-a")
        .expect("inventory written");
    let text = inv["data"].to_string();
    assert!(
        text.contains("web") && text.contains("cfg"),
        "{}",
        pretty(&inv)
    );
    assert_ne!(inv["data"]["ready"], "true", "{}", pretty(&inv));
}

fn kustomize_controller_applying_the_same_build_changes_nothing(t: Tier) {
    let (f, ks_ns, _) = small_fleet(&t);
    f.apply(&t, &[]).expect_code(0);
    let built = f.build(&format!("{ks_ns}/a"), &[]);
    assert_eq!(built.len(), 4, "{}", pretty(&built));
    for o in &built {
        let kind = o["kind"].as_str().expect("kind");
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("");
        let name = o["metadata"]["name"].as_str().expect("name");
        let before = t
            .get(kind, ns, name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"));
        let labels = &before["metadata"]["labels"];
        assert_eq!(
            labels["kustomize.toolkit.fluxcd.io/name"],
            "a",
            "{}",
            pretty(&before)
        );
        assert_eq!(
            labels["kustomize.toolkit.fluxcd.io/namespace"],
            ks_ns.as_str()
        );
        let managers = before["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            managers
                .iter()
                .any(|m| m["manager"] == "kustomize-controller" && m["operation"] == "Apply"),
            "{kind} {name}: {}",
            pretty(&managers)
        );
        // As kustomize-controller applies: server-side, its field manager, force.
        let file = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(file.path(), serde_json::to_string(o).expect("json")).expect("write");
        t.kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            "kustomize-controller",
            "-f",
            &file.path().to_string_lossy(),
        ]);
        let after = t.get(kind, ns, name).expect("still there");
        assert_eq!(
            before["metadata"]["resourceVersion"],
            after["metadata"]["resourceVersion"],
            "kustomize-controller's apply changed {kind} {name}\nbefore: {}\nafter: {}",
            pretty(&before),
            pretty(&after)
        );
    }
}

/// `dependsOn[].readyExpr` replaces Flux's Ready check for that dependency: a true expression
/// over `self` and `dep` lets a dependent of a failed Kustomization start; a false one over a
/// Ready dependency skips the dependent, saying so; plain dependents keep the Ready check.
fn ready_expr_replaces_the_ready_check_of_its_dependency(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let dep = |name: &str, expr: &str| {
        format!("dependsOn:\n  - name: {name}\n    readyExpr: \"{expr}\"\n")
    };
    let f = fleet(
        &ks_ns,
        &[
            ("base", ""),
            ("broken", &format!("wait: true\ntimeout: 30s\n{}", depends_on(&["base"]))),
            (
                "tolerant",
                &dep("broken", "dep.metadata.name == 'broken' && self.metadata.name == 'tolerant' && dep.status.conditions.exists(c, c.type == 'Ready' && c.status == 'False')"),
            ),
            ("strict", &depends_on(&["broken"])),
            ("picky", &dep("base", "dep.status.lastAppliedRevision == 'never'")),
            (
                "ok",
                &dep("base", "dep.status.conditions.filter(c, c.type == 'Ready').all(c, c.status == 'True') && dep.metadata.generation == dep.status.observedGeneration"),
            ),
        ],
    )
    .file("apps/base/ns.yaml", &namespace(&app))
    .file("apps/broken/job.yaml", &job(&app, "broken", "fail"))
    .file("apps/tolerant/cm.yaml", &config_map(&app, "tolerant-cfg", &[("k", "v")]))
    .file("apps/strict/cm.yaml", &config_map(&app, "strict-cfg", &[("k", "v")]))
    .file("apps/picky/cm.yaml", &config_map(&app, "picky-cfg", &[("k", "v")]))
    .file("apps/ok/cm.yaml", &config_map(&app, "ok-cfg", &[("k", "v")]));
    let run = f.apply(&t, &[]);
    run.expect_code(1);
    let id = |n: &str| format!("{ks_ns}/{n}");
    assert_eq!(outcome(&run, &id("broken")), "failed", "{run}");
    assert_eq!(outcome(&run, &id("tolerant")), "ready", "{run}");
    assert_eq!(outcome(&run, &id("strict")), "skipped", "{run}");
    assert_eq!(outcome(&run, &id("ok")), "ready", "{run}");
    assert_eq!(outcome(&run, &id("picky")), "skipped", "{run}");
    let why = run.result(&id("picky")).to_string();
    assert!(why.contains("readyExpr is false"), "{why}\n{run}");
    assert!(t.get("configmap", &app, "tolerant-cfg").is_some(), "{run}");
    assert!(t.get("configmap", &app, "picky-cfg").is_none(), "{run}");
    assert!(t.get("configmap", &app, "strict-cfg").is_none(), "{run}");
}

// ---------------------------------------------------------------------------------------------
// Retries and events

/// A fleet where `cr` holds a custom resource whose CRD another branch (`slow` → `crds`)
/// establishes a few seconds in; `after` depends on `cr`. `prefix` keeps parts of one test apart.
fn crd_later_fleet(t: &Tier, prefix: &str) -> (Fleet, String, String) {
    let (ks_ns, app) = (
        t.ns(&format!("{prefix}fleet")),
        t.ns(&format!("{prefix}app")),
    );
    // CRDs are cluster-wide: one group per test and part.
    let group = format!("{}.example.com", t.ns(&format!("{prefix}g")));
    let f = fleet(
        &ks_ns,
        &[
            ("slow", "wait: true"),
            ("crds", &depends_on(&["slow"])),
            ("cr", "retryInterval: 2s"),
            ("after", &depends_on(&["cr"])),
        ],
    )
    .file("apps/slow/ns.yaml", &namespace(&app))
    .file(
        "apps/slow/deploy.yaml",
        &deployment(&app, "slow", Some("3s")),
    )
    .file(
        "apps/crds/crd.yaml",
        &widget_crd().replace("example.com", &group),
    )
    .file(
        "apps/cr/w.yaml",
        &widget(&app, "w", None).replace("example.com", &group),
    )
    .file(
        "apps/after/cm.yaml",
        &config_map(&app, "after", &[("k", "v")]),
    );
    (f, ks_ns, group)
}

fn attempts(run: &Run, id: &str) -> u64 {
    run.result(id)["attempts"].as_u64().unwrap_or(0)
}

/// `kubectl get events -n NS --sort-by=.lastTimestamp` rows (REASON and OBJECT columns present).
fn kubectl_events(t: &Tier, ns: &str) -> String {
    t.kubectl(&["get", "events", "-n", ns, "--sort-by=.lastTimestamp"])
}

fn a_custom_resource_is_retried_until_its_crd_exists_and_its_dependent_runs_after_it(t: Tier) {
    // With --retry-for 0, today's behaviour: one attempt, the dependent skipped.
    let (f, ks_ns, group) = crd_later_fleet(&t, "once-");
    let run = f.apply(&t, &["--retry-for", "0"]);
    run.expect_code(1);
    let (cr, after) = (format!("{ks_ns}/cr"), format!("{ks_ns}/after"));
    assert_eq!(outcome(&run, &cr), "failed", "{run}");
    assert_eq!(attempts(&run, &cr), 1, "{run}");
    assert_eq!(outcome(&run, &after), "skipped", "{run}");
    assert!(run.events_named("retrying").is_empty(), "{run}");
    t.kubectl(&["delete", "crd", &format!("widgets.{group}"), "--wait=false"]);

    // With a budget: retried (waits 1s, then 2s: retryInterval caps the doubling) until the
    // CRD is there; the dependent starts only after.
    let (f, ks_ns, group) = crd_later_fleet(&t, "retry-");
    let run = f.apply(&t, &["--retry-for", "1m"]);
    run.expect_code(0);
    let (cr, after) = (format!("{ks_ns}/cr"), format!("{ks_ns}/after"));
    assert_eq!(outcome(&run, &cr), "ready", "{run}");
    assert!(attempts(&run, &cr) >= 2, "{run}");
    let retries: Vec<Value> = run
        .events_named("retrying")
        .into_iter()
        .filter(|e| e["id"] == cr.as_str())
        .collect();
    assert_eq!(retries.len() as u64, attempts(&run, &cr) - 1, "{run}");
    let delays: Vec<f64> = retries
        .iter()
        .map(|e| e["delay_seconds"].as_f64().unwrap_or(-1.0))
        .collect();
    assert_eq!(delays[0], 1.0, "{run}");
    assert!(
        delays.iter().skip(1).all(|d| *d == 2.0),
        "{delays:?}\n{run}"
    );
    assert!(
        retries[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("Widget"),
        "{run}"
    );
    let events = run.events();
    let pos = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred);
    let cr_done = pos(&|e| e["event"] == "finished" && e["id"] == cr.as_str()).expect("cr done");
    let after_started =
        pos(&|e| e["event"] == "started" && e["id"] == after.as_str()).expect("after started");
    assert!(after_started > cr_done, "{run}");
    assert_eq!(outcome(&run, &after), "ready", "{run}");
    assert!(
        t.get(&format!("widgets.{group}"), &t.ns("retry-app"), "w")
            .is_some()
    );

    // The story, through the real kubectl.
    let story = kubectl_events(&t, &ks_ns);
    for want in [
        "ProgressingWithRetry",
        "ReconciliationSucceeded",
        "configmap/flux-order-cr",
        "configmap/flux-order-after",
        "Progressing",
    ] {
        assert!(story.contains(want), "no {want} in\n{story}");
    }
    let status = t.run("status", &[&cr]);
    status.expect_code(0);
    for want in [
        "ReconciliationSucceeded",
        "Attempts:",
        "ProgressingWithRetry",
    ] {
        assert!(status.stdout.contains(want), "no {want} in\n{status}");
    }
    t.kubectl(&["delete", "crd", &format!("widgets.{group}"), "--wait=false"]);
}

fn a_health_check_that_times_out_is_retried_and_passes(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let f = fleet(&ks_ns, &[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file("apps/a/ns.yaml", &namespace(&app))
        .file("apps/a/web.yaml", &deployment(&app, "web", Some("3s")))
        .file("apps/b/cm.yaml", &config_map(&app, "b", &[("k", "v")]));
    let run = f.apply(&t, &["--timeout", "1s", "--retry-for", "1m"]);
    run.expect_code(0);
    let (a, b) = (format!("{ks_ns}/a"), format!("{ks_ns}/b"));
    assert_eq!(outcome(&run, &a), "ready", "{run}");
    assert!(attempts(&run, &a) >= 2, "{run}");
    // Counted once over the attempts: created by this run, though re-applied unchanged.
    assert_eq!(run.result(&a)["objects"]["created"], 2, "{run}");
    let first = &run.events_named("retrying")[0];
    assert_eq!(first["flux_reason"], "HealthCheckFailed", "{run}");
    assert_eq!(outcome(&run, &b), "ready", "{run}");
    let story = kubectl_events(&t, &ks_ns);
    assert!(story.contains("Health check passed"), "{story}");
}

fn an_invalid_object_fails_at_once_without_retry(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let f = fleet(&ks_ns, &[("bad", ""), ("dep", &depends_on(&["bad"]))])
        .file("apps/bad/ns.yaml", &namespace(&app))
        .file(
            "apps/bad/cm.yaml",
            &config_map(&app, "Not_Valid", &[("k", "v")]),
        )
        .file("apps/dep/cm.yaml", &config_map(&app, "dep", &[("k", "v")]));
    let run = f.apply(&t, &["--retry-for", "5m"]);
    run.expect_code(1);
    let (bad, dep) = (format!("{ks_ns}/bad"), format!("{ks_ns}/dep"));
    assert_eq!(outcome(&run, &bad), "failed", "{run}");
    assert_eq!(attempts(&run, &bad), 1, "{run}");
    assert!(run.events_named("retrying").is_empty(), "{run}");
    assert!(reason(&run, &bad).contains("not retried"), "{run}");
    assert_eq!(run.result(&bad)["flux_reason"], "ReconciliationFailed");
    assert_eq!(outcome(&run, &dep), "skipped", "{run}");
    let story = kubectl_events(&t, &ks_ns);
    for want in ["ReconciliationFailed", "DependencyNotReady", "Warning"] {
        assert!(story.contains(want), "no {want} in\n{story}");
    }
}

// ---------------------------------------------------------------------------------------------
// HelmReleases

/// A fleet whose Kustomization `infra` (wait: true) holds a Namespace and a HelmRelease `web` of
/// the fixture chart `plain` (kept in the fleet repo, referenced through the fleet's own
/// GitRepository), and `after` depends on `infra`.
fn helm_fleet(t: &Tier, values: &str) -> (Fleet, String, String) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("happ"));
    let f = fleet(
        &ks_ns,
        &[("infra", "wait: true"), ("after", &depends_on(&["infra"]))],
    )
    .file("apps/infra/ns.yaml", &namespace(&app))
    .file(
        "apps/after/cm.yaml",
        &config_map(&app, "after", &[("k", "v")]),
    );
    copy_dir(&fixtures("charts/plain"), &f.root().join("charts/plain"));
    write_release(&f, &app, values);
    (f, ks_ns, app)
}

fn write_release(f: &Fleet, app: &str, values: &str) {
    let values: String = values.lines().map(|l| format!("    {l}\n")).collect();
    std::fs::write(
        f.root().join("apps/infra/release.yaml"),
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: {app}\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: ./charts/plain\n      sourceRef:\n        kind: GitRepository\n        name: flux-system\n        namespace: flux-system\n  values:\n{values}"
        ),
    )
    .expect("write release");
}

/// `helm` (the real Helm 4 the test-deps script installs) against this tier.
fn helm(t: &Tier, args: &[&str]) -> String {
    let out = std::process::Command::new("helm")
        .args(args)
        .arg("--kubeconfig")
        .arg(t.kubeconfig())
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("flux-order-it-helm"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("flux-order-it-helm"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("flux-order-it-helm"),
        )
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn a_helm_release_installs_gates_its_kustomization_and_is_visible_to_helm(t: Tier) {
    let (f, ks_ns, app) = helm_fleet(&t, "message: from-fleet\nreadyAfter: 400ms");
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    let hr = format!("HelmRelease/{app}/web");
    assert_eq!(outcome(&run, &hr), "ready", "{run}");
    assert_eq!(outcome(&run, &format!("{ks_ns}/infra")), "ready", "{run}");
    // infra (wait: true) is Ready only once its HelmRelease is: `after` starts after that.
    let events = run.events();
    let pos = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred);
    let hr_done =
        pos(&|e| e["event"] == "finished" && e["id"] == hr.as_str()).expect("hr finished");
    let after_started =
        pos(&|e| e["event"] == "started" && e["id"] == format!("{ks_ns}/after").as_str())
            .unwrap_or_else(|| panic!("after never started\n{run}"));
    assert!(after_started > hr_done, "{run}");

    // What helm-controller would have left: labels, annotations, field manager.
    let cm = t.get("configmap", &app, "web-config").expect("web-config");
    assert_eq!(cm["data"]["message"], "from-fleet", "{}", pretty(&cm));
    let labels = &cm["metadata"]["labels"];
    assert_eq!(labels["helm.toolkit.fluxcd.io/name"], "web");
    assert_eq!(labels["helm.toolkit.fluxcd.io/namespace"], app.as_str());
    assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm");
    assert_eq!(
        cm["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "web"
    );
    assert_eq!(
        cm["metadata"]["annotations"]["meta.helm.sh/release-namespace"],
        app.as_str()
    );
    let managers = cm["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m["manager"] == "helm-controller" && m["operation"] == "Apply"),
        "{}",
        pretty(&managers)
    );
    let deploy = t.get("deployment", &app, "web-web").expect("deployment");
    assert_eq!(deploy["status"]["readyReplicas"], 1, "{}", pretty(&deploy));

    // The real helm reads the release storage.
    let list: Value =
        serde_json::from_str(&helm(&t, &["list", "-n", &app, "-o", "json"])).expect("json");
    assert_eq!(list[0]["name"], "web", "{list}");
    assert_eq!(list[0]["status"], "deployed", "{list}");
    assert_eq!(list[0]["chart"], "plain-1.2.3", "{list}");
    assert_eq!(list[0]["revision"], "1", "{list}");
    let values: Value = serde_json::from_str(&helm(
        &t,
        &["get", "values", "web", "-n", &app, "-o", "json"],
    ))
    .expect("json");
    assert_eq!(values["message"], "from-fleet", "{values}");
    let manifest = helm(&t, &["get", "manifest", "web", "-n", &app]);
    assert!(
        manifest.contains("web-config") && manifest.contains("helm.toolkit.fluxcd.io/name"),
        "{manifest}"
    );

    // Unchanged: a second apply writes nothing.
    t.mark();
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    assert_eq!(outcome(&run, &hr), "unchanged", "{run}");
    let writes = t.writes();
    assert!(
        writes.is_empty(),
        "an unchanged apply wrote: {:#?}",
        writes.iter().map(|w| &w.line).collect::<Vec<_>>()
    );
}

fn a_changed_helm_release_is_upgraded_and_objects_that_left_the_chart_are_deleted(t: Tier) {
    let (f, _, app) = helm_fleet(&t, "extraConfig: true");
    f.apply(&t, &[]).expect_code(0);
    assert!(t.get("configmap", &app, "web-extra").is_some());
    // diff shows what the upgrade would change, object by object, and writes nothing.
    let run = f.diff(&t, &[]);
    run.expect_code(0);
    assert!(
        run.stdout.contains(&format!("HelmRelease {app}/web")),
        "{run}"
    );
    assert!(run.stdout.contains("web-config unchanged"), "{run}");
    write_release(&f, &app, "extraConfig: false\nmessage: second");
    t.mark();
    let run = f.diff(&t, &[]);
    run.expect_code(1);
    assert!(run.stdout.contains("web-config configured"), "{run}");
    assert!(run.stdout.contains("second"), "{run}");
    assert!(t.writes().is_empty(), "diff wrote: {:?}", t.writes());
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    let hr = format!("HelmRelease/{app}/web");
    assert_eq!(outcome(&run, &hr), "ready", "{run}");
    assert!(
        t.eventually(Duration::from_secs(20), |t| t
            .get("configmap", &app, "web-extra")
            .is_none()),
        "web-extra left the chart but is still there\n{run}"
    );
    let cm = t.get("configmap", &app, "web-config").expect("web-config");
    assert_eq!(cm["data"]["message"], "second");
    assert_eq!(
        cm["data"]["revision"],
        "2",
        "rendered as an upgrade: {}",
        pretty(&cm)
    );
    let history: Value =
        serde_json::from_str(&helm(&t, &["history", "web", "-n", &app, "-o", "json"]))
            .expect("json");
    let statuses: Vec<&str> = history
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, vec!["superseded", "deployed"], "{history}");

    // status lists the release with its chart, revision and readiness.
    let status = t.run("status", &["-n", &app, "-o", "json"]);
    status.expect_code(0);
    let rows: Value =
        serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}\n{status}"));
    let row = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["id"] == hr.as_str()).cloned())
        .unwrap_or_else(|| panic!("no {hr} row\n{status}"));
    assert_eq!(row["ready"], true, "{}", pretty(&row));
    assert_eq!(row["revision"], "plain-1.2.3", "{}", pretty(&row));
    assert!(
        row["message"]
            .as_str()
            .unwrap_or("")
            .contains("revision 2 deployed"),
        "{}",
        pretty(&row)
    );

    // delete uninstalls it: its objects and Helm's storage go, before its Kustomization's own.
    let run = f.run("delete", &t, &["--yes"]);
    run.expect_code(0);
    assert!(run.stdout.contains("release web uninstalled"), "{run}");
    assert!(
        t.eventually(Duration::from_secs(30), |t| t
            .get("configmap", &app, "web-config")
            .is_none()),
        "{run}"
    );
    let list: Value =
        serde_json::from_str(&helm(&t, &["list", "-n", &app, "-o", "json"])).unwrap_or(Value::Null);
    assert!(list.as_array().is_none_or(|l| l.is_empty()), "{list}");
}

both!(
    a_helm_release_installs_gates_its_kustomization_and_is_visible_to_helm,
    a_changed_helm_release_is_upgraded_and_objects_that_left_the_chart_are_deleted,
);

fn hr(ns: &str, name: &str, chart: &str, extra: &str) -> String {
    let extra: String = extra.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: ./charts/{chart}\n      sourceRef:\n        kind: GitRepository\n        name: flux-system\n        namespace: flux-system\n{extra}"
    )
}

/// CRDs from a chart's crds/ (applied before the render, labelled), weighted hooks with their
/// delete policies, values from a Secret (never printed), and dependsOn between HelmReleases.
fn helm_releases_bring_crds_run_hooks_read_secret_values_and_respect_depends_on(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("happ"));
    // The CRD of the fixture chart is cluster-wide: the real tier shares it between tests, which
    // the Create policy (AlreadyExists ignored) allows.
    let f = fleet(&ks_ns, &[("infra", "wait: true")])
        .file("apps/infra/ns.yaml", &namespace(&app))
        .file(
            "apps/infra/secret.yaml",
            &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-values\n  namespace: {app}\nstringData:\n  values.yaml: |\n    message: s3cr3t-message\n"),
        )
        .file("apps/infra/gadgets.yaml", &hr(&app, "gadgets", "crds", ""))
        .file(
            "apps/infra/hooked.yaml",
            &hr(&app, "hooked", "hooks", "dependsOn:\n  - name: gadgets"),
        )
        .file(
            "apps/infra/web.yaml",
            &hr(
                &app,
                "web",
                "plain",
                "dependsOn:\n  - name: hooked\nvaluesFrom:\n  - kind: Secret\n    name: web-values",
            ),
        );
    for c in ["plain", "crds", "hooks"] {
        copy_dir(
            &fixtures(&format!("charts/{c}")),
            &f.root().join(format!("charts/{c}")),
        );
    }
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    assert!(
        !run.stdout.contains("s3cr3t") && !run.stderr.contains("s3cr3t"),
        "{run}"
    );
    let id = |n: &str| format!("HelmRelease/{app}/{n}");
    for n in ["gadgets", "hooked", "web"] {
        assert_eq!(outcome(&run, &id(n)), "ready", "{n}\n{run}");
    }
    // dependsOn between HelmReleases: each starts after the one it depends on is Ready.
    let events = run.events();
    let pos = |ev: &str, who: &str| {
        events
            .iter()
            .position(|e| e["event"] == ev && e["id"] == who)
            .unwrap_or_else(|| panic!("no {ev} of {who}\n{run}"))
    };
    assert!(
        pos("started", &id("hooked")) > pos("finished", &id("gadgets")),
        "{run}"
    );
    assert!(
        pos("started", &id("web")) > pos("finished", &id("hooked")),
        "{run}"
    );
    // The chart's CRD, labelled as helm-controller labels it, and the custom resource using it.
    let crd = t
        .get("crd", "", "gadgets.fixture.flux-order.test")
        .expect("the chart's CRD");
    assert!(
        crd["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"].is_string(),
        "{}",
        pretty(&crd)
    );
    assert!(
        t.get("gadgets.fixture.flux-order.test", &app, "gadgets-gadget")
            .is_some()
    );
    // Hooks: pre-install Jobs by weight (-5 before 5), before the manifest; the post-install Job
    // deleted once it succeeded (hook-succeeded), the pre ones kept (before-hook-creation).
    let writes: Vec<String> = t
        .writes()
        .into_iter()
        .filter(|w| w.verb != "delete")
        .map(|w| w.name)
        .collect();
    let first = |name: &str| {
        writes
            .iter()
            .position(|w| w == name)
            .unwrap_or_else(|| panic!("no write of {name}: {writes:?}"))
    };
    assert!(first("hooked-pre-1") < first("hooked-pre-0"), "{writes:?}");
    assert!(first("hooked-pre-0") < first("hooked-app"), "{writes:?}");
    assert!(first("hooked-app") < first("hooked-post"), "{writes:?}");
    assert!(t.get("job", &app, "hooked-pre-0").is_some());
    assert!(
        t.eventually(Duration::from_secs(20), |t| t
            .get("job", &app, "hooked-post")
            .is_none()),
        "the hook-succeeded Job was not deleted"
    );
    let hooks = helm(&t, &["get", "hooks", "hooked", "-n", &app]);
    assert!(
        hooks.contains("hooked-pre-0") && hooks.contains("hooked-post"),
        "{hooks}"
    );
    // Values from the Secret reached the chart.
    let cm = t.get("configmap", &app, "web-config").expect("web-config");
    assert_eq!(cm["data"]["message"], "s3cr3t-message");
}

/// A selected HelmRelease whose chart cannot be had here is invalid input: exit 2, every such
/// problem listed, nothing written.
fn an_unavailable_chart_is_refused_before_any_write(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("happ"));
    let f = fleet(&ks_ns, &[("infra", "")])
        .file("apps/infra/ns.yaml", &namespace(&app))
        .file(
            "apps/infra/hr.yaml",
            &format!("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: remote\n  namespace: {app}\nspec:\n  interval: 10m\n  chartRef:\n    kind: OCIRepository\n    name: remote-chart\n"),
        );
    t.mark();
    let run = f.apply(&t, &[]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&format!("HelmRelease {app}/remote")),
        "{run}"
    );
    assert!(run.stderr.contains("--chart"), "{run}");
    assert!(t.writes().is_empty(), "wrote: {:?}", t.writes());
}

both!(
    helm_releases_bring_crds_run_hooks_read_secret_values_and_respect_depends_on,
    an_unavailable_chart_is_refused_before_any_write,
);

/// A value substituted from a Secret makes an object invalid, and the API server's 422 echoes it:
/// the failure is reported everywhere — output, inventory, status, Events — with the value masked.
fn a_secret_value_echoed_by_the_server_is_masked_in_output_inventory_and_events(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let secret = "Hunter2-S3cret";
    t.kubectl(&["create", "namespace", &ks_ns]);
    t.kubectl(&[
        "create",
        "secret",
        "generic",
        "vars",
        "-n",
        &ks_ns,
        &format!("--from-literal=NAME={secret}"),
    ]);
    let spec = "postBuild:\n  substituteFrom:\n    - kind: Secret\n      name: vars";
    let f = fleet(&ks_ns, &[("a", spec)])
        .file("apps/a/ns.yaml", &namespace(&app))
        .file(
            "apps/a/cm.yaml",
            &config_map(&app, "${NAME}", &[("k", "v")]),
        );
    let run = f.apply(&t, &["--retry-for", "1m"]);
    run.expect_code(1);
    let id = format!("{ks_ns}/a");
    assert_eq!(outcome(&run, &id), "failed", "{run}");
    assert_eq!(attempts(&run, &id), 1, "a 422 is not retried\n{run}");
    assert!(reason(&run, &id).contains("***"), "{run}");
    let text = f.run("apply", &t, &["--retry-for", "0"]);
    let status = t.run("status", &[&id, "-o", "json"]);
    let inventory = t
        .get("configmap", &ks_ns, "flux-order-a")
        .expect("inventory");
    let events = t.kubectl(&["get", "events", "-n", &ks_ns, "-o", "json"]);
    assert!(events.contains("ReconciliationFailed"), "{events}");
    for (what, out) in [
        ("json output", run.to_string()),
        ("text output", text.to_string()),
        ("status", status.to_string()),
        ("inventory", inventory.to_string()),
        ("events", events),
    ] {
        assert!(
            !out.contains(secret),
            "the secret value shows in the {what}:\n{out}"
        );
    }
}

/// A chart from an OCI registry (the real distribution registry on 127.0.0.1, pushed with
/// `helm push`), through an OCIRepository `chartRef`: fetched as source-controller would and
/// rendered with helm-controller's version `<version>+<12 hex of the manifest digest>`.
fn a_helm_release_from_an_oci_registry_renders_with_the_digest_version(t: Tier) {
    let reg = crate::sources::Registry::start(None);
    let work = tempfile::tempdir().expect("tmp");
    let tgz = package_fixture_chart("plain", "1.2.3", work.path());
    reg.push_package("charts", &tgz, work.path());
    let (ks_ns, app) = (t.ns("fleet"), t.ns("oapp"));
    let f = fleet(&ks_ns, &[("infra", "wait: true")])
        .file("apps/infra/ns.yaml", &namespace(&app))
        .file(
            "apps/infra/source.yaml",
            &format!("apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: plain\n  namespace: {app}\nspec:\n  interval: 10m\n  insecure: true\n  url: oci://{}/charts/plain\n  ref:\n    tag: 1.2.3\n  layerSelector:\n    mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip\n    operation: copy\n", reg.host()),
        )
        .file(
            "apps/infra/hr.yaml",
            &format!("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: {app}\nspec:\n  interval: 10m\n  chartRef:\n    kind: OCIRepository\n    name: plain\n"),
        );
    let cache = tempfile::tempdir().expect("cache");
    let out = f
        .cmd("apply")
        .arg("--kubeconfig")
        .arg(t.kubeconfig())
        .args(["-o", "json"])
        .env("FLUX_ORDER_CACHE_DIR", cache.path())
        .timeout(Duration::from_secs(90))
        .output()
        .expect("run");
    let run = Run::from_output(&out);
    run.expect_code(0);
    let cm = t.get("configmap", &app, "web-config").expect("web-config");
    let chart = cm["metadata"]["labels"]["helm.sh/chart"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        chart.starts_with("plain-1.2.3_") && chart.len() == "plain-1.2.3_".len() + 12,
        "the chart version carries the manifest digest: {chart}\n{run}"
    );
    let list: Value =
        serde_json::from_str(&helm(&t, &["list", "-n", &app, "-o", "json"])).expect("json");
    assert_eq!(list[0]["chart"], chart.replace('_', "+").as_str(), "{list}");
}

both!(a_helm_release_from_an_oci_registry_renders_with_the_digest_version);

/// A partly broken fleet: a child whose path is missing (and its dependent), a remote kustomize
/// resource (a URL nothing serves, on 127.0.0.1), a source only the network has. `apply` and
/// `diff` refuse the whole selection, listing every problem, and write nothing; `--skip-invalid`
/// applies the rest and names each left-out one; `--exclude` leaves out what it names.
fn a_partly_broken_fleet_is_refused_whole_then_applied_around_its_failures(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let remote = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - http://127.0.0.1:9/remote.yaml\n";
    let f = fleet(
        &ks_ns,
        &[
            ("base", ""),
            ("broken", &depends_on(&["base"])),
            ("after-broken", &depends_on(&["broken"])),
            ("remote", ""),
            ("fine", &depends_on(&["base"])),
        ],
    )
    .file("apps/base/ns.yaml", &namespace(&app))
    .file(
        "apps/fine/cm.yaml",
        &config_map(&app, "fine-cfg", &[("k", "v")]),
    )
    .file(
        "apps/after-broken/cm.yaml",
        &config_map(&app, "after-cfg", &[("k", "v")]),
    )
    .file("apps/remote/kustomization.yaml", remote)
    .file(
        "clusters/c/oci.yaml",
        &ks(&ks_ns, "oci", "").replace(
            "kind: GitRepository\n    name: flux-system\n    namespace: flux-system",
            "kind: OCIRepository\n    name: podinfo",
        ),
    );
    // broken's path does not exist.
    std::fs::write(
        f.root().join("clusters/c/broken.yaml"),
        ks(&ks_ns, "broken", &depends_on(&["base"])).replace("./apps/broken", "./apps/gone"),
    )
    .expect("write");
    let id = |n: &str| format!("{ks_ns}/{n}");
    t.mark();
    for sub in ["apply", "diff"] {
        let run = f.run(sub, &t, &[]);
        run.expect_code(2);
        for needle in [
            format!(
                "clusters/c/broken.yaml: Kustomization {}: kustomization path not found",
                id("broken")
            ),
            format!(
                "clusters/c/remote.yaml: Kustomization {}: building",
                id("remote")
            ),
            format!(
                "clusters/c/oci.yaml: Kustomization {}: OCIRepository/{ks_ns}/podinfo is not defined in the fleet",
                id("oci")
            ),
            "nothing was written".to_string(),
        ] {
            assert!(
                run.stderr.contains(&needle),
                "{sub}: stderr lacks {needle:?}\n{run}"
            );
        }
        assert!(t.writes().is_empty(), "{sub} wrote: {:?}", t.writes());
    }

    let run = f.apply(&t, &["--skip-invalid"]);
    run.expect_code(1);
    for n in ["broken", "remote", "oci"] {
        assert_eq!(outcome(&run, &id(n)), "excluded", "{n}\n{run}");
        assert_eq!(run.result(&id(n))["invalid"], true, "{run}");
    }
    assert!(
        reason(&run, &id("broken")).contains("kustomization path not found"),
        "{run}"
    );
    assert_eq!(outcome(&run, &id("after-broken")), "skipped", "{run}");
    assert_eq!(outcome(&run, &id("fine")), "ready", "{run}");
    assert!(t.get("configmap", &app, "fine-cfg").is_some());
    assert!(t.get("configmap", &app, "after-cfg").is_none());

    // Leaving them out by name is not a failure; what waits on them is still skipped.
    let run = f.apply(
        &t,
        &[
            "--exclude",
            &id("broken"),
            "--exclude",
            &id("remote"),
            "--exclude",
            &id("oci"),
            "--exclude",
            &id("after-broken"),
        ],
    );
    run.expect_code(0);
    assert_eq!(outcome(&run, &id("after-broken")), "excluded", "{run}");
    assert_eq!(run.result(&id("oci"))["invalid"], false, "{run}");
    let run = f.run("diff", &t, &["--exclude", &id("broken"), "--skip-invalid"]);
    assert!(
        run.stdout.contains(&format!(
            "Kustomization {} skipped: blocked by excluded {}",
            id("after-broken"),
            id("broken")
        )),
        "{run}"
    );
}

/// Encrypts `plain` (YAML) with the real `sops` CLI for the tests' age key, Flux-style
/// (`--encrypted-regex '^(data|stringData)$'`).
fn sops_encrypt(dir: &Path, plain: &str) -> String {
    let key = fixtures("sops/test.agekey");
    let recipient = std::fs::read_to_string(&key)
        .expect("key")
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .expect("recipient");
    let file = dir.join("plain.sops-input.yaml");
    std::fs::write(&file, plain).expect("write");
    let out = std::process::Command::new("sops")
        .args([
            "-e",
            "--age",
            &recipient,
            "--encrypted-regex",
            "^(data|stringData)$",
        ])
        .arg(&file)
        .output()
        .expect("run sops (scripts/test-deps builds it)");
    std::fs::remove_file(&file).expect("remove");
    assert!(
        out.status.success(),
        "sops: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A Kustomization with `spec.decryption` whose age key is a Secret in the cluster: refused
/// (nothing written) while the Secret is missing; once it exists, the Secret encrypted by the
/// real `sops` is applied decrypted, a Kustomization with `spec.decryption` and nothing
/// encrypted applies normally, and no output shows a decrypted value.
fn a_sops_encrypted_secret_is_applied_decrypted_with_the_key_from_the_cluster(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("app"));
    let dec = "decryption:\n  provider: sops\n  secretRef:\n    name: sops-age";
    let f = fleet(
        &ks_ns,
        &[
            ("base", ""),
            ("secrets", &format!("{dec}\n{}", depends_on(&["base"]))),
            ("plaindec", &format!("{dec}\n{}", depends_on(&["base"]))),
        ],
    )
    .file("apps/base/ns.yaml", &namespace(&app))
    .file(
        "apps/plaindec/cm.yaml",
        &config_map(&app, "plain-cfg", &[("k", "v")]),
    );
    let plain = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {app}\ntype: Opaque\nstringData:\n  password: s3cr3t-Pa55-tier\n"
    );
    std::fs::create_dir_all(f.root().join("apps/secrets")).expect("mkdir");
    let enc = sops_encrypt(f.root(), &plain);
    std::fs::write(f.root().join("apps/secrets/secret.yaml"), enc).expect("write");
    // A dotenv file the real sops encrypted, read by a secretGenerator: decrypted before the build.
    std::fs::copy(
        fixtures("sops/gen.enc.env"),
        f.root().join("apps/secrets/gen.enc.env"),
    )
    .expect("copy");
    std::fs::write(
        f.root().join("apps/secrets/kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - secret.yaml\ngeneratorOptions:\n  disableNameSuffixHash: true\nsecretGenerator:\n  - name: gen-env\n    namespace: {app}\n    envs:\n      - gen.enc.env\n"
        ),
    )
    .expect("write");
    t.mark();
    let run = f.apply(&t, &[]);
    run.expect_code(2);
    let want = format!("Secret {ks_ns}/sops-age not found in the fleet nor in the cluster");
    assert!(run.stderr.contains(&want), "{run}");
    assert!(t.writes().is_empty(), "wrote: {:?}", t.writes());

    let _ = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(t.kubeconfig())
        .args(["create", "namespace", &ks_ns])
        .output();
    let key = fixtures("sops/test.agekey").display().to_string();
    t.kubectl(&[
        "-n",
        &ks_ns,
        "create",
        "secret",
        "generic",
        "sops-age",
        &format!("--from-file=age.agekey={key}"),
    ]);
    let run = f.apply(&t, &[]);
    run.expect_code(0);
    assert_eq!(
        outcome(&run, &format!("{ks_ns}/plaindec")),
        "ready",
        "{run}"
    );
    let live = t.get("secret", &app, "db").expect("the Secret");
    assert_eq!(
        live["data"]["password"],
        "czNjcjN0LVBhNTUtdGllcg==",
        "{}",
        pretty(&live)
    );
    assert!(live.get("sops").is_none(), "{}", pretty(&live));
    let generated = t
        .get("secret", &app, "gen-env")
        .expect("the generated Secret");
    assert_eq!(
        generated["data"]["API_TOKEN"],
        "dG9rLWdlbi0xMjM0NTY=",
        "{}",
        pretty(&generated)
    );
    assert!(
        generated["data"].get("sops_mac").is_none(),
        "{}",
        pretty(&generated)
    );
    for v in ["s3cr3t", "tok-gen-123456", "gen-pa55=word"] {
        assert!(!run.stdout.contains(v) && !run.stderr.contains(v), "{run}");
    }
    let diff = f.diff(&t, &[]);
    diff.expect_code(0);
    for v in ["s3cr3t", "tok-gen-123456", "gen-pa55=word"] {
        assert!(
            !diff.stdout.contains(v) && !diff.stderr.contains(v),
            "{diff}"
        );
    }
}

/// A ConfigMap the real `sops` encrypted, and a patch file it encrypted (decrypted before the
/// build, as kustomize-controller does): plan, build, apply and diff never print a value that was
/// encrypted (build and diff show `***` where it goes), while the cluster gets the real values.
fn sops_encrypted_values_of_a_config_map_never_print_but_are_applied(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("cfgapp"));
    let f = fleet(
        &ks_ns,
        &[
            ("base", ""),
            (
                "cfg",
                &format!("decryption:\n  provider: sops\n{}", depends_on(&["base"])),
            ),
        ],
    )
    .file("apps/base/ns.yaml", &namespace(&app))
    .file(
        "apps/cfg/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - cm.enc.yaml\n  - settings.yaml\npatches:\n  - path: patch.enc.yaml\n    target:\n      kind: ConfigMap\n      name: app-settings\n",
    )
    .file(
        "apps/cfg/settings.yaml",
        &config_map(&app, "app-settings", &[("plain", "visible-value")]),
    );
    std::fs::copy(
        fixtures("sops/patch.enc.yaml"),
        f.root().join("apps/cfg/patch.enc.yaml"),
    )
    .expect("copy");
    let plain = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: enc-cfg\n  namespace: {app}\ndata:\n  endpoint: https://db.internal.example/cfg-s3cr3t-path\n  mode: production-mode\n"
    );
    let enc = sops_encrypt(f.root(), &plain);
    std::fs::write(f.root().join("apps/cfg/cm.enc.yaml"), enc).expect("write");
    let key = fixtures("sops/test.agekey").display().to_string();
    let secret_values = ["cfg-s3cr3t", "patch-s3cr3t-value", "production-mode"];
    let never_printed = |run: &Run| {
        for v in secret_values {
            assert!(
                !run.stdout.contains(v) && !run.stderr.contains(v),
                "{v} printed:\n{run}"
            );
        }
    };
    let offline =
        |sub: &str, args: &[&str]| Run::from_output(&f.cmd(sub).args(args).output().expect("runs"));
    let plan = offline("plan", &["--age-key-file", &key]);
    plan.expect_code(0);
    never_printed(&plan);
    let build = offline(
        "build",
        &["--name", &format!("{ks_ns}/cfg"), "--age-key-file", &key],
    );
    build.expect_code(0);
    never_printed(&build);
    let objs = yaml_docs(&build.stdout);
    let cm = find(&objs, "ConfigMap", "enc-cfg");
    assert_eq!(cm["data"]["endpoint"], "***", "{build}");
    assert_eq!(cm["data"]["mode"], "***", "{build}");
    let settings = find(&objs, "ConfigMap", "app-settings");
    assert_eq!(settings["data"]["token"], "***", "{build}");
    assert_eq!(settings["data"]["plain"], "visible-value", "{build}");

    let run = f.apply(&t, &["--age-key-file", &key]);
    run.expect_code(0);
    never_printed(&run);
    let live = t.get("configmap", &app, "enc-cfg").expect("enc-cfg");
    assert_eq!(
        live["data"]["endpoint"],
        "https://db.internal.example/cfg-s3cr3t-path"
    );
    assert_eq!(live["data"]["mode"], "production-mode");
    let live = t
        .get("configmap", &app, "app-settings")
        .expect("app-settings");
    assert_eq!(live["data"]["token"], "patch-s3cr3t-value");

    // Changed in the cluster: diff shows the field changed, masked on both sides.
    t.kubectl(&[
        "-n",
        &app,
        "patch",
        "configmap",
        "enc-cfg",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"endpoint":"https://changed.example/live"}}"#,
    ]);
    let diff = f.diff(&t, &["--age-key-file", &key]);
    diff.expect_code(1);
    never_printed(&diff);
    assert!(
        diff.stdout.contains("*** (before)") && diff.stdout.contains("*** (after)"),
        "{diff}"
    );
    assert!(!diff.stdout.contains("changed.example"), "{diff}");
}

/// A HelmRelease whose spec does not decode fails alone: apply refuses the whole selection
/// (nothing written) until `--skip-invalid` (or `--exclude HelmRelease/NS/NAME`) leaves it out;
/// then the HelmRelease that depends on it is skipped and the rest is installed.
fn a_broken_helm_release_is_refused_then_left_out_with_its_dependents(t: Tier) {
    let (f, ks_ns, app) = helm_fleet(&t, "");
    let f = f
        .file(
            "clusters/c/extras.yaml",
            &ks(&ks_ns, "extras", &depends_on(&["infra"])),
        )
        .file(
            "apps/extras/broken.yaml",
            &hr(&app, "broken", "plain", "timeout: not-a-duration"),
        )
        .file(
            "apps/extras/after-broken.yaml",
            &hr(
                &app,
                "after-broken",
                "plain",
                "dependsOn:\n  - name: broken",
            ),
        );
    t.mark();
    let run = f.apply(&t, &[]);
    run.expect_code(2);
    assert!(run.stderr.contains("nothing was written"), "{run}");
    assert!(
        run.stderr
            .contains(&format!("HelmRelease {app}/broken: spec.timeout")),
        "{run}"
    );
    assert!(t.writes().is_empty(), "wrote: {:?}", t.writes());

    let hr_id = |n: &str| format!("HelmRelease/{app}/{n}");
    let (broken, after) = (hr_id("broken"), hr_id("after-broken"));
    for (args, code, after_outcome) in [
        // Invalid, left out: a failure; its dependent is skipped.
        (vec!["--skip-invalid"], 1, "skipped"),
        // Left out by the user, with its dependent: nothing failed.
        (
            vec!["--exclude", &broken, "--exclude", &after],
            0,
            "excluded",
        ),
    ] {
        let run = f.apply(&t, &args);
        run.expect_code(code);
        assert_eq!(outcome(&run, &broken), "excluded", "{run}");
        assert_eq!(outcome(&run, &after), after_outcome, "{run}");
        // Installed by the first run, unchanged in the second.
        for unit in [hr_id("web"), format!("{ks_ns}/extras")] {
            let o = outcome(&run, &unit);
            assert!(
                matches!(o.as_str(), "ready" | "unchanged"),
                "{unit}: {o}\n{run}"
            );
        }
        assert!(t.get("configmap", &app, "web-config").is_some());
        assert!(t.get("configmap", &app, "broken-config").is_none());
        assert!(t.get("configmap", &app, "after-broken-config").is_none());
    }
}

/// `--apply-flux-objects`: Flux's own objects are applied like any other, waited on by their Ready
/// condition; without their CRD it is invalid input and nothing is written.
fn apply_flux_objects_applies_them_and_needs_their_crds(t: Tier) {
    let (ks_ns, app) = (t.ns("fleet"), t.ns("fapp"));
    let repo = format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: {app}\nspec:\n  interval: 1h\n  url: https://charts.example.com\n"
    );
    let check = format!(
        "healthChecks:\n  - apiVersion: source.toolkit.fluxcd.io/v1\n    kind: HelmRepository\n    name: charts\n    namespace: {app}"
    );
    let crd = widget_crd()
        .replace("widgets.example.com", "helmrepositories.source.toolkit.fluxcd.io")
        .replace("group: example.com", "group: source.toolkit.fluxcd.io")
        .replace(
            "{kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}",
            "{kind: HelmRepository, listKind: HelmRepositoryList, plural: helmrepositories, singular: helmrepository}",
        );
    // Without Flux's CRDs: refused before any write, naming the kind.
    let bare = fleet(&ks_ns, &[("apps", "")])
        .file("apps/apps/ns.yaml", &namespace(&app))
        .file("apps/apps/repo.yaml", &repo);
    t.mark();
    let run = bare.apply(&t, &["--apply-flux-objects"]);
    run.expect_code(2);
    assert!(run.stderr.contains("HelmRepository"), "{run}");
    let run = bare.diff(&t, &["--apply-flux-objects"]);
    run.expect_code(2);
    assert!(run.stderr.contains("HelmRepository"), "{run}");
    assert!(t.writes().is_empty(), "wrote: {:?}", t.writes());
    // Without the flag the object is listed, not applied: the same fleet applies.
    bare.apply(&t, &[]).expect_code(0);
    assert!(
        t.get("helmrepositories.source.toolkit.fluxcd.io", &app, "charts")
            .is_none()
    );

    // With the CRD in an earlier wave: applied, inventoried like any object, and its health
    // check evaluated by kstatus (no status written yet: Current, as kstatus says for Flux too).
    let f = fleet(
        &ks_ns,
        &[
            ("flux", ""),
            ("apps", &format!("{check}\n{}", depends_on(&["flux"]))),
        ],
    )
    .file("apps/flux/crd.yaml", &crd)
    .file("apps/apps/ns.yaml", &namespace(&app))
    .file("apps/apps/repo.yaml", &repo);
    // diff --apply-flux-objects compares what that apply would apply: the HelmRepository too.
    let subject = format!("HelmRepository/{app}/charts");
    t.mark();
    let diff = f.diff(&t, &["--apply-flux-objects"]);
    diff.expect_code(1);
    assert!(
        diff.stdout.contains(&format!(
            "{subject} created (CRD not yet installed, not validated)"
        )),
        "{diff}"
    );
    assert!(!f.diff(&t, &[]).stdout.contains(&subject));
    assert!(t.writes().is_empty(), "diff wrote: {:?}", t.writes());
    let run = f.apply(&t, &["--apply-flux-objects", "--timeout", "20s"]);
    run.expect_code(0);
    let diff = f.diff(&t, &["--apply-flux-objects"]);
    diff.expect_code(0);
    assert!(
        diff.stdout.contains(&format!("{subject} unchanged")),
        "{diff}"
    );
    // Without the flag, apply would prune it: diff says so.
    let diff = f.diff(&t, &[]);
    diff.expect_code(1);
    assert!(
        diff.stdout.contains(&format!("{subject} deleted (prune)")),
        "{diff}"
    );
    let inv = t
        .get("configmap", &ks_ns, "flux-order-apps")
        .expect("inventory");
    assert!(
        inv["data"].to_string().contains("HelmRepository"),
        "{}",
        pretty(&inv)
    );
    let live = t
        .get("helmrepositories.source.toolkit.fluxcd.io", &app, "charts")
        .expect("the HelmRepository was applied");
    assert_eq!(
        live["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"],
        "apps",
        "{}",
        pretty(&live)
    );
    t.kubectl(&[
        "delete",
        "crd",
        "helmrepositories.source.toolkit.fluxcd.io",
        "--wait=false",
    ]);
}

both!(apply_flux_objects_applies_them_and_needs_their_crds);
