//! What every pipeline stage shares: the run folder and its files, step
//! records, the status store, redaction, and the stage context.
//!
//! A pipeline run is one folder (`<monorepo>/.pipeline/runs/<run-id>/`, a
//! [`RunDir`]) whose files ([`RunFile`]) the stages hand to each other, plus
//! the records of its steps ([`StepRecord`]) in a [`Store`]. The embedded store
//! is [`FileStore`], an append-only JSON-lines file many processes can write at
//! once. Every stage starts from a [`StageContext`]: the monorepo's root found
//! one way, `pipeline.toml` read once, the state folder, the store.
//!
//! ```
//! use run_state::{FileStore, RunDir, RunFile, Status, Step, StepRecord, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path())?;
//! let run = RunDir::create(dir.path(), "run-1")?;
//! run.write(RunFile::Diff, b"{}")?;
//! store.record(&StepRecord::new("run-1", "abc123", "api", Step::Test, Status::Passed))?;
//! assert_eq!(store.run("run-1")?[0].status, Status::Passed);
//!
//! // A stage that needs a file no earlier stage wrote says which stage to run.
//! let missing = run.input(RunFile::Validate).unwrap_err();
//! assert!(missing.to_string().ends_with("is missing; run `validate` for this run first"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The last successful commit, which `source-diff` uses as the next base,
//! moves only through [`Store::mark_success`], which refuses a run whose
//! deploy did not pass; it is kept per environment ([`Store::last_success`]).
//!
//! With the `dynamodb` feature, `DynamoStore` keeps the same records in a
//! DynamoDB table shared by CodeBuild actions; [`StoreChoice`] (`--store`,
//! `PIPELINE_STORE`, `[store]`) says which store a stage uses.

mod choice;
mod context;
mod digest;
#[cfg(feature = "dynamodb")]
pub mod dynamo;
pub mod outputs;
mod prune;
mod record;
mod recording;
pub mod redact;
pub mod release;
mod run_dir;
mod stage;
mod store;

use std::path::{Path, PathBuf};

pub use choice::{StoreChoice, StoreSettings, check_table_name};
pub use context::{StageContext, StageOptions, TreeState};
pub use digest::ReleaseDigest;
#[cfg(feature = "dynamodb")]
pub use dynamo::DynamoStore;
pub use outputs::{DeployedStack, StackOutputs};
pub use pipeline_config::fs;
pub use prune::{Prune, Pruned};
pub use record::{
    Coverage, Details, FileCoverage, PIPELINE, Ratio, Status, Step, StepRecord, Supersede, merge_later, percent_text,
    process_died, supersede, this_process,
};
pub use recording::{Recording, record_pipeline_step, record_step, record_step_async};
pub use release::{Release, ReleaseStore};
pub use run_dir::{RunDir, RunFile, runs_dir, write_atomic, write_atomic_with};
pub use stage::{StageInputs, StageOutcome, StagePlan};
pub use store::{DEFAULT_SUCCESS_ENV, FileStore, LockRecord, Store, SuccessMark, check_success};

/// What can go wrong with the run folder, the store or the stage context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The store file holds something that is not a record.
    #[error("{}: {message}; the store is damaged: move it aside to start afresh", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where and what.
        message: String,
        /// The error that says why it is not a record (the JSON parser's), never repeated in
        /// the message.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A file of the run is not what the stage that writes it writes.
    #[error("{}: {message}", path.display())]
    BadRunFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// No records for a run id.
    #[error("no run `{run_id}` in the status store; `status-report runs` lists them")]
    UnknownRun {
        /// The id asked for.
        run_id: String,
    },
    /// No run folder yet.
    #[error("no pipeline run in {}; start one with `source-diff --new-run` (or `cargo xtask pipeline`), or pass --run-dir", state_dir.display())]
    NoRun {
        /// Where runs were looked for.
        state_dir: PathBuf,
    },
    /// `--run-dir` names no folder.
    #[error("{} is not a run folder; pass a folder under .pipeline/runs/, or start a run with `source-diff --new-run`", path.display())]
    NoRunDir {
        /// The path given.
        path: PathBuf,
    },
    /// A file an earlier stage writes is missing.
    #[error("{} is missing; run {written_by} for this run first", path.display())]
    MissingInput {
        /// The file.
        path: PathBuf,
        /// The stage that writes it.
        written_by: &'static str,
    },
    /// A run cannot become the new base.
    #[error("run `{run_id}` cannot be marked successful: {reason}")]
    NotSuccessful {
        /// The run.
        run_id: String,
        /// Why not.
        reason: String,
    },
    /// A name that would become part of a path is not safe.
    #[error("{what}: {message}")]
    BadName {
        /// What the name is of.
        what: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Someone else holds a lock.
    #[error("`{name}` is locked by {holder} since {}; wait for it to end, or for the lock to expire", since.map(|s| humantime::format_rfc3339_seconds(s).to_string()).unwrap_or_else(|| "an unknown time".into()))]
    Locked {
        /// The lock.
        name: String,
        /// Who holds it.
        holder: String,
        /// Since when.
        since: Option<std::time::SystemTime>,
    },
    /// A step already finished; a finished step is never recorded again (a late writer loses).
    #[error("{component} {step} of run `{run_id}` already finished ({status}); a finished step is not recorded again")]
    StepFinished {
        /// The run.
        run_id: String,
        /// The component.
        component: String,
        /// The step.
        step: Step,
        /// How it finished.
        status: Status,
    },
    /// The status table does not exist.
    #[error(
        "DynamoDB table `{table}` does not exist; create it with cfn/pipeline.yaml (StatusTable), or name another with --store dynamodb://TABLE, PIPELINE_STORE or `[store] dynamodb_table` in pipeline.toml"
    )]
    NoTable {
        /// The table.
        table: String,
    },
    /// A call to the remote store failed.
    #[error("{what}")]
    Remote {
        /// Which store, and what kind of failure.
        what: String,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store is remote and the caller gave no way to reach it.
    #[error(
        "the status store is {choice}; open it with `run_state::cli::StageArgs::context_on` (a binary built with the `dynamodb` feature)"
    )]
    StoreNotConnected {
        /// The store chosen.
        choice: StoreChoice,
    },
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] pipeline_config::ConfigError),
    /// The checked-out tree is not the tree of the run's commit.
    #[error("{reason}; the steps would test other code than the commit they are recorded for: {fix}")]
    TreeMismatch {
        /// What differs.
        reason: String,
        /// What to do.
        fix: String,
    },
    /// git could not be asked about the tree.
    #[error("cannot check the work tree with git ({message}); install git, or run from a checkout of the run's commit")]
    Git {
        /// What failed.
        message: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }

    /// A store at `path` that holds, at `what` (`line 3`, an item), something it did not write;
    /// `cause` says why (kept as the source).
    pub fn corrupt(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Corrupt { path: path.into(), message: what.into(), source: Some(cause.into()) }
    }
}

/// Checks a name that becomes part of a path (see [`pipeline_config::check_name`]).
pub fn check_name(what: &'static str, name: &str) -> Result<(), Error> {
    pipeline_config::check_name(name).map_err(|message| Error::BadName { what, message })
}

/// An error and its causes on one line (`message: cause: cause`), as binaries print them and
/// records keep them.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace('\n', " ")
}

/// A new run id: sortable by time, readable, unique per commit and millisecond.
pub fn new_run_id(commit: &str, now: std::time::SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(now).to_string();
    let compact: String = stamp.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let commit: String = prefix(commit, 8).chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{compact}-{commit}")
}

/// The first `chars` characters of `text`: slicing bytes would panic inside a
/// multi-byte character, and a commit given on the command line can be any text.
pub fn prefix(text: &str, chars: usize) -> &str {
    text.char_indices().nth(chars).map_or(text, |(at, _)| &text[..at])
}

#[cfg(feature = "cli")]
pub mod cli;
