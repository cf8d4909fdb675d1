//! `kubectl-flux_order`: apply a Flux fleet repository in dependency order, without Flux
//! controllers. `main` parses flags, runs one command and maps its error to a named exit code.

mod build;
mod cli;
mod cluster;
mod commands;
mod decrypt;
mod execute;
mod exit;
mod graph;
mod health;
mod helm;
mod interrupt;
mod inventory;
mod load;
mod model;
mod options;
mod problems;
mod recorder;
mod redact;
mod report;
mod sources;
mod yaml;

use clap::Parser;

fn main() {
    // `kubectl flux-order plan … | head` must not panic on a closed pipe (ripgrep does the same:
    // a broken pipe is a normal end); any other panic prints one line, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string();
        if msg.contains("Broken pipe") || msg.contains("failed printing to stdout") {
            std::process::exit(exit::SUCCESS);
        }
        eprintln!("error: internal error (please report): {msg}");
    }));
    // Diagnostics (retries, watch errors, phase timings) go to stderr when RUST_LOG asks for them,
    // e.g. RUST_LOG=kubectl_flux_order=debug; silent by default.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let cli = cli::Cli::parse();
    let code = match run(cli) {
        // A signal ends every command with 130; an error it caused (an abandoned request) is
        // not the story, the interruption is.
        _ if interrupt::interrupted() => {
            eprintln!("error: interrupted");
            exit::INTERRUPTED
        }
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn run(cli: cli::Cli) -> Result<(), exit::AppError> {
    // Deeply nested YAML (up to yaml::MAX_DEPTH) is walked recursively, by serde and by
    // flux-order: stacks with room to spare, on every worker and blocking thread.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(32 << 20)
        .enable_all()
        .build()
        .map_err(|e| exit::AppError::Usage(e.into()))?;
    rt.block_on(async {
        interrupt::install();
        match &cli.command {
            cli::Command::Plan(a) => commands::plan::run(a).await,
            cli::Command::Graph(a) => commands::graph::run(a).await,
            cli::Command::Build(a) => commands::build::run(a).await,
            cli::Command::Apply(a) => commands::apply::run(a).await,
            cli::Command::Diff(a) => commands::diff::run(a).await,
            cli::Command::Status(a) => commands::status::run(a).await,
            cli::Command::Delete(a) => commands::delete::run(a).await,
            cli::Command::Pull(a) => commands::pull::run(a).await,
            cli::Command::Completion { shell } => {
                let mut cmd = <cli::Cli as clap::CommandFactory>::command();
                clap_complete::generate(
                    *shell,
                    &mut cmd,
                    "kubectl-flux_order",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
    })
}
