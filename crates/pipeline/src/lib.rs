//! The pipeline as a library: the stages in order and the rules between them. Each stage is
//! its crate's library function, the same one its binary calls, and records its own step:
//!
//! diff → validate → build (commands, packages) → test → deploy to the first environment
//! (stacks, site) → status (the gate) → approval → E2E (commands with that environment's
//! outputs) and the site check → deploy to the promoted environment, its site check →
//! mark-success.
//!
//! The rules: a deploy (and so the packages, the approval, E2E and production) happens only
//! when a changed component is deployed by a stack or is the site; nothing after the status
//! check runs while it refuses; production only after approval and when every earlier stage
//! passed (each deploy stage asks [`gate`] itself); one pipeline at a time per repository (the
//! store's lock); a failed post-deploy check (E2E, an environment's site check) rolls that
//! environment back to its previous release where its `rollback_on` lists the check
//! ([`rollback::after_failed_check`]), and the run stays red. A whole stage nothing requires is
//! recorded skipped under `pipeline` with the reason; a component a stage leaves alone is
//! recorded by that stage.
//!
//! What stays with the caller (`cargo xtask pipeline`): the flags, the worktree a run's commit
//! is checked out in, the embedded emulator, the approval prompt and the rendering of
//! [`Event`]s. The library never prints.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! static CANCEL: AtomicBool = AtomicBool::new(false);
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let context = run_state::StageContext::open(&run_state::StageOptions::default())?;
//! let (components, _, policy) = pipeline::check_config(&context)?;
//! let store = context.store()?;
//! let repo = source_diff::Repo::at_root(&context.root);
//! let request = source_diff::BaseRequest::default();
//! let (run, diff) =
//!     source_diff::begin_run(&repo, &components, &request, "HEAD", false, &store, &context.state_dir)?;
//! let inputs = pipeline::Inputs {
//!     context: &context,
//!     run: &run,
//!     store: store.as_ref(),
//!     diff: &diff,
//!     policy: &policy,
//!     cancel: &CANCEL,
//!     resume_hint: "my-pipeline --resume",
//!     on_event: &|event| eprintln!("{event}"),
//! };
//! let target = || Ok(pipeline::Target::Emulator("http://127.0.0.1:5000".into()));
//! let approve = |_shown: &str| Ok(pipeline::Decision::Approved { by: "alice".into(), how: "--approve" });
//! let passed = pipeline::run(&inputs, pipeline::Start::New, &target, &approve)?;
//! assert!(passed);
//! # Ok(())
//! # }
//! ```

mod approval;
mod aws;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use run_state::{PIPELINE, RunDir, RunFile, StageContext, StageInputs, StagePlan, Status, Step, StepRecord, Store};
use source_diff::{Components, DiffReport};
use status_report::{GatePolicy, RunReport};
use step_runner::RunnerSettings;

pub use approval::{Decision, production_view, record_approval};
pub use aws::{Target, emulator_config};

/// An error of another library, kept as it is.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the pipeline could not go on (a stage's own failure is recorded, not returned).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A section of `pipeline.toml` is wrong.
    #[error("pipeline.toml")]
    Config(#[from] pipeline_config::ConfigError),
    /// The store or the run folder.
    #[error("the run's records")]
    Store(#[from] run_state::Error),
    /// The diff.
    #[error("the diff")]
    Diff(#[from] source_diff::Error),
    /// Validate's settings beyond `pipeline.toml` (a `.cfnlintrc` that cannot be read; boxed:
    /// the error type stays small).
    #[error("validate's settings")]
    Validate(#[source] Box<validate::Error>),
    /// `[lambda]` (boxed: the error type stays small).
    #[error("the Lambda packages")]
    Package(#[source] Box<lambda_packager::Error>),
    /// A stack deploy could not be planned or run.
    #[error("the stack deploy")]
    Deploy(#[from] stack_deployer::Error),
    /// The publish or the site check could not run.
    #[error("the site")]
    Publish(#[from] frontend_publisher::Error),
    /// The approval record.
    #[error("the approval")]
    Approval(#[from] gate::approval::Error),
    /// Reaching an environment's account.
    #[error("who deploys `{environment}`? check the credentials (or the role it assumes)")]
    Identity {
        /// The environment.
        environment: String,
        /// Why not.
        #[source]
        source: aws_target::Error,
    },
    /// AWS, through an SDK call of the pipeline's own (the emulator's bucket, the topic).
    #[error("{what}")]
    Aws {
        /// What it was doing.
        what: String,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// The automated rollback.
    #[error("the automated rollback")]
    Rollback(#[source] Box<rollback::Error>),
    /// The notification.
    #[error("the notification")]
    Notify(#[from] status_report::notify::Error),
    /// The run named to resume is not waiting for approval.
    #[error("run {run_id} {why}; start a new run")]
    NotResumable {
        /// The run.
        run_id: String,
        /// Why it cannot go on.
        why: String,
    },
    /// Another pipeline holds the repository's lock.
    #[error("another pipeline is running on this repository")]
    Locked(#[source] run_state::Error),
    /// What the caller supplied (the target, the approval) failed.
    #[error("{what}")]
    Caller {
        /// What was asked of the caller.
        what: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl From<rollback::Error> for Error {
    fn from(error: rollback::Error) -> Error {
        Error::Rollback(Box::new(error))
    }
}

impl From<lambda_packager::Error> for Error {
    fn from(error: lambda_packager::Error) -> Error {
        Error::Package(Box::new(error))
    }
}

/// What the pipeline reports while it works; the caller renders it.
#[derive(Debug)]
pub enum Event<'a> {
    /// A line about the pipeline itself.
    Line(String),
    /// A step-runner job of `step` started or finished.
    Job(Step, &'a step_runner::Event<'a>),
    /// The status check's report, every failure in it (the caller prints it).
    Status(&'a RunReport),
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Line(line) => f.write_str(line),
            Event::Job(step, step_runner::Event::Started(job)) => write!(f, "started {} {step}", job.component),
            Event::Job(step, step_runner::Event::Finished(result)) => {
                write!(f, "finished {} {step}: {}", result.job.component, result.outcome)
            }
            Event::Status(report) => write!(f, "status: {}", if report.gate.allowed { "passed" } else { "refused" }),
        }
    }
}

/// What every stage of one run shares.
pub struct Inputs<'a> {
    /// The repository (the run's commit checked out), its config and store choice.
    pub context: &'a StageContext,
    /// The run's folder.
    pub run: &'a RunDir,
    /// The status store.
    pub store: &'a dyn Store,
    /// The run's diff.
    pub diff: &'a DiffReport,
    /// `[gate]`.
    pub policy: &'a GatePolicy,
    /// Set to stop: running commands are killed, a change set not yet executed is deleted.
    pub cancel: &'static AtomicBool,
    /// How a person continues a run waiting for approval (the run id and `--approve` follow).
    pub resume_hint: &'a str,
    /// Where the pipeline's events go.
    pub on_event: &'a (dyn Fn(Event<'_>) + Sync),
}

impl<'a> Inputs<'a> {
    /// The inputs every stage of this run takes (context, run, store, cancel flag), built
    /// from these once and handed to each stage as they are.
    pub fn stage(&self) -> StageInputs<'a> {
        StageInputs::new(self.context, self.run, self.store, self.cancel)
    }
}

/// Whether a run starts here or goes on from its approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run: every stage from validate.
    New,
    /// A run that stopped at approval ([`resume`] checked it): approval onwards.
    Resumed,
}

/// The environments, in order: deployed first, and deployed after approval: the first
/// promotion of `[gate.environments]` (`prod` after `dev`, `prod` after `staging` …), else
/// `dev` then `prod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envs {
    /// Deployed first (before approval).
    pub first: String,
    /// Deployed after approval.
    pub prod: String,
}

impl Envs {
    /// The environments of a policy.
    pub fn of(policy: &GatePolicy) -> Envs {
        let (first, prod) = policy.promotion().unwrap_or(("dev", run_state::DEFAULT_SUCCESS_ENV));
        Envs { first: first.to_string(), prod: prod.to_string() }
    }
}

/// Every section's content, checked before any stage runs: a mistake is exit 2, never a
/// refused gate half way through a run.
pub fn check_config(context: &StageContext) -> Result<(Components, RunnerSettings, GatePolicy), Error> {
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

fn has_section(context: &StageContext, name: &str) -> Result<bool, Error> {
    let config = context.required_config()?;
    Ok(pipeline_config::top_level_keys(&config.path, &config.text)?.iter().any(|(key, _)| key == name))
}

/// What a run's change asks of the deploy stages (the rules between the stages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// Why nothing is deployed, when nothing is: no changed component is served by a stack of
    /// `[deploy]` or is the `[publish]` component.
    pub no_deploy: Option<String>,
    /// Whether the stacks deploy (a changed component is served by one).
    pub stacks: bool,
    /// The `[publish]` component, when it changed.
    pub publish: Option<String>,
}

impl Needs {
    /// What `diff` asks of the deploy to `first`.
    pub fn of(context: &StageContext, diff: &DiffReport, first: &str) -> Result<Needs, Error> {
        let changed: BTreeSet<&str> = diff.changed().collect();
        let stacks = has_section(context, stack_deployer::DeploySettings::SECTION)?
            && aws::environment(context, first)?
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

/// Runs a run's stages; `Ok(false)` when it ends refused (a failure, a refused gate or a
/// refused approval), `Ok(true)` when it passed, had nothing to do, or waits for approval.
/// `target` is asked only when a deploy needs it (an emulator is started then); `approve` is
/// shown what production will receive and answers.
pub fn run(
    inputs: &Inputs<'_>,
    start: Start,
    target: &dyn Fn() -> Result<Target, Error>,
    approve: &dyn Fn(&str) -> Result<Decision, Error>,
) -> Result<bool, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)?;
    let envs = Envs::of(inputs.policy);
    let stages = Stages { inputs, envs: &envs, runtime: &runtime, configs: aws::Configs::default() };
    let needs = Needs::of(inputs.context, inputs.diff, &envs.first)?;
    let later = [Step::Approval, Step::E2e, Step::Dast, Step::ProdDeploy];
    if start == Start::Resumed {
        // Resumed: only a run whose earlier stages all passed goes on.
        let (_, gate) = gate::run_gate(inputs.store, inputs.run, inputs.policy, Some(Step::Approval))?;
        if gate.allowed {
            return stages.approve_and_deliver(target()?, approve);
        }
        let reason = format!("production refused: {}", gate.reasons.join("; "));
        stages.finish(Step::ProdDeploy, Status::Failed, &reason)?;
        stages.line(reason);
        return Ok(false);
    }
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
    let report = write_report(inputs.store, inputs.run, inputs.policy)?;
    (inputs.on_event)(Event::Status(&report));
    if !report.gate.allowed {
        stages.skip(&later, "the status check refused: fix the failures above, then run again")?;
        Ok(false)
    } else {
        match (target, &needs.no_deploy) {
            (Some(target), None) => stages.approve_and_deliver(target, approve),
            (_, reason) => {
                let reason = reason.as_deref().unwrap_or_default();
                stages.skip(&later, &format!("nothing to deploy: {reason}"))?;
                Ok(true)
            }
        }
    }
}

/// One run's stages, with what they share.
struct Stages<'a> {
    inputs: &'a Inputs<'a>,
    envs: &'a Envs,
    runtime: &'a tokio::runtime::Runtime,
    /// Each environment's SDK config, made once.
    configs: aws::Configs,
}

impl Stages<'_> {
    fn line(&self, line: String) {
        (self.inputs.on_event)(Event::Line(line));
    }

    /// Records a whole-pipeline step as skipped with the reason.
    fn skip(&self, steps: &[Step], reason: &str) -> Result<(), Error> {
        for &step in steps {
            self.finish(step, Status::Skipped, reason)?;
            self.line(format!("{step}: skipped: {reason}"));
        }
        Ok(())
    }

    /// Records a whole-pipeline step as ended (a note, or the error when it failed).
    fn finish(&self, step: Step, status: Status, text: &str) -> Result<(), Error> {
        let Inputs { run, store, diff, .. } = *self.inputs;
        let mut record = StepRecord::new(&run.run_id, &diff.head, PIPELINE, step, status);
        record.ended_at = Some(SystemTime::now());
        if status == Status::Failed {
            record.details.error = Some(text.to_string());
        } else {
            record.details.note = Some(text.to_string());
        }
        store.record(&record)?;
        Ok(())
    }

    /// Validate: a failure refuses the gate, but the later stages before the gate still run so
    /// one run tells everything that is wrong.
    fn validate(&self) {
        let options =
            validate::StageOptions { checks: validate::CheckOptions { tools: true, cache: true }, all: false };
        match validate::run_stage(&self.inputs.stage(), options) {
            Ok(outcome) => self.line(format!("validate: {}", outcome.summary())),
            Err(error) => self.line(format!("validate: {}", run_state::error_chain(&error))),
        }
    }

    /// Build: the changed components' `build` commands, then the Lambda packages when a deploy
    /// will use them.
    fn build(&self, needs: &Needs) -> Result<(), Error> {
        self.step(Step::Build, None);
        if !needs.stacks {
            let reason = needs.no_deploy.as_deref().unwrap_or("no stack deploys, so no package is needed");
            return self.skip(&[Step::Build], reason);
        }
        let Inputs { context, diff, .. } = *self.inputs;
        // The functions of changed components (a function is its component's when they share a
        // name), and those no component names; the deploy keeps the others' code as it is.
        let config = context.required_config()?;
        let (_, functions) = lambda_packager::LambdaSettings::from_config(config)?;
        let components = Components::from_config(config)?;
        let changed: BTreeSet<&str> = diff.changed().collect();
        let only: Vec<String> = functions
            .iter()
            .map(|f| f.name.clone())
            .filter(|name| changed.contains(name.as_str()) || components.get(name).is_none())
            .collect();
        if only.is_empty() {
            return self.skip(&[Step::Build], "no function changed");
        }
        let options = lambda_packager::StageOptions { only, python: None };
        // Over budget is the stage's verdict, already recorded as the step's failure: said as
        // the error it is.
        match lambda_packager::run_stage(&self.inputs.stage(), &options, &|_| {}).and_then(|o| o.into_manifest()) {
            Ok(manifest) => self.line(format!("package: {} function(s)", manifest.packages.len())),
            Err(error) => self.line(format!("package: {}", run_state::error_chain(&error))),
        }
        Ok(())
    }

    /// A per-component step (`build`, `test`, `e2e`) through step-runner; whether it passed.
    fn step(&self, step: Step, environment: Option<&str>) -> bool {
        let on_event = self.inputs.on_event;
        let on_job = |event: step_runner::Event<'_>| on_event(Event::Job(step, &event));
        match step_runner::run_stage(&self.inputs.stage(), step, environment, &on_job) {
            Ok(step_runner::StepOutcome::Ran(done)) => {
                self.line(format!("{step}: {} run, {} skipped", done.plan.jobs.len(), done.plan.skipped.len()));
                done.passed()
            }
            Ok(refused @ step_runner::StepOutcome::Refused(_)) => {
                self.line(format!("{step}: {}", refused.refusal().unwrap_or_default()));
                false
            }
            Err(error) => {
                self.line(format!("{step}: {}", run_state::error_chain(&error)));
                false
            }
        }
    }

    /// The deploy of one environment (its stacks, then the site; each stage skips, and records
    /// why, what did not change).
    fn deploy(&self, target: &Target, env: &str) -> bool {
        match self.runtime.block_on(aws::deploy(self.inputs, &self.configs, target, env)) {
            Ok(passed) => passed,
            Err(error) => {
                self.line(format!("deploy {env}: {}", run_state::error_chain(&error)));
                false
            }
        }
    }

    /// The publisher's site check of `env` (skipped by the publisher, and recorded so, when the
    /// site did not change); whether it let the site through.
    fn site_check(&self, target: &Target, env: &str) -> Result<bool, Error> {
        if frontend_publisher::PublishConfig::from_config(self.inputs.context.required_config()?)?.is_none() {
            return Ok(true);
        }
        Ok(self.runtime.block_on(aws::site_check(self.inputs, &self.configs, target, env)).unwrap_or_else(|error| {
            self.line(format!("site check {env}: {}", run_state::error_chain(&error)));
            false
        }))
    }

    /// After a post-deploy check of `env` failed: the automated rollback (`rollback_on`), its
    /// line shown; whether `env` was rolled back. The run stays red either way.
    fn roll_back(&self, target: &Target, env: &str) -> bool {
        match self.runtime.block_on(aws::after_failed_check(self.inputs, &self.configs, target, env)) {
            Ok((rolled_back, line)) => {
                self.line(line);
                rolled_back
            }
            Err(error) => {
                self.line(format!("rollback {env}: {}", run_state::error_chain(&error)));
                false
            }
        }
    }

    /// Approval, then E2E and the site check, then production.
    fn approve_and_deliver(
        &self,
        target: Target,
        approve: &dyn Fn(&str) -> Result<Decision, Error>,
    ) -> Result<bool, Error> {
        let Inputs { context, run, store, diff, resume_hint, .. } = *self.inputs;
        let (shown, digest) = production_view(context, run, &self.envs.prod);
        let decision = approve(&shown)?;
        let waiting = format!("{resume_hint} {} --approve", run.run_id);
        record_approval(store, &run.run_id, &diff.head, &decision, digest, &waiting)?;
        match decision {
            Decision::Waiting => {
                self.line(format!("waiting for approval: `{waiting}` continues this run"));
                Ok(true)
            }
            Decision::Refused { by, .. } => {
                self.skip(&[Step::E2e, Step::Dast, Step::ProdDeploy], &format!("production refused by {by}"))?;
                Ok(false)
            }
            Decision::Approved { by, .. } => {
                self.line(format!("approval: approved by {by}"));
                let first = &self.envs.first;
                let e2e = self.step(Step::E2e, Some(first));
                let site = self.site_check(&target, first)?;
                if !(e2e && site) && self.roll_back(&target, first) {
                    let reason = format!("production refused: `{first}` was rolled back after its checks failed");
                    self.skip(&[Step::ProdDeploy], &reason)?;
                    return Ok(false);
                }
                self.production(&target)
            }
        }
    }

    /// Production, as the DeployProd buildspec runs it: the deploy stages with production's
    /// target (each asks the promotion decision and records its own `prod-deploy` steps: refused
    /// unless dev, E2E and the approval passed in this run), production's site check, then the
    /// run becomes the next run's base there ([`gate::mark_success`], as `status-report
    /// mark-success`). Nothing here records a step of its own.
    fn production(&self, target: &Target) -> Result<bool, Error> {
        let prod = &self.envs.prod;
        if !self.deploy(target, prod) {
            self.line(format!("the deploy to {prod} failed or was refused; see its prod-deploy steps"));
            return Ok(false);
        }
        if !self.site_check(target, prod)? {
            self.roll_back(target, prod);
            return Ok(false);
        }
        let Inputs { run, store, policy, .. } = *self.inputs;
        match gate::mark_success(store, run, policy, prod) {
            Ok(mark) => {
                self.line(format!("{prod} is at {}: the next run's base", mark.commit));
                Ok(true)
            }
            Err(error) => {
                self.line(format!("{prod} not marked: {}", run_state::error_chain(&error)));
                Ok(false)
            }
        }
    }
}

/// Takes the repository's pipeline lock for this process; released when dropped.
pub struct PipelineLock<'a> {
    store: &'a dyn Store,
    holder: String,
}

impl<'a> PipelineLock<'a> {
    const NAME: &'static str = "pipeline";
    /// Long enough for a whole run; a run that died leaves it stale after this.
    const TTL: Duration = Duration::from_secs(60 * 60);

    /// The repository's lock for `holder` (who runs, named for whoever is refused: where and
    /// which process), or [`Error::Locked`] naming the current holder. Taken before the run is
    /// begun, so a refused pipeline leaves no run behind.
    pub fn take(store: &'a dyn Store, holder: &str) -> Result<PipelineLock<'a>, Error> {
        store.acquire_lock(Self::NAME, holder, Self::TTL).map_err(Error::Locked)?;
        Ok(PipelineLock { store, holder: holder.to_string() })
    }
}

impl Drop for PipelineLock<'_> {
    fn drop(&mut self) {
        let _ = self.store.release_lock(Self::NAME, &self.holder);
    }
}

/// The run `run_id`, which must be waiting for approval, and its diff.
pub fn resume(context: &StageContext, store: &dyn Store, run_id: &str) -> Result<(RunDir, DiffReport), Error> {
    run_state::check_name("run id", run_id)?;
    let run = RunDir::open(&run_state::runs_dir(&context.state_dir).join(run_id))?;
    let diff: DiffReport = run.read_json(RunFile::Diff)?;
    let records = store.run(run_id)?;
    let why = match records.iter().find(|r| r.component == PIPELINE && r.step == Step::Approval) {
        Some(r) if r.status == Status::Pending => return Ok((run, diff)),
        Some(r) => format!("is not waiting for approval (its approval is {})", r.status),
        None => "did not stop at approval".to_string(),
    };
    Err(Error::NotResumable { run_id: run_id.to_string(), why })
}

/// The run's report (the gate over every record and what the diff required), written to the
/// run folder as Markdown, JSON and JUnit.
pub fn write_report(store: &dyn Store, run: &RunDir, policy: &GatePolicy) -> Result<RunReport, Error> {
    let (records, gate) = gate::run_gate(store, run, policy, None)?;
    let report = RunReport::new(&run.run_id, records, gate);
    run.write(RunFile::ReportMarkdown, report.to_markdown().as_bytes())?;
    run.write(RunFile::ReportJson, report.to_json().as_bytes())?;
    run.write(RunFile::Junit, report.to_junit().as_bytes())?;
    Ok(report)
}

/// The topic the emulator's notifications go to when `[notify] topic_arn` is unset.
pub const EMULATOR_TOPIC: &str = "pipeline-notifications";

/// What [`notify`] sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notified {
    /// Failure, waiting for approval, or success.
    pub event: status_report::notify::Event,
    /// The topic.
    pub topic: String,
    /// SNS's message id.
    pub message_id: String,
}

/// The run's outcome to SNS (failure, waiting for approval, success) with its report: to
/// `[notify] topic_arn` when set (through the ordinary credential chain, or the emulator at
/// `emulator` when given); else, in an emulator, to its [`EMULATOR_TOPIC`], made when missing.
/// `None` when there is nowhere to send it.
pub fn notify(
    context: &StageContext,
    emulator: Option<&str>,
    report: &RunReport,
    passed: bool,
) -> Result<Option<Notified>, Error> {
    use status_report::notify::{Event as Kind, NotifySettings};
    let settings = context.config.section::<NotifySettings>(NotifySettings::SECTION)?;
    if settings.topic_arn.is_none() && emulator.is_none() {
        return Ok(None);
    }
    let waiting = report.steps.iter().any(|r| r.step == Step::Approval && r.status == Status::Pending);
    let event = match (passed, waiting) {
        (false, _) => Kind::Failure,
        (true, true) => Kind::Approval,
        (true, false) => Kind::Success,
    };
    let message = status_report::notify::message(event, report);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    let (topic, message_id) = runtime.block_on(async {
        let config = match emulator {
            Some(endpoint) => emulator_config(endpoint).await?,
            None => aws_target::load(&aws_target::Target::default())
                .await
                .map_err(|source| Error::Identity { environment: "the pipeline's account".into(), source })?,
        };
        let sns = aws_target::sns(&config, None);
        let topic = match settings.topic_arn {
            Some(topic) => topic,
            None => {
                let made = sns.create_topic().name(EMULATOR_TOPIC).send().await.map_err(|e| Error::Aws {
                    what: format!("creating topic {EMULATOR_TOPIC} in the emulator"),
                    source: e.into(),
                })?;
                made.topic_arn().unwrap_or_default().to_string()
            }
        };
        let id = status_report::notify::publish(&sns, &topic, &message).await?;
        Ok::<_, Error>((topic, id))
    })?;
    Ok(Some(Notified { event, topic, message_id }))
}

/// Plans every stage of a run that has not started: nothing is installed, recorded or run.
pub fn dry_run(
    context: &StageContext,
    repo: &source_diff::Repo,
    components: &Components,
    settings: &RunnerSettings,
    request: &source_diff::BaseRequest,
    head: &str,
    include_worktree: bool,
) -> Result<String, Error> {
    let diff = source_diff::diff(repo, components, request, head, include_worktree)?;
    let Envs { first, prod } = Envs::of(&context.config.section::<GatePolicy>(GatePolicy::SECTION)?);
    let mut validate_settings = validate::ValidateSettings::from_config(&context.config)?;
    // The stage reads the repository's .cfnlintrc too; so does its dry run.
    validate_settings.cfnlintrc = validate::cfnlintrc::CfnLintRc::load(&context.root).map_err(|error| match error {
        validate::Error::Config(error) => Error::Config(error),
        other => Error::Validate(Box::new(other)),
    })?;
    let validate_plan = validate::plan(&validate_settings, components, &diff, &repo.tracked_files()?)?;
    // A run folder that is never created: the plan only names the logs it would write.
    let run_dir = RunDir { run_id: "dry-run".into(), path: run_state::runs_dir(&context.state_dir).join("dry-run") };
    let mut out = format!("diff: {}\n", diff.summary());
    out.push_str(&format!("validate: {}", validate_plan.describe()));
    out.push_str(&step_runner::plan(Step::Build, components, &diff, &run_dir, settings).describe());
    out.push_str(&step_runner::plan(Step::Test, components, &diff, &run_dir, settings).describe());
    let needs = Needs::of(context, &diff, &first)?;
    if let Some(reason) = &needs.no_deploy {
        out.push_str(&format!("deploy, approval, e2e, prod: skipped: {reason}\n"));
        return Ok(out);
    }
    if needs.stacks {
        // Against the packages the run would build: none yet, so code updates are not listed.
        let changed: BTreeSet<String> = diff.changed().map(str::to_string).collect();
        let (_, functions) = lambda_packager::LambdaSettings::from_config(&context.config)?;
        let env = aws::environment(context, &first)?;
        let inputs = stack_deployer::PlanInputs {
            repo: &context.root,
            manifest: None,
            functions: &functions,
            changed: Some(&changed),
            only: &[],
        };
        match stack_deployer::plan(&env, inputs, &aws::env_lookup) {
            Ok(plan) => out.push_str(&format!("deploy {first}: {}", plan.describe())),
            Err(error) => out.push_str(&format!("deploy {first}: cannot plan: {}\n", run_state::error_chain(&error))),
        }
    }
    if let Some(component) = &needs.publish {
        out.push_str(&format!(
            "publish {first}: the site of `{component}` (what uploads is decided against the bucket)\n"
        ));
    }
    out.push_str(&format!(
        "then: status check, approval, e2e against {first} and the site check, deploy {prod}, mark-success\n"
    ));
    Ok(out)
}
