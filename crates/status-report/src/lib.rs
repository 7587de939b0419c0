//! The record of every pipeline step, the gate decision, and reports.
//!
//! Each stage records the state of its steps ([`StepRecord`]: run, commit,
//! component, step, status, times, details) in a [`Store`]. The embedded
//! default is [`FileStore`], an append-only JSON-lines file under the
//! monorepo's `.pipeline/` that many processes can write at once. The gate
//! ([`decide`]) is a pure function of a run's records and a [`GatePolicy`];
//! [`RunReport`] renders a run for a terminal, Markdown, JSON or JUnit XML.
//!
//! ```
//! use status_report::{FileStore, GatePolicy, RunReport, Status, Step, StepRecord, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path())?;
//! store.record(&StepRecord::new("run-1", "abc123", "api", Step::Test, Status::Passed))?;
//! let records = store.run("run-1")?;
//! let gate = status_report::decide(&records, &GatePolicy::default());
//! assert!(gate.allowed);
//! let junit = RunReport::new("run-1", records, gate).to_junit();
//! assert!(junit.contains(r#"<testsuite name="api""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The last successful commit, which `source-diff` uses as the next base,
//! moves only through [`Store::mark_success`], which refuses a run whose
//! deploy did not pass.

mod gate;
mod record;
pub mod redact;
mod report;
mod run_dir;
mod store;

use std::path::{Path, PathBuf};

pub use gate::{GateDecision, GatePolicy, decide};
pub use record::{Details, PIPELINE, Status, Step, StepRecord};
pub use report::{MARKDOWN_LIMIT, RunReport, format_duration};
pub use run_dir::{RunDir, write_atomic};
pub use store::{FileStore, Store, SuccessMark, check_success, record_pipeline_step};

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store file holds something that is not a record.
    #[error("{}: {message}; the store is damaged: move it aside to start afresh", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where and what.
        message: String,
    },
    /// No records for a run id.
    #[error("no run `{run_id}` in the status store; `status-report runs` lists them")]
    UnknownRun {
        /// The id asked for.
        run_id: String,
    },
    /// No run folder yet.
    #[error("no pipeline run in {}; run `source-diff --output` or `cargo xtask pipeline` first, or pass --run-dir", state_dir.display())]
    NoRun {
        /// Where runs were looked for.
        state_dir: PathBuf,
    },
    /// A file an earlier stage writes is missing.
    #[error("{} is missing; run {written_by} for this run first", path.display())]
    MissingInput {
        /// The file.
        path: PathBuf,
        /// The stage that writes it.
        written_by: String,
    },
    /// A run cannot become the new base.
    #[error("run `{run_id}` cannot be marked successful: {reason}")]
    NotSuccessful {
        /// The run.
        run_id: String,
        /// Why not.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// A new run id: sortable by time, readable, unique per commit and millisecond.
pub fn new_run_id(commit: &str, now: std::time::SystemTime) -> String {
    let stamp = humantime::format_rfc3339_millis(now).to_string();
    let compact: String = stamp.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{}-{}", compact, prefix(commit, 8))
}

/// The first `chars` characters of `text`: slicing bytes would panic inside a
/// multi-byte character, and a commit given on the command line can be any text.
pub(crate) fn prefix(text: &str, chars: usize) -> &str {
    text.char_indices().nth(chars).map_or(text, |(at, _)| &text[..at])
}
