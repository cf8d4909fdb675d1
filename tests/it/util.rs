//! Helpers that let a test read as "given this fleet, when I run this command, then…":
//! [`flux_order`] (the real binary), [`Fleet`] (a throw-away fleet repo in a temp dir),
//! YAML/JSON parsing of the outputs, and paths to the example fleet and the corpora.
//! Generic on purpose: plan, graph, build, errors, and later apply and health, share it.

#![allow(dead_code)] // each test module uses a different part

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// The `kubectl-flux_order` binary cargo built for this test run.
pub fn flux_order() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-flux_order"));
    // Deterministic, quiet runs: no colours, no inherited log filter.
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared corpora of real fleet repositories (not in git: map their source with `--source`).
pub fn corpora() -> PathBuf {
    repo_root().join("../shared/corpora")
}

/// `tests/fixtures/<rel>`.
pub fn fixtures(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// The `--source` value that maps the bootstrap source to `dir`.
pub fn bootstrap_source(dir: &Path) -> String {
    format!("GitRepository/flux-system/flux-system={}", dir.display())
}

/// Removes the common indentation of `text` and a leading newline, so fixtures can be written
/// indented inside raw strings.
pub fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: String = text
        .lines()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim_start()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    out.push('\n');
    out
}

/// A Flux Kustomization `flux-system/<name>` on the bootstrap source with `path`; `spec` holds
/// extra spec fields (any indentation), e.g. `"targetNamespace: apps"`.
pub fn kustomization(name: &str, path: &str, spec: &str) -> String {
    let extra: String = if spec.trim().is_empty() {
        String::new()
    } else {
        dedent(spec).lines().map(|l| format!("  {l}\n")).collect()
    };
    format!(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  path: {path}\n{extra}"
    )
}

/// A ConfigMap manifest with string data.
pub fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n"
    );
    if !data.is_empty() {
        s.push_str("data:\n");
        for (k, v) in data {
            s.push_str(&format!(
                "  {k}: {}\n",
                serde_json::to_string(v).expect("string")
            ));
        }
    }
    s
}

/// Parses a multi-document YAML stream (build output, expectations) into JSON values.
pub fn yaml_docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Parses one YAML document.
pub fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

/// The object of `kind` named `name` among `objects`.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in {}", pretty(objects)))
}

/// Pretty JSON for failure messages.
pub fn pretty<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fails if `stderr` shows a panic or a backtrace: user input must never cause one.
pub fn assert_no_panic(stderr: &str) {
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        assert!(
            !stderr.contains(bad),
            "stderr shows a panic ({bad}):\n{stderr}"
        );
    }
}

/// A throw-away fleet repository: files written into a fresh temp dir, removed on drop.
/// `PATH` is `clusters/c` unless [`Fleet::cluster`] says otherwise. Without [`Fleet::git`], the
/// bootstrap source `GitRepository/flux-system/flux-system` is mapped to the root with `--source`;
/// with it, the root is a git work tree and flux-order finds it by itself.
pub struct Fleet {
    dir: tempfile::TempDir,
    cluster: String,
    git: bool,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("flux-order-it-")
            .tempdir()
            .expect("temp dir");
        Fleet {
            dir,
            cluster: "clusters/c".into(),
            git: false,
        }
    }

    /// A fleet holding a copy of the directory `from`.
    pub fn copy_of(from: &Path) -> Self {
        let f = Fleet::new();
        copy_dir(from, f.root());
        f
    }

    /// Writes `rel` (dedented), creating its directories.
    pub fn file(self, rel: &str, content: &str) -> Self {
        let p = self.root().join(rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&p, dedent(content)).expect("write");
        self
    }

    /// Creates an empty directory.
    pub fn dir(self, rel: &str) -> Self {
        std::fs::create_dir_all(self.root().join(rel)).expect("mkdir");
        self
    }

    /// Uses `rel` as PATH instead of `clusters/c`.
    pub fn cluster(mut self, rel: &str) -> Self {
        self.cluster = rel.into();
        self
    }

    /// Makes the root a git work tree (`git init`), so the bootstrap source maps by default.
    pub fn git(mut self) -> Self {
        let ok = std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(self.root())
            .status()
            .expect("git runs")
            .success();
        assert!(ok, "git init failed");
        self.git = true;
        self
    }

    /// The fleet's root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `flux-order <subcommand> clusters/c [--source bootstrap=root]`, run from the root (so
    /// messages show paths relative to it).
    pub fn cmd(&self, subcommand: &str) -> Command {
        let mut cmd = flux_order();
        cmd.current_dir(self.root())
            .arg(subcommand)
            .arg(&self.cluster);
        if !self.git {
            cmd.arg("--source").arg(bootstrap_source(self.root()));
        }
        cmd
    }

    /// Runs `plan -o json` with `args` and returns the parsed plan (asserts success).
    pub fn plan(&self, args: &[&str]) -> Value {
        let out = self
            .cmd("plan")
            .args(["-o", "json"])
            .args(args)
            .assert()
            .success()
            .get_output()
            .clone();
        let (stdout, stderr) = text(&out);
        assert_no_panic(&stderr);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("plan -o json: {e}\n{stdout}"))
    }

    /// Runs `build --name <name>` with `args` and returns its stdout (asserts success).
    pub fn build_text(&self, name: &str, args: &[&str]) -> String {
        let out = self
            .cmd("build")
            .args(["--name", name])
            .args(args)
            .assert()
            .success()
            .get_output()
            .clone();
        let (stdout, stderr) = text(&out);
        assert_no_panic(&stderr);
        stdout
    }

    /// Runs `build --name <name>` with `args` and returns the objects printed.
    pub fn build(&self, name: &str, args: &[&str]) -> Vec<Value> {
        yaml_docs(&self.build_text(name, args))
    }

    /// Runs `subcommand` expecting exit code 2 (invalid input); returns stderr, checked to hold no
    /// panic and stdout checked empty (nothing is printed as success before validation ends).
    pub fn fails(&self, subcommand: &str, args: &[&str]) -> String {
        let out = self
            .cmd(subcommand)
            .args(args)
            .assert()
            .code(2)
            .get_output()
            .clone();
        let (stdout, stderr) = text(&out);
        assert_no_panic(&stderr);
        assert!(
            stdout.is_empty(),
            "stdout should be empty on invalid input:\n{stdout}"
        );
        stderr
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Wave contents of a plan: `[["ns/name", …], …]`.
pub fn waves(plan: &Value) -> Vec<Vec<String>> {
    plan["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| {
            w["kustomizations"]
                .as_array()
                .expect("kustomizations")
                .iter()
                .map(|k| k["id"].as_str().expect("id").to_string())
                .collect()
        })
        .collect()
}

/// The plan entry of one Kustomization.
pub fn plan_entry<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .flat_map(|w| w["kustomizations"].as_array().expect("kustomizations"))
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in the plan"))
}

/// `[["a", "b"], ["c"]]` as owned strings, for comparing with [`waves`].
pub fn expect_waves(w: &[&[&str]]) -> Vec<Vec<String>> {
    w.iter()
        .map(|wave| wave.iter().map(|s| s.to_string()).collect())
        .collect()
}
