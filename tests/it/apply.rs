//! `apply` end to end: the real binary against the test API server. Ordering is asserted on the
//! server's request log and its simulated controllers' ready events, outcomes on the JSON events
//! of `-o json`, never on terminal text (except the non-TTY text renderer's own test).

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

/// A fleet of Kustomizations `flux-system/<name>`, each building `./apps/<name>` with these extra
/// spec fields. Objects of `<name>` are named `<name>-…` so the request log tells them apart.
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

/// `[start, end]` of a Kustomization on the server: its first write and its Deployment's ready
/// event.
fn span(cluster: &Cluster, ks: &str, deployment: &str) -> (Duration, Duration) {
    (
        cluster.first_write(&format!("{ks}-")).since_start,
        cluster.ready_event("Deployment", deployment).since_start,
    )
}

// ---------------------------------------------------------------------------------------------
// Ordering and concurrency

#[test]
fn dependent_is_written_only_after_its_dependency_is_ready() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("500ms")),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-settings", &[("k", "v")]),
        );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("a"), "ready", "{run}");
    assert_eq!(run.outcome("b"), "ready", "{run}");
    let ready = cluster.ready_event("Deployment", "a-web");
    let b = cluster.first_write("b-");
    assert!(
        b.since_start > ready.since_start,
        "b written at {}ms, a's Deployment ready at {}ms\n{}",
        ms(b.since_start),
        ms(ready.since_start),
        cluster.log_text()
    );
    // The same order in the events: b starts after a finished.
    let events = run.events();
    let pos = |name: &str, id: &str| {
        events
            .iter()
            .position(|e| e["event"] == name && e["id"] == id)
            .unwrap_or_else(|| panic!("no {name} of {id}\n{run}"))
    };
    assert!(pos("started", "flux-system/b") > pos("finished", "flux-system/a"));
}

#[test]
fn no_dependent_write_precedes_any_dependency_ready_in_a_chain() {
    // a → b → c, each waiting on a Deployment: every write of a dependent follows every ready
    // event of the Kustomizations it depends on, directly or not.
    let cluster = Cluster::start();
    let f = fleet(&[
        ("a", "wait: true"),
        ("b", &format!("wait: true\n{}", depends_on(&["a"]))),
        ("c", &depends_on(&["b"])),
    ])
    .file(
        "apps/a/deploy.yaml",
        &deployment("default", "a-web", Some("300ms")),
    )
    .file(
        "apps/b/deploy.yaml",
        &deployment("default", "b-web", Some("300ms")),
    )
    .file(
        "apps/b/cm.yaml",
        &config_map("default", "b-cfg", &[("k", "v")]),
    )
    .file(
        "apps/c/cm.yaml",
        &config_map("default", "c-cfg", &[("k", "v")]),
    );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    let a_ready = cluster.ready_event("Deployment", "a-web").since_start;
    let b_ready = cluster.ready_event("Deployment", "b-web").since_start;
    for w in cluster.writes_named("b-") {
        assert!(w.since_start > a_ready, "{}", cluster.log_text());
    }
    for w in cluster.writes_named("c-") {
        assert!(w.since_start > b_ready, "{}", cluster.log_text());
    }
}

#[test]
fn independent_kustomizations_are_in_flight_at_once() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true"), ("b", "wait: true")])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("500ms")),
        )
        .file(
            "apps/b/deploy.yaml",
            &deployment("default", "b-web", Some("500ms")),
        );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    let (a0, a1) = span(&cluster, "a", "a-web");
    let (b0, b1) = span(&cluster, "b", "b-web");
    assert!(
        a0 < b1 && b0 < a1,
        "a [{}ms, {}ms] and b [{}ms, {}ms] do not overlap\n{}",
        ms(a0),
        ms(a1),
        ms(b0),
        ms(b1),
        cluster.log_text()
    );
}

#[test]
fn concurrency_one_serialises_independent_kustomizations() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true"), ("b", "wait: true")])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("500ms")),
        )
        .file(
            "apps/b/deploy.yaml",
            &deployment("default", "b-web", Some("500ms")),
        );
    let run = f.apply(&cluster, &["--concurrency", "1"]);
    run.expect_code(0);
    let (a0, a1) = span(&cluster, "a", "a-web");
    let (b0, b1) = span(&cluster, "b", "b-web");
    assert!(
        a1 < b0 || b1 < a0,
        "a [{}ms, {}ms] and b [{}ms, {}ms] overlap under --concurrency 1\n{}",
        ms(a0),
        ms(a1),
        ms(b0),
        ms(b1),
        cluster.log_text()
    );
}

#[test]
fn wave_barrier_holds_a_later_wave_until_the_previous_wave_is_ready() {
    // Wave 0: `slow` (a Deployment ready after 800ms) and `fast` (a ConfigMap). Wave 1: `b`,
    // depending on `fast` only.
    let f = fleet(&[
        ("slow", "wait: true"),
        ("fast", ""),
        ("b", &depends_on(&["fast"])),
    ])
    .file(
        "apps/slow/deploy.yaml",
        &deployment("default", "slow-web", Some("800ms")),
    )
    .file(
        "apps/fast/cm.yaml",
        &config_map("default", "fast-cfg", &[("k", "v")]),
    )
    .file(
        "apps/b/cm.yaml",
        &config_map("default", "b-cfg", &[("k", "v")]),
    );

    // Eager (default): b starts as soon as `fast` is Ready, before `slow` is.
    let eager = Cluster::start();
    f.apply(&eager, &[]).expect_code(0);
    let slow_ready = eager.ready_event("Deployment", "slow-web").since_start;
    let b = eager.first_write("b-").since_start;
    assert!(
        b < slow_ready,
        "eager: b written at {}ms, after slow was ready at {}ms\n{}",
        ms(b),
        ms(slow_ready),
        eager.log_text()
    );

    // --wave-barrier: b waits for the whole of wave 0.
    let barrier = Cluster::start();
    let run = f.apply(&barrier, &["--wave-barrier"]);
    run.expect_code(0);
    let slow_ready = barrier.ready_event("Deployment", "slow-web").since_start;
    let b = barrier.first_write("b-").since_start;
    assert!(
        b > slow_ready,
        "--wave-barrier: b written at {}ms, before slow was ready at {}ms\n{}",
        ms(b),
        ms(slow_ready),
        barrier.log_text()
    );
    assert!(
        run.events_named("blocked")
            .iter()
            .any(|e| e["id"] == "flux-system/b" && e["waiting_on"].to_string().contains("wave")),
        "b should be reported blocked on the wave\n{run}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failure isolation

#[test]
fn a_failed_kustomization_skips_its_dependents_while_a_sibling_branch_completes() {
    let cluster = Cluster::start();
    // a fails its health check (terminal), e's object is rejected by the server (422); their
    // dependents c and f are skipped; b → d completes.
    cluster.inject(Fault::status(
        Matcher::verb(Verb::Apply)
            .dry_run(false)
            .name_contains("e-cfg"),
        422,
    ));
    let f = fleet(&[
        ("a", "wait: true"),
        ("b", "wait: true"),
        ("c", &depends_on(&["a"])),
        ("d", &depends_on(&["b"])),
        ("e", ""),
        ("f", &depends_on(&["e"])),
    ])
    .file(
        "apps/a/deploy.yaml",
        &deployment("default", "a-web", Some("fail")),
    )
    .file(
        "apps/b/deploy.yaml",
        &deployment("default", "b-web", Some("300ms")),
    )
    .file(
        "apps/c/cm.yaml",
        &config_map("default", "c-cfg", &[("k", "v")]),
    )
    .file(
        "apps/d/cm.yaml",
        &config_map("default", "d-cfg", &[("k", "v")]),
    )
    .file(
        "apps/e/cm.yaml",
        &config_map("default", "e-cfg", &[("k", "v")]),
    )
    .file(
        "apps/f/cm.yaml",
        &config_map("default", "f-cfg", &[("k", "v")]),
    );
    let run = f.apply(&cluster, &[]);
    run.expect_code(1);
    assert_eq!(run.outcome("a"), "failed", "{run}");
    assert!(
        run.result("a")["reason"]
            .as_str()
            .unwrap()
            .contains("Deployment default/a-web"),
        "{run}"
    );
    assert_eq!(run.outcome("e"), "failed", "{run}");
    assert!(
        run.result("e")["reason"]
            .as_str()
            .unwrap()
            .contains("ConfigMap/default/e-cfg"),
        "{run}"
    );
    for (skipped, by) in [("c", "flux-system/a"), ("f", "flux-system/e")] {
        let r = run.result(skipped);
        assert_eq!(r["outcome"], "skipped", "{run}");
        assert_eq!(r["blocked_by"], json!([by]), "{run}");
    }
    assert_eq!(run.outcome("b"), "ready", "{run}");
    assert_eq!(run.outcome("d"), "ready", "{run}");
    assert!(
        cluster.writes_named("c-").is_empty(),
        "{}",
        cluster.log_text()
    );
    assert!(
        cluster.writes_named("f-").is_empty(),
        "{}",
        cluster.log_text()
    );
    assert!(
        cluster
            .get("v1", "ConfigMap", Some("default"), "d-cfg")
            .is_some()
    );
}

#[test]
fn fail_fast_starts_nothing_new_after_the_first_failure() {
    let cluster = Cluster::start();
    // a fails at once; b (independent, held back by --concurrency 1) must not start.
    let f = fleet(&[("a", "wait: true"), ("b", "")])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("fail")),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        );
    let run = f.apply(&cluster, &["--fail-fast", "--concurrency", "1"]);
    run.expect_code(1);
    assert_eq!(run.outcome("a"), "failed", "{run}");
    assert_eq!(run.outcome("b"), "not-started", "{run}");
    assert!(
        cluster.writes_named("b-").is_empty(),
        "{}",
        cluster.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// Transient API failures

/// a: two objects, b (after a): one object; every object present at the end.
fn retry_fleet() -> Fleet {
    fleet(&[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/cm.yaml",
            &config_map("default", "a-one", &[("k", "v")]),
        )
        .file("apps/a/deploy.yaml", &deployment("default", "a-web", None))
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-one", &[("k", "v")]),
        )
}

fn assert_everything_present(cluster: &Cluster, run: &Run) {
    for (kind, api, name) in [
        ("ConfigMap", "v1", "a-one"),
        ("Deployment", "apps/v1", "a-web"),
        ("ConfigMap", "v1", "b-one"),
    ] {
        assert!(
            cluster.get(api, kind, Some("default"), name).is_some(),
            "{kind} {name} missing\n{run}\n{}",
            cluster.log_text()
        );
    }
}

/// Injects a 429 (Retry-After: 1) on the first write of a-one and a 503 on the first two writes of
/// b-one; returns their ids.
fn throttle_and_unavailable(cluster: &Cluster) -> (FaultId, FaultId) {
    let throttled = cluster.inject(
        Fault::new(
            Matcher::verb(Verb::Apply)
                .dry_run(false)
                .name_contains("a-one"),
            FaultAction::Status {
                code: 429,
                retry_after: Some(1),
            },
        )
        .first(1),
    );
    let unavailable = cluster.inject(
        Fault::status(
            Matcher::verb(Verb::Apply)
                .dry_run(false)
                .name_contains("b-one"),
            503,
        )
        .first(2),
    );
    (throttled, unavailable)
}

#[test]
fn throttled_and_unavailable_writes_are_retried() {
    let cluster = Cluster::start();
    let (throttled, unavailable) = throttle_and_unavailable(&cluster);
    let run = retry_fleet().apply(&cluster, &[]);
    run.expect_code(0);
    assert_everything_present(&cluster, &run);
    assert_eq!(cluster.fault_hits(throttled), 1);
    assert_eq!(cluster.fault_hits(unavailable), 2);
    // Retry-After: 1 is honoured: the retry of a-one comes a second after the 429.
    let a_one: Vec<RequestLog> = cluster
        .requests()
        .into_iter()
        .filter(|r| r.verb == Verb::Apply && !r.dry_run && r.name.as_deref() == Some("a-one"))
        .collect();
    assert!(a_one.len() >= 2, "{}", cluster.log_text());
    let gap = a_one[1].since_start - a_one[0].since_start;
    assert!(
        gap >= Duration::from_millis(900),
        "retried {}ms after a 429 with Retry-After: 1\n{}",
        ms(gap),
        cluster.log_text()
    );
}

#[test]
fn retries_of_throttled_and_unavailable_writes_are_counted() {
    let cluster = Cluster::start();
    throttle_and_unavailable(&cluster);
    let run = retry_fleet().apply(&cluster, &[]);
    run.expect_code(0);
    let retries = run.summary()["retries"].as_u64().expect("retries");
    assert!(
        retries >= 3,
        "3 requests were retried, summary says {retries}\n{run}"
    );
}

#[test]
fn dropped_connections_are_retried_and_counted() {
    let cluster = Cluster::start();
    let dropped = cluster.inject(
        Fault::drop_connection(
            Matcher::verb(Verb::Apply)
                .dry_run(false)
                .name_contains("a-web"),
        )
        .first(1),
    );
    let dropped_b = cluster
        .inject(Fault::drop_connection(Matcher::verb(Verb::Apply).name_contains("b-one")).first(1));
    let run = retry_fleet().apply(&cluster, &[]);
    run.expect_code(0);
    assert_everything_present(&cluster, &run);
    assert_eq!(cluster.fault_hits(dropped), 1);
    assert_eq!(cluster.fault_hits(dropped_b), 1);
    let retries = run.summary()["retries"].as_u64().expect("retries");
    assert!(
        retries >= 2,
        "2 requests were retried, summary says {retries}\n{run}"
    );
}

// ---------------------------------------------------------------------------------------------
// Interruption

#[test]
fn sigint_mid_rollout_prints_the_summary_exits_130_and_starts_nothing_more() {
    let cluster = Cluster::start();
    // a waits on a Deployment that never becomes ready; b (independent) waits for a slot under
    // --concurrency 1; c depends on a.
    let f = fleet(&[("a", "wait: true"), ("b", ""), ("c", &depends_on(&["a"]))])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("never")),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        )
        .file(
            "apps/c/cm.yaml",
            &config_map("default", "c-cfg", &[("k", "v")]),
        );
    let child = f.spawn_apply(&cluster, &["--concurrency", "1"]);
    let pid = child.id();
    let written = cluster.wait_until(Duration::from_secs(20), |s| {
        s.writes()
            .iter()
            .any(|r| r.name.as_deref() == Some("a-web"))
    });
    if !written {
        let run = finish(child, Duration::from_secs(1));
        panic!("a-web never written\n{run}");
    }
    let writes_at_interrupt = cluster.writes().len();
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -INT failed");
    let run = finish(child, Duration::from_secs(20));
    run.expect_code(130);
    let events = run.events();
    let interrupted = events
        .iter()
        .position(|e| e["event"] == "interrupted")
        .unwrap_or_else(|| panic!("no interrupted event\n{run}"));
    assert!(
        !events[interrupted..]
            .iter()
            .any(|e| e["event"] == "started" || e["event"] == "applied"),
        "something started after the interrupt\n{run}"
    );
    assert_ne!(run.outcome("a"), "ready", "{run}");
    assert_eq!(run.outcome("b"), "not-started", "{run}");
    assert_ne!(run.outcome("c"), "ready", "{run}");
    assert!(
        cluster.writes_named("b-").is_empty(),
        "{}",
        cluster.log_text()
    );
    assert!(
        cluster.writes_named("c-").is_empty(),
        "{}",
        cluster.log_text()
    );
    // Nothing of the fleet's objects written after the interrupt.
    let late: Vec<RequestLog> = cluster.writes()[writes_at_interrupt..]
        .iter()
        .filter(|r| {
            r.name
                .as_deref()
                .is_some_and(|n| ["a-", "b-", "c-"].iter().any(|p| n.starts_with(p)))
        })
        .cloned()
        .collect();
    assert!(late.is_empty(), "written after SIGINT: {late:?}");
}

// ---------------------------------------------------------------------------------------------
// CRDs

fn slow_crds() -> Cluster {
    Cluster::with(ServerOptions {
        crd_establish_delay: Duration::from_millis(400),
        ..ServerOptions::default()
    })
}

/// The Widget CR was written after its CRD was Established on the server.
fn assert_cr_after_crd(cluster: &Cluster, cr: &str) {
    let established = cluster
        .ready_event("CustomResourceDefinition", "widgets.example.com")
        .since_start;
    let crd_written = cluster.first_write("widgets.example.com").since_start;
    assert!(established >= crd_written + Duration::from_millis(300));
    let cr_written = cluster.first_write(cr).since_start;
    assert!(
        cr_written > established,
        "{cr} written at {}ms, CRD established at {}ms\n{}",
        ms(cr_written),
        ms(established),
        cluster.log_text()
    );
    assert!(
        cluster
            .get("example.com/v1", "Widget", Some("default"), cr)
            .is_some()
    );
}

#[test]
fn crd_and_its_custom_resources_in_one_kustomization() {
    let cluster = slow_crds();
    let f = fleet(&[("a", "")])
        .file("apps/a/crd.yaml", &widget_crd())
        .file("apps/a/w.yaml", &widget("default", "a-w1", None));
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("a"), "ready", "{run}");
    assert_cr_after_crd(&cluster, "a-w1");
}

#[test]
fn crd_in_one_kustomization_and_its_custom_resource_in_a_dependent() {
    let cluster = slow_crds();
    let f = fleet(&[("crds", ""), ("b", &depends_on(&["crds"]))])
        .file("apps/crds/crd.yaml", &widget_crd())
        .file("apps/b/w.yaml", &widget("default", "b-w1", None));
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("crds"), "ready", "{run}");
    assert_eq!(run.outcome("b"), "ready", "{run}");
    assert_cr_after_crd(&cluster, "b-w1");
}

// ---------------------------------------------------------------------------------------------
// Validation before the first write

#[test]
fn an_unknown_kind_is_refused_before_anything_is_written() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", ""), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/cm.yaml",
            &config_map("default", "a-cfg", &[("k", "v")]),
        )
        .file(
            "apps/b/gadget.yaml",
            "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: b-g\n  namespace: default\n",
        );
    let run = f.apply(&cluster, &[]);
    run.expect_code(2);
    assert!(
        run.stdout.is_empty(),
        "nothing reported before validation ends\n{run}"
    );
    assert!(run.stderr.contains("Gadget"), "{run}");
    assert!(
        run.stderr.contains("b.yaml"),
        "the error names the file\n{run}"
    );
    assert!(
        cluster.writes().is_empty(),
        "written despite invalid input:\n{}",
        cluster.log_text()
    );
}

#[test]
fn an_unreachable_cluster_exits_3_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    {
        // A port that was just closed.
        let server = TestServer::start(ServerOptions::default());
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    }
    let f = fleet(&[("a", "")]).file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v")]),
    );
    let started = std::time::Instant::now();
    let out = f
        .cmd("apply")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert_no_panic(&stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cannot reach the API server") && stderr.contains("127.0.0.1"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?} to give up",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Output

#[test]
fn non_tty_text_output_is_timestamped_lines_and_a_summary_table() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("300ms")),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        );
    let run = f.run("apply", &cluster, &[]);
    run.expect_code(0);
    // Results (the summary) on stdout, progress on stderr, as kubectl does: `apply > log`
    // keeps the summary.
    assert!(
        !run.stderr.contains("KUSTOMIZATION"),
        "the summary goes to stdout\n{run}"
    );
    assert!(
        run.stdout.trim_start().starts_with("KUSTOMIZATION"),
        "only the summary on stdout\n{run}"
    );
    let (progress, summary) = (run.stderr.as_str(), run.stdout.as_str());
    let lines: Vec<&str> = progress.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 4, "{run}");
    for l in &lines {
        let ts = l.split(' ').next().unwrap_or_default();
        let ok = ts.len() == 24
            && ts.ends_with('Z')
            && ts.as_bytes()[4] == b'-'
            && ts.as_bytes()[10] == b'T'
            && ts.as_bytes()[19] == b'.';
        assert!(ok, "not a timestamped line: {l:?}\n{run}");
    }
    // One line per state change: never the same line twice in a row.
    let bodies: Vec<&str> = lines.iter().map(|l| &l[25..]).collect();
    for w in bodies.windows(2) {
        assert_ne!(w[0], w[1], "repeated line\n{run}");
    }
    assert!(
        bodies
            .iter()
            .any(|b| b.starts_with("flux-system/b waiting on flux-system/a")),
        "{run}"
    );
    assert!(
        bodies.iter().any(|b| b.contains("flux-system/a ready")),
        "{run}"
    );
    for id in ["flux-system/a", "flux-system/b"] {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with(id) && l.contains("ready")),
            "{id} not in the summary\n{run}"
        );
    }
    assert!(summary.contains("2/2 Kustomizations ready"), "{run}");
}

#[test]
fn json_output_is_one_event_per_line_in_order() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("200ms")),
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
    let events = run.events(); // every line parses
    assert_eq!(events[0]["event"], "rollout-started", "{run}");
    assert_eq!(events[0]["kustomizations"], 2);
    assert_eq!(events[0]["objects"], 3);
    assert_eq!(events.last().unwrap()["event"], "summary");
    for id in ["flux-system/a", "flux-system/b"] {
        let of: Vec<&str> = events
            .iter()
            .filter(|e| e["id"] == id)
            .map(|e| e["event"].as_str().unwrap())
            .filter(|e| *e != "waiting" && *e != "blocked" && *e != "object-ready")
            .collect();
        let n = if id.ends_with('a') { 2 } else { 1 };
        let mut expected = vec!["started"];
        expected.extend(std::iter::repeat_n("applied", n));
        expected.push("all-applied");
        // Only a (wait: true) has health checks to pass.
        if id.ends_with('a') {
            expected.push("health-passed");
        }
        expected.push("finished");
        assert_eq!(of, expected, "{id}\n{run}");
    }
    let ready: Vec<Value> = run.events_named("object-ready");
    assert_eq!(ready.len(), 2, "{run}");
}

// ---------------------------------------------------------------------------------------------
// What apply writes

#[test]
fn objects_carry_flux_owner_labels_and_kustomize_controller_managed_fields() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true")])
        .file("apps/a/deploy.yaml", &deployment("default", "a-web", None))
        .file(
            "apps/a/cm.yaml",
            &config_map("default", "a-cfg", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    for (api, kind, name) in [
        ("apps/v1", "Deployment", "a-web"),
        ("v1", "ConfigMap", "a-cfg"),
    ] {
        let o = cluster
            .get(api, kind, Some("default"), name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"));
        let labels = &o["metadata"]["labels"];
        assert_eq!(labels["kustomize.toolkit.fluxcd.io/name"], "a", "{o}");
        assert_eq!(
            labels["kustomize.toolkit.fluxcd.io/namespace"], "flux-system",
            "{o}"
        );
        let mf = o["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields");
        assert!(
            mf.iter()
                .any(|m| m["manager"] == "kustomize-controller" && m["operation"] == "Apply"),
            "{}",
            pretty(mf)
        );
    }
    // Every write was a server-side apply by kustomize-controller.
    for w in cluster.writes_named("a-") {
        assert_eq!(w.verb, Verb::Apply, "{w:?}");
        assert_eq!(
            w.field_manager.as_deref(),
            Some("kustomize-controller"),
            "{w:?}"
        );
        assert!(w.force, "{w:?}");
    }
}

/// a: a Namespace and objects in it (a ConfigMap, a Deployment, a Job); b (after a): a Service.
fn second_apply_fleet(cm_value: &str) -> Fleet {
    fleet(&[("a", "wait: true"), ("b", &depends_on(&["a"]))])
        .file("apps/a/ns.yaml", &namespace("a-team"))
        .file("apps/a/deploy.yaml", &deployment("a-team", "a-web", None))
        .file(
            "apps/a/cm.yaml",
            &config_map("a-team", "a-cfg", &[("k", cm_value)]),
        )
        .file("apps/a/job.yaml", &job("busybox:1"))
        .file(
            "apps/b/svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: b-svc\n  namespace: default\nspec:\n  selector: {app: b}\n  ports:\n    - port: 80\n",
        )
}

fn fleet_writes(cluster: &Cluster) -> Vec<RequestLog> {
    let mut w = cluster.writes_named("a-");
    w.extend(cluster.writes_named("b-"));
    w.sort_by_key(|r| r.seq);
    w
}

#[test]
fn a_second_apply_reports_every_object_unchanged_and_writes_none() {
    let cluster = Cluster::start();
    let f = second_apply_fleet("v1");
    let first = f.apply(&cluster, &[]);
    first.expect_code(0);
    assert_eq!(first.result("a")["objects"]["created"], 4, "{first}");
    assert_eq!(first.result("b")["objects"]["created"], 1, "{first}");
    let before = fleet_writes(&cluster).len();
    // Both with the incremental skip (default) and with every object compared (--force-apply).
    for args in [&[][..], &["--force-apply"][..]] {
        let second = f.apply(&cluster, args);
        second.expect_code(0);
        for (id, n) in [("a", 4), ("b", 1)] {
            assert_eq!(
                second.result(id)["objects"],
                json!({"created": 0, "configured": 0, "unchanged": n, "skipped": 0, "deleted": 0}),
                "{args:?}\n{second}"
            );
        }
        for e in second.events_named("applied") {
            assert_eq!(e["action"], "unchanged", "{args:?}\n{second}");
        }
        assert_eq!(
            fleet_writes(&cluster).len(),
            before,
            "apply {args:?} wrote\n{}",
            cluster.log_text()
        );
    }
}

#[test]
fn a_reapply_writes_only_the_object_that_drifted() {
    let cluster = Cluster::start();
    second_apply_fleet("v1").apply(&cluster, &[]).expect_code(0);
    let before = fleet_writes(&cluster).len();
    let run = second_apply_fleet("v2").apply(&cluster, &["--force-apply"]);
    run.expect_code(0);
    assert_eq!(
        run.result("a")["objects"],
        json!({"created": 0, "configured": 1, "unchanged": 3, "skipped": 0, "deleted": 0}),
        "{run}"
    );
    let applied: Vec<(String, String)> = run
        .events_named("applied")
        .iter()
        .filter(|e| e["action"] != "unchanged")
        .map(|e| {
            (
                e["object"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        applied,
        [(
            "ConfigMap/a-team/a-cfg".to_string(),
            "configured".to_string()
        )],
        "{run}"
    );
    let new: Vec<String> = fleet_writes(&cluster)[before..]
        .iter()
        .map(|w| w.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(new, ["a-cfg"], "{}", cluster.log_text());
    assert_eq!(
        cluster
            .get("v1", "ConfigMap", Some("a-team"), "a-cfg")
            .expect("cm")["data"]["k"],
        "v2"
    );
}

// ---------------------------------------------------------------------------------------------
// Immutable fields and force

fn job(image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: a-job\n  namespace: default\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: main\n          image: {image}\n"
    )
}

fn job_image(cluster: &Cluster) -> (String, String) {
    let j = cluster
        .get("batch/v1", "Job", Some("default"), "a-job")
        .expect("Job present");
    (
        j["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        j["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[test]
fn an_immutable_change_fails_without_force_and_recreates_with_force() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")]).file("apps/a/job.yaml", &job("busybox:1"));
    f.apply(&cluster, &[]).expect_code(0);
    let (_, uid1) = job_image(&cluster);

    // Without force: the Kustomization fails with the API's message; the Job is untouched.
    let f = f.file("apps/a/job.yaml", &job("busybox:2"));
    let run = f.apply(&cluster, &[]);
    run.expect_code(1);
    assert_eq!(run.outcome("a"), "failed", "{run}");
    let reason = run.result("a")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("Job/default/a-job") && reason.contains("field is immutable"),
        "{reason}"
    );
    assert_eq!(job_image(&cluster), ("busybox:1".to_string(), uid1.clone()));
    assert!(!cluster.requests().iter().any(|r| r.verb == Verb::Delete));

    // --force: deleted and recreated.
    let run = f.apply(&cluster, &["--force"]);
    run.expect_code(0);
    let (image, uid2) = job_image(&cluster);
    assert_eq!(image, "busybox:2");
    assert_ne!(uid1, uid2, "not recreated");
    assert!(
        cluster
            .requests()
            .iter()
            .any(|r| r.verb == Verb::Delete && r.name.as_deref() == Some("a-job")),
        "{}",
        cluster.log_text()
    );
    assert_eq!(run.result("a")["objects"]["created"], 1, "{run}");
}

#[test]
fn spec_force_recreates_on_an_immutable_change() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "force: true")]).file("apps/a/job.yaml", &job("busybox:1"));
    f.apply(&cluster, &[]).expect_code(0);
    let (_, uid1) = job_image(&cluster);
    let f = f.file("apps/a/job.yaml", &job("busybox:2"));
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    let (image, uid2) = job_image(&cluster);
    assert_eq!(image, "busybox:2", "{run}");
    assert_ne!(uid1, uid2, "not recreated\n{run}");
}

fn service(cluster_ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: a-svc\n  namespace: default\nspec:\n  clusterIP: {cluster_ip}\n  selector: {{app: a}}\n  ports:\n    - port: 80\n"
    )
}

#[test]
fn a_service_cluster_ip_change_needs_force() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")]).file("apps/a/svc.yaml", &service("10.96.0.50"));
    f.apply(&cluster, &[]).expect_code(0);
    let svc = |c: &Cluster| {
        c.get("v1", "Service", Some("default"), "a-svc")
            .expect("Service")
    };
    let uid1 = svc(&cluster)["metadata"]["uid"].clone();

    let f = f.file("apps/a/svc.yaml", &service("10.96.0.51"));
    let run = f.apply(&cluster, &[]);
    run.expect_code(1);
    let reason = run.result("a")["reason"].as_str().unwrap().to_string();
    assert!(
        reason.contains("Service/default/a-svc") && reason.contains("immutable"),
        "{reason}"
    );
    assert_eq!(svc(&cluster)["spec"]["clusterIP"], "10.96.0.50");

    let run = f.apply(&cluster, &["--force"]);
    run.expect_code(0);
    let after = svc(&cluster);
    assert_eq!(after["spec"]["clusterIP"], "10.96.0.51", "{run}");
    assert_ne!(after["metadata"]["uid"], uid1, "not recreated\n{run}");
}

// ---------------------------------------------------------------------------------------------
// Objects within a Kustomization

/// `a` with four ConfigMaps `a-cm0..3`; every real write of them takes 300ms on the server.
fn slow_objects(cluster: &Cluster) -> Fleet {
    cluster.inject(Fault::latency(
        Matcher::verb(Verb::Apply)
            .dry_run(false)
            .name_contains("a-cm"),
        Duration::from_millis(300),
    ));
    let mut f = fleet(&[("a", "")]);
    for i in 0..4 {
        f = f.file(
            &format!("apps/a/cm{i}.yaml"),
            &config_map("default", &format!("a-cm{i}"), &[("k", "v")]),
        );
    }
    f
}

fn cm_write_arrivals(cluster: &Cluster) -> Vec<Duration> {
    let mut at = cluster
        .requests()
        .iter()
        .filter(|r| {
            r.verb == Verb::Apply
                && !r.dry_run
                && r.name.as_deref().unwrap_or("").starts_with("a-cm")
        })
        .map(|r| r.since_start)
        .collect::<Vec<_>>();
    // The log is in order of completion; concurrent writes can finish in
    // any order, so sort by arrival.
    at.sort();
    at
}

#[test]
fn objects_of_a_stage_are_applied_concurrently_up_to_object_concurrency() {
    let cluster = Cluster::start();
    slow_objects(&cluster)
        .apply(&cluster, &["--object-concurrency", "4"])
        .expect_code(0);
    let at = cm_write_arrivals(&cluster);
    assert_eq!(at.len(), 4, "{}", cluster.log_text());
    assert!(
        at[3] - at[0] < Duration::from_millis(250),
        "4 writes should be in flight at once\n{}",
        cluster.log_text()
    );

    let cluster = Cluster::start();
    slow_objects(&cluster)
        .apply(&cluster, &["--object-concurrency", "1"])
        .expect_code(0);
    let at = cm_write_arrivals(&cluster);
    assert_eq!(at.len(), 4, "{}", cluster.log_text());
    for w in at.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(290),
            "writes overlap under --object-concurrency 1\n{}",
            cluster.log_text()
        );
    }
}

#[test]
fn sigint_while_applying_objects_starts_no_further_object() {
    let cluster = Cluster::start();
    let f = slow_objects(&cluster);
    let child = f.spawn_apply(&cluster, &["--object-concurrency", "1"]);
    let pid = child.id();
    let started = cluster.wait_until(Duration::from_secs(20), |s| {
        s.requests()
            .iter()
            .any(|r| r.verb == Verb::Apply && !r.dry_run && r.name.as_deref() == Some("a-cm0"))
    });
    if !started {
        panic!(
            "a-cm0 never written\n{}",
            finish(child, Duration::from_secs(1))
        );
    }
    let ok = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -INT failed");
    let run = finish(child, Duration::from_secs(20));
    run.expect_code(130);
    assert_eq!(run.outcome("a"), "failed", "{run}");
    // At most the write in flight when the signal came completes; no further object starts.
    let writes = cm_write_arrivals(&cluster);
    assert!(
        writes.len() <= 2,
        "{} objects written after SIGINT\n{run}\n{}",
        writes.len(),
        cluster.log_text()
    );
}

#[test]
fn a_suspended_kustomization_is_not_applied_and_does_not_fail_the_run() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "suspend: true"), ("b", "")])
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
    assert_eq!(run.outcome("a"), "suspended", "{run}");
    assert_eq!(run.outcome("b"), "ready", "{run}");
    assert!(
        cluster.writes_named("a-").is_empty(),
        "{}",
        cluster.log_text()
    );
}

/// A substituteFrom Secret that only the cluster has: plan (offline) warns that only the cluster
/// can supply it; apply reads it from the cluster, decodes it, substitutes strictly, and the
/// value never shows in the output.
#[test]
fn substitute_from_a_secret_only_the_cluster_has() {
    let cluster = Cluster::start();
    cluster
        .create(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "flux-system"}}),
        )
        .unwrap();
    cluster
        .create(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cluster-vars", "namespace": "flux-system"},
            "data": {"db_password": "czNjcjN0LXB3"},
        }))
        .unwrap();
    let spec = "postBuild:\n  substituteFrom:\n    - kind: Secret\n      name: cluster-vars\n";
    let f = Fleet::new()
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", spec))
        .file(
            "apps/a/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: db\n  namespace: default\ndata:\n  password: ${db_password}\n",
        )
        .git();
    let plan = f.cmd("plan").output().unwrap();
    assert!(plan.status.success());
    let stderr_and_out = format!(
        "{}{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(
        stderr_and_out.contains("substituteFrom Secret/cluster-vars is not in the fleet"),
        "{stderr_and_out}"
    );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    let cm = cluster
        .get("v1", "ConfigMap", Some("default"), "db")
        .expect("ConfigMap applied");
    assert_eq!(cm["data"]["password"], "s3cr3t-pw");
    assert!(!format!("{run}").contains("s3cr3t-pw"), "{run}");
}
