//! Applying a plan: artifacts (HEAD before PUT), then each stack through one change set,
//! watched with backoff until it ends; outputs read; changed Lambda code updated.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudformation::Client as CloudFormation;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetError;
use aws_sdk_cloudformation::types::{
    Capability, ChangeAction, ChangeSetStatus, ChangeSetType, ExecutionStatus, Parameter, Replacement,
    RollbackConfiguration, RollbackTrigger, Stack, Tag, TemplateStage,
};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_target::ErrorKind;
use aws_target::poll::{self, Backoff, Poll, PollError, Wait};
use futures_util::StreamExt;

use crate::config::ParameterValue;
use crate::plan::{ArtifactContent, Plan, StackPlan};
use crate::{Error, Event};

/// The SDK clients a deploy uses.
#[derive(Debug, Clone)]
pub struct Clients {
    /// S3, for the artifacts.
    pub s3: aws_sdk_s3::Client,
    /// CloudFormation.
    pub cloudformation: CloudFormation,
    /// Lambda, for code updates after the stacks.
    pub lambda: aws_sdk_lambda::Client,
}

/// How the stacks are applied.
#[derive(Debug, Clone)]
pub struct ApplyOptions<'a> {
    /// Stop after each change set's preview and leave it (`--no-execute`).
    pub execute: bool,
    /// Delete and create again a stack left `ROLLBACK_COMPLETE` by a failed first create.
    pub recreate_failed: bool,
    /// The one change set name of this deploy (and the execute's request token).
    pub change_set_name: String,
    /// The first pause between polls; it doubles up to `max_poll`.
    pub first_poll: Duration,
    /// The longest pause between polls.
    pub max_poll: Duration,
    /// The longest wait for a stack.
    pub timeout: Duration,
    /// The longest wait for a change set to be created.
    pub change_set_timeout: Duration,
    /// How long a Lambda code update may take.
    pub code_update_timeout: Duration,
    /// Set (by SIGINT or SIGTERM) to stop: no stack starts, a change set not yet executed is
    /// deleted, one executing is watched to its end.
    pub cancel: Option<&'a AtomicBool>,
    /// Parameters sent with `UsePreviousValue` rather than a value (a rollback's `NoEcho` ones,
    /// whose values are never kept).
    pub use_previous: std::collections::BTreeSet<String>,
}

impl ApplyOptions<'_> {
    /// Whether the deploy was asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }
}

impl<'a> ApplyOptions<'a> {
    /// Defaults: execute, poll from 1 s up to 10 s, the timeouts given.
    pub fn new(change_set_name: &str, timeout: Duration, change_set_timeout: Duration) -> ApplyOptions<'a> {
        ApplyOptions {
            execute: true,
            recreate_failed: false,
            change_set_name: change_set_name.to_string(),
            first_poll: Duration::from_secs(1),
            max_poll: Duration::from_secs(10),
            timeout,
            change_set_timeout,
            code_update_timeout: Duration::from_secs(300),
            cancel: None,
            use_previous: std::collections::BTreeSet::new(),
        }
    }
}

/// The prefix of every change set this crate makes: one left by a deploy that died is found by it.
pub const CHANGE_SET_PREFIX: &str = "stack-deployer-";

/// A change set name (`[a-zA-Z][-a-zA-Z0-9]*`, at most 128) made of `parts`.
pub fn change_set_name(parts: &[&str]) -> String {
    let mut name = String::from("stack-deployer");
    for part in parts {
        name.push('-');
        name.extend(part.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }));
    }
    name.truncate(128);
    name
}

/// The failure that caused the others.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RootCause {
    /// Logical path from the stack (`master/LambdasStack/ApiHandlerFunction`).
    pub path: String,
    /// The resource type.
    pub resource_type: String,
    /// `CREATE_FAILED` …
    pub status: String,
    /// CloudFormation's reason.
    pub reason: String,
}

impl fmt::Display for RootCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) {}: {}", self.path, self.resource_type, self.status, self.reason)
    }
}

/// How one stack ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StackOutcome {
    /// The deployed template and parameters equal the new ones: no change set made.
    Unchanged,
    /// CloudFormation found nothing to change; the change set (if one was made) was deleted.
    NoChanges,
    /// Created or updated.
    Deployed {
        /// The change set executed.
        change_set: String,
    },
    /// `--no-execute`: the change set waits for review.
    Previewed {
        /// Its name.
        change_set: String,
        /// Its ARN.
        change_set_id: String,
    },
    /// The deploy failed (rolled back, or the change set failed).
    Failed {
        /// The stack's (or change set's) status.
        status: String,
        /// The root cause, when the events give one.
        root_cause: Option<RootCause>,
        /// The change set, when one was made.
        change_set: Option<String>,
    },
    /// The stack's state forbids a deploy until someone acts.
    Blocked {
        /// The status.
        status: String,
        /// What to do.
        next: String,
    },
    /// Still in progress when the wait ended.
    TimedOut {
        /// The last status seen.
        status: String,
        /// How to keep watching.
        next: String,
    },
    /// Not deployed in this run.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Stopped by SIGINT or SIGTERM before its change set executed (the change set deleted).
    Cancelled {
        /// When it stopped.
        reason: String,
    },
}

impl StackOutcome {
    /// Whether the stack is where the config wants it (or was left on purpose).
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            StackOutcome::Unchanged
                | StackOutcome::NoChanges
                | StackOutcome::Deployed { .. }
                | StackOutcome::Previewed { .. }
                | StackOutcome::Skipped { .. }
        )
    }
}

impl fmt::Display for StackOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackOutcome::Unchanged => write!(f, "unchanged (template and parameters as deployed; no change set)"),
            StackOutcome::NoChanges => write!(f, "no changes (CloudFormation found nothing to change)"),
            StackOutcome::Deployed { change_set } => write!(f, "deployed (change set {change_set})"),
            StackOutcome::Previewed { change_set, .. } => {
                write!(f, "change set {change_set} created and left for review (--no-execute)")
            }
            StackOutcome::Failed { status, root_cause: Some(cause), .. } => {
                write!(f, "failed, {status}: root cause {cause}")
            }
            StackOutcome::Failed { status, root_cause: None, .. } => write!(f, "failed, {status}"),
            StackOutcome::Blocked { status, next } => write!(f, "blocked: the stack is {status}; {next}"),
            StackOutcome::TimedOut { status, next } => write!(f, "still {status} when the wait ended; {next}"),
            StackOutcome::Skipped { reason } => write!(f, "skipped: {reason}"),
            StackOutcome::Cancelled { reason } => write!(f, "cancelled: {reason}"),
        }
    }
}

/// What happened to one stack.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StackResult {
    /// Its name under `[deploy.stacks]`.
    pub name: String,
    /// The CloudFormation stack name.
    pub stack_name: String,
    /// The stack's ARN, when it exists.
    pub stack_id: Option<String>,
    /// Its outputs.
    pub outputs: BTreeMap<String, String>,
    /// How it ended.
    pub outcome: StackOutcome,
    /// Lambda functions whose code was updated after the stack.
    pub code_updated: Vec<String>,
}

/// One line of a change set preview.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResourceChange {
    /// `Add`, `Modify`, `Remove` …
    pub action: String,
    /// For `Modify`: `True`, `False` or `Conditional`.
    pub replacement: Option<String>,
    /// Logical path (nested stacks included).
    pub path: String,
    /// Resource type.
    pub resource_type: String,
}

impl fmt::Display for ResourceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.action.as_str() {
            "Add" => "+",
            "Remove" => "-",
            "Modify" => "~",
            _ => "?",
        };
        write!(f, "{sign} {} {} ({})", self.action, self.path, self.resource_type)?;
        if let Some(replacement) = &self.replacement {
            write!(f, " replacement: {replacement}")?;
        }
        Ok(())
    }
}

pub(crate) fn aws<E, R>(operation: &'static str, target: &str, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    Error::Aws { operation, target: target.to_string(), kind: ErrorKind::of(&error), source: Box::new(error) }
}

/// Checks the bucket, then uploads the artifacts missing from it (HEAD before PUT).
/// Returns how many were uploaded and how many were already there.
pub async fn upload_artifacts(
    s3: &aws_sdk_s3::Client,
    plan: &Plan,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<(usize, usize), Error> {
    if let Err(error) = s3.head_bucket().bucket(&plan.bucket).send().await {
        let kind = ErrorKind::of(&error);
        return Err(match kind {
            ErrorKind::NotFound => Error::BucketMissing { bucket: plan.bucket.clone() },
            _ => aws("HeadBucket", &plan.bucket, error),
        });
    }
    let results: Vec<Result<bool, Error>> = futures_util::stream::iter(plan.artifacts.iter())
        .map(|artifact| async move {
            match s3.head_object().bucket(&plan.bucket).key(&artifact.key).send().await {
                // A content-addressed key holds its content; a key the template reads is
                // uploaded again unless it holds the same bytes.
                Ok(head)
                    if !artifact.fixed || head.metadata().and_then(|m| m.get("sha256")) == Some(&artifact.sha256) =>
                {
                    return Ok(false);
                }
                Ok(_) => {}
                Err(error) if ErrorKind::of(&error) == ErrorKind::NotFound => {}
                Err(error) => return Err(aws("HeadObject", &artifact.key, error)),
            }
            let bytes = match &artifact.content {
                ArtifactContent::Template(bytes) => bytes.clone(),
                ArtifactContent::File(path) => {
                    pipeline_config::fs::read_regular(path, lambda_packager::MAX_ZIP_BYTES * 5)
                        .map_err(|e| Error::io(path, e))?
                }
            };
            s3.put_object()
                .bucket(&plan.bucket)
                .key(&artifact.key)
                .metadata("sha256", &artifact.sha256)
                .body(bytes.into())
                .send()
                .await
                .map_err(|e| aws("PutObject", &artifact.key, e))?;
            Ok(true)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let (mut uploaded, mut present) = (0, 0);
    for (artifact, result) in plan.artifacts.iter().zip(&results) {
        if let Ok(was_uploaded) = result {
            on_event(Event::Artifact { key: artifact.key.clone(), uploaded: *was_uploaded });
        }
    }
    for result in results {
        if result? {
            uploaded += 1;
        } else {
            present += 1;
        }
    }
    Ok((uploaded, present))
}

/// Reads a stack; `None` when it does not exist.
///
/// DescribeStacks answers a stack name that does not exist with the generic `ValidationError`
/// code (there is no NotFound code): the name was checked before, so that code means "no such
/// stack" here.
pub async fn describe_stack(cf: &CloudFormation, stack: &str) -> Result<Option<Stack>, Error> {
    match cf.describe_stacks().stack_name(stack).send().await {
        Ok(out) => Ok(out.stacks().first().cloned()),
        Err(error) if error.as_service_error().and_then(|e| e.code()) == Some("ValidationError") => Ok(None),
        Err(error) => Err(aws("DescribeStacks", stack, error)),
    }
}

fn status_of(stack: &Stack) -> String {
    stack.stack_status().map(|s| s.as_str().to_string()).unwrap_or_default()
}

fn outputs_of(stack: &Stack) -> BTreeMap<String, String> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value().unwrap_or_default().to_string())))
        .collect()
}

/// What the stack's state allows.
enum Start {
    Create,
    Update(Box<Stack>),
    Recreate(Box<Stack>),
    Blocked(StackOutcome),
}

fn start_from(stack: Option<Stack>, stack_name: &str, recreate_failed: bool) -> Start {
    let Some(stack) = stack else { return Start::Create };
    let status = status_of(&stack);
    let blocked = |next: String| Start::Blocked(StackOutcome::Blocked { status: status.clone(), next });
    match status.as_str() {
        "REVIEW_IN_PROGRESS" => Start::Create,
        "ROLLBACK_COMPLETE" if recreate_failed => Start::Recreate(Box::new(stack)),
        "ROLLBACK_COMPLETE" => blocked(format!(
            "its first create failed and it can only be deleted; pass --recreate-failed to delete `{stack_name}` and create it again"
        )),
        "ROLLBACK_FAILED" => blocked(format!(
            "delete it (`aws cloudformation delete-stack --stack-name {stack_name}`), then deploy again"
        )),
        "UPDATE_ROLLBACK_FAILED" => blocked(format!(
            "continue the rollback first (`aws cloudformation continue-update-rollback --stack-name {stack_name}`, skipping with --resources-to-skip what cannot roll back), then deploy again"
        )),
        "DELETE_FAILED" => blocked(format!(
            "finish deleting it (`aws cloudformation delete-stack --stack-name {stack_name} --retain-resources ...` for what failed to delete), then deploy again"
        )),
        s if s.ends_with("_IN_PROGRESS") => blocked(format!(
            "another operation is running on it; wait for it to end (`aws cloudformation describe-stacks --stack-name {stack_name}`), then deploy again"
        )),
        _ => Start::Update(Box::new(stack)),
    }
}

/// Deploys one stack with its parameters resolved.
///
/// The values of the template's `NoEcho` parameters never leave in full: CloudFormation's
/// reasons (stack events, a failed change set, the root cause) that quote one show
/// [`MASK`](crate::plan::MASK) instead, in the events and in the outcome that is printed and recorded.
pub async fn deploy_stack(
    clients: &Clients,
    plan: &Plan,
    stack: &StackPlan,
    parameters: &BTreeMap<String, String>,
    options: &ApplyOptions<'_>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<StackResult, Error> {
    let result = deploy_stack_masked(clients, plan, stack, parameters, options, on_event).await?;
    // The sweep before the change set was made can miss one that a killed deploy's request
    // made after it (the request was in flight when the process died): a second sweep once this
    // deploy has ended, still under the stack's lock, leaves nothing of an earlier deploy behind.
    if matches!(result.outcome, StackOutcome::Deployed { .. } | StackOutcome::NoChanges | StackOutcome::Failed { .. }) {
        let say = |message: String| on_event(Event::Stack { stack: stack.name.clone(), message });
        delete_leftovers(&clients.cloudformation, &stack.stack_name, options, &say).await?;
    }
    Ok(result)
}

async fn deploy_stack_masked(
    clients: &Clients,
    plan: &Plan,
    stack: &StackPlan,
    parameters: &BTreeMap<String, String>,
    options: &ApplyOptions<'_>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<StackResult, Error> {
    let secrets = no_echo_values(stack, parameters);
    if secrets.is_empty() {
        return deploy_stack_as_is(clients, plan, stack, parameters, options, on_event).await;
    }
    let masked = |event: Event| {
        on_event(match event {
            Event::Resource { stack, path, resource_type, status, reason } => {
                Event::Resource { stack, path, resource_type, status, reason: reason.map(|r| mask(&r, &secrets)) }
            }
            Event::Stack { stack, message } => Event::Stack { stack, message: mask(&message, &secrets) },
            other => other,
        })
    };
    let mut result = deploy_stack_as_is(clients, plan, stack, parameters, options, &masked).await?;
    mask_outcome(&mut result.outcome, &secrets);
    Ok(result)
}

/// The values of a stack's `NoEcho` parameters as resolved, longest first; values under 3
/// characters are left (masking every `a` would hide the reason, not a secret).
pub fn no_echo_values(stack: &StackPlan, parameters: &BTreeMap<String, String>) -> Vec<String> {
    let mut values: Vec<String> = stack
        .no_echo
        .iter()
        .filter_map(|name| parameters.get(name).or_else(|| stack.declared.get(name).and_then(Option::as_ref)))
        .filter(|v| v.chars().count() >= 3)
        .cloned()
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values.dedup();
    values
}

/// `text` with every one of `secrets` replaced by [`MASK`](crate::plan::MASK).
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), crate::plan::MASK);
        }
    }
    out
}

/// Masks the reasons an outcome quotes.
fn mask_outcome(outcome: &mut StackOutcome, secrets: &[String]) {
    match outcome {
        StackOutcome::Failed { status, root_cause, .. } => {
            *status = mask(status, secrets);
            if let Some(cause) = root_cause {
                cause.reason = mask(&cause.reason, secrets);
            }
        }
        StackOutcome::Blocked { next, .. } | StackOutcome::TimedOut { next, .. } => *next = mask(next, secrets),
        StackOutcome::Skipped { reason } | StackOutcome::Cancelled { reason } => *reason = mask(reason, secrets),
        StackOutcome::Unchanged
        | StackOutcome::NoChanges
        | StackOutcome::Deployed { .. }
        | StackOutcome::Previewed { .. } => {}
    }
}

/// What a part of a stack's deploy says: go on with its value, or the deploy ends with this result.
enum Step<T> {
    Go(T, StackResult),
    End(StackResult),
}

/// The value of a [`Step::Go`] and the result; returns the result at a [`Step::End`].
macro_rules! go {
    ($step:expr) => {
        match $step {
            Step::Go(value, result) => (value, result),
            Step::End(result) => return Ok(result),
        }
    };
}

impl ApplyOptions<'_> {
    /// The polling of this deploy: from `first_poll`, doubled up to `max_poll`, until `deadline`.
    fn wait(&self, deadline: Duration) -> Wait<'static> {
        Wait::new(self.backoff(), deadline)
    }

    /// The pauses of this deploy's polls and retries: from `first_poll`, doubled up to `max_poll`.
    fn backoff(&self) -> Backoff {
        Backoff { first: self.first_poll, max: self.max_poll, factor: 2 }
    }
}

async fn deploy_stack_as_is(
    clients: &Clients,
    plan: &Plan,
    stack: &StackPlan,
    parameters: &BTreeMap<String, String>,
    options: &ApplyOptions<'_>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<StackResult, Error> {
    let cf = &clients.cloudformation;
    let result = StackResult {
        name: stack.name.clone(),
        stack_name: stack.stack_name.clone(),
        stack_id: None,
        outputs: BTreeMap::new(),
        outcome: StackOutcome::Unchanged,
        code_updated: Vec::new(),
    };
    let say = |message: String| on_event(Event::Stack { stack: stack.name.clone(), message });
    let ((kind, exists), mut result) = go!(start_stack(cf, stack, parameters, options, &say, result).await?);
    if exists {
        delete_leftovers(cf, &stack.stack_name, options, &say).await?;
    }
    if options.cancelled() {
        result.outcome = StackOutcome::Cancelled { reason: "before its change set was made".into() };
        return Ok(result);
    }
    let (arn, result) = go!(create_change_set(cf, plan, stack, parameters, options, kind, &say, result).await?);
    let stack_id = result.stack_id.clone().unwrap_or_else(|| stack.stack_name.clone());
    let (described, mut result) = go!(wait_for_change_set(cf, stack, &arn, options, result).await?);

    // The preview, nested stacks included.
    let mut changes = Vec::new();
    if let Err(error) = collect_changes(cf, described, &stack.name, &mut changes, 0).await {
        let _ = delete_change_set(cf, &arn).await;
        return Err(error);
    }
    on_event(Event::Preview {
        stack: stack.name.clone(),
        change_set: options.change_set_name.clone(),
        changes: changes.clone(),
    });
    if !options.execute {
        result.outcome =
            StackOutcome::Previewed { change_set: options.change_set_name.clone(), change_set_id: arn.clone() };
        return Ok(result);
    }

    if options.cancelled() {
        return cancel_change_set(cf, &arn, result, "before its change set was executed").await;
    }
    let started = SystemTime::now();
    if let Some(outcome) = execute(cf, &arn, options, &say).await? {
        result.outcome = outcome;
        return Ok(result);
    }
    watch_stack(cf, stack, &stack_id, &changes, started, options, on_event, result).await
}

/// Where the stack starts from: the change set's type and whether the stack exists; the
/// deploy ends here when the stack is blocked, its delete for `--recreate-failed` does not
/// end, or it holds the template and parameters already.
async fn start_stack(
    cf: &CloudFormation,
    stack: &StackPlan,
    parameters: &BTreeMap<String, String>,
    options: &ApplyOptions<'_>,
    say: &(dyn Fn(String) + Sync),
    mut result: StackResult,
) -> Result<Step<(ChangeSetType, bool)>, Error> {
    let existing = describe_stack(cf, &stack.stack_name).await?;
    let exists = existing.is_some();
    let kind = match start_from(existing, &stack.stack_name, options.recreate_failed) {
        Start::Blocked(outcome) => {
            result.outcome = outcome;
            return Ok(Step::End(result));
        }
        Start::Recreate(old) => {
            let id = old.stack_id().unwrap_or(&stack.stack_name).to_string();
            say(format!(
                "{} is ROLLBACK_COMPLETE: deleting it to create it again (--recreate-failed)",
                stack.stack_name
            ));
            cf.delete_stack().stack_name(&id).send().await.map_err(|e| aws("DeleteStack", &id, e))?;
            if let Some(outcome) = wait_for_delete(cf, &id, &stack.stack_name, options).await? {
                result.outcome = outcome;
                return Ok(Step::End(result));
            }
            ChangeSetType::Create
        }
        Start::Create => ChangeSetType::Create,
        Start::Update(current) => {
            result.stack_id = current.stack_id().map(str::to_string);
            // Nested templates at fixed keys can change while the body sent does not: only a
            // change set (CloudFormation reading them again) can tell.
            if stack.fixed_templates.is_empty()
                && same_parameters(&current, stack, parameters)
                && same_tags(&current, stack)
            {
                let template = cf
                    .get_template()
                    .stack_name(&stack.stack_name)
                    .template_stage(TemplateStage::Original)
                    .send()
                    .await
                    .map_err(|e| aws("GetTemplate", &stack.stack_name, e))?;
                if template.template_body().map(str::as_bytes) == Some(stack.body.as_slice()) {
                    result.outputs = outputs_of(&current);
                    result.outcome = StackOutcome::Unchanged;
                    return Ok(Step::End(result));
                }
            }
            ChangeSetType::Update
        }
    };
    Ok(Step::Go((kind, exists), result))
}

/// Waits for the delete of a `ROLLBACK_COMPLETE` stack (`id`); an outcome when it does not end
/// deleted.
async fn wait_for_delete(
    cf: &CloudFormation,
    id: &str,
    stack_name: &str,
    options: &ApplyOptions<'_>,
) -> Result<Option<StackOutcome>, Error> {
    let mut last = String::new();
    let deleted = poll::until(options.wait(options.timeout), tokio::time::sleep, async || {
        let now = describe_stack(cf, id).await?;
        Ok(match now.as_ref().map(status_of).as_deref() {
            None | Some("DELETE_COMPLETE") => Poll::Ready(None),
            Some("DELETE_FAILED") => Poll::Ready(Some(StackOutcome::Blocked {
                status: "DELETE_FAILED".into(),
                next: format!("delete `{stack_name}` by hand, then deploy again"),
            })),
            Some(status) => {
                last = status.to_string();
                Poll::Pending
            }
        })
    })
    .await;
    match deleted {
        Ok(outcome) => Ok(outcome),
        Err(PollError::Failed(error)) => Err(error),
        Err(PollError::TimedOut { .. } | PollError::Cancelled { .. }) => Ok(Some(StackOutcome::TimedOut {
            status: last,
            next: format!("wait for the delete of `{stack_name}` to end, then deploy again"),
        })),
    }
}

/// The `RollbackConfiguration` of a change set: each alarm (a CloudWatch alarm ARN, as
/// [`crate::config::Environment::rollback_alarms`] checks them) as an `AWS::CloudWatch::Alarm`
/// rollback trigger, and how long CloudFormation watches them after the resources are deployed.
/// Always sent, even empty: a change set without one keeps the triggers the stack's last change
/// set had, so alarms removed from the config would stay. Every change set of an environment
/// (a deploy's, a rollback's) carries its environment's:
/// `rollback_configuration(&env.rollback_alarms, env.rollback_monitoring_minutes)`.
pub fn rollback_configuration(alarms: &[String], monitoring_minutes: u32) -> RollbackConfiguration {
    let triggers =
        alarms.iter().map(|arn| RollbackTrigger::builder().arn(arn).r#type("AWS::CloudWatch::Alarm").build()).collect();
    RollbackConfiguration::builder()
        .set_rollback_triggers(Some(triggers))
        .monitoring_time_in_minutes(i32::try_from(monitoring_minutes).unwrap_or(i32::MAX))
        .build()
}

/// Creates the deploy's one change set; its ARN, by which it is referred to from here on.
#[allow(clippy::too_many_arguments)]
async fn create_change_set(
    cf: &CloudFormation,
    plan: &Plan,
    stack: &StackPlan,
    parameters: &BTreeMap<String, String>,
    options: &ApplyOptions<'_>,
    kind: ChangeSetType,
    say: &(dyn Fn(String) + Sync),
    mut result: StackResult,
) -> Result<Step<String>, Error> {
    say(format!("creating change set {} ({})", options.change_set_name, kind.as_str()));
    let mut request = cf
        .create_change_set()
        .stack_name(&stack.stack_name)
        .change_set_name(&options.change_set_name)
        .change_set_type(kind.clone())
        .include_nested_stacks(true)
        .set_role_arn(plan.cfn_role_arn.clone())
        .rollback_configuration(rollback_configuration(&plan.rollback_alarms, plan.rollback_monitoring_minutes))
        .set_parameters(Some(
            parameters
                .iter()
                .map(|(k, v)| Parameter::builder().parameter_key(k).parameter_value(v).build())
                .chain(
                    options
                        .use_previous
                        .iter()
                        .map(|k| Parameter::builder().parameter_key(k).use_previous_value(true).build()),
                )
                .collect(),
        ))
        .set_capabilities(Some(stack.capabilities.iter().map(|c| Capability::from(c.as_str())).collect()))
        .set_tags(Some(stack.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()));
    request = match &stack.template_key {
        Some(key) => request.template_url(format!("https://{}.s3.amazonaws.com/{key}", plan.bucket)),
        None => request.template_body(String::from_utf8_lossy(&stack.body)),
    };
    let created = match request.send().await {
        Ok(created) => created,
        Err(error) if is_no_updates_error(&error) => {
            result.outcome = StackOutcome::NoChanges;
            return finish_unchanged(cf, stack, result).await.map(Step::End);
        }
        Err(error) if ErrorKind::is_transient(&error) => {
            // The request may have reached CloudFormation with only its answer lost (a cut
            // connection, a timeout): the change set may exist. Delete it by its name so the
            // failure leaves nothing behind (if this fails too, the next deploy's sweep of
            // change sets left by earlier deploys removes it). Until CloudFormation says there
            // is none: the SDK may have retried the request, and the emulator, unlike AWS,
            // makes one change set per attempt.
            for _ in 0..4 {
                let deleted = cf
                    .delete_change_set()
                    .stack_name(&stack.stack_name)
                    .change_set_name(&options.change_set_name)
                    .send()
                    .await;
                if deleted.is_err() {
                    break;
                }
            }
            return Err(aws("CreateChangeSet", &stack.stack_name, error));
        }
        // Refused outright (denied, invalid): nothing was made.
        Err(error) => return Err(aws("CreateChangeSet", &stack.stack_name, error)),
    };
    let arn = created.id().unwrap_or_default().to_string();
    if let Some(id) = created.stack_id() {
        result.stack_id = Some(id.to_string());
    }
    Ok(Step::Go(arn, result))
}

/// Waits for the change set to be made (deleted when cancelled or too slow); the deploy ends
/// here when it failed, or found nothing to change.
async fn wait_for_change_set(
    cf: &CloudFormation,
    stack: &StackPlan,
    arn: &str,
    options: &ApplyOptions<'_>,
    mut result: StackResult,
) -> Result<Step<DescribeChangeSetOutput>, Error> {
    let wait = Wait { cancel: options.cancel, ..options.wait(options.change_set_timeout) };
    let made = poll::until(wait, tokio::time::sleep, async || {
        match cf.describe_change_set().change_set_name(arn).send().await {
            Ok(described) => Ok(match described.status() {
                Some(ChangeSetStatus::CreateComplete | ChangeSetStatus::Failed) => Poll::Ready(described),
                _ => Poll::Pending,
            }),
            // A read: asked again at the next poll, until the deadline.
            Err(error) if ErrorKind::is_transient(&error) => Ok(Poll::Pending),
            Err(error) => Err(error),
        }
    })
    .await;
    let described = match made {
        Ok(described) => described,
        Err(PollError::Failed(error)) => {
            // Not executed, so nothing of it may stay.
            let _ = delete_change_set(cf, arn).await;
            return Err(aws("DescribeChangeSet", arn, error));
        }
        Err(PollError::Cancelled { .. }) => {
            return cancel_change_set(cf, arn, result, "while its change set was being made").await.map(Step::End);
        }
        Err(PollError::TimedOut { .. }) => {
            delete_change_set(cf, arn).await?;
            result.outcome = StackOutcome::TimedOut {
                status: "change set CREATE_IN_PROGRESS".into(),
                next: "the change set was deleted; deploy again, or raise deploy.change_set_timeout".into(),
            };
            return Ok(Step::End(result));
        }
    };
    if described.status() == Some(&ChangeSetStatus::Failed) {
        let reason = described.status_reason().unwrap_or_default().to_string();
        delete_change_set(cf, arn).await?;
        if is_no_changes_reason(&reason) {
            result.outcome = StackOutcome::NoChanges;
            return finish_unchanged(cf, stack, result).await.map(Step::End);
        }
        result.outcome = StackOutcome::Failed {
            status: "change set FAILED".into(),
            root_cause: Some(RootCause {
                path: stack.name.clone(),
                resource_type: "AWS::CloudFormation::Stack".into(),
                status: "FAILED".into(),
                reason,
            }),
            change_set: Some(options.change_set_name.clone()),
        };
        return Ok(Step::End(result));
    }
    Ok(Step::Go(described, result))
}

/// Watches the executed stack to its end (its events as they come), then checks it holds
/// what the change set said.
#[allow(clippy::too_many_arguments)]
async fn watch_stack(
    cf: &CloudFormation,
    stack: &StackPlan,
    stack_id: &str,
    changes: &[ResourceChange],
    started: SystemTime,
    options: &ApplyOptions<'_>,
    on_event: &(dyn Fn(Event) + Sync),
    mut result: StackResult,
) -> Result<StackResult, Error> {
    let mut watcher = Watcher::new(stack_id, &stack.name, &options.change_set_name, started);
    let mut last = String::new();
    let wait = Wait { pause_first: true, ..options.wait(options.timeout) };
    let ended = poll::until(wait, tokio::time::sleep, async || {
        let now = match cf.describe_stacks().stack_name(stack_id).send().await {
            Ok(out) => out.stacks().first().cloned(),
            // A read: asked again at the next poll; the deadline still counts, so a network
            // that never comes back ends in a timeout, not a hang.
            Err(error) if ErrorKind::is_transient(&error) => return Ok(Poll::Pending),
            Err(error) => return Err(aws("DescribeStacks", stack_id, error)),
        };
        watcher.poll(cf, &stack.name, on_event).await?;
        let Some(now) = now else { return Ok(Poll::Pending) };
        let status = status_of(&now);
        if status.ends_with("_IN_PROGRESS") {
            last = status;
            return Ok(Poll::Pending);
        }
        Ok(Poll::Ready(now))
    })
    .await;
    let now = match ended {
        Ok(now) => now,
        Err(PollError::Failed(error)) => return Err(error),
        Err(PollError::TimedOut { .. } | PollError::Cancelled { .. }) => {
            result.outcome = StackOutcome::TimedOut {
                status: last,
                next: format!(
                    "it goes on in CloudFormation; watch it with `aws cloudformation describe-stack-events --stack-name {}`, or deploy again when it ends",
                    stack.stack_name
                ),
            };
            return Ok(result);
        }
    };
    let status = status_of(&now);
    result.outputs = outputs_of(&now);
    if matches!(status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE") {
        // Deployed means deployed: the stack holds what the change set said it would.
        let missing = verify(cf, stack_id, &stack.name, changes).await?;
        result.outcome = match missing.first() {
            None => StackOutcome::Deployed { change_set: options.change_set_name.clone() },
            Some(first) => StackOutcome::Failed {
                status,
                root_cause: Some(RootCause {
                    path: first.path.clone(),
                    resource_type: first.resource_type.clone(),
                    status: first.action.clone(),
                    reason: format!(
                        "the change set was executed but the stack does not match it: {}",
                        missing.iter().map(Mismatch::to_string).collect::<Vec<_>>().join("; ")
                    ),
                }),
                change_set: Some(options.change_set_name.clone()),
            },
        };
    } else {
        let root_cause = watcher.root_cause().or_else(|| {
            now.stack_status_reason().map(|reason| RootCause {
                path: stack.name.clone(),
                resource_type: "AWS::CloudFormation::Stack".into(),
                status: status.clone(),
                reason: reason.to_string(),
            })
        });
        result.outcome = StackOutcome::Failed { status, root_cause, change_set: Some(options.change_set_name.clone()) };
    }
    Ok(result)
}

/// Deletes the change set made for a deploy that was asked to stop before executing it.
async fn cancel_change_set(
    cf: &CloudFormation,
    arn: &str,
    mut result: StackResult,
    when: &str,
) -> Result<StackResult, Error> {
    delete_change_set(cf, arn).await?;
    result.outcome = StackOutcome::Cancelled { reason: format!("{when}; the change set was deleted") };
    Ok(result)
}

/// Deletes the change sets of `stack_name` that a deploy of this crate made and left (killed
/// before it executed or deleted them, or a `--no-execute` preview this deploy supersedes):
/// found by [`CHANGE_SET_PREFIX`], while this deploy holds the stack's lock. One executing is
/// left alone.
async fn delete_leftovers(
    cf: &CloudFormation,
    stack_name: &str,
    options: &ApplyOptions<'_>,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), Error> {
    let mut token: Option<String> = None;
    let mut leftovers = Vec::new();
    loop {
        let out = match cf.list_change_sets().stack_name(stack_name).set_next_token(token).send().await {
            Ok(out) => out,
            Err(error) if ErrorKind::of(&error) == ErrorKind::NotFound => return Ok(()),
            Err(error) if error.as_service_error().and_then(|e| e.code()) == Some("ValidationError") => return Ok(()),
            Err(error) => return Err(aws("ListChangeSets", stack_name, error)),
        };
        for summary in out.summaries() {
            let name = summary.change_set_name().unwrap_or_default();
            // The stack's own: an emulator may list every stack's change sets.
            let ours = summary.stack_name() == Some(stack_name) || summary.stack_name().is_none();
            let executing = summary.execution_status() == Some(&ExecutionStatus::ExecuteInProgress);
            if ours && name.starts_with(CHANGE_SET_PREFIX) && name != options.change_set_name && !executing {
                leftovers.push((name.to_string(), summary.change_set_id().unwrap_or(name).to_string()));
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for (name, id) in leftovers {
        delete_change_set(cf, &id).await?;
        say(format!("deleted change set {name}, left by an earlier deploy"));
    }
    Ok(())
}

/// Executes the change set, once: an answer that leaves it unknown whether CloudFormation
/// started (a 5xx, a reset connection, a timeout) is not retried blindly, since a second
/// execute of a change set that did run is no deploy of it. The change set's own execution
/// status is read instead: it ran (`EXECUTE_*`: watch the stack as usual), it did not
/// (`AVAILABLE`: execute it again, at most three times in all), or it can no longer run
/// (a failure with its status). A clear refusal (4xx) is an error as before.
///
/// Returns an outcome when the deploy ends here.
async fn execute(
    cf: &CloudFormation,
    arn: &str,
    options: &ApplyOptions<'_>,
    say: &(dyn Fn(String) + Sync),
) -> Result<Option<StackOutcome>, Error> {
    const ATTEMPTS: u32 = 3;
    let again = |doubt: &Doubt, attempt: u32| {
        let did_not_start = matches!(doubt, Doubt::DidNotStart(_));
        if did_not_start {
            say(format!("the change set did not start: executing it again ({} of {ATTEMPTS})", attempt + 1));
        }
        did_not_start
    };
    let executed = poll::retry(options.backoff(), ATTEMPTS, tokio::time::sleep, again, async || {
        execute_once(cf, arn, options, say).await
    })
    .await;
    match executed {
        Ok(outcome) => Ok(outcome),
        Err(Doubt::Failed(error)) => Err(error),
        Err(Doubt::DidNotStart(error)) => {
            let _ = delete_change_set(cf, arn).await;
            Err(aws("ExecuteChangeSet", arn, *error))
        }
    }
}

/// Why one `ExecuteChangeSet` did not settle the deploy.
enum Doubt {
    /// The change set did not start (`AVAILABLE` after no clear answer): it may be executed again.
    DidNotStart(Box<aws_sdk_cloudformation::error::SdkError<ExecuteChangeSetError>>),
    /// An error that ends the deploy.
    Failed(Error),
}

/// One `ExecuteChangeSet`, and after no clear answer, the change set read to learn whether it ran.
async fn execute_once(
    cf: &CloudFormation,
    arn: &str,
    options: &ApplyOptions<'_>,
    say: &(dyn Fn(String) + Sync),
) -> Result<Option<StackOutcome>, Doubt> {
    let sent = cf
        .execute_change_set()
        .change_set_name(arn)
        .client_request_token(&options.change_set_name)
        .customize()
        .config_override(
            aws_sdk_cloudformation::config::Builder::default()
                .retry_config(aws_sdk_cloudformation::config::retry::RetryConfig::disabled()),
        )
        .send()
        .await;
    let error = match sent {
        Ok(_) => return Ok(None),
        Err(error) => error,
    };
    let kind = ErrorKind::of(&error);
    if !ErrorKind::is_transient(&error) {
        // Refused outright: it did not run, so the change set goes.
        let _ = delete_change_set(cf, arn).await;
        return Err(Doubt::Failed(aws("ExecuteChangeSet", arn, error)));
    }
    say(format!("ExecuteChangeSet got no clear answer ({kind}); reading the change set to learn whether it ran"));
    let described = describe_after_doubt(cf, arn, options).await.map_err(Doubt::Failed)?;
    match described.execution_status() {
        Some(
            ExecutionStatus::ExecuteInProgress | ExecutionStatus::ExecuteComplete | ExecutionStatus::ExecuteFailed,
        ) => {
            say("the change set is executing: watching the stack".to_string());
            Ok(None)
        }
        Some(ExecutionStatus::Available) => Err(Doubt::DidNotStart(Box::new(error))),
        other => {
            let status = other.map(|s| s.as_str().to_string()).unwrap_or_else(|| "unknown".into());
            Ok(Some(StackOutcome::Failed {
                status: format!("change set {status} after ExecuteChangeSet failed ({kind})"),
                root_cause: None,
                change_set: Some(options.change_set_name.clone()),
            }))
        }
    }
}

/// The change set, read after an answer that did not arrive: asked again (four times, with
/// backoff) while the network is what failed, since whether it ran decides what comes next.
async fn describe_after_doubt(
    cf: &CloudFormation,
    arn: &str,
    options: &ApplyOptions<'_>,
) -> Result<DescribeChangeSetOutput, Error> {
    let transient = |error: &_, _| ErrorKind::is_transient(error);
    poll::retry(options.backoff(), 5, tokio::time::sleep, transient, async || {
        cf.describe_change_set().change_set_name(arn).send().await
    })
    .await
    .map_err(|e| aws("DescribeChangeSet", arn, e))
}

/// A difference between an executed change set and the stack after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mismatch {
    path: String,
    resource_type: String,
    action: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.action == "Remove" { "still present after its Remove" } else { "missing" };
        write!(f, "{} ({}) {what} (change set: {})", self.path, self.resource_type, self.action)
    }
}

/// The stack's resources (logical ID → physical ID and status), every page.
async fn list_resources(cf: &CloudFormation, stack_id: &str) -> Result<BTreeMap<String, (String, String)>, Error> {
    let mut resources = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let out = cf
            .list_stack_resources()
            .stack_name(stack_id)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| aws("ListStackResources", stack_id, e))?;
        for summary in out.stack_resource_summaries() {
            resources.insert(
                summary.logical_resource_id().unwrap_or_default().to_string(),
                (
                    summary.physical_resource_id().unwrap_or_default().to_string(),
                    summary.resource_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                ),
            );
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(resources);
        }
    }
}

/// Compares a completed stack (nested stacks included) with the change set it executed: every
/// resource the change set adds, modifies or imports is there, every one it removes is gone.
async fn verify(
    cf: &CloudFormation,
    stack_id: &str,
    root: &str,
    changes: &[ResourceChange],
) -> Result<Vec<Mismatch>, Error> {
    let mut ordered: Vec<&ResourceChange> = changes.iter().collect();
    ordered.sort_by_key(|c| c.path.matches('/').count());
    let mut stacks: BTreeMap<String, String> = BTreeMap::from([(root.to_string(), stack_id.to_string())]);
    let mut listed: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for change in ordered {
        let Some((parent, logical)) = change.path.rsplit_once('/') else { continue };
        // A nested stack already found missing has its own line; its resources add nothing.
        let Some(parent_id) = stacks.get(parent).cloned() else { continue };
        if !listed.contains_key(parent) {
            listed.insert(parent.to_string(), list_resources(cf, &parent_id).await?);
        }
        let present = listed[parent]
            .get(logical)
            .filter(|(_, status)| !status.starts_with("DELETE_") && status != "CREATE_FAILED")
            .map(|(physical, _)| physical.clone());
        let mismatch = || Mismatch {
            path: change.path.clone(),
            resource_type: change.resource_type.clone(),
            action: change.action.clone(),
        };
        match (change.action.as_str(), present) {
            ("Remove", Some(_)) => mismatches.push(mismatch()),
            ("Add" | "Modify" | "Import" | "Dynamic", None) => mismatches.push(mismatch()),
            ("Add" | "Modify" | "Import" | "Dynamic", Some(physical))
                if change.resource_type == "AWS::CloudFormation::Stack" =>
            {
                stacks.insert(change.path.clone(), physical);
            }
            _ => {}
        }
    }
    Ok(mismatches)
}

/// Outputs of a stack that had nothing to change.
async fn finish_unchanged(
    cf: &CloudFormation,
    stack: &StackPlan,
    mut result: StackResult,
) -> Result<StackResult, Error> {
    if let Some(now) = describe_stack(cf, &stack.stack_name).await? {
        result.stack_id = now.stack_id().map(str::to_string);
        result.outputs = outputs_of(&now);
    }
    Ok(result)
}

/// CreateChangeSet's way of saying "nothing to do" for an identical template and parameters.
///
/// CloudFormation has no code of its own for it: the error is the generic `ValidationError`
/// whose documented message is "No updates are to be performed." (see the aws-cli's
/// `--no-fail-on-empty-changeset`). This is the one place that reads an AWS message, and only
/// together with that code.
fn is_no_updates_error<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    error.as_service_error().is_some_and(|e| {
        e.code() == Some("ValidationError") && e.message().is_some_and(|m| m.contains("No updates are to be performed"))
    })
}

/// A change set that ended FAILED because it holds no change (its documented status reason,
/// "The submitted information didn't contain changes. Submit different information to create
/// a change set."). Status reasons have no codes; this is the documented no-op signal.
fn is_no_changes_reason(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

async fn delete_change_set(cf: &CloudFormation, arn: &str) -> Result<(), Error> {
    match cf.delete_change_set().change_set_name(arn).send().await {
        Ok(_) => Ok(()),
        Err(error) if ErrorKind::of(&error) == ErrorKind::NotFound => Ok(()),
        Err(error) => Err(aws("DeleteChangeSet", arn, error)),
    }
}

fn same_parameters(current: &Stack, stack: &StackPlan, parameters: &BTreeMap<String, String>) -> bool {
    let deployed: BTreeMap<&str, &str> = current
        .parameters()
        .iter()
        .filter_map(|p| Some((p.parameter_key()?, p.parameter_value().unwrap_or_default())))
        .collect();
    let mut wanted: BTreeMap<&str, &str> = BTreeMap::new();
    for (name, default) in &stack.declared {
        if let Some(value) = parameters.get(name).map(String::as_str).or(default.as_deref()) {
            wanted.insert(name, value);
        }
    }
    // A NoEcho value reads back as asterisks: it cannot be compared, so let CloudFormation decide.
    !deployed.values().any(|v| *v == "****") && deployed == wanted
}

fn same_tags(current: &Stack, stack: &StackPlan) -> bool {
    let deployed: BTreeMap<&str, &str> =
        current.tags().iter().filter_map(|t| Some((t.key()?, t.value().unwrap_or_default()))).collect();
    deployed.len() == stack.tags.len() && stack.tags.iter().all(|(k, v)| deployed.get(k.as_str()) == Some(&v.as_str()))
}

/// A change set's changes, and those of its nested change sets, as preview lines.
async fn collect_changes(
    cf: &CloudFormation,
    first: aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput,
    path: &str,
    out: &mut Vec<ResourceChange>,
    depth: usize,
) -> Result<(), Error> {
    let mut page = first;
    loop {
        for change in page.changes() {
            let Some(resource) = change.resource_change() else { continue };
            let logical = resource.logical_resource_id().unwrap_or_default();
            let line = ResourceChange {
                action: resource.action().map(|a| a.as_str().to_string()).unwrap_or_default(),
                replacement: (resource.action() == Some(&ChangeAction::Modify))
                    .then(|| resource.replacement().map(Replacement::as_str).unwrap_or("False").to_string()),
                path: format!("{path}/{logical}"),
                resource_type: resource.resource_type().unwrap_or_default().to_string(),
            };
            out.push(line);
            if let Some(nested) = resource.change_set_id().filter(|_| depth < 8) {
                let nested_page = cf
                    .describe_change_set()
                    .change_set_name(nested)
                    .send()
                    .await
                    .map_err(|e| aws("DescribeChangeSet", nested, e))?;
                Box::pin(collect_changes(cf, nested_page, &format!("{path}/{logical}"), out, depth + 1)).await?;
            }
        }
        let Some(token) = page.next_token().map(str::to_string) else { return Ok(()) };
        let id = page.change_set_id().unwrap_or_default().to_string();
        page = cf
            .describe_change_set()
            .change_set_name(&id)
            .next_token(token)
            .send()
            .await
            .map_err(|e| aws("DescribeChangeSet", &id, e))?;
    }
}

/// Follows the events of a stack and of the nested stacks it reveals.
struct Watcher {
    /// Stack id → logical path.
    stacks: Vec<(String, String)>,
    seen: HashSet<String>,
    failures: Vec<(SystemTime, RootCause)>,
    token: String,
    since: SystemTime,
}

/// Reasons that are consequences of another failure, never the cause.
fn is_consequence(reason: &str) -> bool {
    reason.contains("Resource creation cancelled")
        || reason.contains("Resource update cancelled")
        || reason.starts_with("Embedded stack ")
        || reason.contains("The following resource(s) failed to")
}

impl Watcher {
    fn new(stack_id: &str, path: &str, token: &str, since: SystemTime) -> Watcher {
        Watcher {
            stacks: vec![(stack_id.to_string(), path.to_string())],
            seen: HashSet::new(),
            failures: Vec::new(),
            token: token.to_string(),
            since,
        }
    }

    async fn poll(&mut self, cf: &CloudFormation, stack: &str, on_event: &(dyn Fn(Event) + Sync)) -> Result<(), Error> {
        let mut index = 0;
        while index < self.stacks.len() {
            let (id, path) = self.stacks[index].clone();
            index += 1;
            let mut fresh = Vec::new();
            let mut token: Option<String> = None;
            'pages: for _ in 0..5 {
                let out = match cf.describe_stack_events().stack_name(&id).set_next_token(token.clone()).send().await {
                    Ok(out) => out,
                    Err(error) if ErrorKind::is_transient(&error) => break,
                    Err(error) => return Err(aws("DescribeStackEvents", &id, error)),
                };
                for event in out.stack_events() {
                    let event_id = event.event_id().unwrap_or_default().to_string();
                    let when = event.timestamp().and_then(|t| SystemTime::try_from(*t).ok());
                    // Ours: the execute's request token, or (nested stacks' events, emulators)
                    // since the execute, with a minute's leeway for clocks.
                    let recent = when.is_none_or(|w| w + Duration::from_secs(60) >= self.since);
                    let ours = event.client_request_token() == Some(self.token.as_str()) || recent;
                    // Newest first: a seen or older event means the rest is older still.
                    if self.seen.contains(&event_id) || !ours {
                        break 'pages;
                    }
                    if ours {
                        fresh.push(event.clone());
                    }
                }
                token = out.next_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            for event in fresh.into_iter().rev() {
                let event_id = event.event_id().unwrap_or_default().to_string();
                if !self.seen.insert(event_id) {
                    continue;
                }
                let logical = event.logical_resource_id().unwrap_or_default();
                let physical = event.physical_resource_id().unwrap_or_default();
                let own = event.stack_id() == Some(physical);
                let event_path = if own { path.clone() } else { format!("{path}/{logical}") };
                let resource_type = event.resource_type().unwrap_or_default();
                if resource_type == "AWS::CloudFormation::Stack"
                    && !own
                    && physical.starts_with("arn:")
                    && !self.stacks.iter().any(|(s, _)| s == physical)
                {
                    self.stacks.push((physical.to_string(), event_path.clone()));
                }
                let status = event.resource_status().map(|s| s.as_str().to_string()).unwrap_or_default();
                let reason = event.resource_status_reason().map(str::to_string);
                if status.ends_with("_FAILED")
                    && let Some(reason) = reason.as_deref().filter(|r| !r.is_empty() && !is_consequence(r))
                {
                    let when = event.timestamp().and_then(|t| SystemTime::try_from(*t).ok()).unwrap_or(self.since);
                    self.failures.push((
                        when,
                        RootCause {
                            path: event_path.clone(),
                            resource_type: resource_type.to_string(),
                            status: status.clone(),
                            reason: reason.to_string(),
                        },
                    ));
                }
                on_event(Event::Resource {
                    stack: stack.to_string(),
                    path: event_path,
                    resource_type: resource_type.to_string(),
                    status,
                    reason,
                });
            }
        }
        Ok(())
    }

    fn root_cause(&self) -> Option<RootCause> {
        self.failures.iter().min_by_key(|(when, _)| *when).map(|(_, cause)| cause.clone())
    }
}

/// Resolves a stack's parameters: literals, outputs of stacks already deployed, environment variables.
pub fn resolve_parameters(
    stack: &StackPlan,
    outputs: &BTreeMap<String, BTreeMap<String, String>>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, Error> {
    let mut resolved = BTreeMap::new();
    for (name, value) in &stack.parameters {
        let text = match value {
            ParameterValue::Literal(text) => text.clone(),
            ParameterValue::Env { env } => lookup(env).ok_or_else(|| Error::MissingEnvVar {
                stack: stack.name.clone(),
                parameter: name.clone(),
                var: env.clone(),
            })?,
            ParameterValue::Output { output } => {
                let (other, key) = output.split_once('.').unwrap_or((output, ""));
                outputs.get(other).and_then(|o| o.get(key)).cloned().ok_or_else(|| Error::MissingOutput {
                    stack: stack.name.clone(),
                    parameter: name.clone(),
                    output: output.clone(),
                })?
            }
        };
        resolved.insert(name.clone(), text);
    }
    Ok(resolved)
}

/// The pauses between reads of a stack's resource after a transient failure.
const RESOURCE_READ_BACKOFF: Backoff =
    Backoff { first: Duration::from_millis(500), max: Duration::from_secs(8), factor: 2 };

/// The physical name of the resource at `path` (logical ids from the stack down, through its
/// nested stacks) in the stack `stack_id`.
pub async fn physical_name(cf: &CloudFormation, stack_id: &str, path: &[String]) -> Result<String, Error> {
    let mut current = stack_id.to_string();
    for logical in path {
        // A read: a transient failure (after the SDK's own retries) is asked again, five times
        // (pauses of 0.5, 1, 2, 4 and 8 s).
        let out = poll::retry(
            RESOURCE_READ_BACKOFF,
            6,
            tokio::time::sleep,
            |e, _| ErrorKind::is_transient(e),
            async || cf.describe_stack_resource().stack_name(&current).logical_resource_id(logical).send().await,
        )
        .await
        .map_err(|error| aws("DescribeStackResource", logical, error))?;
        current = out.stack_resource_detail().and_then(|d| d.physical_resource_id()).unwrap_or_default().to_string();
    }
    Ok(current)
}

/// Updates the code of the stack's fixed-code functions whose package changed, each only when
/// Lambda's `CodeSha256` differs (through `lambda_packager::update`).
pub async fn update_code(
    clients: &Clients,
    plan: &Plan,
    stack: &StackPlan,
    stack_id: &str,
    options: &ApplyOptions<'_>,
    on_event: &(dyn Fn(Event) + Sync),
) -> Result<Vec<String>, Error> {
    let limiter = lambda_packager::update::RateLimiter::per_second(lambda_packager::update::DEFAULT_CALLS_PER_SECOND);
    let mut updated = Vec::new();
    for update in stack.code_updates.iter().filter(|u| u.package.changed) {
        let current = physical_name(&clients.cloudformation, stack_id, &update.path).await?;
        let source = lambda_packager::update::CodeSource::S3 { bucket: plan.bucket.clone(), key: update.key.clone() };
        let outcome = lambda_packager::update::update_if_changed(
            &clients.lambda,
            &limiter,
            &current,
            &update.package,
            &source,
            options.code_update_timeout,
        )
        .await
        .map_err(|source| Error::CodeUpdate { function: update.function.clone(), source })?;
        let changed = matches!(outcome, lambda_packager::update::CodeUpdateOutcome::Updated { .. });
        on_event(Event::Code { function: update.function.clone(), physical: current.clone(), updated: changed });
        if changed {
            updated.push(update.function.clone());
        }
    }
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_echo_values_are_masked_in_reasons() {
        let secrets = vec!["hunter2-long-secret".to_string(), "abc".to_string()];
        assert_eq!(mask("value hunter2-long-secret is bad; abc", &secrets), "value **** is bad; ****");
        let mut outcome = StackOutcome::Failed {
            status: "ROLLBACK_COMPLETE".into(),
            root_cause: Some(RootCause {
                path: "app/Db".into(),
                resource_type: "AWS::RDS::DBInstance".into(),
                status: "CREATE_FAILED".into(),
                reason: "MasterUserPassword `hunter2-long-secret` is not valid".into(),
            }),
            change_set: None,
        };
        mask_outcome(&mut outcome, &secrets);
        assert_eq!(
            outcome.to_string(),
            "failed, ROLLBACK_COMPLETE: root cause app/Db (AWS::RDS::DBInstance) CREATE_FAILED: MasterUserPassword `****` is not valid"
        );
    }
}
