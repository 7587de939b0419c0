//! Recorded responses shaped like AWS's (aws-smithy-mocks), for what moto does not do: it never
//! rolls back (a failing resource leaves the stack stuck or answers 500), keeps no per-resource
//! stack events (so no root cause to find), never reaches `ROLLBACK_COMPLETE` or
//! `UPDATE_ROLLBACK_FAILED`, never throttles, and drops a stack's Outputs after a change set.
//! Each test says which of these it stands in for.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudformation::error::ErrorMetadata;
use aws_sdk_cloudformation::operation::create_change_set::{CreateChangeSetError, CreateChangeSetOutput};
use aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput;
use aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput;
use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
use aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput;
use aws_sdk_cloudformation::operation::describe_stacks::{DescribeStacksError, DescribeStacksOutput};
use aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput;
use aws_sdk_cloudformation::operation::get_template::GetTemplateOutput;
use aws_sdk_cloudformation::operation::list_change_sets::ListChangeSetsOutput;
use aws_sdk_cloudformation::operation::list_stack_resources::ListStackResourcesOutput;
use aws_sdk_cloudformation::types::{
    Change, ChangeAction, ChangeSetStatus, ChangeSetType, ExecutionStatus, Output, Parameter, Replacement,
    ResourceChange, ResourceStatus, Stack, StackEvent, StackResourceSummary, StackStatus,
};
use aws_sdk_s3::operation::head_bucket::HeadBucketOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use run_state::StageOutcome;
use stack_deployer::{ApplyOptions, Clients, DeploySettings, Event, Plan, PlanInputs, Report, StackOutcome};

const STACK: &str = "app-dev";
const STACK_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/app-dev/1111";
const NESTED_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:stack/app-dev-LambdaStack-X/2222";
const CHANGE_SET_ID: &str = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/stack-deployer-test/3333";
const TOKEN: &str = "stack-deployer-test";

fn plan() -> (tempfile::TempDir, Plan) {
    plan_with("", &[])
}

/// The plan of a repository whose stack has `extra` settings and these more files.
fn plan_with(extra: &str, files: &[(&str, &str)]) -> (tempfile::TempDir, Plan) {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(
        repo.path().join("cfn/app.yaml"),
        "Parameters:\n  Label:\n    Type: String\nResources:\n  Topic:\n    Type: AWS::SNS::Topic\n",
    )
    .unwrap();
    let config = pipeline_config::ConfigFile::from_text(
        &repo.path().join("pipeline.toml"),
        &format!(
            "[deploy]\nartifact_bucket = \"artifacts\"\n[deploy.stacks.app]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"app-{{env}}\"\nparameters = {{ Label = \"one\" }}\n{extra}"
        ),
    );
    for (path, text) in files {
        std::fs::write(repo.path().join(path), text).unwrap();
    }
    let env = DeploySettings::from_config(&config).unwrap().environment(&config, "dev").unwrap();
    let inputs = PlanInputs { repo: repo.path(), manifest: None, functions: &[], changed: None, only: &[] };
    let plan = stack_deployer::plan(&env, inputs, &|_| None).unwrap();
    (repo, plan)
}

fn stack(status: StackStatus, label: &str) -> Stack {
    Stack::builder()
        .stack_name(STACK)
        .stack_id(STACK_ID)
        .stack_status(status)
        .creation_time(DateTime::from_secs(0))
        .parameters(Parameter::builder().parameter_key("Label").parameter_value(label).build())
        .build()
}

fn stacks(stack: Stack) -> DescribeStacksOutput {
    DescribeStacksOutput::builder().stacks(stack).build()
}

fn no_such_stack() -> DescribeStacksError {
    DescribeStacksError::generic(
        ErrorMetadata::builder().code("ValidationError").message("Stack with id app-dev does not exist").build(),
    )
}

fn clients(rules: &[&Rule]) -> Clients {
    clients_with(rules, &[])
}

/// [`clients`] with S3 answering `s3_rules` too (an artifact's HeadObject).
fn clients_with(rules: &[&Rule], s3_rules: &[&Rule]) -> Clients {
    let head_bucket = mock!(aws_sdk_s3::Client::head_bucket).then_output(|| HeadBucketOutput::builder().build());
    let mut s3_rules = s3_rules.to_vec();
    s3_rules.push(&head_bucket);
    // No change set left behind, unless a test says otherwise (its rule comes first).
    let no_leftovers =
        mock!(aws_sdk_cloudformation::Client::list_change_sets).then_output(|| ListChangeSetsOutput::builder().build());
    let mut rules = rules.to_vec();
    rules.push(&no_leftovers);
    Clients {
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, &s3_rules),
        cloudformation: mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &rules, |c| c.retry_config(
            aws_sdk_cloudformation::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
        )),
        lambda: mock_client!(aws_sdk_lambda, RuleMode::MatchAny, Vec::<&Rule>::new()),
    }
}

fn options() -> ApplyOptions<'static> {
    let mut options = ApplyOptions::new(TOKEN, Duration::from_secs(5), Duration::from_secs(5));
    options.first_poll = Duration::from_millis(1);
    options.max_poll = Duration::from_millis(5);
    options
}

async fn deploy(plan: &Plan, clients: &Clients, options: &ApplyOptions<'_>) -> (Report, Vec<Event>) {
    let events = Mutex::new(Vec::new());
    let report =
        stack_deployer::deploy(plan, clients, 1, None, options, &|_| None, &|e| events.lock().unwrap().push(e))
            .await
            .unwrap();
    (report, events.into_inner().unwrap())
}

fn created() -> Rule {
    mock!(aws_sdk_cloudformation::Client::create_change_set)
        .then_output(|| CreateChangeSetOutput::builder().id(CHANGE_SET_ID).stack_id(STACK_ID).build())
}

fn change_set(status: ChangeSetStatus, reason: &str) -> DescribeChangeSetOutput {
    DescribeChangeSetOutput::builder()
        .change_set_id(CHANGE_SET_ID)
        .stack_id(STACK_ID)
        .status(status)
        .status_reason(reason)
        .build()
}

#[allow(clippy::too_many_arguments)]
fn event(
    id: &str,
    stack_id: &str,
    logical: &str,
    physical: &str,
    kind: &str,
    status: ResourceStatus,
    reason: &str,
    at: i64,
) -> StackEvent {
    StackEvent::builder()
        .event_id(id)
        .stack_id(stack_id)
        .stack_name(STACK)
        .logical_resource_id(logical)
        .physical_resource_id(physical)
        .resource_type(kind)
        .resource_status(status)
        .resource_status_reason(reason)
        .client_request_token(TOKEN)
        .timestamp(DateTime::from(SystemTime::now() + Duration::from_secs(at as u64)))
        .build()
}

/// The root stack's and the nested stack's events of a create rolled back because a function
/// inside the nested stack failed.
fn rolled_back_events() -> (Rule, Rule) {
    let root_events = mock!(aws_sdk_cloudformation::Client::describe_stack_events)
        .match_requests(|r| r.stack_name() == Some(STACK_ID))
        .then_output(|| {
            DescribeStackEventsOutput::builder()
                .stack_events(event("r5", STACK_ID, STACK, STACK_ID, "AWS::CloudFormation::Stack", ResourceStatus::RollbackComplete, "", 20))
                .stack_events(event("r4", STACK_ID, "LambdaStack", NESTED_ID, "AWS::CloudFormation::Stack", ResourceStatus::CreateFailed,
                    &format!("Embedded stack {NESTED_ID} was not successfully created: The following resource(s) failed to create: [ApiHandlerFunction]."), 12))
                .stack_events(event("r3", STACK_ID, "StorageStack", "", "AWS::CloudFormation::Stack", ResourceStatus::CreateFailed, "Resource creation cancelled", 11))
                .stack_events(event("r2", STACK_ID, "LambdaStack", NESTED_ID, "AWS::CloudFormation::Stack", ResourceStatus::CreateInProgress, "", 2))
                .stack_events(event("r1", STACK_ID, STACK, STACK_ID, "AWS::CloudFormation::Stack", ResourceStatus::CreateInProgress, "User Initiated", 1))
                .build()
        });
    let nested_events = mock!(aws_sdk_cloudformation::Client::describe_stack_events)
        .match_requests(|r| r.stack_name() == Some(NESTED_ID))
        .then_output(|| {
            // A nested stack's events may carry no request token: they count by their time.
            let untokened = |mut event: StackEvent| {
                event.client_request_token = None;
                event
            };
            DescribeStackEventsOutput::builder()
                .stack_events(untokened(event(
                    "n3",
                    NESTED_ID,
                    "LambdaRole",
                    "role-1",
                    "AWS::IAM::Role",
                    ResourceStatus::DeleteComplete,
                    "",
                    15,
                )))
                .stack_events(untokened(event(
                    "n2",
                    NESTED_ID,
                    "ApiHandlerFunction",
                    "",
                    "AWS::Lambda::Function",
                    ResourceStatus::CreateFailed,
                    "Resource handler returned message: \"Error occurred while GetObject. S3 Error Code: NoSuchKey\"",
                    10,
                )))
                .stack_events(untokened(event(
                    "n1",
                    NESTED_ID,
                    "LambdaRole",
                    "role-1",
                    "AWS::IAM::Role",
                    ResourceStatus::CreateComplete,
                    "",
                    5,
                )))
                .build()
        });
    (root_events, nested_events)
}

/// Stands in for a failed create with rollback: moto never rolls back and has no resource events.
#[tokio::test]
async fn a_rolled_back_create_names_the_root_cause_inside_the_nested_stack() {
    let (_repo, plan) = plan();
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .sequence()
        .error(no_such_stack)
        .output(|| stacks(stack(StackStatus::CreateInProgress, "one")))
        .output(|| stacks(stack(StackStatus::RollbackComplete, "one")))
        .repeatedly()
        .build();
    let ready = mock!(aws_sdk_cloudformation::Client::describe_change_set)
        .then_output(|| change_set(ChangeSetStatus::CreateComplete, ""));
    let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set)
        .then_output(|| ExecuteChangeSetOutput::builder().build());
    let (root_events, nested_events) = rolled_back_events();
    let created = created();
    let clients = clients(&[&describe, &created, &ready, &execute, &root_events, &nested_events]);
    let (report, events) = deploy(&plan, &clients, &options()).await;

    let StackOutcome::Failed { status, root_cause: Some(cause), change_set } = &report.stacks[0].outcome else {
        panic!("{}", report.summary())
    };
    assert_eq!(status, "ROLLBACK_COMPLETE");
    assert_eq!(cause.path, "app/LambdaStack/ApiHandlerFunction");
    assert_eq!(cause.resource_type, "AWS::Lambda::Function");
    assert!(cause.reason.contains("NoSuchKey"), "{cause}");
    assert_eq!(change_set.as_deref(), Some(TOKEN));
    assert_eq!(report.exit_code(), 1);
    // The nested stack's events were rendered as they came, with their paths, in order.
    let paths: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Resource { path, status, .. } => Some(format!("{path} {status}")),
            _ => None,
        })
        .collect();
    let nested_failed = paths.iter().position(|p| p == "app/LambdaStack/ApiHandlerFunction CREATE_FAILED").unwrap();
    let nested_created = paths.iter().position(|p| p == "app/LambdaStack/LambdaRole CREATE_COMPLETE").unwrap();
    assert!(nested_created < nested_failed, "{paths:#?}");
    assert!(paths.contains(&"app ROLLBACK_COMPLETE".to_string()), "{paths:#?}");
}

/// Stands in for a stack left `ROLLBACK_COMPLETE` by a failed first create, which moto never reaches.
#[tokio::test]
async fn rollback_complete_is_blocked_without_the_flag_and_recreated_with_it() {
    let (_repo, plan) = plan();
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .then_output(|| stacks(stack(StackStatus::RollbackComplete, "one")));
    let created = created();
    let clients_blocked = clients(&[&describe, &created]);
    let (report, _) = deploy(&plan, &clients_blocked, &options()).await;
    let StackOutcome::Blocked { status, next } = &report.stacks[0].outcome else { panic!("{}", report.summary()) };
    assert_eq!(status, "ROLLBACK_COMPLETE");
    assert!(next.contains("--recreate-failed"), "{next}");
    assert_eq!(report.exit_code(), 3);
    assert_eq!(created.num_calls(), 0, "nothing is changed without the flag");

    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .sequence()
        .output(|| stacks(stack(StackStatus::RollbackComplete, "one")))
        .output(|| stacks(stack(StackStatus::DeleteInProgress, "one")))
        .output(|| stacks(stack(StackStatus::DeleteComplete, "one")))
        .output(|| stacks(stack(StackStatus::CreateComplete, "one")))
        .repeatedly()
        .build();
    let delete = mock!(aws_sdk_cloudformation::Client::delete_stack)
        .match_requests(|r| r.stack_name() == Some(STACK_ID))
        .then_output(|| DeleteStackOutput::builder().build());
    let create = mock!(aws_sdk_cloudformation::Client::create_change_set)
        .match_requests(|r| r.change_set_type() == Some(&ChangeSetType::Create))
        .then_output(|| CreateChangeSetOutput::builder().id(CHANGE_SET_ID).stack_id(STACK_ID).build());
    let ready = mock!(aws_sdk_cloudformation::Client::describe_change_set)
        .then_output(|| change_set(ChangeSetStatus::CreateComplete, ""));
    let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set)
        .then_output(|| ExecuteChangeSetOutput::builder().build());
    let events = mock!(aws_sdk_cloudformation::Client::describe_stack_events)
        .then_output(|| DescribeStackEventsOutput::builder().build());
    let clients = clients(&[&describe, &delete, &create, &ready, &execute, &events]);
    let mut options = options();
    options.recreate_failed = true;
    let (report, _) = deploy(&plan, &clients, &options).await;
    assert_eq!(report.stacks[0].outcome, StackOutcome::Deployed { change_set: TOKEN.into() }, "{}", report.summary());
    assert_eq!((delete.num_calls(), create.num_calls()), (1, 1));
}

/// Stands in for `UPDATE_ROLLBACK_FAILED` and a stack busy with another operation: moto reaches neither.
#[tokio::test]
async fn stuck_states_are_blocked_with_the_next_step() {
    let (_repo, plan) = plan();
    for (status, next) in [
        (StackStatus::UpdateRollbackFailed, "continue-update-rollback --stack-name app-dev"),
        (StackStatus::UpdateInProgress, "another operation is running on it"),
        (StackStatus::DeleteFailed, "delete-stack --stack-name app-dev"),
    ] {
        let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .then_output(move || stacks(stack(status.clone(), "one")));
        let created = created();
        let clients = clients(&[&describe, &created]);
        let (report, _) = deploy(&plan, &clients, &options()).await;
        let StackOutcome::Blocked { next: said, .. } = &report.stacks[0].outcome else {
            panic!("{}", report.summary())
        };
        assert!(said.contains(next), "{said}");
        assert_eq!(report.exit_code(), 3);
        assert_eq!(created.num_calls(), 0);
    }
}

/// Stands in for throttling, which moto never does: the SDK retries and the deploy goes on.
#[tokio::test]
async fn throttled_calls_are_retried() {
    let (_repo, plan) = plan();
    let body = String::from_utf8(plan.stacks[0].body.clone()).unwrap();
    let throttled =
        || DescribeStacksError::generic(ErrorMetadata::builder().code("Throttling").message("Rate exceeded").build());
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .sequence()
        .error(throttled)
        .times(2)
        .output(|| stacks(stack(StackStatus::UpdateComplete, "one")))
        .build();
    let template = mock!(aws_sdk_cloudformation::Client::get_template)
        .then_output(move || GetTemplateOutput::builder().template_body(body.clone()).build());
    let clients = clients(&[&describe, &template]);
    let (report, _) = deploy(&plan, &clients, &options()).await;
    assert_eq!(report.stacks[0].outcome, StackOutcome::Unchanged, "{}", report.summary());
    assert_eq!(describe.num_calls(), 3);
}

/// Stands in for Outputs after a change set, which moto drops: they reach `stack-outputs.json`.
#[tokio::test]
async fn outputs_after_a_change_set_reach_the_run_folder() {
    let (_repo, plan) = plan();
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .sequence()
        .error(no_such_stack)
        .output(|| {
            let mut done = stack(StackStatus::CreateComplete, "one");
            done.outputs =
                Some(vec![Output::builder().output_key("TopicArn").output_value("arn:aws:sns:us-east-1:1:t").build()]);
            stacks(done)
        })
        .repeatedly()
        .build();
    let created = created();
    let ready = mock!(aws_sdk_cloudformation::Client::describe_change_set)
        .then_output(|| change_set(ChangeSetStatus::CreateComplete, ""));
    let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set)
        .then_output(|| ExecuteChangeSetOutput::builder().build());
    let events = mock!(aws_sdk_cloudformation::Client::describe_stack_events)
        .then_output(|| DescribeStackEventsOutput::builder().build());
    let clients = clients(&[&describe, &created, &ready, &execute, &events]);
    let (report, _) = deploy(&plan, &clients, &options()).await;
    assert!(matches!(report.stacks[0].outcome, StackOutcome::Deployed { .. }), "{}", report.summary());

    let state = tempfile::tempdir().unwrap();
    let run = run_state::RunDir::create(state.path(), "run-1").unwrap();
    report.outputs().merge_into(&run).unwrap();
    let outputs = run_state::StackOutputs::read(&run).unwrap();
    assert_eq!(outputs.output("dev", "app", "TopicArn").unwrap(), "arn:aws:sns:us-east-1:1:t");
    assert_eq!(outputs.environments["dev"]["app"].stack_name, STACK);
    assert_eq!(outputs.environments["dev"]["app"].stack_id.as_deref(), Some(STACK_ID));
}

/// CloudFormation's two ways of saying "nothing to change", as AWS words them (moto shows only
/// one of them for a given input): both are a success, and a change set made is deleted.
#[tokio::test]
async fn both_ways_of_saying_nothing_to_change_are_a_success() {
    let (_repo, plan) = plan();
    // 1. CreateChangeSet refuses: nothing was made, nothing to delete.
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .then_output(|| stacks(stack(StackStatus::UpdateComplete, "other")));
    let refused = mock!(aws_sdk_cloudformation::Client::create_change_set).then_error(|| {
        CreateChangeSetError::generic(
            ErrorMetadata::builder().code("ValidationError").message("No updates are to be performed.").build(),
        )
    });
    let delete = mock!(aws_sdk_cloudformation::Client::delete_change_set)
        .then_output(|| DeleteChangeSetOutput::builder().build());
    let clients1 = clients(&[&describe, &refused, &delete]);
    let (report, _) = deploy(&plan, &clients1, &options()).await;
    assert_eq!(report.stacks[0].outcome, StackOutcome::NoChanges);
    assert_eq!(delete.num_calls(), 0);

    // 2. The change set ends FAILED for want of changes: deleted by its ARN.
    let created = created();
    let failed = mock!(aws_sdk_cloudformation::Client::describe_change_set).then_output(|| {
        change_set(
            ChangeSetStatus::Failed,
            "The submitted information didn't contain changes. Submit different information to create a change set.",
        )
    });
    let delete = mock!(aws_sdk_cloudformation::Client::delete_change_set)
        .match_requests(|r| r.change_set_name() == Some(CHANGE_SET_ID))
        .then_output(|| DeleteChangeSetOutput::builder().build());
    let clients2 = clients(&[&describe, &created, &failed, &delete]);
    let (report, _) = deploy(&plan, &clients2, &options()).await;
    assert_eq!(report.stacks[0].outcome, StackOutcome::NoChanges);
    assert_eq!(delete.num_calls(), 1);

    // 3. A change set FAILED for another reason is deleted too, and is a failure.
    let bad = mock!(aws_sdk_cloudformation::Client::describe_change_set).then_output(|| {
        change_set(ChangeSetStatus::Failed, "Template format error: Unresolved resource dependencies [X]")
    });
    let delete = mock!(aws_sdk_cloudformation::Client::delete_change_set)
        .then_output(|| DeleteChangeSetOutput::builder().build());
    let created = self::created();
    let clients3 = clients(&[&describe, &created, &bad, &delete]);
    let (report, _) = deploy(&plan, &clients3, &options()).await;
    let StackOutcome::Failed { root_cause: Some(cause), .. } = &report.stacks[0].outcome else {
        panic!("{}", report.summary())
    };
    assert!(cause.reason.starts_with("Template format error"), "{cause}");
    assert_eq!(delete.num_calls(), 1);
    assert_eq!(report.exit_code(), 1);
}

/// The root change set (an add, a replacement, a nested stack's change) and the nested one (a
/// removal), as DescribeChangeSet answers them.
fn previewed_change_sets() -> (Rule, Rule) {
    let nested_id = "arn:aws:cloudformation:us-east-1:123456789012:changeSet/nested/4444";
    let root = mock!(aws_sdk_cloudformation::Client::describe_change_set)
        .match_requests(|r| r.change_set_name() == Some(CHANGE_SET_ID))
        .then_output(move || {
            let mut out = change_set(ChangeSetStatus::CreateComplete, "");
            let change = |action: ChangeAction,
                          logical: &str,
                          kind: &str,
                          replacement: Option<Replacement>,
                          nested: Option<&str>| {
                Change::builder()
                    .resource_change(
                        ResourceChange::builder()
                            .action(action)
                            .logical_resource_id(logical)
                            .resource_type(kind)
                            .set_replacement(replacement)
                            .set_change_set_id(nested.map(str::to_string))
                            .build(),
                    )
                    .build()
            };
            out.changes = Some(vec![
                change(ChangeAction::Add, "Queue", "AWS::SQS::Queue", None, None),
                change(ChangeAction::Modify, "Topic", "AWS::SNS::Topic", Some(Replacement::True), None),
                change(
                    ChangeAction::Modify,
                    "LambdaStack",
                    "AWS::CloudFormation::Stack",
                    Some(Replacement::False),
                    Some(nested_id),
                ),
            ]);
            out
        });
    let nested = mock!(aws_sdk_cloudformation::Client::describe_change_set)
        .match_requests(move |r| r.change_set_name() == Some(nested_id))
        .then_output(|| {
            let mut out = change_set(ChangeSetStatus::CreateComplete, "");
            out.changes = Some(vec![
                Change::builder()
                    .resource_change(
                        ResourceChange::builder()
                            .action(ChangeAction::Remove)
                            .logical_resource_id("OldFunction")
                            .resource_type("AWS::Lambda::Function")
                            .build(),
                    )
                    .build(),
            ]);
            out
        });
    (root, nested)
}

/// A preview with nested changes and `--no-execute`; then a deploy still in progress when the
/// wait ends. Recorded: moto's change sets list no nested change sets, and its stacks end at once.
#[tokio::test]
async fn no_execute_previews_nested_changes_and_a_long_deploy_times_out() {
    let (_repo, plan) = plan();
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .sequence()
        .output(|| stacks(stack(StackStatus::UpdateComplete, "other")))
        .output(|| stacks(stack(StackStatus::UpdateInProgress, "one")))
        .repeatedly()
        .build();
    let created = created();
    let (root, nested) = previewed_change_sets();
    let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set)
        .then_output(|| ExecuteChangeSetOutput::builder().build());
    let events = mock!(aws_sdk_cloudformation::Client::describe_stack_events)
        .then_output(|| DescribeStackEventsOutput::builder().build());

    let clients1 = clients(&[&describe, &created, &root, &nested, &execute, &events]);
    let mut preview = options();
    preview.execute = false;
    let (report, events_seen) = deploy(&plan, &clients1, &preview).await;
    assert_eq!(
        report.stacks[0].outcome,
        StackOutcome::Previewed { change_set: TOKEN.into(), change_set_id: CHANGE_SET_ID.into() }
    );
    assert_eq!(execute.num_calls(), 0);
    let lines: Vec<String> = events_seen
        .iter()
        .find_map(|e| match e {
            Event::Preview { changes, .. } => Some(changes.iter().map(ToString::to_string).collect()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        lines,
        [
            "+ Add app/Queue (AWS::SQS::Queue)",
            "~ Modify app/Topic (AWS::SNS::Topic) replacement: True",
            "~ Modify app/LambdaStack (AWS::CloudFormation::Stack) replacement: False",
            "- Remove app/LambdaStack/OldFunction (AWS::Lambda::Function)",
        ]
    );

    // Executed, the stack stays UPDATE_IN_PROGRESS past the bound: timed out, not failed.
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .sequence()
        .output(|| stacks(stack(StackStatus::UpdateComplete, "other")))
        .output(|| stacks(stack(StackStatus::UpdateInProgress, "one")))
        .repeatedly()
        .build();
    let clients2 = clients(&[&describe, &created, &root, &nested, &execute, &events]);
    let mut short = options();
    short.timeout = Duration::from_millis(50);
    let (report, _) = deploy(&plan, &clients2, &short).await;
    let StackOutcome::TimedOut { status, next } = &report.stacks[0].outcome else { panic!("{}", report.summary()) };
    assert_eq!(status, "UPDATE_IN_PROGRESS");
    assert!(next.contains("describe-stack-events --stack-name app-dev"), "{next}");
    assert_eq!(report.exit_code(), 4);
    // The wait is bounded by its polls, not the clock: the pauses slept count toward the 50 ms
    // (1, 2, 4, then 5 ms each), so at most 11 polls of the stack after the first read, however
    // slow or fast the machine; at least one.
    assert!((2..=12).contains(&describe.num_calls()), "{} DescribeStacks calls", describe.num_calls());
}

/// Rules for one stack created through a change set, ending CREATE_COMPLETE with `outputs`.
fn created_stack(
    name: &'static str,
    id: &'static str,
    change_set: &'static str,
    outputs: &'static [(&'static str, &'static str)],
) -> Vec<Rule> {
    let done = move || {
        let mut stack = Stack::builder()
            .stack_name(name)
            .stack_id(id)
            .stack_status(StackStatus::CreateComplete)
            .creation_time(DateTime::from_secs(0))
            .build();
        stack.outputs =
            Some(outputs.iter().map(|(k, v)| Output::builder().output_key(*k).output_value(*v).build()).collect());
        stacks(stack)
    };
    vec![
        mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .match_requests(move |r| r.stack_name() == Some(name) || r.stack_name() == Some(id))
            .sequence()
            .error(no_such_stack)
            .output(done)
            .repeatedly()
            .build(),
        mock!(aws_sdk_cloudformation::Client::create_change_set)
            .match_requests(move |r| r.stack_name() == Some(name))
            .then_output(move || CreateChangeSetOutput::builder().id(change_set).stack_id(id).build()),
        mock!(aws_sdk_cloudformation::Client::describe_change_set)
            .match_requests(move |r| r.change_set_name() == Some(change_set))
            .then_output(move || {
                DescribeChangeSetOutput::builder()
                    .change_set_id(change_set)
                    .stack_id(id)
                    .status(ChangeSetStatus::CreateComplete)
                    .build()
            }),
        mock!(aws_sdk_cloudformation::Client::execute_change_set)
            .match_requests(move |r| r.change_set_name() == Some(change_set))
            .then_output(|| ExecuteChangeSetOutput::builder().build()),
    ]
}

/// Several stacks at once, which needs stacks that take time: moto's end at once, and it drops
/// the outputs a dependent stack reads. Independent stacks overlap; a dependent one starts after
/// its dependency, with the dependency's output as its parameter.
#[tokio::test]
async fn independent_stacks_overlap_and_a_dependent_one_gets_the_output() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(
        repo.path().join("cfn/app.yaml"),
        "Parameters:\n  Label:\n    Type: String\nResources:\n  Topic:\n    Type: AWS::SNS::Topic\n",
    )
    .unwrap();
    let config = pipeline_config::ConfigFile::from_text(
        &repo.path().join("pipeline.toml"),
        "[deploy]\nartifact_bucket = \"artifacts\"\nparallelism = 2\n\
         [deploy.stacks.a]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"a-{env}\"\nparameters = { Label = \"a\" }\n\
         [deploy.stacks.b]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"b-{env}\"\nparameters = { Label = \"b\" }\n\
         [deploy.stacks.c]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"c-{env}\"\nparameters = { Label = { output = \"a.TopicArn\" } }\n",
    );
    let env = DeploySettings::from_config(&config).unwrap().environment(&config, "dev").unwrap();
    let inputs = PlanInputs { repo: repo.path(), manifest: None, functions: &[], changed: None, only: &[] };
    let plan = stack_deployer::plan(&env, inputs, &|_| None).unwrap();

    let mut rules = Vec::new();
    rules.extend(created_stack("a-dev", "arn:stack/a", "arn:cs/a", &[("TopicArn", "arn:aws:sns:us-east-1:1:a")]));
    rules.extend(created_stack("b-dev", "arn:stack/b", "arn:cs/b", &[]));
    // c's change set only matches with a's output as its parameter.
    let mut c_rules = created_stack("c-dev", "arn:stack/c", "arn:cs/c", &[]);
    c_rules[1] = mock!(aws_sdk_cloudformation::Client::create_change_set)
        .match_requests(|r| {
            r.stack_name() == Some("c-dev")
                && r.parameters().first().and_then(|p| p.parameter_value()) == Some("arn:aws:sns:us-east-1:1:a")
        })
        .then_output(|| CreateChangeSetOutput::builder().id("arn:cs/c").stack_id("arn:stack/c").build());
    rules.extend(c_rules);
    rules.push(
        mock!(aws_sdk_cloudformation::Client::describe_stack_events)
            .then_output(|| DescribeStackEventsOutput::builder().build()),
    );
    let refs: Vec<&Rule> = rules.iter().collect();
    let clients = clients(&refs);
    let events = Mutex::new(Vec::new());
    let report = stack_deployer::deploy(&plan, &clients, env.parallelism, None, &options(), &|_| None, &|e| match e {
        Event::Stack { stack, message } if message.starts_with("creating change set") => {
            events.lock().unwrap().push(format!("{stack} starts"))
        }
        Event::Done { stack, .. } => events.lock().unwrap().push(format!("{stack} done")),
        _ => {}
    })
    .await
    .unwrap();
    assert!(report.stacks.iter().all(|s| matches!(s.outcome, StackOutcome::Deployed { .. })), "{}", report.summary());
    let order = events.into_inner().unwrap();
    let at = |what: &str| order.iter().position(|e| e == what).unwrap_or_else(|| panic!("{what} in {order:?}"));
    assert!(at("b starts") < at("a done"), "a and b overlap: {order:?}");
    assert!(at("a done") < at("c starts"), "c waits for a: {order:?}");
}

fn change_set_adding_topic(execution: ExecutionStatus) -> DescribeChangeSetOutput {
    DescribeChangeSetOutput::builder()
        .change_set_id(CHANGE_SET_ID)
        .stack_id(STACK_ID)
        .status(ChangeSetStatus::CreateComplete)
        .execution_status(execution)
        .changes(
            Change::builder()
                .resource_change(
                    ResourceChange::builder()
                        .action(ChangeAction::Add)
                        .logical_resource_id("Topic")
                        .resource_type("AWS::SNS::Topic")
                        .build(),
                )
                .build(),
        )
        .build()
}

fn resources(logical: &[&str]) -> ListStackResourcesOutput {
    ListStackResourcesOutput::builder()
        .set_stack_resource_summaries(Some(
            logical
                .iter()
                .map(|id| {
                    StackResourceSummary::builder()
                        .logical_resource_id(*id)
                        .physical_resource_id(format!("arn:aws:sns:us-east-1:123456789012:{id}"))
                        .resource_type("AWS::SNS::Topic")
                        .resource_status(ResourceStatus::CreateComplete)
                        .last_updated_timestamp(DateTime::from_secs(0))
                        .build()
                })
                .collect(),
        ))
        .build()
}

/// Rules for a first create whose ExecuteChangeSet is first answered with a 500, the stack
/// ending CREATE_COMPLETE, the change set's execution status after the 500 as given.
fn create_with_a_500(after: ExecutionStatus, listed: &'static [&'static str]) -> Vec<Rule> {
    vec![
        mock!(aws_sdk_cloudformation::Client::describe_stacks)
            .sequence()
            .error(no_such_stack)
            .output(|| stacks(stack(StackStatus::CreateComplete, "one")))
            .repeatedly()
            .build(),
        created(),
        mock!(aws_sdk_cloudformation::Client::describe_change_set)
            .sequence()
            .output(|| change_set_adding_topic(ExecutionStatus::Available))
            .output(move || change_set_adding_topic(after.clone()))
            .repeatedly()
            .build(),
        mock!(aws_sdk_cloudformation::Client::execute_change_set)
            .sequence()
            .http_status(500, Some("<ErrorResponse><Error><Code>InternalFailure</Code></Error></ErrorResponse>".into()))
            .output(|| ExecuteChangeSetOutput::builder().build())
            .repeatedly()
            .build(),
        mock!(aws_sdk_cloudformation::Client::describe_stack_events)
            .then_output(|| DescribeStackEventsOutput::builder().build()),
        mock!(aws_sdk_cloudformation::Client::list_stack_resources).then_output(move || resources(listed)),
    ]
}

/// Stands in for a 5xx on ExecuteChangeSet (moto answers 500 when a resource fails, and the
/// SDK's retry executed the change set a second time: the stack ended CREATE_COMPLETE with
/// none of its resources, read as "deployed"). Recorded AWS-shaped responses: the execute is
/// not retried blindly; the change set says it ran; the completed stack lacks the change set's
/// resource, so the deploy fails naming it.
#[tokio::test]
async fn an_execute_answered_500_is_not_retried_and_a_stack_without_its_resources_fails() {
    let (_repo, plan) = plan();
    let rules = create_with_a_500(ExecutionStatus::ExecuteComplete, &[]);
    let refs: Vec<&Rule> = rules.iter().collect();
    let clients = clients(&refs);
    let (report, _) = deploy(&plan, &clients, &options()).await;
    assert_eq!(rules[3].num_calls(), 1, "ExecuteChangeSet is sent once");
    let StackOutcome::Failed { status, root_cause: Some(cause), .. } = &report.stacks[0].outcome else {
        panic!("{}", report.summary())
    };
    assert_eq!(status, "CREATE_COMPLETE");
    assert_eq!(cause.path, "app/Topic");
    assert!(cause.reason.contains("app/Topic (AWS::SNS::Topic) missing"), "{}", cause.reason);
    assert_ne!(report.exit_code(), 0);
}

/// Stands in for a 5xx on ExecuteChangeSet after which the change set is still AVAILABLE (it
/// never started; recorded AWS-shaped responses): it is executed again, and the stack, which
/// holds the change set's resource, is deployed, as ListStackResources shows.
#[tokio::test]
async fn an_execute_that_never_started_is_sent_again_and_the_result_verified() {
    let (_repo, plan) = plan();
    let rules = create_with_a_500(ExecutionStatus::Available, &["Topic"]);
    let refs: Vec<&Rule> = rules.iter().collect();
    let clients = clients(&refs);
    let (report, events) = deploy(&plan, &clients, &options()).await;
    assert!(matches!(report.stacks[0].outcome, StackOutcome::Deployed { .. }), "{}", report.summary());
    assert_eq!(rules[3].num_calls(), 2, "sent again once the change set says it did not start");
    assert_eq!(rules[5].num_calls(), 1, "the stack's resources were compared with the change set");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Stack { message, .. } if message.contains("the change set did not start"))),
        "{events:?}"
    );
}

/// Stands in for AWS reading a nested template again at the same URL (moto compares only the
/// parent's template, so it never updates a nested stack whose URL did not change): a stack in
/// `fixed` mode whose deployed body and parameters are those planned is not taken for unchanged
/// (its nested template at the fixed key may have changed); a change set decides, and the
/// nested stack's change is executed.
#[tokio::test]
async fn a_fixed_mode_stack_with_the_same_body_still_gets_a_change_set() {
    let parent = "Parameters:\n  Label:\n    Type: String\nResources:\n  Child:\n    Type: AWS::CloudFormation::Stack\n    Properties:\n      TemplateURL: https://s3.amazonaws.com/artifacts/cfn/child.yaml\n";
    let child = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: renamed\n";
    let (_repo, plan) =
        plan_with("artifact_mode = \"fixed\"\n", &[("cfn/app.yaml", parent), ("cfn/child.yaml", child)]);
    let stack_plan = &plan.stacks[0];
    assert_eq!(plan.artifacts.len(), 1);
    assert_eq!((plan.artifacts[0].key.as_str(), plan.artifacts[0].fixed), ("cfn/child.yaml", true));
    assert_eq!(stack_plan.fixed_templates, [("cfn/child.yaml".to_string(), plan.artifacts[0].sha256.clone())]);
    let body = String::from_utf8(stack_plan.body.clone()).unwrap();
    assert!(body.contains("https://s3.amazonaws.com/artifacts/cfn/child.yaml"), "the URL as written: {body}");

    // The child was uploaded by an earlier deploy that stopped before its stack: S3 holds it.
    let sha256 = plan.artifacts[0].sha256.clone();
    let head = mock!(aws_sdk_s3::Client::head_object).then_output(move || {
        aws_sdk_s3::operation::head_object::HeadObjectOutput::builder().metadata("sha256", sha256.clone()).build()
    });
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .then_output(|| stacks(stack(StackStatus::UpdateComplete, "one")));
    let template = mock!(aws_sdk_cloudformation::Client::get_template)
        .then_output(move || GetTemplateOutput::builder().template_body(body.clone()).build());
    let created = created();
    let nested_change = ResourceChange::builder()
        .action(ChangeAction::Modify)
        .logical_resource_id("Child")
        .resource_type("AWS::CloudFormation::Stack")
        .build();
    let ready = mock!(aws_sdk_cloudformation::Client::describe_change_set).then_output(move || {
        let mut described = change_set(ChangeSetStatus::CreateComplete, "");
        described.changes = Some(vec![Change::builder().resource_change(nested_change.clone()).build()]);
        described
    });
    let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set)
        .then_output(|| ExecuteChangeSetOutput::builder().build());
    let events = mock!(aws_sdk_cloudformation::Client::describe_stack_events)
        .then_output(|| DescribeStackEventsOutput::builder().build());
    let listed = mock!(aws_sdk_cloudformation::Client::list_stack_resources).then_output(|| resources(&["Child"]));
    let clients = clients_with(&[&describe, &template, &created, &ready, &execute, &events, &listed], &[&head]);
    let (report, _) = deploy(&plan, &clients, &options()).await;
    assert!(matches!(report.stacks[0].outcome, StackOutcome::Deployed { .. }), "{}", report.summary());
    assert_eq!(created.num_calls(), 1, "a change set was made");
    assert_eq!(template.num_calls(), 0, "the body alone decides nothing");
}

/// Recorded: moto takes a change set's `RollbackConfiguration` and ignores it (it keeps no
/// triggers and never rolls back), so the request itself is checked here: every CreateChangeSet
/// of an environment with `rollback_alarms` carries them as `AWS::CloudWatch::Alarm` triggers
/// with the monitoring time, and one without sends an empty list (clearing earlier triggers).
#[tokio::test]
async fn every_change_set_carries_the_environments_alarms_as_rollback_triggers() {
    const ALARM: &str = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:api-errors";
    const OTHER: &str = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:api-latency";
    let (_repo, plan) = plan_with(
        &format!(
            "[deploy.environments.dev]\nrollback_on = [\"alarms\", \"e2e\"]\nrollback_alarms = [\"{ALARM}\", \"{OTHER}\"]\nrollback_monitoring_minutes = 15\n"
        ),
        &[],
    );
    assert!(
        plan.describe().contains(&format!("watched 15 minute(s) after its resources are deployed): {ALARM}, {OTHER}"))
    );
    fn triggers(
        r: &aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetInput,
    ) -> (Vec<(String, String)>, Option<i32>) {
        let config = r.rollback_configuration().unwrap();
        let triggers: Vec<(String, String)> = config
            .rollback_triggers()
            .iter()
            .map(|t| (t.arn().unwrap_or_default().to_string(), t.r#type().unwrap_or_default().to_string()))
            .collect();
        (triggers, config.monitoring_time_in_minutes())
    }
    let describe = mock!(aws_sdk_cloudformation::Client::describe_stacks)
        .then_output(|| stacks(stack(StackStatus::UpdateComplete, "other")));
    // Answers "nothing to change" (the deploy ends there) only to a request carrying them.
    let carrying = mock!(aws_sdk_cloudformation::Client::create_change_set)
        .match_requests(|r| {
            triggers(r)
                == (
                    vec![
                        (ALARM.to_string(), "AWS::CloudWatch::Alarm".to_string()),
                        (OTHER.to_string(), "AWS::CloudWatch::Alarm".to_string()),
                    ],
                    Some(15),
                )
        })
        .then_error(|| {
            CreateChangeSetError::generic(
                ErrorMetadata::builder().code("ValidationError").message("No updates are to be performed.").build(),
            )
        });
    let clients1 = clients(&[&describe, &carrying]);
    let (report, _) = deploy(&plan, &clients1, &options()).await;
    assert_eq!(report.stacks[0].outcome, StackOutcome::NoChanges);
    assert_eq!(carrying.num_calls(), 1);

    // Without alarms: an empty list and no monitoring, not no configuration at all.
    let (_repo, plan) = self::plan();
    assert!(!plan.describe().contains("rollback triggers"));
    let clearing = mock!(aws_sdk_cloudformation::Client::create_change_set)
        .match_requests(|r| triggers(r) == (Vec::new(), Some(0)))
        .then_error(|| {
            CreateChangeSetError::generic(
                ErrorMetadata::builder().code("ValidationError").message("No updates are to be performed.").build(),
            )
        });
    let clients2 = clients(&[&describe, &clearing]);
    let (report, _) = deploy(&plan, &clients2, &options()).await;
    assert_eq!(report.stacks[0].outcome, StackOutcome::NoChanges);
    assert_eq!(clearing.num_calls(), 1);
}
