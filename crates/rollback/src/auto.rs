//! Automated rollback: an environment back to its previous release when a post-deploy check of
//! a run failed and the environment's `rollback_on` lists that check.

use std::fmt;

use std::time::SystemTime;

use run_state::{PIPELINE, Status, Step, StepRecord, Store};
use stack_deployer::config::RollbackOn;

use crate::Error;
use crate::plan::Target;
use crate::stage::{Clients, Event, Options, Outcome, RollbackInputs, run_rollback};

/// A post-deploy check whose failure can roll an environment back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The end-to-end tests (`e2e`, run against the first environment).
    E2e,
    /// The site check of the environment (`dast`, `prod-dast` in a promoted one).
    SiteCheck,
}

impl Check {
    /// Every check a run's records can show failed.
    pub const ALL: [Check; 2] = [Check::E2e, Check::SiteCheck];

    /// The `rollback_on` entry that names it.
    pub fn rollback_on(self) -> RollbackOn {
        match self {
            Check::E2e => RollbackOn::E2e,
            Check::SiteCheck => RollbackOn::SiteCheck,
        }
    }

    /// The step its result is recorded under in `env`.
    pub fn step(self, policy: &gate::GatePolicy, env: &str) -> Step {
        match self {
            Check::E2e => Step::E2e,
            Check::SiteCheck => policy.check_step(env),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rollback_on().as_str())
    }
}

/// What [`after_failed_check`] did.
#[derive(Debug)]
pub enum AfterCheck {
    /// No check of the run failed: nothing to do.
    NoFailedCheck,
    /// Checks failed, but the environment's `rollback_on` lists none of them.
    NotListed {
        /// The checks that failed.
        failed: Vec<Check>,
    },
    /// The run released nothing in the environment (its deploy did not reach it).
    NotReleased,
    /// The environment no longer runs the run's release (a later deploy or rollback).
    NotCurrent {
        /// The release it runs.
        running: String,
    },
    /// The run's release is the environment's first: there is nothing to go back to.
    NoPreviousRelease {
        /// The checks that failed.
        failed: Vec<Check>,
    },
    /// Rolled back.
    RolledBack {
        /// The checks that failed.
        failed: Vec<Check>,
        /// The rollback's own run.
        run_id: String,
        /// The release the environment runs again.
        to: String,
        /// The failed run's release.
        from: String,
    },
}

impl run_state::StageOutcome for AfterCheck {
    /// 0 whatever it did: the failed check keeps the run red, and an automated rollback that
    /// could not apply is an [`Error`].
    fn exit_code(&self) -> u8 {
        0
    }
}

impl AfterCheck {
    /// Whether the environment was rolled back.
    pub fn rolled_back(&self) -> bool {
        matches!(self, AfterCheck::RolledBack { .. })
    }

    /// One line saying what happened to `env` after run `run_id`.
    pub fn line(&self, env: &str, run_id: &str) -> String {
        match self {
            AfterCheck::NoFailedCheck => format!("no post-deploy check of `{env}` failed in run {run_id}: no rollback"),
            AfterCheck::NotListed { failed } => format!(
                "{} failed in run {run_id}, but `{env}` does not roll back on it ([deploy.environments.{env}] rollback_on): no rollback",
                names(failed)
            ),
            AfterCheck::NotReleased => format!("run {run_id} deployed nothing to `{env}`: no rollback"),
            AfterCheck::NotCurrent { running } => {
                format!("`{env}` no longer runs run {run_id}'s release (it runs release {running}): no rollback")
            }
            AfterCheck::NoPreviousRelease { failed } => format!(
                "{} failed in run {run_id}, but `{env}` has no release before it to go back to: nothing changed",
                names(failed)
            ),
            AfterCheck::RolledBack { failed, run_id: rollback, to, from } => format!(
                "{} failed in run {run_id}: `{env}` rolled back from release {from} to release {to} (run {rollback})",
                names(failed)
            ),
        }
    }
}

/// The failed run's own record of what followed its failed check: its `pipeline` deploy step,
/// failed (the run stays red), naming the check and the rollback.
struct Marker<'a> {
    store: &'a dyn Store,
    run_id: &'a str,
    commit: &'a str,
    step: Step,
    started: SystemTime,
}

impl Marker<'_> {
    /// Written once the rollback ended. A store that never replaces a finished step keeps an
    /// earlier attempt's record (an automated rollback asked again after a refusal): the
    /// rollback's own run says what this one did.
    fn record(&self, text: String) -> Result<(), Error> {
        let mut record = StepRecord::new(self.run_id, self.commit, PIPELINE, self.step, Status::Failed);
        record.started_at = Some(self.started);
        record.ended_at = Some(SystemTime::now());
        record.details.error = Some(text);
        match self.store.record(&record) {
            Err(run_state::Error::StepFinished { .. }) | Ok(()) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

fn names(checks: &[Check]) -> String {
    checks.iter().map(Check::to_string).collect::<Vec<_>>().join(" and ")
}

/// The checks of `env` that failed in a run, from its records (pure).
pub fn failed_checks(records: &[StepRecord], policy: &gate::GatePolicy, env: &str) -> Vec<Check> {
    Check::ALL
        .into_iter()
        .filter(|check| {
            let step = check.step(policy, env);
            records.iter().any(|r| r.step == step && r.status == Status::Failed)
        })
        .collect()
}

/// After the post-deploy checks of run `run_id` in `env`: when one failed that `env`'s
/// `rollback_on` lists, and the run released something in `env`, `env` goes back to the
/// release before the run's ([`run_rollback`], a run of its own whose records say why; no
/// approval asked: the release it restores was deployed and approved before). The failed run
/// records it too (its `pipeline` deploy step, failed, naming the check and the rollback), so
/// its report and notification say both; it stays red either way. Nothing changes otherwise,
/// and the answer says why. `cfn_role_arn` replaces the environment's (as the deploy was given).
/// It takes [`RollbackInputs`], not the failed run's [`run_state::StageInputs`]: it reads and
/// marks run `run_id` in the store only (its folder may be on another machine, as in CodeBuild),
/// and the rollback it starts is a run of its own.
pub async fn after_failed_check(
    inputs: &RollbackInputs<'_>,
    clients: &Clients,
    env: &str,
    run_id: &str,
    cfn_role_arn: Option<String>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<AfterCheck, Error> {
    let RollbackInputs { context, store, .. } = *inputs;
    let config = context.required_config()?;
    let policy = gate::GatePolicy::from_config(config)?;
    run_state::check_name("environment", env)?;
    run_state::check_name("run id", run_id)?;
    let listed = stack_deployer::DeploySettings::from_config(config)?.environment(config, env)?.rollback_on;
    let all_failed = failed_checks(&store.run(run_id)?, &policy, env);
    if all_failed.is_empty() {
        return Ok(AfterCheck::NoFailedCheck);
    }
    let failed: Vec<Check> = all_failed.iter().copied().filter(|c| listed.contains(&c.rollback_on())).collect();
    if failed.is_empty() {
        return Ok(AfterCheck::NotListed { failed: all_failed });
    }
    let releases = store.releases(env)?;
    let Some(position) = releases.iter().rposition(|r| r.id == run_id) else { return Ok(AfterCheck::NotReleased) };
    if let Some(last) = releases.last().filter(|r| r.id != run_id) {
        return Ok(AfterCheck::NotCurrent { running: last.id.clone() });
    }
    let commit = releases[position].commit.clone();
    let marker = Marker { store, run_id, commit: &commit, step: policy.deploy_step(env), started: SystemTime::now() };
    let Some(previous) = position.checked_sub(1).map(|i| &releases[i]) else {
        let done = AfterCheck::NoPreviousRelease { failed };
        marker.record(done.line(env, run_id))?;
        return Ok(done);
    };
    let options = Options {
        env: env.to_string(),
        target: Target::To(previous.id.clone()),
        dry_run: false,
        emergency: false,
        resume: None,
        first_poll: None,
        reason: Some(format!("automatic: {} failed in run {run_id}", names(&failed))),
        cfn_role_arn,
    };
    let result = run_rollback(inputs, clients, &options, on_event).await;
    let done = match &result {
        Ok(Outcome::RolledBack { run_id: rollback, plan, .. }) => Some(AfterCheck::RolledBack {
            failed: failed.clone(),
            run_id: rollback.clone(),
            to: plan.to.id.clone(),
            from: plan.from.id.clone(),
        }),
        _ => None,
    };
    let text = match (&done, &result) {
        (Some(done), _) => done.line(env, run_id),
        (None, Err(error)) => {
            format!("{} failed; the rollback of `{env}` failed: {}", names(&failed), run_state::error_chain(error))
        }
        (None, Ok(_)) => format!("{} failed; the rollback of `{env}` did not apply", names(&failed)),
    };
    marker.record(text)?;
    result?;
    done.ok_or_else(|| Error::NotApplied { env: env.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> gate::GatePolicy {
        let config = pipeline_config::ConfigFile::from_text(
            std::path::Path::new("pipeline.toml"),
            "[gate.environments.prod]\nafter = \"dev\"\napproval = true\n",
        );
        gate::GatePolicy::from_config(&config).unwrap()
    }

    fn record(component: &str, step: Step, status: Status) -> StepRecord {
        StepRecord::new("r2", "c2", component, step, status)
    }

    #[test]
    fn the_failed_checks_are_the_environments_own() {
        let policy = policy();
        let records = vec![
            record("api", Step::E2e, Status::Failed),
            record("web", Step::Dast, Status::Passed),
            record("web", Step::ProdDast, Status::Failed),
        ];
        assert_eq!(failed_checks(&records, &policy, "dev"), [Check::E2e]);
        assert_eq!(failed_checks(&records, &policy, "prod"), [Check::E2e, Check::SiteCheck]);
        assert!(failed_checks(&records[1..2], &policy, "dev").is_empty());
        let done = AfterCheck::RolledBack {
            failed: vec![Check::E2e, Check::SiteCheck],
            run_id: "r3".into(),
            to: "r1".into(),
            from: "r2".into(),
        };
        assert_eq!(
            done.line("dev", "r2"),
            "e2e and site-check failed in run r2: `dev` rolled back from release r2 to release r1 (run r3)"
        );
        assert!(done.rolled_back());
        let none = AfterCheck::NoPreviousRelease { failed: vec![Check::E2e] };
        assert_eq!(
            none.line("dev", "r2"),
            "e2e failed in run r2, but `dev` has no release before it to go back to: nothing changed"
        );
        assert!(!none.rolled_back());
    }
}
