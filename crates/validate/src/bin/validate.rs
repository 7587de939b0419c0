//! `validate`: the Validate stage on its own.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use run_state::cli::StageArgs;
use run_state::{StageInputs, StageOutcome, StagePlan};
use validate::report;

/// Checks the CloudFormation templates and scans the files of the components the run's diff
/// marks changed, and runs the external tools configured under [validate.tools] for them.
///
/// Exit codes: 0 clean, 1 findings at or above [validate] fail_on, 2 usage, configuration,
/// missing tool or I/O error.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Where the status store is, when it is DynamoDB (`--store dynamodb://TABLE`).
    #[command(flatten)]
    target: run_state::cli::TargetArgs,
    /// The run folder holding diff.json [default: the latest run].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Check every component, as if all had changed (no diff needed).
    #[arg(long)]
    all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Write the report here (atomically) instead of stdout; the findings are still listed on stderr.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Skip the external tools (native checks and secrets only).
    #[arg(long)]
    no_tools: bool,
    /// Do not read or write the result cache.
    #[arg(long)]
    no_cache: bool,
    /// Print what would be checked and exit.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// `path:line:col: ID severity: message`.
    Human,
    /// JSON.
    Json,
    /// JUnit XML.
    Junit,
    /// SARIF 2.1.0.
    Sarif,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_state::cli::main_with_code("validate", || run(args))
}

#[allow(clippy::print_stderr)]
fn run(args: Args) -> anyhow::Result<u8> {
    let context = args.stage.context_on(&args.target.target())?;
    validate::check_config(context.required_config()?)?;
    // With --all and no --run-dir, nothing is recorded: a check of everything on whatever is
    // checked out must not pass the step of whichever run happens to be the newest.
    let run_dir = match (&args.run_dir, args.all) {
        (None, true) => None,
        (given, _) => Some(context.run_dir(given.as_deref())?),
    };
    let cancel = run_state::cli::cancel_flag();
    let checks = validate::CheckOptions { tools: !args.no_tools, cache: !args.no_cache };
    if args.dry_run {
        let diff: Option<source_diff::DiffReport> = match &run_dir {
            Some(run_dir) if !args.all => Some(run_dir.read_json(run_state::RunFile::Diff)?),
            _ => None,
        };
        let scope = diff.as_ref().map_or(validate::Scope::All, validate::Scope::Diff);
        run_state::cli::print(&validate::plan_stage(&context, scope)?.describe())?;
        return Ok(0);
    }
    let outcome = match &run_dir {
        Some(run_dir) => {
            let store = context.store()?;
            let inputs = StageInputs::new(&context, run_dir, store.as_ref(), cancel);
            validate::run_stage(&inputs, validate::StageOptions { checks, all: args.all })?
        }
        None => validate::check_all(&context, checks, cancel)?,
    };
    let text = match args.format {
        Format::Human => report::human(&outcome.findings),
        Format::Json => report::json(&outcome.findings),
        Format::Junit => report::junit(&outcome.checked_files(), &outcome.findings, outcome.fail_on),
        Format::Sarif => report::sarif(&outcome.findings),
    };
    match &args.output {
        Some(path) => {
            run_state::write_atomic(path, text.as_bytes())?;
            // The build log still shows what was found.
            eprint!("{}", report::human(&outcome.findings));
            eprintln!("validate: {}; report in {}", outcome.summary(), path.display());
        }
        None => run_state::cli::print(&text)?,
    }
    Ok(outcome.exit_code())
}
