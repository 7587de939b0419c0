//! Runs one step's command (test, build …) for the components a change affects.
//!
//! The step is planned first ([`plan`], pure: which components run which
//! command and why the others are skipped), then applied ([`run_step`]):
//! commands run in parallel with a bound, each with a timeout, each log kept
//! in the run folder (redacted as it is written), and every state recorded in
//! the status store, so a step is never left `running` (a timeout or a cancel
//! marks it failed or cancelled; a runner that died is named in the record, so
//! readers see its steps failed). No process a job started outlives it: what
//! the shell leaves behind is stopped when it exits, and everything stops when
//! the runner itself dies (see the `run` module).
//!
//! A test command with `coverage = { … }` passes only when its coverage does too: the plan
//! says which components' coverage is checked ([`StepPlan::coverage`]); after a passing test
//! job, its report is read and cut to the component's files (the `coverage` crate), and a
//! figure under its minimum fails the job with the figures in the error. The figures go
//! into the record ([`run_state::Details::coverage`]).
//!
//! A stage binary or a pipeline calls [`run_stage`], which does all of it for
//! one run: reads the run's diff, checks that the checked-out tree is the
//! run's commit, refuses a deploy while the gate refuses, and records the step.
//!
//! ```no_run
//! use run_state::{StageContext, StageOptions, StageOutcome, Step};
//!
//! let context = StageContext::open(&StageOptions { repo: Some("monorepo".into()), ..Default::default() })?;
//! let run_dir = context.run_dir(None)?;
//! let store = context.store()?;
//! let cancel = std::sync::atomic::AtomicBool::new(false);
//! let inputs = run_state::StageInputs::new(&context, &run_dir, store.as_ref(), &cancel);
//! let done = step_runner::run_stage(&inputs, Step::Test, None, &|_event| {})?;
//! println!("{}", if done.passed() { "every test passed" } else { "a test failed" });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod coverage;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use gate::GatePolicy;
use run_state::{
    Details, PIPELINE, RunDir, RunFile, StackOutputs, StageContext, StageInputs, Status, Step, StepRecord, Store,
};
use serde::Deserialize;
use source_diff::{Components, DiffReport};

pub use crate::coverage::CoverageScope;
pub use process_pool::{DEFAULT_TIMEOUT, Event, Job, JobResult, Outcome, Runner, default_parallelism, missing_program};

/// `[runner]` in `pipeline.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSettings {
    /// How many commands at once; the number of CPUs when unset.
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// The timeout of commands that set none; 10 minutes when unset.
    #[serde(default, deserialize_with = "pipeline_config::duration")]
    pub timeout: Option<Duration>,
    /// Environment variables for every command (a component's `env` adds to and overrides these).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl RunnerSettings {
    /// The section of `pipeline.toml` this crate owns.
    pub const SECTION: &'static str = "runner";

    /// The number of commands to run at once.
    pub fn parallelism(&self) -> usize {
        self.parallelism.unwrap_or_else(default_parallelism).max(1)
    }
}

/// What a step will do: the jobs to run and the components skipped, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPlan {
    /// The step.
    pub step: Step,
    /// Commands to run.
    pub jobs: Vec<Job>,
    /// Components not run, with the reason.
    pub skipped: Vec<(String, String)>,
    /// The coverage checked after each job that has it, by component.
    pub coverage: BTreeMap<String, ::coverage::CoverageSpec>,
}

/// Errors of the step runner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This step has no per-component command.
    #[error("step `{0}` has no per-component command in [components]; use test, build, deploy or e2e")]
    NoCommand(Step),
    /// A step that runs against a deployed environment was not told which.
    #[error("step `{0}` runs against a deployed environment: pass --env (dev, prod …)")]
    NeedsEnvironment(Step),
    /// The run has no outputs for that environment.
    #[error(transparent)]
    Outputs(#[from] run_state::outputs::LookupError),
    /// The run folder, the store or the work tree check failed.
    #[error(transparent)]
    State(#[from] run_state::Error),
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] pipeline_config::ConfigError),
}

impl run_state::StagePlan for StepPlan {
    /// The plan as text, for a dry run.
    fn describe(&self) -> String {
        let mut out = String::new();
        for job in &self.jobs {
            out.push_str(&format!(
                "run  {} {}: {} (timeout {})\n",
                job.component,
                self.step,
                job.command,
                humantime::format_duration(job.timeout)
            ));
        }
        for (component, spec) in &self.coverage {
            out.push_str(&format!("check {component} {} coverage: {}\n", self.step, spec.describe()));
        }
        for (component, reason) in &self.skipped {
            out.push_str(&format!("skip {component} {}: {reason}\n", self.step));
        }
        out
    }
}

/// The plan as data: each job's component, command, timeout, log and config key (not its
/// environment, which can carry the deployed stacks' outputs), the skipped components with
/// why, and each coverage check as [`describe`](run_state::StagePlan::describe) says it.
impl serde::Serialize for StepPlan {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct JobView<'a> {
            component: &'a str,
            command: &'a str,
            timeout: String,
            log_path: &'a std::path::Path,
            config_key: &'a str,
        }
        #[derive(serde::Serialize)]
        struct PlanView<'a> {
            step: Step,
            jobs: Vec<JobView<'a>>,
            skipped: &'a [(String, String)],
            coverage: BTreeMap<&'a str, String>,
        }
        PlanView {
            step: self.step,
            jobs: self
                .jobs
                .iter()
                .map(|job| JobView {
                    component: &job.component,
                    command: &job.command,
                    timeout: humantime::format_duration(job.timeout).to_string(),
                    log_path: &job.log_path,
                    config_key: &job.config_key,
                })
                .collect(),
            skipped: &self.skipped,
            coverage: self.coverage.iter().map(|(component, spec)| (component.as_str(), spec.describe())).collect(),
        }
        .serialize(serializer)
    }
}

/// Plans a step for the components the diff marks changed: pure.
pub fn plan(
    step: Step,
    components: &Components,
    diff: &DiffReport,
    run_dir: &RunDir,
    settings: &RunnerSettings,
) -> StepPlan {
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    let mut coverage = BTreeMap::new();
    for component in components.iter() {
        let command = component.command(step);
        let changed = diff.components.get(&component.name).is_some_and(|c| c.changed);
        match (changed, command) {
            (false, _) => skipped.push((component.name.clone(), "unchanged since the base".to_string())),
            (true, None) => skipped.push((component.name.clone(), format!("no {step} command"))),
            (true, Some(command)) => {
                if let Some(spec) = &command.coverage {
                    coverage.insert(component.name.clone(), spec.clone());
                }
                jobs.push(Job {
                    component: component.name.clone(),
                    command: command.run.clone(),
                    timeout: command.timeout.or(settings.timeout).unwrap_or(DEFAULT_TIMEOUT),
                    log_path: run_dir.log_path(&component.name, step.as_str()),
                    config_key: format!("components.{}.{step}", component.name),
                    stdout_path: None,
                    env: settings.env.iter().chain(&command.env).map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
            }
        }
    }
    StepPlan { step, jobs, skipped, coverage }
}

/// Runs a planned step and records every state in the store: skipped
/// components at once, each job as running when it starts and as passed,
/// failed or cancelled when it ends. A passing job whose component has coverage in the plan
/// passes only when its coverage reaches the minimums (`scope` says which files are the
/// component's and which lines changed); the event, the record and the result then carry the
/// figures, and the error says what is below. Returns the results in plan order.
pub fn run_step(
    store: &dyn Store,
    run_id: &str,
    commit: &str,
    plan: &StepPlan,
    runner: &Runner<'_>,
    scope: CoverageScope<'_>,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Vec<JobResult>, Error> {
    record_planned(store, run_id, commit, plan)?;
    // The store is written from the workers; the first error is kept and returned.
    let store_error = std::sync::Mutex::new(None);
    let keep = |result: Result<(), run_state::Error>| {
        if let Err(e) = result {
            store_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
    };
    let checker = coverage::Checker::new(&runner.workdir, scope);
    // Results changed by their coverage check, by component, put back in place at the end.
    let checked = std::sync::Mutex::new(BTreeMap::new());
    // Each started job's record, ended when the job ends (run-state's one running → finished path).
    let running = std::sync::Mutex::new(BTreeMap::new());
    let end = |result: &JobResult, coverage: Option<&run_state::Coverage>| {
        let finished = finished_record(run_id, commit, plan.step, result, coverage);
        let started = running.lock().unwrap_or_else(|p| p.into_inner()).remove(&result.job.component);
        keep(match started {
            Some(recording) => {
                run_state::Recording::end(recording, finished.status, |d| *d = finished.details).map(drop)
            }
            // Never started (cancelled before its turn): its end is its only record.
            None => store.record(&finished),
        });
    };
    let mut results = runner.run(plan.jobs.clone(), &|event| match event {
        Event::Started(job) => {
            let log = job.log_path.display().to_string();
            match run_state::Recording::begin_with(store, run_id, commit, &job.component, plan.step, |d| {
                d.log_path = Some(log)
            }) {
                Ok(recording) => {
                    running.lock().unwrap_or_else(|p| p.into_inner()).insert(job.component.clone(), recording);
                }
                Err(error) => keep(Err(error)),
            }
            on_event(event);
        }
        Event::Finished(result) => {
            let spec = plan.coverage.get(&result.job.component).filter(|_| result.outcome == Outcome::Passed);
            let Some(spec) = spec else {
                end(result, None);
                on_event(event);
                return;
            };
            let (result, coverage) = check_coverage(&checker, spec, result);
            end(&result, coverage.as_ref());
            on_event(Event::Finished(&result));
            checked.lock().unwrap_or_else(|p| p.into_inner()).insert(result.job.component.clone(), result);
        }
    });
    let mut checked = checked.into_inner().unwrap_or_else(|p| p.into_inner());
    for result in &mut results {
        if let Some(changed) = checked.remove(&result.job.component) {
            *result = changed;
        }
    }
    match store_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(error) => Err(error.into()),
        None => Ok(results),
    }
}

/// Records the plan before anything runs: each skipped component with why, each job pending
/// (named with this process, so a reader can tell a step that waits from one whose runner died).
fn record_planned(store: &dyn Store, run_id: &str, commit: &str, plan: &StepPlan) -> Result<(), run_state::Error> {
    for (component, reason) in &plan.skipped {
        let mut record = StepRecord::new(run_id, commit, component, plan.step, Status::Skipped);
        record.details.note = Some(reason.clone());
        store.record(&record)?;
    }
    for job in &plan.jobs {
        let mut record = StepRecord::new(run_id, commit, &job.component, plan.step, Status::Pending);
        record.details.set_runner_to_this_process();
        store.record(&record)?;
    }
    Ok(())
}

/// A passed job's coverage check: the result failed when the coverage falls short (or cannot
/// be read), and the coverage measured. The job's log says either, so the log alone explains it.
fn check_coverage(
    checker: &coverage::Checker<'_>,
    spec: &::coverage::CoverageSpec,
    result: &JobResult,
) -> (JobResult, Option<run_state::Coverage>) {
    let mut result = result.clone();
    let mut coverage = None;
    let failure = match checker.check(&result.job.component, spec, &result.job.config_key, result.started_at) {
        Ok(measured) => {
            coverage = Some(measured.coverage);
            measured.failure
        }
        Err(line) => Some(line),
    };
    let line = match (&failure, &coverage) {
        (Some(failure), _) => failure.clone(),
        (None, Some(coverage)) => format!("coverage: {}", coverage.summary()),
        (None, None) => String::new(),
    };
    if let Ok(mut log) = std::fs::OpenOptions::new().append(true).open(&result.job.log_path) {
        use std::io::Write;
        let _ = writeln!(log, "[step-runner] {line}");
    }
    if let Some(failure) = failure {
        result.outcome = Outcome::Failed(failure);
        result.log_tail = run_state::redact::read_log_tail(&result.job.log_path).unwrap_or_default();
    }
    (result, coverage)
}

/// The final record of a job, with the component's coverage when its test command measures it.
pub fn finished_record(
    run_id: &str,
    commit: &str,
    step: Step,
    result: &JobResult,
    coverage: Option<&run_state::Coverage>,
) -> StepRecord {
    let (status, error) = match &result.outcome {
        Outcome::Passed => (Status::Passed, None),
        Outcome::Failed(_) | Outcome::NotFound { .. } => (Status::Failed, result.outcome.message()),
        Outcome::TimedOut(after) => (
            Status::Failed,
            Some(format!(
                "timed out after {}; fix the hang or raise {}.timeout",
                humantime::format_duration(*after),
                result.job.config_key
            )),
        ),
        Outcome::Cancelled => (Status::Cancelled, Some("cancelled".to_string())),
    };
    let mut record = StepRecord::new(run_id, commit, &result.job.component, step, status);
    record.started_at = result.started_at;
    record.ended_at = Some(result.ended_at);
    record.details = Details {
        error,
        log_tail: (!result.log_tail.is_empty() && status != Status::Passed).then(|| result.log_tail.clone()),
        log_path: Some(result.job.log_path.display().to_string()),
        note: result.note.clone(),
        runner: None,
        runner_process: None,
        by: None,
        coverage: coverage.cloned().map(Box::new),
        digest: None,
    };
    record
}

/// A step that ran: the plan and every job's result.
#[derive(Debug, Clone)]
pub struct StageRun {
    /// The plan that ran.
    pub plan: StepPlan,
    /// The results, in plan order.
    pub results: Vec<JobResult>,
}

impl StageRun {
    /// Whether every job passed (also when none was needed).
    pub fn passed(&self) -> bool {
        self.results.iter().all(|r| r.outcome == Outcome::Passed)
    }
}

/// What [`run_stage`] ended with. Its exit code ([`run_state::StageOutcome`]) is 0 when every
/// job passed (or none was needed), 1 when a job failed, timed out or was cancelled, or the
/// gate refused the step.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// The step ran.
    Ran(StageRun),
    /// A step from `deploy` on did not start because the gate refuses the run: the gate's
    /// reasons (the step is recorded failed with [`StepOutcome::refusal`]).
    Refused(Vec<String>),
}

impl StepOutcome {
    /// Why the step did not start, as its record and the binary say it; `None` when it ran.
    pub fn refusal(&self) -> Option<String> {
        match self {
            StepOutcome::Ran(_) => None,
            StepOutcome::Refused(reasons) => {
                Some(format!("the gate refuses this run, so nothing is deployed: {}", reasons.join("; ")))
            }
        }
    }
}

impl run_state::StageOutcome for StepOutcome {
    fn exit_code(&self) -> u8 {
        match self {
            StepOutcome::Ran(run) if run.passed() => 0,
            StepOutcome::Ran(_) | StepOutcome::Refused(_) => 1,
        }
    }
}

/// The environment a command run against a deployed environment gets: `PIPELINE_ENV`, and
/// every output of every stack deployed there as `STACK_OutputKey` (the configured stack name
/// upper-cased, `-` as `_`), and also as plain `OutputKey` when no other stack has that key.
///
/// ```
/// use std::collections::BTreeMap;
/// use run_state::{DeployedStack, StackOutputs};
///
/// let stack = DeployedStack {
///     stack_name: "app-dev".into(),
///     region: "us-east-1".into(),
///     stack_id: None,
///     outputs: BTreeMap::from([("ApiUrl".to_owned(), "https://api.example".to_owned())]),
/// };
/// let outputs = StackOutputs { environments: BTreeMap::from([("dev".into(), BTreeMap::from([("web-app".into(), stack)]))]) };
/// let vars = step_runner::environment_vars(&outputs, "dev").unwrap();
/// assert!(vars.contains(&("WEB_APP_ApiUrl".into(), "https://api.example".into())));
/// assert!(vars.contains(&("ApiUrl".into(), "https://api.example".into())));
/// assert!(vars.contains(&("PIPELINE_ENV".into(), "dev".into())));
/// assert!(step_runner::environment_vars(&outputs, "prod").is_err());
/// ```
pub fn environment_vars(outputs: &StackOutputs, environment: &str) -> Result<Vec<(String, String)>, Error> {
    let stacks = outputs
        .environments
        .get(environment)
        .ok_or_else(|| run_state::outputs::LookupError::NoEnvironment { environment: environment.to_owned() })?;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for stack in stacks.values() {
        for key in stack.outputs.keys() {
            *seen.entry(key.as_str()).or_default() += 1;
        }
    }
    let mut vars = vec![("PIPELINE_ENV".to_owned(), environment.to_owned())];
    for (name, stack) in stacks {
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        for (key, value) in &stack.outputs {
            vars.push((format!("{prefix}_{key}"), value.clone()));
            if seen[key.as_str()] == 1 {
                vars.push((key.clone(), value.clone()));
            }
        }
    }
    Ok(vars)
}

/// Checks every section of `pipeline.toml` this stage reads (`[components]`, `[runner]`,
/// `[gate]`), so a binary reports a config mistake before anything else, even with no run.
pub fn check_config(config: &pipeline_config::ConfigFile) -> Result<(), Error> {
    Components::from_config(config)?;
    config.section::<RunnerSettings>(RunnerSettings::SECTION)?;
    GatePolicy::from_config(config)?;
    Ok(())
}

/// Loads `[components]` and `[runner]` of the context's config, and the run's diff.
pub fn load(context: &StageContext, run_dir: &RunDir) -> Result<(Components, RunnerSettings, DiffReport), Error> {
    let config = context.required_config()?;
    let components = Components::from_config(config)?;
    let settings: RunnerSettings = config.section(RunnerSettings::SECTION)?;
    let diff: DiffReport = run_dir.read_json(RunFile::Diff)?;
    Ok((components, settings, diff))
}

/// What the step needs before a command runs, or the gate's refusal.
enum Prepared {
    /// Boxed: the config, the diff and the plan are large beside a refusal.
    Ready(Box<Ready>),
    Refused(Vec<String>),
}

struct Ready {
    components: Components,
    settings: RunnerSettings,
    diff: DiffReport,
    plan: StepPlan,
}

/// Reads the config and the run's diff, checks the tree, asks the gate (from `deploy` on) and
/// plans, with the deployed environment's variables in every job.
fn prepare(inputs: &StageInputs<'_>, step: Step, environment: Option<&str>) -> Result<Prepared, Error> {
    let StageInputs { context, run, store, .. } = *inputs;
    if !matches!(step, Step::Build | Step::Test | Step::Deploy | Step::E2e) {
        return Err(Error::NoCommand(step));
    }
    let deployed = match (step, environment) {
        (Step::E2e, None) => return Err(Error::NeedsEnvironment(step)),
        (_, Some(env)) => environment_vars(&StackOutputs::read(run)?, env)?,
        (_, None) => Vec::new(),
    };
    let (components, settings, diff) = load(context, run)?;
    context.check_tree(&diff.head, diff.worktree)?;
    if step >= Step::Deploy {
        let policy: GatePolicy = context.config.section(GatePolicy::SECTION)?;
        let (_, gate) = gate::run_gate(store, run, &policy, Some(step))?;
        if !gate.allowed {
            return Ok(Prepared::Refused(gate.reasons));
        }
    }
    let mut plan = plan(step, &components, &diff, run, &settings);
    for job in &mut plan.jobs {
        // The deployed environment first, so a command's own `env` can still override it.
        job.env.splice(0..0, deployed.iter().cloned());
    }
    Ok(Prepared::Ready(Box::new(Ready { components, settings, diff, plan })))
}

/// The step stage for one run, as the `step-runner` binary and a pipeline both run it:
/// reads the config and the run's diff, checks that the checked-out tree is the run's
/// commit, refuses a deploy while the gate refuses, then plans, runs and records the step.
/// An error or a refusal before any command runs is recorded as the step failed (component
/// `pipeline`), so the gate never sees a step that silently did not happen.
///
/// `environment` names the deployed environment an `e2e` step runs against: its stack outputs
/// (the run's `stack-outputs.json`) reach every command as environment variables
/// ([`environment_vars`]).
pub fn run_stage(
    inputs: &StageInputs<'_>,
    step: Step,
    environment: Option<&str>,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<StepOutcome, Error> {
    let StageInputs { context, run, store, cancel } = *inputs;
    let not_run = |error: String| -> Result<(), Error> {
        let head = run.head().unwrap_or_default();
        let mut record = StepRecord::new(&run.run_id, &head, PIPELINE, step, Status::Failed);
        record.started_at = Some(SystemTime::now());
        record.ended_at = record.started_at;
        record.details.error = Some(error);
        store.record(&record)?;
        Ok(())
    };
    let Ready { components, settings, diff, plan } = match prepare(inputs, step, environment) {
        Ok(Prepared::Ready(ready)) => *ready,
        Ok(Prepared::Refused(reasons)) => {
            let refused = StepOutcome::Refused(reasons);
            not_run(refused.refusal().unwrap_or_default())?;
            return Ok(refused);
        }
        Err(error) => {
            not_run(error.to_string())?;
            return Err(error);
        }
    };
    let runner =
        Runner { workdir: context.root.clone(), parallelism: settings.parallelism(), path_prefix: Vec::new(), cancel };
    let scope = CoverageScope { components: &components, diff: &diff };
    let results = run_step(store, &run.run_id, &diff.head, &plan, &runner, scope, on_event)?;
    Ok(StepOutcome::Ran(StageRun { plan, results }))
}
