//! `diff` (and `apply --dry-run=server`) end to end: a server-side dry-run per object against the
//! test API server, reported as created / configured / unchanged, Secret values masked, nothing
//! written, exit 0 without changes and 1 with.

use crate::util::*;

const OLD_SECRET: &str = "s3cr3t-old";
const OLD_SECRET_B64: &str = "czNjcjN0LW9sZA==";
const NEW_SECRET: &str = "s3cr3t-new";
const NEW_SECRET_B64: &str = "czNjcjN0LW5ldw==";

fn secret(b64: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a-secret\n  namespace: default\ntype: Opaque\ndata:\n  password: {b64}\n"
    )
}

/// `a`: a ConfigMap, a Secret and a Deployment.
fn app_fleet(cm_value: &str, secret_b64: &str) -> Fleet {
    Fleet::new()
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", ""))
        .file(
            "apps/a/cm.yaml",
            &config_map("default", "a-cfg", &[("k", cm_value)]),
        )
        .file("apps/a/secret.yaml", &secret(secret_b64))
        .file("apps/a/deploy.yaml", &deployment("default", "a-web", None))
}

/// The status word diff printed for `subject` (`ConfigMap/default/a-cfg`).
fn status_of(run: &Run, subject: &str) -> String {
    let needle = format!(" {subject} ");
    run.stdout
        .lines()
        .find_map(|l| {
            l.find(&needle)
                .map(|i| l[i + needle.len()..].trim().to_string())
        })
        .unwrap_or_else(|| panic!("{subject} not reported\n{run}"))
}

fn assert_no_writes(cluster: &Cluster) {
    assert!(
        cluster.writes().is_empty(),
        "diff wrote:\n{}",
        cluster.log_text()
    );
}

fn assert_masked(run: &Run) {
    for clear in [OLD_SECRET, OLD_SECRET_B64, NEW_SECRET, NEW_SECRET_B64] {
        assert!(
            !run.stdout.contains(clear) && !run.stderr.contains(clear),
            "{clear} shown\n{run}"
        );
    }
}

#[test]
fn diff_against_an_empty_cluster_reports_everything_created_and_writes_nothing() {
    let cluster = Cluster::start();
    let f = app_fleet("v1", OLD_SECRET_B64)
        .file(
            "clusters/c/crds.yaml",
            &kustomization("crds", "./apps/crds", ""),
        )
        .file("apps/crds/crd.yaml", &widget_crd())
        .file(
            "clusters/c/b.yaml",
            &kustomization("b", "./apps/b", &depends_on(&["crds"])),
        )
        .file("apps/b/w.yaml", &widget("default", "b-w", None));
    let run = f.diff(&cluster, &[]);
    run.expect_code(1);
    for subject in [
        "ConfigMap/default/a-cfg",
        "Secret/default/a-secret",
        "Deployment/default/a-web",
        "CustomResourceDefinition/widgets.example.com",
    ] {
        assert_eq!(status_of(&run, subject), "created", "{run}");
    }
    assert_eq!(
        status_of(&run, "Widget/default/b-w"),
        "created (CRD not yet installed, not validated)",
        "{run}"
    );
    assert_masked(&run);
    assert_no_writes(&cluster);
    assert!(
        cluster
            .requests()
            .iter()
            .any(|r| r.dry_run && r.verb == Verb::Apply),
        "no server-side dry-run\n{}",
        cluster.log_text()
    );
}

#[test]
fn diff_after_apply_is_clean_and_then_shows_changes_with_secret_values_masked() {
    let cluster = Cluster::start();
    let f = app_fleet("v1", OLD_SECRET_B64);
    f.apply(&cluster, &[]).expect_code(0);
    cluster.clear_requests();

    // Nothing changed: exit 0, every object unchanged, nothing written.
    let run = f.diff(&cluster, &[]);
    run.expect_code(0);
    for subject in [
        "ConfigMap/default/a-cfg",
        "Secret/default/a-secret",
        "Deployment/default/a-web",
    ] {
        assert_eq!(status_of(&run, subject), "unchanged", "{run}");
    }
    assert_no_writes(&cluster);

    // The ConfigMap and the Secret change: exit 1, both configured, a diff for the ConfigMap,
    // the Secret's values masked.
    let f = app_fleet("v2", NEW_SECRET_B64);
    let run = f.diff(&cluster, &[]);
    run.expect_code(1);
    assert_eq!(
        status_of(&run, "ConfigMap/default/a-cfg"),
        "configured",
        "{run}"
    );
    assert_eq!(
        status_of(&run, "Secret/default/a-secret"),
        "configured",
        "{run}"
    );
    assert_eq!(
        status_of(&run, "Deployment/default/a-web"),
        "unchanged",
        "{run}"
    );
    let lines: Vec<&str> = run.stdout.lines().map(str::trim).collect();
    assert!(lines.contains(&"-  k: v1"), "{run}");
    assert!(lines.contains(&"+  k: v2"), "{run}");
    assert!(run.stdout.contains("*** (before)"), "{run}");
    assert!(run.stdout.contains("*** (after)"), "{run}");
    assert_masked(&run);
    assert_no_writes(&cluster);
    assert_eq!(
        cluster
            .get("v1", "ConfigMap", Some("default"), "a-cfg")
            .expect("cm")["data"]["k"],
        "v1"
    );

    // apply --dry-run=server is the same diff.
    let run = f.run("apply", &cluster, &["--dry-run=server"]);
    run.expect_code(1);
    assert_eq!(
        status_of(&run, "ConfigMap/default/a-cfg"),
        "configured",
        "{run}"
    );
    assert_masked(&run);
    assert_no_writes(&cluster);
}

#[test]
fn diff_refuses_an_unknown_kind_with_exit_2() {
    let cluster = Cluster::start();
    let f = Fleet::new()
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", ""))
        .file(
            "apps/a/gadget.yaml",
            "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: a-g\n  namespace: default\n",
        );
    let run = f.diff(&cluster, &[]);
    run.expect_code(2);
    assert!(run.stderr.contains("Gadget"), "{run}");
    assert_no_writes(&cluster);
}

#[test]
fn objects_in_a_namespace_the_fleet_creates_are_reported_created_without_validation() {
    let cluster = Cluster::start();
    let f = Fleet::new()
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", ""))
        .file("apps/a/ns.yaml", &namespace("team"))
        .file(
            "apps/a/cm.yaml",
            &config_map("team", "a-cfg", &[("k", "v")]),
        );
    let run = f.diff(&cluster, &[]);
    run.expect_code(1);
    assert_eq!(status_of(&run, "Namespace/team"), "created", "{run}");
    assert_eq!(
        status_of(&run, "ConfigMap/team/a-cfg"),
        "created (namespace not yet created, not validated)",
        "{run}"
    );
    assert_no_writes(&cluster);
}
