//! `source-diff`: which components changed, for CI and for people.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use run_state::Store;
use run_state::cli::StageArgs;
use source_diff::{BaseRequest, Components, Repo};

/// Prints which components of a monorepo changed between two commits, and the flags that follow.
///
/// Exit codes: 0 success (also when nothing changed), 2 usage, configuration, git or I/O error.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Where the status store is, when it is DynamoDB (`--store dynamodb://TABLE`).
    #[command(flatten)]
    target: run_state::cli::TargetArgs,
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
    let args = Args::parse();
    run_state::cli::main("source-diff", || run(args).map(|()| true))
}

fn run(args: Args) -> anyhow::Result<()> {
    let context = args.stage.context_on(&args.target.target())?;
    if !context.is_git {
        return Err(source_diff::Error::NotARepo {
            path: context.root.clone(),
            detail: "no .git in it or above it".into(),
        }
        .into());
    }
    let repo = Repo::at_root(&context.root);
    let components = Components::from_config(context.required_config()?)?;
    let last_success = match (&args.base, context.existing_store()?) {
        (None, Some(store)) => store.last_success(components.base_environment())?.map(|mark| mark.commit),
        _ => None,
    };
    let request = BaseRequest {
        explicit: args.base,
        last_success,
        all_on_missing_base: args.all_on_missing_base,
        everything: None,
    };
    let report = if args.new_run {
        let store = context.store()?;
        let (run_dir, report) = source_diff::begin_run(
            &repo,
            &components,
            &request,
            &args.head,
            args.include_worktree,
            &store,
            &context.state_dir,
        )?;
        #[allow(clippy::print_stderr)]
        {
            eprintln!("source-diff: run {} in {}: {}", run_dir.run_id, run_dir.path.display(), report.summary());
        }
        report
    } else {
        source_diff::diff(&repo, &components, &request, &args.head, args.include_worktree)?
    };
    if let Some(warning) = unowned_warning(&report.unowned) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("source-diff: warning: {warning}");
        }
    }
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Env => source_diff::render_env(&report),
        Format::Github => source_diff::render_github(&report),
    };
    match args.output {
        Some(path) => run_state::write_atomic(&path, text.as_bytes())?,
        None => run_state::cli::print(&text)?,
    }
    Ok(())
}

/// One line about changed files no component owns: how many, and the first few.
fn unowned_warning(unowned: &[String]) -> Option<String> {
    const SHOWN: usize = 3;
    let (count, first) = (unowned.len(), unowned.iter().take(SHOWN).map(String::as_str).collect::<Vec<_>>());
    let more = if count > SHOWN { format!(" and {} more", count - SHOWN) } else { String::new() };
    let noun = if count == 1 { "changed file belongs" } else { "changed files belong" };
    (count > 0).then(|| {
        format!(
            "{count} {noun} to no component ({}{more}); add them to a component's paths or ignore this",
            first.join(", ")
        )
    })
}
