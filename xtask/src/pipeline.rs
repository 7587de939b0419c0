//! `cargo xtask pipeline`: the `pipeline` crate's run (the stages in order and the rules
//! between them) with what only a command line has: the flags, the sample playground, the
//! worktree a run's commit is checked out in, the embedded emulator, the approval prompt, and
//! the rendering of the run's events and reports.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use pipeline::{Decision, Start, Target};
use run_state::{RunDir, RunFile, StageContext, StageOptions, Step};
use source_diff::{BaseRequest, Repo};

use crate::progress::Progress;

/// Where the deploys go.
#[derive(clap::ValueEnum, Clone, Copy, Default, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// The monorepo's own emulator (moto), started when a run first needs it and kept for later runs.
    #[default]
    Emulator,
    /// AWS through the ordinary credential chain; the account and region are printed before anything changes.
    Aws,
}

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
    /// Where the deploys go. Real AWS only when asked for here, never because credentials
    /// happen to be in the environment.
    #[arg(long, value_enum, default_value_t)]
    pub target: TargetKind,
    /// Deploy to an emulator already running at this URL instead of the monorepo's own.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Approve production for this run without asking (scripted runs).
    #[arg(long, conflicts_with = "refuse")]
    pub approve: bool,
    /// Refuse production for this run: recorded, and nothing reaches production.
    #[arg(long)]
    pub refuse: bool,
    /// Who approves or refuses, as recorded [default: $USER].
    #[arg(long, value_name = "NAME")]
    pub approver: Option<String>,
    /// The status store: `file` (the state folder's) or `dynamodb://TABLE` [default: `[store]` in
    /// pipeline.toml, else file]. In the emulator the table is created first.
    #[arg(long, value_name = "file|dynamodb://TABLE")]
    pub store: Option<String>,
    /// Continue a run that stopped at approval, without redoing its earlier stages.
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = ["base", "head", "include_worktree", "all_on_missing_base", "dry_run"])]
    pub resume: Option<String>,
}

/// A resumed run goes on only against the emulator its dev deploy went to: a later emulator
/// (even on the same port) does not hold what it deployed, and its E2E, site check and
/// promotion would be checks of something else.
fn check_emulator_kept(run: &RunDir, state_dir: &Path) -> anyhow::Result<()> {
    let used: serde_json::Value = match run.read_json(RunFile::Emulator) {
        Ok(used) => used,
        // The run deployed nothing to the embedded emulator: nothing of it to lose.
        Err(run_state::Error::MissingInput { .. }) => return Ok(()),
        Err(other) => return Err(other.into()),
    };
    let id = used.get("id").and_then(serde_json::Value::as_str).unwrap_or_default();
    let why = match crate::embedded::inspect(state_dir) {
        crate::embedded::Found::Alive(instance) if instance.id == id => return Ok(()),
        crate::embedded::Found::Alive(instance) => {
            format!("the emulator at {} is a later one than the one it deployed to", instance.endpoint)
        }
        crate::embedded::Found::Missing => {
            "the monorepo's emulator is no longer running (stopped, or idle for 15 minutes)".to_string()
        }
        crate::embedded::Found::Gone(why) => why,
    };
    bail!(
        "run {} cannot be resumed: {why}, so its dev deploy is gone and there is nothing to check or promote; start a new run with `cargo xtask pipeline`",
        run.run_id
    )
}

/// Runs the pipeline; `Ok(false)` when the run ends refused (a failure, a refused gate or a
/// refused approval), `Ok(true)` when it passed, had nothing to do, or waits for approval.
pub fn run(args: PipelineArgs) -> anyhow::Result<bool> {
    let repo_dir = match &args.repo {
        Some(dir) => dir.clone(),
        None => prepare_sample(&crate::workspace_root())?,
    };
    let mut context =
        StageContext::open(&StageOptions { repo: Some(repo_dir), store: args.store.clone(), ..Default::default() })?;
    let (components, settings, policy) = pipeline::check_config(&context)?;
    if args.target == TargetKind::Aws && args.endpoint_url.is_some() {
        bail!("--endpoint-url names an emulator: drop it to deploy to AWS, or drop --target aws");
    }
    // The embedded emulator as it is before this run starts one: when it is not there, what
    // earlier runs deployed is gone with it.
    let embedded = (args.target == TargetKind::Emulator && args.endpoint_url.is_none())
        .then(|| crate::embedded::inspect(&context.state_dir));
    connect_store(&mut context, &args)?;
    let repo = Repo::at_root(&context.root);
    let head_rev = args.head.clone().unwrap_or_else(|| "HEAD".into());
    let request = base_request(&args, &context, &components, embedded.as_ref())?;
    if args.dry_run {
        let plan =
            pipeline::dry_run(&context, &repo, &components, &settings, &request, &head_rev, args.include_worktree)?;
        print!("{plan}");
        return Ok(true);
    }

    let store = context.store()?;
    let progress = Progress::new();
    // One pipeline at a time on a repository: the lock first, so a refused run leaves nothing.
    let holder = format!("`cargo xtask pipeline` in {} (pid {})", context.root.display(), std::process::id());
    let _lock = pipeline::PipelineLock::take(store.as_ref(), &holder)?;
    // Source and diff, or the run waiting for approval.
    let (run_dir, diff) = match &args.resume {
        None => source_diff::begin_run(
            &repo,
            &components,
            &request,
            &head_rev,
            args.include_worktree,
            &store,
            &context.state_dir,
        )?,
        Some(run_id) => {
            let resumed = pipeline::resume(&context, store.as_ref(), run_id)?;
            if embedded.is_some() {
                check_emulator_kept(&resumed.0, &context.state_dir)?;
            }
            resumed
        }
    };
    progress.stage(&format!("run {} in {}", run_dir.run_id, context.root.display()));
    progress.stage(&format!("diff: {}", diff.summary()));

    let start = if args.resume.is_some() { Start::Resumed } else { Start::New };
    let (worktree, stage_context) = stage_tree(&context, &store, &run_dir, &diff, &progress)?;
    // The emulator is started (or found) only when a deploy needs it.
    let target = || target(&args, &context, &run_dir, &progress);
    let by = approver(args.approver.as_deref(), &stage_context.root);
    let approve = |shown: &str| decide(&args, &by, shown);
    let on_event = |event: pipeline::Event<'_>| match event {
        pipeline::Event::Line(line) => progress.stage(&line),
        pipeline::Event::Job(step, job) => progress.job(step.as_str(), job),
        pipeline::Event::Status(report) => print_report(report, &run_dir),
    };
    let inputs = pipeline::Inputs {
        context: &stage_context,
        run: &run_dir,
        store: store.as_ref(),
        diff: &diff,
        policy: &policy,
        cancel: run_state::cli::cancel_flag(),
        resume_hint: "cargo xtask pipeline --resume",
        on_event: &on_event,
    };
    let passed = pipeline::run(&inputs, start, &target, &approve)?;
    end_of_run(&args, &context, &inputs, passed)?;
    drop(worktree);
    Ok(passed)
}

/// Where the diff starts: `--base`, else the base environment's last success (while the
/// emulator it deployed to still holds it; else everything again).
fn base_request(
    args: &PipelineArgs,
    context: &StageContext,
    components: &source_diff::Components,
    embedded: Option<&crate::embedded::Found>,
) -> anyhow::Result<BaseRequest> {
    let last_success = match (&args.base, context.existing_store()?) {
        (None, Some(store)) => store.last_success(components.base_environment())?.map(|m| m.commit),
        _ => None,
    };
    let gone = "so what earlier runs deployed is gone: every component is deployed again";
    let everything = match (embedded, &last_success) {
        (Some(crate::embedded::Found::Missing), Some(_)) => {
            Some(format!("the monorepo's emulator is not running (stopped, or idle for 15 minutes), {gone}"))
        }
        (Some(crate::embedded::Found::Gone(why)), Some(_)) => Some(format!("{why}, {gone}")),
        _ => None,
    };
    Ok(BaseRequest {
        explicit: args.base.clone(),
        last_success,
        all_on_missing_base: args.all_on_missing_base,
        everything,
    })
}

/// The stages see the tree of the commit they record: the checkout itself when it is that
/// commit, clean, else a clean worktree of it (removed when the returned guard drops).
fn stage_tree(
    context: &StageContext,
    store: &std::sync::Arc<dyn run_state::Store>,
    run_dir: &RunDir,
    diff: &source_diff::DiffReport,
    progress: &Progress,
) -> anyhow::Result<(Option<Worktree>, StageContext)> {
    let worktree = match context.check_tree(&diff.head, diff.worktree) {
        Ok(_) => return Ok((None, context.clone())),
        Err(run_state::Error::TreeMismatch { reason, .. }) => {
            let path = context.state_dir.join("worktrees").join(&run_dir.run_id);
            progress.stage(&format!("{reason}: the stages run in a clean worktree at {}", path.display()));
            Worktree::add(&context.root, &path, &diff.head)?
        }
        Err(other) => return Err(other.into()),
    };
    let mut stage_context = StageContext::open(&StageOptions {
        repo: Some(worktree.path.clone()),
        config: None,
        state_dir: Some(context.state_dir.clone()),
        store: Some(context.store_choice.to_string()),
    })?;
    stage_context.set_store(store.clone());
    Ok((Some(worktree), stage_context))
}

/// Where the deploys go: AWS, `--endpoint-url`, or the monorepo's own emulator (started or
/// found now, and named in the run so a resume can tell it is still the same one).
fn target(
    args: &PipelineArgs,
    context: &StageContext,
    run_dir: &RunDir,
    progress: &Progress,
) -> Result<Target, pipeline::Error> {
    Ok(match (args.target, &args.endpoint_url) {
        (TargetKind::Aws, _) => Target::Aws,
        (TargetKind::Emulator, Some(url)) => Target::Emulator(url.clone()),
        (TargetKind::Emulator, None) => {
            let emulator = crate::embedded::endpoint(&context.state_dir)
                .map_err(|e| pipeline::Error::Caller { what: "the monorepo's emulator", source: e.into() })?;
            progress.stage(&emulator.describe());
            let instance = &emulator.instance;
            let used = serde_json::json!({ "endpoint": instance.endpoint, "id": instance.id });
            run_dir.write(RunFile::Emulator, used.to_string().as_bytes())?;
            Target::Emulator(emulator.instance.endpoint)
        }
    })
}

/// Approval: `--approve`/`--refuse`, else the prompt on a terminal, else waiting.
fn decide(args: &PipelineArgs, by: &str, shown: &str) -> Result<Decision, pipeline::Error> {
    let by = by.to_string();
    Ok(if args.approve {
        Decision::Approved { by, how: "--approve" }
    } else if args.refuse {
        Decision::Refused { by, how: "--refuse" }
    } else if can_prompt() {
        let yes =
            prompt(shown).map_err(|e| pipeline::Error::Caller { what: "the approval prompt", source: e.into() })?;
        if yes { Decision::Approved { by, how: "prompt" } } else { Decision::Refused { by, how: "prompt" } }
    } else {
        Decision::Waiting
    })
}

/// The run's reports (the steps after the status check printed; its table was printed with
/// every failure) and its notification.
fn end_of_run(
    args: &PipelineArgs,
    context: &StageContext,
    inputs: &pipeline::Inputs<'_>,
    passed: bool,
) -> anyhow::Result<()> {
    let report = pipeline::write_report(inputs.store, inputs.run, inputs.policy)?;
    for record in report.steps.iter().filter(|r| r.step >= Step::Approval) {
        let text = record.details.error.as_deref().or(record.details.note.as_deref()).unwrap_or_default();
        println!("{} {}: {} {text}", record.component, record.step, record.status);
    }
    let emulator = match (args.target, &args.endpoint_url) {
        (TargetKind::Aws, _) => None,
        (TargetKind::Emulator, Some(url)) => Some(url.clone()),
        (TargetKind::Emulator, None) => crate::embedded::running(&context.state_dir),
    };
    if let Some(sent) = pipeline::notify(context, emulator.as_deref(), &report, passed)? {
        println!("notified {} to {} (message {})", sent.event, sent.topic, sent.message_id);
    }
    Ok(())
}

/// The status check's report: a table fitted to the terminal, else a line per step (the full
/// text is in report.md).
fn print_report(report: &status_report::RunReport, run_dir: &run_state::RunDir) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        print!("{}", report.to_table())
    } else {
        print!("{}", report.to_lines())
    }
    println!("reports: {}", run_dir.path.display());
}

/// Connects a DynamoDB status store before anything is recorded (the file store needs nothing):
/// in AWS through the ordinary chain, in the emulator (the monorepo's own, or `--endpoint-url`)
/// with its table created as `cfn/pipeline.yaml` makes it in AWS.
fn connect_store(context: &mut StageContext, args: &PipelineArgs) -> anyhow::Result<()> {
    let run_state::StoreChoice::DynamoDb { table } = context.store_choice.clone() else { return Ok(()) };
    if args.target == TargetKind::Aws {
        context.connect_store(&aws_target::Target::default())?;
        return Ok(());
    }
    let endpoint = match &args.endpoint_url {
        Some(url) => url.clone(),
        None => {
            let emulator = crate::embedded::endpoint(&context.state_dir)?;
            crate::say(&emulator.describe());
            emulator.instance.endpoint
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let config = runtime.block_on(async {
        let config = pipeline::emulator_config(&endpoint).await?;
        crate::embedded::status_table(&config, &table).await?;
        anyhow::Ok(config)
    })?;
    let store = run_state::DynamoStore::new(&config, &table)?;
    store.check()?;
    context.set_store(std::sync::Arc::new(store));
    Ok(())
}

/// Who answers: `--approver`, else the user name, else the repository's git identity.
pub fn approver(given: Option<&str>, repo: &std::path::Path) -> String {
    let git = |key: &str| {
        let out = std::process::Command::new("git").arg("-C").arg(repo).args(["config", key]).output().ok()?;
        let value = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !value.is_empty()).then_some(value)
    };
    given
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .or_else(|| git("user.email"))
        .or_else(|| git("user.name"))
        .unwrap_or_else(|| "unknown".into())
}

/// Whether a person can be asked (stdin and stderr are a terminal).
pub fn can_prompt() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Shows what production will receive and asks; `true` for yes.
#[allow(clippy::print_stderr)]
pub fn prompt(what: &str) -> anyhow::Result<bool> {
    eprintln!("\nProduction will receive:\n{what}");
    loop {
        eprint!("Deploy this to production? [yes/no] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer)? == 0 {
            return Ok(false);
        }
        match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "n" | "no" => return Ok(false),
            _ => eprintln!("answer yes or no"),
        }
    }
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

/// Where `cargo xtask pipeline` keeps its git copy of `fixtures/monorepo` (under the workspace).
pub const SAMPLE_DIR: &str = "target/sample-monorepo";

/// The subject of the commits that sync the sample from the fixture; the fixture's fingerprint
/// follows in parentheses.
const SYNC_SUBJECT: &str = "sync from fixtures/monorepo";

/// Keeps [`SAMPLE_DIR`] a git repository holding `fixtures/monorepo` as it is now, as a
/// playground: commits (and edits) made there are kept while the fixture has not changed since
/// the last sync; when both changed, the run refuses rather than overwrite them, and says where
/// to edit.
fn prepare_sample(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join(SAMPLE_DIR);
    sync_sample(&root.join("fixtures/monorepo"), &dir)?;
    Ok(dir)
}

/// [`prepare_sample`] for a fixture and a copy anywhere.
fn sync_sample(fixture: &Path, dir: &Path) -> anyhow::Result<()> {
    let git = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "xtask")
            .env("GIT_AUTHOR_EMAIL", "xtask@localhost")
            .env("GIT_COMMITTER_NAME", "xtask")
            .env("GIT_COMMITTER_EMAIL", "xtask@localhost")
            .output()?;
        if !out.status.success() {
            bail!("git {} in {}: {}", args.join(" "), dir.display(), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let fingerprint = fixture_fingerprint(fixture)?;
    let subject = format!("{SYNC_SUBJECT} (fixture {fingerprint})");
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(dir)?;
        git(&["init", "-q", "-b", "main"])?;
    } else if git(&["rev-parse", "--verify", "--quiet", "HEAD"]).is_ok() {
        let last_sync = git(&["log", "-1", "--format=%H%n%s", "--fixed-strings", "--grep", SYNC_SUBJECT])?;
        let (sync_commit, sync_subject) = last_sync.split_once('\n').unwrap_or((last_sync.as_str(), ""));
        let own = if sync_commit.is_empty() {
            git(&["rev-list", "--count", "HEAD"])?
        } else {
            git(&["rev-list", "--count", &format!("{sync_commit}..HEAD")])?
        };
        let own: usize = own.parse().unwrap_or(0);
        let edited = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
        if own > 0 || edited {
            let yours = match (own, edited) {
                (0, _) => "uncommitted edits".to_string(),
                (n, false) => format!("{n} commit(s) of yours"),
                (n, true) => format!("{n} commit(s) of yours and uncommitted edits"),
            };
            if sync_subject == subject {
                crate::say(&format!(
                    "{SAMPLE_DIR}: {yours} since the last sync from fixtures/monorepo kept (the fixture has not changed since)"
                ));
                return Ok(());
            }
            bail!(
                "{SAMPLE_DIR} has {yours}, and fixtures/monorepo changed since it was last synced: make the change in fixtures/monorepo (the sample's source) and remove {SAMPLE_DIR}, or run on your copy as it is with `--repo {SAMPLE_DIR}`"
            );
        }
        if sync_subject == subject {
            return Ok(());
        }
    }
    // Mirror the fixture: drop what the last sync put there, keep .git and the pipeline's state.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || name == ".pipeline" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() { std::fs::remove_dir_all(&path)? } else { std::fs::remove_file(&path)? }
    }
    // The fixture's own .gitignore keeps build output and caches out of the commit.
    crate::run(Command::new("cp").arg("-R").arg(fixture.join(".")).arg(dir))?;
    git(&["add", "-A"])?;
    // Always a commit, empty when only the fingerprint is new: the last sync commit says which
    // state of the fixture the sample holds.
    git(&["commit", "-q", "--allow-empty", "-m", &subject])?;
    Ok(())
}

/// A short digest of every file under the fixture (paths and contents, in order).
fn fixture_fingerprint(fixture: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for entry in walkdir::WalkDir::new(fixture).sort_by_file_name() {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(fixture)?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(entry.path()).with_context(|| entry.path().display().to_string())?);
        hasher.update([0]);
    }
    Ok(hex::encode(&hasher.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@localhost")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@localhost")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The sample as a playground: a user's commits and edits survive the next run while the
    /// fixture is unchanged; when both changed, the sync refuses and names where to edit; a
    /// copy with nothing of the user's follows the fixture.
    #[test]
    fn the_sample_keeps_your_commits_or_refuses_to_overwrite_them() {
        let fixture = tempfile::tempdir().unwrap();
        let copy = tempfile::tempdir().unwrap();
        let dir = copy.path().join("sample");
        std::fs::write(fixture.path().join("a.txt"), "1\n").unwrap();
        sync_sample(fixture.path(), &dir).unwrap();
        let synced = git(&dir, &["rev-parse", "HEAD"]);
        sync_sample(fixture.path(), &dir).unwrap();
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), synced, "nothing new to sync: no commit");

        // Your commit, and an uncommitted edit: kept.
        std::fs::write(dir.join("a.txt"), "mine\n").unwrap();
        git(&dir, &["commit", "-q", "-am", "my change"]);
        let mine = git(&dir, &["rev-parse", "HEAD"]);
        std::fs::write(dir.join("a.txt"), "mine, not committed\n").unwrap();
        sync_sample(fixture.path(), &dir).unwrap();
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), mine);
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "mine, not committed\n");

        // The fixture changed too: refused, nothing overwritten.
        std::fs::write(fixture.path().join("b.txt"), "2\n").unwrap();
        let error = sync_sample(fixture.path(), &dir).unwrap_err().to_string();
        assert!(error.contains("1 commit(s) of yours and uncommitted edits"), "{error}");
        assert!(error.contains("make the change in fixtures/monorepo"), "{error}");
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "mine, not committed\n");
        assert!(!dir.join("b.txt").exists());

        // Back to what the sync left: the fixture's change arrives.
        git(&dir, &["reset", "-q", "--hard", &synced]);
        sync_sample(fixture.path(), &dir).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("b.txt")).unwrap(), "2\n");
        assert_eq!(std::fs::read_to_string(dir.join("a.txt")).unwrap(), "1\n");
    }
}
