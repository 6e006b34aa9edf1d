//! `wsgate`: flags → config → runtime → exit code; `wsgate import` converts a
//! CloudFormation / SAM template to a config (SPEC §17).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wsgate::config::{self, Overrides};
use wsgate::import;

/// A WebSocket API gateway with the contract of Amazon API Gateway's WebSocket APIs.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// The TOML configuration file.
    #[arg(
        long,
        required_unless_present = "template",
        conflicts_with = "template"
    )]
    config: Option<PathBuf>,
    /// Serve the WebSocket API of a CloudFormation or SAM template (YAML or JSON),
    /// converted in memory as `wsgate import` would (no file is written).
    #[arg(long)]
    template: Option<PathBuf>,
    #[command(flatten)]
    import: ImportFlags,
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

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert a CloudFormation or SAM template's WebSocket API to a wsgate
    /// configuration on stdout; what it cannot express is listed on stderr.
    Import {
        /// The template (YAML with short intrinsic tags, or JSON).
        template: PathBuf,
        #[command(flatten)]
        import: ImportFlags,
    },
}

/// What the template conversion takes from the command line.
#[derive(clap::Args, Debug, Default)]
struct ImportFlags {
    /// The stage to serve when the API has several (its StageName).
    #[arg(long, value_name = "NAME")]
    stage: Option<String>,
    /// Where the Lambda Invoke API is reached, e.g. `sam local start-lambda`'s
    /// http://127.0.0.1:3001 ([aws] lambda_endpoint).
    #[arg(long, value_name = "URL")]
    lambda_endpoint: Option<String>,
    /// A template parameter's value (also AWS::Region and the other pseudo
    /// parameters); repeat for several.
    #[arg(long = "parameter", value_name = "KEY=VALUE")]
    parameters: Vec<String>,
}

impl ImportFlags {
    fn is_empty(&self) -> bool {
        self.stage.is_none() && self.lambda_endpoint.is_none() && self.parameters.is_empty()
    }

    fn options(self) -> Result<import::Options, String> {
        Ok(import::Options {
            stage: self.stage,
            lambda_endpoint: self.lambda_endpoint,
            parameters: self
                .parameters
                .iter()
                .map(|p| import::parameter(p))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Converts `template`, printing each warning line to stderr.
fn convert(template: &std::path::Path, flags: ImportFlags) -> Result<import::Output, String> {
    let out = import::convert_file(template, &flags.options()?)?;
    for w in &out.warnings {
        eprintln!("{w}");
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Import { template, import }) = args.command {
        return match convert(&template, import) {
            Ok(out) => {
                print!("{}", out.toml);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wsgate import: {e}");
                ExitCode::from(1)
            }
        };
    }
    let overrides = Overrides {
        listen: args.listen,
        management_listen: args.management_listen,
        workers: args.workers,
        pin_cores: args.pin_cores,
        log_level: args.log_level,
        log_format: args.log_format,
    };
    let loaded = match (&args.template, &args.config) {
        (Some(t), _) => match convert(t, args.import) {
            Ok(out) => config::parse(t, &out.toml, &overrides),
            Err(e) => {
                eprintln!("wsgate: template error: {e}");
                return ExitCode::from(1);
            }
        },
        (None, Some(c)) if args.import.is_empty() => config::load(c, &overrides),
        (None, _) => {
            eprintln!("wsgate: --stage, --lambda-endpoint and --parameter need --template");
            return ExitCode::from(2);
        }
    };
    let config = match loaded {
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
