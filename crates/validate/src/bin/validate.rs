//! `validate`: the Validate stage on its own.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use source_diff::{Components, DiffReport, Repo};
use status_report::RunDir;
use validate::{ValidateSettings, report};

/// Checks the CloudFormation templates and scans the files of the components the run's diff
/// marks changed, and runs the external tools configured under [validate.tools] for them.
///
/// Exit codes: 0 clean, 1 findings at or above [validate] fail_on, 2 usage, configuration,
/// missing tool or I/O error.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: pipeline_config::StageArgs,
    /// The run folder holding diff.json [default: the latest run].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Check every component, as if all had changed (no diff needed).
    #[arg(long)]
    all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Write the report here (atomically) instead of stdout.
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

#[allow(clippy::print_stderr)]
fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("validate: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stdout)]
fn run(args: Args) -> anyhow::Result<bool> {
    let repo = Repo::open(&args.stage.repo)?;
    let root = repo.root().to_path_buf();
    let config = args.stage.config_path(&root);
    let components = Components::load(&config)?;
    let settings: ValidateSettings = pipeline_config::load_section(&config, ValidateSettings::SECTION)?;
    let state_dir = args.stage.state_dir(&root);
    let run_dir = match (&args.run_dir, args.all) {
        (Some(path), _) => Some(RunDir::open(path)?),
        (None, false) => Some(RunDir::latest(&state_dir)?),
        (None, true) => RunDir::latest(&state_dir).ok(),
    };
    let tracked = repo.tracked_files()?;
    let diff = if args.all {
        let everything = tracked
            .iter()
            .map(|path| source_diff::FileChange { path: path.clone(), status: source_diff::FileStatus::Modified });
        source_diff::affected(&components, everything.collect())
    } else {
        let run_dir = run_dir.as_ref().expect("a run folder without --all");
        let path = run_dir.input("diff.json", "source-diff --new-run")?;
        serde_json::from_slice::<DiffReport>(&std::fs::read(&path)?)
            .with_context(|| format!("{} is not a source-diff report", path.display()))?
    };
    let plan = validate::plan(&settings, &components, &diff, &tracked)?;
    if args.dry_run {
        print!("{}", plan.describe());
        return Ok(true);
    }

    let cache = state_dir.join("cache");
    static CANCEL: AtomicBool = AtomicBool::new(false);
    if !args.no_tools && !plan.tools.is_empty() {
        ctrlc::set_handler(|| CANCEL.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    }
    let log_dir = run_dir.as_ref().map_or_else(|| state_dir.join("logs"), |r| r.path.join("logs"));
    let options = validate::ApplyOptions {
        cache_dir: (!args.no_cache).then_some(cache.as_path()),
        tools: !args.no_tools,
        tool_path_prefix: &[],
        log_dir: &log_dir,
        cancel: &CANCEL,
    };
    let findings = validate::apply(&root, &settings, &plan, options)?;

    if let Some(run_dir) = &run_dir {
        status_report::write_atomic(&run_dir.path.join("validate.json"), report::json(&findings).as_bytes())?;
    }
    let mut checked: Vec<String> = plan.templates.clone();
    checked.extend(plan.secret_files.iter().cloned());
    checked.sort();
    checked.dedup();
    let text = match args.format {
        Format::Human => report::human(&findings),
        Format::Json => report::json(&findings),
        Format::Junit => report::junit(&checked, &findings),
        Format::Sarif => report::sarif(&findings),
    };
    match &args.output {
        Some(path) => status_report::write_atomic(path, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(!validate::fails(&findings, settings.fail_on))
}
