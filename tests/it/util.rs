//! Helpers that let a test read as "given this fleet, when I run this command, then…":
//! [`flux_order`] (the real binary), [`Fleet`] (a throw-away fleet repo in a temp dir),
//! YAML/JSON parsing of the outputs, and paths to the example fleet and the corpora.
//! Generic on purpose: plan, graph, build, errors, and later apply and health, share it.

#![allow(dead_code)] // each test module uses a different part

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// The binary under test: the one cargo built for this test run, or `FLUX_ORDER_BIN` (to show
/// that a new test fails on an older build).
pub fn binary() -> PathBuf {
    std::env::var_os("FLUX_ORDER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kubectl-flux_order")))
}

/// The `kubectl-flux_order` binary under test ([`binary`]).
pub fn flux_order() -> Command {
    let mut cmd = Command::new(binary());
    // Deterministic, quiet runs: no colours, no inherited log filter.
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared corpora of real fleet repositories (not in this repository: map their source with
/// `--source`): `$FLUX_ORDER_CORPORA`, else `../shared/corpora` beside the repository. None when
/// absent, with a note on stderr (past the test harness's capture), so a bare clone's tests
/// skip them and pass.
pub fn corpora(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("FLUX_ORDER_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/corpora"));
    if dir.is_dir() {
        return Some(dir);
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "note: {test} skipped: no fleet corpora at {} (set FLUX_ORDER_CORPORA to a directory holding flux2-kustomize-helm-example and flux2-multi-tenancy)",
        dir.display()
    );
    None
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

pub fn copy_dir(from: &Path, to: &Path) {
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

// ---------------------------------------------------------------------------------------------
// apply, diff and health: a test API server per test, runs of the binary against it, manifests
// with simulated readiness, and request-log queries.

pub use flux_order_test_apiserver::{
    Fault, FaultAction, FaultId, Matcher, ReadyEvent, RequestLog, ServerOptions, TestServer, Verb,
};

/// Anything a command can be pointed at with `--kubeconfig`: the test API server ([`Cluster`]) or
/// a session of the real control plane ([`crate::tiers::Tier`]).
pub trait Kube {
    /// The kubeconfig file.
    fn kubeconfig(&self) -> &Path;
}

impl Kube for Cluster {
    fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

/// A test API server with its kubeconfig file. Derefs to the [`TestServer`].
pub struct Cluster {
    server: TestServer,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl std::ops::Deref for Cluster {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl Cluster {
    /// A server with the default options (workloads ready at once, CRDs established in 100ms).
    pub fn start() -> Self {
        Self::with(ServerOptions::default())
    }

    /// A server with these options.
    pub fn with(opts: ServerOptions) -> Self {
        let server = TestServer::start(opts);
        let dir = tempfile::Builder::new()
            .prefix("flux-order-kubeconfig-")
            .tempdir()
            .expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Cluster {
            server,
            _dir: dir,
            kubeconfig,
        }
    }

    /// The kubeconfig file pointing at this server.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Effective writes (2xx, not dry-run) of objects whose name starts with
    /// `prefix`, in order of arrival (the log itself is in order of completion).
    pub fn writes_named(&self, prefix: &str) -> Vec<RequestLog> {
        let mut writes: Vec<RequestLog> = self
            .writes()
            .into_iter()
            .filter(|r| r.name.as_deref().is_some_and(|n| n.starts_with(prefix)))
            .collect();
        writes.sort_by_key(|r| r.since_start);
        writes
    }

    /// The first effective write of an object whose name starts with `prefix`.
    pub fn first_write(&self, prefix: &str) -> RequestLog {
        self.writes_named(prefix)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no write of {prefix}*\n{}", self.log_text()))
    }

    /// The last effective write of an object whose name starts with `prefix`.
    pub fn last_write(&self, prefix: &str) -> RequestLog {
        self.writes_named(prefix)
            .into_iter()
            .last()
            .unwrap_or_else(|| panic!("no write of {prefix}*\n{}", self.log_text()))
    }

    /// The simulated controller's completion of `kind` `name`.
    pub fn ready_event(&self, kind: &str, name: &str) -> ReadyEvent {
        self.ready_events()
            .into_iter()
            .find(|e| e.object.kind == kind && e.object.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "{kind} {name} never finished on the server: {:?}",
                    self.ready_events()
                )
            })
    }

    /// The request log, one line per request, for failure messages.
    pub fn log_text(&self) -> String {
        self.requests()
            .iter()
            .map(|r| {
                format!(
                    "#{} {:>5}ms {} {} {}{}{} -> {}{}",
                    r.seq,
                    r.since_start.as_millis(),
                    r.verb,
                    r.kind,
                    r.namespace
                        .as_deref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    r.name.as_deref().unwrap_or(&r.path),
                    if r.dry_run { " (dry-run)" } else { "" },
                    r.status,
                    if r.fault { " (fault)" } else { "" },
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What one run of the binary printed and how it exited.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: &Output) -> Run {
        let (stdout, stderr) = text(out);
        assert_no_panic(&stderr);
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }

    /// Fails with both outputs unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }

    /// The JSON events of `-o json`, one per stdout line (every line must parse).
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{self}"))
            })
            .collect()
    }

    /// The events named `name` (`started`, `applied`, …).
    pub fn events_named(&self, name: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// The final `summary` event.
    pub fn summary(&self) -> Value {
        let events = self.events();
        let last = events
            .last()
            .unwrap_or_else(|| panic!("no events\n{self}"))
            .clone();
        assert_eq!(
            last["event"], "summary",
            "last event is not the summary\n{self}"
        );
        last
    }

    /// The summary result of Kustomization `id` (`flux-system/a`, or just `a`).
    pub fn result(&self, id: &str) -> Value {
        let id = ks_id(id);
        self.summary()["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["id"] == id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{id} not in the summary\n{self}"))
    }

    /// The summary outcome of Kustomization `id`.
    pub fn outcome(&self, id: &str) -> String {
        self.result(id)["outcome"]
            .as_str()
            .expect("outcome")
            .to_string()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `a` → `flux-system/a`; `ns/a` unchanged.
pub fn ks_id(id: &str) -> String {
    if id.contains('/') {
        id.to_string()
    } else {
        format!("flux-system/{id}")
    }
}

impl Fleet {
    /// Like [`Fleet::cmd`], as a `std::process::Command` (to spawn and signal it).
    pub fn std_cmd(&self, subcommand: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(binary());
        cmd.env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .current_dir(self.root())
            .arg(subcommand)
            .arg(&self.cluster);
        if !self.git {
            cmd.arg("--source").arg(bootstrap_source(self.root()));
        }
        cmd
    }

    /// Runs `subcommand … --kubeconfig <cluster> args` and returns what it printed (any exit).
    pub fn run(&self, subcommand: &str, cluster: &impl Kube, args: &[&str]) -> Run {
        let out = self
            .cmd(subcommand)
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(args)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .expect("run the binary");
        Run::from_output(&out)
    }

    /// `apply -o json` with `args`. Without a `--retry-for` among them, `--retry-for 0`: a test
    /// of a failure sees its one attempt, as before retries existed; tests of retries pass their
    /// own budget.
    pub fn apply(&self, cluster: &impl Kube, args: &[&str]) -> Run {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(&no_retries_unless_asked(args));
        self.run("apply", cluster, &all)
    }

    /// `diff` with `args`.
    pub fn diff(&self, cluster: &impl Kube, args: &[&str]) -> Run {
        self.run("diff", cluster, args)
    }
}

/// `args`, with `--retry-for 0` added unless they set `--retry-for`.
pub fn no_retries_unless_asked<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out = args.to_vec();
    if !args.iter().any(|a| a.starts_with("--retry-for")) {
        out.extend(["--retry-for", "0"]);
    }
    out
}

/// A Deployment `ns/name` (one replica) whose simulated controller makes it ready after
/// `ready_after` (`500ms`, `never`, `fail`; None: the server default).
pub fn deployment(ns: &str, name: &str, ready_after: Option<&str>) -> String {
    let ann = ready_after
        .map(|r| format!("  annotations:\n    test.flux-order/ready-after: \"{r}\"\n"))
        .unwrap_or_default();
    // The pod template carries it too: the real tier's kubelet stand-in reads it on the pods.
    let pod_ann: String = ann.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {ns}\n{ann}spec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n{pod_ann}    spec:\n      containers:\n        - name: main\n          image: nginx:1.27\n"
    )
}

/// A Namespace manifest.
pub fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
}

/// Extra Kustomization spec: `dependsOn` these names (in flux-system).
pub fn depends_on(names: &[&str]) -> String {
    let mut s = String::from("dependsOn:\n");
    for n in names {
        s.push_str(&format!("  - name: {n}\n"));
    }
    s
}

/// Milliseconds of a duration, for messages.
pub fn ms(d: std::time::Duration) -> u128 {
    d.as_millis()
}

impl Fleet {
    /// Starts `apply -o json --kubeconfig <cluster> args` in the background, outputs piped.
    pub fn spawn_apply(&self, cluster: &impl Kube, args: &[&str]) -> std::process::Child {
        self.std_cmd("apply")
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args(["-o", "json"])
            .args(no_retries_unless_asked(args))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the binary")
    }
}

/// Waits (polling, up to `timeout`) for a spawned run to exit and returns what it printed; kills
/// it and fails if it does not exit in time.
pub fn finish(mut child: std::process::Child, timeout: std::time::Duration) -> Run {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "still running after {timeout:?}; killed\n{}",
                Run::from_output(&out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Run::from_output(&child.wait_with_output().expect("output"))
}

/// The CRD `widgets.example.com` (namespaced kind `Widget`, version v1, status subresource).
pub fn widget_crd() -> String {
    dedent(
        "
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata:
          name: widgets.example.com
        spec:
          group: example.com
          names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
          scope: Namespaced
          versions:
            - name: v1
              served: true
              storage: true
              subresources: {status: {}}
              schema:
                openAPIV3Schema:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
        ",
    )
}

/// A `Widget` custom resource; with `ready_after`, the simulated controller sets its Ready
/// condition.
pub fn widget(ns: &str, name: &str, ready_after: Option<&str>) -> String {
    let ann = ready_after
        .map(|r| format!("  annotations:\n    test.flux-order/ready-after: \"{r}\"\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\n  namespace: {ns}\n{ann}spec:\n  size: 1\n"
    )
}

impl Cluster {
    /// Creates the Widget CRD on the server directly and waits until it is Established.
    pub fn install_widget_crd(&self) {
        self.create(yaml(&widget_crd())).expect("create CRD");
        let established = self.wait_until(std::time::Duration::from_secs(10), |s| {
            s.get(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                "widgets.example.com",
            )
            .and_then(|c| c["status"]["conditions"].as_array().cloned())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            })
        });
        assert!(established, "the Widget CRD was never Established");
    }
}

// ---------------------------------------------------------------------------------------------
// Commands without a PATH (`status`), editing a fleet between runs, signalling a spawned run.

impl Cluster {
    /// Runs `subcommand --kubeconfig <this server> args` (no PATH, e.g. `status`); any exit.
    pub fn run(&self, subcommand: &str, args: &[&str]) -> Run {
        let out = flux_order()
            .arg(subcommand)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .expect("run the binary");
        Run::from_output(&out)
    }
}

impl Fleet {
    /// Removes the file `rel` from the fleet.
    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.root().join(rel)).unwrap_or_else(|e| panic!("remove {rel}: {e}"));
    }

    /// Commits everything in the work tree (after [`Fleet::git`]); returns the new HEAD.
    pub fn commit(&self, message: &str) -> String {
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args([
                    "-c",
                    "user.name=flux-order tests",
                    "-c",
                    "user.email=tests@flux-order.invalid",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(args)
                .current_dir(self.root())
                .output()
                .expect("git runs");
            assert!(
                out.status.success(),
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["add", "-A"]);
        git(&["commit", "-q", "--allow-empty", "-m", message]);
        git(&["rev-parse", "HEAD"])
    }
}

/// Sends SIGINT to a spawned run (as Ctrl-C would).
pub fn sigint(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -INT failed");
}

/// `helm package` of the fixture chart `tests/fixtures/charts/<name>` into `dir` (helm's own
/// config and cache there too); returns the archive `<name>-<version>.tgz`.
pub fn package_fixture_chart(name: &str, version: &str, dir: &Path) -> PathBuf {
    let out = std::process::Command::new(crate::sources::tool("helm"))
        .env("HELM_CONFIG_HOME", dir.join("cfg"))
        .env("HELM_CACHE_HOME", dir.join("cache"))
        .args(["package", "-d"])
        .arg(dir)
        .arg(fixtures(&format!("charts/{name}")))
        .output()
        .expect("helm package");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join(format!("{name}-{version}.tgz"))
}

/// What a run left in its TMPDIR `tmp` (entry names; empty when it cleaned up).
pub fn leftovers(tmp: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .expect("read tmp")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}
