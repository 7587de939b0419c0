//! `cargo xtask pipeline`: source → diff → tests of the affected components → gate → report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use source_diff::{BaseRequest, Components, Repo};
use status_report::{FileStore, GatePolicy, RunReport, Step, Store};
use step_runner::{Runner, RunnerSettings};

use crate::progress::Progress;

/// Options of `cargo xtask pipeline`.
#[derive(clap::Args, Default)]
pub struct PipelineArgs {
    /// The monorepo [default: a git copy of fixtures/monorepo under target/sample-monorepo].
    #[arg(long)]
    repo: Option<PathBuf>,
    /// The base revision (default: last successful run, merge-base, HEAD~1, empty tree).
    #[arg(long)]
    base: Option<String>,
    /// The head revision.
    #[arg(long)]
    head: Option<String>,
    /// Count uncommitted and untracked changes too.
    #[arg(long)]
    include_worktree: bool,
    /// In a shallow clone that lacks the base, mark every component changed instead of failing.
    #[arg(long)]
    all_on_missing_base: bool,
    /// Print what would run and stop.
    #[arg(long)]
    dry_run: bool,
}

/// The sections of `pipeline.toml` this workspace's crates own; any other top-level key is a mistake.
const KNOWN_SECTIONS: &[&str] =
    &["diff", "components", RunnerSettings::SECTION, GatePolicy::SECTION, "lambda", "validate"];

/// Runs the pipeline; `Ok(false)` when the gate refuses.
pub fn run(args: PipelineArgs) -> anyhow::Result<bool> {
    let root = crate::workspace_root();
    let python_bin = crate::python::ensure(&root)?;
    let repo_dir = match &args.repo {
        Some(dir) => dir.clone(),
        None => prepare_sample(&root)?,
    };
    let repo = Repo::open(&repo_dir)?;
    let config = repo.root().join(pipeline_config::FILE_NAME);
    check_sections(&config)?;
    let components = Components::load(&config)?;
    let settings: RunnerSettings = pipeline_config::load_section(&config, RunnerSettings::SECTION)?;
    let policy: GatePolicy = pipeline_config::load_section(&config, GatePolicy::SECTION)?;
    let head_rev = args.head.clone().unwrap_or_else(|| "HEAD".into());

    let state_dir = repo.root().join(pipeline_config::STATE_DIR);
    let store = FileStore::open(&state_dir)?;
    let progress = Progress::new();
    let last_success = if args.base.is_none() { store.last_success()?.map(|m| m.commit) } else { None };
    let request =
        BaseRequest { explicit: args.base.clone(), last_success, all_on_missing_base: args.all_on_missing_base };
    if args.dry_run {
        // Plans only: no run is recorded and nothing runs.
        let diff = source_diff::diff(&repo, &components, &request, &head_rev, args.include_worktree)?;
        let run_dir = status_report::RunDir { run_id: "dry-run".into(), path: state_dir.join("runs/dry-run") };
        let validate_settings: validate::ValidateSettings =
            pipeline_config::load_section(&config, validate::ValidateSettings::SECTION)?;
        let validate_plan = validate::plan(&validate_settings, &components, &diff, &repo.tracked_files()?)?;
        println!("diff: {}", diff.summary());
        print!("validate: {}", validate_plan.describe());
        print!("{}", step_runner::plan(Step::Test, &components, &diff, &run_dir, &settings).describe());
        return Ok(true);
    }
    let (run_dir, diff) =
        source_diff::begin_run(&repo, &components, &request, &head_rev, args.include_worktree, &store, &state_dir)?;
    let run_id = run_dir.run_id.clone();
    let head = diff.head.clone();
    progress.stage(&format!("run {run_id} in {}", repo.root().display()));
    progress.stage(&format!("diff: {}", diff.summary()));
    let plan = step_runner::plan(Step::Test, &components, &diff, &run_dir, &settings);
    static CANCEL: AtomicBool = AtomicBool::new(false);
    // A second handler cannot be installed (xtask test runs the pipeline once); that is fine.
    let _ = ctrlc::set_handler(|| CANCEL.store(true, Ordering::SeqCst));

    // Validate: a failure is recorded and refuses the gate, but the tests still run so one
    // pipeline run tells everything that is wrong.
    let validated = status_report::record_pipeline_step(&store, &run_id, &head, Step::Validate, || {
        validate_stage(&repo, &config, &components, &diff, &run_dir, &python_bin, &CANCEL)
    })?;
    match &validated {
        Ok(()) => progress.stage("validate: clean"),
        Err(error) => progress.stage(&format!("validate: {error:#}")),
    }

    let runner = Runner {
        workdir: repo.root().to_path_buf(),
        parallelism: settings.parallelism(),
        path_prefix: vec![python_bin],
        cancel: &CANCEL,
    };
    progress.stage(&format!("test: {} to run, {} skipped", plan.jobs.len(), plan.skipped.len()));
    step_runner::run_step(&store, &run_id, &head, &plan, &runner, &|event| progress.job("test", &event))?;

    let records = store.run(&run_id)?;
    let gate = status_report::decide(&records, &policy);
    let report = RunReport::new(&run_id, records, gate);
    status_report::write_atomic(&run_dir.path.join("report.md"), report.to_markdown().as_bytes())?;
    status_report::write_atomic(&run_dir.path.join("report.json"), report.to_json().as_bytes())?;
    status_report::write_atomic(&run_dir.path.join("junit.xml"), report.to_junit().as_bytes())?;
    print!("{}", report.to_table());
    println!("reports: {}", run_dir.path.display());
    Ok(report.gate.allowed)
}

fn check_sections(config: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    for (key, span) in pipeline_config::top_level_keys(config, &text)? {
        if !KNOWN_SECTIONS.contains(&key.as_str()) {
            bail!(pipeline_config::ConfigError::at(
                config,
                &text,
                span,
                key,
                format!("unknown section; expected one of: {}", KNOWN_SECTIONS.join(", "))
            ));
        }
    }
    Ok(())
}

/// The Validate stage: native template checks, secrets, and the tools of changed components.
fn validate_stage(
    repo: &Repo,
    config: &Path,
    components: &Components,
    diff: &source_diff::DiffReport,
    run_dir: &status_report::RunDir,
    python_bin: &Path,
    cancel: &AtomicBool,
) -> anyhow::Result<((), String)> {
    let settings: validate::ValidateSettings =
        pipeline_config::load_section(config, validate::ValidateSettings::SECTION)?;
    let root = repo.root();
    let plan = validate::plan(&settings, components, diff, &repo.tracked_files()?)?;
    let cache = root.join(pipeline_config::STATE_DIR).join("cache");
    // The pinned tools (cfn-lint) live in the tools' virtual environment.
    let prefix = [python_bin.to_path_buf()];
    let log_dir = run_dir.path.join("logs");
    let options = validate::ApplyOptions {
        cache_dir: Some(&cache),
        tools: true,
        tool_path_prefix: &prefix,
        log_dir: &log_dir,
        cancel,
    };
    let findings = validate::apply(root, &settings, &plan, options)?;
    status_report::write_atomic(&run_dir.path.join("validate.json"), validate::report::json(&findings).as_bytes())?;
    let failing: Vec<&validate::Finding> = findings.iter().filter(|f| f.severity >= settings.fail_on).collect();
    if let Some(first) = failing.first() {
        bail!(
            "{} finding(s) at or above {:?}, first {}:{}:{}: {} {}",
            failing.len(),
            settings.fail_on,
            first.path,
            first.pos.line,
            first.pos.column,
            first.rule,
            first.message
        );
    }
    Ok((
        (),
        format!(
            "{} template(s), {} file(s) scanned, {} tool(s): {} finding(s) below {:?}",
            plan.templates.len(),
            plan.secret_files.len(),
            plan.tools.len(),
            findings.len(),
            settings.fail_on
        ),
    ))
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
