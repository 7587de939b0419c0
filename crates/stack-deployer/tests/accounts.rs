//! `stack-deployer --env prod` with prod in another account of the emulator: its role assumed
//! (with its external id), its region used, every S3 and CloudFormation call signed with the
//! role's keys, and the stack made in prod's account, not the pipeline's.

use std::process::Command;

use aws_target::{AssumeRole, Target};
use run_state::{RunDir, Status, Step, Store};

const BIN: &str = env!("CARGO_BIN_EXE_stack-deployer");
const PROD_ROLE: &str = "arn:aws:iam::111111111111:role/deploy";
const PROD_REGION: &str = "eu-west-1";

async fn sdk(role: Option<&str>) -> aws_config::SdkConfig {
    let target = Target {
        endpoint_url: Some(test_support::Moto::shared().endpoint.clone()),
        region: Some(PROD_REGION.into()),
        profile: None,
        assume_role: role.map(|role_arn| AssumeRole {
            role_arn: role_arn.into(),
            external_id: Some("deploy-ext".into()),
            session_name: "test".into(),
        }),
        external_id: None,
    };
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).test_credentials();
    aws_target::load_with(&target, loader).await.unwrap()
}

#[tokio::test]
async fn a_prod_deploy_signs_every_call_with_prods_role_in_prods_region() {
    let name = format!("sd-accounts-{}", std::process::id());
    let prod = sdk(Some(PROD_ROLE)).await;
    assert_eq!(aws_target::identity(&prod).await.unwrap().account, "111111111111");
    aws_target::s3(&prod, None)
        .create_bucket()
        .bucket(format!("{name}-artifacts-prod"))
        .create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(repo.path().join("cfn/topic.yaml"), "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n").unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        format!(
            "[deploy]\nartifact_bucket = \"{name}-artifacts-{{env}}\"\n[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\n\
             stack_name = \"{name}-{{env}}\"\ncomponents = [\"infra\"]\n[deploy.environments.dev]\nregion = \"us-east-1\"\n\
             [deploy.environments.prod]\nregion = \"{PROD_REGION}\"\nrole_arn = \"{PROD_ROLE}\"\nexternal_id = \"deploy-ext\"\n"
        ),
    )
    .unwrap();
    let run = RunDir::create(&repo.path().join(".pipeline"), "run-1").unwrap();
    let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"infra\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store
        .record(&run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed))
        .unwrap();

    let relay = test_support::Relay::start(&test_support::Moto::shared().endpoint);
    let out = Command::new(BIN)
        .arg("--repo")
        .arg(repo.path())
        .arg("--run-dir")
        .arg(&run.path)
        .args(["--env", "prod", "--endpoint-url", &relay.endpoint])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let issued = relay.issued_keys();
    assert_eq!(issued.len(), 1, "{issued:?}");
    let signatures = relay.signatures();
    let by = |service: &str| signatures.iter().filter(|s| s.service == service).collect::<Vec<_>>();
    assert_eq!(
        by("sts").iter().map(|s| (s.key.as_str(), s.region.as_str())).collect::<Vec<_>>(),
        [("testing", PROD_REGION)],
        "only the AssumeRole is the pipeline's: {signatures:?}"
    );
    assert!(!by("s3").is_empty() && !by("cloudformation").is_empty(), "{signatures:?}");
    assert!(
        signatures.iter().filter(|s| s.service != "sts").all(|s| s.key == issued[0] && s.region == PROD_REGION),
        "{signatures:?}"
    );

    // The stack is in prod's account and region, not in the pipeline's.
    let in_prod = aws_target::cloudformation(&prod, None);
    let stacks = in_prod.describe_stacks().stack_name(format!("{name}-prod")).send().await.unwrap();
    assert_eq!(stacks.stacks()[0].stack_status().map(|s| s.as_str()), Some("CREATE_COMPLETE"));
    let in_pipeline = aws_target::cloudformation(&sdk(None).await, None);
    assert!(in_pipeline.describe_stacks().stack_name(format!("{name}-prod")).send().await.is_err());
    let records = store.run("run-1").unwrap();
    assert!(records.iter().any(|r| r.component == "infra" && r.status == Status::Passed), "{records:?}");
}
