//! The plugin surface: kubectl finds the binary as `kubectl flux-order`, `--help` lists every
//! command, and the krew manifest is a valid Plugin for this binary.

use std::process::Command;

use crate::util::*;

#[test]
fn kubectl_finds_the_plugin_and_its_help_lists_every_command() {
    let bin = assert_cmd::cargo::cargo_bin("kubectl-flux_order");
    let dir = bin.parent().unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("kubectl")
        .args(["flux-order", "--help"])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "plan",
        "graph",
        "build",
        "apply",
        "diff",
        "status",
        "delete",
        "completion",
    ] {
        assert!(
            help.contains(&format!("  {cmd} ")),
            "--help lacks {cmd}:\n{help}"
        );
    }
}

#[test]
fn the_krew_manifest_is_a_plugin_for_this_binary() {
    let text =
        std::fs::read_to_string(repo_root().join("plugin-manifest/flux-order.yaml")).unwrap();
    let m: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    assert_eq!(m["metadata"]["name"], "flux-order");
    assert!(m["spec"]["version"].as_str().unwrap().starts_with('v'));
    assert!(!m["spec"]["shortDescription"].as_str().unwrap().is_empty());
    let platforms = m["spec"]["platforms"].as_array().unwrap();
    assert!(!platforms.is_empty());
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-flux_order");
        let sha = p["sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{sha}"
        );
        assert!(p["uri"].as_str().unwrap().starts_with("https://"));
        assert!(p["selector"]["matchLabels"]["os"].is_string());
    }
}

#[test]
fn completion_scripts_are_printed() {
    let out = flux_order().args(["completion", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kubectl-flux_order"));
}
