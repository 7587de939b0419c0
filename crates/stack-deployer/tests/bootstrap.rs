//! The pipeline's own templates through stack-deployer: `cfn/app-account.yaml` (an environment's
//! CloudFormation role, the boundary its roles carry, production's deploy role) deploys into the
//! emulator, and the dry run of `cfn/pipeline.yaml` shows its plan.
//!
//! Where the emulator differs: moto has no CodeBuild, CodePipeline or S3 bucket policy resources
//! (it skips them), so `cfn/pipeline.yaml`, whose roles name the projects (`!GetAtt
//! ToolkitProject.Arn`), cannot be created there (its stack stays CREATE_IN_PROGRESS): only its
//! plan is checked. moto enforces no IAM policy, so what the roles allow is checked on the
//! templates (xtask/tests/codebuild.rs), not by calls.

use std::path::Path;
use std::process::Output;

use run_state::{RunDir, Status, Step, Store};

mod support;
use support::text;

fn repo(name: &str) -> (tempfile::TempDir, RunDir) {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    for template in ["app-account.yaml", "pipeline.yaml"] {
        std::fs::copy(
            test_support::workspace_root().join("cfn").join(template),
            repo.path().join("cfn").join(template),
        )
        .unwrap();
    }
    let toml = format!(
        r#"[deploy]
artifact_bucket = "{name}-artifacts"

[deploy.stacks.account]
template = "cfn/app-account.yaml"
stack_name = "{name}-account-{{env}}"
parameters = {{ Environment = "{{env}}", AppStackPrefix = "{name}", ArtifactBucketName = "{name}-artifacts" }}
capabilities = ["CAPABILITY_NAMED_IAM"]
components = ["bootstrap"]

[deploy.stacks.pipeline]
template = "cfn/pipeline.yaml"
stack_name = "{name}-pipeline"
parameters = {{ ProjectName = "{name}", ConnectionArn = "arn:aws:codeconnections:us-east-1:123456789012:connection/x", MonorepoId = "o/monorepo", ToolkitRepoId = "o/toolkit", ProdDeployRoleArn = "arn:aws:iam::111111111111:role/{name}-deploy-prod", ProdCloudFormationRoleArn = "arn:aws:iam::111111111111:role/{name}-cfn-prod", DevCloudFormationRoleArn = "arn:aws:iam::123456789012:role/{name}-cfn-dev" }}
capabilities = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
components = ["pipeline"]

[deploy.environments.dev]
region = "us-east-1"
"#
    );
    std::fs::write(repo.path().join("pipeline.toml"), toml).unwrap();
    let run = RunDir::create(&repo.path().join(".pipeline"), "run-1").unwrap();
    let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"bootstrap\": {\"changed\": true, \"files\": [], \"because_of\": []}, \"pipeline\": {\"changed\": false, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store
        .record(&run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed))
        .unwrap();
    (repo, run)
}

fn deployer(repo: &Path, run: &RunDir, args: &[&str]) -> Output {
    support::deployer_in("dev", &test_support::Moto::shared().endpoint, repo, run, args)
}

#[tokio::test]
async fn the_account_template_deploys_and_the_pipeline_template_plans() {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    let name = format!("boot{}", std::process::id());
    aws_target::s3(&config, None).create_bucket().bucket(format!("{name}-artifacts")).send().await.unwrap();
    let (repo, run) = repo(&name);

    // The pipeline's template as a plan: every parameter given, nothing changed.
    let out = deployer(repo.path(), &run, &["--dry-run", "--only", "pipeline"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains(&format!("pipeline -> {name}-pipeline (template cfn/pipeline.yaml")), "{plan}");

    // The account's template deploys: the execution role under its fixed name, the boundary.
    let out = deployer(repo.path(), &run, &[]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let cf = aws_target::cloudformation(&config, None);
    let stack = cf.describe_stacks().stack_name(format!("{name}-account-dev")).send().await.unwrap();
    let stack = &stack.stacks()[0];
    assert_eq!(stack.stack_status().map(|s| s.as_str()), Some("CREATE_COMPLETE"));
    let outputs: Vec<(&str, &str)> =
        stack.outputs().iter().map(|o| (o.output_key().unwrap(), o.output_value().unwrap())).collect();
    assert!(
        outputs.contains(&("CloudFormationRoleArn", format!("arn:aws:iam::123456789012:role/{name}-cfn-dev").as_str())),
        "{outputs:?}"
    );
    assert!(
        outputs.contains(&("BoundaryArn", format!("arn:aws:iam::123456789012:policy/{name}-boundary").as_str())),
        "{outputs:?}"
    );
    assert!(!outputs.iter().any(|(k, _)| *k == "DeployRoleArn"), "dev needs no deploy role: {outputs:?}");
    let records = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap().run("run-1").unwrap();
    assert!(records.iter().any(|r| r.component == "bootstrap" && r.status == Status::Passed), "{records:?}");
}
