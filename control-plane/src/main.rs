//! The `edgexds` binary: parse arguments, set up logging, run.
#![forbid(unsafe_code)]

use std::process::ExitCode;

mod cli;

/// Freed memory goes back to the system within a second or two (configured in
/// `.cargo/config.toml`): with the system allocator, the names of 16 closed streams near
/// their limits (50 MB) stayed resident for good.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;
use cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::ProxyStatus { debug_url } => match edgexds::ops::proxy_status::fetch(&debug_url).await {
            Ok(proxies) => {
                print!("{}", edgexds::ops::proxy_status::render(&proxies));
                let nacked = proxies.iter().any(|p| p.state == edgexds::xds::SyncState::Nacked);
                if nacked { ExitCode::FAILURE } else { ExitCode::SUCCESS }
            }
            Err(e) => {
                eprintln!("edgexds: {e}");
                ExitCode::from(2)
            }
        },
        Command::Limits => {
            print!("{}", edgexds::port::limits::markdown_table());
            ExitCode::SUCCESS
        }
        Command::Crd => {
            print!("{}", edgexds::kubernetes::crd::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Serve(args) => {
            let _log_flush = match edgexds::ops::telemetry::init(args.log_format, &args.log_level) {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("edgexds: {e}");
                    return ExitCode::from(2);
                }
            };
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
