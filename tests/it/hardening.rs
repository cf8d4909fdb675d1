//! Hardening (issue 15): nothing from outside the repo, secrets that never leak, Ctrl-C that
//! always works, errors that tell the truth. Each test drives the release-shaped binary against
//! a fleet of one Kustomization `flux-system/a` (path `./apps/a`) and, where a cluster is needed,
//! the test API server; "nothing written" is asserted on the server's request log.

use std::time::{Duration, Instant};

use crate::util::*;

/// A git fleet of one Kustomization `flux-system/a` building `./apps/a`, with `files` under it.
fn one(spec: &str, files: &[(&str, &str)]) -> Fleet {
    let mut f = Fleet::new()
        .git()
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", spec));
    for (rel, content) in files {
        f = f.file(rel, content);
    }
    f
}

/// Runs `plan` with `args` on a fleet with a problem: exit 2 (nothing printed on stdout) when
/// the fleet cannot be read at all, or 4 (planned with failures: the failure listed) when a
/// Kustomization fails. Returns stderr.
fn plan_fails(f: &Fleet, args: &[&str]) -> String {
    let out = f.cmd("plan").args(args).output().expect("plan");
    let run = Run::from_output(&out);
    match run.code {
        2 => assert!(run.stdout.is_empty(), "stdout on exit 2\n{run}"),
        4 => assert!(
            run.stdout.contains("Failures ("),
            "failures not listed\n{run}"
        ),
        _ => panic!("expected exit 2 or 4\n{run}"),
    }
    run.stderr
}

/// Runs `apply` and checks the invalid-input promise: exit 2, stdout empty, no write request.
fn apply_refused(f: &Fleet, cluster: &Cluster) -> String {
    let run = f.run("apply", cluster, &[]);
    run.expect_code(2);
    assert!(run.stdout.is_empty(), "stdout on invalid input\n{run}");
    assert!(
        cluster.writes().is_empty(),
        "exit 2 must write nothing:\n{}",
        cluster.log_text()
    );
    run.stderr
}

// ---------------------------------------------------------------------------------------------
// D1: every file a build reads resolves inside the source root.

#[test]
fn a_generator_file_with_an_absolute_path_is_refused_before_any_write() {
    let cluster = Cluster::start();
    let f = one(
        "",
        &[(
            "apps/a/kustomization.yaml",
            "configMapGenerator:\n- name: a-host\n  namespace: default\n  files: [host=/etc/hostname]\n",
        )],
    );
    let stderr = apply_refused(&f, &cluster);
    for needle in [
        "Kustomization flux-system/a",
        "apps/a/kustomization.yaml",
        "/etc/hostname",
        "not in or below the source root",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    // plan and build refuse it too: nothing from outside the repo is ever shown.
    let stderr = f.fails("build", &["--name", "flux-system/a"]);
    assert!(stderr.contains("/etc/hostname"), "{stderr}");
}

#[test]
fn relative_paths_that_climb_out_of_the_repo_are_refused() {
    let f = one(
        "",
        &[(
            "apps/a/kustomization.yaml",
            "secretGenerator:\n- name: a-s\n  namespace: default\n  envs: [../../../../../../../../etc/hostname]\n",
        )],
    );
    let stderr = plan_fails(&f, &[]);
    assert!(
        stderr.contains("secretGenerator[0].envs") && stderr.contains("not in or below"),
        "{stderr}"
    );
}

#[test]
fn a_file_symlink_out_of_the_repo_is_refused_and_one_inside_is_absent_as_in_an_artifact() {
    let cluster = Cluster::start();
    let f = one(
        "",
        &[
            (
                "apps/a/kustomization.yaml",
                "configMapGenerator:\n- name: a-host\n  namespace: default\n  files: [host=leak]\n",
            ),
            ("apps/a/real.txt", "inside\n"),
        ],
    );
    std::os::unix::fs::symlink("/etc/hostname", f.root().join("apps/a/leak")).unwrap();
    let stderr = apply_refused(&f, &cluster);
    assert!(
        stderr.contains("apps/a/leak is a symlink out of the source root"),
        "{stderr}"
    );
    // A symlink to a file of the repo is not in a Flux artifact either: refused, with the reason.
    std::fs::remove_file(f.root().join("apps/a/leak")).unwrap();
    std::os::unix::fs::symlink("real.txt", f.root().join("apps/a/leak")).unwrap();
    let stderr = apply_refused(&f, &cluster);
    assert!(
        stderr.contains("a Flux artifact carries no symlinks"),
        "{stderr}"
    );
}

#[test]
fn a_symlinked_yaml_file_is_not_listed_by_the_generated_kustomization() {
    // No kustomization.yaml: Flux lists the YAML files of the artifact, which has no symlinks.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("host.yaml"),
        config_map("default", "a-outside", &[("k", "from outside")]),
    )
    .unwrap();
    let f = one(
        "",
        &[("apps/a/cm.yaml", &config_map("default", "a-inside", &[]))],
    );
    std::os::unix::fs::symlink(
        outside.path().join("host.yaml"),
        f.root().join("apps/a/host.yaml"),
    )
    .unwrap();
    let objects = f.build("flux-system/a", &[]);
    let names: Vec<&str> = objects
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["a-inside"], "{}", pretty(&objects));
}

#[test]
fn a_plugin_config_cannot_read_outside_the_repo_either() {
    let f = one(
        "",
        &[
            ("apps/a/kustomization.yaml", "generators: [gen.yaml]\n"),
            (
                "apps/a/gen.yaml",
                "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: a-gen, namespace: default}\nfiles: [/etc/hostname]\n",
            ),
        ],
    );
    let stderr = plan_fails(&f, &[]);
    assert!(stderr.contains("/etc/hostname"), "{stderr}");
    assert!(stderr.contains("generators"), "{stderr}");
}

#[test]
fn files_of_the_repo_outside_the_path_still_build() {
    // `../` inside the source root is allowed, as in Flux.
    let f = one(
        "",
        &[
            (
                "apps/a/kustomization.yaml",
                "configMapGenerator:\n- name: a-shared\n  namespace: default\n  files: [../shared/settings.txt]\n",
            ),
            ("apps/shared/settings.txt", "hello\n"),
        ],
    );
    let objects = f.build("flux-system/a", &[]);
    assert_eq!(objects.len(), 1, "{}", pretty(&objects));
    assert_eq!(objects[0]["data"]["settings.txt"], "hello\n");
}

// ---------------------------------------------------------------------------------------------
// D5: values substituted from a Secret are masked on every output path.

const OLD_VALUE: &str = "hunter2-old-value";
const NEW_VALUE: &str = "hunter2-new-value";

/// `a` substitutes `${password}` from the cluster's Secret `flux-system/vars` into a ConfigMap.
fn substituted_from_secret() -> Fleet {
    one(
        "postBuild:\n  substituteFrom:\n    - kind: Secret\n      name: vars\n",
        &[(
            "apps/a/cm.yaml",
            &config_map(
                "default",
                "a-cfg",
                &[
                    ("url", "postgres://app:${password}@db"),
                    ("plain", "${password}"),
                ],
            ),
        )],
    )
}

fn put_secret(cluster: &Cluster, value: &str) {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "vars", "namespace": "flux-system"},
        "stringData": {"password": value},
    });
    cluster.apply(secret, "test").expect("secret");
}

fn assert_hidden(run: &Run, values: &[&str]) {
    for v in values {
        assert!(
            !run.stdout.contains(v) && !run.stderr.contains(v),
            "{v} shown in clear\n{run}"
        );
    }
}

#[test]
fn diff_masks_values_substituted_from_a_secret_old_and_new() {
    let cluster = Cluster::start();
    cluster
        .create(serde_json::from_str(&yaml_json(&namespace("flux-system"))).unwrap())
        .expect("namespace");
    put_secret(&cluster, OLD_VALUE);
    let f = substituted_from_secret();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_hidden(&run, &[OLD_VALUE]);
    put_secret(&cluster, NEW_VALUE);
    let run = f.diff(&cluster, &[]);
    run.expect_code(1);
    assert_hidden(&run, &[OLD_VALUE, NEW_VALUE]);
    assert!(
        run.stdout.contains("ConfigMap/default/a-cfg configured")
            && run.stdout.contains("*** (before)")
            && run.stdout.contains("*** (after)"),
        "the change is shown, masked\n{run}"
    );
    // --show-secrets prints them, as build --show-secrets does.
    let run = f.diff(&cluster, &["--show-secrets"]);
    assert!(run.stdout.contains(NEW_VALUE), "{run}");
    // plan (text, json, yaml) and build mask them too.
    for format in ["text", "json", "yaml"] {
        let out = f
            .cmd("plan")
            .args(["-o", format, "--kubeconfig"])
            .arg(cluster.kubeconfig())
            .output()
            .expect("plan");
        assert_hidden(&Run::from_output(&out), &[OLD_VALUE, NEW_VALUE]);
    }
}

#[test]
fn an_api_error_echoing_a_secret_value_is_masked_in_apply_output() {
    // The server rejects the object and echoes the substituted value in its message.
    let cluster = Cluster::start();
    cluster
        .create(serde_json::from_str(&yaml_json(&namespace("flux-system"))).unwrap())
        .expect("namespace");
    put_secret(&cluster, NEW_VALUE);
    let f = one(
        "postBuild:\n  substituteFrom:\n    - kind: Secret\n      name: vars\n",
        &[(
            "apps/a/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a-${password}-Bad_Name\n  namespace: default\n",
        )],
    );
    let run = f.apply(&cluster, &[]);
    assert_ne!(run.code, 0, "{run}");
    assert_hidden(&run, &[NEW_VALUE]);
    let run = f.run("apply", &cluster, &[]);
    assert_hidden(&run, &[NEW_VALUE]);
    let run = f.diff(&cluster, &[]);
    assert_hidden(&run, &[NEW_VALUE]);
}

/// A YAML manifest as JSON text.
fn yaml_json(text: &str) -> String {
    yaml(text).to_string()
}

// ---------------------------------------------------------------------------------------------
// D6: a YAML error names file, line and column, and never quotes the source.

#[test]
fn a_yaml_syntax_error_next_to_a_secret_never_prints_the_secret() {
    let broken = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: default\nstringData:\n  password: topsecretvalue\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: default\ndata:\n  a: [unclosed\n";
    let f = one("", &[("apps/a/cm.yaml", &config_map("default", "a", &[]))])
        .file("clusters/c/all.yaml", broken);
    for args in [&[][..], &["--scan"][..]] {
        let stderr = plan_fails(&f, args);
        assert!(
            stderr.contains("clusters/c/all.yaml") && stderr.contains("line 15, column 6"),
            "{args:?}: file, line and column\n{stderr}"
        );
        assert!(!stderr.contains("topsecretvalue"), "{args:?}: {stderr}");
    }
    // The same in a Kustomization's own path (Flux's generated kustomization).
    let f = one("", &[("apps/a/all.yaml", broken)]);
    let stderr = plan_fails(&f, &[]);
    assert!(stderr.contains("apps/a/all.yaml"), "{stderr}");
    assert!(!stderr.contains("topsecretvalue"), "{stderr}");
}

#[test]
fn a_document_without_a_name_is_described_not_quoted() {
    let f = one(
        "",
        &[
            ("apps/a/kustomization.yaml", "resources: [s.yaml]\n"),
            (
                "apps/a/s.yaml",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  namespace: default\nstringData:\n  password: topsecretvalue\n",
            ),
        ],
    );
    let stderr = plan_fails(&f, &[]);
    assert!(!stderr.contains("topsecretvalue"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// D2, D9: a signal always works — requests, retries and waits are cancelled, children killed,
// temporary trees removed.

/// Sends `signal` (`INT`, `TERM`) to the spawned run's PID only (as CI runners and pods do).
fn signal(child: &std::process::Child, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// Waits until `cond` holds (polling), failing after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the spawned run hits `fault`; fails with what the run printed if it ends first.
fn wait_for_fault(cluster: &Cluster, fault: FaultId, hits: u64, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.fault_hits(fault) < hits {
        if child.try_wait().expect("try_wait").is_some() || Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.stdout.take().map(std::io::read_to_string);
            let err = child.stderr.take().map(std::io::read_to_string);
            panic!(
                "the run never reached the fault\n{out:?}\n{err:?}\n{}",
                cluster.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A private TMPDIR, to see what a run leaves behind.
fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("flux-order-tmp-")
        .tempdir()
        .expect("temp dir")
}

fn spawn_apply(f: &Fleet, cluster: &Cluster, tmp: &std::path::Path) -> std::process::Child {
    f.std_cmd("apply")
        .env("TMPDIR", tmp)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["-o", "json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn one_config_map() -> Fleet {
    one(
        "",
        &[(
            "apps/a/cm.yaml",
            &config_map("default", "a-cfg", &[("k", "v")]),
        )],
    )
}

#[test]
fn ctrl_c_cancels_a_request_to_a_frozen_api_server_within_a_second() {
    let cluster = Cluster::start();
    let frozen = cluster.inject(Fault::latency(
        Matcher::verb(Verb::Apply).name_contains("a-cfg"),
        Duration::from_secs(3600),
    ));
    let tmp = tmpdir();
    let f = one_config_map();
    let mut child = spawn_apply(&f, &cluster, tmp.path());
    wait_for_fault(&cluster, frozen, 1, &mut child);
    let sent = Instant::now();
    signal(&child, "INT");
    let run = finish(child, Duration::from_secs(20));
    let took = sent.elapsed();
    run.expect_code(130);
    assert!(
        took < Duration::from_secs(4),
        "exit {took:?} after Ctrl-C\n{run}"
    );
    assert_eq!(run.outcome("a"), "failed", "{run}");
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

#[test]
fn ctrl_c_cuts_a_retry_after_wait_short() {
    let cluster = Cluster::start();
    let busy = cluster.inject(Fault::new(
        Matcher::verb(Verb::Apply).name_contains("a-cfg"),
        FaultAction::Status {
            code: 429,
            retry_after: Some(60),
        },
    ));
    let tmp = tmpdir();
    let f = one_config_map();
    let mut child = spawn_apply(&f, &cluster, tmp.path());
    wait_for_fault(&cluster, busy, 1, &mut child);
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    signal(&child, "INT");
    let run = finish(child, Duration::from_secs(30));
    run.expect_code(130);
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "exit {:?} after Ctrl-C\n{run}",
        sent.elapsed()
    );
}

#[test]
fn an_interrupted_apply_records_what_it_applied() {
    // b is frozen; a was applied before the signal: a's inventory lists it.
    let cluster = Cluster::start();
    let frozen = cluster.inject(Fault::latency(
        Matcher::verb(Verb::Apply).name_contains("a-frozen"),
        Duration::from_secs(3600),
    ));
    let f = one(
        "",
        &[
            ("apps/a/cm.yaml", &config_map("default", "a-cfg", &[])),
            (
                "apps/a/frozen.yaml",
                &config_map("default", "a-frozen", &[]),
            ),
        ],
    );
    let tmp = tmpdir();
    let mut child = spawn_apply(&f, &cluster, tmp.path());
    wait_for_fault(&cluster, frozen, 1, &mut child);
    signal(&child, "TERM");
    let run = finish(child, Duration::from_secs(20));
    run.expect_code(130);
    let inv = cluster
        .get("v1", "ConfigMap", Some("flux-system"), "flux-order-a")
        .unwrap_or_else(|| panic!("no inventory written\n{run}\n{}", cluster.log_text()));
    assert!(
        inv["data"]["inventory"]
            .as_str()
            .unwrap_or("")
            .contains("default_a-cfg__ConfigMap"),
        "{}",
        pretty(&inv)
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    // After the first signal the inventory write still gets one bounded attempt; against a
    // frozen server a second signal does not wait for it.
    let cluster = Cluster::start();
    let frozen = cluster.inject(Fault::latency(
        Matcher::verb(Verb::Apply),
        Duration::from_secs(3600),
    ));
    let tmp = tmpdir();
    let f = one_config_map();
    let mut child = spawn_apply(&f, &cluster, tmp.path());
    wait_for_fault(&cluster, frozen, 1, &mut child);
    signal(&child, "INT");
    wait_for_fault(&cluster, frozen, 2, &mut child);
    let sent = Instant::now();
    signal(&child, "INT");
    let run = finish(child, Duration::from_secs(20));
    run.expect_code(130);
    assert!(
        sent.elapsed() < Duration::from_millis(1500),
        "exit {:?} after the second signal\n{run}",
        sent.elapsed()
    );
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

/// A stand-in kustomize that records its PID and a grandchild's, then waits forever.
fn hanging_kustomize(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let pids = dir.join("pids");
    let bin = dir.join("kustomize");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\necho $$ >> {p}\nsleep 300 &\necho $! >> {p}\nwait\n",
            p = pids.display()
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&bin).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&bin, perm).unwrap();
    (bin, pids)
}

fn alive(pid: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) is dead already.
    !stat.is_empty()
        && stat
            .rsplit(") ")
            .next()
            .is_some_and(|r| !r.starts_with('Z'))
}

#[test]
fn a_signal_during_the_build_kills_kustomize_and_its_children_and_removes_temp_trees() {
    let tools = tempfile::tempdir().unwrap();
    let (bin, pids) = hanging_kustomize(tools.path());
    let f = one(
        "",
        &[
            ("apps/a/kustomization.yaml", "resources: [cm.yaml]\n"),
            ("apps/a/cm.yaml", &config_map("default", "a-cfg", &[])),
        ],
    );
    for sig in ["TERM", "INT"] {
        let _ = std::fs::remove_file(&pids);
        let tmp = tmpdir();
        let child = f
            .std_cmd("plan")
            .env("TMPDIR", tmp.path())
            .arg("--kustomize-bin")
            .arg(&bin)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        wait_for("kustomize to start", Duration::from_secs(30), || {
            std::fs::read_to_string(&pids).is_ok_and(|t| t.lines().count() >= 2)
        });
        signal(&child, sig);
        let run = finish(child, Duration::from_secs(10));
        run.expect_code(130);
        assert!(run.stderr.contains("interrupted"), "{run}");
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.lines() {
            wait_for(
                &format!("process {pid} to end"),
                Duration::from_secs(5),
                || !alive(pid),
            );
        }
        assert!(
            leftovers(tmp.path()).is_empty(),
            "{sig}: {:?}",
            leftovers(tmp.path())
        );
    }
}

// ---------------------------------------------------------------------------------------------
// D4: the first request takes the same retry policy as every other one.

fn version_requests() -> Matcher {
    Matcher {
        path_contains: Some("/version".into()),
        ..Matcher::any()
    }
}

#[test]
fn the_first_request_is_retried_on_500_and_on_a_dropped_connection() {
    for fault in [
        Fault::status(version_requests(), 500).first(2),
        Fault::drop_connection(version_requests()).first(2),
    ] {
        let cluster = Cluster::start();
        let id = cluster.inject(fault);
        let run = one_config_map().apply(&cluster, &[]);
        run.expect_code(0);
        assert_eq!(cluster.fault_hits(id), 2, "{run}");
    }
}

#[test]
fn a_first_request_that_keeps_failing_exits_3_with_a_readable_message() {
    let cluster = Cluster::start();
    cluster.inject(Fault::status(version_requests(), 500));
    let f = one_config_map();
    let run = f.run("apply", &cluster, &[]);
    run.expect_code(3);
    assert!(
        run.stderr.contains("cannot reach the API server")
            && run.stderr.contains("injected fault: HTTP 500")
            && !run.stderr.contains("Status {")
            && !run.stderr.contains("ErrorResponse"),
        "{run}"
    );
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
}

// ---------------------------------------------------------------------------------------------
// D10: nothing bounds a build → a build timeout and a memory bound, naming the Kustomization.

fn stand_in(dir: &std::path::Path, name: &str, script: &str) -> std::path::PathBuf {
    let bin = dir.join(name);
    std::fs::write(&bin, format!("#!/bin/sh\n{script}\n")).unwrap();
    let mut perm = std::fs::metadata(&bin).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&bin, perm).unwrap();
    bin
}

fn kustomized() -> Fleet {
    one(
        "",
        &[
            ("apps/a/kustomization.yaml", "resources: [cm.yaml]\n"),
            ("apps/a/cm.yaml", &config_map("default", "a-cfg", &[])),
        ],
    )
}

#[test]
fn a_build_that_never_ends_is_stopped_by_the_build_timeout() {
    let tools = tempfile::tempdir().unwrap();
    let bin = stand_in(tools.path(), "kustomize", "sleep 300");
    let f = kustomized();
    let started = Instant::now();
    let stderr = plan_fails(
        &f,
        &[
            "--kustomize-bin",
            bin.to_str().unwrap(),
            "--build-timeout",
            "1s",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("Kustomization flux-system/a")
            && stderr.contains("stopped after 1s (--build-timeout)"),
        "{stderr}"
    );
}

#[test]
fn a_build_that_eats_memory_is_stopped_by_the_memory_bound() {
    let tools = tempfile::tempdir().unwrap();
    let bin = stand_in(
        tools.path(),
        "kustomize",
        "x=$(head -c 150000000 /dev/zero | tr '\\0' a)\nsleep 300",
    );
    let f = kustomized();
    let stderr = plan_fails(
        &f,
        &[
            "--kustomize-bin",
            bin.to_str().unwrap(),
            "--build-memory-limit",
            "64Mi",
        ],
    );
    assert!(
        stderr.contains("Kustomization flux-system/a")
            && stderr.contains("more than 64 MiB of memory (--build-memory-limit)"),
        "{stderr}"
    );
}

#[test]
fn bounds_must_be_more_than_zero() {
    // D12: --request-timeout 0s was accepted; every bound must be positive.
    let cluster = Cluster::start();
    let f = one_config_map();
    for args in [
        &["--request-timeout", "0s"][..],
        &["--timeout", "0s"][..],
        &["--build-timeout", "0s"][..],
        &["--build-memory-limit", "0"][..],
    ] {
        let run = f.run("apply", &cluster, args);
        run.expect_code(2);
        assert!(run.stderr.contains(args[0]), "{args:?}\n{run}");
    }
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
}

// ---------------------------------------------------------------------------------------------
// D13, D14: errors name repo paths, and both loaders agree.

#[test]
fn kustomize_errors_name_repo_paths_never_the_temporary_shadow() {
    let f = one(
        "",
        &[(
            "apps/a/kustomization.yaml",
            "resources: [missing.yaml, ../b]\n",
        )],
    );
    let stderr = plan_fails(&f, &[]);
    assert!(stderr.contains("'apps/a/missing.yaml'"), "{stderr}");
    let root = f.root().display().to_string();
    for shadow in ["/dev/shm", ".flux-order-", root.as_str()] {
        assert!(!stderr.contains(shadow), "{shadow} in\n{stderr}");
    }
}

/// `depth` nested flow sequences in a ConfigMap-like document.
fn nested(depth: usize) -> String {
    let mut v = "x".to_string();
    for _ in 0..depth {
        v = format!("[{v}]");
    }
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\n  namespace: default\nspec: {v}\n"
    )
}

#[test]
fn scan_and_build_agree_on_nesting_depth_and_never_overflow() {
    for (depth, ok) in [(100, true), (126, true), (129, false), (2000, false)] {
        for place in ["clusters/c/deep.yaml", "apps/a/deep.yaml"] {
            let f = one("", &[("apps/a/cm.yaml", &config_map("default", "a", &[]))])
                .file(place, &nested(depth));
            for args in [&[][..], &["--scan"][..]] {
                let out = f.cmd("plan").args(args).output().expect("plan");
                let run = Run::from_output(&out);
                if ok {
                    run.expect_code(0);
                } else {
                    // 2 when the cluster root cannot be read, 4 when Kustomization a fails.
                    assert!(
                        [2, 4].contains(&run.code) && run.stderr.contains("deep.yaml"),
                        "{depth} {place} {args:?}\n{run}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// D8: an API server that dies mid-apply reads as such, and an unwritten inventory is an error
// naming what it leaves unrecorded.

#[test]
fn an_api_server_that_dies_mid_apply_is_reported_as_gone_with_what_is_unrecorded() {
    let cluster = Cluster::start();
    let f = one(
        "wait: true\ntimeout: 5m",
        &[(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("never")),
        )],
    );
    let tmp = tmpdir();
    let mut child = f
        .std_cmd("apply")
        .env("TMPDIR", tmp.path())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(["-o", "json", "--retry-for", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.writes_named("a-web").is_empty() {
        assert!(Instant::now() < deadline, "a-web never written");
        assert!(child.try_wait().unwrap().is_none(), "apply ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    drop(cluster); // the API server dies
    let run = finish(child, Duration::from_secs(90));
    run.expect_code(1);
    let reason = run.result("a")["reason"].as_str().unwrap_or("").to_string();
    assert!(
        reason.contains("the API server stopped answering") && !reason.contains("timeout waiting"),
        "{reason}\n{run}"
    );
    assert!(
        reason.contains("writing the inventory failed")
            && reason.contains("Connection refused")
            && reason.contains("not recorded: Deployment/default/a-web"),
        "{reason}\n{run}"
    );
}

// ---------------------------------------------------------------------------------------------
// D7: diff covers what apply would do. D11: a failing server is exit 3, not invalid input.

fn demo(cluster: &Cluster, subcommand: &str, args: &[&str]) -> Run {
    let out = flux_order()
        .current_dir(repo_root())
        .arg(subcommand)
        .arg("examples/fleet/clusters/demo")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .timeout(Duration::from_secs(120))
        .output()
        .expect("run");
    Run::from_output(&out)
}

#[test]
fn diff_right_after_a_complete_apply_of_the_example_fleet_finds_no_change() {
    let cluster = Cluster::start();
    let apply = demo(&cluster, "apply", &["-o", "json"]);
    assert_eq!(apply.outcome("flux-system/reporting"), "skipped", "{apply}");
    // N3: the README's quick start says exactly this about the demo's apply.
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    apply.expect_code(1);
    assert!(
        apply.stderr.contains("error: 1 Kustomization(s) not ready"),
        "{apply}"
    );
    for promise in [
        "The demo's `apply` ends with exit code 1",
        "error: 1 Kustomization(s) not ready",
        "while [ ! -s /tmp/kc.yaml ]",
        "kill $server",
    ] {
        assert!(readme.contains(promise), "README lacks {promise:?}");
    }
    let diff = demo(&cluster, "diff", &[]);
    diff.expect_code(0);
    assert!(
        diff.stdout
            .contains("Kustomization flux-system/reporting skipped")
            && diff.stdout.contains("blocked by flux-system/db-migrations"),
        "{diff}"
    );
    assert!(
        !cluster.writes().is_empty() && !diff.stdout.contains(" created"),
        "{diff}"
    );
}

#[test]
fn diff_against_a_failing_server_exits_3() {
    let cluster = Cluster::start();
    cluster.inject(Fault::status(Matcher::verb(Verb::Apply).dry_run(true), 500));
    let f = one_config_map();
    let run = f.diff(&cluster, &["--request-timeout", "5s"]);
    run.expect_code(3);
    assert!(run.stderr.contains("injected fault: HTTP 500"), "{run}");
}

// ---------------------------------------------------------------------------------------------
// D15–D18

#[test]
fn an_unknown_spec_field_is_warned_about_as_the_api_server_would() {
    let f = one(
        "dependson:\n  - name: b\n",
        &[("apps/a/cm.yaml", &config_map("default", "a", &[]))],
    );
    let out = f.cmd("plan").output().expect("plan");
    let run = Run::from_output(&out);
    run.expect_code(0);
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("unknown field \"spec.dependson\"")
            && all.contains("did you mean spec.dependsOn?"),
        "{run}"
    );
}

#[test]
fn substitute_from_reads_the_cluster_for_objects_flux_order_does_not_apply() {
    let cluster = Cluster::start();
    cluster
        .create(serde_json::from_str(&yaml_json(&namespace("flux-system"))).unwrap())
        .expect("namespace");
    for name in ["in-suspended", "unowned"] {
        cluster
            .apply(
                serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": "flux-system"},
                    "data": {name.replace('-', "_"): "from-cluster"},
                }),
                "test",
            )
            .expect("config map");
    }
    let f = one(
        "postBuild:\n  substituteFrom:\n    - kind: ConfigMap\n      name: in-suspended\n    - kind: ConfigMap\n      name: unowned\n",
        &[(
            "apps/a/cm.yaml",
            &config_map("default", "a-cfg", &[("x", "${in_suspended}"), ("y", "${unowned}")]),
        )],
    )
    .file(
        "clusters/c/vars.yaml",
        &kustomization("vars", "./apps/vars", "suspend: true"),
    )
    .file(
        "apps/vars/cm.yaml",
        &config_map("flux-system", "in-suspended", &[("in_suspended", "from-fleet")]),
    )
    .file(
        "clusters/c/unowned.yaml",
        &config_map("flux-system", "unowned", &[("unowned", "from-fleet")]),
    );
    let run = f.apply(&cluster, &[]);
    assert_eq!(run.outcome("a"), "ready", "{run}");
    let cm = cluster
        .get("v1", "ConfigMap", Some("default"), "a-cfg")
        .expect("a-cfg");
    assert_eq!(cm["data"]["x"], "from-cluster", "{}", pretty(&cm));
    assert_eq!(cm["data"]["y"], "from-cluster", "{}", pretty(&cm));
}

#[test]
fn an_empty_cluster_directory_is_warned_about_and_apply_refuses_it() {
    let cluster = Cluster::start();
    let f = Fleet::new().git().dir("clusters/c");
    let out = f.cmd("plan").output().expect("plan");
    let run = Run::from_output(&out);
    run.expect_code(0);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("no Flux Kustomization found"),
        "{run}"
    );
    let run = f.run("apply", &cluster, &[]);
    run.expect_code(2);
    assert!(run.stderr.contains("nothing to apply"), "{run}");
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
}

#[test]
fn build_of_an_unknown_name_says_so_in_its_own_words() {
    let f = one_config_map();
    let stderr = f.fails("build", &["--name", "nope/x"]);
    assert!(
        stderr.contains("--name nope/x: no such Kustomization")
            && stderr.contains("flux-system/a")
            && !stderr.contains("--only"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// D19: integers beyond 64 bits; plan's dir of an emulated ExternalArtifact.

#[test]
fn an_integer_beyond_64_bits_is_warned_about_not_silently_turned_into_a_float() {
    let f = one(
        "",
        &[(
            "apps/a/w.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: default\n  annotations:\n    big: \"1\"\nspec:\n  big: 99999999999999999999\n  max: 18446744073709551615\n",
        )],
    );
    let plan = f.plan(&[]);
    let warnings = plan["warnings"].to_string();
    assert!(
        warnings.contains("spec.big: 1e20 is an integer beyond 64 bits")
            && !warnings.contains("spec.max"),
        "{warnings}"
    );
}

#[test]
fn plan_never_points_at_a_temporary_directory_gone_when_it_exits() {
    let generator = "apiVersion: source.extensions.fluxcd.io/v1beta1\nkind: ArtifactGenerator\nmetadata:\n  name: gen\n  namespace: flux-system\nspec:\n  sources:\n    - alias: repo\n      kind: GitRepository\n      name: flux-system\n  artifacts:\n    - name: apps\n      copy:\n        - from: \"@repo/apps/**\"\n          to: \"@artifact/\"\n";
    let ks = "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: a\n  namespace: flux-system\nspec:\n  interval: 10m\n  prune: true\n  sourceRef:\n    kind: ExternalArtifact\n    name: apps\n  path: ./a\n";
    let f = Fleet::new()
        .git()
        .file("clusters/c/gen.yaml", generator)
        .file("clusters/c/a.yaml", ks)
        .file("apps/a/cm.yaml", &config_map("default", "a", &[]));
    let plan = f.plan(&[]);
    let k = plan_entry(&plan, "flux-system/a");
    assert_eq!(k["sourceMapping"], "artifact-generator", "{}", pretty(k));
    assert!(k["dir"].is_null(), "{}", pretty(k));
    assert_eq!(k["objectCount"], 1);
}

// ---------------------------------------------------------------------------------------------
// N4: results on stdout, progress on stderr.

#[test]
fn apply_redirected_to_a_file_keeps_the_summary() {
    let cluster = Cluster::start();
    let f = one_config_map();
    let run = f.run("apply", &cluster, &[]);
    run.expect_code(0);
    assert!(
        run.stdout.contains("KUSTOMIZATION") && run.stdout.contains("flux-system/a"),
        "{run}"
    );
    assert!(run.stderr.contains("rollout of 1 Kustomizations"), "{run}");
}

// ---------------------------------------------------------------------------------------------
// The standalone test API server: --fault rules and --request-log FILE.

/// `target/debug/examples/test-apiserver`, built by `cargo test` beside this test binary.
fn standalone_server() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    dir.join("examples/test-apiserver")
}

#[test]
fn the_standalone_test_api_server_injects_faults_and_writes_its_request_log() {
    let bin = standalone_server();
    assert!(bin.is_file(), "{} not built", bin.display());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kc.yaml");
    let log = dir.path().join("requests.jsonl");
    let mut server = std::process::Command::new(&bin)
        .args(["--port", "0", "--kubeconfig"])
        .arg(&kubeconfig)
        .args(["--fault", "verb=apply,name=a-cfg,status=500,first=2"])
        .arg("--request-log")
        .arg(&log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the test API server");
    wait_for("the kubeconfig", Duration::from_secs(30), || {
        kubeconfig.is_file()
    });
    let f = one_config_map();
    let out = f
        .cmd("apply")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("apply");
    let run = Run::from_output(&out);
    run.expect_code(0);
    wait_for(
        "the inventory write in the request log",
        Duration::from_secs(10),
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"name\":\"flux-order-a\"")),
    );
    let _ = server.kill();
    let _ = server.wait();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let faults: Vec<&serde_json::Value> = lines.iter().filter(|l| l["fault"] == true).collect();
    assert_eq!(faults.len(), 2, "{}", pretty(&lines));
    assert!(
        faults
            .iter()
            .all(|l| l["status"] == 500 && l["verb"] == "apply" && l["name"] == "a-cfg"),
        "{}",
        pretty(&faults)
    );
    assert!(
        lines.iter().any(|l| l["verb"] == "apply"
            && l["name"] == "a-cfg"
            && l["status"]
                .as_u64()
                .is_some_and(|s| (200..300).contains(&s))),
        "the third attempt went through: {}",
        pretty(&lines)
    );
}
