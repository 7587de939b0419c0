//! `source-diff`: which components changed, for CI and for people.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use source_diff::{BaseRequest, Components, Repo};
use status_report::{FileStore, Store};

/// Prints which components of a monorepo changed between two commits, and the flags that follow.
///
/// Exit codes: 0 success (also when nothing changed), 2 usage, configuration, git or I/O error.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: pipeline_config::StageArgs,
    /// The base revision; without it: last successful run, merge-base with the default branch, HEAD~1, empty tree.
    #[arg(long)]
    base: Option<String>,
    /// The head revision.
    #[arg(long, default_value = "HEAD")]
    head: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Add uncommitted and untracked changes (for local runs).
    #[arg(long)]
    include_worktree: bool,
    /// In a shallow clone that does not reach the base, mark every component changed instead of failing.
    #[arg(long)]
    all_on_missing_base: bool,
    /// Start a pipeline run: create its folder under the state dir, write diff.json there,
    /// and record the source and diff steps, so later stage binaries find them.
    #[arg(long)]
    new_run: bool,
    /// Write the output to this file (atomically) instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// The full report.
    Json,
    /// `NAME_tests_required=true` lines.
    Env,
    /// Lines for `$GITHUB_OUTPUT`, with a JSON array of changed components.
    Github,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("source-diff: {error:#}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let repo = Repo::open(&args.stage.repo)?;
    let config = args.stage.config_path(repo.root());
    let components = Components::load(&config)?;
    let state_dir = args.stage.state_dir(repo.root());
    let last_success = if args.base.is_none() && state_dir.join(FileStore::FILE_NAME).is_file() {
        FileStore::open(&state_dir)?.last_success()?.map(|mark| mark.commit)
    } else {
        None
    };
    let request = BaseRequest { explicit: args.base, last_success, all_on_missing_base: args.all_on_missing_base };
    let report = if args.new_run {
        let store = FileStore::open(&state_dir)?;
        let (run_dir, report) = source_diff::begin_run(
            &repo,
            &components,
            &request,
            &args.head,
            args.include_worktree,
            &store,
            &state_dir,
        )?;
        #[allow(clippy::print_stderr)]
        {
            eprintln!("source-diff: run {} in {}: {}", run_dir.run_id, run_dir.path.display(), report.summary());
        }
        report
    } else {
        source_diff::diff(&repo, &components, &request, &args.head, args.include_worktree)?
    };
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Env => source_diff::render_env(&report),
        Format::Github => source_diff::render_github(&report),
    };
    match args.output {
        Some(path) => status_report::write_atomic(&path, text.as_bytes()).with_context(|| "writing the output")?,
        None => {
            use std::io::Write;
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    Ok(())
}
