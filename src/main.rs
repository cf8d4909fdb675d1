//! `kubectl-flux_order`: apply a Flux fleet repository in dependency order, without Flux
//! controllers. `main` parses flags, runs one command and maps its error to a named exit code.

mod build;
mod cli;
mod cluster;
mod commands;
mod execute;
mod exit;
mod graph;
mod health;
mod load;
mod model;
mod options;
mod report;
mod yaml;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match run(cli) {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn run(cli: cli::Cli) -> Result<(), exit::AppError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| exit::AppError::Usage(e.into()))?;
    rt.block_on(async {
        match &cli.command {
            cli::Command::Plan(a) => commands::plan::run(a).await,
            cli::Command::Graph(a) => commands::graph::run(a).await,
            cli::Command::Build(a) => commands::build::run(a).await,
            cli::Command::Apply(a) => commands::apply::run(a).await,
            cli::Command::Diff(a) => commands::diff::run(a).await,
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
