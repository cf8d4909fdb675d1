//! Inventory, prune, incremental re-apply, `status`, `delete` and the hand-off to Flux, end to
//! end: the real binary against the test API server. What flux-order recorded is read back from
//! the inventory ConfigMaps on the server; deletion order from the server's request log.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

/// A fleet of Kustomizations `flux-system/<name>`, each building `./apps/<name>` with these extra
/// spec fields. Objects of `<name>` are named `<name>-…` so the request log tells them apart.
fn fleet(ks: &[(&str, &str)]) -> Fleet {
    fleet_on(Fleet::new(), ks)
}

/// [`fleet`] on an existing (e.g. git) fleet.
fn fleet_on(mut f: Fleet, ks: &[(&str, &str)]) -> Fleet {
    for (name, spec) in ks {
        f = f.file(
            &format!("clusters/c/{name}.yaml"),
            &kustomization(name, &format!("./apps/{name}"), spec),
        );
    }
    f
}

/// Like [`kustomization`], with `prune: false`.
fn kustomization_no_prune(name: &str, path: &str, spec: &str) -> String {
    kustomization(name, path, spec).replace("prune: true", "prune: false")
}

/// A ConfigMap `ns/name` carrying these annotations.
fn annotated_config_map(ns: &str, name: &str, annotations: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n"
    );
    for (k, v) in annotations {
        s.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    s.push_str("data:\n  k: v\n");
    s
}

/// The inventory ConfigMap of Kustomization `ns/name`, if any.
fn inventory_cm(cluster: &Cluster, ns: &str, name: &str) -> Option<Value> {
    cluster.get("v1", "ConfigMap", Some(ns), &format!("flux-order-{name}"))
}

/// The inventory ConfigMap of `flux-system/<name>` (fails if missing).
fn inventory_of(cluster: &Cluster, name: &str) -> Value {
    inventory_cm(cluster, "flux-system", name).unwrap_or_else(|| {
        panic!(
            "no inventory ConfigMap flux-system/flux-order-{name}\n{}",
            cluster.log_text()
        )
    })
}

/// The `(id, v)` entries of an inventory ConfigMap, in stored order; the `inventory` value must
/// be exactly Flux's `{"entries":[{"id","v"}]}`.
fn entries(cm: &Value) -> Vec<(String, String)> {
    let text = cm["data"]["inventory"]
        .as_str()
        .unwrap_or_else(|| panic!("no data.inventory: {}", pretty(cm)));
    let inv: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("inventory not JSON ({e}): {text}"));
    let obj = inv.as_object().expect("inventory is an object");
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        vec!["entries"],
        "inventory has other keys than entries: {text}"
    );
    inv["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let m = e.as_object().expect("entry is an object");
            assert_eq!(m.len(), 2, "entry has other keys than id and v: {e}");
            (
                e["id"].as_str().expect("id").to_string(),
                e["v"].as_str().expect("v").to_string(),
            )
        })
        .collect()
}

/// The entry ids of `flux-system/<name>`'s inventory, as a set.
fn entry_ids(cluster: &Cluster, name: &str) -> BTreeSet<String> {
    entries(&inventory_of(cluster, name))
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// Flux's inventory id of a namespaced core object.
fn core_id(ns: &str, name: &str, kind: &str) -> String {
    format!("{ns}_{name}__{kind}")
}

fn ids(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

fn cm_exists(cluster: &Cluster, ns: &str, name: &str) -> bool {
    cluster.get("v1", "ConfigMap", Some(ns), name).is_some()
}

/// Effective DELETE requests, in order.
fn deletes(cluster: &Cluster) -> Vec<RequestLog> {
    cluster
        .writes()
        .into_iter()
        .filter(|r| r.verb == Verb::Delete)
        .collect()
}

/// Position of the DELETE of `kind` `name` among `deletes`.
fn delete_pos(deletes: &[RequestLog], kind: &str, name: &str, log: &str) -> usize {
    deletes
        .iter()
        .position(|r| r.kind == kind && r.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no DELETE of {kind} {name}\n{log}"))
}

fn rv(o: &Value) -> String {
    o["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// The inventory

#[test]
fn apply_records_a_flux_format_inventory_per_kustomization_in_its_namespace() {
    let cluster = Cluster::start();
    let f = Fleet::new()
        .git()
        .file(
            "clusters/c/web.yaml",
            &kustomization("web", "./apps/web", ""),
        )
        .file("apps/web/ns.yaml", &namespace("apps"))
        .file("apps/web/deploy.yaml", &deployment("apps", "web", None))
        // A Kustomization in another namespace: its inventory lives there.
        .file(
            "clusters/c/team.yaml",
            "
            apiVersion: kustomize.toolkit.fluxcd.io/v1
            kind: Kustomization
            metadata:
              name: team-cfg
              namespace: team
            spec:
              interval: 10m
              prune: true
              sourceRef:
                kind: GitRepository
                name: flux-system
                namespace: flux-system
              path: ./apps/team
            ",
        )
        .file(
            "apps/team/cm.yaml",
            &config_map("default", "team-settings", &[("k", "v")]),
        );
    let head = f.commit("fleet");
    let started = now_secs();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);

    let web = inventory_of(&cluster, "web");
    assert_eq!(
        web["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "flux-order",
        "{}",
        pretty(&web)
    );
    // Flux's format and ids, in apply order (the Namespace first).
    assert_eq!(
        entries(&web),
        vec![
            ("_apps__Namespace".to_string(), "v1".to_string()),
            ("apps_web_apps_Deployment".to_string(), "v1".to_string()),
        ],
        "{}",
        pretty(&web)
    );
    let data = &web["data"];
    assert_eq!(data["revision"], head.as_str(), "{}", pretty(&web));
    let digest = data["digest"].as_str().expect("digest");
    assert!(
        digest.starts_with("sha256:")
            && digest.len() == 7 + 64
            && digest[7..].chars().all(|c| c.is_ascii_hexdigit()),
        "digest {digest}"
    );
    assert_eq!(data["ready"], "true", "{}", pretty(&web));
    let applied_at = data["appliedAt"].as_str().expect("appliedAt");
    let t = parse_rfc3339(applied_at);
    assert!(
        t + 5 >= started && t <= now_secs() + 5,
        "appliedAt {applied_at} is not the time of the run"
    );

    // The other Kustomization's inventory is in its own namespace, not in flux-system.
    let team = inventory_cm(&cluster, "team", "team-cfg").unwrap_or_else(|| {
        panic!(
            "no inventory team/flux-order-team-cfg\n{}",
            cluster.log_text()
        )
    });
    assert!(inventory_cm(&cluster, "flux-system", "team-cfg").is_none());
    assert_eq!(
        entries(&team),
        vec![(
            core_id("default", "team-settings", "ConfigMap"),
            "v1".into()
        )]
    );
    assert_eq!(team["data"]["revision"], head.as_str());
    assert_eq!(
        team["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "flux-order"
    );
    // Two different builds, two different digests.
    assert_ne!(team["data"]["digest"], web["data"]["digest"]);
}

/// Seconds since the epoch now.
fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (`2025-01-02T03:04:05Z`, fraction
/// allowed).
fn parse_rfc3339(s: &str) -> i64 {
    let bad = || -> ! { panic!("not an RFC 3339 UTC timestamp: {s}") };
    let s2 = s.strip_suffix('Z').unwrap_or_else(|| bad());
    let (date, time) = s2.split_once('T').unwrap_or_else(|| bad());
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().unwrap_or_else(|_| bad()))
        .collect();
    let time = time.split('.').next().unwrap_or_default();
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().unwrap_or_else(|_| bad()))
        .collect();
    if d.len() != 3 || t.len() != 3 {
        bad();
    }
    // Days from civil (Howard Hinnant).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]
}

#[test]
fn the_revision_is_the_git_commit_with_a_dirty_suffix_for_uncommitted_changes() {
    let cluster = Cluster::start();
    let f = fleet_on(Fleet::new().git(), &[("a", "")]).file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v1")]),
    );
    let head = f.commit("one");
    f.apply(&cluster, &[]).expect_code(0);
    assert_eq!(
        inventory_of(&cluster, "a")["data"]["revision"],
        head.as_str()
    );

    // An uncommitted change: HEAD plus -dirty.
    let f = f.file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v2")]),
    );
    f.apply(&cluster, &[]).expect_code(0);
    assert_eq!(
        inventory_of(&cluster, "a")["data"]["revision"],
        format!("{head}-dirty").as_str()
    );

    // Committed with a further change: the new commit, clean.
    let f = f.file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v3")]),
    );
    let head2 = f.commit("two");
    assert_ne!(head, head2);
    f.apply(&cluster, &[]).expect_code(0);
    assert_eq!(
        inventory_of(&cluster, "a")["data"]["revision"],
        head2.as_str()
    );
}

#[test]
fn committing_an_applied_change_records_the_new_revision_without_reapplying() {
    let cluster = Cluster::start();
    let f = fleet_on(Fleet::new().git(), &[("a", "")]).file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v1")]),
    );
    let head = f.commit("one");
    // Applied from an uncommitted change…
    let f = f.file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v2")]),
    );
    f.apply(&cluster, &[]).expect_code(0);
    assert_eq!(
        inventory_of(&cluster, "a")["data"]["revision"],
        format!("{head}-dirty").as_str()
    );
    // …then committed as is: same build, new clean revision.
    let head2 = f.commit("two");
    cluster.clear_requests();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert!(
        cluster.writes_named("a-").is_empty(),
        "the objects did not change, yet were written\n{}",
        cluster.log_text()
    );
    assert_eq!(
        inventory_of(&cluster, "a")["data"]["revision"],
        head2.as_str(),
        "the inventory (and so `status`) still names the revision before the commit\n{run}"
    );
}

// ---------------------------------------------------------------------------------------------
// Prune

#[test]
fn a_manifest_removed_from_the_repo_is_pruned_on_the_next_apply() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")])
        .file(
            "apps/a/keep.yaml",
            &config_map("default", "a-keep", &[("k", "v")]),
        )
        .file(
            "apps/a/gone.yaml",
            &config_map("default", "a-gone", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    assert!(cm_exists(&cluster, "default", "a-gone"));
    assert_eq!(
        entry_ids(&cluster, "a"),
        ids(&[
            core_id("default", "a-keep", "ConfigMap"),
            core_id("default", "a-gone", "ConfigMap")
        ])
    );

    f.remove("apps/a/gone.yaml");
    cluster.clear_requests();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("a"), "ready", "{run}");
    assert_eq!(run.result("a")["objects"]["deleted"], 1, "{run}");
    assert!(
        !cm_exists(&cluster, "default", "a-gone"),
        "a-gone not pruned\n{run}\n{}",
        cluster.log_text()
    );
    assert!(cm_exists(&cluster, "default", "a-keep"));
    let d = deletes(&cluster);
    assert_eq!(d.len(), 1, "{}", cluster.log_text());
    assert_eq!(d[0].name.as_deref(), Some("a-gone"));
    assert_eq!(
        entry_ids(&cluster, "a"),
        ids(&[core_id("default", "a-keep", "ConfigMap")])
    );
    // The progress events say so.
    assert!(
        run.events_named("applied")
            .iter()
            .any(|e| e["action"] == "deleted"
                && e["object"].as_str().is_some_and(|o| o.contains("a-gone"))),
        "{run}"
    );
}

#[test]
fn prune_disabled_on_the_manifest_or_on_the_live_object_keeps_it() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")])
        .file(
            "apps/a/keep.yaml",
            &config_map("default", "a-keep", &[("k", "v")]),
        )
        .file(
            "apps/a/annotated.yaml",
            &annotated_config_map(
                "default",
                "a-annotated",
                &[("kustomize.toolkit.fluxcd.io/prune", "disabled")],
            ),
        )
        .file(
            "apps/a/labelled.yaml",
            &config_map("default", "a-labelled", &[("k", "v")]),
        )
        .file(
            "apps/a/plain.yaml",
            &config_map("default", "a-plain", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    // Someone protects a-labelled on the server with the label form.
    cluster
        .apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a-labelled", "namespace": "default",
                                "labels": {"kustomize.toolkit.fluxcd.io/prune": "disabled"}}}),
            "kubectl-edit",
        )
        .expect("label on the server");

    for rel in [
        "apps/a/annotated.yaml",
        "apps/a/labelled.yaml",
        "apps/a/plain.yaml",
    ] {
        f.remove(rel);
    }
    cluster.clear_requests();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert!(cm_exists(&cluster, "default", "a-annotated"), "{run}");
    assert!(cm_exists(&cluster, "default", "a-labelled"), "{run}");
    assert!(!cm_exists(&cluster, "default", "a-plain"), "{run}");
    let d = deletes(&cluster);
    assert_eq!(
        d.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
        vec![Some("a-plain".to_string())],
        "{}",
        cluster.log_text()
    );
    assert_eq!(run.result("a")["objects"]["deleted"], 1, "{run}");
}

#[test]
fn an_object_whose_owner_labels_changed_on_the_server_is_not_pruned() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")])
        .file(
            "apps/a/keep.yaml",
            &config_map("default", "a-keep", &[("k", "v")]),
        )
        .file(
            "apps/a/adopted.yaml",
            &config_map("default", "a-adopted", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    // Another Kustomization adopted it: its owner labels now name someone else.
    cluster
        .apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a-adopted", "namespace": "default",
                                "labels": {"kustomize.toolkit.fluxcd.io/name": "other",
                                           "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}}}),
            "other-controller",
        )
        .expect("relabel on the server");
    let live = cluster
        .get("v1", "ConfigMap", Some("default"), "a-adopted")
        .expect("a-adopted");
    assert_eq!(
        live["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"],
        "other"
    );

    f.remove("apps/a/adopted.yaml");
    cluster.clear_requests();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert!(
        cm_exists(&cluster, "default", "a-adopted"),
        "an object owned by another Kustomization was pruned\n{run}"
    );
    assert!(deletes(&cluster).is_empty(), "{}", cluster.log_text());
}

#[test]
fn with_prune_false_nothing_is_deleted() {
    let cluster = Cluster::start();
    let f = Fleet::new()
        .file(
            "clusters/c/a.yaml",
            &kustomization_no_prune("a", "./apps/a", ""),
        )
        .file(
            "apps/a/keep.yaml",
            &config_map("default", "a-keep", &[("k", "v")]),
        )
        .file(
            "apps/a/gone.yaml",
            &config_map("default", "a-gone", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    f.remove("apps/a/gone.yaml");
    let diff = f.diff(&cluster, &[]);
    diff.expect_code(0);
    assert!(!diff.stdout.contains("deleted (prune)"), "{diff}");
    cluster.clear_requests();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert!(cm_exists(&cluster, "default", "a-gone"), "{run}");
    assert!(deletes(&cluster).is_empty(), "{}", cluster.log_text());
    assert_eq!(run.result("a")["objects"]["deleted"], 0, "{run}");
}

#[test]
fn prune_deletes_custom_resources_before_their_crd_and_namespaced_objects_before_their_namespace() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")])
        .file(
            "apps/a/keep.yaml",
            &config_map("default", "a-keep", &[("k", "v")]),
        )
        .file("apps/a/crd.yaml", &widget_crd())
        .file("apps/a/ns.yaml", &namespace("a-ns"))
        .file("apps/a/widget.yaml", &widget("a-ns", "a-widget", None))
        .file(
            "apps/a/cm.yaml",
            &config_map("a-ns", "a-cfg", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    assert!(
        cluster
            .get("example.com/v1", "Widget", Some("a-ns"), "a-widget")
            .is_some()
    );

    for rel in [
        "apps/a/crd.yaml",
        "apps/a/ns.yaml",
        "apps/a/widget.yaml",
        "apps/a/cm.yaml",
    ] {
        f.remove(rel);
    }
    cluster.clear_requests();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    let log = cluster.log_text();
    let d = deletes(&cluster);
    let widget = delete_pos(&d, "Widget", "a-widget", &log);
    let crd = delete_pos(&d, "CustomResourceDefinition", "widgets.example.com", &log);
    let cm = delete_pos(&d, "ConfigMap", "a-cfg", &log);
    let ns = delete_pos(&d, "Namespace", "a-ns", &log);
    assert!(widget < crd, "the CRD was deleted before its Widget\n{log}");
    assert!(
        cm < ns,
        "the Namespace was deleted before its ConfigMap\n{log}"
    );
    // A deleted CRD and Namespace terminate first (their server-side finalizers), as on a real
    // server; prune does not wait for them (neither does Flux's).
    assert!(
        cluster.wait_until(Duration::from_secs(10), |c| {
            c.get(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "widgets.example.com",
            )
            .is_none()
                && c.get("v1", "Namespace", None, "a-ns").is_none()
        }),
        "the CRD or the Namespace was never removed\n{log}"
    );
    assert!(cm_exists(&cluster, "default", "a-keep"));
    assert_eq!(
        entry_ids(&cluster, "a"),
        ids(&[core_id("default", "a-keep", "ConfigMap")])
    );
    assert_eq!(run.result("a")["objects"]["deleted"], 4, "{run}");
}

#[test]
fn a_child_kustomization_removed_from_its_parent_has_its_objects_pruned() {
    // In Flux the parent (prune: true) prunes the child Kustomization, whose finalizer deletes
    // the child's objects (deletionPolicy MirrorPrune, prune: true).
    let cluster = Cluster::start();
    let f = fleet(&[("apps", "")])
        .file(
            "apps/apps/cm.yaml",
            &config_map("default", "apps-cfg", &[("k", "v")]),
        )
        .file(
            "apps/apps/web.yaml",
            &kustomization("web", "./apps/web", ""),
        )
        .file(
            "apps/web/cm.yaml",
            &config_map("default", "web-cfg", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    assert!(cm_exists(&cluster, "default", "web-cfg"));

    f.remove("apps/apps/web.yaml");
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert!(cm_exists(&cluster, "default", "apps-cfg"), "{run}");
    assert!(
        !cm_exists(&cluster, "default", "web-cfg"),
        "the removed child's objects were left behind\n{run}"
    );
    assert!(
        inventory_cm(&cluster, "flux-system", "web").is_none(),
        "the removed child's inventory was left behind (status still lists it)\n{run}"
    );
}

// ---------------------------------------------------------------------------------------------
// diff

#[test]
fn diff_lists_what_apply_would_prune_and_writes_nothing() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")])
        .file(
            "apps/a/keep.yaml",
            &config_map("default", "a-keep", &[("k", "v")]),
        )
        .file(
            "apps/a/gone.yaml",
            &config_map("default", "a-gone", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    f.remove("apps/a/gone.yaml");
    cluster.clear_requests();
    let run = f.diff(&cluster, &[]);
    run.expect_code(1);
    assert!(
        run.stdout.lines().any(|l| l
            .trim_start()
            .ends_with("ConfigMap/default/a-gone deleted (prune)")),
        "{run}"
    );
    assert!(
        run.stdout.contains("ConfigMap/default/a-keep unchanged"),
        "{run}"
    );
    assert!(
        cluster.writes().is_empty(),
        "diff wrote\n{}",
        cluster.log_text()
    );
    assert!(cm_exists(&cluster, "default", "a-gone"));
    // The inventory still lists it: nothing was recorded.
    assert!(entry_ids(&cluster, "a").contains(&core_id("default", "a-gone", "ConfigMap")));
}

#[test]
fn diff_does_not_list_objects_that_prune_would_keep() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")])
        .file(
            "apps/a/keep.yaml",
            &config_map("default", "a-keep", &[("k", "v")]),
        )
        .file(
            "apps/a/prot.yaml",
            &annotated_config_map(
                "default",
                "a-prot",
                &[("kustomize.toolkit.fluxcd.io/prune", "disabled")],
            ),
        )
        .file(
            "apps/a/adopted.yaml",
            &config_map("default", "a-adopted", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    cluster
        .apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a-adopted", "namespace": "default",
                                "labels": {"kustomize.toolkit.fluxcd.io/name": "other"}}}),
            "other-controller",
        )
        .expect("relabel on the server");
    f.remove("apps/a/prot.yaml");
    f.remove("apps/a/adopted.yaml");
    let diff = f.diff(&cluster, &[]);
    // What apply then does: delete nothing.
    cluster.clear_requests();
    f.apply(&cluster, &[]).expect_code(0);
    assert!(deletes(&cluster).is_empty(), "{}", cluster.log_text());
    assert!(
        !diff.stdout.contains("deleted (prune)"),
        "diff promises deletions apply does not make\n{diff}"
    );
}

// ---------------------------------------------------------------------------------------------
// Incremental re-apply

/// A small fleet of three Kustomizations, one waiting on a Deployment that takes 300ms.
fn incremental_fleet() -> Fleet {
    fleet(&[
        ("a", "wait: true"),
        ("b", &depends_on(&["a"])),
        ("c", &depends_on(&["a"])),
    ])
    .file(
        "apps/a/deploy.yaml",
        &deployment("default", "a-web", Some("300ms")),
    )
    .file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v")]),
    )
    .file(
        "apps/b/cm.yaml",
        &config_map("default", "b-cfg", &[("k", "v")]),
    )
    .file(
        "apps/c/cm.yaml",
        &config_map("default", "c-cfg", &[("k", "v")]),
    )
}

#[test]
fn a_second_apply_of_an_unchanged_fleet_is_unchanged_and_makes_no_write_request() {
    let cluster = Cluster::start();
    let f = incremental_fleet();
    let t = Instant::now();
    let first = f.apply(&cluster, &[]);
    let first_wall = t.elapsed();
    first.expect_code(0);
    for id in ["a", "b", "c"] {
        assert_eq!(first.outcome(id), "ready", "{first}");
    }

    cluster.clear_requests();
    let t = Instant::now();
    let second = f.apply(&cluster, &[]);
    let second_wall = t.elapsed();
    second.expect_code(0);
    eprintln!(
        "incremental apply wall times: first (fresh) {} ms, second (unchanged) {} ms",
        ms(first_wall),
        ms(second_wall)
    );
    for id in ["a", "b", "c"] {
        assert_eq!(second.outcome(id), "unchanged", "{second}");
    }
    assert_eq!(second.result("a")["objects"]["unchanged"], 2, "{second}");
    let writes = cluster.writes();
    assert!(
        writes.is_empty(),
        "the unchanged re-apply wrote {} times\n{}",
        writes.len(),
        cluster.log_text()
    );
    // Not even a dry-run write request.
    assert!(
        !cluster.requests().iter().any(|r| r.verb.is_write()),
        "the unchanged re-apply sent write requests\n{}",
        cluster.log_text()
    );

    // --force-apply goes through the whole apply again.
    cluster.clear_requests();
    let forced = f.apply(&cluster, &["--force-apply"]);
    forced.expect_code(0);
    for id in ["a", "b", "c"] {
        assert_eq!(forced.outcome(id), "ready", "{forced}");
        assert!(
            cluster
                .writes()
                .iter()
                .any(|r| r.name.as_deref() == Some(&format!("flux-order-{id}"))),
            "--force-apply did not record {id}'s inventory\n{}",
            cluster.log_text()
        );
    }
    assert!(!cluster.writes().is_empty());
    // Every object was compared with the server again (dry-run applies).
    for name in ["a-web", "a-cfg", "b-cfg", "c-cfg"] {
        assert!(
            cluster
                .requests()
                .iter()
                .any(|r| r.verb == Verb::Apply && r.name.as_deref() == Some(name)),
            "--force-apply did not apply {name}\n{}",
            cluster.log_text()
        );
    }
}

#[test]
fn changing_one_manifest_reapplies_only_that_kustomization() {
    let cluster = Cluster::start();
    let f = incremental_fleet();
    f.apply(&cluster, &[]).expect_code(0);
    let f = f.file(
        "apps/b/cm.yaml",
        &config_map("default", "b-cfg", &[("k", "changed")]),
    );
    cluster.clear_requests();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("a"), "unchanged", "{run}");
    assert_eq!(run.outcome("b"), "ready", "{run}");
    assert_eq!(run.outcome("c"), "unchanged", "{run}");
    assert_eq!(run.result("b")["objects"]["configured"], 1, "{run}");
    let written: BTreeSet<String> = cluster
        .writes()
        .into_iter()
        .filter_map(|r| r.name)
        .collect();
    assert_eq!(
        written,
        ["b-cfg", "flux-order-b"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "{}",
        cluster.log_text()
    );
    let live = cluster
        .get("v1", "ConfigMap", Some("default"), "b-cfg")
        .expect("b-cfg");
    assert_eq!(live["data"]["k"], "changed");
}

#[test]
fn an_object_deleted_on_the_server_defeats_the_skip_and_is_recreated() {
    let cluster = Cluster::start();
    let f = incremental_fleet();
    f.apply(&cluster, &[]).expect_code(0);
    cluster
        .delete("v1", "ConfigMap", Some("default"), "c-cfg")
        .expect("delete c-cfg");
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("c"), "ready", "{run}");
    assert_eq!(run.result("c")["objects"]["created"], 1, "{run}");
    assert_eq!(run.outcome("b"), "unchanged", "{run}");
    assert!(cm_exists(&cluster, "default", "c-cfg"));
}

#[test]
fn a_kustomization_with_a_crd_its_resources_and_a_namespace_is_skipped_when_unchanged() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true")])
        .file("apps/a/crd.yaml", &widget_crd())
        .file("apps/a/ns.yaml", &namespace("a-ns"))
        .file(
            "apps/a/widget.yaml",
            &widget("a-ns", "a-widget", Some("100ms")),
        )
        .file(
            "apps/a/cm.yaml",
            &config_map("a-ns", "a-cfg", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    cluster.clear_requests();
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("a"), "unchanged", "{run}");
    assert_eq!(run.result("a")["objects"]["unchanged"], 4, "{run}");
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
}

// ---------------------------------------------------------------------------------------------
// Interruption

/// Asserts the inventory of `flux-system/<ks>` lists exactly those of `candidates` (ConfigMaps in
/// `default`) that exist on the server.
fn assert_inventory_matches_server(cluster: &Cluster, ks: &str, candidates: &[&str], run: &Run) {
    let listed = entry_ids(cluster, ks);
    let existing: BTreeSet<String> = candidates
        .iter()
        .filter(|n| cm_exists(cluster, "default", n))
        .map(|n| core_id("default", n, "ConfigMap"))
        .collect();
    assert_eq!(
        listed,
        existing,
        "the inventory (left) does not list exactly the objects on the server (right)\n{run}\n{}",
        cluster.log_text()
    );
}

/// `a` holds ConfigMaps `a-1`, `a-2`, `a-3`, applied one at a time; applying `a-2` is slow.
fn interrupted_fleet(cluster: &Cluster) -> Fleet {
    cluster.inject(Fault::latency(
        Matcher::verb(Verb::Apply)
            .name_contains("a-2")
            .dry_run(false),
        Duration::from_millis(1500),
    ));
    fleet(&[("a", "")])
        .file(
            "apps/a/1.yaml",
            &config_map("default", "a-1", &[("k", "v")]),
        )
        .file(
            "apps/a/2.yaml",
            &config_map("default", "a-2", &[("k", "v")]),
        )
        .file(
            "apps/a/3.yaml",
            &config_map("default", "a-3", &[("k", "v")]),
        )
}

/// Spawns `apply --object-concurrency 1`, sends SIGINT once `cond` holds, expects exit 130.
fn interrupt_when(
    f: &Fleet,
    cluster: &Cluster,
    what: &str,
    cond: impl FnMut(&TestServer) -> bool,
) -> Run {
    let child = f.spawn_apply(cluster, &["--object-concurrency", "1"]);
    if !cluster.wait_until(Duration::from_secs(20), cond) {
        let run = finish(child, Duration::from_secs(1));
        panic!("never saw {what}\n{run}\n{}", cluster.log_text());
    }
    sigint(&child);
    let run = finish(child, Duration::from_secs(20));
    run.expect_code(130);
    run
}

#[test]
fn an_interrupted_first_apply_leaves_an_inventory_of_exactly_the_objects_on_the_server() {
    let cluster = Cluster::start();
    let f = interrupted_fleet(&cluster);
    let run = interrupt_when(&f, &cluster, "the write of a-1", |s| {
        s.writes().iter().any(|r| r.name.as_deref() == Some("a-1"))
    });
    assert_eq!(run.outcome("a"), "failed", "{run}");
    assert!(cm_exists(&cluster, "default", "a-1"));
    assert!(
        !cm_exists(&cluster, "default", "a-3"),
        "the interrupt came too late to test anything\n{run}"
    );
    assert_inventory_matches_server(&cluster, "a", &["a-1", "a-2", "a-3"], &run);
    let inv = inventory_of(&cluster, "a");
    assert_ne!(inv["data"]["ready"], "true", "{}", pretty(&inv));

    // The next run completes the rollout (it is not skipped as unchanged).
    cluster.clear_faults();
    let next = f.apply(&cluster, &[]);
    next.expect_code(0);
    assert_eq!(next.outcome("a"), "ready", "{next}");
    assert_inventory_matches_server(&cluster, "a", &["a-1", "a-2", "a-3"], &next);
    assert_eq!(entry_ids(&cluster, "a").len(), 3);
}

#[test]
fn an_interrupted_reapply_keeps_objects_awaiting_prune_in_the_inventory() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")])
        .file(
            "apps/a/1.yaml",
            &config_map("default", "a-1", &[("k", "v")]),
        )
        .file(
            "apps/a/old.yaml",
            &config_map("default", "a-old", &[("k", "v")]),
        );
    f.apply(&cluster, &[]).expect_code(0);
    // v2: a-old removed, a-2 and a-3 added; applying a-2 is slow.
    f.remove("apps/a/old.yaml");
    let f = f
        .file(
            "apps/a/2.yaml",
            &config_map("default", "a-2", &[("k", "v")]),
        )
        .file(
            "apps/a/3.yaml",
            &config_map("default", "a-3", &[("k", "v")]),
        );
    cluster.inject(Fault::latency(
        Matcher::verb(Verb::Apply)
            .name_contains("a-2")
            .dry_run(false),
        Duration::from_millis(1500),
    ));
    cluster.clear_requests();
    // a-1 is applied first (it is in the inventory: GET, dry-run); a-2 is then in flight.
    let run = interrupt_when(&f, &cluster, "a-2 being applied", |s| {
        s.requests()
            .iter()
            .any(|r| r.name.as_deref() == Some("a-1") && r.dry_run && r.verb == Verb::Apply)
    });
    assert!(
        cm_exists(&cluster, "default", "a-old"),
        "pruned despite the interrupt"
    );
    assert!(!cm_exists(&cluster, "default", "a-3"), "{run}");
    assert_inventory_matches_server(&cluster, "a", &["a-1", "a-2", "a-3", "a-old"], &run);

    // The next run prunes a-old: the inventory still knew it.
    cluster.clear_faults();
    let next = f.apply(&cluster, &[]);
    next.expect_code(0);
    assert!(!cm_exists(&cluster, "default", "a-old"), "{next}");
    assert_inventory_matches_server(&cluster, "a", &["a-1", "a-2", "a-3", "a-old"], &next);
}

#[test]
fn an_interrupt_during_the_health_wait_leaves_every_applied_object_in_the_inventory() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "wait: true")])
        .file(
            "apps/a/cm.yaml",
            &config_map("default", "a-cfg", &[("k", "v")]),
        )
        .file(
            "apps/a/deploy.yaml",
            &deployment("default", "a-web", Some("never")),
        );
    let run = interrupt_when(&f, &cluster, "the write of a-web", |s| {
        s.writes()
            .iter()
            .any(|r| r.name.as_deref() == Some("a-web"))
    });
    assert_eq!(
        entry_ids(&cluster, "a"),
        ids(&[
            core_id("default", "a-cfg", "ConfigMap"),
            "default_a-web_apps_Deployment".to_string()
        ]),
        "{run}"
    );
    assert_ne!(inventory_of(&cluster, "a")["data"]["ready"], "true");
}

// ---------------------------------------------------------------------------------------------
// status

fn status_json(cluster: &Cluster) -> Vec<Value> {
    let run = cluster.run("status", &["-o", "json"]);
    run.expect_code(0);
    serde_json::from_str::<Vec<Value>>(&run.stdout)
        .unwrap_or_else(|e| panic!("status -o json: {e}\n{run}"))
}

fn status_row<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in status: {}", pretty(rows)))
}

fn status_fleet() -> Fleet {
    fleet(&[("a", "wait: true"), ("b", &depends_on(&["a"]))])
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
        )
}

#[test]
fn status_lists_each_kustomization_with_revision_applied_at_objects_and_readiness() {
    let cluster = Cluster::start();
    let f = status_fleet();
    f.apply(&cluster, &[]).expect_code(0);

    let rows = status_json(&cluster);
    assert_eq!(rows.len(), 2, "{}", pretty(&rows));
    for (id, n) in [("a", 2), ("b", 1)] {
        let row = status_row(&rows, &ks_id(id));
        let inv = inventory_of(&cluster, id);
        assert_eq!(row["revision"], inv["data"]["revision"], "{}", pretty(row));
        assert_eq!(
            row["appliedAt"],
            inv["data"]["appliedAt"],
            "{}",
            pretty(row)
        );
        assert_eq!(row["objects"], n, "{}", pretty(row));
        assert_eq!(row["ready"], true, "{}", pretty(row));
        assert_eq!(
            row["message"],
            format!("{n}/{n} objects ready"),
            "{}",
            pretty(row)
        );
    }

    let table = cluster.run("status", &[]);
    table.expect_code(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        vec![
            "KUSTOMIZATION",
            "REVISION",
            "APPLIED",
            "OBJECTS",
            "READY",
            "MESSAGE"
        ],
        "{table}"
    );
    let row_a = lines
        .iter()
        .find(|l| l.starts_with("flux-system/a "))
        .unwrap_or_else(|| panic!("no row for a\n{table}"));
    let cols: Vec<&str> = row_a.split_whitespace().collect();
    let inv = inventory_of(&cluster, "a");
    // The table shortens a revision: a commit to 12 characters, a digest to `sha256:` + 12.
    let full = inv["data"]["revision"].as_str().expect("revision");
    assert!(full.starts_with(cols[1]) && cols[1].len() >= 12, "{table}");
    assert_eq!(cols[2], inv["data"]["appliedAt"], "{table}");
    assert_eq!(cols[3], "2", "{table}");
    assert_eq!(cols[4], "True", "{table}");
    assert!(row_a.ends_with("2/2 objects ready"), "{table}");

    // -n: only that namespace.
    let other = cluster.run("status", &["-n", "elsewhere"]);
    other.expect_code(0);
    assert!(
        other
            .stdout
            .contains("No Kustomizations applied by flux-order"),
        "{other}"
    );
}

#[test]
fn status_reports_a_missing_or_unready_object_as_not_ready() {
    let cluster = Cluster::start();
    let f = status_fleet();
    f.apply(&cluster, &[]).expect_code(0);
    // b's ConfigMap deleted; a's Deployment loses its availability.
    cluster
        .delete("v1", "ConfigMap", Some("default"), "b-cfg")
        .expect("delete b-cfg");
    cluster
        .set_status(
            "apps/v1",
            "Deployment",
            Some("default"),
            "a-web",
            json!({
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                     "message": "Deployment does not have minimum availability."},
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                     "message": "progressing"}
                ]
            }),
        )
        .expect("set_status");

    let rows = status_json(&cluster);
    let a = status_row(&rows, "flux-system/a");
    assert_eq!(a["ready"], false, "{}", pretty(a));
    let msg = a["message"].as_str().expect("message");
    assert!(
        msg.starts_with("1/2 objects ready") && msg.contains("Deployment/default/a-web"),
        "{}",
        pretty(a)
    );
    let b = status_row(&rows, "flux-system/b");
    assert_eq!(b["ready"], false, "{}", pretty(b));
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("ConfigMap/default/b-cfg: not found")),
        "{}",
        pretty(b)
    );

    let table = cluster.run("status", &[]);
    table.expect_code(0);
    let row_b = table
        .stdout
        .lines()
        .find(|l| l.starts_with("flux-system/b "))
        .unwrap_or_else(|| panic!("no row for b\n{table}"));
    assert_eq!(row_b.split_whitespace().nth(4), Some("False"), "{table}");
    assert!(
        row_b.contains("ConfigMap/default/b-cfg: not found"),
        "{table}"
    );
}

#[test]
fn status_without_any_inventory_says_so() {
    let cluster = Cluster::start();
    let run = cluster.run("status", &[]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("No Kustomizations applied by flux-order."),
        "{run}"
    );
    let json = cluster.run("status", &["-o", "json"]);
    json.expect_code(0);
    assert_eq!(
        serde_json::from_str::<Value>(&json.stdout).expect("JSON"),
        json!([])
    );
}

// ---------------------------------------------------------------------------------------------
// delete

#[test]
fn delete_only_one_kustomization_deletes_it_and_its_children_not_its_dependencies() {
    let cluster = Cluster::start();
    let f = fleet(&[("infra", ""), ("apps", &depends_on(&["infra"]))])
        .file(
            "apps/infra/cm.yaml",
            &config_map("default", "infra-cfg", &[("k", "v")]),
        )
        .file(
            "apps/apps/cm.yaml",
            &config_map("default", "apps-cfg", &[("k", "v")]),
        )
        // apps applies a child Kustomization web.
        .file(
            "apps/apps/web.yaml",
            &kustomization("web", "./apps/web", ""),
        )
        .file(
            "apps/web/cm.yaml",
            &config_map("default", "web-cfg", &[("k", "v")]),
        );
    let run = f.apply(&cluster, &[]);
    run.expect_code(0);
    assert_eq!(run.outcome("web"), "ready", "{run}");
    assert!(cm_exists(&cluster, "default", "web-cfg"));

    cluster.clear_requests();
    let del = f.run("delete", &cluster, &["--only", "flux-system/apps", "--yes"]);
    del.expect_code(0);
    assert!(!cm_exists(&cluster, "default", "apps-cfg"), "{del}");
    assert!(!cm_exists(&cluster, "default", "web-cfg"), "{del}");
    assert!(
        cm_exists(&cluster, "default", "infra-cfg"),
        "a dependency was deleted\n{del}"
    );
    assert!(inventory_cm(&cluster, "flux-system", "apps").is_none());
    assert!(inventory_cm(&cluster, "flux-system", "web").is_none());
    assert!(inventory_cm(&cluster, "flux-system", "infra").is_some());
    let deleted: BTreeSet<String> = deletes(&cluster)
        .into_iter()
        .filter_map(|r| r.name)
        .collect();
    assert_eq!(
        deleted,
        ["apps-cfg", "web-cfg", "flux-order-apps", "flux-order-web"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "{}",
        cluster.log_text()
    );
}

#[test]
fn delete_removes_dependents_before_their_dependencies() {
    let cluster = Cluster::start();
    let f = fleet(&[
        ("a", ""),
        ("b", &depends_on(&["a"])),
        ("c", &depends_on(&["b"])),
    ])
    .file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v")]),
    )
    .file(
        "apps/b/cm.yaml",
        &config_map("default", "b-cfg", &[("k", "v")]),
    )
    .file(
        "apps/c/cm.yaml",
        &config_map("default", "c-cfg", &[("k", "v")]),
    );
    f.apply(&cluster, &[]).expect_code(0);
    cluster.clear_requests();
    let del = f.run(
        "delete",
        &cluster,
        &[
            "--only",
            "flux-system/a",
            "--only",
            "flux-system/b",
            "--only",
            "flux-system/c",
            "--yes",
        ],
    );
    del.expect_code(0);
    let log = cluster.log_text();
    let d = deletes(&cluster);
    let (a, b, c) = (
        delete_pos(&d, "ConfigMap", "a-cfg", &log),
        delete_pos(&d, "ConfigMap", "b-cfg", &log),
        delete_pos(&d, "ConfigMap", "c-cfg", &log),
    );
    assert!(c < b && b < a, "not dependents first\n{log}");
    for n in ["a-cfg", "b-cfg", "c-cfg"] {
        assert!(!cm_exists(&cluster, "default", n));
    }
}

#[test]
fn delete_honours_deletion_policy_and_prune_protection() {
    let cluster = Cluster::start();
    let f = Fleet::new()
        .file(
            "clusters/c/orphan.yaml",
            &kustomization("orphan", "./apps/orphan", "deletionPolicy: Orphan"),
        )
        .file(
            "clusters/c/mirror.yaml",
            &kustomization_no_prune("mirror", "./apps/mirror", ""),
        )
        .file(
            "clusters/c/mirrorprune.yaml",
            &kustomization(
                "mirrorprune",
                "./apps/mirrorprune",
                "deletionPolicy: MirrorPrune",
            ),
        )
        .file(
            "clusters/c/del.yaml",
            &kustomization_no_prune("del", "./apps/del", "deletionPolicy: Delete"),
        )
        .file(
            "clusters/c/prot.yaml",
            &kustomization("prot", "./apps/prot", ""),
        );
    let mut f = f;
    for name in ["orphan", "mirror", "mirrorprune", "del", "prot"] {
        f = f.file(
            &format!("apps/{name}/cm.yaml"),
            &config_map("default", &format!("{name}-cfg"), &[("k", "v")]),
        );
    }
    let f = f.file(
        "apps/prot/keep.yaml",
        &annotated_config_map(
            "default",
            "prot-keep",
            &[("kustomize.toolkit.fluxcd.io/prune", "disabled")],
        ),
    );
    f.apply(&cluster, &[]).expect_code(0);

    cluster.clear_requests();
    let del = f.run("delete", &cluster, &["--yes"]);
    del.expect_code(0);
    for (name, kept) in [
        ("orphan-cfg", true),
        ("mirror-cfg", true),
        ("mirrorprune-cfg", false),
        ("del-cfg", false),
        ("prot-cfg", false),
        ("prot-keep", true),
    ] {
        assert_eq!(
            cm_exists(&cluster, "default", name),
            kept,
            "{name} should be {}\n{del}\n{}",
            if kept { "kept" } else { "deleted" },
            cluster.log_text()
        );
    }
    // Every inventory is gone: flux-order no longer manages any of them.
    for name in ["orphan", "mirror", "mirrorprune", "del", "prot"] {
        assert!(
            inventory_cm(&cluster, "flux-system", name).is_none(),
            "{name}'s inventory left\n{del}"
        );
    }
}

#[test]
fn delete_wait_for_termination_returns_once_the_objects_are_gone() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "deletionPolicy: WaitForTermination")]).file(
        "apps/a/cm.yaml",
        &annotated_config_map(
            "default",
            "a-cfg",
            &[("test.flux-order/delete-after", "300ms")],
        ),
    );
    f.apply(&cluster, &[]).expect_code(0);
    let t = Instant::now();
    let del = f.run("delete", &cluster, &["--yes"]);
    del.expect_code(0);
    assert!(
        !cm_exists(&cluster, "default", "a-cfg"),
        "delete returned after {} ms while a-cfg still exists\n{del}",
        ms(t.elapsed())
    );
}

#[test]
fn delete_without_yes_and_no_terminal_refuses_and_deletes_nothing() {
    let cluster = Cluster::start();
    let f = fleet(&[("a", "")]).file(
        "apps/a/cm.yaml",
        &config_map("default", "a-cfg", &[("k", "v")]),
    );
    f.apply(&cluster, &[]).expect_code(0);
    cluster.clear_requests();
    // stdin is not a terminal (assert_cmd gives the child an empty stdin).
    let del = f.run("delete", &cluster, &[]);
    del.expect_code(2);
    assert!(del.stderr.contains("--yes"), "{del}");
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
    assert!(cm_exists(&cluster, "default", "a-cfg"));
    assert!(inventory_cm(&cluster, "flux-system", "a").is_some());
}

// ---------------------------------------------------------------------------------------------
// Hand-off to Flux

fn handoff_fleet() -> Fleet {
    fleet(&[("a", "wait: true")])
        .file("apps/a/ns.yaml", &namespace("a-ns"))
        .file("apps/a/deploy.yaml", &deployment("a-ns", "a-web", None))
        .file(
            "apps/a/cm.yaml",
            &config_map("a-ns", "a-cfg", &[("k", "v")]),
        )
        .file(
            "apps/a/svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a-svc\n  namespace: a-ns\nspec:\n  selector: {app: a-web}\n  ports:\n    - port: 80\n",
        )
}

/// `(apiVersion, kind, namespace, name)` of a built object.
fn key(o: &Value) -> (String, String, Option<String>, String) {
    (
        o["apiVersion"].as_str().expect("apiVersion").to_string(),
        o["kind"].as_str().expect("kind").to_string(),
        o["metadata"]["namespace"].as_str().map(str::to_string),
        o["metadata"]["name"].as_str().expect("name").to_string(),
    )
}

#[test]
fn applied_objects_carry_flux_owner_labels_and_a_kustomize_controller_apply_entry() {
    let cluster = Cluster::start();
    let f = handoff_fleet();
    f.apply(&cluster, &[]).expect_code(0);
    let built = f.build("flux-system/a", &[]);
    assert_eq!(built.len(), 4);
    for o in &built {
        let (api, kind, ns, name) = key(o);
        let live = cluster
            .get(&api, &kind, ns.as_deref(), &name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"));
        let labels = &live["metadata"]["labels"];
        assert_eq!(labels["kustomize.toolkit.fluxcd.io/name"], "a", "{live}");
        assert_eq!(
            labels["kustomize.toolkit.fluxcd.io/namespace"], "flux-system",
            "{live}"
        );
        let mf = live["metadata"]["managedFields"]
            .as_array()
            .expect("managedFields");
        assert!(
            mf.iter()
                .any(|m| m["manager"] == "kustomize-controller" && m["operation"] == "Apply"),
            "{kind} {name}: {}",
            pretty(mf)
        );
    }
    // The inventory ConfigMap itself is flux-order's own bookkeeping, not Flux-owned.
    let inv = inventory_of(&cluster, "a");
    assert!(
        inv["metadata"]["labels"]
            .get("kustomize.toolkit.fluxcd.io/name")
            .is_none(),
        "{}",
        pretty(&inv)
    );
}

#[test]
fn diff_after_apply_reports_every_object_unchanged() {
    let cluster = Cluster::start();
    let f = handoff_fleet();
    f.apply(&cluster, &[]).expect_code(0);
    cluster.clear_requests();
    let run = f.diff(&cluster, &[]);
    run.expect_code(0);
    let objects: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.trim_start().starts_with('►'))
        .collect();
    assert_eq!(objects.len(), 4, "{run}");
    for l in objects {
        assert!(l.trim_end().ends_with(" unchanged"), "{l}\n{run}");
    }
    assert!(cluster.writes().is_empty(), "{}", cluster.log_text());
}

#[test]
fn kustomize_controller_applying_the_same_build_changes_nothing() {
    let cluster = Cluster::start();
    let f = handoff_fleet();
    f.apply(&cluster, &[]).expect_code(0);
    let built = f.build("flux-system/a", &[]);
    let global_rv = cluster.resource_version();
    for o in &built {
        let (api, kind, ns, name) = key(o);
        let before = cluster
            .get(&api, &kind, ns.as_deref(), &name)
            .unwrap_or_else(|| panic!("{kind} {name} missing"));
        // As kustomize-controller applies: server-side apply, its field manager, force.
        let after = cluster
            .apply(o.clone(), "kustomize-controller")
            .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
        assert_eq!(
            rv(&before),
            rv(&after),
            "kustomize-controller's apply changed {kind} {name}\nbefore: {}\nafter: {}",
            pretty(&before),
            pretty(&after)
        );
    }
    assert_eq!(cluster.resource_version(), global_rv);
}

/// Three Kustomizations whose objects spread over namespaces `s1`, `s2` and kinds (ConfigMap,
/// Secret, Service, Deployment, Namespace, a custom Widget), several sharing a (kind, namespace).
fn status_spread_fleet() -> Fleet {
    let after_a = depends_on(&["a"]);
    fleet(&[("a", ""), ("b", &after_a), ("c", &after_a)])
        .file("apps/a/ns.yaml", &format!("{}---\n{}", namespace("s1"), namespace("s2")))
        .file("apps/a/cm.yaml", &config_map("s1", "a-cfg", &[("k", "v")]))
        .file("apps/a/deploy.yaml", &deployment("s1", "a-web", None))
        .file(
            "apps/a/svc.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a-svc\n  namespace: s2\nspec:\n  ports:\n    - port: 80\n",
        )
        .file(
            "apps/b/cm.yaml",
            &format!(
                "{}---\n{}",
                config_map("s1", "b-cfg", &[("k", "v")]),
                config_map("s2", "b-cfg2", &[("k", "v")])
            ),
        )
        .file("apps/b/deploy.yaml", &deployment("s2", "b-web", None))
        .file("apps/b/widget.yaml", &widget("s2", "b-widget", None))
        .file("apps/c/cm.yaml", &config_map("s2", "c-cfg", &[("k", "v")]))
        .file(
            "apps/c/secret.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c-sec\n  namespace: s1\nstringData:\n  k: v\n",
        )
}

/// `status` reports the same rows, word for word, for ready, missing, not-ready, relabeled
/// objects and objects of a kind no longer served, across namespaces and kinds (the expected
/// messages were recorded from the version that read each object with its own GET).
#[test]
fn status_output_is_exact_for_ready_missing_unready_relabeled_and_unserved_objects() {
    let cluster = Cluster::start();
    cluster.install_widget_crd();
    let f = status_spread_fleet();
    f.apply(&cluster, &[]).expect_code(0);

    cluster
        .delete("v1", "ConfigMap", Some("s1"), "b-cfg")
        .expect("delete b-cfg");
    cluster
        .set_status(
            "apps/v1",
            "Deployment",
            Some("s2"),
            "b-web",
            json!({
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "unavailableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                     "message": "Deployment does not have minimum availability."},
                    {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                     "message": "progressing"}
                ]
            }),
        )
        .expect("set_status");
    // Owner labels changed on the server: still c's objects, still there.
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kubectl(&[
        "-n",
        "s2",
        "label",
        "configmap",
        "c-cfg",
        "kustomize.toolkit.fluxcd.io/name-",
        "kustomize.toolkit.fluxcd.io/namespace-",
    ]);
    kubectl(&[
        "-n",
        "s1",
        "label",
        "--overwrite",
        "secret",
        "c-sec",
        "kustomize.toolkit.fluxcd.io/name=someone-else",
    ]);
    // The Widget kind is no longer served.
    cluster
        .delete(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        )
        .expect("delete the CRD");
    assert!(
        cluster.wait_until(Duration::from_secs(10), |s| s
            .get(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "widgets.example.com"
            )
            .is_none()),
        "the CRD was not removed"
    );

    let rows = status_json(&cluster);
    let got: Vec<(String, u64, bool, String)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_string(),
                r["objects"].as_u64().unwrap_or(0),
                r["ready"].as_bool().unwrap_or(true),
                r["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let row =
        |id: &str, n: u64, ready: bool, msg: &str| (id.to_string(), n, ready, msg.to_string());
    assert_eq!(
        got,
        vec![
            row("flux-system/a", 5, true, "5/5 objects ready"),
            row(
                "flux-system/b",
                4,
                false,
                "1/4 objects ready; ConfigMap/s1/b-cfg: not found, Deployment/s2/b-web: 0/1 updated replicas available, Widget/s2/b-widget: not found"
            ),
            row("flux-system/c", 2, true, "2/2 objects ready"),
        ],
        "{}",
        pretty(&rows)
    );

    let table = cluster.run("status", &[]);
    table.expect_code(0);
    let tail: Vec<String> = table
        .stdout
        .lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", cols[0], cols[3], cols[4..].join(" "))
        })
        .collect();
    let expected: Vec<String> = got
        .iter()
        .map(|(id, n, ready, msg)| {
            format!("{id} {n} {} {msg}", if *ready { "True" } else { "False" })
        })
        .collect();
    assert_eq!(tail, expected, "{table}");

    // One Kustomization in detail: the same objects not ready.
    let detail = cluster.run("status", &["flux-system/b", "-o", "json"]);
    detail.expect_code(0);
    let d: Value = serde_json::from_str(&detail.stdout).expect("JSON");
    assert_eq!(
        d["notReady"],
        json!([
            "ConfigMap/s1/b-cfg: not found",
            "Deployment/s2/b-web: 0/1 updated replicas available",
            "Widget/s2/b-widget: not found"
        ]),
        "{detail}"
    );
}

/// `status` on more objects of one (kind, namespace) than a page holds: the LIST is paginated
/// (500 a page, following `continue`), and every object is found on whichever page it is.
#[test]
fn status_pages_through_a_large_namespace() {
    let cluster = Cluster::start();
    let n = 1_100;
    let manifests: Vec<String> = (0..n)
        .map(|i| config_map("default", &format!("big-{i:04}"), &[("i", "v")]))
        .collect();
    let f = fleet(&[("big", "")]).file("apps/big/cms.yaml", &manifests.join("---\n"));
    f.apply(&cluster, &[]).expect_code(0);
    cluster
        .delete("v1", "ConfigMap", Some("default"), "big-0777")
        .expect("delete");

    cluster.clear_requests();
    let rows = status_json(&cluster);
    let row = status_row(&rows, "flux-system/big");
    assert_eq!(row["objects"], n, "{}", pretty(row));
    assert_eq!(
        row["message"],
        format!(
            "{}/{n} objects ready; ConfigMap/default/big-0777: not found",
            n - 1
        ),
        "{}",
        pretty(row)
    );
    let lists: Vec<RequestLog> = cluster
        .requests()
        .into_iter()
        .filter(|r| {
            r.verb == Verb::List
                && r.resource == "configmaps"
                && r.namespace.as_deref() == Some("default")
        })
        .collect();
    let pages = |filtered: bool| -> Vec<&RequestLog> {
        lists
            .iter()
            .filter(|r| r.label_selector.as_deref().is_some_and(|s| !s.is_empty()) == filtered)
            .collect()
    };
    // 1,099 labelled objects, then (one is missing) the whole namespace again: 3 pages each
    // (the namespace also holds kube-root-ca.crt).
    for filtered in [true, false] {
        let p = pages(filtered);
        assert_eq!(p.len(), 3, "{}", cluster.log_text());
        assert!(p.iter().all(|r| r.query.contains("limit=500")));
        assert!(!p[0].query.contains("continue="), "{}", p[0].query);
        assert!(p[1..].iter().all(|r| r.query.contains("continue=")));
    }
    assert!(
        !cluster
            .requests()
            .iter()
            .any(|r| r.verb == Verb::Get && r.resource == "configmaps"),
        "{}",
        cluster.log_text()
    );

    // The continue token expires between pages (410): the list starts over, same answer.
    cluster.clear_requests();
    cluster.inject(
        Fault::status(
            Matcher::verb(Verb::List)
                .resource("configmaps")
                .namespace("default"),
            410,
        )
        .nth(2),
    );
    let again = status_json(&cluster);
    assert_eq!(
        status_row(&again, "flux-system/big")["message"],
        row["message"],
        "{}",
        cluster.log_text()
    );
    let queries: Vec<(u16, bool)> = cluster
        .requests()
        .into_iter()
        .filter(|r| r.verb == Verb::List && r.resource == "configmaps" && r.namespace.is_some())
        .map(|r| (r.status, r.query.contains("continue=")))
        .collect();
    assert_eq!(
        queries[..4],
        [(200, false), (410, true), (200, false), (200, true)],
        "{}",
        cluster.log_text()
    );
}
