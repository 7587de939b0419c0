//! `lambda-packager`: builds the monorepo's Lambda zips and their manifest.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lambda_packager::{Error, Event, LambdaSettings, Packager, Pip};
use status_report::RunDir;

/// Builds deterministic Lambda zips for the functions in [lambda.functions] of pipeline.toml,
/// with their dependencies, into the run folder's packages/ (or --out), with manifest.json.
///
/// Exit codes: 0 built, 1 a package is over Lambda's size limits, 2 usage, configuration,
/// pip or I/O error.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: pipeline_config::StageArgs,
    /// The run folder whose packages/ receives the zips [default: the latest run].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Write the zips here instead of a run folder.
    #[arg(long, conflicts_with = "run_dir")]
    out: Option<PathBuf>,
    /// Only these functions (repeatable).
    #[arg(long = "only")]
    only: Vec<String>,
    /// The Python whose pip installs dependencies.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Print the manifest as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("lambda-packager: {error:#}");
            let budget = matches!(error.downcast_ref::<Error>(), Some(Error::OverBudget(_)));
            ExitCode::from(if budget { 1 } else { 2 })
        }
    }
}

#[allow(clippy::print_stderr, clippy::print_stdout)]
fn run(args: Args) -> anyhow::Result<()> {
    let config = args.stage.config_path(&args.stage.repo);
    let (settings, mut functions) = LambdaSettings::load(&config)?;
    for name in &args.only {
        if !functions.iter().any(|f| &f.name == name) {
            anyhow::bail!("no function `{name}` in [lambda.functions] of {}", config.display());
        }
    }
    if !args.only.is_empty() {
        functions.retain(|f| args.only.contains(&f.name));
    }
    let state_dir = args.stage.state_dir(&args.stage.repo);
    let out_dir = match (args.out, args.run_dir) {
        (Some(out), _) => out,
        (None, Some(run_dir)) => RunDir::open(&run_dir)?.path.join("packages"),
        (None, None) => RunDir::latest(&state_dir)?.path.join("packages"),
    };
    let packager = Packager {
        repo: args.stage.repo.clone(),
        cache_dir: state_dir.join("cache"),
        out_dir,
        pip: Pip { python: args.python, extra_args: settings.pip_args.clone() },
    };
    let manifest = packager.build(&functions, &|event| match event {
        Event::Installing { requirements } => eprintln!("installing {requirements} with pip"),
        Event::Packaged(package) => {
            let how = if package.reused { "unchanged, reused" } else { "built" };
            eprintln!("{} {how}", package.name);
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
        return Ok(());
    }
    for package in &manifest.packages {
        println!(
            "{:<24} {:>10} bytes {:>6} files  CodeSha256 {}",
            package.name, package.size, package.files, package.code_sha256
        );
    }
    Ok(())
}
