//! Runs kustomize as a process: `kustomize build` when a `kustomize` binary is on PATH, else
//! `kubectl kustomize`, or whatever `--kustomize-bin` names. Always with
//! `--load-restrictor LoadRestrictionsNone`, as Flux builds. Never through a shell string.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// How to invoke kustomize.
#[derive(Debug, Clone)]
pub struct Kustomize {
    program: PathBuf,
    /// `build` for kustomize, `kustomize` for kubectl.
    subcommand: &'static str,
    /// Bounds on one run.
    limits: Limits,
}

/// What one kustomize run may take before it is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall time (`--build-timeout`).
    pub timeout: Duration,
    /// Resident memory of the process, in bytes (`--build-memory-limit`).
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(300),
            memory: 4 << 30,
        }
    }
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
    /// The run took longer than `--build-timeout`.
    #[error(
        "kustomize build stopped after {} (--build-timeout)",
        crate::model::duration::format_go(*.0)
    )]
    Timeout(Duration),
    /// The process grew past `--build-memory-limit`.
    #[error(
        "kustomize build stopped: it used more than {} MiB of memory (--build-memory-limit)",
        .0 >> 20
    )]
    Memory(u64),
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
                limits: Limits::default(),
            });
        }
        if let Some(p) = on_path("kustomize") {
            return Ok(Kustomize {
                program: p,
                subcommand: "build",
                limits: Limits::default(),
            });
        }
        if let Some(p) = on_path("kubectl") {
            return Ok(Kustomize {
                program: p,
                subcommand: "kustomize",
                limits: Limits::default(),
            });
        }
        Err(KustomizeError::NotFound)
    }

    /// A human description, e.g. `/usr/bin/kubectl kustomize`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.program.display(), self.subcommand)
    }

    /// The same runner with these bounds.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds `dir` and returns kustomize's YAML output. The process runs in a process group of
    /// its own (killed with everything it started when the build is abandoned, times out or
    /// grows past the memory bound).
    pub async fn build(&self, dir: &Path) -> Result<String, KustomizeError> {
        let mut cmd = tokio::process::Command::new(&self.program);
        // kustomize is a short-lived Go process whose garbage collection is wasted work: ~20 % of
        // a build's CPU. Collect only near a memory limit, unless the user tuned the Go GC.
        if std::env::var_os("GOGC").is_none() && std::env::var_os("GOMEMLIMIT").is_none() {
            cmd.env("GOGC", "off").env("GOMEMLIMIT", "1GiB");
        }
        let child = cmd
            .arg(self.subcommand)
            .arg("--load-restrictor")
            .arg("LoadRestrictionsNone")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| KustomizeError::Spawn {
                program: self.describe(),
                source,
            })?;
        let pid = child.id();
        let group = pid.map(crate::interrupt::ChildGroup::new);
        let limits = self.limits;
        let out = tokio::select! {
            out = child.wait_with_output() => out.map_err(|source| KustomizeError::Spawn {
                program: self.describe(),
                source,
            })?,
            _ = tokio::time::sleep(limits.timeout) => return Err(KustomizeError::Timeout(limits.timeout)),
            _ = over_memory(pid, limits.memory) => return Err(KustomizeError::Memory(limits.memory)),
        };
        if let Some(g) = group {
            g.finished();
        }
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

/// Resolves once process `pid` has more than `limit` bytes resident (read from `/proc` every
/// 50 ms); never where `/proc` cannot tell.
async fn over_memory(pid: Option<u32>, limit: u64) {
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    let status = format!("/proc/{pid}/status");
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(text) = tokio::fs::read_to_string(&status).await else {
            return std::future::pending().await;
        };
        let rss_kib = text
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        if rss_kib.is_some_and(|k| k.saturating_mul(1024) > limit) {
            return;
        }
    }
}
