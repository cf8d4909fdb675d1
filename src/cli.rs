//! Command-line definitions (clap derive) and nothing else: raw flags as typed. `options.rs`
//! resolves them into validated settings; nothing downstream sees these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Apply a Flux fleet repository in dependency order, without Flux controllers.
///
/// flux-order loads every Flux Kustomization under a cluster directory, builds each one as
/// kustomize-controller would (Flux overlays, postBuild substitution), orders them by dependsOn
/// and shows the plan.
#[derive(Debug, Parser)]
#[command(name = "kubectl flux-order", bin_name = "kubectl flux-order", version, max_term_width = 100)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the waves, objects and health gates of a fleet (no cluster needed).
    #[command(after_help = "Examples:\n  kubectl flux-order plan ./clusters/production\n  kubectl flux-order plan ./clusters/production -o json\n  kubectl flux-order plan ./clusters/staging --only apps/podinfo")]
    Plan(PlanArgs),
    /// Print the dependency graph as Graphviz DOT or Mermaid (no cluster needed).
    #[command(after_help = "Examples:\n  kubectl flux-order graph ./clusters/production | dot -Tsvg > fleet.svg\n  kubectl flux-order graph ./clusters/production -o mermaid")]
    Graph(GraphArgs),
    /// Print the manifests one Kustomization would apply, like `flux build kustomization`.
    #[command(after_help = "Examples:\n  kubectl flux-order build ./clusters/production --name flux-system/apps")]
    Build(BuildArgs),
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

    /// Fail on a `${var}` without value or default (kustomize-controller is strict by default; plan and build only warn without this flag).
    #[arg(long)]
    pub strict_substitute: bool,

    /// Parallel kustomize builds (default: number of cores).
    #[arg(long, value_name = "N")]
    pub build_jobs: Option<usize>,
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

/// `plan` flags.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Fleet to plan.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
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
