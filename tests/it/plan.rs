//! `plan`: waves, markers, health gates and selection, on the example fleet of this repo and on
//! every cluster directory of the two real fleet repositories in the shared corpora.

use serde_json::Value;

use crate::util::*;

const DEMO: &str = "examples/fleet/clusters/demo";

/// `flux-order <subcommand> examples/fleet/clusters/demo`, run from the repo root (a git work
/// tree, so the bootstrap source maps to it by default).
fn demo(subcommand: &str) -> assert_cmd::Command {
    let mut cmd = flux_order();
    cmd.current_dir(repo_root()).arg(subcommand).arg(DEMO);
    cmd
}

fn demo_plan(args: &[&str]) -> Value {
    let out = demo("plan")
        .args(["-o", "json"])
        .args(args)
        .assert()
        .success()
        .get_output()
        .clone();
    let (stdout, stderr) = text(&out);
    assert_no_panic(&stderr);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"))
}

fn demo_plan_text(args: &[&str]) -> String {
    let out = demo("plan")
        .args(args)
        .assert()
        .success()
        .get_output()
        .clone();
    text(&out).0
}

/// The demo's plan without flags, JSON and text, computed once for the whole test binary.
fn demo_default() -> &'static (Value, String) {
    static PLAN: std::sync::OnceLock<(Value, String)> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| (demo_plan(&[]), demo_plan_text(&[])))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The shared corpora

#[test]
fn kustomize_helm_example_orders_controllers_configs_apps_on_every_cluster() {
    let Some(corpora) =
        corpora("kustomize_helm_example_orders_controllers_configs_apps_on_every_cluster")
    else {
        return;
    };
    let repo = corpora.join("flux2-kustomize-helm-example");
    for cluster in ["production", "staging"] {
        let out = flux_order()
            .arg("plan")
            .arg(repo.join("clusters").join(cluster))
            // --offline: the HelmReleases' charts live on the internet; nothing is fetched here.
            .args([
                "--source",
                &bootstrap_source(&repo),
                "-o",
                "json",
                "--offline",
            ])
            .env(
                "FLUX_ORDER_CACHE_DIR",
                tempfile::tempdir().expect("tmp").path(),
            )
            .assert()
            .success()
            .get_output()
            .clone();
        let plan = &serde_json::from_str::<Value>(&text(&out).0).expect("json");
        assert_eq!(
            waves(plan),
            expect_waves(&[
                &["flux-system/infra-controllers"],
                &[],
                &["flux-system/infra-configs"],
                &["flux-system/apps"],
                &[]
            ]),
            "cluster {cluster}"
        );
        // The HelmReleases are nodes too: each after the Kustomization that applies it, and
        // infra-configs after the HelmReleases that make infra-controllers (wait: true) Ready.
        let releases: Vec<(u64, String, String)> = plan["waves"]
            .as_array()
            .expect("waves")
            .iter()
            .flat_map(|w| {
                w["helmReleases"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |h| {
                        (
                            w["wave"].as_u64().unwrap_or(99),
                            h["id"].as_str().unwrap_or("").to_string(),
                            h["kustomization"].as_str().unwrap_or("").to_string(),
                        )
                    })
            })
            .collect();
        assert_eq!(
            releases,
            vec![
                (
                    1,
                    "HelmRelease/cert-manager/cert-manager".into(),
                    "flux-system/infra-controllers".into()
                ),
                (
                    1,
                    "HelmRelease/envoy-gateway-system/envoy-gateway".into(),
                    "flux-system/infra-controllers".into()
                ),
                (
                    4,
                    "HelmRelease/podinfo/podinfo".into(),
                    "flux-system/apps".into()
                ),
            ],
            "cluster {cluster}"
        );
        // The ExternalArtifacts are assembled from the ArtifactGenerator's copy rules.
        for id in [
            "flux-system/infra-controllers",
            "flux-system/infra-configs",
            "flux-system/apps",
        ] {
            let k = plan_entry(plan, id);
            assert_eq!(k["sourceMapping"], "artifact-generator", "{cluster} {id}");
            assert!(
                k["objectCount"].as_u64().unwrap() > 0,
                "{cluster} {id} builds objects"
            );
        }
        assert_eq!(
            plan_entry(plan, "flux-system/apps")["path"],
            format!("./{cluster}")
        );
    }
}

/// Temp dirs standing in for the multi-tenancy repo's two non-bootstrap sources.
struct TenancySources {
    kyverno: tempfile::TempDir,
    dev_team: tempfile::TempDir,
}

fn tenancy_sources(cluster: &str) -> TenancySources {
    let kyverno = tempfile::tempdir().expect("tmp");
    std::fs::write(
        kyverno.path().join("kyverno.yaml"),
        config_map("kyverno", "kyverno-stand-in", &[]),
    )
    .unwrap();
    let dev_team = tempfile::tempdir().expect("tmp");
    let dir = dev_team.path().join(cluster);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("app.yaml"),
        config_map("apps", "dev-team-stand-in", &[]),
    )
    .unwrap();
    TenancySources { kyverno, dev_team }
}

#[test]
fn multi_tenancy_orders_kyverno_policies_tenants_then_the_tenant_on_every_cluster() {
    let Some(corpora) =
        corpora("multi_tenancy_orders_kyverno_policies_tenants_then_the_tenant_on_every_cluster")
    else {
        return;
    };
    let repo = corpora.join("flux2-multi-tenancy");
    for cluster in ["production", "staging"] {
        let s = tenancy_sources(cluster);
        let out = flux_order()
            .arg("plan")
            .arg(repo.join("clusters").join(cluster))
            .args(["--source", &bootstrap_source(&repo)])
            .arg("--source")
            .arg(format!(
                "OCIRepository/flux-system/kyverno-controller={}",
                s.kyverno.path().display()
            ))
            .arg("--source")
            .arg(format!(
                "GitRepository/apps/dev-team={}",
                s.dev_team.path().display()
            ))
            .args(["-o", "json"])
            .assert()
            .success()
            .get_output()
            .clone();
        let plan = &serde_json::from_str::<Value>(&text(&out).0).expect("json");
        // kyverno-controller is found in kyverno's build (parent), kyverno-policies dependsOn
        // kyverno, tenants dependsOn kyverno-policies, apps/dev-team is found in tenants' build.
        assert_eq!(
            waves(plan),
            expect_waves(&[
                &["flux-system/kyverno"],
                &[
                    "flux-system/kyverno-controller",
                    "flux-system/kyverno-policies"
                ],
                &["flux-system/tenants"],
                &["apps/dev-team"],
            ]),
            "cluster {cluster}"
        );
        assert_eq!(
            plan_entry(plan, "flux-system/kyverno-controller")["parent"],
            "flux-system/kyverno"
        );
        assert_eq!(
            plan_entry(plan, "flux-system/kyverno-controller")["sourceMapping"],
            "flag"
        );
        assert_eq!(
            plan_entry(plan, "apps/dev-team")["parent"],
            "flux-system/tenants"
        );
        assert_eq!(
            plan_entry(plan, "apps/dev-team")["path"],
            format!("./{cluster}")
        );
        assert_eq!(
            plan_entry(plan, "apps/dev-team")["objects"],
            serde_json::json!(["ConfigMap/apps/dev-team-stand-in"])
        );
    }
}

#[test]
fn multi_tenancy_without_its_sources_is_planned_with_the_flags_to_add_and_the_files() {
    let Some(corpora) =
        corpora("multi_tenancy_without_its_sources_is_planned_with_the_flags_to_add_and_the_files")
    else {
        return;
    };
    let repo = corpora.join("flux2-multi-tenancy");
    // --offline with an empty cache: the same answer with or without network access.
    let cache = tempfile::tempdir().expect("tmp");
    for cluster in ["production", "staging"] {
        let out = flux_order()
            .env("FLUX_ORDER_CACHE_DIR", cache.path())
            .arg("plan")
            .arg(repo.join("clusters").join(cluster))
            .args(["--source", &bootstrap_source(&repo), "--offline"])
            .assert()
            .code(4)
            .get_output()
            .clone();
        let (stdout, stderr) = text(&out);
        // The rest of the fleet is planned; the two Kustomizations without a source are marked.
        for needle in [
            "flux-system/kyverno-controller  [FAILED",
            "apps/dev-team  [FAILED",
            "flux-system/tenants",
        ] {
            assert!(
                stdout.contains(needle),
                "{cluster}: plan lacks {needle:?}\n{stdout}"
            );
        }
        assert_no_panic(&stderr);
        for needle in [
            "--source OCIRepository/flux-system/kyverno-controller=DIR",
            "infrastructure/kyverno/sync.yaml",
            "--source GitRepository/apps/dev-team=DIR",
            "tenants/base/dev-team/sync.yaml",
        ] {
            assert!(
                stderr.contains(needle),
                "{cluster}: stderr lacks {needle:?}:\n{stderr}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The example fleet (examples/fleet/README.md is the specification)

#[test]
fn demo_waves_are_the_ones_the_readme_lists() {
    let plan = &demo_default().0;
    assert_eq!(
        waves(plan),
        expect_waves(&[
            &["flux-system/flux-system"],
            &["flux-system/crds", "flux-system/namespaces"],
            &[
                "flux-system/logging",
                "flux-system/monitoring",
                "flux-system/operators",
                "flux-system/tenants"
            ],
            &["flux-system/infrastructure", "team-a/app-a", "team-b/app-b"],
            &["flux-system/config", "flux-system/db-migrations"],
            &["flux-system/backend", "flux-system/reporting"],
            &["flux-system/frontend"],
        ])
    );
    assert_eq!(plan["kustomizations"], 15);
    // The object total is the sum over the Kustomizations (the example's own count changes as
    // the example grows, so it is not pinned here).
    let sum: u64 = waves(plan)
        .concat()
        .iter()
        .map(|id| plan_entry(plan, id)["objectCount"].as_u64().unwrap())
        .sum();
    assert_eq!(plan["objects"], sum);
    assert_eq!(plan["warnings"], serde_json::json!([]));
    for (i, w) in plan["waves"].as_array().unwrap().iter().enumerate() {
        assert_eq!(w["wave"], i);
    }
}

#[test]
fn demo_marks_the_suspended_kustomization_and_what_it_blocks() {
    let plan = &demo_default().0;
    let suspended: Vec<&str> = plan["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["kustomizations"].as_array().unwrap())
        .filter(|k| k["suspended"] == true)
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(suspended, ["flux-system/db-migrations"]);
    let blocked: Vec<(&str, Vec<String>)> = plan["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["kustomizations"].as_array().unwrap())
        .filter(|k| !k["blockedBy"].as_array().unwrap().is_empty())
        .map(|k| (k["id"].as_str().unwrap(), strings(&k["blockedBy"])))
        .collect();
    assert_eq!(
        blocked,
        [(
            "flux-system/reporting",
            vec!["flux-system/db-migrations".to_string()]
        )]
    );

    let text = &demo_default().1;
    assert!(
        text.contains("  flux-system/db-migrations  [SUSPENDED: not applied]\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "  flux-system/reporting  [BLOCKED by suspended flux-system/db-migrations]\n"
        ),
        "{text}"
    );
}

#[test]
fn demo_children_name_the_kustomization_whose_build_holds_them() {
    let plan = &demo_default().0;
    for id in waves(plan).concat() {
        let k = plan_entry(plan, &id);
        let expected = match id.as_str() {
            "flux-system/flux-system" => Value::Null,
            "team-a/app-a" | "team-b/app-b" => "flux-system/tenants".into(),
            _ => "flux-system/flux-system".into(),
        };
        assert_eq!(k["parent"], expected, "{id}");
    }
    assert_eq!(
        strings(&plan_entry(plan, "flux-system/tenants")["children"]),
        ["team-a/app-a", "team-b/app-b"]
    );
    assert_eq!(
        plan_entry(plan, "flux-system/flux-system")["children"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    // The root's own build holds the GitRepository, which needs a Flux controller.
    assert_eq!(
        plan_entry(plan, "flux-system/flux-system")["notApplied"],
        serde_json::json!(["GitRepository/flux-system/flux-system"])
    );

    let text = &demo_default().1;
    assert!(
        text.contains("      parent     flux-system/tenants (applied by it)\n"),
        "{text}"
    );
}

#[test]
fn demo_health_gates_and_timeouts_follow_flux_defaults() {
    let plan = &demo_default().0;
    // (id, wait, healthChecks, timeout): timeout = spec.timeout, else interval − 30s, floor 30s.
    let expected: &[(&str, bool, &[&str], &str)] = &[
        ("flux-system/flux-system", false, &[], "9m30s"),
        ("flux-system/namespaces", false, &[], "59m30s"),
        ("flux-system/crds", true, &[], "59m30s"),
        (
            "flux-system/operators",
            false,
            &["Deployment/operators/database-operator"],
            "3m0s",
        ),
        (
            "flux-system/infrastructure",
            false,
            &["StatefulSet/data/postgres", "Deployment/data/redis"],
            "10m0s",
        ),
        ("flux-system/monitoring", true, &[], "29m30s"),
        ("flux-system/logging", true, &[], "3m0s"),
        ("flux-system/config", false, &[], "9m30s"),
        ("flux-system/backend", true, &[], "5m0s"),
        ("flux-system/frontend", true, &[], "9m30s"),
        ("flux-system/db-migrations", true, &[], "15m0s"),
        ("flux-system/reporting", false, &[], "9m30s"),
        ("flux-system/tenants", false, &[], "9m30s"),
        ("team-a/app-a", true, &[], "2m0s"),
        ("team-b/app-b", true, &[], "4m30s"),
    ];
    for (id, wait, checks, timeout) in expected {
        let h = &plan_entry(plan, id)["health"];
        assert_eq!(h["wait"], *wait, "{id}");
        assert_eq!(strings(&h["healthChecks"]), *checks, "{id}");
        assert_eq!(h["timeout"], *timeout, "{id}");
    }
    assert_eq!(
        plan_entry(plan, "flux-system/operators")["health"]["timeoutSource"],
        "spec.timeout 3m"
    );
    assert_eq!(
        plan_entry(plan, "flux-system/namespaces")["health"]["timeoutSource"],
        "default: interval 1h − 30s, at least 30s"
    );

    let text = &demo_default().1;
    for line in [
        "      health     healthChecks: Deployment/operators/database-operator; timeout 3m0s (spec.timeout 3m)\n",
        "      health     healthChecks: StatefulSet/data/postgres, Deployment/data/redis; timeout 10m0s (spec.timeout 10m)\n",
        "      health     wait: every applied object; timeout 59m30s (default: interval 1h − 30s, at least 30s)\n",
        "      health     none (Ready once applied); timeout 9m30s (default: interval 10m0s − 30s, at least 30s)\n",
    ] {
        assert!(text.contains(line), "text plan lacks {line:?}:\n{text}");
    }
}

#[test]
fn demo_critical_path_is_the_seven_long_chain() {
    let plan = &demo_default().0;
    let expected = [
        "flux-system/flux-system",
        "flux-system/crds",
        "flux-system/operators",
        "flux-system/infrastructure",
        "flux-system/config",
        "flux-system/backend",
        "flux-system/frontend",
    ];
    assert_eq!(strings(&plan["criticalPath"]), expected);
    let text = &demo_default().1;
    assert!(
        text.contains(&format!(
            "Critical path (7 Kustomizations): {}\n",
            expected.join(" → ")
        )),
        "{text}"
    );
    let header = format!(
        "Plan for examples/fleet/clusters/demo: 15 Kustomizations, {} objects, 7 waves\n",
        demo_default().0["objects"]
    );
    assert!(text.starts_with(&header), "{text}");
}

#[test]
fn demo_substitution_variables_and_overlays_show_in_the_plan() {
    let plan = &demo_default().0;
    assert_eq!(
        plan_entry(plan, "team-a/app-a")["variables"],
        serde_json::json!({"cluster_name": "demo", "tenant": "team-a"})
    );
    assert_eq!(
        plan_entry(plan, "flux-system/backend")["variables"],
        serde_json::json!({"app_domain": "demo.example.com", "cluster_name": "demo", "log_level": "info"})
    );
    assert_eq!(
        plan_entry(plan, "team-a/app-a")["dependsOn"],
        serde_json::json!(["flux-system/monitoring", "flux-system/logging"])
    );
    assert_eq!(
        plan_entry(plan, "team-a/app-a")["file"],
        "examples/fleet/tenants/team-a.yaml"
    );
    assert_eq!(plan_entry(plan, "flux-system/crds")["prune"], false);
    // targetNamespace gives logging's objects their namespace.
    for o in strings(&plan_entry(plan, "flux-system/logging")["objects"]) {
        assert!(o.contains("/logging/"), "{o}");
    }
}

#[test]
fn demo_json_and_yaml_carry_the_same_plan() {
    let json = &demo_default().0;
    let out = demo("plan")
        .args(["-o", "yaml"])
        .assert()
        .success()
        .get_output()
        .clone();
    let from_yaml = yaml(&text(&out).0);
    assert_eq!(&from_yaml, json);
}

#[test]
fn demo_only_selects_the_kustomization_its_dependencies_and_parents() {
    let plan = &demo_plan(&["--only", "team-a/app-a"]);
    assert_eq!(
        waves(plan),
        expect_waves(&[
            &["flux-system/flux-system"],
            &["flux-system/crds", "flux-system/namespaces"],
            &[
                "flux-system/logging",
                "flux-system/monitoring",
                "flux-system/tenants"
            ],
            &["team-a/app-a"],
        ])
    );
    assert_eq!(plan["kustomizations"], 7);
}

#[test]
fn demo_only_has_the_critical_path_of_the_selection() {
    let plan = &demo_plan(&["--only", "team-a/app-a"]);
    // The longest chain inside the selection (crds and namespaces tie; ties go by name).
    assert_eq!(
        strings(&plan["criticalPath"]),
        [
            "flux-system/flux-system",
            "flux-system/crds",
            "flux-system/logging",
            "team-a/app-a"
        ],
        "the critical path of a selection is a chain of the selection"
    );
}

#[test]
fn demo_scan_finds_the_same_kustomizations() {
    let scanned = demo_plan(&["--scan"]);
    let built = &demo_default().0;
    assert_eq!(waves(&scanned), waves(built));
    assert_eq!(scanned["objects"], built["objects"]);
    assert_eq!(
        plan_entry(&scanned, "team-b/app-b")["parent"],
        "flux-system/tenants"
    );
}

#[test]
fn scan_reads_kustomizations_from_files_that_no_build_reaches() {
    // A kustomization.yaml at PATH that lists only one of the two files: building PATH finds
    // one Kustomization, --scan finds both.
    let fleet = Fleet::new()
        .file("clusters/c/kustomization.yaml", "resources: [a.yaml]")
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", ""))
        .file(
            "clusters/c/b.yaml",
            &kustomization("b", "./apps/b", "dependsOn: [{name: a}]"),
        )
        .file("apps/a/cm.yaml", &config_map("default", "a", &[]))
        .file("apps/b/cm.yaml", &config_map("default", "b", &[]));
    assert_eq!(waves(&fleet.plan(&[])), expect_waves(&[&["flux-system/a"]]));
    assert_eq!(
        waves(&fleet.plan(&["--scan"])),
        expect_waves(&[&["flux-system/a"], &["flux-system/b"]])
    );
}

#[test]
fn text_plan_of_a_git_fleet_maps_the_bootstrap_source_to_the_work_tree() {
    let fleet = Fleet::new()
        .git()
        .file(
            "clusters/c/apps.yaml",
            &kustomization("app", "./apps/app", ""),
        )
        .file(
            "apps/app/cm.yaml",
            &config_map("default", "settings", &[("k", "v")]),
        );
    let plan = &fleet.plan(&[]);
    assert_eq!(
        plan_entry(plan, "flux-system/app")["sourceMapping"],
        "git-root"
    );
    assert_eq!(
        plan_entry(plan, "flux-system/app")["objects"],
        serde_json::json!(["ConfigMap/default/settings"])
    );
    let out = fleet.cmd("plan").assert().success().get_output().clone();
    let stdout = text(&out).0;
    assert!(
        stdout.contains("Plan for clusters/c: 1 Kustomization, 1 object, 1 wave\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("      file       clusters/c/apps.yaml\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("      objects    1: 1 ConfigMap\n"),
        "{stdout}"
    );
}
