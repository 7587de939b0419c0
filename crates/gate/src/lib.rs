//! May the pipeline go on, and may it deploy? The gate and the deploy decision,
//! pure functions of a run's records, what the run's diff requires
//! ([`Requirements`]) and a [`GatePolicy`], plus the approval records a
//! promoted environment's deploy needs ([`approval`]).
//!
//! Every stage that deploys asks here (stack-deployer, frontend-publisher,
//! step-runner's gate check); reporting (`status-report`) renders what it
//! decided. It depends only on the store, the config reader and the diff's
//! report, so a deploying stage builds no reporting.
//!
//! ```
//! use run_state::{FileStore, PIPELINE, Status, Step, StepRecord, Store};
//! use gate::{GatePolicy, Requirements};
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path())?;
//! store.record(&StepRecord::new("run-1", "abc123", PIPELINE, Step::Validate, Status::Passed))?;
//! store.record(&StepRecord::new("run-1", "abc123", "api", Step::Test, Status::Passed))?;
//! // The diff said `api` changed and must be tested, and `web` too: `web` never ran.
//! let required = Requirements::from_pairs([("api", Step::Test), ("web", Step::Test)]);
//! let gate = gate::decide(&store.run("run-1")?, Some(&required), &GatePolicy::default());
//! assert!(!gate.allowed);
//! assert_eq!(gate.reasons, ["web test never ran, but the change requires it"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod approval;
mod decision;

pub use decision::{
    ComponentVerdict, DeployDecision, EnvironmentRule, GateDecision, GatePolicy, Requirements, decide, decide_before,
    decide_deploy, mark_success, run_deploy_decision, run_deploy_decision_for, run_gate, success_refusals,
};
