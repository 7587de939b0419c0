//! Two writers of one bucket: the DRS fixture's templates, where the site's bucket (the master's
//! `SiteBucketName`, nested by S3 URL in `cfn/frontend-stack.yaml`) is also given to a function
//! and, here, to a custom resource that uploads the site. `frontend-publisher publish --dry-run`
//! warns naming the stack, the template's line and each resource; `check` reports them as P008
//! warnings. Through the binary against moto.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use run_state::{DeployedStack, RunDir, StackOutputs, StageContext, Status, Step, Store};

mod support;
use support::keys;

/// The custom resource appended to the fixture's frontend stack: it copies the built site into
/// the bucket, as real repositories' stacks sometimes do.
const DEPLOY_SITE: &str = "\n  DeploySite:\n    Type: Custom::DeploySite\n    Properties:\n      ServiceToken: !GetAtt FrontendBuilderFunction.Arn\n      TargetBucket: !Sub '${SiteBucket}'\n";

fn repository(root: &Path, bucket: &str, frontend_stack: impl Fn(String) -> String) {
    let fixture = test_support::workspace_root().join("fixtures/drs-monorepo");
    test_support::copy_tree(&fixture.join("cfn"), &root.join("cfn"));
    let stack = std::fs::read_to_string(root.join("cfn/frontend-stack.yaml")).unwrap();
    std::fs::write(root.join("cfn/frontend-stack.yaml"), frontend_stack(stack)).unwrap();
    std::fs::write(
        root.join("pipeline.toml"),
            "[deploy]\nartifact_bucket = \"sw-artifacts-{env}\"\n\n[deploy.stacks.master]\ntemplate = \"cfn/master.yaml\"\nstack_name = \"drs-{env}\"\nparameters = { Environment = \"{env}\", SourceBucket = \"sw-artifacts-{env}\" }\ncapabilities = [\"CAPABILITY_IAM\"]\n\n\
             [deploy.environments.dev]\nregion = \"us-east-1\"\n\n\
             [publish]\ncomponent = \"frontend\"\ndist = \"dist\"\nbucket = { output = \"master.SiteBucketName\" }\n"
    )
    .unwrap();
    std::fs::create_dir_all(root.join("dist")).unwrap();
    std::fs::write(root.join("dist/index.html"), "<!doctype html><p>DRS</p>").unwrap();
    let context =
        StageContext::open(&run_state::StageOptions { repo: Some(root.to_path_buf()), ..Default::default() }).unwrap();
    let run = RunDir::create(&context.state_dir, "run-1").unwrap();
    let master = DeployedStack {
        stack_name: "drs-dev".into(),
        region: "us-east-1".into(),
        stack_id: None,
        outputs: BTreeMap::from([("SiteBucketName".to_string(), bucket.to_string())]),
    };
    let stacks = BTreeMap::from([("master".to_string(), master)]);
    StackOutputs { environments: BTreeMap::from([("dev".to_string(), stacks)]) }.merge_into(&run).unwrap();
    let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"frontend\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let validated = run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed);
    context.file_store().unwrap().record(&validated).unwrap();
}

fn publisher(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frontend-publisher"))
        .args(args)
        .args(["--env", "dev", "--region", "us-east-1", "--endpoint-url", &test_support::Moto::shared().endpoint])
        .args(["--repo".as_ref(), root.as_os_str()])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

fn canonical(dir: &tempfile::TempDir) -> PathBuf {
    std::fs::canonicalize(dir.path()).unwrap()
}

const FUNCTION: &str = "cfn/frontend-stack.yaml:23: P008 the site's bucket has a second writer: stack `master`'s function FrontendStack/FrontendBuilderFunction (AWS::Lambda::Function) is given `SiteBucket`, so its uploads and the publish overwrite each other; let one of them write the site";
const CUSTOM: &str = "cfn/frontend-stack.yaml:38: P008 the site's bucket has a second writer: stack `master`'s custom resource FrontendStack/DeploySite (Custom::DeploySite) is given `SiteBucket`, so its uploads and the publish overwrite each other; let one of them write the site";

#[tokio::test]
async fn a_stack_resource_given_the_site_bucket_is_reported_by_the_dry_run_and_the_check() {
    let config = test_support::Moto::shared().sdk_config().await;
    let s3 = aws_target::s3(&config, None);
    s3.create_bucket().bucket("sw-site").send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = canonical(&dir);
    repository(&root, "sw-site", |stack| stack.replace("\nOutputs:", &format!("{DEPLOY_SITE}\nOutputs:")));
    let stack = std::fs::read_to_string(root.join("cfn/frontend-stack.yaml")).unwrap();
    assert_eq!(stack.lines().nth(37), Some("  DeploySite:"), "{stack}");

    let dry = publisher(&root, &["publish", "--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(stderr.lines().any(|l| l == format!("warning: {FUNCTION}")), "{stderr}");
    assert!(stderr.lines().any(|l| l == format!("warning: {CUSTOM}")), "{stderr}");
    assert!(keys(&s3, "sw-site").await.is_empty(), "a dry run uploads nothing");

    // The check reports them as warnings, beside what it finds in the bucket.
    let check = publisher(&root, &["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(report.contains("P008") && report.contains("FrontendStack/DeploySite (Custom::DeploySite)"), "{report}");
    assert!(report.contains("FrontendStack/FrontendBuilderFunction (AWS::Lambda::Function)"), "{report}");
    assert_eq!(report.matches("P008").count(), 2, "{report}");
}

#[tokio::test]
async fn a_bucket_no_other_resource_is_given_has_no_warning() {
    let config = test_support::Moto::shared().sdk_config().await;
    let s3 = aws_target::s3(&config, None);
    s3.create_bucket().bucket("sw-alone").send().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = canonical(&dir);
    repository(&root, "sw-alone", |stack| {
        stack.replace("      Environment:\n        Variables:\n          SITE_BUCKET: !Ref SiteBucket\n", "")
    });
    let dry = publisher(&root, &["publish", "--dry-run"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let stderr = String::from_utf8_lossy(&dry.stderr);
    assert!(!stderr.contains("P008") && !stderr.contains("warning"), "{stderr}");
    let check = publisher(&root, &["check"]);
    assert!(!String::from_utf8_lossy(&check.stdout).contains("P008"));
}
