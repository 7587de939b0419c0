//! A role lacking a right, through the deploy stage as the binary runs it (`run_stage`): the
//! refusal is recorded as the component's failed deploy step, its error "role X lacks action Y
//! on Z", and no change set is executed. moto does not enforce IAM, so the refusal is a
//! recorded response shaped like AWS's (code `AccessDenied`, HTTP 403).

use aws_sdk_cloudformation::error::ErrorMetadata;
use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetError;
use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksError;
use aws_sdk_cloudformation::operation::list_change_sets::ListChangeSetsOutput;
use aws_sdk_s3::operation::head_bucket::HeadBucketOutput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use run_state::{FileStore, RunDir, Status, Step, StepRecord, Store};
use stack_deployer::{Clients, Error, StageOptions};

const ROLE: &str = "arn:aws:iam::111111111111:role/deploy";

#[tokio::test]
async fn a_refused_change_set_is_recorded_as_the_failed_deploy_and_nothing_runs_after_it() {
    let repo = test_support::GitRepo::new();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(repo.path().join("cfn/app.yaml"), "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n").unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        format!(
            "[components.app]\npaths = [\"cfn/**\"]\n\n[deploy]\nartifact_bucket = \"artifacts\"\n\n[deploy.stacks.app]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"app-{{env}}\"\ncomponents = [\"app\"]\n\n[deploy.environments.dev]\nrole_arn = \"{ROLE}\"\n"
        ),
    )
    .unwrap();
    repo.commit_all("app");
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let run = RunDir::create(&repo.path().join(".pipeline"), "run-1").unwrap();
    let diff = format!(
        "{{\"base\": null, \"base_reason\": \"test\", \"head\": \"{head}\", \"worktree\": false, \"files\": [], \"global_inputs_changed\": [], \"components\": {{\"app\": {{\"changed\": true, \"files\": [], \"because_of\": []}}}}, \"flags\": {{}}}}"
    );
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store.record(&StepRecord::new("run-1", &head, run_state::PIPELINE, Step::Validate, Status::Passed)).unwrap();
    let context = run_state::StageContext::open(&run_state::StageOptions {
        repo: Some(repo.path().to_path_buf()),
        ..Default::default()
    })
    .unwrap();

    let head_bucket = mock!(aws_sdk_s3::Client::head_bucket).then_output(|| HeadBucketOutput::builder().build());
    let absent = mock!(aws_sdk_cloudformation::Client::describe_stacks).then_error(|| {
        DescribeStacksError::generic(
            ErrorMetadata::builder().code("ValidationError").message("Stack with id app-dev does not exist").build(),
        )
    });
    let leftovers =
        mock!(aws_sdk_cloudformation::Client::list_change_sets).then_output(|| ListChangeSetsOutput::builder().build());
    let refused = mock!(aws_sdk_cloudformation::Client::create_change_set).then_error(|| {
        CreateChangeSetError::generic(ErrorMetadata::builder().code("AccessDenied").message("not for you").build())
    });
    let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput::builder().build()
    });
    let cloudformation: [&Rule; 4] = [&absent, &leftovers, &refused, &execute];
    let clients = Clients {
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, &[&head_bucket]),
        cloudformation: mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, &cloudformation),
        lambda: mock_client!(aws_sdk_lambda, RuleMode::MatchAny, Vec::<&Rule>::new()),
    };
    let options = StageOptions {
        environment: "dev".into(),
        only: Vec::new(),
        no_execute: false,
        recreate_failed: false,
        first_poll: Some(std::time::Duration::from_millis(1)),
        cfn_role_arn: None,
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let inputs = run_state::StageInputs::new(&context, &run, &store, &cancel);
    let error = stack_deployer::run_stage(&inputs, &clients, &options, &|_| None, &|_| {}).await.unwrap_err();
    let message = format!("role {ROLE} lacks action cloudformation:CreateChangeSet on app-dev");
    assert!(matches!(error, Error::Denied { .. }), "{error:?}");
    assert_eq!(error.to_string(), message);
    assert_eq!((refused.num_calls(), execute.num_calls()), (1, 0), "nothing runs after the refusal");

    let records = store.run("run-1").unwrap();
    let deploy = records.iter().find(|r| r.component == "app" && r.step == Step::Deploy).expect("the deploy's record");
    assert_eq!(deploy.status, Status::Failed, "{deploy:?}");
    assert!(deploy.details.error.as_deref().unwrap_or_default().contains(&message), "{deploy:?}");
}
