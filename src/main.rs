//! `wsgate`: flags → config → runtime → exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wsgate::config::{self, Overrides};

/// A WebSocket API gateway with the contract of Amazon API Gateway's WebSocket APIs.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The TOML configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Validate the configuration, print the route table, and exit.
    #[arg(long)]
    check: bool,
    /// Client listener address, e.g. 0.0.0.0:8080 (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Management API address (overrides management.listen).
    #[arg(long)]
    management_listen: Option<String>,
    /// Worker threads; 0 = one per available core (overrides server.workers).
    #[arg(long)]
    workers: Option<usize>,
    /// Pin worker i to core i mod cores.
    #[arg(long)]
    pin_cores: bool,
    /// off, error, warn, info, debug or trace.
    #[arg(long)]
    log_level: Option<String>,
    /// text or json.
    #[arg(long)]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let overrides = Overrides {
        listen: args.listen,
        management_listen: args.management_listen,
        workers: args.workers,
        pin_cores: args.pin_cores,
        log_level: args.log_level,
        log_format: args.log_format,
    };
    let config = match config::load(&args.config, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: config error: {e}");
            return ExitCode::from(1);
        }
    };
    if args.check {
        print!("{}", config.describe_routes());
        println!("config ok: {}", config.path.display());
        return ExitCode::SUCCESS;
    }
    wsgate::logger::init(config.server.log_level, config.server.log_format);
    match wsgate::runtime::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsgate: {e}");
            ExitCode::from(1)
        }
    }
}
