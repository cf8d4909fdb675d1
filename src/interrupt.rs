//! SIGINT and SIGTERM, for every command. The first signal cancels one process-wide token: no new
//! work starts, requests in flight, their retries and Retry-After waits end at once (see
//! `cluster.rs`), a load or build is abandoned, and the command ends with its summary and exit
//! 130. A second signal exits at once — after killing the process groups of running children and
//! removing the temporary trees, which the first path leaves to ordinary drops. Children
//! (kustomize) run in process groups of their own, so a signal sent to flux-order's PID alone (as
//! CI runners and pods send it) never orphans them, and a terminal's Ctrl-C reaches them only
//! through flux-order.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tokio_util::sync::CancellationToken;

/// What a hard exit must clean up: temporary trees and child process groups.
#[derive(Default)]
struct Registry {
    dirs: BTreeSet<PathBuf>,
    groups: BTreeSet<u32>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    dirs: BTreeSet::new(),
    groups: BTreeSet::new(),
});
static TOKEN: OnceLock<CancellationToken> = OnceLock::new();

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The process-wide interruption token (never cancelled until [`install`] sees a signal).
pub fn token() -> CancellationToken {
    TOKEN.get_or_init(CancellationToken::new).clone()
}

/// Whether a signal arrived.
pub fn interrupted() -> bool {
    TOKEN.get().is_some_and(|t| t.is_cancelled())
}

/// Starts listening for SIGINT and SIGTERM (inside the runtime): the first cancels [`token`], the
/// second calls [`hard_exit`].
pub fn install() {
    let token = token();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        let Ok(mut int) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        else {
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                eprintln!("interrupted: stopping (send the signal again to exit at once)");
                token.cancel();
            } else {
                hard_exit();
            }
        }
    });
}

/// Exits with 130 at once: kills every registered child process group and removes every
/// registered temporary tree first.
pub fn hard_exit() -> ! {
    let (dirs, groups) = {
        let r = registry();
        (r.dirs.clone(), r.groups.clone())
    };
    for g in groups {
        kill_group(g);
    }
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    eprintln!("error: interrupted twice: exited at once");
    std::process::exit(crate::exit::INTERRUPTED);
}

/// Kills the process group `pgid` (SIGKILL); gone already is fine.
pub fn kill_group(pgid: u32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A temporary tree removed by [`hard_exit`] too (ordinary drops remove it otherwise).
pub struct TempTree(tempfile::TempDir);

impl TempTree {
    /// Registers `dir`.
    pub fn new(dir: tempfile::TempDir) -> TempTree {
        registry().dirs.insert(dir.path().to_path_buf());
        TempTree(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl std::fmt::Debug for TempTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TempTree").field(&self.0.path()).finish()
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        registry().dirs.remove(self.0.path());
    }
}

/// A child running in its own process group (its PID is the group's id), killed as a group when
/// this guard drops before [`ChildGroup::finished`] — on an abandoned build or an error — and by
/// [`hard_exit`].
pub struct ChildGroup {
    pgid: u32,
    running: bool,
}

impl ChildGroup {
    /// Registers the group led by `pid`.
    pub fn new(pid: u32) -> ChildGroup {
        registry().groups.insert(pid);
        ChildGroup {
            pgid: pid,
            running: true,
        }
    }

    /// The leader exited normally: its group is left alone.
    pub fn finished(mut self) {
        self.running = false;
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        if self.running {
            kill_group(self.pgid);
        }
        registry().groups.remove(&self.pgid);
    }
}
