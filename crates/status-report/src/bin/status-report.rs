//! `status-report`: records pipeline steps, decides the gate and renders a run's report.
//!
//! Exit codes: 0 success, 1 the gate refused (`gate`), 2 usage, configuration,
//! I/O or store errors (including a run that `mark-success` refuses).

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use status_report::{Error, FileStore, GatePolicy, RunReport, Status, Step, StepRecord, Store, decide, redact};

/// The record of every pipeline step, the gate decision, and reports.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The monorepo root, where `pipeline.toml` and `.pipeline/` are.
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// The folder of the status store [default: REPO/.pipeline].
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The file whose `[gate]` section sets the gate policy [default: REPO/pipeline.toml, when it exists].
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Records the state of one step of one component (for shell steps in CodeBuild).
    Record(RecordArgs),
    /// Lists run ids, newest last, each with its gate decision.
    Runs,
    /// Shows a run as a table, Markdown, JSON or JUnit XML.
    Show {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// The report's format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Writes the report to FILE (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Prints the gate's decision: exit 0 when the pipeline may go on, 1 when refused.
    Gate {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
    },
    /// Makes a run's commit the next default base; refused unless its deploy passed. Prints the commit.
    MarkSuccess {
        /// The run.
        #[arg(long, value_name = "ID")]
        run: String,
    },
}

#[derive(Debug, Args)]
struct RecordArgs {
    /// The run id.
    #[arg(long, value_name = "ID")]
    run: String,
    /// The commit the run builds.
    #[arg(long, value_name = "SHA")]
    commit: String,
    /// The component, or `pipeline` for steps of the whole pipeline.
    #[arg(long, value_name = "NAME")]
    component: String,
    /// The step: source, diff, validate, build, test, deploy, approval, e2e, dast or prod-deploy.
    // Taken as text and parsed with `Step::from_str`, so a mistake is one line listing the valid steps.
    #[arg(long, value_name = "STEP")]
    step: String,
    /// The status: pending, running, passed, failed, skipped or cancelled.
    #[arg(long, value_name = "STATUS")]
    status: String,
    /// Why it failed, on one line.
    #[arg(long, value_name = "MSG")]
    error: Option<String>,
    /// The step's log: its path and its last lines (secrets redacted) are kept.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// A short note (why it was skipped …).
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
    /// Sets the start time to now whatever the status (a step recorded only once it ended).
    #[arg(long)]
    started: bool,
    /// Sets the end time to now whatever the status.
    #[arg(long)]
    ended: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Markdown,
    Json,
    Junit,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(error) => {
            print_error(&error);
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::print_stderr)]
fn print_error(error: &anyhow::Error) {
    // `{:#}` puts the whole chain on one line; a stray newline inside a message must not break that.
    eprintln!("status-report: {}", format!("{error:#}").replace('\n', " "));
}

#[allow(clippy::print_stderr)]
fn warn(message: &str) {
    eprintln!("status-report: warning: {message}");
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let state_dir = cli.state_dir.clone().unwrap_or_else(|| cli.repo.join(pipeline_config::STATE_DIR));
    match &cli.command {
        Command::Record(args) => record(&state_dir, args)?,
        Command::Runs => {
            let policy = policy(cli)?;
            let mut out = String::new();
            if let Some(store) = existing_store(&state_dir)? {
                for (run_id, records) in store.runs()? {
                    let gate = decide(&records, &policy);
                    let verdict = match gate.reasons.len() {
                        0 => "passed".to_string(),
                        1 => "refused (1 reason)".to_string(),
                        n => format!("refused ({n} reasons)"),
                    };
                    out.push_str(&format!("{run_id} {verdict}\n"));
                }
            }
            print(&out)?;
        }
        Command::Show { run, format, output } => {
            let policy = policy(cli)?;
            let (store, run_id) = pick_run(&state_dir, run.as_deref())?;
            let records = run_records(&store, &run_id)?;
            let gate = decide(&records, &policy);
            let report = RunReport::new(&run_id, records, gate);
            let mut text = match format {
                Format::Table => report.to_table(),
                Format::Markdown => report.to_markdown(),
                Format::Json => report.to_json(),
                Format::Junit => report.to_junit(),
            };
            if !text.ends_with('\n') {
                text.push('\n');
            }
            match output {
                Some(path) => status_report::write_atomic(path, text.as_bytes())?,
                None => print(&text)?,
            }
        }
        Command::Gate { run } => {
            let policy = policy(cli)?;
            let (store, run_id) = pick_run(&state_dir, run.as_deref())?;
            let gate = decide(&run_records(&store, &run_id)?, &policy);
            let mut out = format!("gate: {}\n", if gate.allowed { "passed" } else { "refused" });
            for reason in &gate.reasons {
                out.push_str(&format!("  - {reason}\n"));
            }
            print(&out)?;
            if !gate.allowed {
                return Ok(ExitCode::from(1));
            }
        }
        Command::MarkSuccess { run } => {
            let (store, run_id) = pick_run(&state_dir, Some(run))?;
            let mark = store.mark_success(&run_id)?;
            print(&format!("{}\n", mark.commit))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn record(state_dir: &Path, args: &RecordArgs) -> Result<()> {
    let step: Step = args.step.parse().map_err(|e: String| anyhow!(e))?;
    let status: Status = args.status.parse().map_err(|e: String| anyhow!(e))?;
    let store = FileStore::open(state_dir)?;
    let now = SystemTime::now();
    let mut record = StepRecord::new(&args.run, &args.commit, &args.component, step, status);
    record.started_at = if status == Status::Running || args.started {
        Some(now)
    } else if status.is_final() {
        // The start was recorded by an earlier `--status running`: keep it so the report shows a duration.
        let previous = store.run(&args.run)?;
        previous.into_iter().find(|r| r.component == args.component && r.step == step).and_then(|r| r.started_at)
    } else {
        None
    };
    record.ended_at = (status.is_final() || args.ended).then_some(now);
    record.details.error = args.error.clone();
    record.details.note = args.note.clone();
    if let Some(log) = &args.log {
        record.details.log_path = Some(log.display().to_string());
        // A missing log must not lose the step's record (the gate would then see it unfinished).
        match redact::read_log_tail(log) {
            Ok(tail) => record.details.log_tail = Some(tail),
            Err(e) => warn(&format!("{e}; recorded the step without its log tail")),
        }
    }
    store.record(&record)?;
    Ok(())
}

/// The gate policy: `[gate]` of `--config`, else of `REPO/pipeline.toml` when it exists, else the default.
fn policy(cli: &Cli) -> Result<GatePolicy> {
    let path = match &cli.config {
        Some(path) => path.clone(),
        None => {
            let path = cli.repo.join(pipeline_config::FILE_NAME);
            if !path.exists() {
                return Ok(GatePolicy::default());
            }
            path
        }
    };
    Ok(pipeline_config::load_section::<GatePolicy>(&path, GatePolicy::SECTION)?)
}

/// The store, when one exists: reading commands must not create `.pipeline/` in the wrong folder.
fn existing_store(state_dir: &Path) -> Result<Option<FileStore>> {
    if state_dir.join(FileStore::FILE_NAME).is_file() { Ok(Some(FileStore::open(state_dir)?)) } else { Ok(None) }
}

/// The store and the run to read: `run` when given, else the newest.
fn pick_run(state_dir: &Path, run: Option<&str>) -> Result<(FileStore, String)> {
    let path = state_dir.join(FileStore::FILE_NAME);
    let no_runs = || {
        anyhow!(
            "no runs recorded in {}; record a step first (`status-report record`) or pass --repo or --state-dir",
            path.display()
        )
    };
    let store = existing_store(state_dir)?.ok_or_else(no_runs)?;
    let run_id = match run {
        Some(run) => run.to_string(),
        None => store.run_ids()?.pop().ok_or_else(no_runs)?,
    };
    Ok((store, run_id))
}

/// A run's records; an unknown run is an error rather than an empty report.
fn run_records(store: &FileStore, run_id: &str) -> Result<Vec<StepRecord>> {
    let records = store.run(run_id)?;
    if records.is_empty() {
        bail!(Error::UnknownRun { run_id: run_id.into() });
    }
    Ok(records)
}

/// Writes the result to stdout; a reader that stops early (`| head`) is not an error.
fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(e).context("cannot write to stdout"),
        _ => Ok(()),
    }
}
