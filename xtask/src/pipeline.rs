//! `cargo xtask pipeline`: the stages in order and the rules between them. Each stage is its
//! crate's library function, the same one its binary calls, and records its own step:
//!
//! diff → validate → build (commands, packages) → test → deploy `dev` (stacks, site) → status
//! (the gate, every failure printed) → approval → E2E (commands with `dev`'s outputs) and the
//! site check → deploy `prod` → mark-success.
//!
//! The rules: a deploy (and so the packages, the approval, E2E and production) happens only
//! when a changed component is deployed by a stack or is the site; nothing after the status
//! check runs while it refuses; production only after approval and when every earlier stage
//! passed; one pipeline at a time per repository (the store's lock). A stage nothing requires
//! is recorded skipped with the reason.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use run_state::{PIPELINE, RunDir, RunFile, StageContext, StageOptions, Status, Step, StepRecord, Store};
use source_diff::{BaseRequest, Components, DiffReport, Repo};
use status_report::{GatePolicy, RunReport};
use step_runner::RunnerSettings;

use crate::progress::Progress;
use crate::stages;

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

/// The environments, in order: deployed first, and deployed after approval: the first
/// promotion of `[gate.environments]` (`prod` after `dev`, `prod` after `staging` …), else
/// `dev` then `prod`.
struct Envs {
    first: String,
    prod: String,
}

impl Envs {
    fn of(policy: &GatePolicy) -> Envs {
        let (first, prod) = policy.promotion().unwrap_or(("dev", run_state::DEFAULT_SUCCESS_ENV));
        Envs { first: first.to_string(), prod: prod.to_string() }
    }
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
    if has_section(context, stack_deployer::DeploySettings::SECTION)? {
        stack_deployer::DeploySettings::from_config(config)?;
    }
    frontend_publisher::PublishConfig::from_config(config)?;
    Ok((components, settings, policy))
}

fn has_section(context: &StageContext, name: &str) -> anyhow::Result<bool> {
    let config = context.required_config()?;
    Ok(pipeline_config::top_level_keys(&config.path, &config.text)?.iter().any(|(key, _)| key == name))
}

/// What this run's change asks of the deploy stages (the rules between the stages).
struct Needs {
    /// Why nothing is deployed, when nothing is: no changed component is served by a stack of
    /// `[deploy]` or is the `[publish]` component.
    no_deploy: Option<String>,
    /// Whether the stacks deploy (a changed component is served by one).
    stacks: bool,
    /// The `[publish]` component, when it changed.
    publish: Option<String>,
}

impl Needs {
    fn of(context: &StageContext, diff: &DiffReport, first: &str) -> anyhow::Result<Needs> {
        let changed: BTreeSet<&str> = diff.changed().collect();
        let stacks = has_section(context, stack_deployer::DeploySettings::SECTION)?
            && stages::environment(context, first)?
                .stacks
                .iter()
                .any(|s| s.components.iter().any(|c| changed.contains(c.as_str())));
        let config = context.required_config()?;
        let publish = frontend_publisher::PublishConfig::from_config(config)?
            .map(|p| p.component)
            .filter(|c| changed.contains(c.as_str()));
        let no_deploy = (!stacks && publish.is_none()).then(|| {
            if changed.is_empty() {
                "nothing changed since the base".to_string()
            } else {
                "no changed component is deployed by [deploy] or [publish]".to_string()
            }
        });
        Ok(Needs { no_deploy, stacks, publish })
    }
}

/// One run's stages, with what they share.
struct Stages<'a> {
    context: &'a StageContext,
    run: &'a RunDir,
    store: &'a dyn Store,
    diff: &'a DiffReport,
    policy: &'a GatePolicy,
    envs: &'a Envs,
    progress: &'a Progress,
    runtime: &'a tokio::runtime::Runtime,
}

impl Stages<'_> {
    /// Records a whole-pipeline step as skipped with the reason.
    fn skip(&self, steps: &[Step], reason: &str) -> anyhow::Result<()> {
        for &step in steps {
            self.finish(step, Status::Skipped, reason)?;
            self.progress.stage(&format!("{step}: skipped: {reason}"));
        }
        Ok(())
    }

    /// Records a whole-pipeline step as ended (a note, or the error when it failed).
    fn finish(&self, step: Step, status: Status, text: &str) -> anyhow::Result<()> {
        let mut record = StepRecord::new(&self.run.run_id, &self.diff.head, PIPELINE, step, status);
        record.ended_at = Some(SystemTime::now());
        if status == Status::Failed {
            record.details.error = Some(text.to_string());
        } else {
            record.details.note = Some(text.to_string());
        }
        self.store.record(&record)?;
        Ok(())
    }

    /// Validate: a failure refuses the gate, but the later stages before the gate still run so
    /// one run tells everything that is wrong.
    fn validate(&self) {
        let options =
            validate::StageOptions { tools: true, cache: true, all: false, cancel: run_state::cli::cancel_flag() };
        match validate::run_stage(self.context, Some((self.run, self.store)), options) {
            Ok(outcome) => self.progress.stage(&format!("validate: {}", outcome.summary())),
            Err(error) => self.progress.stage(&format!("validate: {}", run_state::error_chain(&error))),
        }
    }

    /// Build: the changed components' `build` commands, then the Lambda packages when a deploy
    /// will use them.
    fn build(&self, needs: &Needs) -> anyhow::Result<()> {
        self.step(Step::Build, None);
        if !needs.stacks {
            let reason = needs.no_deploy.as_deref().unwrap_or("no stack deploys, so no package is needed");
            return self.skip(&[Step::Build], reason);
        }
        // The functions of changed components (a function is its component's when they share a
        // name), and those no component names; the deploy keeps the others' code as it is.
        let config = self.context.required_config()?;
        let (_, functions) = lambda_packager::LambdaSettings::from_config(config)?;
        let components = Components::from_config(config)?;
        let changed: BTreeSet<&str> = self.diff.changed().collect();
        let only: Vec<String> = functions
            .iter()
            .map(|f| f.name.clone())
            .filter(|name| changed.contains(name.as_str()) || components.get(name).is_none())
            .collect();
        if only.is_empty() {
            return self.skip(&[Step::Build], "no function changed");
        }
        let options = lambda_packager::StageOptions { only, python: None, out: None };
        let packaged = lambda_packager::run_stage(self.context, Some((self.run, self.store)), &options, &|_| {});
        match packaged {
            Ok(manifest) => self.progress.stage(&format!("package: {} function(s)", manifest.packages.len())),
            Err(error) => self.progress.stage(&format!("package: {}", run_state::error_chain(&error))),
        }
        Ok(())
    }

    /// A per-component step (`build`, `test`, `e2e`) through step-runner; whether it passed.
    fn step(&self, step: Step, environment: Option<&str>) -> bool {
        let cancel = run_state::cli::cancel_flag();
        let on_event = |event: step_runner::Event<'_>| self.progress.job(step.as_str(), &event);
        match step_runner::run_stage(self.context, self.run, self.store, step, environment, cancel, &on_event) {
            Ok(done) => {
                self.progress.stage(&format!(
                    "{step}: {} run, {} skipped",
                    done.plan.jobs.len(),
                    done.plan.skipped.len()
                ));
                done.passed()
            }
            Err(error) => {
                self.progress.stage(&format!("{step}: {}", run_state::error_chain(&error)));
                false
            }
        }
    }

    /// The deploy of one environment (its stacks, then the site; each stage skips, and records
    /// why, what did not change).
    fn deploy(&self, target: &stages::Where, env: &str) -> bool {
        let deployed =
            self.runtime.block_on(stages::deploy(self.context, self.run, self.store, target, env, self.progress));
        match deployed {
            Ok(passed) => passed,
            Err(error) => {
                self.progress.stage(&format!("deploy {env}: {error:#}"));
                false
            }
        }
    }

    /// The status check: the gate over everything recorded so far and what the diff required;
    /// the reports written and the table printed with every failure.
    fn status(&self) -> anyhow::Result<bool> {
        report(self.store, self.run, self.policy, true)
    }

    /// Approval: `--approve`/`--refuse`, else the prompt on a terminal, else waiting.
    fn approval(&self, args: &PipelineArgs) -> anyhow::Result<stages::Decision> {
        let by = stages::approver(args.approver.as_deref(), &self.context.root);
        let (shown, digest) = stages::production_view(self.context, self.run, &self.envs.prod);
        let decision = if args.approve {
            stages::Decision::Approved { by, how: "--approve" }
        } else if args.refuse {
            stages::Decision::Refused { by, how: "--refuse" }
        } else if stages::can_prompt() {
            if stages::prompt(&shown)? {
                stages::Decision::Approved { by, how: "prompt" }
            } else {
                stages::Decision::Refused { by, how: "prompt" }
            }
        } else {
            stages::Decision::Waiting
        };
        stages::record_approval(self.store, &self.run.run_id, &self.diff.head, &decision, digest)?;
        Ok(decision)
    }

    /// E2E against the first environment (the configured `e2e` commands with its stack
    /// outputs) and the publisher's site check of the site deployed there.
    fn e2e(&self, target: &stages::Where) -> anyhow::Result<()> {
        self.step(Step::E2e, Some(&self.envs.first));
        self.site_check(target, &self.envs.first)?;
        Ok(())
    }

    /// Production, as the DeployProd buildspec runs it: the deploy stages with production's
    /// target (each asks the promotion decision and records its own `prod-deploy` steps: refused
    /// unless dev, E2E and the approval passed in this run), production's site check, then the
    /// run becomes the next run's base there (`gate::mark_success`, as `status-report
    /// mark-success`). Nothing here records a step of its own.
    fn production(&self, target: &stages::Where) -> anyhow::Result<bool> {
        let prod = &self.envs.prod;
        if !self.deploy(target, prod) {
            self.progress.stage(&format!("the deploy to {prod} failed or was refused; see its prod-deploy steps"));
            return Ok(false);
        }
        if !self.site_check(target, prod)? {
            return Ok(false);
        }
        match status_report::mark_success(self.store, self.run, self.policy, prod) {
            Ok(mark) => {
                self.progress.stage(&format!("{prod} is at {}: the next run's base", mark.commit));
                Ok(true)
            }
            Err(error) => {
                self.progress.stage(&format!("{prod} not marked: {}", run_state::error_chain(&error)));
                Ok(false)
            }
        }
    }

    /// The publisher's site check of `env` (skipped by the publisher, and recorded so, when the
    /// site did not change); whether it let the site through.
    fn site_check(&self, target: &stages::Where, env: &str) -> anyhow::Result<bool> {
        if frontend_publisher::PublishConfig::from_config(self.context.required_config()?)?.is_none() {
            return Ok(true);
        }
        let checked = self.runtime.block_on(stages::site_check(
            self.context,
            self.run,
            self.store,
            target,
            env,
            &self.diff.head,
            self.progress,
        ));
        Ok(checked.unwrap_or_else(|error| {
            self.progress.stage(&format!("site check {env}: {error:#}"));
            false
        }))
    }
}

/// Takes the repository's pipeline lock for this process; released when dropped.
struct PipelineLock<'a> {
    store: &'a dyn Store,
    holder: String,
}

impl<'a> PipelineLock<'a> {
    const NAME: &'static str = "pipeline";
    /// Long enough for a whole run; a run that died leaves it stale after this.
    const TTL: Duration = Duration::from_secs(60 * 60);

    fn take(store: &'a dyn Store, run_id: &str) -> Result<PipelineLock<'a>, run_state::Error> {
        let holder = format!("run {run_id} (pid {})", std::process::id());
        store.acquire_lock(Self::NAME, &holder, Self::TTL)?;
        Ok(PipelineLock { store, holder })
    }
}

impl Drop for PipelineLock<'_> {
    fn drop(&mut self) {
        let _ = self.store.release_lock(Self::NAME, &self.holder);
    }
}

/// The run `--resume` names, which must be waiting for approval.
fn resume_run(context: &StageContext, store: &dyn Store, run_id: &str) -> anyhow::Result<(RunDir, DiffReport)> {
    pipeline_config::check_name(run_id).map_err(|m| anyhow::anyhow!("--resume: {m}"))?;
    let run = RunDir::open(&run_state::runs_dir(&context.state_dir).join(run_id))?;
    let diff: DiffReport = run.read_json(RunFile::Diff)?;
    let records = store.run(run_id)?;
    match records.iter().find(|r| r.component == PIPELINE && r.step == Step::Approval) {
        Some(r) if r.status == Status::Pending => Ok((run, diff)),
        Some(r) => bail!("run {run_id} is not waiting for approval (its approval is {}); start a new run", r.status),
        None => bail!("run {run_id} did not stop at approval; start a new run"),
    }
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
    let root = crate::workspace_root();
    let repo_dir = match &args.repo {
        Some(dir) => dir.clone(),
        None => prepare_sample(&root)?,
    };
    let mut context =
        StageContext::open(&StageOptions { repo: Some(repo_dir), store: args.store.clone(), ..Default::default() })?;
    let (components, settings, policy) = check_config(&context)?;
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
    let last_success = match (&args.base, context.existing_store()?) {
        (None, Some(store)) => store.last_success(components.base_environment())?.map(|m| m.commit),
        _ => None,
    };
    // A base from an earlier run counts only while the emulator it deployed to holds its deploys.
    let everything = match (&embedded, &last_success) {
        (Some(crate::embedded::Found::Missing), Some(_)) => Some(
            "the monorepo's emulator is not running (stopped, or idle for 15 minutes), so what earlier runs deployed is gone: every component is deployed again".to_string(),
        ),
        (Some(crate::embedded::Found::Gone(why)), Some(_)) => {
            Some(format!("{why}, so what earlier runs deployed is gone: every component is deployed again"))
        }
        _ => None,
    };
    let request = BaseRequest {
        explicit: args.base.clone(),
        last_success,
        all_on_missing_base: args.all_on_missing_base,
        everything,
    };

    if args.dry_run {
        return dry_run(&context, &repo, &components, &settings, &request, &head_rev, args.include_worktree);
    }

    let store = context.store()?;
    let progress = Progress::new();

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
            let resumed = resume_run(&context, &store, run_id)?;
            if embedded.is_some() {
                check_emulator_kept(&resumed.0, &context.state_dir)?;
            }
            resumed
        }
    };
    progress.stage(&format!("run {} in {}", run_dir.run_id, context.root.display()));
    progress.stage(&format!("diff: {}", diff.summary()));

    // One pipeline at a time on a repository.
    let _lock = match PipelineLock::take(&store, &run_dir.run_id) {
        Ok(lock) => lock,
        Err(error) => {
            let message = format!("another pipeline is running on this repository: {error}");
            if args.resume.is_none() {
                let mut record = StepRecord::new(&run_dir.run_id, &diff.head, PIPELINE, Step::Source, Status::Failed);
                record.ended_at = Some(SystemTime::now());
                record.details.error = Some(message.clone());
                store.record(&record)?;
            }
            bail!(message);
        }
    };

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
        Some(worktree) => {
            let mut stage_context = StageContext::open(&StageOptions {
                repo: Some(worktree.path.clone()),
                config: None,
                state_dir: Some(context.state_dir.clone()),
                store: Some(context.store_choice.to_string()),
            })?;
            stage_context.set_store(store.clone());
            stage_context
        }
        None => context.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let envs = Envs::of(&policy);
    let stages = Stages {
        context: &stage_context,
        run: &run_dir,
        store: &store,
        diff: &diff,
        policy: &policy,
        envs: &envs,
        progress: &progress,
        runtime: &runtime,
    };
    let needs = Needs::of(&stage_context, &diff, &envs.first)?;
    // The emulator is started (or found) only when a deploy needs it.
    let target = || -> anyhow::Result<stages::Where> {
        Ok(match (args.target, &args.endpoint_url) {
            (TargetKind::Aws, _) => stages::Where::Aws,
            (TargetKind::Emulator, Some(url)) => stages::Where::Emulator(url.clone()),
            (TargetKind::Emulator, None) => {
                let emulator = crate::embedded::endpoint(&context.state_dir)?;
                progress.stage(&emulator.describe());
                let instance = &emulator.instance;
                let used = serde_json::json!({ "endpoint": instance.endpoint, "id": instance.id });
                run_dir.write(RunFile::Emulator, used.to_string().as_bytes())?;
                stages::Where::Emulator(emulator.instance.endpoint)
            }
        })
    };

    let later = [Step::Approval, Step::E2e, Step::Dast, Step::ProdDeploy];
    let passed = if args.resume.is_none() {
        stages.validate();
        stages.build(&needs)?;
        stages.step(Step::Test, None);
        let target = match &needs.no_deploy {
            Some(reason) => {
                stages.skip(&[Step::Deploy], reason)?;
                None
            }
            None => {
                let target = target()?;
                stages.deploy(&target, &envs.first);
                Some(target)
            }
        };
        if !stages.status()? {
            stages.skip(&later, "the status check refused: fix the failures above, then run again")?;
            false
        } else if let Some(reason) = &needs.no_deploy {
            stages.skip(&later, &format!("nothing to deploy: {reason}"))?;
            true
        } else {
            approve_and_deliver(&stages, &args, target.expect("a deploy ran"))?
        }
    } else {
        // Resumed: only a run whose earlier stages all passed goes on.
        let (_, gate) = status_report::run_gate(&store, &run_dir, &policy, Some(Step::Approval))?;
        if gate.allowed {
            approve_and_deliver(&stages, &args, target()?)?
        } else {
            let reason = format!("production refused: {}", gate.reasons.join("; "));
            stages.finish(Step::ProdDeploy, Status::Failed, &reason)?;
            progress.stage(&reason);
            false
        }
    };
    let report = finish_reports(&store, &run_dir, &policy)?;
    notify(&context, &args, report, passed)?;
    drop(worktree);
    Ok(passed)
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
        let config = crate::embedded::config(&endpoint).await?;
        crate::embedded::status_table(&config, &table).await?;
        anyhow::Ok(config)
    })?;
    let store = run_state::DynamoStore::new(&config, &table)?;
    store.check()?;
    context.set_store(std::sync::Arc::new(store));
    Ok(())
}

/// Approval, then E2E and the site check, then production.
fn approve_and_deliver(stages: &Stages<'_>, args: &PipelineArgs, target: stages::Where) -> anyhow::Result<bool> {
    match stages.approval(args)? {
        stages::Decision::Waiting => {
            stages.progress.stage(&format!(
                "waiting for approval: `cargo xtask pipeline --resume {} --approve` continues this run",
                stages.run.run_id
            ));
            Ok(true)
        }
        stages::Decision::Refused { by, .. } => {
            stages.skip(&[Step::E2e, Step::Dast, Step::ProdDeploy], &format!("production refused by {by}"))?;
            Ok(false)
        }
        stages::Decision::Approved { by, .. } => {
            stages.progress.stage(&format!("approval: approved by {by}"));
            stages.e2e(&target)?;
            stages.production(&target)
        }
    }
}

/// Decides the gate and writes the run's reports; prints the table when `print`.
fn report(store: &dyn Store, run_dir: &RunDir, policy: &GatePolicy, print: bool) -> anyhow::Result<bool> {
    Ok(write_report(store, run_dir, policy, print)?.gate.allowed)
}

/// The run's report, written to the run folder (and printed when `print`).
fn write_report(store: &dyn Store, run_dir: &RunDir, policy: &GatePolicy, print: bool) -> anyhow::Result<RunReport> {
    let (records, gate) = status_report::run_gate(store, run_dir, policy, None)?;
    let report = RunReport::new(&run_dir.run_id, records, gate);
    run_dir.write(RunFile::ReportMarkdown, report.to_markdown().as_bytes())?;
    run_dir.write(RunFile::ReportJson, report.to_json().as_bytes())?;
    run_dir.write(RunFile::Junit, report.to_junit().as_bytes())?;
    if print {
        // A table fitted to the terminal, else a line per step (the full text is in report.md).
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            print!("{}", report.to_table())
        } else {
            print!("{}", report.to_lines())
        }
        println!("reports: {}", run_dir.path.display());
    }
    Ok(report)
}

/// The topic the embedded run's notifications go to in the emulator when `[notify] topic_arn` is unset.
pub const EMULATOR_TOPIC: &str = "pipeline-notifications";

/// The run's outcome to SNS (failure, waiting for approval, success) with its report: to
/// `[notify] topic_arn` when set; in the emulator (once a deploy or the store started it, or
/// `--endpoint-url`) to its [`EMULATOR_TOPIC`], made when missing. Nothing otherwise.
fn notify(context: &StageContext, args: &PipelineArgs, report: RunReport, passed: bool) -> anyhow::Result<()> {
    use status_report::notify::{Event, NotifySettings};
    let settings = context.config.section::<NotifySettings>(NotifySettings::SECTION)?;
    let endpoint = match (args.target, &args.endpoint_url) {
        (TargetKind::Aws, _) => None,
        (TargetKind::Emulator, Some(url)) => Some(url.clone()),
        (TargetKind::Emulator, None) => crate::embedded::running(&context.state_dir),
    };
    if settings.topic_arn.is_none() && endpoint.is_none() {
        return Ok(());
    }
    let waiting = report.steps.iter().any(|r| r.step == Step::Approval && r.status == Status::Pending);
    let event = match (passed, waiting) {
        (false, _) => Event::Failure,
        (true, true) => Event::Approval,
        (true, false) => Event::Success,
    };
    let message = status_report::notify::message(event, &report);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (topic, id) = runtime.block_on(async {
        let config = match &endpoint {
            Some(endpoint) => crate::embedded::config(endpoint).await?,
            None => aws_target::load(&aws_target::Target::default()).await?,
        };
        let sns = aws_target::sns(&config, None);
        let topic = match settings.topic_arn {
            Some(topic) => topic,
            None => {
                let made = sns.create_topic().name(EMULATOR_TOPIC).send().await?;
                made.topic_arn().context("the emulator made a topic without an ARN")?.to_string()
            }
        };
        let id = status_report::notify::publish(&sns, &topic, &message).await?;
        anyhow::Ok((topic, id))
    })?;
    println!("notified {event} to {topic} (message {id})");
    Ok(())
}

/// The reports again with every step of the run, and the steps after the status check printed.
fn finish_reports(store: &dyn Store, run_dir: &RunDir, policy: &GatePolicy) -> anyhow::Result<RunReport> {
    let report = write_report(store, run_dir, policy, false)?;
    for record in report.steps.iter().filter(|r| r.step >= Step::Approval) {
        let text = record.details.error.as_deref().or(record.details.note.as_deref()).unwrap_or_default();
        println!("{} {}: {} {text}", record.component, record.step, record.status);
    }
    Ok(report)
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
    let Envs { first, prod } = Envs::of(&context.config.section::<GatePolicy>(GatePolicy::SECTION)?);
    let mut validate_settings = validate::ValidateSettings::from_config(&context.config)?;
    // The stage reads the repository's .cfnlintrc too; so does its dry run.
    validate_settings.cfnlintrc = validate::cfnlintrc::CfnLintRc::load(&context.root)?;
    let validate_plan = validate::plan(&validate_settings, components, &diff, &repo.tracked_files()?)?;
    // A run folder that is never created: the plan only names the logs it would write.
    let run_dir = RunDir { run_id: "dry-run".into(), path: run_state::runs_dir(&context.state_dir).join("dry-run") };
    println!("diff: {}", diff.summary());
    print!("validate: {}", validate_plan.describe());
    print!("{}", step_runner::plan(Step::Build, components, &diff, &run_dir, settings).describe());
    print!("{}", step_runner::plan(Step::Test, components, &diff, &run_dir, settings).describe());
    let needs = Needs::of(context, &diff, &first)?;
    if let Some(reason) = &needs.no_deploy {
        println!("deploy, approval, e2e, prod: skipped: {reason}");
        return Ok(true);
    }
    if needs.stacks {
        // Against the packages the run would build: none yet, so code updates are not listed.
        let changed: BTreeSet<String> = diff.changed().map(str::to_string).collect();
        let (_, functions) = lambda_packager::LambdaSettings::from_config(&context.config)?;
        let env = stages::environment(context, &first)?;
        let inputs = stack_deployer::PlanInputs {
            repo: &context.root,
            manifest: None,
            functions: &functions,
            changed: Some(&changed),
            only: &[],
        };
        match stack_deployer::plan(&env, inputs, &|name| std::env::var(name).ok()) {
            Ok(plan) => print!("deploy {first}: {}", plan.describe()),
            Err(error) => println!("deploy {first}: cannot plan: {}", run_state::error_chain(&error)),
        }
    }
    if let Some(component) = &needs.publish {
        println!("publish {first}: the site of `{component}` (what uploads is decided against the bucket)");
    }
    println!("then: status check, approval, e2e against {first} and the site check, deploy {prod}, mark-success");
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
