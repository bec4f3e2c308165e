//! The `ember` command: runs the runtime (`serve`) and talks to its API.

use clap::Parser;
use ember::cli::{Cli, Command};
use ember::{bench, commands, gpu_commands, inspect, serve, shell, token_commands};

fn main() -> std::process::ExitCode {
    // Started again by the runtime to create one container: see ember_sandbox's creator.
    ember_sandbox::oci::run_if_creator();
    ember_sandbox::oci::run_if_joiner();
    // Started again by `ember bench` to time crun's or runc's runs.
    bench::peers::run_if_container_runs();
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EMBER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
                // libcgroups warns, on every container, about v1 controllers the
                // machine lacks (hugetlb, net_cls...): noise, not news.
                .add_directive("libcgroups=error".parse().expect("valid directive")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting tokio: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Deploy(args) => commands::deploy(*args).await,
            Command::Ls(args) => commands::list(args).await,
            Command::Nodes(args) => commands::nodes(args).await,
            Command::Rm(args) => commands::remove(args).await,
            Command::Revisions(args) => commands::revisions(args).await,
            Command::Logs(args) => inspect::logs(args).await,
            Command::Instances(args) => inspect::instances(args).await,
            Command::Describe(args) => inspect::describe(args).await,
            Command::Scale(args) => commands::scale(args).await,
            Command::Traffic(args) => commands::traffic(args).await,
            Command::Rollback(args) => commands::rollback(args).await,
            Command::Exec(args) => shell::exec(args).await,
            Command::Ssh(args) => shell::ssh(args).await,
            Command::Token(command) => token_commands::run(command).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Gpu(command) => gpu_commands::run(command),
            Command::Completion { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "ember",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
