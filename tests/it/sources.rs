//! Sources fetched as source-controller would, against real servers on 127.0.0.1 started here:
//! the distribution `registry` (artifacts pushed with `oras`, charts with `helm push`; with and
//! without basic auth), a static HTTP Helm repository (`helm repo index`), and `git daemon`. Then
//! the cache, `--offline`, `pull --to` and `--from` with every server stopped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Fleet, assert_no_panic, plan_entry, text};

/// A tool of the test-deps bin dir (`FLUX_ORDER_TEST_BIN`, else the default location).
pub fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("FLUX_ORDER_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/flux-order/test-deps/bin")
        });
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} missing: run scripts/test-deps (or scripts/test)",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The distribution registry on 127.0.0.1, filesystem storage in a temp dir.
pub struct Registry {
    port: u16,
    log: PathBuf,
    auth: Option<(String, String)>,
    proc: Option<Proc>,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = auth {
            let hash = bcrypt::hash(p, 4).expect("bcrypt");
            std::fs::write(dir.path().join("htpasswd"), format!("{u}:{hash}\n")).expect("write");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("write");
        let log = dir.path().join("access.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(tool("registry"))
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("registry starts");
        let proc = Proc(child);
        wait_for_port(port, "registry");
        Registry {
            port,
            log,
            auth: auth.map(|(u, p)| (u.into(), p.into())),
            proc: Some(proc),
            _dir: dir,
        }
    }

    /// How many requests the registry logged whose line contains `needle`.
    fn requests(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle) && l.contains("HTTP/1.1\""))
            .count()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn creds(&self, cmd: &mut Command, user: &str, pass: &str) {
        if let Some((u, p)) = &self.auth {
            cmd.args([user, u, pass, p]);
        }
    }

    /// Pushes a Flux artifact (a .tar.gz of `files`) as `repo:tag` with oras.
    fn push_artifact(&self, repo: &str, tag: &str, files: &[(&str, &str)]) {
        let work = tempfile::tempdir().expect("tmp");
        let tgz = tar_gz(files);
        std::fs::write(work.path().join("artifact.tgz"), tgz).expect("write");
        let mut cmd = Command::new(tool("oras"));
        cmd.current_dir(work.path()).args([
            "push",
            "--plain-http",
            "--artifact-type",
            "application/vnd.cncf.flux.config.v1+json",
        ]);
        self.creds(&mut cmd, "-u", "-p");
        cmd.arg(format!("{}/{repo}:{tag}", self.host()))
            .arg("artifact.tgz:application/vnd.cncf.flux.content.v1.tar+gzip");
        run(&mut cmd);
    }

    /// Packages a chart and pushes it with `helm push` under `oci://host/<prefix>`.
    fn push_chart(&self, prefix: &str, name: &str, version: &str) {
        let work = tempfile::tempdir().expect("tmp");
        let pkg = package_chart(work.path(), name, version);
        self.push_package(prefix, &pkg, work.path());
    }

    /// Pushes a packaged chart (`helm push`) under `oci://host/<prefix>`.
    pub fn push_package(&self, prefix: &str, pkg: &Path, work: &Path) {
        let mut cmd = Command::new(tool("helm"));
        cmd.env("HELM_CONFIG_HOME", work.join("cfg"))
            .env("HELM_CACHE_HOME", work.join("cache"))
            .args(["push", "--plain-http"])
            .arg(pkg)
            .arg(format!("oci://{}/{prefix}", self.host()));
        self.creds(&mut cmd, "--username", "--password");
        run(&mut cmd);
    }

    fn stop(&mut self) {
        self.proc = None;
    }
}

/// `helm package` of a minimal chart; returns the .tgz path.
fn package_chart(work: &Path, name: &str, version: &str) -> PathBuf {
    let chart = work.join("src").join(name);
    std::fs::create_dir_all(chart.join("templates")).expect("mkdir");
    std::fs::write(
        chart.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )
    .expect("write");
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n",
    )
    .expect("write");
    let out = work.join("pkg");
    run(Command::new(tool("helm"))
        .env("HELM_CONFIG_HOME", work.join("cfg"))
        .env("HELM_CACHE_HOME", work.join("cache"))
        .arg("package")
        .arg(&chart)
        .arg("-d")
        .arg(&out));
    out.join(format!("{name}-{version}.tgz"))
}

fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data.as_bytes())
            .expect("append");
    }
    b.into_inner().expect("tar").finish().expect("gz")
}

/// A static file server on 127.0.0.1 (a Helm repository), optionally behind basic auth.
struct StaticHttp {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl StaticHttp {
    fn start(root: PathBuf, basic: Option<&str>) -> StaticHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // `Authorization: Basic <base64>` expected, when asked for.
        let expected = basic.map(|b| format!("basic {}", b.to_lowercase()));
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => serve(s, &root, expected.as_deref()),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        StaticHttp { port, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StaticHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut s: TcpStream, root: &Path, expected_auth: Option<&str>) {
    s.set_nonblocking(false).ok();
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).ok();
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut authorized = expected_auth.is_none();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
            && Some(v.trim().to_lowercase().as_str()) == expected_auth
        {
            authorized = true;
        }
    }
    let file = root.join(path.trim_start_matches('/'));
    let (status, body) = if !authorized {
        ("401 Unauthorized", Vec::new())
    } else if path.contains("..") || !file.is_file() {
        ("404 Not Found", Vec::new())
    } else {
        let mut b = Vec::new();
        std::fs::File::open(&file)
            .and_then(|mut f| f.read_to_end(&mut b))
            .expect("read");
        ("200 OK", b)
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        body.len(),
        if status.starts_with("401") {
            "WWW-Authenticate: Basic realm=\"test\"\r\n"
        } else {
            ""
        }
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&body);
}

/// A git repository served by `git daemon` on 127.0.0.1.
struct GitServer {
    port: u16,
    base: tempfile::TempDir,
    proc: Option<Proc>,
}

impl GitServer {
    fn start() -> GitServer {
        let base = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg(format!("--base-path={}", base.path().display()))
            .arg(format!("--port={port}"))
            .arg("--listen=127.0.0.1")
            .arg(base.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        let proc = Proc(child);
        wait_for_port(port, "git daemon");
        GitServer {
            port,
            base,
            proc: Some(proc),
        }
    }

    /// Creates `name` with `files` on branch main, tagged `tags`.
    fn repo(&self, name: &str, files: &[(&str, &str)], tags: &[&str]) -> String {
        let dir = self.base.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let git = |args: &[&str]| {
            run(Command::new("git")
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "init.defaultBranch=main",
                ])
                .args(args)
                .current_dir(&dir))
        };
        git(&["init", "-q"]);
        for (p, c) in files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(f, c).expect("write");
        }
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "init"]);
        for t in tags {
            git(&["tag", "-a", t, "-m", t]);
        }
        git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    fn stop(&mut self) {
        self.proc = None;
    }
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n")
}

fn oci_repo(name: &str, url: &str, reference: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  url: {url}\n  insecure: true\n  ref:\n    {reference}\n{extra}"
    )
}

fn ks(name: &str, kind: &str, source: &str, path: &str) -> String {
    format!(
        "---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n  prune: true\n  sourceRef:\n    kind: {kind}\n    name: {source}\n"
    )
}

/// Runs a command of the fleet with its own cache dir; returns (code, stdout, stderr).
fn flux(fleet: &Fleet, cache: &Path, sub: &str, args: &[&str]) -> (i32, String, String) {
    let out = fleet
        .cmd(sub)
        .env("FLUX_ORDER_CACHE_DIR", cache)
        .env("DOCKER_CONFIG", cache.join("no-docker-config"))
        .args(args)
        .output()
        .expect("runs");
    let (o, e) = text(&out);
    assert_no_panic(&e);
    (out.status.code().unwrap_or(-1), o, e)
}

fn plan_json(fleet: &Fleet, cache: &Path, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = flux(fleet, cache, "plan", &all);
    assert_eq!(code, 0, "plan failed:\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn source_entry<'a>(plan: &'a Value, source: &str) -> &'a Value {
    plan["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["source"] == source)
        .unwrap_or_else(|| panic!("no source {source} in {}", plan["sources"]))
}

fn objects_of(plan: &Value, id: &str) -> Vec<String> {
    plan_entry(plan, id)["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| o.as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn oci_repository_by_tag_and_semver_then_cache_and_offline() {
    let mut reg = Registry::start(None);
    let files_v1 = [("apps/cm.yaml", config_map("from-v1").leak() as &str)];
    reg.push_artifact("fleet/apps", "v1.0.0", &files_v1);
    reg.push_artifact(
        "fleet/apps",
        "v1.2.0",
        &[("apps/cm.yaml", config_map("from-v12").leak())],
    );
    reg.push_artifact(
        "fleet/apps",
        "v2.0.0-rc.1",
        &[("apps/cm.yaml", config_map("from-rc").leak())],
    );
    let url = format!("oci://{}/fleet/apps", reg.host());
    let fleet = Fleet::new().file(
        "clusters/c/apps.yaml",
        &format!(
            "{}{}{}{}",
            oci_repo("by-tag", &url, "tag: v1.0.0", ""),
            oci_repo("by-semver", &url, "semver: '>=1.0.0 <2.0.0'", ""),
            ks("tagged", "OCIRepository", "by-tag", "./apps"),
            ks("ranged", "OCIRepository", "by-semver", "./apps"),
        ),
    );
    let cache = tempfile::tempdir().expect("tmp");
    let plan = plan_json(&fleet, cache.path(), &[]);
    assert!(
        objects_of(&plan, "flux-system/tagged")
            .iter()
            .any(|o| o.contains("from-v1")),
        "{plan}"
    );
    assert!(
        objects_of(&plan, "flux-system/ranged")
            .iter()
            .any(|o| o.contains("from-v12")),
        "semver picks the newest non-prerelease in range: {plan}"
    );
    let s = source_entry(&plan, "OCIRepository/flux-system/by-semver");
    assert_eq!(s["origin"], "network", "{s}");
    assert_eq!(s["mapping"], "fetched");
    assert!(
        s["revision"]
            .as_str()
            .unwrap()
            .starts_with("v1.2.0@sha256:"),
        "{s}"
    );

    // The text plan names each fetched source, its revision and origin.
    let (code, text_plan, _) = flux(&fleet, cache.path(), "plan", &[]);
    assert_eq!(code, 0);
    assert!(
        text_plan.contains("Fetched sources:")
            && text_plan
                .lines()
                .any(|l| l.contains("OCIRepository/flux-system/by-semver")
                    && l.contains("v1.2.0@sha256:")
                    && l.ends_with("(cache)")),
        "{text_plan}"
    );
    // A second run finds the artifacts in the cache.
    let plan = plan_json(&fleet, cache.path(), &[]);
    let by_tag = source_entry(&plan, "OCIRepository/flux-system/by-tag");
    assert_eq!(by_tag["origin"], "cache");
    let digest = by_tag["revision"]
        .as_str()
        .unwrap()
        .split('@')
        .nth(1)
        .unwrap()
        .to_string();

    // ref.digest wins over ref.tag; semverFilter narrows the tags; a --registry-mirror (plain
    // HTTP) stands in for a registry that does not exist.
    let more = Fleet::new().file(
        "clusters/c/apps.yaml",
        &[
            oci_repo("pinned", &url, &format!("tag: v1.2.0\n    digest: {digest}"), ""),
            oci_repo("filtered", &url, "semver: '*'\n    semverFilter: '^v1[.]0[.]'", ""),
            "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: mirrored\n  namespace: flux-system\nspec:\n  interval: 10m\n  url: oci://registry.example.invalid/fleet/apps\n  ref:\n    tag: v1.2.0\n".to_string(),
            ks("pinned", "OCIRepository", "pinned", "./apps"),
            ks("filtered", "OCIRepository", "filtered", "./apps"),
            ks("mirrored", "OCIRepository", "mirrored", "./apps"),
        ]
        .concat(),
    );
    let mirror = format!("registry.example.invalid=http://{}", reg.host());
    let plan = plan_json(&more, cache.path(), &["--registry-mirror", &mirror]);
    assert!(
        objects_of(&plan, "flux-system/pinned")
            .iter()
            .any(|o| o.contains("from-v1")),
        "{plan}"
    );
    assert_eq!(
        source_entry(&plan, "OCIRepository/flux-system/pinned")["revision"],
        digest.as_str()
    );
    assert!(
        objects_of(&plan, "flux-system/filtered")
            .iter()
            .any(|o| o.contains("from-v1")),
        "{plan}"
    );
    assert!(
        objects_of(&plan, "flux-system/mirrored")
            .iter()
            .any(|o| o.contains("from-v12")),
        "{plan}"
    );
    assert_eq!(
        source_entry(&plan, "OCIRepository/flux-system/mirrored")["url"],
        "oci://registry.example.invalid/fleet/apps",
        "the fleet's URL is kept; only the fetch goes to the mirror"
    );

    // Unknown tag: the error names the source, the Kustomization and the tag; that Kustomization
    // fails, the rest is planned (exit 4).
    let bad = Fleet::new().file(
        "clusters/c/apps.yaml",
        &format!(
            "{}{}",
            oci_repo("missing", &url, "tag: v9", ""),
            ks("broken", "OCIRepository", "missing", "./apps")
        ),
    );
    let (code, _, err) = flux(&bad, cache.path(), "plan", &[]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("Kustomization flux-system/broken")
            && err.contains("OCIRepository/flux-system/missing")
            && err.contains("tag 'v9' not found"),
        "{err}"
    );
    let nomatch = Fleet::new().file(
        "clusters/c/apps.yaml",
        &format!(
            "{}{}",
            oci_repo("future", &url, "semver: '>=3'", ""),
            ks("later", "OCIRepository", "future", "./apps")
        ),
    );
    let (code, _, err) = flux(&nomatch, cache.path(), "plan", &[]);
    assert_eq!(code, 4);
    assert!(
        err.contains("no version matching semver '>=3'") && err.contains("v1.2.0"),
        "{err}"
    );

    // Registry gone: --offline plans from the cache; what the cache lacks is named.
    reg.stop();
    let plan = plan_json(&fleet, cache.path(), &["--offline"]);
    assert_eq!(
        source_entry(&plan, "OCIRepository/flux-system/by-semver")["origin"],
        "cache"
    );
    let (code, _, err) = flux(&nomatch, cache.path(), "plan", &["--offline"]);
    assert_eq!(code, 4);
    assert!(
        err.contains("is not in the cache") && err.contains("flux-system/later"),
        "{err}"
    );
    // Without --offline, the unreachable host is named with the flags that help.
    let (code, _, err) = flux(&fleet, tempfile::tempdir().unwrap().path(), "plan", &[]);
    assert_eq!(code, 4);
    assert!(
        err.contains("cannot reach") && err.contains("--offline"),
        "{err}"
    );
}

#[test]
fn registry_with_basic_auth_reads_a_dockerconfigjson_secret() {
    let reg = Registry::start(Some(("flux", "s3cret-pass")));
    reg.push_artifact(
        "private/apps",
        "latest",
        &[("cm.yaml", config_map("private").leak())],
    );
    let url = format!("oci://{}/private/apps", reg.host());
    let auth = base64("flux:s3cret-pass");
    let dockerconfig = format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.host());
    let secret = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: flux-system\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        base64(&dockerconfig)
    );
    let with = Fleet::new().file(
        "clusters/c/apps.yaml",
        &format!(
            "{secret}{}{}",
            oci_repo(
                "private",
                &url,
                "tag: latest",
                "  secretRef:\n    name: regcred\n"
            ),
            ks("private", "OCIRepository", "private", "./")
        ),
    );
    let cache = tempfile::tempdir().expect("tmp");
    let plan = plan_json(&with, cache.path(), &[]);
    assert!(
        objects_of(&plan, "flux-system/private")
            .iter()
            .any(|o| o.contains("private"))
    );
    let (_, out, err) = flux(&with, cache.path(), "plan", &[]);
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "credentials never print"
    );

    let without = Fleet::new().file(
        "clusters/c/apps.yaml",
        &format!(
            "{}{}",
            oci_repo("private", &url, "tag: latest", ""),
            ks("private", "OCIRepository", "private", "./")
        ),
    );
    let (code, _, err) = flux(&without, tempfile::tempdir().unwrap().path(), "plan", &[]);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("authentication to") && err.contains("OCIRepository/flux-system/private"),
        "{err}"
    );
}

fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (c as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn helm_release(name: &str, chart: &str) -> String {
    format!(
        "---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n{chart}"
    )
}

#[test]
fn pull_charts_and_sources_then_plan_from_the_bundle_with_servers_stopped() {
    let mut reg = Registry::start(None);
    reg.push_chart("charts", "podinfo", "6.5.0");
    reg.push_chart("charts", "podinfo", "6.6.0");
    reg.push_artifact(
        "fleet/infra",
        "v1",
        &[("infra/cm.yaml", config_map("infra").leak())],
    );
    // A static Helm repository behind basic auth.
    let repo_dir = tempfile::tempdir().expect("tmp");
    for v in ["1.0.0", "1.1.0", "2.0.0-beta.1"] {
        let pkg = package_chart(repo_dir.path(), "redis", v);
        std::fs::copy(&pkg, repo_dir.path().join(pkg.file_name().unwrap())).unwrap();
    }
    std::fs::remove_dir_all(repo_dir.path().join("pkg")).unwrap();
    run(Command::new(tool("helm"))
        .env("HELM_CONFIG_HOME", repo_dir.path().join("cfg"))
        .arg("repo")
        .arg("index")
        .arg(repo_dir.path()));
    let http = StaticHttp::start(repo_dir.path().to_path_buf(), Some(&base64("u:p")));
    let mut git = GitServer::start();
    let commit = git.repo(
        "team",
        &[("team/cm.yaml", &config_map("team"))],
        &["v0.1.0", "v0.2.0"],
    );

    let fleet = Fleet::new().file(
        "clusters/c/all.yaml",
        &[
            oci_repo(
                "podinfo",
                &format!("oci://{}/charts/podinfo", reg.host()),
                "semver: '6.x'",
                "  layerSelector:\n    mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip\n    operation: copy\n",
            ),
            oci_repo("infra", &format!("oci://{}/fleet/infra", reg.host()), "tag: v1", ""),
            ks("infra", "OCIRepository", "infra", "./infra"),
            format!(
                "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: team\n  namespace: flux-system\nspec:\n  interval: 1m\n  url: {}\n  ref:\n    semver: '0.x'\n",
                git.url("team")
            ),
            ks("team", "GitRepository", "team", "./team"),
            format!(
                "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: bitnami\n  namespace: flux-system\nspec:\n  interval: 1h\n  url: {}\n  secretRef:\n    name: repo-auth\n",
                http.url()
            ),
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: repo-auth\n  namespace: flux-system\nstringData:\n  username: u\n  password: p\n".to_string(),
            format!(
                "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: oci-charts\n  namespace: flux-system\nspec:\n  type: oci\n  insecure: true\n  interval: 1h\n  url: oci://{}/charts\n",
                reg.host()
            ),
            "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata:\n  name: redis-one\n  namespace: flux-system\nspec:\n  interval: 1h\n  chart: redis\n  version: 1.0.0\n  sourceRef:\n    kind: HelmRepository\n    name: bitnami\n".to_string(),
            ks("releases", "GitRepository", "flux-system", "./releases"),
        ]
        .concat(),
    )
    .file(
        "releases/hr.yaml",
        &format!(
            "{}{}{}{}",
            helm_release("podinfo", "  chartRef:\n    kind: OCIRepository\n    name: podinfo\n"),
            helm_release(
                "redis-by-helmchart",
                "  chartRef:\n    kind: HelmChart\n    name: redis-one\n"
            ),
            helm_release(
                "pinned-podinfo",
                "  chart:\n    spec:\n      chart: podinfo\n      version: 6.5.0\n      sourceRef:\n        kind: HelmRepository\n        name: oci-charts\n"
            ),
            helm_release(
                "redis",
                "  chart:\n    spec:\n      chart: redis\n      version: '1.x'\n      sourceRef:\n        kind: HelmRepository\n        name: bitnami\n"
            ),
        ),
    );
    let cache = tempfile::tempdir().expect("tmp");
    let bundle = tempfile::tempdir().expect("tmp");
    let bundle_dir = bundle.path().join("b");
    let (code, out, err) = flux(
        &fleet,
        cache.path(),
        "pull",
        &["--to", bundle_dir.to_str().unwrap()],
    );
    assert_eq!(code, 0, "pull failed:\n{out}\n{err}");
    // helm-controller's chart version: the version plus 12 hex of the manifest digest.
    let line = out
        .lines()
        .find(|l| l.starts_with("HelmRelease flux-system/podinfo:"))
        .expect(&out);
    assert!(
        line.contains("chart podinfo 6.6.0+") && line.contains("(archive, network)"),
        "{out}"
    );
    assert!(
        out.contains("HelmRelease flux-system/redis: chart redis 1.1.0 "),
        "{out}"
    );
    assert!(
        out.contains("HelmRelease flux-system/pinned-podinfo: chart podinfo 6.5.0+"),
        "HelmRepository type oci, exact version: {out}"
    );
    assert!(
        out.contains("HelmRelease flux-system/redis-by-helmchart: chart redis 1.0.0 "),
        "chartRef to a HelmChart: {out}"
    );
    assert!(
        out.contains(&format!("0.2.0@sha1:{commit}")),
        "semver over git tags: {out}"
    );
    let lock: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle_dir.join("flux-order.lock")).unwrap())
            .unwrap();
    let artifacts = lock["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 6, "{lock}");
    for a in artifacts {
        let file = bundle_dir.join(a["file"].as_str().unwrap());
        let data = std::fs::read(&file).unwrap();
        assert_eq!(
            a["sha256"],
            sha256_hex(&data),
            "checksum of {}",
            file.display()
        );
    }

    // Every server stopped, a fresh cache: the bundle alone suffices.
    reg.stop();
    git.stop();
    drop(http);
    let empty_cache = tempfile::tempdir().expect("tmp");
    let plan = plan_json(
        &fleet,
        empty_cache.path(),
        &["--from", bundle_dir.to_str().unwrap()],
    );
    assert_eq!(
        source_entry(&plan, "OCIRepository/flux-system/infra")["origin"],
        "bundle"
    );
    assert_eq!(
        source_entry(&plan, "GitRepository/flux-system/team")["origin"],
        "bundle"
    );
    assert!(
        objects_of(&plan, "flux-system/team")
            .iter()
            .any(|o| o.contains("team"))
    );
    let (code, out, err) = flux(
        &fleet,
        empty_cache.path(),
        "pull",
        &[
            "--from",
            bundle_dir.to_str().unwrap(),
            "--to",
            bundle.path().join("copy").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "charts from the bundle:\n{err}");
    assert!(
        out.contains("chart redis 1.1.0") && out.contains("(bundle)"),
        "{out}"
    );

    // A tampered artifact fails before anything is built.
    let infra = artifacts
        .iter()
        .find(|a| {
            a["usedBy"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u == "OCIRepository/flux-system/infra")
        })
        .unwrap();
    std::fs::write(
        bundle_dir.join(infra["file"].as_str().unwrap()),
        b"tampered",
    )
    .unwrap();
    let (code, _, err) = flux(
        &fleet,
        empty_cache.path(),
        "plan",
        &["--from", bundle_dir.to_str().unwrap()],
    );
    assert_eq!(code, 4);
    assert!(
        err.contains("checksum mismatch") && err.contains("flux-system/infra"),
        "{err}"
    );
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_fleets_own_oci_sync_source_maps_to_the_checkout() {
    // As in d2-fleet: the cluster's Kustomizations build from an OCIRepository of the fleet
    // itself (a FluxInstance's spec.sync); no flag, one warning.
    let fleet = Fleet::new()
        .git()
        .cluster("clusters/staging")
        .file(
            "clusters/staging/flux-instance.yaml",
            "apiVersion: fluxcd.controlplane.io/v1\nkind: FluxInstance\nmetadata:\n  name: flux\n  namespace: flux-system\nspec:\n  distribution:\n    version: 2.x\n  sync:\n    kind: OCIRepository\n    url: oci://ghcr.io/example/fleet\n    ref: latest\n    path: clusters/staging\n",
        )
        .file(
            "clusters/staging/apps.yaml",
            &ks("apps", "OCIRepository", "flux-system", "./apps/staging"),
        )
        .file("apps/staging/cm.yaml", &config_map("staged"));
    let cache = tempfile::tempdir().expect("tmp");
    let (code, out, err) = flux(&fleet, cache.path(), "plan", &["-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert!(
        objects_of(&plan, "flux-system/apps")
            .iter()
            .any(|o| o.contains("staged"))
    );
    assert_eq!(
        source_entry(&plan, "OCIRepository/flux-system/flux-system")["mapping"],
        "sync-source"
    );
    assert_eq!(err.matches("fleet's own sync source").count(), 1, "{err}");
}

#[test]
fn buckets_and_undefined_sources_say_to_map_them() {
    let fleet = Fleet::new().file(
        "clusters/c/apps.yaml",
        &format!(
            "{}{}",
            ks("b", "Bucket", "minio", "./"),
            ks("u", "OCIRepository", "nowhere", "./")
        ),
    );
    let cache = tempfile::tempdir().expect("tmp");
    let (code, _, err) = flux(&fleet, cache.path(), "plan", &[]);
    assert_eq!(code, 4);
    assert!(
        err.contains("Bucket/flux-system/minio")
            && err.contains("--source Bucket/flux-system/minio=DIR"),
        "{err}"
    );
    assert!(
        err.contains("Kustomization flux-system/u")
            && err.contains("OCIRepository/flux-system/nowhere is not defined in the fleet"),
        "{err}"
    );
}

#[test]
fn git_repositories_over_file_urls_by_branch_tag_and_commit() {
    let server = GitServer::start(); // only its base dir: file:// URLs need no daemon
    let commit = server.repo("r", &[("k/cm.yaml", &config_map("by-git"))], &["v1.0.0"]);
    let url = format!("file://{}", server.base.path().join("r").display());
    let git_repo = |name: &str, reference: &str| {
        format!(
            "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 1m\n  url: {url}\n  ref:\n    {reference}\n"
        )
    };
    let fleet = Fleet::new().file(
        "clusters/c/git.yaml",
        &[
            git_repo("branch", "branch: main"),
            git_repo("tag", "tag: v1.0.0"),
            git_repo("commit", &format!("commit: {commit}")),
            ks("branch", "GitRepository", "branch", "./k"),
            ks("tag", "GitRepository", "tag", "./k"),
            ks("commit", "GitRepository", "commit", "./k"),
        ]
        .concat(),
    );
    let cache = tempfile::tempdir().expect("tmp");
    let plan = plan_json(&fleet, cache.path(), &[]);
    for (name, rev) in [
        ("branch", format!("main@sha1:{commit}")),
        ("tag", format!("v1.0.0@sha1:{commit}")),
        ("commit", format!("sha1:{commit}")),
    ] {
        assert!(
            objects_of(&plan, &format!("flux-system/{name}"))
                .iter()
                .any(|o| o.contains("by-git"))
        );
        assert_eq!(
            source_entry(&plan, &format!("GitRepository/flux-system/{name}"))["revision"],
            rev.as_str()
        );
    }
    let broken = Fleet::new().file(
        "clusters/c/git.yaml",
        &[
            git_repo("gone", "branch: nope"),
            ks("gone", "GitRepository", "gone", "./k"),
        ]
        .concat(),
    );
    let (code, _, err) = flux(&broken, cache.path(), "plan", &[]);
    assert_eq!(code, 4);
    assert!(
        err.contains("Kustomization flux-system/gone") && err.contains("branch 'nope' not found"),
        "{err}"
    );
}

#[test]
fn apply_reads_a_sources_credentials_from_the_cluster_when_the_fleet_lacks_them() {
    let reg = Registry::start(Some(("flux", "cluster-pass")));
    reg.push_artifact(
        "private/apps",
        "v1",
        &[("cm.yaml", &config_map("pulled-with-cluster-secret"))],
    );
    let cluster = crate::util::Cluster::start();
    let kubeconfig = cluster.kubeconfig().to_str().unwrap().to_string();
    let dockerconfig = format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        reg.host(),
        base64("flux:cluster-pass")
    );
    // First the Secret reaches the cluster (as a platform team's bootstrap would put it there).
    let secrets = Fleet::new()
        .file(
            "clusters/c/secrets.yaml",
            &ks("secrets", "GitRepository", "flux-system", "./secrets"),
        )
        .file(
            "secrets/regcred.yaml",
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: regcred\n  namespace: flux-system\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
                base64(&dockerconfig)
            ),
        );
    let cache = tempfile::tempdir().expect("tmp");
    let (code, _, err) = flux(
        &secrets,
        cache.path(),
        "apply",
        &["--kubeconfig", &kubeconfig],
    );
    assert_eq!(code, 0, "{err}");
    // Then a fleet whose OCIRepository names that Secret but does not hold it.
    let url = format!("oci://{}/private/apps", reg.host());
    let fleet = Fleet::new().file(
        "clusters/c/apps.yaml",
        &[
            oci_repo(
                "private",
                &url,
                "tag: v1",
                "  secretRef:\n    name: regcred\n",
            ),
            ks("private", "OCIRepository", "private", "./"),
        ]
        .concat(),
    );
    let (code, _, err) = flux(&fleet, cache.path(), "plan", &[]);
    assert_eq!(code, 4, "without the cluster the Secret is unknown: {err}");
    assert!(err.contains("authentication to"), "{err}");
    let (code, out, err) = flux(
        &fleet,
        cache.path(),
        "apply",
        &["--kubeconfig", &kubeconfig],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !cluster
            .writes_named("pulled-with-cluster-secret")
            .is_empty(),
        "{}",
        cluster.log_text()
    );
    assert!(!out.contains("cluster-pass") && !err.contains("cluster-pass"));
}

#[test]
fn apply_writes_nothing_when_a_source_of_the_selection_cannot_be_had() {
    let cluster = crate::util::Cluster::start();
    let kubeconfig = cluster.kubeconfig().to_str().unwrap().to_string();
    // A registry port nobody listens on, next to a Kustomization that could be applied.
    let url = format!("oci://127.0.0.1:{}/gone/apps", free_port());
    let fleet = Fleet::new()
        .file(
            "clusters/c/apps.yaml",
            &[
                ks("local", "GitRepository", "flux-system", "./local"),
                oci_repo("gone", &url, "tag: v1", ""),
                ks("remote", "OCIRepository", "gone", "./"),
            ]
            .concat(),
        )
        .file("local/cm.yaml", &config_map("would-be-written"));
    let cache = tempfile::tempdir().expect("tmp");
    let (code, out, err) = flux(
        &fleet,
        cache.path(),
        "apply",
        &["--kubeconfig", &kubeconfig],
    );
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("Kustomization flux-system/remote")
            && err.contains("OCIRepository/flux-system/gone")
            && err.contains("cannot reach"),
        "{err}"
    );
    assert!(
        cluster.writes().is_empty(),
        "nothing is written before every source is had:\n{}",
        cluster.log_text()
    );
}

#[test]
fn a_tag_is_resolved_once_per_run() {
    let reg = Registry::start(None);
    reg.push_artifact(
        "fleet/shared",
        "stable",
        &[("cm.yaml", &config_map("shared"))],
    );
    let url = format!("oci://{}/fleet/shared", reg.host());
    let fleet = Fleet::new().file(
        "clusters/c/apps.yaml",
        &[
            oci_repo("one", &url, "tag: stable", ""),
            oci_repo("two", &url, "tag: stable", ""),
            ks("one", "OCIRepository", "one", "./"),
            ks("two", "OCIRepository", "two", "./"),
        ]
        .concat(),
    );
    let before = reg.requests("/v2/fleet/shared/manifests/stable");
    let cache = tempfile::tempdir().expect("tmp");
    let plan = plan_json(&fleet, cache.path(), &[]);
    assert_eq!(
        source_entry(&plan, "OCIRepository/flux-system/one")["revision"],
        source_entry(&plan, "OCIRepository/flux-system/two")["revision"]
    );
    let after = reg.requests("/v2/fleet/shared/manifests/stable");
    assert_eq!(
        after - before,
        1,
        "one manifest request for two sources asking the same tag"
    );
}
