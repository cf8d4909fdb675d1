//! Bad input, data-driven: every folder of `tests/fixtures/bad/<case>/` is a tiny fleet whose PATH
//! is `clusters/c`. It is copied into a temp git work tree and planned. `expect.txt` lists
//! substrings stderr must hold (one a line), `args.txt` extra arguments (one a line), `exit.txt`
//! the exit code when it is not 2 (invalid input), `commands.txt` the commands to run when not
//! only `plan` (`apply` and `diff` run against a fresh test API server: "exit 2: nothing
//! written" is checked on its request log), `README.md` why the case is there. Adding a case is
//! adding a folder. Every case also checks: no panic or backtrace, on exit 2 an empty stdout
//! (nothing is printed as success before validation ends), and on exit 4 (planned with
//! failures) a plan that lists the failures.

use std::path::{Path, PathBuf};

use crate::util::*;

struct Case {
    name: String,
    dir: PathBuf,
    expect: Vec<String>,
    args: Vec<String>,
    exit: i32,
    /// Each command with the exit code it must give (`apply 2` in commands.txt; else `exit`).
    commands: Vec<(String, i32)>,
}

fn lines(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn cases() -> Vec<Case> {
    let root = fixtures("bad");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let expect = lines(&dir.join("expect.txt"));
            assert!(!expect.is_empty(), "{name}: expect.txt is missing or empty");
            let exit = lines(&dir.join("exit.txt"))
                .first()
                .map(|c| {
                    c.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("{name}: exit.txt is not a number"))
                })
                .unwrap_or(2);
            let mut commands: Vec<(String, i32)> = lines(&dir.join("commands.txt"))
                .iter()
                .map(|l| match l.split_once(' ') {
                    Some((c, code)) => (
                        c.to_string(),
                        code.trim()
                            .parse()
                            .unwrap_or_else(|_| panic!("{name}: commands.txt: {l}")),
                    ),
                    None => (l.clone(), exit),
                })
                .collect();
            if commands.is_empty() {
                commands.push(("plan".into(), exit));
            }
            Case {
                commands,
                args: lines(&dir.join("args.txt")),
                expect,
                exit,
                name,
                dir,
            }
        })
        .collect()
}

/// Runs one case; returns what is wrong with it (empty: it passed).
fn run(case: &Case, subcommand: &str, exit: i32, extra: &[&str]) -> Vec<String> {
    let fleet = Fleet::copy_of(&case.dir).git();
    let cluster = matches!(subcommand, "apply" | "diff").then(Cluster::start);
    let mut cmd = fleet.cmd(subcommand);
    if let Some(c) = &cluster {
        cmd.arg("--kubeconfig").arg(c.kubeconfig());
    }
    let out = cmd
        .args(extra)
        .args(&case.args)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    let mut problems = Vec::new();
    if let Some(c) = cluster.as_ref().filter(|_| exit == 2)
        && !c.writes().is_empty()
    {
        problems.push(format!("exit 2 but written:\n{}", c.log_text()));
    }
    let code = out.status.code();
    if code != Some(exit) {
        problems.push(format!("exit code {code:?}, expected {exit}"));
    }
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        if stderr.contains(bad) {
            problems.push(format!("stderr shows a panic ({bad})"));
        }
    }
    if exit == 2 && !stdout.is_empty() {
        problems.push("stdout is not empty".into());
    }
    // Planned with failures: the rest of the fleet is still printed, the failing one marked.
    if exit == 4 && subcommand == "plan" && !stdout.contains("\nFailures (") {
        problems.push("stdout does not list the failures".into());
    }
    for e in &case.expect {
        if !stderr.contains(e.as_str()) {
            problems.push(format!("stderr lacks {e:?}"));
        }
    }
    if problems.is_empty() {
        return problems;
    }
    vec![format!(
        "{} ({subcommand}): {}\n--- stderr:\n{stderr}",
        case.name,
        problems.join("; ")
    )]
}

/// Cases known to fail because of a bug in src/ (see the case's README or the final report);
/// they are run and reported, but do not fail the suite while listed here.
const KNOWN_BUGS: &[(&str, &str)] = &[];

#[test]
fn every_bad_fixture_fails_as_its_expect_txt_says() {
    let cases = cases();
    assert!(
        cases.len() >= 20,
        "expected the whole bad-input corpus, found {}",
        cases.len()
    );
    let results: Vec<(String, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|c| {
                let work = move || {
                    c.commands
                        .iter()
                        .flat_map(|(cmd, code)| run(c, cmd, *code, &[]))
                        .collect::<Vec<_>>()
                };
                (c.name.clone(), s.spawn(work))
            })
            .collect();
        handles
            .into_iter()
            .map(|(n, h)| (n, h.join().expect("case thread")))
            .collect()
    });
    let mut failures = Vec::new();
    for (name, problems) in results {
        match KNOWN_BUGS.iter().find(|(n, _)| *n == name) {
            Some((_, bug)) if !problems.is_empty() => {
                eprintln!("known bug, not failing: {name}: {bug}")
            }
            Some(_) => failures.push(format!(
                "{name}: listed in KNOWN_BUGS but passes now; remove it"
            )),
            None => failures.extend(problems),
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn graph_and_build_report_a_bad_fleet_like_plan() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "cycle")
        .expect("the cycle case");
    // The graph is drawn with the loop marked (exit 4); building a Kustomization of the loop
    // prints nothing (exit 2).
    let mut failures = run(&case, "graph", case.exit, &[]);
    failures.extend(run(&case, "build", 2, &["--name", "flux-system/a"]));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_error_of_a_fleet_is_reported_at_once_and_the_rest_is_planned() {
    let fleet = Fleet::new()
        .file("clusters/c/a.yaml", &kustomization("a", "./apps/a", ""))
        .file(
            "clusters/c/b.yaml",
            &kustomization("b", "./apps/missing", ""),
        )
        .file(
            "clusters/c/c.yaml",
            &kustomization("c", "../../outside", ""),
        )
        .file(
            "clusters/c/d.yaml",
            &kustomization("d", "./apps/a", &depends_on(&["b"])),
        )
        .file("apps/a/cm.yaml", &config_map("default", "a", &[]));
    let out = fleet
        .cmd("plan")
        .args(["-o", "json"])
        .output()
        .expect("runs");
    let (stdout, stderr) = text(&out);
    assert_no_panic(&stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    for needle in [
        "clusters/c/b.yaml: Kustomization flux-system/b: kustomization path not found",
        "clusters/c/c.yaml: Kustomization flux-system/c: spec.path '../../outside' escapes",
        "2 Kustomization(s) failed to load, build or validate; the rest is planned",
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("JSON plan");
    let a = plan_entry(&plan, "flux-system/a");
    assert_eq!(a["objectCount"], 1, "{}", pretty(&plan));
    assert_eq!(a["failures"], serde_json::json!([]));
    let b = plan_entry(&plan, "flux-system/b");
    assert!(
        b["failures"][0]
            .as_str()
            .is_some_and(|f| f.starts_with("kustomization path not found")),
        "{}",
        pretty(b)
    );
    let d = plan_entry(&plan, "flux-system/d");
    assert_eq!(d["blockedByFailure"], serde_json::json!(["flux-system/b"]));
    assert_eq!(d["objectCount"], 1);
    let failures = plan["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 2, "{}", pretty(&plan));
    assert_eq!(failures[0]["file"], "clusters/c/b.yaml");
    assert_eq!(failures[0]["kustomization"], "flux-system/b");

    // The text plan marks them too, and the graph draws them.
    let out = fleet.cmd("plan").output().expect("runs");
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("flux-system/b  [FAILED")
            && stdout.contains("flux-system/d  [BLOCKED by failing flux-system/b]")
            && stdout.contains("Plan for clusters/c: 4 Kustomizations (2 failed)"),
        "{stdout}"
    );
    let out = fleet.cmd("graph").output().expect("runs");
    assert_eq!(out.status.code(), Some(4));
    let (dot, _) = text(&out);
    assert!(
        dot.contains("xlabel=\"failed\"") && dot.contains("xlabel=\"blocked by failure\""),
        "{dot}"
    );
}

#[test]
fn a_path_that_is_not_a_directory_is_invalid_input() {
    let out = flux_order()
        .args(["plan", "/nonexistent/clusters/x"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let (stdout, stderr) = text(&out);
    assert!(stdout.is_empty());
    assert_no_panic(&stderr);
    assert!(
        stderr.contains("/nonexistent/clusters/x: no such directory"),
        "{stderr}"
    );
}
