//! The `edgexds` binary: parse arguments, set up logging, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use edgexds::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", edgexds::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            if let Err(e) = edgexds::telemetry::init(args.log_format, &args.log_level) {
                eprintln!("edgexds: {e}");
                return ExitCode::from(2);
            }
            let config = args.to_config();
            let result = match edgexds::serve::start(config).await {
                Ok(running) => running.run_until(edgexds::serve::termination()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}
