//! Retries of whole Kustomizations against the test API server's fault injection: an object
//! rejected for its first applies succeeds on a retry and releases its dependent; the budget
//! (`--retry-for`) bounds them; Ctrl-C ends a wait at once. The scenarios that also run against
//! a real kube-apiserver are in `tiers.rs`.

use std::time::Duration;

use crate::util::*;

/// Kustomizations `flux-system/<name>` building `./apps/<name>`.
fn fleet(items: &[(&str, &str)]) -> Fleet {
    let mut f = Fleet::new();
    for (name, spec) in items {
        f = f.file(
            &format!("clusters/c/{name}.yaml"),
            &kustomization(name, &format!("./apps/{name}"), spec),
        );
    }
    f
}

/// `a` (one ConfigMap `a-flaky`) and `b` depending on it.
fn flaky_fleet() -> Fleet {
    fleet(&[("a", ""), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/cm.yaml",
            &config_map("default", "a-flaky", &[("k", "v")]),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        )
}

/// Rejects the real (not dry-run) applies of `a-flaky`: 403, as while RBAC is being set up —
/// an error no request-level retry absorbs.
fn reject_applies() -> Fault {
    Fault::status(
        Matcher::verb(Verb::Apply)
            .name_contains("a-flaky")
            .dry_run(false),
        403,
    )
}

#[test]
fn an_object_rejected_for_its_first_applies_succeeds_on_a_retry_and_releases_its_dependent() {
    let cluster = Cluster::start();
    let fault = cluster.inject(reject_applies().first(2));
    let f = flaky_fleet();
    let run = f.apply(&cluster, &["--retry-for", "1m"]);
    run.expect_code(0);
    assert_eq!(cluster.fault_hits(fault), 2, "{run}");
    assert_eq!(run.outcome("a"), "ready", "{run}");
    assert_eq!(run.result("a")["attempts"], 3, "{run}");
    assert_eq!(run.result("a")["objects"]["created"], 1, "{run}");
    let retries = run.events_named("retrying");
    let delays: Vec<f64> = retries
        .iter()
        .map(|e| e["delay_seconds"].as_f64().unwrap_or(-1.0))
        .collect();
    assert_eq!(delays, vec![1.0, 2.0], "{run}");
    assert_eq!(retries[0]["attempt"], 2, "{run}");
    assert!(
        retries[0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("a-flaky"),
        "{run}"
    );
    // b starts only after a is ready, and after the second wait.
    let first_b = cluster.first_write("b-cfg");
    let last_a = cluster.last_write("a-flaky");
    assert!(first_b.seq > last_a.seq, "{}", cluster.log_text());
    assert!(
        last_a.since_start >= Duration::from_secs(3),
        "the waits were not 1s then 2s\n{}",
        cluster.log_text()
    );
    assert_eq!(run.outcome("b"), "ready", "{run}");
    assert_eq!(run.result("b")["attempts"], 1, "{run}");
}

#[test]
fn text_output_says_retrying_and_the_summary_counts_attempts() {
    let cluster = Cluster::start();
    cluster.inject(reject_applies().first(1));
    let f = flaky_fleet();
    let run = f.run("apply", &cluster, &["--retry-for", "1m"]);
    run.expect_code(0);
    assert!(
        run.stderr.lines().any(|l| l
            .contains("retrying flux-system/a (attempt 2, next in 1.0s): ")
            && l.contains("a-flaky")),
        "{run}"
    );
    let table = &run.stdout[run.stdout.find("KUSTOMIZATION").expect("summary")..];
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let col = header
        .iter()
        .position(|h| *h == "ATTEMPTS")
        .unwrap_or_else(|| panic!("no ATTEMPTS column\n{run}"));
    let row = |id: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row {id}\n{run}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("flux-system/a ")[col], "2", "{run}");
    assert_eq!(row("flux-system/b ")[col], "1", "{run}");
}

#[test]
fn the_budget_ends_retries_and_the_dependent_is_skipped() {
    let cluster = Cluster::start();
    let fault = cluster.inject(reject_applies());
    let f = flaky_fleet();
    let run = f.apply(&cluster, &["--retry-for", "2500ms"]);
    run.expect_code(1);
    // Attempts at 0s and 1s; the next (after 2s more) would start past the budget.
    assert_eq!(run.result("a")["attempts"], 2, "{run}");
    assert_eq!(cluster.fault_hits(fault), 2, "{run}");
    assert_eq!(run.outcome("a"), "failed", "{run}");
    assert_eq!(
        run.result("a")["flux_reason"],
        "ReconciliationFailed",
        "{run}"
    );
    assert_eq!(run.outcome("b"), "skipped", "{run}");
    assert!(
        cluster.writes_named("b-").is_empty(),
        "{}",
        cluster.log_text()
    );
}

#[test]
fn retry_for_zero_makes_one_attempt() {
    let cluster = Cluster::start();
    let fault = cluster.inject(reject_applies().first(1));
    let f = flaky_fleet();
    let run = f.apply(&cluster, &["--retry-for", "0"]);
    run.expect_code(1);
    assert_eq!(cluster.fault_hits(fault), 1, "{run}");
    assert_eq!(run.result("a")["attempts"], 1, "{run}");
    assert!(run.events_named("retrying").is_empty(), "{run}");
    assert_eq!(run.outcome("b"), "skipped", "{run}");
}

#[test]
fn an_interrupt_ends_the_wait_before_a_retry_at_once() {
    let cluster = Cluster::start();
    let fault = cluster.inject(reject_applies());
    // retryInterval 1m: after two failures the wait is 2s, after three 4s.
    let f = fleet(&[("a", "retryInterval: 1m"), ("b", &depends_on(&["a"]))])
        .file(
            "apps/a/cm.yaml",
            &config_map("default", "a-flaky", &[("k", "v")]),
        )
        .file(
            "apps/b/cm.yaml",
            &config_map("default", "b-cfg", &[("k", "v")]),
        );
    let child = f.spawn_apply(&cluster, &["--retry-for", "10m"]);
    let third = cluster.wait_until(Duration::from_secs(20), |s| s.fault_hits(fault) >= 3);
    assert!(third, "never made a third attempt");
    // Now in the 4s wait.
    std::thread::sleep(Duration::from_millis(300));
    let interrupted_at = std::time::Instant::now();
    sigint(&child);
    let run = finish(child, Duration::from_secs(10));
    run.expect_code(130);
    assert!(
        interrupted_at.elapsed() < Duration::from_secs(3),
        "the wait was not cancelled: {:?}\n{run}",
        interrupted_at.elapsed()
    );
    assert_eq!(cluster.fault_hits(fault), 3, "{run}");
    assert_eq!(run.outcome("a"), "failed", "{run}");
    assert!(
        run.result("a")["reason"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted while waiting to retry"),
        "{run}"
    );
    assert_eq!(run.result("a")["attempts"], 3, "{run}");
}

#[test]
fn events_tell_the_story_in_the_kustomization_namespace() {
    let cluster = Cluster::start();
    cluster.inject(reject_applies().first(1));
    let f = flaky_fleet();
    f.apply(&cluster, &["--retry-for", "1m"]).expect_code(0);
    let events: Vec<serde_json::Value> = cluster
        .list("v1", "Event")
        .into_iter()
        .filter(|e| e["metadata"]["namespace"] == "flux-system")
        .collect();
    let of = |name: &str| -> Vec<(String, String)> {
        let mut v: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["involvedObject"]["name"] == name)
            .collect();
        v.sort_by_key(|e| e["metadata"]["name"].as_str().unwrap_or("").to_string());
        v.iter()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or("").to_string(),
                    e["type"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let pair = |r: &str, t: &str| (r.to_string(), t.to_string());
    assert_eq!(
        of("flux-order-a"),
        vec![
            pair("ProgressingWithRetry", "Warning"),
            pair("Progressing", "Normal"),
            pair("ReconciliationSucceeded", "Normal"),
        ],
        "{}",
        pretty(&events)
    );
    for e in &events {
        assert_eq!(e["source"]["component"], "flux-order", "{}", pretty(e));
        assert_eq!(e["reportingComponent"], "flux-order", "{}", pretty(e));
        assert_eq!(e["involvedObject"]["kind"], "ConfigMap", "{}", pretty(e));
        // Once the inventory exists (it is written after the health checks of a first apply),
        // its uid is named too, so `kubectl describe configmap` lists the event.
        if e["reason"] == "ReconciliationSucceeded" {
            assert!(e["involvedObject"]["uid"].is_string(), "{}", pretty(e));
        }
    }
    // A second, unchanged run writes nothing, events included.
    cluster.clear_requests();
    f.apply(&cluster, &[]).expect_code(0);
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
}

#[test]
fn no_events_records_none() {
    let cluster = Cluster::start();
    let f = flaky_fleet();
    f.apply(&cluster, &["--no-events"]).expect_code(0);
    assert!(
        cluster.list("v1", "Event").is_empty(),
        "{}",
        pretty(&cluster.list("v1", "Event"))
    );
    // Without the flag, the same fleet's first apply records its story.
    let other = Cluster::start();
    f.apply(&other, &[]).expect_code(0);
    assert!(!other.list("v1", "Event").is_empty());
}
