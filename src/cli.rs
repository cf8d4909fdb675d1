//! Command-line definitions (clap derive) and nothing else: raw flags as typed. `options.rs`
//! resolves them into validated settings; nothing downstream sees these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Apply a Flux fleet repository in dependency order, without Flux controllers.
///
/// flux-order loads every Flux Kustomization under a cluster directory, builds each one as
/// kustomize-controller would (Flux overlays, postBuild substitution), orders them by dependsOn,
/// shows the plan, and applies it: server-side apply with Flux's field manager and labels,
/// health-gated, pruning what left the repo.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl flux-order",
    bin_name = "kubectl flux-order",
    version,
    max_term_width = 100
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the waves, objects and health gates of a fleet (no cluster needed).
    #[command(
        after_help = "Examples:\n  kubectl flux-order plan ./clusters/production\n  kubectl flux-order plan ./clusters/production -o json\n  kubectl flux-order plan ./clusters/staging --only apps/podinfo"
    )]
    Plan(PlanArgs),
    /// Print the dependency graph as Graphviz DOT or Mermaid (no cluster needed).
    #[command(
        after_help = "Examples:\n  kubectl flux-order graph ./clusters/production | dot -Tsvg > fleet.svg\n  kubectl flux-order graph ./clusters/production -o mermaid"
    )]
    Graph(GraphArgs),
    /// Print the manifests one Kustomization would apply, like `flux build kustomization`.
    #[command(
        after_help = "Examples:\n  kubectl flux-order build ./clusters/production --name flux-system/apps"
    )]
    Build(BuildArgs),
    /// Apply the fleet in dependency order: server-side apply, health-gated, in parallel where the
    /// graph allows.
    #[command(
        after_help = "Examples:\n  kubectl flux-order apply ./clusters/production\n  kubectl flux-order apply ./clusters/production --only flux-system/apps --concurrency 8\n  kubectl flux-order apply ./clusters/production --dry-run=server   # same as diff"
    )]
    Apply(ApplyArgs),
    /// Server-side dry-run of every object, with a diff per changed object (writes nothing).
    #[command(
        after_help = "Exit codes: 0 no change, 1 changes found, 2 error.\n\nExamples:\n  kubectl flux-order diff ./clusters/production"
    )]
    Diff(DiffArgs),
    /// What flux-order applied: per Kustomization the revision, when, object count and readiness.
    #[command(
        after_help = "Examples:\n  kubectl flux-order status\n  kubectl flux-order status -n flux-system -o json\n  kubectl flux-order status flux-system/apps"
    )]
    Status(StatusArgs),
    /// Delete the objects of the selected Kustomizations, dependents first.
    #[command(
        after_help = "Examples:\n  kubectl flux-order delete ./clusters/staging --only flux-system/apps\n  kubectl flux-order delete ./clusters/staging --yes"
    )]
    Delete(DeleteArgs),
    /// Fetch every source and chart the selection needs into DIR, with a lock file and a
    /// checksum per artifact, for `--from DIR` on a machine without network access.
    #[command(
        after_help = "Examples:\n  kubectl flux-order pull ./clusters/production --to ./bundle\n  kubectl flux-order apply ./clusters/production --from ./bundle"
    )]
    Pull(PullArgs),
    /// Print a shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How to find and build the fleet (shared by every command that reads a fleet).
#[derive(Debug, Args, Clone)]
pub struct FleetArgs {
    /// Cluster directory of the fleet repo (e.g. ./clusters/production).
    pub path: PathBuf,

    /// Take every Kustomization in the YAML files under PATH instead of building PATH.
    #[arg(long)]
    pub scan: bool,

    /// Map a Flux source to a local directory: KIND/NAMESPACE/NAME=DIR (repeatable).
    /// GitRepository/flux-system/flux-system defaults to the git work tree holding PATH.
    #[arg(long = "source", value_name = "KIND/NAMESPACE/NAME=DIR")]
    pub sources: Vec<String>,

    /// Select these Kustomizations and everything they depend on: NAMESPACE/NAME (repeatable).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub only: Vec<String>,

    /// kustomize binary (default: `kustomize` on PATH, else `kubectl kustomize`).
    #[arg(long, value_name = "PATH", env = "FLUX_ORDER_KUSTOMIZE_BIN")]
    pub kustomize_bin: Option<PathBuf>,
    /// Age key file for SOPS decryption (besides spec.decryption.secretRef, SOPS_AGE_KEY_FILE and
    /// SOPS_AGE_KEY), repeatable
    #[arg(long, value_name = "FILE")]
    pub age_key_file: Vec<PathBuf>,

    /// Fail on a `${var}` without value or default (kustomize-controller is strict by default; plan and build only warn without this flag).
    #[arg(long)]
    pub strict_substitute: bool,

    /// Parallel kustomize builds (default: number of cores).
    #[arg(long, value_name = "N")]
    pub build_jobs: Option<usize>,

    /// Run one kustomize process per Kustomization instead of batching Kustomizations of the
    /// same source into one process (same results, slower; for debugging).
    #[arg(long)]
    pub no_batch: bool,

    /// Use this chart (a directory or .tgz) for HelmRelease NAMESPACE/NAME instead of fetching
    /// its source (repeatable).
    #[arg(long = "chart", value_name = "NAMESPACE/NAME=PATH")]
    pub charts: Vec<String>,

    /// helm binary (Helm 4) that renders HelmReleases (default: `helm` on PATH).
    #[arg(long, value_name = "PATH", env = "FLUX_ORDER_HELM_BIN")]
    pub helm_bin: Option<PathBuf>,

    /// Fetch nothing: sources and charts come only from the cache
    /// ($XDG_CACHE_HOME/flux-order/sources); whatever is missing is named.
    #[arg(long, conflicts_with = "from")]
    pub offline: bool,

    /// Read every fetched source and chart only from this bundle (made by `pull --to DIR`);
    /// checksums are verified before anything is built or written.
    #[arg(long, value_name = "DIR")]
    pub from: Option<PathBuf>,

    /// Fetch OCI artifacts of FROM (a host, or host/path prefix) from TO instead; `http://TO`
    /// for a plain-HTTP registry (repeatable).
    #[arg(long = "registry-mirror", value_name = "FROM=TO")]
    pub registry_mirrors: Vec<String>,

    /// Stop a kustomize run that takes longer than this (Go duration).
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub build_timeout: String,

    /// Stop a kustomize process whose resident memory grows past this (bytes, or with a Ki, Mi
    /// or Gi suffix).
    #[arg(long, value_name = "SIZE", default_value = "4Gi")]
    pub build_memory_limit: String,
}

/// `plan` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// Human-readable text.
    Text,
    /// JSON (schema in README).
    Json,
    /// YAML (same content as JSON).
    Yaml,
}

/// `pull` flags.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Fleet whose sources to pull.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// The bundle directory to write.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
}

/// `plan` flags.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Fleet to plan.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
    /// Optional cluster: with --kubeconfig or --context, plan also reads flux-order's inventories
    /// and lists what apply would prune. Without them, plan never contacts a cluster.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `graph` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// `graph` flags.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Fleet to draw.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = GraphFormat::Dot)]
    pub output: GraphFormat,
}

/// `build` flags.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Fleet holding the Kustomization.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// The Kustomization to build: NAMESPACE/NAME.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub name: String,
    /// Print Secret values and Secret-backed substitutions in clear.
    #[arg(long)]
    pub show_secrets: bool,
}

/// How to reach the cluster (kubectl's flags).
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Bound on one API request before it is retried (Go duration, e.g. 30s).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub request_timeout: String,
}

/// Progress output of `apply`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressFormat {
    /// Live bars on a terminal, timestamped lines otherwise.
    Text,
    /// One JSON event per line on stdout.
    Json,
}

/// `--dry-run` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Apply for real.
    None,
    /// Server-side dry-run: like `diff`.
    Server,
}

/// What `apply` and `diff` leave out. By default they refuse a selection with any invalid
/// Kustomization.
#[derive(Debug, Clone, Default, Args)]
pub struct ExcludeArgs {
    /// Leave this Kustomization out; its dependents and children are then blocked (repeatable)
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub exclude: Vec<String>,
    /// Leave out every Kustomization that fails to load, build or validate (blocking what
    /// depends on it) instead of refusing the whole selection
    #[arg(long)]
    pub skip_invalid: bool,
}

/// `apply` flags.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Fleet to apply.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Cluster to apply to.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Kustomizations left out.
    #[command(flatten)]
    pub exclude: ExcludeArgs,
    /// Kustomizations in flight at most.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub concurrency: usize,
    /// Objects applied at once within one Kustomization's stage.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub object_concurrency: usize,
    /// Start a wave only when the previous one is entirely Ready (default: start each
    /// Kustomization as soon as its own dependencies are Ready).
    #[arg(long)]
    pub wave_barrier: bool,
    /// Start nothing new after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Recreate objects whose immutable fields changed, for every Kustomization (spec.force for all).
    #[arg(long)]
    pub force: bool,
    /// Re-apply Kustomizations whose build is unchanged since the last run (default: skip them
    /// when their objects still exist and are healthy).
    #[arg(long)]
    pub force_apply: bool,
    /// Health-check timeout for every Kustomization, overriding spec.timeout (Go duration).
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Retry budget of the run: a Kustomization whose apply or health check failed is tried
    /// again (waits from 1s, doubling, at most its spec.retryInterval, default spec.interval)
    /// while the retry starts within DURATION of the rollout's start; 0 disables retries.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub retry_for: String,
    /// Record no Kubernetes Events (default: one per outcome, in the Kustomization's namespace).
    #[arg(long)]
    pub no_events: bool,
    /// Apply Flux's own objects too (sources, HelmReleases — then not rendered by flux-order —,
    /// alerts, …) and wait on their Ready condition, for a cluster whose Flux controllers arrive
    /// in an earlier wave. Their CRDs must be served or come with the selection.
    #[arg(long)]
    pub apply_flux_objects: bool,
    /// `server`: do a server-side dry-run instead (same as `diff`).
    #[arg(long, value_enum, default_value_t = DryRun::None, value_name = "none|server")]
    pub dry_run: DryRun,
    /// Progress output.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ProgressFormat::Text)]
    pub output: ProgressFormat,
    /// No colours (NO_COLOR is honoured too).
    #[arg(long)]
    pub no_color: bool,
}

/// `diff` flags.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Fleet to compare.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Cluster to compare with.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Kustomizations left out.
    #[command(flatten)]
    pub exclude: ExcludeArgs,
    /// Compare Flux's own objects too (sources, HelmReleases — then not rendered —, alerts, …),
    /// as `apply --apply-flux-objects` would apply them.
    #[arg(long)]
    pub apply_flux_objects: bool,
    /// Print Secret values in clear.
    #[arg(long)]
    pub show_secrets: bool,
    /// No colours (NO_COLOR is honoured too).
    #[arg(long)]
    pub no_color: bool,
}

/// `status` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// A table.
    Text,
    /// JSON.
    Json,
}

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Cluster to inspect.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// One Kustomization in detail (like `kubectl describe`): last outcome, revision, attempts,
    /// its last events, the objects not ready.
    #[arg(value_name = "NAMESPACE/NAME")]
    pub id: Option<String>,
    /// Only Kustomizations in this namespace (default: all namespaces).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StatusFormat::Text)]
    pub output: StatusFormat,
}

/// `delete` flags.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Fleet whose Kustomizations to delete (with --only, a subset).
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Cluster to delete from.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}
