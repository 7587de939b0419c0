//! `lambda-packager`: builds the monorepo's Lambda zips and their manifest.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use lambda_packager::{Event, StageOptions};
use run_state::cli::StageArgs;
use run_state::{StageInputs, StageOutcome, StagePlan};

/// Builds deterministic Lambda zips for the functions in [lambda.functions] of pipeline.toml,
/// with their dependencies, into the run folder's packages/ (or --out), with manifest.json,
/// and records the run's build step.
///
/// Exit codes: 0 built, 1 a package is over Lambda's size limits, 2 usage, configuration,
/// pip or I/O error.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Where the status store is, when it is DynamoDB (`--store dynamodb://TABLE`).
    #[command(flatten)]
    target: run_state::cli::TargetArgs,
    /// The run folder whose packages/ receives the zips [default: the latest run].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Write the zips here instead of a run folder (nothing is recorded).
    #[arg(long, conflicts_with = "run_dir")]
    out: Option<PathBuf>,
    /// Only these functions (repeatable).
    #[arg(long = "only")]
    only: Vec<String>,
    /// The Python whose pip installs dependencies.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Print the manifest (with --dry-run, the plan) as JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Print which functions would be packaged, and why, and exit: nothing is built or recorded.
    #[arg(long, conflicts_with = "out")]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_state::cli::main_with_code("lambda-packager", || run(args))
}

#[allow(clippy::print_stderr)]
fn run(args: Args) -> anyhow::Result<u8> {
    let context = args.stage.context_on(&args.target.target())?;
    let options = StageOptions { only: args.only, python: Some(args.python) };
    let on_event = |event: Event<'_>| match event {
        Event::Installing { requirements } => eprintln!("installing {requirements} with pip"),
        Event::Packaged(package) => {
            // `reused` is about the zip (same inputs, from the cache), not the diff.
            let how = if package.reused { "reused from the cache (same inputs)" } else { "built" };
            eprintln!("{} {how}", package.name);
        }
        Event::NotPackaged { function, reason } => eprintln!("{function} not packaged: {reason}"),
    };
    let outcome = match &args.out {
        Some(out) => lambda_packager::package(&context, out, &options, &on_event)?,
        None => {
            let run_dir = context.run_dir(args.run_dir.as_deref()).map_err(|error| match error {
                run_state::Error::NoRun { .. } => anyhow::anyhow!("{error}; or pass --out DIR to build without a run"),
                other => other.into(),
            })?;
            if args.dry_run {
                let plan = lambda_packager::plan_run(&context, &run_dir, &options)?;
                let shown =
                    if args.json { format!("{}\n", serde_json::to_string_pretty(&plan)?) } else { plan.describe() };
                run_state::cli::print(&shown)?;
                return Ok(0);
            }
            let store = context.store()?;
            // Packaging is not stopped half-way: Ctrl-C ends the process (no handler is installed).
            let never = AtomicBool::new(false);
            let inputs = StageInputs::new(&context, &run_dir, store.as_ref(), &never);
            lambda_packager::run_stage(&inputs, &options, &on_event)?
        }
    };
    let code = outcome.exit_code();
    let manifest = match outcome.into_manifest() {
        Ok(manifest) => manifest,
        // Over Lambda's limits: the stage's verdict, said on one line.
        Err(error) => {
            eprintln!("lambda-packager: {error}");
            return Ok(code);
        }
    };
    if args.json {
        run_state::cli::print(&format!("{}\n", serde_json::to_string_pretty(&manifest)?))?;
        return Ok(0);
    }
    let width = manifest.packages.iter().map(|p| p.name.len()).max().unwrap_or(0).max(8);
    let mut out = String::new();
    for package in &manifest.packages {
        out.push_str(&format!(
            "{:<width$} {:>10} bytes {:>6} files  CodeSha256 {}\n",
            package.name, package.size, package.files, package.code_sha256
        ));
    }
    run_state::cli::print(&out)?;
    Ok(0)
}
