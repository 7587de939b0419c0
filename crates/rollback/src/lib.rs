//! An environment back to an earlier release, without rebuilding anything.
//!
//! Every deploy that passes records a release of its environment ([`run_state::release`]): per
//! stack the template's S3 URL and the parameters, per function the zip and its `CodeSha256`,
//! the site's release. A rollback chooses an earlier one ([`choose`]: `--to RELEASE` or
//! `--steps N`), plans what differs ([`plan()`], pure; [`RollbackPlan::describe`] is printed
//! before anything changes) and applies it ([`run_rollback`]): each stack through one change
//! set back to the release's template URL and parameters (stack-deployer's change set
//! functions; a `NoEcho` parameter with `UsePreviousValue`), each function by
//! `UpdateFunctionCode` from the release's zip, verified by `CodeSha256` (lambda-packager's
//! update), the site's files, runtime config and manifest put back with one invalidation
//! (frontend-publisher's restore). What is needed is checked first (the templates, zips and
//! site files still there, the stacks in a state that can be updated, no resource removed
//! since that the earlier template cannot take back (kept by its `DeletionPolicy`, or a
//! stateful one deleted with its data), no deploy holding a stack's lock): a refusal changes
//! nothing.
//!
//! A rollback is a run of its own: the environment's deploy step recorded per component (so
//! `gate::mark_success` moves the environment's success mark back to the release's commit, the
//! next diff base), a release of its own recorded (a rollback of it goes forward again). An
//! environment that needs an approval (`[gate.environments.NAME] approval`) is rolled back
//! only once the rollback's run is approved (`status-report approve --run RUN --by NAME`, then
//! `rollback --resume RUN`), unless `--emergency`, which is recorded.
//!
//! Automated ([`after_failed_check`], called by the pipeline and by `rollback
//! --after-failed-check` in CodeBuild): when a post-deploy check of a run failed (E2E, the
//! environment's site check) that the environment's `rollback_on` lists, the environment goes
//! back to the release before the run's, without approval (that release passed before), the
//! reason in the rollback's records; the failed run records it too and stays red.
//!
//! ```
//! use rollback::{Target, choose};
//!
//! let error = choose("dev", &[], &Target::Steps(1)).unwrap_err();
//! assert_eq!(error.to_string(), "`dev` has no release recorded; a deploy that passes records one");
//! assert_eq!(error.exit_code(), 2);
//! ```

mod auto;
#[cfg(feature = "cli")]
pub mod cli;
mod plan;
mod stage;
mod takeback;

pub use auto::{AfterCheck, Check, after_failed_check, failed_checks};
pub use plan::{FunctionStep, RollbackPlan, StackStep, Target, choose, plan};
pub use stage::{Clients, Event, Options, Outcome, RollbackInputs, rebuild_store, run_rollback};

/// What stops a rollback, each naming the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment has no release.
    #[error("`{env}` has no release recorded; a deploy that passes records one")]
    NoRelease {
        /// The environment.
        env: String,
    },
    /// `--to` names no release of the environment.
    #[error("`{env}` has no release `{id}`; its latest are {known} (`status-report releases --env {env}`)")]
    UnknownRelease {
        /// The environment.
        env: String,
        /// The id given.
        id: String,
        /// The latest ids.
        known: String,
    },
    /// `--steps` goes back further than there are releases.
    #[error("`{env}` has {count} release(s): it cannot go back {steps} step(s)")]
    TooFewReleases {
        /// The environment.
        env: String,
        /// Steps asked.
        steps: usize,
        /// Releases there are.
        count: usize,
    },
    /// The release asked for is the one running.
    #[error("`{env}` already runs release `{id}`")]
    AlreadyRunning {
        /// The environment.
        env: String,
        /// The release.
        id: String,
    },
    /// What the release needs is gone from S3.
    #[error("release `{id}` of `{env}` cannot be restored: {what} is gone (expired or deleted)")]
    Expired {
        /// The environment.
        env: String,
        /// The release.
        id: String,
        /// What is gone.
        what: String,
    },
    /// A stack is in a state no change set can start from.
    #[error("stack {stack} is {status}: {next}")]
    StackState {
        /// The stack name.
        stack: String,
        /// Its status.
        status: String,
        /// What to do.
        next: String,
    },
    /// A stack's earlier template cannot take back a resource removed since (kept by its
    /// `DeletionPolicy`, or stateful and deleted with its data).
    #[error("stack {stack} cannot go back to release {release}: {resource} {why}")]
    CannotTakeBack {
        /// The stack name.
        stack: String,
        /// The release.
        release: String,
        /// The resource: logical id and type.
        resource: String,
        /// Why, and what to do.
        why: String,
    },
    /// A stack did not go back.
    #[error("stack {stack} did not go back: {outcome}")]
    StackFailed {
        /// The stack name.
        stack: String,
        /// How it ended.
        outcome: String,
    },
    /// The environment needs an approval the rollback's run does not have.
    #[error(
        "rolling back `{env}` needs an approval: run {run_id} is {state}; `status-report approve --run {run_id} --by NAME`, then `rollback --env {env} --resume {run_id}` (or `--emergency`)"
    )]
    NotApproved {
        /// The environment.
        env: String,
        /// The rollback's run.
        run_id: String,
        /// Its approval state.
        state: String,
    },
    /// The environment moved since the rollback was approved.
    #[error("`{env}` runs release `{now}`, not `{approved}` the approval covered; request the rollback again")]
    Moved {
        /// The environment.
        env: String,
        /// What runs now.
        now: String,
        /// What the approval was for.
        approved: String,
    },
    /// The rollback was stopped (Ctrl-C, SIGTERM, the pipeline's cancel) before it changed anything.
    #[error("the rollback of `{env}` was stopped before it changed anything; run it again to go back")]
    Cancelled {
        /// The environment.
        env: String,
    },
    /// An automated rollback ended without rolling back (it neither waits nor plans only).
    #[error("the rollback of `{env}` did not apply; run `rollback --env {env}` by hand")]
    NotApplied {
        /// The environment.
        env: String,
    },
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] pipeline_config::ConfigError),
    /// The store, the run folder, or a lock held by a deploy.
    #[error(transparent)]
    State(#[from] run_state::Error),
    /// A stack's change set.
    #[error(transparent)]
    Deploy(Box<stack_deployer::Error>),
    /// A function's code.
    #[error("function {function}")]
    Code {
        /// The function.
        function: String,
        /// What failed.
        #[source]
        source: lambda_packager::update::UpdateError,
    },
    /// The site.
    #[error(transparent)]
    Site(Box<frontend_publisher::Error>),
    /// The approval record.
    #[error(transparent)]
    Approval(#[from] gate::approval::Error),
    /// An AWS call failed.
    #[error("{operation} {target}: {kind}")]
    Aws {
        /// The operation.
        operation: &'static str,
        /// What it was about.
        target: String,
        /// What it means.
        kind: aws_target::ErrorKind,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<stack_deployer::Error> for Error {
    fn from(error: stack_deployer::Error) -> Error {
        Error::Deploy(Box::new(error))
    }
}

impl From<frontend_publisher::Error> for Error {
    fn from(error: frontend_publisher::Error) -> Error {
        Error::Site(Box::new(error))
    }
}

impl Error {
    /// The binary's exit code: 2 bad input (an unknown or expired release, no approval, a lock
    /// held, the config), 3 a stack's state or a resource its earlier template cannot take
    /// back, 1 a rollback that failed while applying.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::StackState { .. } | Error::CannotTakeBack { .. } => 3,
            Error::StackFailed { .. }
            | Error::Deploy(_)
            | Error::Code { .. }
            | Error::Site(_)
            | Error::Aws { .. }
            | Error::Cancelled { .. } => 1,
            _ => 2,
        }
    }
}
