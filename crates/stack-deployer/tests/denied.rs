//! A role lacking a right the deploy needs: AWS's AccessDenied (read from the error's code, never
//! its text) is said as "role X lacks action Y on Z", X the role the environment is reached
//! through, and nothing after the refused call runs. moto does not enforce IAM, so the refusals
//! are recorded responses shaped like AWS's (code `AccessDenied`, HTTP 403).

use std::time::Duration;

use aws_sdk_cloudformation::error::ErrorMetadata;
use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetError;
use aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksError;
use aws_sdk_cloudformation::operation::list_change_sets::ListChangeSetsOutput;
use aws_sdk_s3::operation::head_bucket::{HeadBucketError, HeadBucketOutput};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use stack_deployer::{ApplyOptions, Clients, DeploySettings, Error, Plan, PlanInputs};

const ROLE: &str = "arn:aws:iam::111111111111:role/deploy";

fn plan(env: &str) -> (tempfile::TempDir, Plan) {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(repo.path().join("cfn/app.yaml"), "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n").unwrap();
    let config = pipeline_config::ConfigFile::from_text(
        &repo.path().join("pipeline.toml"),
        &format!(
            "[deploy]\nartifact_bucket = \"artifacts\"\n[deploy.stacks.app]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"app-{{env}}\"\n[deploy.environments.dev]\n[deploy.environments.prod]\nrole_arn = \"{ROLE}\"\n"
        ),
    );
    let env = DeploySettings::from_config(&config).unwrap().environment(&config, env).unwrap();
    let inputs = PlanInputs { repo: repo.path(), manifest: None, functions: &[], changed: None, only: &[] };
    let plan = stack_deployer::plan(&env, inputs, &|_| None).unwrap();
    (repo, plan)
}

fn clients(s3: &[&Rule], cloudformation: &[&Rule]) -> Clients {
    Clients {
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, s3),
        cloudformation: mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, cloudformation),
        lambda: mock_client!(aws_sdk_lambda, RuleMode::MatchAny, Vec::<&Rule>::new()),
    }
}

async fn deploy(plan: &Plan, clients: &Clients) -> Result<stack_deployer::Report, Error> {
    let mut options = ApplyOptions::new("stack-deployer-test", Duration::from_secs(5), Duration::from_secs(5));
    options.first_poll = Duration::from_millis(1);
    options.max_poll = Duration::from_millis(5);
    stack_deployer::deploy(plan, clients, 1, None, &options, &|_| None, &|_| {}).await
}

#[tokio::test]
async fn a_refused_change_set_names_the_role_the_action_and_the_stack() {
    let (_repo, plan) = plan("prod");
    let head_bucket = mock!(aws_sdk_s3::Client::head_bucket).then_output(|| HeadBucketOutput::builder().build());
    let absent = mock!(aws_sdk_cloudformation::Client::describe_stacks).then_error(|| {
        DescribeStacksError::generic(
            ErrorMetadata::builder().code("ValidationError").message("Stack with id app-prod does not exist").build(),
        )
    });
    let leftovers =
        mock!(aws_sdk_cloudformation::Client::list_change_sets).then_output(|| ListChangeSetsOutput::builder().build());
    // The message's wording is AWS's business; only the code is read.
    let refused = mock!(aws_sdk_cloudformation::Client::create_change_set).then_error(|| {
        CreateChangeSetError::generic(ErrorMetadata::builder().code("AccessDenied").message("not for you").build())
    });
    let execute = mock!(aws_sdk_cloudformation::Client::execute_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput::builder().build()
    });
    let clients = clients(&[&head_bucket], &[&absent, &leftovers, &refused, &execute]);
    let error = deploy(&plan, &clients).await.unwrap_err();
    assert!(matches!(error, Error::Denied { .. }), "{error:?}");
    assert_eq!(error.to_string(), format!("role {ROLE} lacks action cloudformation:CreateChangeSet on app-prod"));
    assert!(std::error::Error::source(&error).is_some(), "the SDK's error is kept as the source");
    assert_eq!(refused.num_calls(), 1);
    assert_eq!(execute.num_calls(), 0, "nothing runs after the refusal");
}

#[tokio::test]
async fn a_refused_bucket_check_names_the_s3_action_and_changes_no_stack() {
    let (_repo, plan) = plan("dev");
    let refused = mock!(aws_sdk_s3::Client::head_bucket).then_error(|| {
        HeadBucketError::generic(aws_sdk_s3::error::ErrorMetadata::builder().code("AccessDenied").build())
    });
    let create = mock!(aws_sdk_cloudformation::Client::create_change_set)
        .then_error(|| CreateChangeSetError::generic(ErrorMetadata::builder().code("ValidationError").build()));
    let clients = clients(&[&refused], &[&create]);
    let error = deploy(&plan, &clients).await.unwrap_err();
    // dev names no role: the credentials' chain (the CodeBuild project's role) is the one.
    assert_eq!(
        error.to_string(),
        "the role these credentials act as lacks action s3:ListBucket on artifacts; grant it"
    );
    assert_eq!(create.num_calls(), 0, "no stack is touched");
}
