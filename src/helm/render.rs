//! Rendering a HelmRelease with the real Helm 4 engine, as a process: `helm install` (or
//! `helm upgrade --install` when a deployed release exists in the same namespace) with
//! `--dry-run=client` offline and `--dry-run=server` against a cluster (live `lookup`, the
//! cluster's Capabilities), `--skip-crds --take-ownership -o json`, so the output is Helm's own
//! Release JSON (manifest, hooks with events, weights and delete policies, chart metadata, config).
//! Helm runs with throw-away `HELM_*_HOME` directories so the user's configuration cannot leak
//! in. Then Flux's post-renderers, in helm-controller's order: each `postRenderers[].kustomize`
//! (patches, images) through kustomize, then `commonMetadata`, then the
//! `helm.toolkit.fluxcd.io/name|namespace` labels — on hooks too unless the strategy is
//! `nohooks`/`separate`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use super::spec::HelmReleaseSpec;
use crate::build::Kustomize;

/// The label naming the HelmRelease on every object it renders (helm-controller's).
pub const RELEASE_NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";

/// Rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No usable helm.
    #[error("{0}")]
    Helm(String),
    /// helm ran and failed (its message).
    #[error("helm {action} failed: {message}")]
    Failed {
        /// install / upgrade / show crds.
        action: String,
        /// helm's stderr.
        message: String,
    },
    /// A post-renderer failed.
    #[error("post-render: {0}")]
    PostRender(String),
}

/// The helm binary, checked once; identical renders (same chart, release, namespace, values,
/// cluster or not, upgrade or not) are done once per run.
#[derive(Debug)]
pub struct Helm {
    program: PathBuf,
    home: crate::interrupt::TempTree,
    memo: std::sync::Mutex<std::collections::HashMap<String, Value>>,
}

impl Helm {
    /// Finds helm (`explicit`, else `helm` on PATH) and checks it is Helm 4 (a warning for v3 is
    /// left to the caller: `version` says which).
    pub fn detect(explicit: Option<&Path>) -> Result<Helm, RenderError> {
        let program = match explicit {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os("PATH")
                .and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("helm"))
                        .find(|c| c.is_file())
                })
                .ok_or_else(|| {
                    RenderError::Helm(
                        "helm was not found on PATH; HelmReleases are rendered by Helm 4 (install helm v4 or pass --helm-bin)".into(),
                    )
                })?,
        };
        let home = tempfile::Builder::new()
            .prefix("flux-order-helm-")
            .tempdir()
            .map(crate::interrupt::TempTree::new)
            .map_err(|e| RenderError::Helm(format!("temporary helm home: {e}")))?;
        let out = std::process::Command::new(&program)
            .args(["version", "--template", "{{.Version}}"])
            .envs(helm_env(home.path()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RenderError::Helm(format!("cannot run {}: {e}", program.display())))?;
        if !out.status.success() {
            return Err(RenderError::Helm(format!(
                "{} version failed: {}",
                program.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !version.starts_with("v4.") {
            return Err(RenderError::Helm(format!(
                "{} is Helm {version}; helm-controller renders with Helm 4: install helm v4 or pass --helm-bin",
                program.display()
            )));
        }
        Ok(Helm {
            program,
            home,
            memo: Default::default(),
        })
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.envs(helm_env(self.home.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }

    async fn run(
        &self,
        action: &str,
        mut cmd: tokio::process::Command,
    ) -> Result<String, RenderError> {
        // In a process group of its own, killed as a group when abandoned (interrupt.rs).
        let failed = |e: std::io::Error| RenderError::Failed {
            action: action.into(),
            message: e.to_string(),
        };
        let child = cmd.spawn().map_err(failed)?;
        let group = child.id().map(crate::interrupt::ChildGroup::new);
        let out = child.wait_with_output().await.map_err(failed)?;
        if let Some(g) = group {
            g.finished();
        }
        if !out.status.success() {
            return Err(RenderError::Failed {
                action: action.into(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        String::from_utf8(out.stdout).map_err(|e| RenderError::Failed {
            action: action.into(),
            message: e.to_string(),
        })
    }

    /// The CRDs in the chart's `crds/` directories (subcharts included), as objects.
    pub async fn crds(&self, chart: &Path) -> Result<Vec<Value>, RenderError> {
        let mut cmd = self.command();
        cmd.args(["show", "crds"]).arg(chart);
        let text = self.run("show crds", cmd).await?;
        let docs = crate::yaml::from_multi(&text).map_err(|e| RenderError::Failed {
            action: "show crds".into(),
            message: e.to_string(),
        })?;
        Ok(docs
            .into_iter()
            .filter(|d| d.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
            .collect())
    }

    /// The chart's `Chart.yaml` (name, version, appVersion, …) as JSON.
    pub async fn chart_metadata(&self, chart: &Path) -> Result<Value, RenderError> {
        let mut cmd = self.command();
        cmd.args(["show", "chart"]).arg(chart);
        let text = self.run("show chart", cmd).await?;
        crate::yaml::from_str(&text).map_err(|e| RenderError::Failed {
            action: "show chart".into(),
            message: e.to_string(),
        })
    }

    /// Renders the release; returns Helm's Release JSON.
    pub async fn render(&self, req: &RenderRequest<'_>) -> Result<Value, RenderError> {
        // Offline renders depend only on the request; against a cluster `lookup` may read live
        // state, so those are never shared.
        let key = req.cluster.is_none().then(|| {
            serde_json::json!([
                req.release,
                req.namespace,
                req.chart,
                req.values,
                req.upgrade,
                req.skip_schema_validation,
                req.disable_openapi_validation
            ])
            .to_string()
        });
        if let Some(k) = &key
            && let Some(v) = self.memo.lock().unwrap_or_else(|e| e.into_inner()).get(k)
        {
            return Ok(v.clone());
        }
        let out = self.render_uncached(req).await?;
        if let Some(k) = key {
            self.memo
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k, out.clone());
        }
        Ok(out)
    }

    async fn render_uncached(&self, req: &RenderRequest<'_>) -> Result<Value, RenderError> {
        // One values file per render (renders run concurrently).
        let values = tempfile::Builder::new()
            .prefix("values-")
            .suffix(".json")
            .tempfile_in(self.home.path())
            .map_err(|e| RenderError::Helm(format!("writing values: {e}")))?
            .into_temp_path();
        std::fs::write(&values, serde_json::to_vec(req.values).unwrap_or_default())
            .map_err(|e| RenderError::Helm(format!("writing values: {e}")))?;
        let mut cmd = self.command();
        let action = if req.upgrade {
            cmd.args(["upgrade", "--install", "--reset-values"]);
            "upgrade"
        } else {
            cmd.arg("install");
            "install"
        };
        cmd.arg(req.release)
            .arg(req.chart)
            .args(["--namespace", req.namespace])
            .arg("--values")
            .arg(&values)
            .args(["--skip-crds", "--take-ownership", "--output", "json"]);
        match req.cluster {
            Some(c) => {
                cmd.arg("--dry-run=server");
                if let Some(k) = &c.kubeconfig {
                    cmd.arg("--kubeconfig").arg(k);
                }
                if let Some(ctx) = &c.context {
                    cmd.args(["--kube-context", ctx]);
                }
            }
            None => {
                cmd.arg("--dry-run=client");
            }
        }
        if req.skip_schema_validation {
            cmd.arg("--skip-schema-validation");
        }
        if req.disable_openapi_validation {
            cmd.arg("--disable-openapi-validation");
        }
        let text = self.run(action, cmd).await;
        drop(values);
        let text = text?;
        serde_json::from_str(&text).map_err(|e| RenderError::Failed {
            action: action.into(),
            message: format!("unexpected output ({e})"),
        })
    }
}

fn helm_env(home: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("HELM_CACHE_HOME", home.join("cache")),
        ("HELM_CONFIG_HOME", home.join("config")),
        ("HELM_DATA_HOME", home.join("data")),
    ]
}

/// Where `--dry-run=server` renders.
#[derive(Debug, Clone, Default)]
pub struct ClusterTarget {
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
}

/// One render.
#[derive(Debug)]
pub struct RenderRequest<'a> {
    /// Release name.
    pub release: &'a str,
    /// Release namespace.
    pub namespace: &'a str,
    /// Chart directory or archive.
    pub chart: &'a Path,
    /// Composed values.
    pub values: &'a Value,
    /// Against a cluster (None: offline).
    pub cluster: Option<&'a ClusterTarget>,
    /// A deployed release exists in the same namespace: render as its upgrade.
    pub upgrade: bool,
    /// `disableSchemaValidation`.
    pub skip_schema_validation: bool,
    /// `disableOpenAPIValidation`.
    pub disable_openapi_validation: bool,
}

/// A hook of the release.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The hook's record as Helm stores it (`name`, `kind`, `path`, `manifest`, `events`, …).
    pub record: Value,
    /// The (post-rendered) object.
    pub object: Value,
}

impl Hook {
    /// Its events (`pre-install`, …).
    pub fn events(&self) -> Vec<String> {
        self.record["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `helm.sh/hook-weight` (non-integers count as 0).
    pub fn weight(&self) -> i64 {
        self.record["weight"].as_i64().unwrap_or(0)
    }

    /// Delete policies; none means `before-hook-creation`.
    pub fn delete_policies(&self) -> Vec<String> {
        let p: Vec<String> = self.record["delete_policies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if p.is_empty() {
            vec!["before-hook-creation".into()]
        } else {
            p
        }
    }
}

/// A rendered, post-rendered release.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Helm's Release JSON (manifest and hooks replaced by their post-rendered text).
    pub release: Value,
    /// The manifest's objects, post-rendered, without Helm's ownership metadata.
    pub objects: Vec<Value>,
    /// Hooks (test hooks left out).
    pub hooks: Vec<Hook>,
    /// Chart name and version (`metadata.version`).
    pub chart: (String, String),
}

/// Applies Flux's post-renderers to Helm's Release JSON.
pub async fn post_render(
    mut release: Value,
    spec: &HelmReleaseSpec,
    hr_name: &str,
    hr_namespace: &str,
    kustomize: &Kustomize,
) -> Result<Rendered, RenderError> {
    let manifest = release["manifest"].as_str().unwrap_or("").to_string();
    let mut objects: Vec<Value> = crate::yaml::from_multi(&manifest)
        .map_err(|e| RenderError::PostRender(format!("Helm's manifest is not YAML: {e}")))?
        .into_iter()
        .filter(|v| v.is_object())
        .collect();
    let mut records: Vec<Value> = release["hooks"].as_array().cloned().unwrap_or_default();
    records.retain(|h| {
        !h["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e == "test" || e == "test-success"))
    });
    let mut hook_objects: Vec<Value> = Vec::new();
    for h in &records {
        let text = h["manifest"].as_str().unwrap_or("");
        let doc = crate::yaml::from_multi(text)
            .map_err(|e| RenderError::PostRender(format!("hook {}: {e}", h["name"])))?
            .into_iter()
            .find(|v| v.is_object())
            .unwrap_or(Value::Null);
        hook_objects.push(doc);
    }
    let with_hooks = spec.post_render_hooks();
    let kustomizers: Vec<&super::spec::KustomizePostRenderer> = spec
        .post_renderers
        .iter()
        .filter_map(|p| p.kustomize.as_ref())
        .collect();
    for k in &kustomizers {
        objects = kustomize_once(&objects, k, kustomize).await?;
        if with_hooks && !hook_objects.is_empty() {
            hook_objects = kustomize_once(&hook_objects, k, kustomize).await?;
        }
    }
    let meta = |o: &mut Value| {
        if let Some(cm) = &spec.common_metadata {
            for (k, v) in &cm.labels {
                set_meta(o, "labels", k, v);
            }
            for (k, v) in &cm.annotations {
                set_meta(o, "annotations", k, v);
            }
        }
        set_meta(o, "labels", RELEASE_NAME_LABEL, hr_name);
        set_meta(
            o,
            "labels",
            "helm.toolkit.fluxcd.io/namespace",
            hr_namespace,
        );
    };
    objects.iter_mut().for_each(meta);
    if with_hooks {
        hook_objects.iter_mut().for_each(meta);
    }
    let stored =
        crate::yaml::to_multi(&objects).map_err(|e| RenderError::PostRender(e.to_string()))?;
    release["manifest"] = Value::String(stored);
    let mut hooks = Vec::new();
    for (mut rec, obj) in records.into_iter().zip(hook_objects) {
        if obj.is_null() {
            continue;
        }
        rec["manifest"] = Value::String(
            crate::yaml::to_string(&obj).map_err(|e| RenderError::PostRender(e.to_string()))?,
        );
        hooks.push(Hook {
            record: rec,
            object: obj,
        });
    }
    release["hooks"] = Value::Array(hooks.iter().map(|h| h.record.clone()).collect());
    let chart = (
        release
            .pointer("/chart/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        release
            .pointer("/chart/metadata/version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    );
    Ok(Rendered {
        release,
        objects,
        hooks,
        chart,
    })
}

fn set_meta(o: &mut Value, field: &str, k: &str, v: &str) {
    if !o.is_object() {
        return;
    }
    let meta = &mut o["metadata"];
    if !meta.is_object() {
        *meta = json!({});
    }
    let m = &mut meta[field];
    if !m.is_object() {
        *m = json!({});
    }
    m[k] = Value::String(v.to_string());
}

/// One kustomize post-renderer: `resources: [helm-output.yaml]` with its patches and images.
async fn kustomize_once(
    objects: &[Value],
    k: &super::spec::KustomizePostRenderer,
    kustomize: &Kustomize,
) -> Result<Vec<Value>, RenderError> {
    let dir = tempfile::Builder::new()
        .prefix("flux-order-postrender-")
        .tempdir()
        .map_err(|e| RenderError::PostRender(e.to_string()))?;
    let input =
        crate::yaml::to_multi(objects).map_err(|e| RenderError::PostRender(e.to_string()))?;
    std::fs::write(dir.path().join("helm-output.yaml"), input)
        .map_err(|e| RenderError::PostRender(e.to_string()))?;
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["helm-output.yaml"],
        "patches": k.patches,
        "images": k.images,
    });
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        crate::yaml::to_string(&kustomization)
            .map_err(|e| RenderError::PostRender(e.to_string()))?,
    )
    .map_err(|e| RenderError::PostRender(e.to_string()))?;
    let out = kustomize
        .build(dir.path())
        .await
        .map_err(|e| RenderError::PostRender(e.to_string()))?;
    crate::yaml::from_multi(&out).map_err(|e| RenderError::PostRender(e.to_string()))
}
