//! Real /usr/bin/kubectl against the test API server.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use flux_order_test_apiserver::{ServerOptions, TestServer, Verb};

struct Kubectl {
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(server: &TestServer) -> Option<Kubectl> {
        if !std::path::Path::new("/usr/bin/kubectl").exists() {
            eprintln!("kubectl not installed; skipping");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "fo-test-apiserver-kubectl-{}-{}",
            std::process::id(),
            server.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        Some(Kubectl { dir, kubeconfig })
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("/usr/bin/kubectl")
            .args(args)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.dir)
            .output()
            .expect("run kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "kubectl {args:?} failed:\nstdout: {out}\nstderr: {err}");
        out
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().to_string()
    }
}

impl Drop for Kubectl {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const MULTI: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  annotations: {test.flux-order/ready-after: 300ms}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports: [{containerPort: 80}]
"#;

const CR: &str = r#"apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  namespace: demo
  annotations: {test.flux-order/ready-after: 50ms}
spec:
  size: 3
"#;

#[test]
fn kubectl_server_side_apply_wait_rollout_get_delete() {
    let s = TestServer::start(ServerOptions::default());
    let Some(k) = Kubectl::new(&s) else { return };
    let multi = k.write("multi.yaml", MULTI);
    let out = k.ok(&["apply", "--server-side", "-f", &multi]);
    assert!(out.contains("namespace/demo serverside-applied"), "{out}");
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.example.com serverside-applied"
        ),
        "{out}"
    );
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    let out = k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/widgets.example.com",
        "--timeout=20s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let cr = k.write("cr.yaml", CR);
    let out = k.ok(&["apply", "--server-side", "-f", &cr]);
    assert!(
        out.contains("widget.example.com/w1 serverside-applied"),
        "{out}"
    );
    let out = k.ok(&[
        "wait",
        "--for=condition=Ready",
        "widget/w1",
        "-n",
        "demo",
        "--timeout=20s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let out = k.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "demo",
        "--timeout=20s",
    ]);
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let out = k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "-n",
        "demo",
        "--timeout=20s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    // Re-apply is a no-op for the server.
    let writes_before = s.writes().len();
    let rv = s.resource_version();
    k.ok(&["apply", "--server-side", "-f", &multi]);
    assert_eq!(s.resource_version(), rv, "identical apply changes nothing");
    assert!(
        s.writes().len() > writes_before,
        "apply requests are still logged as writes"
    );
    // get -o yaml.
    let y = k.ok(&["get", "deployment", "web", "-n", "demo", "-o", "yaml"]);
    assert!(
        y.contains("kind: Deployment") && y.contains("name: web") && y.contains("readyReplicas: 2"),
        "{y}"
    );
    let y = k.ok(&[
        "get",
        "wd",
        "w1",
        "-n",
        "demo",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(
        y.contains("manager: kubectl") && y.contains("operation: Apply"),
        "{y}"
    );
    // Table output.
    let t = k.ok(&["get", "deploy", "-n", "demo"]);
    assert!(
        t.contains("NAME") && t.contains("web") && t.contains("2/2"),
        "{t}"
    );
    let t = k.ok(&["get", "ns"]);
    assert!(t.contains("demo") && t.contains("Active"), "{t}");
    // Server-side dry run.
    let out = k.ok(&["apply", "--server-side", "--dry-run=server", "-f", &multi]);
    assert!(out.contains("(server dry run)"), "{out}");
    assert!(
        s.requests()
            .iter()
            .any(|r| r.dry_run && r.verb == Verb::Apply)
    );
    // Conflict: another manager changing replicas fails without force.
    let scaled = MULTI.replace("replicas: 2", "replicas: 3");
    let scaled = k.write("scaled.yaml", &scaled);
    let (ok, _, err) = k.run(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        &scaled,
    ]);
    assert!(!ok, "conflict expected");
    assert!(
        err.contains("conflict") && err.contains(".spec.replicas"),
        "{err}"
    );
    k.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        &scaled,
    ]);
    let r = k.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(r, "3");
    // Delete (kubectl waits for the object to disappear).
    let out = k.ok(&["delete", "deployment", "web", "-n", "demo"]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let (ok, _, err) = k.run(&["get", "deployment", "web", "-n", "demo"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    let out = k.ok(&["delete", "-f", &cr]);
    assert!(out.contains("deleted"), "{out}");
}

#[test]
fn kubectl_client_side_apply_and_slow_delete() {
    let s = TestServer::start(ServerOptions::default());
    let Some(k) = Kubectl::new(&s) else { return };
    let cm = k.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c1\n  annotations:\n    test.flux-order/delete-after: 200ms\ndata:\n  a: \"1\"\n");
    assert!(k.ok(&["apply", "-f", &cm]).contains("configmap/c1 created"));
    std::fs::write(
        &cm,
        std::fs::read_to_string(&cm)
            .unwrap()
            .replace("\"1\"", "\"2\""),
    )
    .unwrap();
    assert!(
        k.ok(&["apply", "-f", &cm])
            .contains("configmap/c1 configured")
    );
    assert_eq!(k.ok(&["get", "cm", "c1", "-o", "jsonpath={.data.a}"]), "2");
    let t = std::time::Instant::now();
    assert!(k.ok(&["delete", "-f", &cm]).contains("deleted"));
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "kubectl waited for the delayed deletion"
    );
    assert!(s.get("v1", "ConfigMap", Some("default"), "c1").is_none());
}

#[test]
fn kubectl_scale_and_client_side_deployment_apply() {
    let s = TestServer::start(ServerOptions::default());
    let Some(k) = Kubectl::new(&s) else { return };
    let d = k.write(
        "d.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - {name: a, image: a:1}\n      - {name: b, image: b:1}\n",
    );
    assert!(k.ok(&["apply", "-f", &d]).contains("created"));
    let text = std::fs::read_to_string(&d)
        .unwrap()
        .replace("a:1", "a:2")
        .replace("      - {name: b, image: b:1}\n", "");
    std::fs::write(&d, text).unwrap();
    assert!(k.ok(&["apply", "-f", &d]).contains("configured"));
    let imgs = k.ok(&[
        "get",
        "deploy",
        "d",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image}",
    ]);
    assert_eq!(imgs, "a:2");
    let out = k.ok(&["scale", "deployment/d", "--replicas=4"]);
    assert!(out.contains("scaled"), "{out}");
    let dep = s
        .get("apps/v1", "Deployment", Some("default"), "d")
        .unwrap();
    assert_eq!(dep["spec"]["replicas"], 4);
    assert_eq!(dep["metadata"]["generation"], 3);
    k.ok(&["rollout", "status", "deployment/d", "--timeout=20s"]);
}

#[test]
fn kubectl_typed_generators_send_protobuf() {
    let s = TestServer::start(ServerOptions::default());
    let Some(k) = Kubectl::new(&s) else { return };
    assert!(
        k.ok(&["create", "namespace", "gen"])
            .contains("namespace/gen created")
    );
    k.ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "gen",
        "--from-literal=a=b",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "-n",
        "gen",
        "--from-literal=p=hunter2",
    ]);
    k.ok(&["create", "serviceaccount", "sa", "-n", "gen"]);
    assert_eq!(
        s.get("v1", "ConfigMap", Some("gen"), "c").unwrap()["data"]["a"],
        "b"
    );
    assert_eq!(
        s.get("v1", "Secret", Some("gen"), "sec").unwrap()["data"]["p"],
        "aHVudGVyMg=="
    );
    assert!(s.get("v1", "ServiceAccount", Some("gen"), "sa").is_some());
    assert_eq!(
        k.ok(&["get", "ns", "gen", "-o", "jsonpath={.status.phase}"]),
        "Active"
    );
}
