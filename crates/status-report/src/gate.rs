//! The gate: may the pipeline go on? A pure function of a run's records, what the run
//! requires, and a policy.

use std::collections::BTreeSet;

use run_state::{PIPELINE, RunDir, RunFile, Status, Step, StepRecord, Store};
use serde::{Deserialize, Serialize};
use source_diff::DiffReport;

/// `[gate]` in `pipeline.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatePolicy {
    /// Steps a run must have passed. A pipeline-wide step (`validate`) must have a passed
    /// record; a per-component step (`test`, `build`, `deploy`) must have passed for every
    /// component the diff marks changed that has a command for it.
    pub required_steps: Vec<Step>,
    /// Whether a required step skipped for an unchanged component counts as passed. A changed
    /// component's required step never counts as passed when skipped.
    pub allow_skipped: bool,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy { required_steps: vec![Step::Validate, Step::Test], allow_skipped: true }
    }
}

impl GatePolicy {
    /// The section of `pipeline.toml` this crate owns.
    pub const SECTION: &'static str = "gate";
}

/// What a run requires, from its diff: the (component, step) pairs that must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Components the diff marks changed.
    pub changed: BTreeSet<String>,
    /// Per-component steps the change requires (a changed component with a command for the step).
    pub steps: BTreeSet<(String, Step)>,
}

impl Requirements {
    /// What a diff requires: each changed component's steps.
    pub fn from_diff(diff: &DiffReport) -> Requirements {
        let mut required = Requirements::default();
        for (name, change) in diff.components.iter().filter(|(_, c)| c.changed) {
            required.changed.insert(name.clone());
            for &step in &change.steps {
                required.steps.insert((name.clone(), step));
            }
        }
        required
    }

    /// Requirements given directly (tests, other pipelines).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Step)>) -> Requirements {
        let mut required = Requirements::default();
        for (component, step) in pairs {
            required.changed.insert(component.to_string());
            required.steps.insert((component.to_string(), step));
        }
        required
    }
}

/// The gate's answer, with every reason for a "no".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateDecision {
    /// Whether the pipeline may go on.
    pub allowed: bool,
    /// Why not, one line per problem, in pipeline order.
    pub reasons: Vec<String>,
}

/// Whether a step concerns the whole pipeline rather than one component.
fn pipeline_wide(step: Step) -> bool {
    matches!(step, Step::Source | Step::Diff | Step::Validate)
}

/// Decides from the records of one run and what its diff requires (`None`: the run has no
/// diff, which refuses it).
pub fn decide(records: &[StepRecord], required: Option<&Requirements>, policy: &GatePolicy) -> GateDecision {
    let mut reasons = Vec::new();
    if records.is_empty() {
        reasons.push("the run has no records".to_string());
    }
    let changed = |component: &str| required.is_some_and(|r| r.changed.contains(component));
    for record in records {
        let what = format!("{} {}", record.component, record.step);
        match record.status {
            Status::Failed => reasons.push(match &record.details.error {
                Some(error) => format!("{what} failed: {error}"),
                None => format!("{what} failed"),
            }),
            Status::Cancelled => reasons.push(format!("{what} was cancelled")),
            Status::Running | Status::Pending => reasons.push(format!("{what} has not finished ({})", record.status)),
            Status::Skipped
                if policy.required_steps.contains(&record.step)
                    && required.is_some_and(|r| r.steps.contains(&(record.component.clone(), record.step))) =>
            {
                reasons.push(format!("{what} was skipped, but {} changed and requires it", record.component));
            }
            Status::Skipped
                if policy.required_steps.contains(&record.step)
                    && !policy.allow_skipped
                    && !changed(&record.component) =>
            {
                reasons.push(format!("{what} was skipped but [gate] allow_skipped = false requires it"));
            }
            Status::Passed | Status::Skipped => {}
        }
    }
    let Some(required) = required else {
        reasons.push(format!(
            "the run has no diff ({}); start runs with `source-diff --new-run`",
            RunFile::Diff.relative_path()
        ));
        return GateDecision { allowed: false, reasons };
    };
    let has = |component: &str, step: Step| records.iter().any(|r| r.component == component && r.step == step);
    for &step in &policy.required_steps {
        if pipeline_wide(step) {
            if !has(PIPELINE, step) {
                reasons.push(format!("{step} never ran for this run, but [gate] requires it; run `{step}` first"));
            }
            continue;
        }
        for (component, _) in required.steps.iter().filter(|(_, s)| *s == step) {
            if !has(component, step) {
                reasons.push(format!("{component} {step} never ran, but the change requires it"));
            }
        }
    }
    GateDecision { allowed: reasons.is_empty(), reasons }
}

/// The gate as it stands before `step`: only records of earlier steps count, and only
/// requirements of earlier steps. A deploy asks this before it starts.
pub fn decide_before(
    step: Step,
    records: &[StepRecord],
    required: Option<&Requirements>,
    policy: &GatePolicy,
) -> GateDecision {
    let earlier: Vec<StepRecord> = records.iter().filter(|r| r.step < step).cloned().collect();
    let policy = GatePolicy {
        required_steps: policy.required_steps.iter().copied().filter(|s| *s < step).collect(),
        allow_skipped: policy.allow_skipped,
    };
    decide(&earlier, required, &policy)
}

/// Reads a run's records and diff and decides (all of it, or before `before`).
pub fn run_gate(
    store: &dyn Store,
    run_dir: &RunDir,
    policy: &GatePolicy,
    before: Option<Step>,
) -> Result<(Vec<StepRecord>, GateDecision), run_state::Error> {
    let records = store.run(&run_dir.run_id)?;
    let required = match run_dir.read_json::<DiffReport>(RunFile::Diff) {
        Ok(diff) => Some(Requirements::from_diff(&diff)),
        Err(run_state::Error::MissingInput { .. }) => None,
        Err(other) => return Err(other),
    };
    let decision = match before {
        Some(step) => decide_before(step, &records, required.as_ref(), policy),
        None => decide(&records, required.as_ref(), policy),
    };
    Ok((records, decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(component: &str, step: Step, status: Status) -> StepRecord {
        StepRecord::new("r1", "abc", component, step, status)
    }

    fn validated(mut records: Vec<StepRecord>) -> Vec<StepRecord> {
        records.insert(0, rec(PIPELINE, Step::Validate, Status::Passed));
        records
    }

    #[test]
    fn passes_when_everything_required_passed() {
        let records = validated(vec![
            rec("pipeline", Step::Diff, Status::Passed),
            rec("api", Step::Test, Status::Passed),
            rec("web", Step::Test, Status::Skipped),
        ]);
        let required = Requirements::from_pairs([("api", Step::Test)]);
        assert_eq!(
            decide(&records, Some(&required), &GatePolicy::default()),
            GateDecision { allowed: true, reasons: vec![] }
        );
    }

    #[test]
    fn says_no_with_every_reason() {
        let mut failed = rec("api", Step::Test, Status::Failed);
        failed.details.error = Some("exit 1".into());
        let records = vec![failed, rec("web", Step::Test, Status::Running), rec("db", Step::Test, Status::Skipped)];
        let required = Requirements::from_pairs([("api", Step::Test), ("db", Step::Test), ("queue", Step::Test)]);
        let decision = decide(&records, Some(&required), &GatePolicy::default());
        assert!(!decision.allowed);
        assert_eq!(
            decision.reasons,
            vec![
                "api test failed: exit 1".to_string(),
                "web test has not finished (running)".to_string(),
                "db test was skipped, but db changed and requires it".to_string(),
                "validate never ran for this run, but [gate] requires it; run `validate` first".to_string(),
                "queue test never ran, but the change requires it".to_string(),
            ]
        );
    }

    #[test]
    fn a_required_step_that_never_ran_refuses_even_with_no_record_of_the_component() {
        let records = validated(vec![rec("pipeline", Step::Diff, Status::Passed)]);
        let required = Requirements::from_pairs([("api_handler", Step::Test)]);
        let decision = decide(&records, Some(&required), &GatePolicy::default());
        assert_eq!(decision.reasons, ["api_handler test never ran, but the change requires it"]);
    }

    #[test]
    fn a_run_without_a_diff_is_refused() {
        let records = validated(vec![rec("api", Step::Test, Status::Passed)]);
        let decision = decide(&records, None, &GatePolicy::default());
        assert!(!decision.allowed);
        assert!(decision.reasons[0].starts_with("the run has no diff"), "{decision:?}");
    }

    #[test]
    fn strict_policy_refuses_skipped_steps_of_unchanged_components() {
        let policy = GatePolicy { required_steps: vec![Step::Test], allow_skipped: false };
        let decision = decide(&[rec("api", Step::Test, Status::Skipped)], Some(&Requirements::default()), &policy);
        assert!(!decision.allowed);
        let lenient = GatePolicy { required_steps: vec![Step::Test], allow_skipped: true };
        assert!(decide(&[rec("api", Step::Test, Status::Skipped)], Some(&Requirements::default()), &lenient).allowed);
    }

    #[test]
    fn before_a_deploy_only_earlier_steps_count() {
        let mut failed = rec("api", Step::Test, Status::Failed);
        failed.details.error = Some("exit 1".into());
        let records = validated(vec![failed, rec("api", Step::Deploy, Status::Running)]);
        let required = Requirements::from_pairs([("api", Step::Test)]);
        let decision = decide_before(Step::Deploy, &records, Some(&required), &GatePolicy::default());
        assert_eq!(decision.reasons, ["api test failed: exit 1"]);
        let ok = validated(vec![rec("api", Step::Test, Status::Passed), rec("api", Step::Deploy, Status::Running)]);
        assert!(decide_before(Step::Deploy, &ok, Some(&required), &GatePolicy::default()).allowed);
    }

    #[test]
    fn empty_run_is_refused() {
        assert!(!decide(&[], Some(&Requirements::default()), &GatePolicy::default()).allowed);
    }
}
