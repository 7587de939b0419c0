//! `cargo xtask pipeline`: the stages in order and the rules between them. Each stage is its
//! crate's library function, the same one its binary calls, and records its own step.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use run_state::{RunDir, RunFile, StageContext, StageOptions, Step, Store};
use source_diff::{BaseRequest, Components, Repo};
use status_report::{GatePolicy, RunReport};
use step_runner::RunnerSettings;

use crate::progress::Progress;

/// Options of `cargo xtask pipeline`.
#[derive(clap::Args, Default, Clone)]
pub struct PipelineArgs {
    /// The monorepo [default: a git copy of fixtures/monorepo under target/sample-monorepo].
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// The base revision (default: last successful run, merge-base, HEAD~1, empty tree).
    #[arg(long)]
    pub base: Option<String>,
    /// The head revision; when it is not the checked-out commit, the stages run in a clean
    /// worktree of it.
    #[arg(long)]
    pub head: Option<String>,
    /// Count uncommitted and untracked changes too (and test the work tree as it is).
    #[arg(long)]
    pub include_worktree: bool,
    /// In a shallow clone that lacks the base, mark every component changed instead of failing.
    #[arg(long)]
    pub all_on_missing_base: bool,
    /// Print what would run and stop: nothing is installed, recorded or run.
    #[arg(long)]
    pub dry_run: bool,
}

/// Every section's content, checked before any stage runs: a mistake is exit 2, never a
/// refused gate half way through a run.
fn check_config(context: &StageContext) -> anyhow::Result<(Components, RunnerSettings, GatePolicy)> {
    let config = context.required_config()?;
    let components = Components::from_config(config)?;
    let settings: RunnerSettings = config.section(RunnerSettings::SECTION)?;
    let policy: GatePolicy = config.section(GatePolicy::SECTION)?;
    validate::ValidateSettings::from_config(config)?;
    lambda_packager::LambdaSettings::from_config(config)?;
    Ok((components, settings, policy))
}

/// Runs the pipeline; `Ok(false)` when the gate refuses.
pub fn run(args: PipelineArgs) -> anyhow::Result<bool> {
    let root = crate::workspace_root();
    let repo_dir = match &args.repo {
        Some(dir) => dir.clone(),
        None => prepare_sample(&root)?,
    };
    let context = StageContext::open(&StageOptions { repo: Some(repo_dir), ..Default::default() })?;
    let (components, settings, policy) = check_config(&context)?;
    let repo = Repo::at_root(&context.root);
    let head_rev = args.head.clone().unwrap_or_else(|| "HEAD".into());
    let last_success = match (&args.base, context.existing_store()?) {
        (None, Some(store)) => store.last_success(components.base_environment())?.map(|m| m.commit),
        _ => None,
    };
    let request =
        BaseRequest { explicit: args.base.clone(), last_success, all_on_missing_base: args.all_on_missing_base };

    if args.dry_run {
        return dry_run(&context, &repo, &components, &settings, &request, &head_rev, args.include_worktree);
    }

    let store = context.store()?;
    let progress = Progress::new();
    let cancel = run_state::cli::cancel_flag();

    // Source and diff.
    let (run_dir, diff) = source_diff::begin_run(
        &repo,
        &components,
        &request,
        &head_rev,
        args.include_worktree,
        &store,
        &context.state_dir,
    )?;
    progress.stage(&format!("run {} in {}", run_dir.run_id, context.root.display()));
    progress.stage(&format!("diff: {}", diff.summary()));

    // The stages see the tree of the commit they record: the checkout itself when it is that
    // commit, clean, else a clean worktree of it.
    let worktree = match context.check_tree(&diff.head, diff.worktree) {
        Ok(_) => None,
        Err(run_state::Error::TreeMismatch { reason, .. }) => {
            let path = context.state_dir.join("worktrees").join(&run_dir.run_id);
            progress.stage(&format!("{reason}: the stages run in a clean worktree at {}", path.display()));
            Some(Worktree::add(&context.root, &path, &diff.head)?)
        }
        Err(other) => return Err(other.into()),
    };
    let stage_context = match &worktree {
        Some(worktree) => StageContext::open(&StageOptions {
            repo: Some(worktree.path.clone()),
            config: None,
            state_dir: Some(context.state_dir.clone()),
            store: Some(context.store_choice.to_string()),
        })?,
        None => context.clone(),
    };

    // Validate: a failure refuses the gate, but the tests still run so one run tells
    // everything that is wrong.
    let options = validate::StageOptions { tools: true, cache: true, all: false, cancel };
    match validate::run_stage(&stage_context, Some((&run_dir, &store)), options) {
        Ok(outcome) => progress.stage(&format!("validate: {}", outcome.summary())),
        Err(error) => progress.stage(&format!("validate: {}", run_state::error_chain(&error))),
    }

    // Tests of the changed components.
    let tested = step_runner::run_stage(&stage_context, &run_dir, &store, Step::Test, None, cancel, &|event| {
        progress.job("test", &event)
    });
    match tested {
        Ok(done) => progress.stage(&format!("test: {} run, {} skipped", done.plan.jobs.len(), done.plan.skipped.len())),
        Err(error) => progress.stage(&format!("test: {}", run_state::error_chain(&error))),
    }

    // The gate, from what the diff required and what was recorded; then the reports.
    let allowed = report(&store, &run_dir, &policy)?;
    drop(worktree);
    Ok(allowed)
}

/// Decides the gate and writes the run's reports; prints the table.
fn report(store: &dyn Store, run_dir: &RunDir, policy: &GatePolicy) -> anyhow::Result<bool> {
    let (records, gate) = status_report::run_gate(store, run_dir, policy, None)?;
    let report = RunReport::new(&run_dir.run_id, records, gate);
    run_dir.write(RunFile::ReportMarkdown, report.to_markdown().as_bytes())?;
    run_dir.write(RunFile::ReportJson, report.to_json().as_bytes())?;
    run_dir.write(RunFile::Junit, report.to_junit().as_bytes())?;
    print!("{}", report.to_table());
    println!("reports: {}", run_dir.path.display());
    Ok(report.gate.allowed)
}

/// Plans every stage and prints the plans: nothing is installed, recorded or run.
fn dry_run(
    context: &StageContext,
    repo: &Repo,
    components: &Components,
    settings: &RunnerSettings,
    request: &BaseRequest,
    head: &str,
    include_worktree: bool,
) -> anyhow::Result<bool> {
    let diff = source_diff::diff(repo, components, request, head, include_worktree)?;
    let mut validate_settings = validate::ValidateSettings::from_config(&context.config)?;
    // The stage reads the repository's .cfnlintrc too; so does its dry run.
    validate_settings.cfnlintrc = validate::cfnlintrc::CfnLintRc::load(&context.root)?;
    let validate_plan = validate::plan(&validate_settings, components, &diff, &repo.tracked_files()?)?;
    // A run folder that is never created: the plan only names the logs it would write.
    let run_dir = RunDir { run_id: "dry-run".into(), path: run_state::runs_dir(&context.state_dir).join("dry-run") };
    println!("diff: {}", diff.summary());
    print!("validate: {}", validate_plan.describe());
    print!("{}", step_runner::plan(Step::Test, components, &diff, &run_dir, settings).describe());
    Ok(true)
}

/// A detached git worktree of one commit, removed when dropped.
struct Worktree {
    repo: PathBuf,
    path: PathBuf,
}

impl Worktree {
    fn add(repo: &Path, path: &Path, commit: &str) -> anyhow::Result<Worktree> {
        let _ = std::fs::remove_dir_all(path);
        let out = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["worktree", "add", "--detach", "--force", "--quiet"])
            .arg(path)
            .arg(commit)
            .output()
            .context("starting git")?;
        if !out.status.success() {
            bail!("git worktree add {} {commit}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(Worktree { repo: repo.to_path_buf(), path: path.to_path_buf() })
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["worktree", "remove", "--force"])
            .arg(&self.path)
            .output();
    }
}

/// Keeps `target/sample-monorepo` a git repository whose last commit holds `fixtures/monorepo` as it is now.
fn prepare_sample(root: &Path) -> anyhow::Result<PathBuf> {
    let fixture = root.join("fixtures/monorepo");
    let dir = root.join("target/sample-monorepo");
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "xtask")
            .env("GIT_AUTHOR_EMAIL", "xtask@localhost")
            .env("GIT_COMMITTER_NAME", "xtask")
            .env("GIT_COMMITTER_EMAIL", "xtask@localhost")
            .output()?;
        if !out.status.success() {
            bail!("git {} in {}: {}", args.join(" "), dir.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(&dir)?;
        git(&["init", "-q", "-b", "main"])?;
    }
    // Mirror the fixture: drop what the last sync put there, keep .git and the pipeline's state.
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || name == ".pipeline" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() { std::fs::remove_dir_all(&path)? } else { std::fs::remove_file(&path)? }
    }
    // The fixture's own .gitignore keeps build output and caches out of the commit.
    crate::run(Command::new("cp").arg("-R").arg(fixture.join(".")).arg(&dir))?;
    git(&["add", "-A"])?;
    if !git(&["status", "--porcelain"])?.trim().is_empty() {
        git(&["commit", "-q", "-m", "sync from fixtures/monorepo"])?;
    }
    Ok(dir)
}
