//! The gate decision and reports of a pipeline run.
//!
//! Each stage records the state of its steps in the status store
//! ([`run_state::Store`]). The gate ([`decide`], from the [`gate`] crate and
//! re-exported here) is a pure function of a run's records, what the run's
//! diff requires ([`Requirements`]) and a [`GatePolicy`]: it refuses what
//! failed, what never finished, and what was required but never ran. [`RunReport`] renders a run as Markdown, JSON,
//! JUnit XML, or (with the `cli` feature) a terminal table.
//!
//! ```
//! use run_state::{FileStore, PIPELINE, Status, Step, StepRecord, Store};
//! use status_report::{GatePolicy, Requirements, RunReport};
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path())?;
//! store.record(&StepRecord::new("run-1", "abc123", PIPELINE, Step::Validate, Status::Passed))?;
//! store.record(&StepRecord::new("run-1", "abc123", "api", Step::Test, Status::Passed))?;
//! // The diff said `api` changed and must be tested, and `web` too: `web` never ran.
//! let required = Requirements::from_pairs([("api", Step::Test), ("web", Step::Test)]);
//! let records = store.run("run-1")?;
//! let gate = status_report::decide(&records, Some(&required), &GatePolicy::default());
//! assert_eq!(gate.reasons, ["web test never ran, but the change requires it"]);
//! let junit = RunReport::new("run-1", records, gate).to_junit();
//! assert!(junit.contains(r#"<testsuite name="api""#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "aws")]
pub mod codepipeline;
pub mod dashboard;
pub mod notify;
pub mod page;
pub mod releases;
mod report;
mod scan;
pub mod stats;

pub use gate::approval;
pub use gate::{
    ComponentVerdict, DeployDecision, EnvironmentRule, GateDecision, GatePolicy, Requirements, decide, decide_before,
    decide_deploy, mark_success, run_deploy_decision, run_deploy_decision_for, run_gate, success_refusals,
};
pub use report::{MARKDOWN_LIMIT, RunReport, format_duration};
