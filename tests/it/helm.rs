//! HelmReleases offline: plan, graph and build render them with the real Helm 4 (on PATH under
//! the test command), post-rendered as helm-controller does; their graph edges and cycles; chart
//! overrides; what happens without helm. Installing them is in `tiers.rs`, on both API servers.

use serde_json::Value;

use crate::util::*;

/// A fleet: Kustomization `apps` holds namespace `web`, a Secret of values and HelmReleases of
/// the fixture charts kept in the repo.
fn fleet(releases: &str) -> Fleet {
    let f = Fleet::new()
        .file(
            "clusters/c/apps.yaml",
            &kustomization("apps", "./apps", "wait: true"),
        )
        .file("apps/ns.yaml", &namespace("web"))
        .file(
            "apps/values.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-values\n  namespace: web\nstringData:\n  values.yaml: |\n    message: top-s3cret\n",
        )
        .file("apps/releases.yaml", releases);
    copy_dir(&fixtures("charts/plain"), &f.root().join("charts/plain"));
    copy_dir(&fixtures("charts/hooks"), &f.root().join("charts/hooks"));
    f
}

fn release(name: &str, chart: &str, extra: &str) -> String {
    let extra: String = extra.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: web\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: ./charts/{chart}\n      sourceRef:\n        kind: GitRepository\n        name: flux-system\n        namespace: flux-system\n{extra}"
    )
}

fn helm_entries(plan: &Value) -> Vec<Value> {
    plan["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .flat_map(|w| w["helmReleases"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn plan_renders_each_helm_release_with_chart_release_objects_and_edges() {
    let f = fleet(
        &(release(
            "web",
            "plain",
            "valuesFrom:\n  - kind: Secret\n    name: web-values\nvalues:\n  extraConfig: true\n  replicas: 2",
        ) + &release(
            "jobs",
            "hooks",
            "targetNamespace: batch\ndependsOn:\n  - name: web",
        )),
    );
    let plan = f.plan(&[]);
    assert_eq!(plan["helmReleases"], 2, "{}", pretty(&plan));
    let hrs = helm_entries(&plan);
    let web = hrs
        .iter()
        .find(|h| h["id"] == "HelmRelease/web/web")
        .expect("web");
    assert_eq!(web["chart"], "plain-1.2.3");
    assert_eq!(web["kustomization"], "flux-system/apps");
    assert_eq!(web["releaseName"], "web");
    assert_eq!(web["objectCount"], 4, "{}", pretty(web));
    assert_eq!(web["kinds"]["ConfigMap"], 2);
    let jobs = hrs
        .iter()
        .find(|h| h["id"] == "HelmRelease/web/jobs")
        .expect("jobs");
    assert_eq!(jobs["releaseName"], "batch-jobs", "targetNamespace-name");
    assert_eq!(jobs["releaseNamespace"], "batch");
    assert_eq!(jobs["storageNamespace"], "web");
    assert_eq!(
        jobs["dependsOn"],
        serde_json::json!(["HelmRelease/web/web"])
    );
    assert_eq!(
        jobs["hooks"].as_array().map(Vec::len),
        Some(3),
        "{}",
        pretty(jobs)
    );
    // Waves: apps, then web (after apps applied it), then jobs (after web).
    let wave_of = |id: &str| {
        plan["waves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| {
                w["helmReleases"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h["id"] == id))
            })
            .map(|w| w["wave"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("{id} in no wave"))
    };
    assert_eq!(wave_of("HelmRelease/web/web"), 1);
    assert_eq!(wave_of("HelmRelease/web/jobs"), 2);
    // The text plan says the same, and never prints the Secret's value.
    let out = f.cmd("plan").assert().success().get_output().clone();
    let (stdout, _) = text(&out);
    assert!(stdout.contains("HelmRelease/web/web"), "{stdout}");
    assert!(stdout.contains("chart      plain-1.2.3"), "{stdout}");
    assert!(!stdout.contains("top-s3cret"), "{stdout}");
}

#[test]
fn build_prints_a_helm_release_as_helm_template_after_flux_post_renderers() {
    let f = fleet(&release(
        "web",
        "plain",
        "valuesFrom:\n  - kind: Secret\n    name: web-values\ncommonMetadata:\n  labels:\n    team: a\npostRenderers:\n  - kustomize:\n      images:\n        - name: nginx\n          newTag: \"1.29\"",
    ));
    let docs = f.build("web/web", &[]);
    let cm = find(&docs, "ConfigMap", "web-config");
    assert_eq!(
        cm["data"]["message"], "***",
        "values from Secrets are masked"
    );
    assert_eq!(
        cm["metadata"]["labels"]["helm.toolkit.fluxcd.io/name"],
        "web"
    );
    assert_eq!(
        cm["metadata"]["labels"]["helm.toolkit.fluxcd.io/namespace"],
        "web"
    );
    assert_eq!(cm["metadata"]["labels"]["team"], "a");
    let d = find(&docs, "Deployment", "web-web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.29",
        "the kustomize post-renderer ran"
    );
    // The same with HelmRelease/ spelled out, and the secret shown on request.
    let docs = f.build("HelmRelease/web/web", &["--show-secrets"]);
    assert_eq!(
        find(&docs, "ConfigMap", "web-config")["data"]["message"],
        "top-s3cret"
    );
}

#[test]
fn a_chart_override_takes_a_packaged_chart() {
    let f = fleet(
        "---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: remote\n  namespace: web\nspec:\n  interval: 10m\n  chartRef:\n    kind: OCIRepository\n    name: remote\n",
    );
    let pkg = tempfile::tempdir().expect("tmp");
    let tgz = package_fixture_chart("plain", "1.2.3", pkg.path());
    let flag = format!("web/remote={}", tgz.display());
    let plan = f.plan(&["--chart", &flag]);
    let hr = &helm_entries(&plan)[0];
    assert_eq!(hr["chart"], "plain-1.2.3", "{}", pretty(hr));
    assert_eq!(hr["source"], "OCIRepository/web/remote");
    // Without it, its chart source is missing: it fails (a partial plan, exit 4), and the
    // message says what would help.
    let out = f.cmd("plan").args(["-o", "json"]).output().expect("runs");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let plan: Value = serde_json::from_str(&stdout).expect("json");
    let hr = &helm_entries(&plan)[0];
    assert!(
        hr["failures"][0]
            .as_str()
            .unwrap()
            .contains("--chart web/remote=PATH"),
        "{}",
        pretty(hr)
    );
    // An override for a HelmRelease the fleet lacks is bad input.
    let err = f.fails("plan", &["--chart", &format!("web/nope={}", tgz.display())]);
    assert!(
        err.contains("--chart web/nope: no such HelmRelease"),
        "{err}"
    );
}

#[test]
fn cycles_through_helm_releases_are_errors_naming_the_loop() {
    // The HelmReleases of the loop (or with a missing dependency) fail; the rest is planned.
    let partial = |f: &Fleet| {
        let out = f.cmd("plan").output().expect("runs");
        let (_, stderr) = text(&out);
        assert_no_panic(&stderr);
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        stderr
    };
    let f = fleet(
        &(release("a", "plain", "dependsOn:\n  - name: b")
            + &release("b", "plain", "dependsOn:\n  - name: a")),
    );
    let err = partial(&f);
    assert!(err.contains("circular dependency"), "{err}");
    assert!(
        err.contains("HelmRelease/web/a") && err.contains("HelmRelease/web/b"),
        "{err}"
    );
    let f = fleet(&release("a", "plain", "dependsOn:\n  - name: missing"));
    let err = partial(&f);
    assert!(
        err.contains("HelmRelease web/a: dependency 'HelmRelease/web/missing' not found"),
        "{err}"
    );
}

#[test]
fn graph_draws_helm_releases_with_their_edges() {
    let f = fleet(
        &(release("web", "plain", "") + &release("jobs", "hooks", "dependsOn:\n  - name: web")),
    );
    let out = f.cmd("graph").assert().success().get_output().clone();
    let (dot, _) = text(&out);
    assert!(
        dot.contains(
            "\"flux-system/apps\" -> \"HelmRelease/web/web\" [style=dashed, label=\"applies\"]"
        ),
        "{dot}"
    );
    assert!(
        dot.contains("\"HelmRelease/web/web\" -> \"HelmRelease/web/jobs\";"),
        "{dot}"
    );
}

#[test]
fn without_helm_plan_still_plans_and_apply_refuses_before_any_write() {
    let f = fleet(&release("web", "plain", ""));
    let plan = f.plan(&["--helm-bin", "/nonexistent/helm"]);
    let hr = &helm_entries(&plan)[0];
    assert!(
        hr["notes"][0].as_str().unwrap().contains("not rendered"),
        "{}",
        pretty(hr)
    );
    let cluster = Cluster::start();
    let run = f.run("apply", &cluster, &["--helm-bin", "/nonexistent/helm"]);
    run.expect_code(2);
    assert!(run.stderr.contains("HelmRelease(s) selected"), "{run}");
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
}

/// Broken HelmReleases fail alone, as a failing Kustomization does: one whose spec does not
/// decode and one whose chart source the fleet does not define are listed with file, release and
/// cause, marked failed (text, JSON, graph), what depends on them blocked, the rest planned, and
/// plan, graph and build exit 4.
#[test]
fn broken_helm_releases_fail_alone_in_a_partial_plan() {
    let f = fleet(
        &(release("web", "plain", "")
            + &release("broken", "plain", "timeout: not-a-duration")
            + &release("after-broken", "plain", "dependsOn:\n  - name: broken")
            + "---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: nosrc\n  namespace: web\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: podinfo\n      sourceRef:\n        kind: HelmRepository\n        name: missing\n"),
    );
    let out = f.cmd("plan").args(["-o", "json"]).output().expect("runs");
    let (stdout, stderr) = text(&out);
    assert_no_panic(&stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    for needle in [
        "apps/releases.yaml: HelmRelease web/broken: spec.timeout",
        "apps/releases.yaml: HelmRelease web/nosrc: chart: HelmRepository/web/missing is not defined in the fleet",
    ] {
        assert!(stderr.contains(needle), "stderr lacks {needle:?}\n{stderr}");
    }
    let plan: Value = serde_json::from_str(&stdout).expect("json");
    let hrs = helm_entries(&plan);
    let entry = |id: &str| {
        hrs.iter()
            .find(|h| h["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {}", pretty(&plan)))
            .clone()
    };
    for id in ["HelmRelease/web/broken", "HelmRelease/web/nosrc"] {
        let e = entry(id);
        assert!(
            !e["failures"].as_array().expect("failures").is_empty(),
            "{}",
            pretty(&e)
        );
    }
    assert_eq!(
        entry("HelmRelease/web/after-broken")["blockedByFailure"],
        serde_json::json!(["HelmRelease/web/broken"])
    );
    let web = entry("HelmRelease/web/web");
    assert_eq!(web["failures"], serde_json::json!([]));
    assert!(web["objectCount"].as_u64().unwrap() > 0, "{}", pretty(&web));
    let failures = plan["failures"].as_array().expect("failures");
    assert!(
        failures
            .iter()
            .any(|p| p["kustomization"] == "HelmRelease/web/broken"
                && p["file"] == "apps/releases.yaml"),
        "{}",
        pretty(&plan)
    );

    let out = f.cmd("plan").output().expect("runs");
    let (text_plan, _) = text(&out);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text_plan.contains("HelmRelease/web/broken  [FAILED"),
        "{text_plan}"
    );
    assert!(
        text_plan
            .contains("HelmRelease/web/after-broken  [BLOCKED by failing HelmRelease/web/broken]"),
        "{text_plan}"
    );
    assert!(
        text_plan.contains("2 HelmReleases; everything else is planned"),
        "{text_plan}"
    );
    assert!(
        text(&out).1.contains(
            "0 Kustomization(s) failed to load, build or validate, 2 HelmRelease(s) failed; the rest is planned"
        ),
        "{}",
        text(&out).1
    );

    let out = f.cmd("graph").output().expect("runs");
    let (dot, _) = text(&out);
    assert_eq!(out.status.code(), Some(4));
    let node = dot
        .lines()
        .find(|l| l.contains("\"HelmRelease/web/broken\" ["))
        .unwrap_or_else(|| panic!("{dot}"));
    assert!(node.contains("failed"), "{node}");

    let out = f
        .cmd("build")
        .args(["--name", "flux-system/apps"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out).1);
    assert!(text(&out).0.contains("kind: Namespace"));

    // apply refuses before any write, listing both; --exclude of both lets the rest go on
    // (the blocked one is skipped).
    let cluster = Cluster::start();
    let run = f.run("apply", &cluster, &[]);
    run.expect_code(2);
    assert!(run.stderr.contains("nothing was written"), "{run}");
    assert!(
        run.stderr.contains("HelmRelease web/broken")
            && run.stderr.contains("HelmRelease web/nosrc"),
        "{run}"
    );
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
    let run = f.run("diff", &cluster, &[]);
    run.expect_code(2);
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
}

/// Values a HelmRelease reads from a ConfigMap the real `sops` encrypted never print: `build` of
/// the HelmRelease (without `--show-secrets`) and `plan` mask them as values from a Secret.
#[test]
fn values_from_a_sops_encrypted_config_map_are_masked() {
    let f = fleet(&release(
        "web",
        "plain",
        "valuesFrom:\n  - kind: ConfigMap\n    name: web-cm-values",
    ))
    .file(
        "clusters/c/apps.yaml",
        &kustomization(
            "apps",
            "./apps",
            "wait: true\ndecryption:\n  provider: sops",
        ),
    )
    .file(
        "apps/cm-values.yaml",
        &std::fs::read_to_string(fixtures("sops/configmap-values.enc.yaml")).expect("fixture"),
    );
    let key = fixtures("sops/test.agekey").display().to_string();
    for (sub, args) in [
        (
            "build",
            vec!["--name", "HelmRelease/web/web", "--age-key-file", &key],
        ),
        (
            "build",
            vec!["--name", "flux-system/apps", "--age-key-file", &key],
        ),
        ("plan", vec!["-o", "json", "--age-key-file", &key]),
    ] {
        let out = f.cmd(sub).args(&args).output().expect("runs");
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(0), "{sub} {args:?}: {stderr}");
        assert!(
            !stdout.contains("cm-s3cr3t-msg") && !stderr.contains("cm-s3cr3t-msg"),
            "{sub} {args:?}:\n{stdout}\n{stderr}"
        );
    }
    // Rendered with the real value (masked in print): with --show-secrets it shows.
    let out = f
        .cmd("build")
        .args([
            "--name",
            "HelmRelease/web/web",
            "--show-secrets",
            "--age-key-file",
            &key,
        ])
        .output()
        .expect("runs");
    assert!(text(&out).0.contains("cm-s3cr3t-msg"), "{}", text(&out).1);
}
