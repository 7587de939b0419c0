//! Runs one step's command (test, build …) for the components a change affects.
//!
//! The step is planned first ([`plan`], pure: which components run which
//! command and why the others are skipped), then applied ([`run_step`]):
//! commands run in parallel with a bound, each with a timeout, each log kept
//! in the run folder, and every state recorded in the status store, so a
//! step is never left `running` (a timeout or a cancel marks it failed or
//! cancelled).
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use source_diff::{BaseRequest, Components, Repo};
//! use status_report::{FileStore, RunDir, Step};
//! use step_runner::{Runner, RunnerSettings};
//!
//! let repo = Repo::open("monorepo".as_ref())?;
//! let components = Components::load(&repo.root().join("pipeline.toml"))?;
//! let diff = source_diff::diff(&repo, &components, &BaseRequest::default(), "HEAD", false)?;
//! let run_dir = RunDir::create(&repo.root().join(".pipeline"), "run-1")?;
//! let plan = step_runner::plan(Step::Test, &components, &diff, &run_dir, &RunnerSettings::default());
//! let cancel = AtomicBool::new(false);
//! let runner = Runner { workdir: repo.root().into(), parallelism: 4, path_prefix: vec![], cancel: &cancel };
//! let store = FileStore::open(&repo.root().join(".pipeline"))?;
//! let results = step_runner::run_step(&store, &run_dir.run_id, &diff.head, &plan, &runner, &|_event| {})?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod run;

use std::time::Duration;

use serde::Deserialize;
use source_diff::{Components, DiffReport};
use status_report::{Details, RunDir, Status, Step, StepRecord, Store};

pub use run::{Event, Job, JobResult, Outcome, Runner};

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
}

impl RunnerSettings {
    /// The section of `pipeline.toml` this crate owns.
    pub const SECTION: &'static str = "runner";

    /// The number of commands to run at once.
    pub fn parallelism(&self) -> usize {
        self.parallelism.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1)
    }
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What a step will do: the jobs to run and the components skipped, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPlan {
    /// The step.
    pub step: Step,
    /// Commands to run.
    pub jobs: Vec<Job>,
    /// Components not run, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Errors of the step runner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This step has no per-component command.
    #[error("step `{0}` has no per-component command in [components]; use test, build or deploy")]
    NoCommand(Step),
    /// Recording in the status store failed.
    #[error(transparent)]
    Store(#[from] status_report::Error),
}

impl StepPlan {
    /// The plan as text, for a dry run.
    pub fn describe(&self) -> String {
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
        for (component, reason) in &self.skipped {
            out.push_str(&format!("skip {component} {}: {reason}\n", self.step));
        }
        out
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
    for component in components.iter() {
        let command = match step {
            Step::Test => component.test.as_ref(),
            Step::Build => component.build.as_ref(),
            Step::Deploy => component.deploy.as_ref(),
            _ => None,
        };
        let changed = diff.components.get(&component.name).is_some_and(|c| c.changed);
        match (changed, command) {
            (false, _) => skipped.push((component.name.clone(), "unchanged since the base".to_string())),
            (true, None) => skipped.push((component.name.clone(), format!("no {step} command"))),
            (true, Some(command)) => jobs.push(Job {
                component: component.name.clone(),
                command: command.run.clone(),
                timeout: command.timeout.or(settings.timeout).unwrap_or(DEFAULT_TIMEOUT),
                log_path: run_dir.log_path(&component.name, step.as_str()),
                config_key: format!("components.{}.{step}", component.name),
                stdout_path: None,
            }),
        }
    }
    StepPlan { step, jobs, skipped }
}

/// Runs a planned step and records every state in the store: skipped
/// components at once, each job as running when it starts and as passed,
/// failed or cancelled when it ends. Returns the results in plan order.
pub fn run_step(
    store: &dyn Store,
    run_id: &str,
    commit: &str,
    plan: &StepPlan,
    runner: &Runner<'_>,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Vec<JobResult>, Error> {
    for (component, reason) in &plan.skipped {
        let mut record = StepRecord::new(run_id, commit, component, plan.step, Status::Skipped);
        record.details.note = Some(reason.clone());
        store.record(&record)?;
    }
    for job in &plan.jobs {
        store.record(&StepRecord::new(run_id, commit, &job.component, plan.step, Status::Pending))?;
    }
    // The store is written from the workers; the first error is kept and returned.
    let store_error = std::sync::Mutex::new(None);
    let keep = |result: Result<(), status_report::Error>| {
        if let Err(e) = result {
            store_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
    };
    let results = runner.run(plan.jobs.clone(), &|event| {
        match &event {
            Event::Started(job) => {
                let mut record = StepRecord::new(run_id, commit, &job.component, plan.step, Status::Running);
                record.started_at = Some(std::time::SystemTime::now());
                record.details.log_path = Some(job.log_path.display().to_string());
                keep(store.record(&record));
            }
            Event::Finished(result) => keep(store.record(&finished_record(run_id, commit, plan.step, result))),
        }
        on_event(event);
    });
    match store_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(error) => Err(error.into()),
        None => Ok(results),
    }
}

/// The final record of a job.
pub fn finished_record(run_id: &str, commit: &str, step: Step, result: &JobResult) -> StepRecord {
    let (status, error) = match &result.outcome {
        Outcome::Passed => (Status::Passed, None),
        Outcome::Failed(message) => (Status::Failed, Some(message.clone())),
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
        note: None,
    };
    record
}
