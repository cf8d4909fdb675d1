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
    let stderr = f.fails("plan", &[]);
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
    let stderr = f.fails("plan", &[]);
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

#[allow(dead_code)]
fn _uses(_: Instant, _: Duration) {}

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
        let stderr = f.fails("plan", args);
        assert!(
            stderr.contains("clusters/c/all.yaml") && stderr.contains("line 15, column 6"),
            "{args:?}: file, line and column\n{stderr}"
        );
        assert!(!stderr.contains("topsecretvalue"), "{args:?}: {stderr}");
    }
    // The same in a Kustomization's own path (Flux's generated kustomization).
    let f = one("", &[("apps/a/all.yaml", broken)]);
    let stderr = f.fails("plan", &[]);
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
    let stderr = f.fails("plan", &[]);
    assert!(!stderr.contains("topsecretvalue"), "{stderr}");
}
