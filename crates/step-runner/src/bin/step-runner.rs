//! `step-runner`: runs one step's command for the components the last diff marked changed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Parser;
use source_diff::{Components, DiffReport};
use status_report::{FileStore, RunDir, Step};
use step_runner::{Event, Outcome, Runner, RunnerSettings};

/// Runs the test (or build, deploy) command of every component the run's diff marks changed,
/// in parallel, each with a timeout and a log, and records each result in the status store.
///
/// Exit codes: 0 every command passed (or none was needed), 1 a command failed, timed out or
/// was cancelled, 2 usage, configuration or I/O error.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: pipeline_config::StageArgs,
    /// The step whose command runs: test, build or deploy.
    #[arg(long, default_value = "test")]
    step: Step,
    /// The run folder holding diff.json [default: the latest run].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Print what would run and exit.
    #[arg(long)]
    dry_run: bool,
}

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("step-runner: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stderr, clippy::print_stdout)]
fn run(args: Args) -> anyhow::Result<bool> {
    let config = args.stage.config_path(&args.stage.repo);
    let components = Components::load(&config)?;
    let settings: RunnerSettings = pipeline_config::load_section(&config, RunnerSettings::SECTION)?;
    let state_dir = args.stage.state_dir(&args.stage.repo);
    let run_dir = match &args.run_dir {
        Some(path) => RunDir::open(path)?,
        None => RunDir::latest(&state_dir)?,
    };
    let diff_path = run_dir.input("diff.json", "source-diff --output RUN_DIR/diff.json")?;
    let diff: DiffReport = serde_json::from_slice(&std::fs::read(&diff_path)?)
        .with_context(|| format!("{} is not a source-diff report", diff_path.display()))?;
    let plan = step_runner::plan(args.step, &components, &diff, &run_dir, &settings);
    if args.dry_run {
        print!("{}", plan.describe());
        return Ok(true);
    }

    static CANCEL: AtomicBool = AtomicBool::new(false);
    ctrlc::set_handler(|| CANCEL.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    let runner = Runner {
        workdir: args.stage.repo.clone(),
        parallelism: settings.parallelism(),
        path_prefix: Vec::new(),
        cancel: &CANCEL,
    };
    let store = FileStore::open(&state_dir)?;
    let results = step_runner::run_step(&store, &run_dir.run_id, &diff.head, &plan, &runner, &|event| match event {
        Event::Started(job) => eprintln!("started  {} {}", job.component, args.step),
        Event::Finished(result) => eprintln!("finished {} {}: {}", result.job.component, args.step, result.outcome),
    })?;
    for result in &results {
        println!("{}\t{}", result.job.component, result.outcome);
    }
    Ok(results.iter().all(|r| r.outcome == Outcome::Passed))
}
