//! The gate: may the pipeline go on? A pure function of a run's records, what the run
//! requires, and a policy.

use std::collections::{BTreeMap, BTreeSet};

use pipeline_config::{ConfigError, ConfigFile, Spanned};
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
    /// What an environment's deploy needs besides the required steps (`[gate.environments.NAME]`).
    /// An environment not listed deploys after the gate alone, recorded as `deploy`.
    pub environments: BTreeMap<String, EnvironmentRule>,
}

/// `[gate.environments.NAME]`: a promoted environment (production).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRule {
    /// The environment whose deploy must have passed in the same run first (`"dev"`). Setting
    /// it makes this environment a promotion: its deploy is recorded as `prod-deploy` and the
    /// end-to-end tests must have passed too.
    #[serde(default)]
    pub after: Option<Spanned<String>>,
    /// Whether an approval (`status-report approve`) must have been recorded in the run.
    #[serde(default)]
    pub approval: bool,
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            required_steps: vec![Step::Validate, Step::Test],
            allow_skipped: true,
            environments: BTreeMap::new(),
        }
    }
}

impl GatePolicy {
    /// The section of `pipeline.toml` this crate owns.
    pub const SECTION: &'static str = "gate";

    /// Parses `[gate]` of a config read once and checks its environments: `after` names
    /// another environment that is not itself promoted (two tiers: `deploy`, then
    /// `prod-deploy`), and `approval` is only set with `after`. Errors name the key and line.
    pub fn from_config(config: &ConfigFile) -> Result<GatePolicy, ConfigError> {
        let policy: GatePolicy = config.section(Self::SECTION)?;
        for (name, rule) in &policy.environments {
            let key = format!("gate.environments.{name}");
            pipeline_config::check_name(name).map_err(|m| ConfigError::file(&config.path, format!("{key}: {m}")))?;
            match &rule.after {
                Some(after) => {
                    let at = |message: String| {
                        ConfigError::at(&config.path, &config.text, after.span(), format!("{key}.after"), message)
                    };
                    let earlier = after.get_ref();
                    pipeline_config::check_name(earlier).map_err(at)?;
                    if earlier == name {
                        return Err(at(format!(
                            "`{name}` cannot come after itself; name the environment deployed before it"
                        )));
                    }
                    if policy.environments.get(earlier).is_some_and(|r| r.after.is_some()) {
                        return Err(at(format!(
                            "`{earlier}` is itself deployed after another environment; a promotion must follow an environment without `after` (two tiers)"
                        )));
                    }
                }
                None if rule.approval => {
                    return Err(ConfigError::file(
                        &config.path,
                        format!(
                            "{key}.approval: set without `after`; name the environment deployed before it (after = \"dev\")"
                        ),
                    ));
                }
                None => {}
            }
        }
        Ok(policy)
    }

    /// The first promoted environment and the one it comes after (`("dev", "prod")`), by name:
    /// no environment name is special.
    pub fn promotion(&self) -> Option<(&str, &str)> {
        self.environments
            .iter()
            .find_map(|(name, rule)| rule.after.as_ref().map(|a| (a.get_ref().as_str(), name.as_str())))
    }

    /// The step an environment's deploy is recorded under: `prod-deploy` for a promoted
    /// environment (one with `after`), `deploy` for any other.
    pub fn deploy_step(&self, environment: &str) -> Step {
        match self.environments.get(environment) {
            Some(rule) if rule.after.is_some() => Step::ProdDeploy,
            _ => Step::Deploy,
        }
    }

    /// The step an environment's site check is recorded under: `prod-dast` for a promoted
    /// environment, `dast` for any other (each environment's check is a result of its own).
    pub fn check_step(&self, environment: &str) -> Step {
        match self.deploy_step(environment) {
            Step::ProdDeploy => Step::ProdDast,
            _ => Step::Dast,
        }
    }
}

/// What a run requires, from its diff: the (component, step) pairs that must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    /// Components the diff marks changed.
    pub changed: BTreeSet<String>,
    /// Per-component steps the change requires (a changed component with a command for the step).
    pub steps: BTreeSet<(String, Step)>,
    /// Components changed only through their dependencies (none of their own files, no global
    /// input), with those dependencies: such a component has nothing of its own to deploy.
    pub through: BTreeMap<String, BTreeSet<String>>,
    /// Whether the run was begun with `--include-worktree` (its tree is no commit): it may be
    /// deployed to an environment without `after`, never promoted.
    pub worktree: bool,
    /// Components a deploy stage deploys under their own name (a stack's components, the
    /// site's): a changed one is promoted only when its deploy to the earlier environment
    /// passed, even when that deploy left no record at all. Set by the stage that asks
    /// ([`Requirements::deployed_by`]); a changed component with a record of the earlier deploy
    /// is held to it whether listed or not.
    pub deployed: BTreeSet<String>,
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
            if change.files.is_empty() && !change.because_of.is_empty() && diff.global_inputs_changed.is_empty() {
                required.through.insert(name.clone(), change.because_of.iter().cloned().collect());
            }
        }
        required.worktree = diff.worktree;
        required
    }

    /// The same requirements, with `components` deployed under their own name by the stage
    /// that asks ([`Requirements::deployed`]).
    pub fn deployed_by<I: IntoIterator<Item = S>, S: Into<String>>(mut self, components: I) -> Requirements {
        self.deployed.extend(components.into_iter().map(Into::into).filter(|c| c != PIPELINE));
        self
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
    matches!(step, Step::Source | Step::Diff | Step::Validate | Step::Approval)
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
        ..policy.clone()
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

/// Whether one component is deployed to an environment, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "reason", rename_all = "lowercase")]
pub enum ComponentVerdict {
    /// It changed and its own required steps passed: deploy it.
    Deploy,
    /// It did not change in this run: nothing to deploy (recorded skipped).
    Unchanged,
    /// It changed, but a step it needs did not pass (recorded skipped with the reason).
    Refused(String),
}

/// The deploy decision for one environment of one run: whether the environment may be
/// deployed at all, and then per component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployDecision {
    /// The environment.
    pub environment: String,
    /// The step its deploy is recorded under ([`GatePolicy::deploy_step`]).
    pub step: Step,
    /// Why nothing at all may be deployed (empty: the environment may be deployed). A
    /// promotion not earned (earlier environment, end-to-end tests, approval) or a
    /// pipeline-wide required step (validate) that did not pass.
    pub refused: Vec<String>,
    /// The changed components' verdicts (every other component is [`ComponentVerdict::Unchanged`]).
    pub components: BTreeMap<String, ComponentVerdict>,
    /// Conditions that did not apply, with why (`e2e: not required …`).
    pub notes: Vec<String>,
}

impl DeployDecision {
    /// The verdict for `component` ([`PIPELINE`] stands for what serves no component and is
    /// deployed whenever the environment is not refused).
    pub fn verdict(&self, component: &str) -> ComponentVerdict {
        if let Some(reason) = self.refused.first() {
            let more =
                if self.refused.len() > 1 { format!(" (and {} more)", self.refused.len() - 1) } else { String::new() };
            return ComponentVerdict::Refused(format!("`{}` refused: {reason}{more}", self.environment));
        }
        if component == PIPELINE {
            return ComponentVerdict::Deploy;
        }
        self.components.get(component).cloned().unwrap_or(ComponentVerdict::Unchanged)
    }

    /// Whether `component` is deployed.
    pub fn allows(&self, component: &str) -> bool {
        self.verdict(component) == ComponentVerdict::Deploy
    }

    /// The decision as `--dry-run` shows it: one line per component.
    pub fn describe(&self) -> String {
        let mut out = format!("deploy decision for `{}` (recorded as {}):\n", self.environment, self.step);
        for reason in &self.refused {
            out.push_str(&format!("  refused: {reason}\n"));
        }
        for (component, verdict) in &self.components {
            match verdict {
                ComponentVerdict::Deploy => out.push_str(&format!("  {component}: deploy\n")),
                ComponentVerdict::Unchanged => out.push_str(&format!("  {component}: unchanged\n")),
                ComponentVerdict::Refused(why) => out.push_str(&format!("  {component}: refused: {why}\n")),
            }
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out
    }
}

/// Whether a record of a required step counts as passed: passed, or skipped while the
/// component did not require it and the policy allows skipping.
fn why_not_passed(record: Option<&StepRecord>, required_by_change: bool, policy: &GatePolicy) -> Option<String> {
    let Some(record) = record else { return Some("never ran".to_string()) };
    match record.status {
        Status::Passed => None,
        Status::Skipped if !required_by_change && policy.allow_skipped => None,
        Status::Skipped if required_by_change => Some("was skipped, but the change requires it".to_string()),
        Status::Skipped => Some("was skipped but [gate] allow_skipped = false requires it".to_string()),
        Status::Failed => Some(match &record.details.error {
            Some(error) => format!("failed: {error}"),
            None => "failed".to_string(),
        }),
        Status::Cancelled => Some("was cancelled".to_string()),
        Status::Running | Status::Pending => Some(format!("has not finished ({})", record.status)),
    }
}

/// Decides what may be deployed to `environment` (pure).
///
/// A component is deployed only when the diff marks it changed and each of its own required
/// steps before the deploy (`[gate] required_steps`: `test`, `build`, … for which it has a
/// command) passed; a pipeline-wide required step (`validate`) that did not pass refuses every
/// component. A promoted environment (`[gate.environments.NAME] after = "dev"`) is refused
/// as a whole unless, in the same run, everything before it passed: every required step, the
/// earlier environment's deploy of every component that has one (and at least one deploy
/// record), every end-to-end test the change requires, and, with `approval = true`, an
/// approval ([`crate::approval`]). Without a diff (`required` is `None`) everything is refused.
pub fn decide_deploy(
    records: &[StepRecord],
    required: Option<&Requirements>,
    policy: &GatePolicy,
    environment: &str,
) -> DeployDecision {
    let step = policy.deploy_step(environment);
    let mut decision = DeployDecision {
        environment: environment.to_string(),
        step,
        refused: Vec::new(),
        components: BTreeMap::new(),
        notes: Vec::new(),
    };
    let Some(required) = required else {
        decision.refused.push(format!(
            "the run has no diff ({}); run source-diff for this run first",
            RunFile::Diff.relative_path()
        ));
        return decision;
    };
    let find = |component: &str, step: Step| records.iter().find(|r| r.component == component && r.step == step);
    let own_steps: Vec<Step> = policy.required_steps.iter().copied().filter(|s| *s < Step::Deploy).collect();
    for &required_step in own_steps.iter().filter(|s| pipeline_wide(**s)) {
        if let Some(why) = why_not_passed(find(PIPELINE, required_step), false, policy) {
            decision
                .refused
                .push(format!("{required_step} {why}; [gate] required_steps requires it before any deploy"));
        }
    }
    let promoted_after = policy.environments.get(environment).and_then(|rule| rule.after.as_ref().map(|a| (rule, a)));
    if let Some((rule, after)) = promoted_after {
        promotion_refusals(records, required, policy, rule, after.get_ref(), &mut decision);
    }
    for component in &required.changed {
        let mut refusals = Vec::new();
        if let Some((_, after)) = promoted_after
            && let Some(why) = not_deployed_before(find(component, Step::Deploy), required.deployed.contains(component))
        {
            let after = after.get_ref();
            refusals
                .push(format!("{why} `{after}` in this run; deploy it to `{after}` first (a preview is no deploy)"));
        }
        for &own in own_steps.iter().filter(|s| !pipeline_wide(**s)) {
            let required_by_change = required.steps.contains(&(component.clone(), own));
            let record = find(component, own);
            if !required_by_change && record.is_none() {
                // No command for this step: nothing to pass.
                continue;
            }
            if let Some(why) = why_not_passed(record, required_by_change, policy) {
                refusals.push(format!("its {own} {why}"));
            }
        }
        let verdict =
            if refusals.is_empty() { ComponentVerdict::Deploy } else { ComponentVerdict::Refused(refusals.join("; ")) };
        decision.components.insert(component.clone(), verdict);
    }
    // A component changed only through its dependencies carries their changes: when every one
    // of them is refused, it has nothing to deploy and is refused too.
    for (component, dependencies) in &required.through {
        if decision.components.get(component) != Some(&ComponentVerdict::Deploy) {
            continue;
        }
        let refused: Vec<&str> = dependencies
            .iter()
            .filter(|d| matches!(decision.components.get(*d), Some(ComponentVerdict::Refused(_))))
            .map(String::as_str)
            .collect();
        if !refused.is_empty() && refused.len() == dependencies.len() {
            decision.components.insert(
                component.clone(),
                ComponentVerdict::Refused(format!("it changed only through {}, refused", refused.join(", "))),
            );
        }
    }
    decision
}

/// Why a component's earlier deploy does not let it be promoted: its record of the earlier
/// environment's `deploy` did not pass, or there is none while the asking stage deploys it
/// (`listed`). `None`: promoted.
fn not_deployed_before(record: Option<&StepRecord>, listed: bool) -> Option<String> {
    let Some(record) = record else { return listed.then(|| "it was never deployed to".to_string()) };
    let why = |text: Option<&String>| text.map(|t| format!(" ({t})")).unwrap_or_default();
    match record.status {
        Status::Passed => None,
        Status::Skipped => {
            Some(format!("its deploy was skipped{}, so it was never deployed to", why(record.details.note.as_ref())))
        }
        Status::Failed => {
            Some(format!("its deploy failed{}, so it was never deployed to", why(record.details.error.as_ref())))
        }
        Status::Cancelled => Some("its deploy was cancelled, so it was never deployed to".to_string()),
        Status::Running | Status::Pending => {
            Some(format!("its deploy has not finished ({}), so it is not yet deployed to", record.status))
        }
    }
}

/// What stops a promotion: anything before it that did not pass.
fn promotion_refusals(
    records: &[StepRecord],
    required: &Requirements,
    policy: &GatePolicy,
    rule: &EnvironmentRule,
    after: &str,
    decision: &mut DeployDecision,
) {
    // Everything recorded before the promotion must have passed, approval aside (below).
    let earlier: Vec<StepRecord> =
        records.iter().filter(|r| r.step < Step::ProdDeploy && r.step != Step::Approval).cloned().collect();
    let mut steps: Vec<Step> = policy.required_steps.iter().copied().filter(|s| *s != Step::Approval).collect();
    for step in [Step::Deploy, Step::E2e] {
        if !steps.contains(&step) {
            steps.push(step);
        }
    }
    let gate = decide(&earlier, Some(required), &GatePolicy { required_steps: steps, ..policy.clone() });
    decision.refused.extend(gate.reasons.into_iter().map(|r| format!("before promotion: {r}")));
    if required.worktree {
        decision.refused.push(format!(
            "the run was begun with --include-worktree, so what `{after}` received is no commit and cannot be promoted; commit the change and start a new run"
        ));
    }
    if !records.iter().any(|r| r.step == Step::Deploy) {
        decision.refused.push(format!("the `{after}` deploy never ran in this run; deploy to `{after}` first"));
    } else if !records.iter().any(|r| r.step == Step::Deploy && r.status == Status::Passed) {
        decision.refused.push(format!(
            "no `{after}` deploy passed in this run (a preview is no deploy); deploy to `{after}` first"
        ));
    }
    if !required.steps.iter().any(|(_, s)| *s == Step::E2e) {
        decision.notes.push("e2e: not required (no changed component has an `e2e` command)".to_string());
    }
    if rule.approval {
        match crate::approval::state(records) {
            crate::approval::ApprovalState::Approved { .. } => {}
            crate::approval::ApprovalState::Unnamed => decision
                .refused
                .push("the approval names no approver; approve with `status-report approve --by NAME`".to_string()),
            crate::approval::ApprovalState::Refused { by, comment, .. } => decision.refused.push(match comment {
                Some(comment) => format!("approval was refused by {by}: {comment}"),
                None => format!("approval was refused by {by}"),
            }),
            crate::approval::ApprovalState::Waiting { .. } => decision
                .refused
                .push("approval is still waiting; approve with `status-report approve --by NAME`".to_string()),
            crate::approval::ApprovalState::NotRequested => decision
                .refused
                .push("no approval recorded for this run; approve with `status-report approve --by NAME`".to_string()),
        }
    } else {
        decision
            .notes
            .push(format!("approval: not required ([gate.environments.{}] approval = false)", decision.environment));
    }
}

/// Reads a run's records and diff and decides what may be deployed to `environment`. A
/// missing diff is an error naming the stage to run first.
pub fn run_deploy_decision(
    store: &dyn Store,
    run_dir: &RunDir,
    policy: &GatePolicy,
    environment: &str,
) -> Result<DeployDecision, run_state::Error> {
    run_deploy_decision_for(store, run_dir, policy, environment, std::iter::empty::<String>())
}

/// [`run_deploy_decision`] for a stage that deploys `deployed` under their own names (a
/// stack's components, the site's; [`Requirements::deployed`]).
pub fn run_deploy_decision_for<S: Into<String>>(
    store: &dyn Store,
    run_dir: &RunDir,
    policy: &GatePolicy,
    environment: &str,
    deployed: impl IntoIterator<Item = S>,
) -> Result<DeployDecision, run_state::Error> {
    let diff: DiffReport = run_dir.read_json(RunFile::Diff)?;
    let records: Vec<StepRecord> =
        store.run(&run_dir.run_id)?.into_iter().map(StepRecord::with_dead_runner_failed).collect();
    let required = Requirements::from_diff(&diff).deployed_by(deployed);
    Ok(decide_deploy(&records, Some(&required), policy, environment))
}

/// Why a run may not become `environment`'s last success (pure; `status-report mark-success`
/// asks it before the store's own check, [`run_state::check_success`]): the environment's
/// deploy step ([`GatePolicy::deploy_step`]) must have passed in the run, every changed
/// component that has a record of it must have passed it, and for a promoted environment every
/// changed component whose earlier deploy passed must have passed its promotion too. Empty:
/// it may.
pub fn success_refusals(
    records: &[StepRecord],
    required: &Requirements,
    policy: &GatePolicy,
    environment: &str,
) -> Vec<String> {
    let step = policy.deploy_step(environment);
    let find = |component: &str, step: Step| records.iter().find(|r| r.component == component && r.step == step);
    let mut reasons = Vec::new();
    if !records.iter().any(|r| r.step == step && r.status == Status::Passed) {
        reasons.push(format!(
            "no {step} passed in this run, so nothing reached `{environment}`; deploy to `{environment}` first"
        ));
    }
    for component in &required.changed {
        match find(component, step) {
            Some(record) if record.status != Status::Passed => reasons.push(format!(
                "{component} {step} is {}, so its change has not reached `{environment}`; deploy it first",
                record.status
            )),
            Some(_) => {}
            None if step == Step::ProdDeploy
                && find(component, Step::Deploy).is_some_and(|r| r.status == Status::Passed) =>
            {
                reasons.push(format!(
                    "{component} was deployed before but its {step} never ran, so its change has not reached `{environment}`; deploy it first"
                ));
            }
            None => {}
        }
    }
    // The site checked where it was deployed: a failed check is no success there.
    let check = policy.check_step(environment);
    for record in records.iter().filter(|r| r.step == check && r.status == Status::Failed) {
        reasons.push(format!(
            "{} {check} failed, so what `{environment}` serves did not pass its check; fix it and deploy again",
            record.component
        ));
    }
    reasons
}

/// Marks the run as `environment`'s last success (the next run's diff base there), as
/// `status-report mark-success` and a pipeline both do: refused with
/// [`run_state::Error::NotSuccessful`] when [`success_refusals`] names a reason (checked against
/// the run's diff when it has one), then by the store under its lock with the environment's
/// deploy step.
pub fn mark_success(
    store: &dyn Store,
    run_dir: &RunDir,
    policy: &GatePolicy,
    environment: &str,
) -> Result<run_state::SuccessMark, run_state::Error> {
    match run_dir.read_json::<DiffReport>(RunFile::Diff) {
        Ok(diff) => {
            let refusals =
                success_refusals(&store.run(&run_dir.run_id)?, &Requirements::from_diff(&diff), policy, environment);
            if !refusals.is_empty() {
                return Err(run_state::Error::NotSuccessful {
                    run_id: run_dir.run_id.clone(),
                    reason: refusals.join("; "),
                });
            }
        }
        Err(run_state::Error::MissingInput { .. }) => {}
        Err(other) => return Err(other),
    }
    store.mark_success_for(&run_dir.run_id, environment, policy.deploy_step(environment))
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
    fn a_failed_site_check_where_it_was_promoted_is_no_success_there() {
        let policy = prod_policy(false);
        let required = Requirements::from_pairs([("web", Step::Test)]);
        let deployed = vec![rec("web", Step::Dast, Status::Passed), rec("web", Step::ProdDeploy, Status::Passed)];
        assert!(success_refusals(&deployed, &required, &policy, "prod").is_empty());
        let mut failed = deployed.clone();
        failed.push(rec("web", Step::ProdDast, Status::Failed));
        let reasons = success_refusals(&failed, &required, &policy, "prod");
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("web prod-dast failed"), "{reasons:?}");
        // Dev's check is not prod's: a failed dast there says nothing of prod's success mark.
        assert_eq!(policy.check_step("dev"), Step::Dast);
        assert_eq!(policy.check_step("prod"), Step::ProdDast);
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
        let policy = GatePolicy { required_steps: vec![Step::Test], allow_skipped: false, ..Default::default() };
        let decision = decide(&[rec("api", Step::Test, Status::Skipped)], Some(&Requirements::default()), &policy);
        assert!(!decision.allowed);
        let lenient = GatePolicy { required_steps: vec![Step::Test], allow_skipped: true, ..Default::default() };
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

    fn prod_policy(approval: bool) -> GatePolicy {
        let text = format!(
            "[gate]\nrequired_steps = [\"validate\", \"test\"]\n[gate.environments.prod]\nafter = \"dev\"\napproval = {approval}\n"
        );
        GatePolicy::from_config(&ConfigFile::from_text("pipeline.toml".as_ref(), &text)).unwrap()
    }

    fn sample_required() -> Requirements {
        let mut required = Requirements::from_pairs([("api-handler", Step::Test), ("frontend", Step::Test)]);
        required.changed.insert("infra".into());
        required
    }

    #[test]
    fn a_failing_lambda_test_refuses_that_lambda_only() {
        let mut failed = rec("api-handler", Step::Test, Status::Failed);
        failed.details.error = Some("exit 1".into());
        let records = validated(vec![failed, rec("frontend", Step::Test, Status::Passed)]);
        let decision = decide_deploy(&records, Some(&sample_required()), &prod_policy(true), "dev");
        assert_eq!(decision.step, Step::Deploy);
        assert!(decision.refused.is_empty(), "{decision:?}");
        assert_eq!(decision.verdict("api-handler"), ComponentVerdict::Refused("its test failed: exit 1".into()));
        assert_eq!(decision.verdict("frontend"), ComponentVerdict::Deploy);
        // infra has no test command: its own checks are validate's, which passed.
        assert_eq!(decision.verdict("infra"), ComponentVerdict::Deploy);
        assert_eq!(decision.verdict("orchestration"), ComponentVerdict::Unchanged);
        assert!(
            decision.describe().contains("api-handler: refused: its test failed: exit 1"),
            "{}",
            decision.describe()
        );
    }

    #[test]
    fn a_component_changed_only_through_refused_dependencies_is_refused() {
        let mut failed = rec("api-handler", Step::Test, Status::Failed);
        failed.details.error = Some("exit 1".into());
        let records = validated(vec![failed, rec("frontend-builder", Step::Test, Status::Passed)]);
        let mut required = Requirements::from_pairs([("api-handler", Step::Test), ("frontend-builder", Step::Test)]);
        required.changed.insert("infra".into());
        required.through.insert("infra".into(), BTreeSet::from(["api-handler".to_string()]));
        let decision = decide_deploy(&records, Some(&required), &GatePolicy::default(), "dev");
        assert_eq!(
            decision.verdict("infra"),
            ComponentVerdict::Refused("it changed only through api-handler, refused".into())
        );
        // One of its dependencies allowed: it deploys (carrying that one's change).
        required.through.insert("infra".into(), BTreeSet::from(["api-handler".into(), "frontend-builder".into()]));
        let decision = decide_deploy(&records, Some(&required), &GatePolicy::default(), "dev");
        assert_eq!(decision.verdict("infra"), ComponentVerdict::Deploy);
        assert!(!decision.allows("api-handler"));
    }

    #[test]
    fn a_test_that_never_ran_or_a_failed_validate_refuses() {
        let records = vec![rec(PIPELINE, Step::Validate, Status::Failed), rec("frontend", Step::Test, Status::Passed)];
        let decision = decide_deploy(&records, Some(&sample_required()), &GatePolicy::default(), "dev");
        assert_eq!(decision.refused, ["validate failed; [gate] required_steps requires it before any deploy"]);
        assert!(!decision.allows("frontend") && !decision.allows(PIPELINE));
        assert_eq!(decision.components["api-handler"], ComponentVerdict::Refused("its test never ran".into()));
        let no_diff = decide_deploy(&records, None, &GatePolicy::default(), "dev");
        assert!(no_diff.refused[0].contains("run source-diff for this run first"), "{no_diff:?}");
    }

    fn dev_done() -> Vec<StepRecord> {
        validated(vec![
            rec("api-handler", Step::Test, Status::Passed),
            rec("frontend", Step::Test, Status::Passed),
            rec("infra", Step::Deploy, Status::Passed),
            rec("frontend", Step::Deploy, Status::Passed),
        ])
    }

    fn approved(mut records: Vec<StepRecord>, status: Status) -> Vec<StepRecord> {
        let mut approval = rec(PIPELINE, Step::Approval, status);
        approval.details.by = Some(Box::new("alice".into()));
        records.push(approval);
        records
    }

    #[test]
    fn production_needs_dev_e2e_and_approval_in_the_same_run() {
        let policy = prod_policy(true);
        let ok = decide_deploy(&approved(dev_done(), Status::Passed), Some(&sample_required()), &policy, "prod");
        assert_eq!(ok.step, Step::ProdDeploy);
        assert!(ok.refused.is_empty(), "{ok:?}");
        assert!(ok.allows("infra") && ok.allows("frontend"));
        assert_eq!(ok.notes, ["e2e: not required (no changed component has an `e2e` command)"]);

        let waiting = decide_deploy(&approved(dev_done(), Status::Pending), Some(&sample_required()), &policy, "prod");
        assert_eq!(waiting.refused, ["approval is still waiting; approve with `status-report approve --by NAME`"]);
        let refused = decide_deploy(&approved(dev_done(), Status::Failed), Some(&sample_required()), &policy, "prod");
        assert_eq!(refused.refused, ["approval was refused by alice"]);
        assert!(!refused.allows("frontend") && !refused.allows(PIPELINE));
        let none = decide_deploy(&dev_done(), Some(&sample_required()), &policy, "prod");
        assert_eq!(none.refused, ["no approval recorded for this run; approve with `status-report approve --by NAME`"]);
        // Without approval = true, no approval is needed, and the decision says so.
        let lenient = decide_deploy(&dev_done(), Some(&sample_required()), &prod_policy(false), "prod");
        assert!(lenient.refused.is_empty() && lenient.notes.iter().any(|n| n.starts_with("approval: not required")));
    }

    #[test]
    fn production_is_refused_when_dev_failed_or_never_ran_or_e2e_failed() {
        let policy = prod_policy(true);
        let mut records = approved(dev_done(), Status::Passed);
        records[3].status = Status::Failed;
        records[3].details.error = Some("stack master: failed".into());
        let decision = decide_deploy(&records, Some(&sample_required()), &policy, "prod");
        assert_eq!(decision.refused, ["before promotion: infra deploy failed: stack master: failed"]);
        assert_eq!(
            decision.verdict("frontend"),
            ComponentVerdict::Refused(
                "`prod` refused: before promotion: infra deploy failed: stack master: failed".into()
            )
        );

        let never = approved(
            validated(vec![
                rec("api-handler", Step::Test, Status::Passed),
                rec("frontend", Step::Test, Status::Passed),
            ]),
            Status::Passed,
        );
        let decision = decide_deploy(&never, Some(&sample_required()), &policy, "prod");
        assert_eq!(decision.refused, ["the `dev` deploy never ran in this run; deploy to `dev` first"]);

        let mut required = sample_required();
        required.steps.insert(("frontend".into(), Step::E2e));
        let decision = decide_deploy(&approved(dev_done(), Status::Passed), Some(&required), &policy, "prod");
        assert_eq!(decision.refused, ["before promotion: frontend e2e never ran, but the change requires it"]);
        let mut e2e_failed = approved(dev_done(), Status::Passed);
        e2e_failed.push(rec("frontend", Step::E2e, Status::Failed));
        let decision = decide_deploy(&e2e_failed, Some(&required), &policy, "prod");
        assert_eq!(decision.refused, ["before promotion: frontend e2e failed"]);
    }

    #[test]
    fn a_component_whose_dev_deploy_did_not_pass_is_refused_for_production() {
        let policy = prod_policy(true);
        // infra only previewed in dev (recorded skipped); frontend, the site, never published.
        let mut preview = rec("infra", Step::Deploy, Status::Skipped);
        preview.details.note = Some("preview only (--no-execute)".into());
        let mut records = approved(
            validated(vec![
                rec("api-handler", Step::Test, Status::Passed),
                rec("frontend", Step::Test, Status::Passed),
                preview,
            ]),
            Status::Passed,
        );
        let required = sample_required().deployed_by(["infra", "frontend", PIPELINE]);
        let decision = decide_deploy(&records, Some(&required), &policy, "prod");
        assert_eq!(
            decision.refused,
            ["no `dev` deploy passed in this run (a preview is no deploy); deploy to `dev` first"]
        );
        // With another component deployed, the environment may go on, but not those two.
        records.push(rec("api-handler", Step::Deploy, Status::Passed));
        let decision = decide_deploy(&records, Some(&required), &policy, "prod");
        assert!(decision.refused.is_empty(), "{decision:?}");
        assert_eq!(
            decision.components["infra"],
            ComponentVerdict::Refused(
                "its deploy was skipped (preview only (--no-execute)), so it was never deployed to `dev` in this run; deploy it to `dev` first (a preview is no deploy)".into()
            )
        );
        assert_eq!(
            decision.components["frontend"],
            ComponentVerdict::Refused(
                "it was never deployed to `dev` in this run; deploy it to `dev` first (a preview is no deploy)".into()
            )
        );
        assert!(
            decision.describe().contains("  frontend: refused: it was never deployed to `dev`"),
            "{}",
            decision.describe()
        );
        assert_eq!(decision.components["api-handler"], ComponentVerdict::Deploy);
        // Not listed by the asking stage and no record (a function carried by a stack, a
        // component with nothing to deploy): not held back.
        let unlisted = decide_deploy(&records, Some(&sample_required()), &policy, "prod");
        assert_eq!(unlisted.components["frontend"], ComponentVerdict::Deploy);
        // dev itself is no promotion: nothing of this applies.
        let dev = decide_deploy(&records, Some(&required), &policy, "dev");
        assert!(dev.allows("infra") && dev.allows("frontend"), "{dev:?}");
    }

    #[test]
    fn a_failed_dev_deploy_stays_refused_for_production() {
        let mut failed = rec("infra", Step::Deploy, Status::Failed);
        failed.details.error = Some("stack master: rolled back".into());
        let records = approved(validated(vec![rec("frontend", Step::Deploy, Status::Passed), failed]), Status::Passed);
        let required = sample_required().deployed_by(["infra", "frontend"]);
        let decision = decide_deploy(&records, Some(&required), &prod_policy(true), "prod");
        assert!(decision.refused.iter().any(|r| r.contains("infra deploy failed")), "{decision:?}");
        assert_eq!(
            decision.components["infra"],
            ComponentVerdict::Refused(
                "its deploy failed (stack master: rolled back), so it was never deployed to `dev` in this run; deploy it to `dev` first (a preview is no deploy)".into()
            )
        );
    }

    #[test]
    fn a_worktree_run_may_go_to_dev_but_is_never_promoted() {
        let mut required = sample_required();
        required.worktree = true;
        let records = approved(dev_done(), Status::Passed);
        let prod = decide_deploy(&records, Some(&required), &prod_policy(true), "prod");
        assert_eq!(
            prod.refused,
            [
                "the run was begun with --include-worktree, so what `dev` received is no commit and cannot be promoted; commit the change and start a new run"
            ]
        );
        assert!(!prod.allows("infra"));
        let dev = decide_deploy(&records, Some(&required), &prod_policy(true), "dev");
        assert!(dev.refused.is_empty() && dev.allows("infra"), "{dev:?}");
        // The flag comes from the diff.
        let diff: DiffReport = serde_json::from_value(serde_json::json!({
            "base": null, "base_reason": "test", "head": "abc", "worktree": true,
            "files": [], "global_inputs_changed": [], "components": {}, "flags": {}
        }))
        .unwrap();
        assert!(Requirements::from_diff(&diff).worktree);
    }

    #[test]
    fn an_approval_naming_no_approver_is_no_approval() {
        let mut records = dev_done();
        records.push(rec(PIPELINE, Step::Approval, Status::Passed));
        let decision = decide_deploy(&records, Some(&sample_required()), &prod_policy(true), "prod");
        assert_eq!(
            decision.refused,
            ["the approval names no approver; approve with `status-report approve --by NAME`"]
        );
    }

    #[test]
    fn success_needs_the_environments_own_deploy_of_every_changed_component() {
        let policy = prod_policy(true);
        let required = sample_required();
        let mut records = approved(dev_done(), Status::Passed);
        assert!(success_refusals(&records, &required, &policy, "dev").is_empty());
        // Dev deployed only: prod is refused.
        assert_eq!(
            success_refusals(&records, &required, &policy, "prod"),
            [
                "no prod-deploy passed in this run, so nothing reached `prod`; deploy to `prod` first",
                "frontend was deployed before but its prod-deploy never ran, so its change has not reached `prod`; deploy it first",
                "infra was deployed before but its prod-deploy never ran, so its change has not reached `prod`; deploy it first",
            ]
        );
        records.push(rec("infra", Step::ProdDeploy, Status::Passed));
        records.push(rec("frontend", Step::ProdDeploy, Status::Skipped));
        assert_eq!(
            success_refusals(&records, &required, &policy, "prod"),
            ["frontend prod-deploy is skipped, so its change has not reached `prod`; deploy it first"]
        );
        records.pop();
        records.push(rec("frontend", Step::ProdDeploy, Status::Passed));
        assert!(success_refusals(&records, &required, &policy, "prod").is_empty());
        // A changed component whose dev deploy was only previewed keeps dev unmarked.
        let mut previewed = dev_done();
        previewed[4].status = Status::Skipped;
        assert_eq!(
            success_refusals(&previewed, &required, &policy, "dev"),
            ["frontend deploy is skipped, so its change has not reached `dev`; deploy it first"]
        );
    }

    #[test]
    fn environment_rules_are_checked_with_their_key_and_line() {
        let parse = |text: &str| GatePolicy::from_config(&ConfigFile::from_text("pipeline.toml".as_ref(), text));
        let err = parse("[gate]\n[gate.environments.prod]\nafter = \"prod\"\n").unwrap_err().to_string();
        assert!(
            err.starts_with("pipeline.toml:3: gate.environments.prod.after: `prod` cannot come after itself"),
            "{err}"
        );
        let chain = "[gate.environments.staging]\nafter = \"dev\"\n[gate.environments.prod]\nafter = \"staging\"\n";
        let err = parse(chain).unwrap_err().to_string();
        assert!(
            err.starts_with("pipeline.toml:4: gate.environments.prod.after: `staging` is itself deployed after"),
            "{err}"
        );
        let err = parse("[gate.environments.prod]\napproval = true\n").unwrap_err().to_string();
        assert!(err.contains("gate.environments.prod.approval: set without `after`"), "{err}");
        let err = parse("[gate.environments.prod]\naproval = true\n").unwrap_err().to_string();
        assert!(err.starts_with("pipeline.toml:2: gate.environments.prod.aproval: unknown field"), "{err}");
        assert_eq!(prod_policy(true).deploy_step("prod"), Step::ProdDeploy);
        assert_eq!(prod_policy(true).deploy_step("dev"), Step::Deploy);
    }
}
