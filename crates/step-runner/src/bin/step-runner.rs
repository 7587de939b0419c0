//! `step-runner`: runs one step's command for the components the run's diff marks changed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use run_state::cli::StageArgs;
use run_state::{StageInputs, StageOutcome, StagePlan, Step};
use step_runner::{Event, StepOutcome};

/// Runs the test (or build, deploy, e2e) command of every component the run's diff marks changed,
/// in parallel, each with a timeout and a log, and records each result in the status store.
///
/// The checked-out tree must be the run's commit (or the run was started with
/// --include-worktree); a deploy does not start while the gate refuses the run.
///
/// Exit codes: 0 every command passed (or none was needed), 1 a command failed, timed out or
/// was cancelled, or the gate refuses a deploy, 2 usage, configuration or I/O error.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Where the status store is, when it is DynamoDB (`--store dynamodb://TABLE`).
    #[command(flatten)]
    target: run_state::cli::TargetArgs,
    /// The step whose command runs: test, build, deploy or e2e.
    #[arg(long, default_value = "test")]
    step: Step,
    /// The deployed environment (dev, prod …) whose stack outputs the commands get as
    /// environment variables (STACK_OutputKey, OutputKey, PIPELINE_ENV); required for e2e.
    #[arg(long = "env", value_name = "ENV")]
    environment: Option<String>,
    /// The run folder holding diff.json [default: the latest run].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Print what would run and exit.
    #[arg(long)]
    dry_run: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_state::cli::main_with_code("step-runner", || run(args))
}

#[allow(clippy::print_stderr)]
fn run(args: Args) -> anyhow::Result<u8> {
    let context = args.stage.context_on(&args.target.target())?;
    step_runner::check_config(context.required_config()?)?;
    let run_dir = context.run_dir(args.run_dir.as_deref())?;
    if args.dry_run {
        let (components, settings, diff) = step_runner::load(&context, &run_dir)?;
        run_state::cli::print(&step_runner::plan(args.step, &components, &diff, &run_dir, &settings).describe())?;
        return Ok(0);
    }
    let store = context.store()?;
    let inputs = StageInputs::new(&context, &run_dir, store.as_ref(), run_state::cli::cancel_flag());
    let step = args.step;
    let outcome = step_runner::run_stage(&inputs, step, args.environment.as_deref(), &|event| match event {
        Event::Started(job) => eprintln!("started  {} {step}", job.component),
        Event::Finished(result) => eprintln!("finished {} {step}: {}", result.job.component, result.outcome),
    })?;
    match &outcome {
        StepOutcome::Ran(done) => {
            let mut out = String::new();
            for result in &done.results {
                out.push_str(&format!("{}\t{}\n", result.job.component, result.outcome));
            }
            run_state::cli::print(&out)?;
        }
        StepOutcome::Refused(_) => eprintln!("step-runner: {}", outcome.refusal().unwrap_or_default()),
    }
    Ok(outcome.exit_code())
}
