//! What the `rollback` binary and `cargo xtask rollback` share: the choice of release as flags,
//! and how a rollback's events are shown (the `cli` feature).

use crate::{Event, Options, Target};

/// Which release, and how: the flags both commands take.
#[derive(Debug, Clone, clap::Args)]
pub struct Choice {
    /// The environment ([deploy.environments.NAME]).
    #[arg(long = "env", value_name = "NAME")]
    pub environment: String,
    /// The release to go back to.
    #[arg(long, value_name = "RELEASE", conflicts_with = "steps")]
    pub to: Option<String>,
    /// How many releases back [default: 1].
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip the environment's approval (recorded in the rollback's run and its release).
    #[arg(long)]
    pub emergency: bool,
    /// Go on with a rollback run once approved (`status-report approve --run RUN --by NAME`).
    #[arg(long, value_name = "RUN", conflicts_with_all = ["to", "steps"])]
    pub resume: Option<String>,
}

impl Choice {
    /// The options [`crate::run_rollback`] takes.
    pub fn options(&self) -> Options {
        Options {
            env: self.environment.clone(),
            target: match (&self.to, self.steps) {
                (Some(id), _) => Target::To(id.clone()),
                (None, steps) => Target::Steps(steps.unwrap_or(1)),
            },
            dry_run: self.dry_run,
            emergency: self.emergency,
            resume: self.resume.clone(),
            first_poll: None,
            reason: None,
            cfn_role_arn: None,
        }
    }
}

/// How a rollback's event is shown (on stderr, by the caller): the plan, each stack's
/// progress, each part done; `None` for what is not shown.
pub fn render(event: Event) -> Option<String> {
    match event {
        Event::Planned(plan) => Some(plan.to_string()),
        Event::Stack(stack_deployer::Event::Stack { stack, message }) => Some(format!("{stack}: {message}\n")),
        Event::Stack(_) => None,
        Event::Done(line) => Some(format!("{line}\n")),
    }
}
