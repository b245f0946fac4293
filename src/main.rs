//! The `toolgate` command: run, check, demo.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use toolgate::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "toolgate",
    version,
    about = "A strict, transparent proxy in front of MCP servers"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a policy file.
    Run {
        /// The policy file.
        #[arg(long, short)]
        config: PathBuf,
        /// Listen address for MCP traffic (overrides listen.proxy).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Listen address for /healthz, /readyz, /metrics (overrides listen.admin).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Validate a policy file; on error print FILE:LINE:COLUMN and exit 1.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Start a built-in MCP server behind toolgate with a sample policy.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file } => match toolgate::config::load_file(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config,
            listen,
            admin_listen,
        } => {
            telemetry::init_logging(cli.log_format);
            let config = toolgate::Config {
                policy_file: config,
                proxy_listen: listen,
                admin_listen,
            };
            report(runtime().and_then(|rt| rt.block_on(toolgate::serve(config)).map_err(anyhow::Error::from)))
        }
        Command::Demo { listen, admin_listen } => {
            telemetry::init_logging(cli.log_format);
            report(runtime().and_then(|rt| {
                rt.block_on(toolgate::demo::run(listen, admin_listen))
                    .map_err(anyhow::Error::from)
            }))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("toolgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}
