//! Named exit codes and the one error type that maps onto them. `main` prints the error chain
//! and exits with [`AppError::exit_code`]; README's table lists the same constants (a test checks).

/// Everything went as asked.
pub const SUCCESS: i32 = 0;
/// A Kustomization failed (apply), or `diff` found changes.
pub const FAILED: i32 = 1;
/// Invalid input or usage: bad flags, a fleet that does not load, build or validate. Nothing was
/// written.
pub const INVALID_INPUT: i32 = 2;
/// The cluster could not be reached (kubeconfig, connection, discovery). Nothing was written.
pub const CLUSTER_UNREACHABLE: i32 = 3;
/// `plan`, `graph`, `build`: some selected Kustomizations failed to load, build or validate (each
/// listed on stderr and marked in the output); the rest was planned.
pub const PLANNED_WITH_FAILURES: i32 = 4;
/// Interrupted by SIGINT/SIGTERM.
pub const INTERRUPTED: i32 = 130;

/// A command's failure, classified for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Invalid input: every problem found, each naming its file and object.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// Bad usage or an unrecoverable setup problem.
    #[error(transparent)]
    Usage(anyhow::Error),
    /// The cluster could not be reached.
    #[error("{0}")]
    Cluster(String),
    /// Some Kustomizations did not become ready (the summary says which).
    #[error("{0} Kustomization(s) not ready")]
    Failed(usize),
    /// An operation on the cluster failed for these Kustomizations.
    #[error("{}", .0.join("\n"))]
    Operation(Vec<String>),
    /// `diff` found changes.
    #[error("{0} object(s) would change")]
    Changes(usize),
    /// SIGINT or SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// Planned with failures: every problem, and how many Kustomizations and HelmReleases they
    /// make fail.
    #[error(
        "{}\n{failed} Kustomization(s) failed to load, build or validate{}; the rest is planned",
        .messages.join("\n"),
        if *.failed_releases > 0 { format!(", {} HelmRelease(s) failed", .failed_releases) } else { String::new() }
    )]
    Partial {
        /// Every problem of the selection.
        messages: Vec<String>,
        /// Failed Kustomizations of the selection.
        failed: usize,
        /// Failed HelmReleases of the selection.
        failed_releases: usize,
    },
}

impl AppError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Invalid(_) | AppError::Usage(_) => INVALID_INPUT,
            AppError::Cluster(_) => CLUSTER_UNREACHABLE,
            AppError::Failed(_) | AppError::Changes(_) | AppError::Operation(_) => FAILED,
            AppError::Interrupted => INTERRUPTED,
            AppError::Partial { .. } => PLANNED_WITH_FAILURES,
        }
    }
}

impl From<crate::cluster::ClusterError> for AppError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        match e {
            crate::cluster::ClusterError::Interrupted { .. } => AppError::Interrupted,
            e => AppError::Cluster(e.to_string()),
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        AppError::Usage(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README's exit-code table lists exactly these constants.
    #[test]
    fn readme_table_matches_the_constants() {
        let readme = include_str!("../README.md");
        for (code, name) in [
            (SUCCESS, "SUCCESS"),
            (FAILED, "FAILED"),
            (INVALID_INPUT, "INVALID_INPUT"),
            (CLUSTER_UNREACHABLE, "CLUSTER_UNREACHABLE"),
            (PLANNED_WITH_FAILURES, "PLANNED_WITH_FAILURES"),
            (INTERRUPTED, "INTERRUPTED"),
        ] {
            let row = format!("| {code} | `{name}` |");
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
        let rows = readme
            .lines()
            .filter(|l| {
                l.starts_with("| ")
                    && l.contains("| `")
                    && l.split('|')
                        .nth(1)
                        .is_some_and(|c| c.trim().parse::<i32>().is_ok())
            })
            .count();
        assert_eq!(
            rows, 6,
            "README.md has exit-code rows for constants that do not exist"
        );
    }
}
