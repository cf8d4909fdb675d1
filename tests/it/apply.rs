//! `apply` end to end: the real binary against the test API server. Ordering is asserted on the
//! server's request log and its simulated controllers' ready events, never on terminal text.

use std::time::Duration;

use crate::util::*;

/// A fleet of Kustomizations `flux-system/<name>`, each building `./apps/<name>` with these extra
/// spec fields.
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
}

#[test]
fn zz_debug_print() {
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
    println!("{run}\n{}", cluster.log_text());
    let run = f.run("apply", &cluster, &[]);
    println!("{run}");
}
