//! The gate: may the pipeline go on? A pure function of a run's records and a policy.

use serde::{Deserialize, Serialize};

use crate::record::{Status, Step, StepRecord};

/// `[gate]` in `pipeline.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatePolicy {
    /// Steps every component with records in the run must have passed (or skipped, when allowed).
    pub required_steps: Vec<Step>,
    /// Whether a skipped required step counts as passed (it was not needed for this change).
    pub allow_skipped: bool,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy { required_steps: vec![Step::Test], allow_skipped: true }
    }
}

impl GatePolicy {
    /// The section of `pipeline.toml` this crate owns.
    pub const SECTION: &'static str = "gate";
}

/// The gate's answer, with every reason for a "no".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateDecision {
    /// Whether the pipeline may go on.
    pub allowed: bool,
    /// Why not, one line per problem, in pipeline order.
    pub reasons: Vec<String>,
}

/// Decides from the records of one run.
pub fn decide(records: &[StepRecord], policy: &GatePolicy) -> GateDecision {
    let mut reasons = Vec::new();
    if records.is_empty() {
        reasons.push("the run has no records".to_string());
    }
    for record in records {
        let what = format!("{} {}", record.component, record.step);
        match record.status {
            Status::Failed => reasons.push(match &record.details.error {
                Some(error) => format!("{what} failed: {error}"),
                None => format!("{what} failed"),
            }),
            Status::Cancelled => reasons.push(format!("{what} was cancelled")),
            Status::Running | Status::Pending => reasons.push(format!("{what} has not finished ({})", record.status)),
            Status::Skipped if !policy.allow_skipped && policy.required_steps.contains(&record.step) => {
                reasons.push(format!("{what} was skipped but [gate] requires it"));
            }
            Status::Passed | Status::Skipped => {}
        }
    }
    let mut components: Vec<&str> =
        records.iter().map(|r| r.component.as_str()).filter(|c| *c != crate::PIPELINE).collect();
    components.sort_unstable();
    components.dedup();
    for component in components {
        for &step in &policy.required_steps {
            if !records.iter().any(|r| r.component == component && r.step == step) {
                reasons.push(format!("{component} {step} has no record but [gate] requires it"));
            }
        }
    }
    GateDecision { allowed: reasons.is_empty(), reasons }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(component: &str, step: Step, status: Status) -> StepRecord {
        StepRecord::new("r1", "abc", component, step, status)
    }

    #[test]
    fn passes_when_everything_passed_or_skipped() {
        let records = [
            rec("pipeline", Step::Diff, Status::Passed),
            rec("api", Step::Test, Status::Passed),
            rec("web", Step::Test, Status::Skipped),
        ];
        assert_eq!(decide(&records, &GatePolicy::default()), GateDecision { allowed: true, reasons: vec![] });
    }

    #[test]
    fn says_no_with_every_reason() {
        let mut failed = rec("api", Step::Test, Status::Failed);
        failed.details.error = Some("exit 1".into());
        let records = [failed, rec("web", Step::Test, Status::Running), rec("db", Step::Build, Status::Passed)];
        let decision = decide(&records, &GatePolicy::default());
        assert!(!decision.allowed);
        assert_eq!(
            decision.reasons,
            vec![
                "api test failed: exit 1".to_string(),
                "web test has not finished (running)".to_string(),
                "db test has no record but [gate] requires it".to_string(),
            ]
        );
    }

    #[test]
    fn strict_policy_refuses_skipped_required_steps() {
        let policy = GatePolicy { required_steps: vec![Step::Test], allow_skipped: false };
        let decision = decide(&[rec("api", Step::Test, Status::Skipped)], &policy);
        assert!(!decision.allowed);
    }

    #[test]
    fn empty_run_is_refused() {
        assert!(!decide(&[], &GatePolicy::default()).allowed);
    }
}
