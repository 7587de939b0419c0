//! The one shape every stage of a run has.
//!
//! A stage takes [`StageInputs`] (what every stage of a run shares) and its own options. Where
//! it has something to decide before any I/O, a pure `plan` returns a [`StagePlan`] (serialisable,
//! with [`describe`](StagePlan::describe) for a dry run); `apply` (or `run_stage`, plan then apply
//! with the step recorded) does the I/O and returns a [`StageOutcome`], whose
//! [`exit_code`](StageOutcome::exit_code) the stage's binary exits with. The diff stage is the
//! one stage without inputs: it begins the run the others take.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::{RunDir, StageContext, Store};

/// What every stage of a run starts from: the repository and its config, the run's folder,
/// the status store and the cancel flag. Built once by a binary (from its common options) or by
/// the pipeline, and handed to each stage as it is.
#[derive(Clone, Copy)]
pub struct StageInputs<'a> {
    /// The repository, its `pipeline.toml` and the state folder.
    pub context: &'a StageContext,
    /// The run's folder (its commit, its inputs and outputs by `RunFile`).
    pub run: &'a RunDir,
    /// Where the stage records its steps.
    pub store: &'a dyn Store,
    /// Set to stop: running commands are killed, a change set not yet executed is deleted.
    pub cancel: &'a AtomicBool,
}

impl<'a> StageInputs<'a> {
    /// The inputs of one stage of `run`.
    pub fn new(context: &'a StageContext, run: &'a RunDir, store: &'a dyn Store, cancel: &'a AtomicBool) -> Self {
        StageInputs { context, run, store, cancel }
    }

    /// Whether the stage was asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for StageInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageInputs")
            .field("root", &self.context.root)
            .field("run", &self.run.run_id)
            .field("cancelled", &self.cancelled())
            .finish_non_exhaustive()
    }
}

/// A stage's plan: what it would do, decided before any I/O, printed by a dry run.
pub trait StagePlan: serde::Serialize {
    /// The plan for a person, one line per action.
    fn describe(&self) -> String;
}

/// What a stage's apply returns: its verdict as the exit code its binary ends with
/// (0 passed, 1 failed or refused, 3 and up the stage's own documented verdicts; 2 is kept for
/// an error, which is no outcome).
pub trait StageOutcome {
    /// The exit code of this verdict.
    fn exit_code(&self) -> u8;

    /// Whether the stage passed.
    fn passed(&self) -> bool {
        self.exit_code() == 0
    }
}
