//! The rollback as a run of its own: choose, plan, check, apply, record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use run_state::release::{Parameter, RollbackOf, StackRelease};
use run_state::{Recording, Release, RunDir, StageContext, StageInputs, StageOutcome, Status, Step, StepRecord, Store};

use crate::Error;
use crate::plan::{FunctionStep, RollbackPlan, StackStep, Target, choose, plan};

/// The SDK clients of the environment.
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3: the artifact bucket and the site's bucket.
    pub s3: aws_sdk_s3::Client,
    /// CloudFormation.
    pub cloudformation: aws_sdk_cloudformation::Client,
    /// Lambda.
    pub lambda: aws_sdk_lambda::Client,
    /// CloudFront, for the site's invalidation.
    pub cloudfront: Option<aws_sdk_cloudfront::Client>,
}

/// How [`run_rollback`] runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The environment.
    pub env: String,
    /// The release to go back to.
    pub target: Target,
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Skip the environment's approval (recorded).
    pub emergency: bool,
    /// Go on with an approved rollback run.
    pub resume: Option<String>,
    /// The first pause between a stack's polls (250 ms, doubled up to 10 s, when unset).
    pub first_poll: Option<Duration>,
    /// Why an automated rollback runs (`crate::after_failed_check`): no approval is asked (the
    /// release it restores was deployed before), and the rollback's records say it.
    pub reason: Option<String>,
    /// The role CloudFormation acts as, replacing the environment's `cfn_role_arn`.
    pub cfn_role_arn: Option<String>,
}

/// Progress.
#[derive(Debug)]
pub enum Event {
    /// The plan, before anything changes.
    Planned(String),
    /// A stack's progress.
    Stack(stack_deployer::Event),
    /// One part done.
    Done(String),
}

/// How a rollback ended.
#[derive(Debug)]
pub enum Outcome {
    /// `--dry-run`: the plan, nothing changed or recorded.
    DryRun(RollbackPlan),
    /// Recorded waiting for approval; nothing changed.
    AwaitingApproval {
        /// The rollback's run.
        run_id: String,
        /// The plan.
        plan: RollbackPlan,
    },
    /// Applied and recorded.
    RolledBack {
        /// The rollback's run.
        run_id: String,
        /// The plan.
        plan: RollbackPlan,
        /// The release it recorded.
        release: Box<Release>,
    },
}

/// The first pause between a stack's polls: doubled up to 10 s.
pub const FIRST_POLL: Duration = Duration::from_millis(250);

/// The digest parts an approval of a rollback covers.
const TO: &str = "rollback:to";
const FROM: &str = "rollback:from";

/// What a rollback starts from: the repository and its config, the status store and the cancel
/// flag, which is a run's [`StageInputs`] without the run. A rollback is a run of its own: it
/// creates its run (or goes on with the approved one, `--resume`) once it knows the release's
/// commit, then hands that run's [`StageInputs`] ([`RollbackInputs::for_run`]) to its checks and
/// apply; so it takes these, not a run. The pipeline's automated rollback takes them from the
/// failed run's inputs ([`RollbackInputs::from`]).
#[derive(Clone, Copy)]
pub struct RollbackInputs<'a> {
    /// The repository, its `pipeline.toml` and the state folder (where the run is created).
    pub context: &'a StageContext,
    /// Where the rollback records its run and its release.
    pub store: &'a dyn Store,
    /// Set to stop: a stack's change set not yet executed is deleted (one executing is watched
    /// to its end), and the rollback fails with what it did.
    pub cancel: &'a AtomicBool,
}

impl<'a> RollbackInputs<'a> {
    /// The inputs of a rollback.
    pub fn new(context: &'a StageContext, store: &'a dyn Store, cancel: &'a AtomicBool) -> Self {
        RollbackInputs { context, store, cancel }
    }

    /// The stage inputs of the rollback's own run.
    pub fn for_run(&self, run: &'a RunDir) -> StageInputs<'a> {
        StageInputs::new(self.context, run, self.store, self.cancel)
    }
}

impl<'a> From<&StageInputs<'a>> for RollbackInputs<'a> {
    /// A run's inputs without the run (the pipeline's, for its automated rollback).
    fn from(inputs: &StageInputs<'a>) -> Self {
        RollbackInputs { context: inputs.context, store: inputs.store, cancel: inputs.cancel }
    }
}

impl std::fmt::Debug for RollbackInputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollbackInputs").field("root", &self.context.root).finish_non_exhaustive()
    }
}

impl StageOutcome for Outcome {
    /// 0: rolled back, waiting for approval, or a dry run (a refusal or a failure is an
    /// [`Error`], with [`Error::exit_code`]).
    fn exit_code(&self) -> u8 {
        0
    }
}

/// The rollback of `options.env`, as the `rollback` binary and `cargo xtask rollback` run it:
/// chooses the release, prints the plan ([`Event::Planned`]), and (unless a dry run) records
/// a run of its own: waiting for approval where the environment needs one (unless
/// `emergency`), else the checks and the apply ([`crate`] docs), the environment's deploy step
/// per component, a release of its own, and the success mark moved to the release's commit.
/// A refusal (unknown or expired release, a lock held, a stack's state) is recorded failed and
/// changes nothing.
pub async fn run_rollback(
    inputs: &RollbackInputs<'_>,
    clients: &Clients,
    options: &Options,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Outcome, Error> {
    let RollbackInputs { context, store, .. } = *inputs;
    let config = context.required_config()?;
    let policy = gate::GatePolicy::from_config(config)?;
    let env = options.env.as_str();
    run_state::check_name("environment", env)?;
    let releases = store.releases(env)?;
    let (target, approved_from) = match &options.resume {
        Some(run_id) => approved(store, env, run_id)?,
        None => (options.target.clone(), None),
    };
    let chosen = choose(env, &releases, &target);
    if options.dry_run {
        let (from, to) = chosen?;
        let plan = plan(env, from, to);
        on_event(Event::Planned(plan.describe()));
        return Ok(Outcome::DryRun(plan));
    }
    let commit = match &chosen {
        Ok((_, to)) => to.commit.clone(),
        Err(_) => releases.last().map(|r| r.commit.clone()).unwrap_or_default(),
    };
    let run_id = options.resume.clone().unwrap_or_else(|| run_state::new_run_id(&commit, SystemTime::now()));
    let run = RunDir::create(&context.state_dir, &run_id)?;
    let refusal = Refusal { store, run_id: &run_id, commit: &commit, step: policy.deploy_step(env) };
    let (from, to) = chosen.map_err(|e| refusal.record(&[run_state::PIPELINE.to_string()], e))?;
    let plan = plan(env, from, to);
    on_event(Event::Planned(plan.describe()));
    if let Some(approved) = approved_from
        && approved != from.id
    {
        return Err(Error::Moved { env: env.into(), now: from.id.clone(), approved });
    }
    let needs_approval = policy.environments.get(env).is_some_and(|rule| rule.approval);
    if needs_approval && !options.emergency && options.resume.is_none() && options.reason.is_none() {
        let mut digest = run_state::ReleaseDigest::default();
        digest.insert(TO, &to.id);
        digest.insert(FROM, &from.id);
        let summary = format!("rollback of `{env}` from release {} to release {}", from.id, to.id);
        gate::approval::request_covering(store, &run_id, &to.commit, &summary, Some(digest))?;
        return Ok(Outcome::AwaitingApproval { run_id, plan });
    }
    let components = plan.components();
    let holder = format!("rollback {run_id} ({})", holder_process());
    let locks = lock_names(&plan);
    if let Err(error) = take_locks(store, &locks, &holder) {
        return Err(refusal.record(&components, error));
    }
    let stage = inputs.for_run(&run);
    let applying = Applying { stage: &stage, clients, options, plan: &plan, on_event };
    let result = applying.checked_apply(refusal.step).await;
    for lock in &locks {
        let _ = store.release_lock(lock, &holder);
    }
    let release = match result {
        Ok(release) => release,
        Err(Applied::Refused(error)) => return Err(refusal.record(&components, error)),
        Err(Applied::Failed(error)) => return Err(error),
    };
    gate::mark_success(store, &run, &policy, env)?;
    Ok(Outcome::RolledBack { run_id, plan, release: Box::new(release) })
}

/// A refusal found before anything changed, recorded in the rollback's run: the step failed
/// for each component named, never begun (no record goes from running to its end here).
struct Refusal<'a> {
    store: &'a dyn Store,
    run_id: &'a str,
    commit: &'a str,
    step: Step,
}

impl Refusal<'_> {
    /// Records `components`' step failed with `error`; the error returned (the store's, when
    /// it could not record).
    fn record(&self, components: &[String], error: Error) -> Error {
        for component in components {
            let mut record = StepRecord::new(self.run_id, self.commit, component, self.step, Status::Failed);
            record.ended_at = Some(SystemTime::now());
            record.details.error = Some(run_state::error_chain(&error));
            if let Err(store_error) = self.store.record(&record) {
                return store_error.into();
            }
        }
        error
    }
}

/// The target and the release it was approved from, read from an approved rollback run.
fn approved(store: &dyn Store, env: &str, run_id: &str) -> Result<(Target, Option<String>), Error> {
    let records = store.run(run_id)?;
    let state = gate::approval::state(&records);
    let parts = gate::approval::digest(&records).map(|d| d.parts).unwrap_or_default();
    let (Some(to), Some(from)) = (parts.get(TO), parts.get(FROM)) else {
        return Err(Error::NotApproved { env: env.into(), run_id: run_id.into(), state: "no rollback's run".into() });
    };
    if !matches!(state, gate::approval::ApprovalState::Approved { .. }) {
        return Err(Error::NotApproved { env: env.into(), run_id: run_id.into(), state: format!("{state:?}") });
    }
    Ok((Target::To(to.clone()), Some(from.clone())))
}

/// The deploy locks of every stack the plan names (the stack deployer's names for them).
fn lock_names(plan: &RollbackPlan) -> Vec<String> {
    let names: BTreeSet<String> = plan
        .from
        .stacks
        .values()
        .chain(plan.to.stacks.values())
        .map(|s| format!("deploy/{}/{}", s.region, s.stack_name))
        .collect();
    names.into_iter().collect()
}

fn take_locks(store: &dyn Store, locks: &[String], holder: &str) -> Result<(), Error> {
    for (index, lock) in locks.iter().enumerate() {
        if let Err(error) = store.acquire_lock(lock, holder, Duration::from_secs(3600)) {
            for taken in &locks[..index] {
                let _ = store.release_lock(taken, holder);
            }
            return Err(error.into());
        }
    }
    Ok(())
}

fn holder_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

/// A refusal found before anything changed, or a failure while applying (recorded already).
enum Applied {
    Refused(Error),
    Failed(Error),
}

/// What the checks read, for the apply.
struct Checked {
    bodies: BTreeMap<String, Vec<u8>>,
    /// What the checks could not read, shown before the apply.
    warnings: Vec<String>,
    site: Option<frontend_publisher::release::RestorePlan>,
}

/// A rollback being applied: its run's inputs, the clients, the options and the plan.
#[derive(Clone, Copy)]
struct Applying<'a> {
    stage: &'a StageInputs<'a>,
    clients: &'a Clients,
    options: &'a Options,
    plan: &'a RollbackPlan,
    on_event: &'a (dyn Fn(Event) + Sync),
}

impl Applying<'_> {
    /// The checks, then the apply with each component's `step` recorded from running to its end.
    async fn checked_apply(&self, step: Step) -> Result<Release, Applied> {
        let Applying { stage, clients, options, plan, on_event } = *self;
        let checked = check(stage.context, clients, stage.run, plan).await.map_err(Applied::Refused)?;
        // Stopped before anything changed: refuse whole. Begun, the site (restored beside the
        // stacks) would go back while a cancelled stack stays, leaving the environment mixed.
        if stage.cancelled() {
            return Err(Applied::Refused(Error::Cancelled { env: plan.env.clone() }));
        }
        for warning in &checked.warnings {
            on_event(Event::Done(format!("warning: {warning}")));
        }
        let mut recordings = Vec::new();
        for component in &plan.components() {
            let recording = Recording::begin(stage.store, &stage.run.run_id, &plan.to.commit, component, step);
            recordings.push(recording.map_err(|e| Applied::Failed(e.into()))?);
        }
        let result = self.apply(checked).await;
        let why = match (&options.reason, options.emergency) {
            (Some(reason), _) => format!(" ({reason}; without approval)"),
            (None, true) => " (emergency: without approval)".to_string(),
            (None, false) => String::new(),
        };
        let note = format!("rolled back to release {} from {}{why}", plan.to.id, plan.from.id);
        for recording in recordings {
            let ended = match &result {
                Ok(_) => recording.end(Status::Passed, |d| d.note = Some(note.clone())),
                Err(error) => recording.end(Status::Failed, |d| d.error = Some(run_state::error_chain(error))),
            };
            ended.map_err(|e| Applied::Failed(e.into()))?;
        }
        result.map_err(Applied::Failed)
    }

    /// Applies a checked plan: the stacks, then their functions, the site meanwhile (it needs
    /// neither); then the rollback's release.
    async fn apply(&self, checked: Checked) -> Result<Release, Error> {
        let (code, site) = tokio::join!(self.restore_code(&checked), self.restore_site(&checked));
        code?;
        let release = self.record_release(site?).await?;
        if release.artifact_bucket.is_some() {
            self.retain().await;
        }
        Ok(release)
    }

    /// Each stack back through its change set, one after the other, then every function's code
    /// at once.
    async fn restore_code(&self, checked: &Checked) -> Result<(), Error> {
        let Applying { clients, plan, on_event, .. } = *self;
        for (name, step) in &plan.stacks {
            let StackStep::Restore(stack) = step else { continue };
            let body = checked.bodies.get(name).cloned().unwrap_or_default();
            self.restore_stack(name, stack, body).await?;
        }
        let functions = plan.functions.iter().filter_map(|(name, step)| match step {
            FunctionStep::Restore(function) => Some(async move {
                let stack_name = plan.to.stacks.get(&function.stack).map(|s| s.stack_name.as_str());
                restore_function(clients, function, stack_name)
                    .await
                    .map_err(|source| Error::Code { function: name.clone(), source })?;
                on_event(Event::Done(format!("function {name}: code back to {}", function.code_sha256)));
                Ok::<(), Error>(())
            }),
            FunctionStep::Stays(_) => None,
        });
        futures_util::future::try_join_all(functions).await.map(drop)
    }

    /// The site's files back as the release had them (when it goes back); the site's part of
    /// the rollback's release.
    async fn restore_site(&self, checked: &Checked) -> Result<Option<run_state::release::SiteRelease>, Error> {
        let Applying { clients, plan, on_event, .. } = *self;
        let (Some(restore), Some(earlier)) = (&checked.site, &plan.to.site) else { return Ok(plan.to.site.clone()) };
        let restored = frontend_publisher::release::apply_restore(
            &clients.s3,
            clients.cloudfront.as_ref(),
            restore,
            earlier,
            &|_| {},
        );
        let (part, _) = restored.await?;
        on_event(Event::Done(restore.describe()));
        Ok(Some(part))
    }

    /// Records the rollback's release (the target's stacks and functions, the site as restored)
    /// in the store and, with an artifact bucket, in the bucket.
    async fn record_release(&self, site: Option<run_state::release::SiteRelease>) -> Result<Release, Error> {
        let Applying { stage, clients, options, plan, .. } = *self;
        let to = &plan.to;
        let release =
            run_state::release::contribute(stage.store, &plan.env, &stage.run.run_id, &to.commit, |release| {
                release.artifact_bucket = to.artifact_bucket.clone();
                release.stacks = to.stacks.clone();
                release.functions = to.functions.clone();
                release.site = site;
                release.rollback =
                    Some(RollbackOf { to: to.id.clone(), from: plan.from.id.clone(), emergency: options.emergency });
            })?;
        if let Some(bucket) = &release.artifact_bucket {
            let key = release.object_key();
            clients
                .s3
                .put_object()
                .bucket(bucket)
                .key(&key)
                .content_type("application/json")
                .body(release.to_json().into())
                .send()
                .await
                .map_err(|e| aws("PutObject", &key, e))?;
        }
        Ok(release)
    }

    /// The artifact bucket's retention after the rollback's release is recorded (stack-deployer's
    /// pass, as after a deploy: the artifacts of the release the environment runs again tagged
    /// kept). A failure is shown, not returned: the environment is rolled back already.
    async fn retain(&self) {
        let Applying { stage, clients, plan, on_event, .. } = *self;
        let result = async {
            let config = stage.context.required_config()?;
            let environment = stack_deployer::DeploySettings::from_config(config)?.environment(config, &plan.env)?;
            let retained =
                stack_deployer::retention::retain_after_release(config, &environment, stage.store, &clients.s3).await;
            Ok::<_, Error>(retained?)
        };
        match result.await {
            Ok(retention) if !retention.missing.is_empty() => on_event(Event::Done(format!(
                "warning: artifacts a kept release names are gone from the bucket (a rollback to it is refused): {}",
                retention.missing.iter().cloned().collect::<Vec<_>>().join(", ")
            ))),
            Ok(_) => {}
            Err(error) => on_event(Event::Done(format!(
                "warning: the artifacts' retention tags were not updated: {}",
                run_state::error_chain(&error)
            ))),
        }
    }

    /// One stack back to the release's template and parameters through one change set (the
    /// deployer's), watched to its end; the run's cancel flag stops it before the execute.
    async fn restore_stack(&self, name: &str, stack: &StackRelease, body: Vec<u8>) -> Result<(), Error> {
        let Applying { stage, clients, options, plan, on_event } = *self;
        let config = stage.context.required_config()?;
        let environment = stack_deployer::DeploySettings::from_config(config)?.environment(config, &plan.env)?;
        let deploy_plan = deploy_plan(plan, stack, &environment, options);
        let (previous, values) = parameters(stack);
        let stack_plan = stack_plan(name, stack, body, previous.clone());
        let change_set = stack_deployer::apply::change_set_name(&["rollback", &stage.run.run_id]);
        let mut apply_options =
            stack_deployer::ApplyOptions::new(&change_set, environment.timeout, environment.change_set_timeout);
        apply_options.use_previous = previous;
        // A rollback is waited for: its first polls come sooner than a deploy's (the backoff still
        // doubles them up to the deploy's longest pause).
        apply_options.first_poll = options.first_poll.unwrap_or(FIRST_POLL);
        apply_options.cancel = Some(stage.cancel);
        let deployer = stack_deployer::Clients {
            s3: clients.s3.clone(),
            cloudformation: clients.cloudformation.clone(),
            lambda: clients.lambda.clone(),
        };
        let on_stack = |event: stack_deployer::Event| on_event(Event::Stack(event));
        let deploy = stack_deployer::apply::deploy_stack;
        let result = deploy(&deployer, &deploy_plan, &stack_plan, &values, &apply_options, &on_stack).await?;
        restored(name, stack, result.outcome, on_event)
    }
}

/// The deployer's plan a stack's rollback goes through: the environment's region, bucket, roles
/// and rollback triggers (pure).
fn deploy_plan(
    plan: &RollbackPlan,
    stack: &StackRelease,
    environment: &stack_deployer::Environment,
    options: &Options,
) -> stack_deployer::Plan {
    stack_deployer::Plan {
        environment: plan.env.clone(),
        region: Some(stack.region.clone()),
        bucket: plan.to.artifact_bucket.clone().unwrap_or_default(),
        cfn_role_arn: options.cfn_role_arn.clone().or_else(|| environment.cfn_role_arn.clone()),
        role_arn: environment.account.role_arn.clone(),
        // The environment's alarms stay the change set's rollback triggers (an empty list would
        // clear them).
        rollback_alarms: environment.rollback_alarms.clone(),
        rollback_monitoring_minutes: environment.rollback_monitoring_minutes,
        ..Default::default()
    }
}

/// The release's parameters as sent (pure): those it kept as `UsePreviousValue` (a `NoEcho`
/// one, whose value is never kept) and the values of the others.
fn parameters(stack: &StackRelease) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut previous = BTreeSet::new();
    let mut values = BTreeMap::new();
    for (name, value) in &stack.parameters {
        match value {
            Parameter::Value(value) => {
                values.insert(name.clone(), value.clone());
            }
            Parameter::UsePreviousValue => {
                previous.insert(name.clone());
            }
        }
    }
    (previous, values)
}

/// The stack as the deployer's plan names it: the release's template (by its key) and body,
/// tags, capabilities and components (pure).
fn stack_plan(
    name: &str,
    stack: &StackRelease,
    body: Vec<u8>,
    previous: BTreeSet<String>,
) -> stack_deployer::StackPlan {
    stack_deployer::StackPlan {
        name: name.to_string(),
        stack_name: stack.stack_name.clone(),
        template: stack.template_key.clone(),
        template_sha256: stack.template_sha256.clone(),
        body,
        template_key: Some(stack.template_key.clone()),
        no_echo: previous,
        tags: stack.tags.clone(),
        capabilities: stack.capabilities.clone(),
        components: stack.components.clone(),
        ..Default::default()
    }
}

/// How a stack's change set ended, as the rollback's verdict: back (shown), blocked by its
/// state, or failed.
fn restored(
    name: &str,
    stack: &StackRelease,
    outcome: stack_deployer::StackOutcome,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(), Error> {
    use stack_deployer::StackOutcome;
    match outcome {
        StackOutcome::Deployed { .. } | StackOutcome::NoChanges | StackOutcome::Unchanged => {
            on_event(Event::Done(format!("stack {name}: {outcome}")));
            Ok(())
        }
        StackOutcome::Blocked { status, next } => {
            Err(Error::StackState { stack: stack.stack_name.clone(), status, next })
        }
        other => Err(Error::StackFailed {
            stack: stack.stack_name.clone(),
            outcome: run_state::redact::redact(&other.to_string()),
        }),
    }
}

/// Reads what the apply needs and refuses before any change: each template and zip still in
/// the bucket, each stack in a state a change set can start from and with nothing removed
/// since that its earlier template cannot take back, the site's files there.
async fn check(context: &StageContext, clients: &Clients, run: &RunDir, plan: &RollbackPlan) -> Result<Checked, Error> {
    let expired = |what: String| Error::Expired { env: plan.env.clone(), id: plan.to.id.clone(), what };
    let bucket = plan.to.artifact_bucket.clone().unwrap_or_default();
    let mut bodies = BTreeMap::new();
    let mut warnings = Vec::new();
    for (name, step) in &plan.stacks {
        let StackStep::Restore(stack) = step else { continue };
        let body = match clients.s3.get_object().bucket(&bucket).key(&stack.template_key).send().await {
            Ok(out) => out.body.collect().await.map_err(|e| aws("GetObject", &stack.template_key, e))?.to_vec(),
            Err(e) if aws_target::ErrorKind::of(&e) == aws_target::ErrorKind::NotFound => {
                return Err(expired(format!("template s3://{bucket}/{}", stack.template_key)));
            }
            Err(e) => return Err(aws("GetObject", &stack.template_key, e)),
        };
        for (key, sha256) in &stack.fixed_templates {
            let what = format!("nested template s3://{bucket}/{key}");
            holds(&clients.s3, &bucket, key, sha256, &what).await.map_err(|e| e.unwrap_or_else(&expired))?;
        }
        check_stack_state(&clients.cloudformation, stack).await?;
        warnings.extend(crate::takeback::check(&clients.cloudformation, &stack.stack_name, &plan.to.id, &body).await?);
        bodies.insert(name.clone(), body);
    }
    for (_, step) in &plan.functions {
        let FunctionStep::Restore(function) = step else { continue };
        // Lambda's CodeSha256 is the zip's SHA-256 in base64; the deployer's metadata is hex.
        let sha256 = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &function.code_sha256)
            .map(hex::encode)
            .unwrap_or_default();
        let what = format!("zip s3://{}/{}", function.bucket, function.key);
        holds(&clients.s3, &function.bucket, &function.key, &sha256, &what)
            .await
            .map_err(|e| e.unwrap_or_else(&expired))?;
    }
    let site = match (&plan.site, &plan.to.site) {
        (Some(Ok(_)), Some(site)) => {
            let root = context
                .required_config()
                .ok()
                .and_then(|c| frontend_publisher::PublishConfig::from_config(c).ok().flatten())
                .map_or_else(|| "index.html".to_string(), |c| c.root_document);
            match frontend_publisher::release::plan_restore(&clients.s3, site, &run.run_id, &root).await {
                Ok(restore) => Some(restore),
                Err(frontend_publisher::Error::ReleaseGone { what }) => return Err(expired(what)),
                Err(error) => return Err(error.into()),
            }
        }
        _ => None,
    };
    Ok(Checked { bodies, warnings, site })
}

/// Checks that `key` still holds the content whose hex SHA-256 is `sha256`, as the deployer's
/// `sha256` metadata says: a fixed key (`artifact_mode = "fixed"`) is overwritten by every
/// deploy, and restoring from it would put back the newer build while saying the older.
/// `Err(Err(what))` when it is gone or replaced (for [`Error::Expired`]), `Err(Ok(error))` for a
/// failed call. An object without the metadata (not uploaded by the deployer) is taken as it is.
async fn holds(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    sha256: &str,
    what: &str,
) -> Result<(), Result<Error, String>> {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(head) => match head.metadata().and_then(|m| m.get("sha256")) {
            Some(found) if !sha256.is_empty() && found != sha256 => {
                Err(Err(format!("{what} (it holds a later build now: a fixed key, which every deploy overwrites)")))
            }
            _ => Ok(()),
        },
        Err(e) if aws_target::ErrorKind::of(&e) == aws_target::ErrorKind::NotFound => Err(Err(what.to_string())),
        Err(e) => Err(Ok(aws("HeadObject", key, e))),
    }
}

async fn check_stack_state(cf: &aws_sdk_cloudformation::Client, stack: &StackRelease) -> Result<(), Error> {
    let found = stack_deployer::apply::describe_stack(cf, &stack.stack_name).await?;
    let status = found.as_ref().and_then(|s| s.stack_status()).map(|s| s.as_str().to_string());
    let next = match status.as_deref() {
        None => "it no longer exists; deploy it again (a rollback only updates stacks)".to_string(),
        Some(s) if s.ends_with("_IN_PROGRESS") => "another operation is running on it; wait for it to end".into(),
        Some("ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "DELETE_FAILED" | "DELETE_COMPLETE") => {
            "it cannot be updated; delete it and deploy again".into()
        }
        Some("UPDATE_ROLLBACK_FAILED") => {
            format!(
                "continue its rollback first (`aws cloudformation continue-update-rollback --stack-name {}`)",
                stack.stack_name
            )
        }
        Some(_) => return Ok(()),
    };
    Err(Error::StackState { stack: stack.stack_name.clone(), status: status.unwrap_or_else(|| "gone".into()), next })
}

fn aws<E: std::error::Error + Send + Sync + 'static>(operation: &'static str, target: &str, error: E) -> Error {
    let kind = aws_target::ErrorKind::Other;
    Error::Aws { operation, target: target.to_string(), kind, source: Box::new(error) }
}

/// `UpdateFunctionCode` from the release's zip, verified by its `CodeSha256` (lambda-packager's
/// update); the function found again through its logical path, as a stack's rollback may have
/// replaced it.
async fn restore_function(
    clients: &Clients,
    function: &run_state::release::FunctionRelease,
    stack_name: Option<&str>,
) -> Result<(), lambda_packager::update::UpdateError> {
    use lambda_packager::update::{CodeSource, CodeUpdatePlan, RateLimiter, UpdateError};
    let name = match stack_name.filter(|_| !function.path.is_empty()) {
        Some(stack) => match stack_deployer::apply::physical_name(&clients.cloudformation, stack, &function.path).await
        {
            Ok(found) if !found.is_empty() => found,
            _ => function.function_name.clone(),
        },
        None => function.function_name.clone(),
    };
    let current = clients.lambda.get_function_configuration().function_name(&name).send().await.map_err(|e| {
        UpdateError::Aws { operation: "GetFunctionConfiguration", function: name.clone(), source: Box::new(e) }
    })?;
    let update = CodeUpdatePlan {
        function: name,
        current: current.code_sha256().unwrap_or_default().to_string(),
        wanted: function.code_sha256.clone(),
        package: PathBuf::new(),
    };
    let limiter = RateLimiter::per_second(lambda_packager::update::DEFAULT_CALLS_PER_SECOND);
    let source = CodeSource::S3 { bucket: function.bucket.clone(), key: function.key.clone() };
    lambda_packager::update::apply(&clients.lambda, &limiter, &update, &source, Duration::from_secs(300)).await?;
    Ok(())
}

/// Rebuilds `env`'s releases in the store from the artifact bucket's `releases/ENV/`
/// objects (a lost store): each written again, oldest first. Returns how many.
pub async fn rebuild_store(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    env: &str,
    store: &dyn Store,
) -> Result<usize, Error> {
    run_state::check_name("environment", env)?;
    let prefix = Release::prefix(env);
    let mut keys = Vec::new();
    let mut pages = s3.list_objects_v2().bucket(bucket).prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| aws("ListObjectsV2", &prefix, e))?;
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
    }
    keys.sort();
    for key in &keys {
        let out = s3.get_object().bucket(bucket).key(key).send().await.map_err(|e| aws("GetObject", key, e))?;
        let bytes = out.body.collect().await.map_err(|e| aws("GetObject", key, e))?.to_vec();
        let release: Release = serde_json::from_slice(&bytes).map_err(|e| {
            Error::State(run_state::Error::corrupt(format!("s3://{bucket}/{key}"), "not a release record", e))
        })?;
        store.put_release(&release)?;
    }
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput;
    use aws_sdk_cloudformation::types::{Stack, StackStatus};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    use super::*;

    fn stack_release() -> StackRelease {
        StackRelease {
            stack_name: "app-prod".into(),
            region: "us-east-1".into(),
            template_key: "templates/app-1.json".into(),
            template_url: "https://artifacts.s3.amazonaws.com/templates/app-1.json".into(),
            template_sha256: "1".into(),
            parameters: BTreeMap::new(),
            capabilities: Vec::new(),
            tags: BTreeMap::new(),
            components: Vec::new(),
            fixed_templates: BTreeMap::new(),
            run_id: "r1".into(),
        }
    }

    /// Recorded AWS-shaped DescribeStacks answers: the emulator never rolls a stack back, so it
    /// cannot be brought to UPDATE_ROLLBACK_FAILED or ROLLBACK_COMPLETE.
    async fn checked(status: StackStatus) -> Result<(), Error> {
        let answer = mock!(aws_sdk_cloudformation::Client::describe_stacks).then_output(move || {
            let stack = Stack::builder()
                .stack_name("app-prod")
                .stack_id("arn:aws:cloudformation:us-east-1:111111111111:stack/app-prod/1")
                .stack_status(status.clone())
                .creation_time(aws_smithy_types::DateTime::from_secs(0))
                .build();
            DescribeStacksOutput::builder().stacks(stack).build()
        });
        let cf = mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, [&answer]);
        check_stack_state(&cf, &stack_release()).await
    }

    #[tokio::test]
    async fn a_stack_no_change_set_can_start_from_refuses_the_rollback_with_exit_3() {
        let refused = checked(StackStatus::UpdateRollbackFailed).await.unwrap_err();
        assert_eq!(refused.exit_code(), 3);
        assert_eq!(
            refused.to_string(),
            "stack app-prod is UPDATE_ROLLBACK_FAILED: continue its rollback first (`aws cloudformation continue-update-rollback --stack-name app-prod`)"
        );
        let refused = checked(StackStatus::UpdateInProgress).await.unwrap_err();
        assert!(refused.to_string().ends_with("another operation is running on it; wait for it to end"), "{refused}");
        assert!(matches!(checked(StackStatus::RollbackComplete).await, Err(Error::StackState { .. })));
        checked(StackStatus::UpdateRollbackComplete).await.expect("an update rolled back can be updated");
        checked(StackStatus::UpdateComplete).await.expect("updatable");
    }

    /// In the emulator: a fixed key the next deploy overwrote no longer holds the release's build,
    /// so the rollback refuses it (before anything changes) instead of restoring the later one.
    #[tokio::test]
    async fn a_fixed_key_overwritten_by_a_later_deploy_refuses_the_rollback() {
        let moto = test_support::Moto::shared();
        let s3 = aws_target::s3(&moto.sdk_config().await, None);
        let bucket = format!("rollback-fixed-{}", std::process::id());
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let put = |sha256: &'static str| {
            s3.put_object()
                .bucket(&bucket)
                .key("lambda/api.zip")
                .metadata("sha256", sha256)
                .body(b"zip".to_vec().into())
        };
        put("aa11").send().await.unwrap();
        assert!(holds(&s3, &bucket, "lambda/api.zip", "aa11", "zip").await.is_ok());
        // The next build's deploy writes the same key.
        put("bb22").send().await.unwrap();
        match holds(&s3, &bucket, "lambda/api.zip", "aa11", "zip s3://b/lambda/api.zip").await {
            Err(Err(what)) => assert!(what.contains("a later build"), "{what}"),
            other => panic!("not refused: {:?}", other.map_err(|e| e.map(|e| e.to_string()))),
        }
        match holds(&s3, &bucket, "lambda/gone.zip", "aa11", "zip s3://b/lambda/gone.zip").await {
            Err(Err(what)) => assert_eq!(what, "zip s3://b/lambda/gone.zip"),
            other => panic!("not refused: {:?}", other.map_err(|e| e.map(|e| e.to_string()))),
        }
    }
}
