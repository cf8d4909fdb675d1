//! Runs kustomize as a process: `kustomize build` when a `kustomize` binary is on PATH, else
//! `kubectl kustomize`, or whatever `--kustomize-bin` names. Always with
//! `--load-restrictor LoadRestrictionsNone`, as Flux builds. Never through a shell string.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// How to invoke kustomize.
#[derive(Debug, Clone)]
pub struct Kustomize {
    program: PathBuf,
    /// `build` for kustomize, `kustomize` for kubectl.
    subcommand: &'static str,
}

/// kustomize could not be started or failed.
#[derive(Debug, thiserror::Error)]
pub enum KustomizeError {
    /// No kustomize and no kubectl on PATH.
    #[error(
        "neither `kustomize` nor `kubectl` was found on PATH; install one or pass --kustomize-bin"
    )]
    NotFound,
    /// The process could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// kustomize exited non-zero; `message` is its stderr.
    #[error("kustomize build failed: {message}")]
    Failed {
        /// kustomize's own message.
        message: String,
    },
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Kustomize {
    /// Picks the binary: `explicit` (from `--kustomize-bin`) if given, else `kustomize` on PATH,
    /// else `kubectl` on PATH.
    pub fn detect(explicit: Option<&Path>) -> Result<Self, KustomizeError> {
        if let Some(p) = explicit {
            let is_kubectl = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kubectl"));
            return Ok(Kustomize {
                program: p.to_path_buf(),
                subcommand: if is_kubectl { "kustomize" } else { "build" },
            });
        }
        if let Some(p) = on_path("kustomize") {
            return Ok(Kustomize {
                program: p,
                subcommand: "build",
            });
        }
        if let Some(p) = on_path("kubectl") {
            return Ok(Kustomize {
                program: p,
                subcommand: "kustomize",
            });
        }
        Err(KustomizeError::NotFound)
    }

    /// A human description, e.g. `/usr/bin/kubectl kustomize`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.program.display(), self.subcommand)
    }

    /// Builds `dir` and returns kustomize's YAML output.
    pub async fn build(&self, dir: &Path) -> Result<String, KustomizeError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        // kustomize is a short-lived Go process whose garbage collection is wasted work: ~20 % of
        // a build's CPU. Collect only near a memory limit, unless the user tuned the Go GC.
        if std::env::var_os("GOGC").is_none() && std::env::var_os("GOMEMLIMIT").is_none() {
            cmd.env("GOGC", "off").env("GOMEMLIMIT", "1GiB");
        }
        let out = cmd
            .arg(self.subcommand)
            .arg("--load-restrictor")
            .arg("LoadRestrictionsNone")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| KustomizeError::Spawn {
                program: self.describe(),
                source,
            })?;
        if !out.status.success() {
            let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if message.is_empty() {
                message = format!("{} exited with {}", self.describe(), out.status);
            }
            return Err(KustomizeError::Failed { message });
        }
        String::from_utf8(out.stdout).map_err(|e| KustomizeError::Failed {
            message: format!("output is not UTF-8: {e}"),
        })
    }
}
