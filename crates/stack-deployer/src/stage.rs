//! The deploy stage: plan from the run, apply with locks and bounded parallelism, record.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use gate::{ComponentVerdict, DeployDecision, GatePolicy};
use run_state::{
    DeployedStack, PIPELINE, Recording, RunDir, RunFile, StackOutputs, StageInputs, StageOutcome, Status, Step,
    StepRecord, Store,
};

use crate::apply::{self, ApplyOptions, Clients, StackOutcome, StackResult};
use crate::config::{DeploySettings, Environment};
use crate::plan::{Plan, PlanInputs};
use crate::{Error, Event};

/// What a deploy did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// The environment.
    pub environment: String,
    /// The region the stacks are in.
    pub region: String,
    /// Artifacts uploaded now.
    pub uploaded: usize,
    /// Artifacts already in the bucket.
    pub present: usize,
    /// Every configured stack, in deploy order (skipped ones included).
    pub stacks: Vec<StackResult>,
    /// The artifacts kept for rollback, after a release was recorded.
    pub retention: Option<crate::retention::Retention>,
}

impl StageOutcome for Report {
    /// The binary's exit code: 1 when a stack failed or rolled back, else 3 when one is blocked
    /// by its state, else 4 when one timed out still in progress, else 0.
    fn exit_code(&self) -> u8 {
        let any = |f: fn(&StackOutcome) -> bool| self.stacks.iter().any(|s| f(&s.outcome));
        if any(|o| matches!(o, StackOutcome::Failed { .. } | StackOutcome::Cancelled { .. })) {
            1
        } else if any(|o| matches!(o, StackOutcome::Blocked { .. })) {
            3
        } else if any(|o| matches!(o, StackOutcome::TimedOut { .. })) {
            4
        } else {
            0
        }
    }
}

impl Report {
    /// One line per stack.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "deploy `{}` in {}: {} artifact(s) uploaded, {} already there",
            self.environment, self.region, self.uploaded, self.present
        );
        for stack in &self.stacks {
            // Root causes quote CloudFormation, which can quote property values.
            let outcome = run_state::redact::redact(&stack.outcome.to_string());
            let _ = write!(out, "  {} ({}): {outcome}", stack.name, stack.stack_name);
            if !stack.code_updated.is_empty() {
                let _ = write!(out, "; code updated: {}", stack.code_updated.join(", "));
            }
            out.push('\n');
        }
        if let Some(retention) = &self.retention {
            let _ = writeln!(out, "{}", retention.line());
        }
        out
    }

    /// The outputs of every stack that exists, for `stack-outputs.json`.
    pub fn outputs(&self) -> StackOutputs {
        let stacks = self
            .stacks
            .iter()
            .filter(|s| s.stack_id.is_some() || !s.outputs.is_empty())
            .map(|s| {
                (
                    s.name.clone(),
                    DeployedStack {
                        stack_name: s.stack_name.clone(),
                        region: self.region.clone(),
                        stack_id: s.stack_id.clone(),
                        outputs: s.outputs.clone(),
                    },
                )
            })
            .collect();
        StackOutputs { environments: BTreeMap::from([(self.environment.clone(), stacks)]) }
    }
}

/// A lock per stack in the status store, held while it deploys.
#[derive(Clone, Copy)]
pub struct Locks<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// Who holds the locks (the run and the process).
    pub holder: &'a str,
    /// How long a lock holds.
    pub ttl: Duration,
}

type StackFuture<'a> = Pin<Box<dyn Future<Output = (usize, Result<StackResult, Error>)> + 'a>>;

/// Applies a plan: artifacts, then the stacks (dependencies first, at most `parallelism` at
/// once, each under its lock when `locks` is given), then changed Lambda code. A stack whose
/// dependency did not deploy is skipped with the reason. An AWS or lock error stops new stacks
/// from starting; those running finish, then the first error is returned (an AccessDenied as
/// [`Error::Denied`], naming the plan's role).
#[allow(clippy::too_many_arguments)]
pub async fn deploy(
    plan: &Plan,
    clients: &Clients,
    parallelism: usize,
    locks: Option<Locks<'_>>,
    options: &ApplyOptions<'_>,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Report, Error> {
    deploy_plan(plan, clients, parallelism, locks, options, lookup, on_event)
        .await
        .map_err(|error| error.naming_role(plan.role_arn.as_deref()))
}

#[allow(clippy::too_many_arguments)]
async fn deploy_plan(
    plan: &Plan,
    clients: &Clients,
    parallelism: usize,
    locks: Option<Locks<'_>>,
    options: &ApplyOptions<'_>,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Report, Error> {
    let region = plan
        .region
        .clone()
        .or_else(|| clients.cloudformation.config().region().map(|r| r.to_string()))
        .unwrap_or_default();
    let (uploaded, present) = apply::upload_artifacts(&clients.s3, plan, on_event).await?;
    let (mut results, mut outputs) = skipped_results(plan, clients, on_event).await?;
    let mut started = vec![false; plan.stacks.len()];
    let mut running: FuturesUnordered<StackFuture<'_>> = FuturesUnordered::new();
    let mut first_error: Option<Error> = None;
    loop {
        if first_error.is_none() {
            for (index, stack) in plan.stacks.iter().enumerate() {
                if started[index] || running.len() >= parallelism.max(1) {
                    continue;
                }
                let in_plan = |d: &String| plan.stacks.iter().any(|s| &s.name == d);
                if stack.depends_on.iter().any(|d| in_plan(d) && !results.contains_key(d)) {
                    continue;
                }
                started[index] = true;
                if let Some(outcome) = not_to_start(stack, &results, options) {
                    on_event(Event::Done { stack: stack.name.clone(), outcome: outcome.clone() });
                    results.insert(stack.name.clone(), not_started(stack, outcome));
                    continue;
                }
                let parameters = match apply::resolve_parameters(stack, &outputs, lookup) {
                    Ok(parameters) => parameters,
                    Err(error) => {
                        first_error = Some(error);
                        break;
                    }
                };
                let lock_name = format!("deploy/{region}/{}", stack.stack_name);
                running.push(Box::pin(async move {
                    let deployed = StackDeploy { clients, plan, stack, options, on_event };
                    (index, deployed.run(&parameters, locks, &lock_name).await)
                }));
            }
        }
        let Some((index, result)) = running.next().await else { break };
        let stack = &plan.stacks[index];
        match result {
            Ok(result) => {
                outputs.insert(stack.name.clone(), result.outputs.clone());
                on_event(Event::Done { stack: stack.name.clone(), outcome: result.outcome.clone() });
                results.insert(stack.name.clone(), result);
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let stacks = in_deploy_order(plan, results);
    Ok(Report { environment: plan.environment.clone(), region, uploaded, present, stacks, retention: None })
}

/// The results of the stacks the plan skips, with the outputs of those that exist (a deployed
/// stack may read them).
async fn skipped_results(
    plan: &Plan,
    clients: &Clients,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(BTreeMap<String, StackResult>, BTreeMap<String, BTreeMap<String, String>>), Error> {
    let mut results: BTreeMap<String, StackResult> = BTreeMap::new();
    let mut outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for skipped in &plan.skipped {
        let existing = apply::describe_stack(&clients.cloudformation, &skipped.stack_name).await?;
        let result = StackResult {
            name: skipped.name.clone(),
            stack_name: skipped.stack_name.clone(),
            stack_id: existing.as_ref().and_then(|s| s.stack_id()).map(str::to_string),
            outputs: existing
                .as_ref()
                .map(|s| {
                    s.outputs()
                        .iter()
                        .filter_map(|o| {
                            Some((o.output_key()?.to_string(), o.output_value().unwrap_or_default().to_string()))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            outcome: StackOutcome::Skipped { reason: skipped.reason.clone() },
            code_updated: Vec::new(),
        };
        outputs.insert(skipped.name.clone(), result.outputs.clone());
        on_event(Event::Done { stack: skipped.name.clone(), outcome: result.outcome.clone() });
        results.insert(skipped.name.clone(), result);
    }
    Ok((results, outputs))
}

/// Why a stack whose dependencies are done does not start: the deploy was cancelled, or a
/// stack it depends on did not deploy.
fn not_to_start(
    stack: &crate::plan::StackPlan,
    results: &BTreeMap<String, StackResult>,
    options: &ApplyOptions<'_>,
) -> Option<StackOutcome> {
    if options.cancelled() {
        return Some(StackOutcome::Cancelled { reason: "before it started".into() });
    }
    let blocked_by = stack.depends_on.iter().find(|d| {
        results.get(*d).is_some_and(|r| {
            !matches!(
                r.outcome,
                StackOutcome::Unchanged
                    | StackOutcome::NoChanges
                    | StackOutcome::Deployed { .. }
                    | StackOutcome::Skipped { .. }
            )
        })
    })?;
    Some(StackOutcome::Skipped { reason: format!("`{blocked_by}`, which it depends on, did not deploy") })
}

/// One stack's deploy as the scheduler starts it.
struct StackDeploy<'a> {
    clients: &'a Clients,
    plan: &'a Plan,
    stack: &'a crate::plan::StackPlan,
    options: &'a ApplyOptions<'a>,
    on_event: &'a (dyn Fn(Event) + Sync),
}

impl StackDeploy<'_> {
    /// Under the stack's lock (when `locks` is given): its change set, then its functions' code
    /// when the stack ended deployed or unchanged.
    async fn run(
        &self,
        parameters: &BTreeMap<String, String>,
        locks: Option<Locks<'_>>,
        lock_name: &str,
    ) -> Result<StackResult, Error> {
        let Self { clients, plan, stack, options, on_event } = *self;
        if let Some(locks) = locks
            && let Err(error) = locks.store.acquire_lock(lock_name, locks.holder, locks.ttl)
        {
            return Err(Error::State(error));
        }
        let mut result = apply::deploy_stack(clients, plan, stack, parameters, options, on_event).await;
        if let Ok(done) = &mut result
            && options.execute
            && matches!(done.outcome, StackOutcome::Unchanged | StackOutcome::NoChanges | StackOutcome::Deployed { .. })
            && let Some(id) = done.stack_id.clone()
        {
            match apply::update_code(clients, plan, stack, &id, options, on_event).await {
                Ok(updated) => done.code_updated = updated,
                Err(error) => result = Err(error),
            }
        }
        if let Some(locks) = locks {
            let released = locks.store.release_lock(lock_name, locks.holder);
            if result.is_ok()
                && let Err(error) = released
            {
                result = Err(Error::State(error));
            }
        }
        result
    }
}

/// The plan's stacks in deploy order, then the skipped ones.
fn in_deploy_order(plan: &Plan, mut results: BTreeMap<String, StackResult>) -> Vec<StackResult> {
    let mut stacks = Vec::new();
    for stack in &plan.stacks {
        if let Some(result) = results.remove(&stack.name) {
            stacks.push(result);
        }
    }
    stacks.extend(results.into_values());
    stacks
}

/// How [`run_stage`] runs.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// The environment (`dev`, `prod`).
    pub environment: String,
    /// Only these stacks, whether or not their components changed (when empty: those the diff requires).
    pub only: Vec<String>,
    /// Stop after the previews (`--no-execute`).
    pub no_execute: bool,
    /// Recreate stacks left `ROLLBACK_COMPLETE` (`--recreate-failed`).
    pub recreate_failed: bool,
    /// The first pause between polls (1 s when unset; tests shorten it).
    pub first_poll: Option<Duration>,
    /// The role CloudFormation acts as, replacing the environment's `cfn_role_arn`
    /// (`--cfn-role-arn`: the pipeline's template names it).
    pub cfn_role_arn: Option<String>,
}

/// Records the run waiting for approval of `options.environment`, with what this stage would
/// deploy there (each stack and function package, [`Plan::digest`]), as CodeBuild's Status
/// stage asks before the manual approval: the approval then covers exactly that, and the
/// promoted deploy refuses anything changed since. Nothing is read from AWS. Returns the parts.
pub fn request_approval(
    context: &run_state::StageContext,
    run: &RunDir,
    store: &dyn Store,
    options: &StageOptions,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<run_state::ReleaseDigest, Error> {
    // Only what reached the earlier environment can be promoted: without a passed deploy in
    // this run there is nothing to approve (and a partial run may lack its packages).
    let records = store.run(&run.run_id)?;
    if !records.iter().any(|r| r.step == Step::Deploy && r.status == Status::Passed) {
        return Ok(run_state::ReleaseDigest::default());
    }
    let (_, plan) = plan_stage(context, run, options, None, lookup)?;
    let digest = plan.digest(lookup);
    if digest.is_empty() {
        // Nothing of this run reaches the environment through this stage: nothing to approve.
        return Ok(digest);
    }
    let head = run.head()?;
    let stacks: Vec<&str> = plan.stacks.iter().map(|s| s.name.as_str()).collect();
    let summary = format!("`{}` receives stacks: {}", options.environment, stacks.join(", "));
    gate::approval::request_covering(store, &run.run_id, &head, &summary, Some(digest.clone()))
        .map_err(Error::Approval)?;
    Ok(digest)
}

/// The result of a stack that was not started (cancelled first, or blocked by a dependency).
fn not_started(stack: &crate::plan::StackPlan, outcome: StackOutcome) -> StackResult {
    StackResult {
        name: stack.name.clone(),
        stack_name: stack.stack_name.clone(),
        stack_id: None,
        outputs: BTreeMap::new(),
        outcome,
        code_updated: Vec::new(),
    }
}

impl StageOptions {
    /// A deploy of every stack the diff requires to `environment`, with nothing else set.
    pub fn new(environment: &str) -> StageOptions {
        StageOptions {
            environment: environment.to_string(),
            only: Vec::new(),
            no_execute: false,
            recreate_failed: false,
            first_poll: None,
            cfn_role_arn: None,
        }
    }
}

/// Reads `[gate]`, the run's diff and its records, and decides what may be deployed to
/// `environment` ([`gate::decide_deploy`]); the configured stacks' components are
/// deployed under their own names, so for a promoted environment each changed one needs a
/// passed deploy to the earlier environment. A missing diff is an error naming source-diff.
pub fn deploy_decision(
    context: &run_state::StageContext,
    run: &RunDir,
    store: &dyn Store,
    environment: &str,
) -> Result<DeployDecision, Error> {
    let config = context.required_config()?;
    let policy = GatePolicy::from_config(config)?;
    let deployed = configured_components(context);
    Ok(gate::run_deploy_decision_for(store, run, &policy, environment, deployed)?)
}

/// Applies a deploy decision to a plan (pure). A stack is skipped when the environment is
/// refused, when every component it serves is refused (a stack serving no component follows
/// the environment), or when its template embeds the code of a refused component's function.
/// In the stacks kept, the code update of a refused component's function is dropped. The
/// artifacts only dropped parts needed are dropped too, so nothing of a refused component is
/// uploaded. Returns the refused components with why.
pub fn apply_decision(plan: &mut Plan, decision: &DeployDecision) -> BTreeMap<String, String> {
    let mut refused: BTreeMap<String, String> = BTreeMap::new();
    let why = |component: &str| match decision.verdict(component) {
        ComponentVerdict::Refused(reason) => Some(reason),
        _ => None,
    };
    let mut kept = Vec::new();
    for mut stack in std::mem::take(&mut plan.stacks) {
        let served: Vec<String> =
            if stack.components.is_empty() { vec![PIPELINE.to_string()] } else { stack.components.clone() };
        let all_refused = served.iter().all(|c| why(c).is_some());
        let inline_refused = stack.inline_components.iter().find_map(|c| why(c).map(|w| (c.clone(), w)));
        let reason = if all_refused {
            served.iter().find_map(|c| why(c).map(|w| format!("refused: {c}: {w}")))
        } else {
            inline_refused.map(|(c, w)| format!("refused: its template embeds the code of {c}, and {c}: {w}"))
        };
        if let Some(reason) = reason {
            for component in &served {
                refused.entry(component.clone()).or_insert_with(|| reason.clone());
            }
            for update in &stack.code_updates {
                plan.refused_code.push((update.function.clone(), update.component.clone(), reason.clone()));
            }
            plan.skipped.push(crate::plan::SkippedStack {
                name: stack.name.clone(),
                stack_name: stack.stack_name.clone(),
                components: stack.components.clone(),
                reason,
            });
            continue;
        }
        stack.code_updates.retain(|update| match why(&update.component) {
            Some(reason) => {
                refused.insert(update.component.clone(), reason.clone());
                plan.refused_code.push((update.function.clone(), update.component.clone(), reason));
                false
            }
            None => true,
        });
        kept.push(stack);
    }
    plan.stacks = kept;
    // Keep the artifacts something kept refers to: kept code updates, kept stacks' bodies,
    // and (to a fixpoint) the nested templates those refer to.
    let mut needed: BTreeSet<String> = plan
        .stacks
        .iter()
        .flat_map(|s| s.code_updates.iter().flat_map(|u| [Some(u.key.clone()), u.fixed_key.clone()]).flatten())
        .collect();
    let mut bodies: Vec<Vec<u8>> = plan.stacks.iter().map(|s| s.body.clone()).collect();
    while let Some(body) = bodies.pop() {
        for artifact in &plan.artifacts {
            if needed.contains(&artifact.key) || !contains(&body, artifact.key.as_bytes()) {
                continue;
            }
            needed.insert(artifact.key.clone());
            if let crate::plan::ArtifactContent::Template(child) = &artifact.content {
                bodies.push(child.clone());
            }
        }
    }
    for stack in &plan.stacks {
        if let Some(key) = &stack.template_key {
            needed.insert(key.clone());
        }
    }
    plan.artifacts.retain(|a| needed.contains(&a.key));
    refused
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads `[deploy]`, `[lambda]`, the run's diff and package manifest, and plans the
/// environment's deploy (nothing is changed, nothing recorded), then applies `decision`
/// when given ([`apply_decision`]). A changed function component without the run's package
/// manifest is an error naming lambda-packager.
pub fn plan_stage(
    context: &run_state::StageContext,
    run: &RunDir,
    options: &StageOptions,
    decision: Option<&DeployDecision>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(Environment, Plan), Error> {
    let config = context.required_config()?;
    let settings = DeploySettings::from_config(config)?;
    let mut env = settings.environment(config, &options.environment)?;
    if let Some(role) = &options.cfn_role_arn {
        env.cfn_role_arn = Some(role.clone());
    }
    let diff: source_diff::DiffReport = run.read_json(RunFile::Diff)?;
    // The templates come from the work tree: it must be the run's commit.
    context.check_tree(&diff.head, diff.worktree)?;
    let changed: BTreeSet<String> =
        diff.components.iter().filter(|(_, c)| c.changed).map(|(name, _)| name.clone()).collect();
    let manifest_path = run.file(RunFile::PackageManifest);
    let manifest = if manifest_path.exists() {
        Some(lambda_packager::Manifest::read(&manifest_path).map_err(|e| Error::Manifest(Box::new(e)))?)
    } else {
        None
    };
    let functions = match lambda_packager::LambdaSettings::from_config(config) {
        Ok((_, functions)) => functions,
        Err(error) => return Err(Error::Config(error)),
    };
    if manifest.is_none() && functions.iter().any(|f| changed.contains(&f.component)) {
        return Err(Error::State(run_state::Error::MissingInput {
            path: manifest_path,
            written_by: RunFile::PackageManifest.written_by(),
        }));
    }
    let inputs = PlanInputs {
        repo: &context.root,
        manifest: manifest.as_ref(),
        functions: &functions,
        changed: Some(&changed),
        only: &options.only,
    };
    let mut plan = crate::plan(&env, inputs, lookup)?;
    if let Some(decision) = decision {
        apply_decision(&mut plan, decision);
    }
    Ok((env, plan))
}

/// The deploy stage for one run and environment, as the binary and a pipeline run it: plans,
/// deploys, writes the outputs of every stack into the run's `stack-outputs.json`, and records
/// `deploy` for each component the stacks serve (the stacks without components under
/// `pipeline`): running, then passed, failed (with the stack, the change set and the root cause)
/// or skipped with the reason. A mistake found before anything changed is recorded as failed too.
/// A preview (`no_execute`) is no deploy: it records no `running`, and each component it
/// previewed as skipped (which never replaces an earlier result, [`run_state::supersede`]).
/// The inputs' cancel flag stops it: no stack starts, a change set not yet executed is deleted,
/// one executing is watched to its end. The report's [`StageOutcome::exit_code`] is the binary's.
pub async fn run_stage(
    inputs: &StageInputs<'_>,
    clients: &Clients,
    options: &StageOptions,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Report, Error> {
    let StageInputs { context, run, store, .. } = *inputs;
    let head = run.head().unwrap_or_default();
    let refuse = |error: Error| -> Result<Report, Error> {
        record_failure(context, run, store, &options.environment, &error)?;
        Err(error)
    };
    let decision = match deploy_decision(context, run, store, &options.environment) {
        Ok(decision) => decision,
        Err(error) => return refuse(error),
    };
    if !decision.refused.is_empty() {
        return refuse(Error::Refused { environment: options.environment.clone(), reasons: decision.refused.clone() });
    }
    // Every record of the stage carries its start, so a finished deploy has a duration.
    let started = SystemTime::now();
    let (env, plan) = match plan_stage(context, run, options, Some(&decision), lookup) {
        Ok(planned) => planned,
        Err(error) => return refuse(error),
    };
    if decision.step == Step::ProdDeploy
        && !options.no_execute
        && let Some(refused) = approval_refusal(store, run, options, &plan, lookup)?
    {
        return refuse(refused);
    }
    let records = ComponentRecords { inputs, head: &head, step: decision.step, started };
    let mut planned = records.begin(&plan, options.no_execute)?;
    let apply_options = apply_options(inputs, &env, &plan, options);
    let holder = format!("run {} ({})", run.run_id, holder_process());
    let locks = Locks { store, holder: &holder, ttl: env.lock_ttl };
    let mut report = match deploy(&plan, clients, env.parallelism, Some(locks), &apply_options, lookup, on_event).await
    {
        Ok(report) => report,
        Err(error) => return planned.fail(error),
    };
    // The components' steps are running: a failed write must end them, not leave them so.
    if let Err(error) = report.outputs().merge_into(run) {
        return planned.fail(error.into());
    }
    // Every planned stack where the config wants it: the environment's release gets this
    // run's stacks and functions (a failure to record it fails the deploy's components).
    if !options.no_execute && !plan.stacks.is_empty() && all_deployed(&plan, &report) {
        match record_and_retain(inputs, &head, &env, &plan, &report, clients, lookup).await {
            Ok(retention) => report.retention = Some(retention),
            Err(error) => return planned.fail(error),
        }
    }
    for (component, results) in by_component(&plan, &report) {
        let (status, note, error) = verdict(&results, options.no_execute);
        planned.end(&component, status, Some(note), error)?;
    }
    Ok(report)
}

/// The release of the run ([`record_release`]), then the artifacts kept for rollback
/// ([`crate::retention::retain_after_release`]).
async fn record_and_retain(
    inputs: &StageInputs<'_>,
    head: &str,
    env: &Environment,
    plan: &Plan,
    report: &Report,
    clients: &Clients,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<crate::retention::Retention, Error> {
    record_release(inputs.store, inputs.run, head, plan, report, clients, lookup).await?;
    crate::retention::retain_after_release(inputs.context.required_config()?, env, inputs.store, &clients.s3)
        .await
        .map_err(|error| error.naming_role(plan.role_arn.as_deref()))
}

/// The components a stack serves (`pipeline` for a stack that names none).
fn component_of(components: &[String]) -> Vec<String> {
    if components.is_empty() { vec![run_state::PIPELINE.to_string()] } else { components.to_vec() }
}

/// An approval that names what production receives covers exactly that: any stack or function
/// changed since (a template edited, a package rebuilt) refuses the promotion (the refusal).
fn approval_refusal(
    store: &dyn Store,
    run: &RunDir,
    options: &StageOptions,
    plan: &Plan,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Option<Error>, Error> {
    let Some(approved) = gate::approval::digest(&store.run(&run.run_id)?) else { return Ok(None) };
    let now = plan.digest(lookup);
    let changed: Vec<String> = crate::digest::PARTS
        .iter()
        .flat_map(|prefix| approved.differences(&now, prefix))
        .map(|difference| format!("{difference}: what was approved is not what would be deployed; approve again"))
        .collect();
    if changed.is_empty() {
        return Ok(None);
    }
    Ok(Some(Error::Refused { environment: options.environment.clone(), reasons: changed }))
}

/// Where the stage's per-component `deploy` records go: the run, its commit, the step (`deploy`
/// or `prod-deploy`) and the stage's start.
struct ComponentRecords<'a> {
    inputs: &'a StageInputs<'a>,
    head: &'a str,
    step: Step,
    started: SystemTime,
}

impl<'a> ComponentRecords<'a> {
    /// Records what the deploy is about to do: `skipped` with why for the components of skipped
    /// stacks and of refused function code, and (unless a preview) each planned stack's
    /// components begun `running` ([`Recording::begin`]). The planned components, to end.
    fn begin(self, plan: &Plan, no_execute: bool) -> Result<Planned<'a>, Error> {
        let components: BTreeSet<String> = plan.stacks.iter().flat_map(|s| component_of(&s.components)).collect();
        for skipped in &plan.skipped {
            for component in component_of(&skipped.components) {
                if !components.contains(&component) {
                    let note = format!("stack {}: {}", skipped.name, skipped.reason);
                    self.ended(&component, Status::Skipped, Some(note), None)?;
                }
            }
        }
        // A refused function's code is not updated: its component's deploy is skipped with why.
        for (function, component, why) in &plan.refused_code {
            if !components.contains(component) {
                let note = format!("function {function}: code not updated: {why}");
                self.ended(component, Status::Skipped, Some(note), None)?;
            }
        }
        let mut running = BTreeMap::new();
        for component in components {
            let recording = if no_execute {
                None
            } else {
                let StageInputs { store, run, .. } = *self.inputs;
                Some(Recording::begin(store, &run.run_id, self.head, &component, self.step)?)
            };
            running.insert(component, recording);
        }
        Ok(Planned { records: self, running })
    }

    /// A record that ends as it is written (a skip, or a failure of a step never begun, as a
    /// preview's): nothing goes from running to its end here, [`Recording`] does that.
    fn ended(
        &self,
        component: &str,
        status: Status,
        note: Option<String>,
        error: Option<String>,
    ) -> Result<(), run_state::Error> {
        let mut record = StepRecord::new(&self.inputs.run.run_id, self.head, component, self.step, status);
        record.details.note = note;
        record.details.error = error;
        record.started_at = Some(self.started);
        record.ended_at = Some(SystemTime::now());
        self.inputs.store.record(&record)
    }
}

/// The planned components, each with its running record (none in a preview) until it ends.
struct Planned<'a> {
    records: ComponentRecords<'a>,
    running: BTreeMap<String, Option<Recording<'a>>>,
}

impl Planned<'_> {
    /// Ends `component`'s step: its recording when begun, else a record ended as written.
    fn end(
        &mut self,
        component: &str,
        status: Status,
        note: Option<String>,
        error: Option<String>,
    ) -> Result<(), run_state::Error> {
        match self.running.remove(component).flatten() {
            Some(recording) => recording
                .end(status, |details| {
                    details.note = note;
                    details.error = error;
                })
                .map(drop),
            None => self.records.ended(component, status, note, error),
        }
    }

    /// Ends every planned component failed with `error`, which is returned.
    fn fail(mut self, error: Error) -> Result<Report, Error> {
        let chain = run_state::error_chain(&error);
        let components: Vec<String> = self.running.keys().cloned().collect();
        for component in components {
            self.end(&component, Status::Failed, None, Some(chain.clone()))?;
        }
        Err(error)
    }
}

/// How the stage applies the plan: its change set name, the environment's waits, the options,
/// the inputs' cancel flag.
fn apply_options<'a>(
    inputs: &StageInputs<'a>,
    env: &Environment,
    plan: &Plan,
    options: &StageOptions,
) -> ApplyOptions<'a> {
    let mut apply_options = ApplyOptions::new(
        // Unique per attempt, also for two attempts in one second (a rerun right after a killed
        // deploy): a change set left by --no-execute or a dead deploy keeps its name, and this
        // deploy's sweep of leftovers must not take it for its own.
        &apply::change_set_name(&[
            &inputs.run.run_id,
            &plan_hash(plan),
            &unix_seconds(),
            &std::process::id().to_string(),
        ]),
        env.timeout,
        env.change_set_timeout,
    );
    apply_options.execute = !options.no_execute;
    apply_options.recreate_failed = options.recreate_failed;
    apply_options.cancel = Some(inputs.cancel);
    if let Some(first) = options.first_poll {
        apply_options.first_poll = first;
        apply_options.max_poll = first * 8;
    }
    apply_options
}

/// Whether every planned stack ended deployed or unchanged.
fn all_deployed(plan: &Plan, report: &Report) -> bool {
    plan.stacks.iter().all(|stack| {
        report.stacks.iter().any(|r| {
            r.name == stack.name
                && matches!(
                    r.outcome,
                    StackOutcome::Unchanged | StackOutcome::NoChanges | StackOutcome::Deployed { .. }
                )
        })
    })
}

/// Each component's stack results (the stacks the plan skipped left out: recorded before).
fn by_component<'a>(plan: &Plan, report: &'a Report) -> BTreeMap<String, Vec<&'a StackResult>> {
    let mut by_component: BTreeMap<String, Vec<&StackResult>> = BTreeMap::new();
    for result in &report.stacks {
        if matches!(result.outcome, StackOutcome::Skipped { .. }) && plan.skipped.iter().any(|s| s.name == result.name)
        {
            continue;
        }
        let components =
            plan.stacks.iter().find(|s| s.name == result.name).map(|s| component_of(&s.components)).unwrap_or_default();
        for component in components {
            by_component.entry(component).or_default().push(result);
        }
    }
    by_component
}

/// A component's record from its stacks' results: the worst of them, with every stack's
/// outcome as the note and the failed ones as the error.
fn verdict(results: &[&StackResult], no_execute: bool) -> (Status, String, Option<String>) {
    let note = results
        .iter()
        .map(|r| format!("stack {} ({}): {}", r.name, r.stack_name, r.outcome))
        .collect::<Vec<_>>()
        .join("; ");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                StackOutcome::Failed { .. } | StackOutcome::Blocked { .. } | StackOutcome::TimedOut { .. }
            )
        })
        .map(|r| format!("stack {} ({}): {}", r.name, r.stack_name, r.outcome))
        .collect();
    let not_done =
        results.iter().any(|r| matches!(r.outcome, StackOutcome::Previewed { .. } | StackOutcome::Skipped { .. }));
    let cancelled = results.iter().any(|r| matches!(r.outcome, StackOutcome::Cancelled { .. }));
    if !failed.is_empty() {
        (Status::Failed, note, Some(failed.join("; ")))
    } else if cancelled {
        (Status::Cancelled, note, Some("cancelled (SIGINT or SIGTERM)".into()))
    } else if no_execute {
        (Status::Skipped, format!("preview only (--no-execute), nothing deployed: {note}"), None)
    } else if not_done {
        (Status::Skipped, note, None)
    } else {
        (Status::Passed, note, None)
    }
}

/// Adds the deployed stacks and functions to the run's release of the environment
/// ([`run_state::release::contribute`]) and writes the release to the artifact bucket
/// (`releases/ENV/RUN.json`): per stack the template's key (a body sent inline is uploaded under
/// a content-addressed key first, so a rollback can name it) and the parameters as sent (a
/// `NoEcho` one as `UsePreviousValue`, never its value); per function whose package this run
/// updated, its zip's key and the `CodeSha256` Lambda reports, checked against the package.
pub async fn record_release(
    store: &dyn Store,
    run: &RunDir,
    head: &str,
    plan: &Plan,
    report: &Report,
    clients: &Clients,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<run_state::Release, Error> {
    use run_state::release::{Parameter, StackRelease};
    let outputs: BTreeMap<String, BTreeMap<String, String>> =
        report.stacks.iter().map(|r| (r.name.clone(), r.outputs.clone())).collect();
    let mut stacks = BTreeMap::new();
    let mut functions = BTreeMap::new();
    for stack in &plan.stacks {
        let key = match &stack.template_key {
            Some(key) => key.clone(),
            None => upload_template(&clients.s3, plan, stack).await?,
        };
        let parameters = apply::resolve_parameters(stack, &outputs, lookup)?
            .into_iter()
            .map(|(name, value)| {
                // A NoEcho value, or one read from the deploying process's environment (a
                // secret the config never holds), is never stored: the rollback re-uses it.
                let from_env = matches!(stack.parameters.get(&name), Some(crate::ParameterValue::Env { .. }));
                let kept = if stack.no_echo.contains(&name) || from_env {
                    Parameter::UsePreviousValue
                } else {
                    Parameter::Value(value)
                };
                (name, kept)
            })
            .collect();
        stacks.insert(
            stack.name.clone(),
            StackRelease {
                stack_name: stack.stack_name.clone(),
                region: report.region.clone(),
                template_url: format!("https://{}.s3.amazonaws.com/{key}", plan.bucket),
                template_key: key,
                template_sha256: stack.template_sha256.clone(),
                parameters,
                capabilities: stack.capabilities.clone(),
                tags: stack.tags.clone(),
                components: stack.components.clone(),
                fixed_templates: stack.fixed_templates.iter().cloned().collect(),
                run_id: run.run_id.clone(),
            },
        );
        let stack_id = report.stacks.iter().find(|r| r.name == stack.name).and_then(|r| r.stack_id.clone());
        for update in stack.code_updates.iter().filter(|u| u.package.changed) {
            let Some(stack_id) = &stack_id else { continue };
            let function = function_release(clients, run, plan, stack, update, stack_id).await?;
            functions.insert(update.function.clone(), function);
        }
    }
    let release = run_state::release::contribute(store, &plan.environment, &run.run_id, head, |release| {
        release.artifact_bucket = Some(plan.bucket.clone());
        release.stacks.extend(stacks);
        release.functions.extend(functions);
    })?;
    let key = release.object_key();
    clients
        .s3
        .put_object()
        .bucket(&plan.bucket)
        .key(&key)
        .content_type("application/json")
        .body(release.to_json().into())
        .send()
        .await
        .map_err(|e| apply::aws("PutObject", &key, e))?;
    Ok(release)
}

/// One updated function as the release keeps it: its name found again down the stack, and the
/// `CodeSha256` Lambda reports, checked against the package.
async fn function_release(
    clients: &Clients,
    run: &RunDir,
    plan: &Plan,
    stack: &crate::plan::StackPlan,
    update: &crate::plan::CodeUpdate,
    stack_id: &str,
) -> Result<run_state::release::FunctionRelease, Error> {
    let name = apply::physical_name(&clients.cloudformation, stack_id, &update.path).await?;
    let config = clients
        .lambda
        .get_function_configuration()
        .function_name(&name)
        .send()
        .await
        .map_err(|e| apply::aws("GetFunctionConfiguration", &name, e))?;
    let reported = config.code_sha256().unwrap_or_default().to_string();
    if reported != update.package.code_sha256 {
        return Err(Error::CodeUpdate {
            function: update.function.clone(),
            source: lambda_packager::update::UpdateError::HashMismatch {
                function: name,
                reported,
                expected: update.package.code_sha256.clone(),
            },
        });
    }
    Ok(run_state::release::FunctionRelease {
        component: update.component.clone(),
        stack: stack.name.clone(),
        path: update.path.clone(),
        function_name: name,
        bucket: plan.bucket.clone(),
        key: update.key.clone(),
        code_sha256: reported,
        run_id: run.run_id.clone(),
    })
}

/// Uploads a stack's body (sent inline) under a content-addressed key, unless it is there.
async fn upload_template(
    s3: &aws_sdk_s3::Client,
    plan: &Plan,
    stack: &crate::plan::StackPlan,
) -> Result<String, Error> {
    let stem: String = std::path::Path::new(&stack.template)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("template")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let name = format!("templates/{stem}-{}.json", &stack.template_sha256[..16.min(stack.template_sha256.len())]);
    let key = if plan.key_prefix.is_empty() { name } else { format!("{}/{name}", plan.key_prefix) };
    match s3.head_object().bucket(&plan.bucket).key(&key).send().await {
        Ok(_) => return Ok(key),
        Err(error) if aws_target::ErrorKind::of(&error) == aws_target::ErrorKind::NotFound => {}
        Err(error) => return Err(apply::aws("HeadObject", &key, error)),
    }
    s3.put_object()
        .bucket(&plan.bucket)
        .key(&key)
        .metadata("sha256", &stack.template_sha256)
        .content_type("application/json")
        .body(stack.body.clone().into())
        .send()
        .await
        .map_err(|e| apply::aws("PutObject", &key, e))?;
    Ok(key)
}

/// Records the environment's deploy step (`deploy`, or `prod-deploy` for a promoted
/// environment) as failed with `error` for every component of the configured stacks that the
/// run's diff marks changed (all of them without a diff; `pipeline` when none): for a mistake
/// found before the stage could plan (the config, a missing input, the credentials) and for a
/// refused environment. An unchanged component is left alone: a failure is a result, which a
/// later skip would never replace ([`run_state::supersede`]).
pub fn record_failure(
    context: &run_state::StageContext,
    run: &RunDir,
    store: &dyn Store,
    environment: &str,
    error: &dyn std::error::Error,
) -> Result<(), run_state::Error> {
    let head = run.head().unwrap_or_default();
    let step = context
        .required_config()
        .ok()
        .and_then(|config| GatePolicy::from_config(config).ok())
        .map_or(Step::Deploy, |policy| policy.deploy_step(environment));
    let mut components = configured_components(context);
    if let Ok(diff) = run.read_json::<source_diff::DiffReport>(RunFile::Diff) {
        components.retain(|c| c == PIPELINE || diff.components.get(c).is_some_and(|change| change.changed));
        if components.is_empty() {
            components.push(PIPELINE.to_string());
        }
    }
    for component in components {
        let mut record = StepRecord::new(&run.run_id, &head, &component, step, Status::Failed);
        record.ended_at = Some(SystemTime::now());
        record.details.error = Some(run_state::error_chain(error));
        store.record(&record)?;
    }
    Ok(())
}

fn configured_components(context: &run_state::StageContext) -> Vec<String> {
    let Ok(config) = context.required_config() else { return vec![run_state::PIPELINE.into()] };
    let Ok(settings) = config.section::<DeploySettings>(DeploySettings::SECTION) else {
        return vec![run_state::PIPELINE.into()];
    };
    let mut components = BTreeSet::new();
    for stack in settings.stacks.values() {
        if stack.components.is_empty() {
            components.insert(run_state::PIPELINE.to_string());
        }
        components.extend(stack.components.iter().map(|c| c.get_ref().clone()));
    }
    if components.is_empty() {
        components.insert(run_state::PIPELINE.to_string());
    }
    components.into_iter().collect()
}

fn plan_hash(plan: &Plan) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for stack in &plan.stacks {
        hasher.update(stack.template_sha256.as_bytes());
    }
    hex::encode(hasher.finalize())[..8].to_string()
}

fn unix_seconds() -> String {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default().to_string()
}

fn holder_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}
