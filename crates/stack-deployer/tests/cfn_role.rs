//! The CloudFormation execution role through the binary: `[deploy.environments.E] cfn_role_arn`
//! (or `--cfn-role-arn`, as the pipeline's buildspecs pass it) goes on every change set as
//! `RoleARN`, so CloudFormation acts as that role and not as the deployer; a value that is not
//! a role is refused naming its key and line.
//!
//! Where the emulator differs: AWS's DescribeChangeSet does not return the role (nor does
//! moto's), so the request itself is read through a relay; moto keeps the role of a stack's
//! *first* change set as the stack's `RoleARN` and does not replace it with a later update's
//! (AWS does), so the stack's `RoleARN` is checked after the create only.

use std::path::Path;
use std::process::Output;

use run_state::{RunDir, Status, Step, Store};

mod support;
use support::text;

/// A repository whose one stack serves `infra`, changed in run `run-1` whose validate passed.
fn make_repo(name: &str, dev: &str) -> (tempfile::TempDir, RunDir) {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(repo.path().join("cfn/topic.yaml"), "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n").unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        format!(
            "[deploy]\nartifact_bucket = \"{name}-artifacts\"\n\n[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{name}-{{env}}\"\ncomponents = [\"infra\"]\n\n[deploy.environments.dev]\nregion = \"us-east-1\"\n{dev}"
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
    (repo, run)
}

fn deploy(repo: &Path, run: &RunDir, endpoint: &str, args: &[&str]) -> Output {
    support::deployer_in("dev", endpoint, repo, run, args)
}

/// The `RoleARN` of each CreateChangeSet request the relay passed, in order (None: not set).
fn change_set_roles(relay: &test_support::Relay) -> Vec<Option<String>> {
    let sent = relay.sent();
    sent.split("Action=CreateChangeSet")
        .skip(1)
        .map(|request| {
            let body = request.split("\r\n").next().unwrap_or_default();
            body.split('&')
                .find_map(|pair| pair.strip_prefix("RoleARN="))
                .map(|v| v.replace("%3A", ":").replace("%2F", "/").replace("%3a", ":").replace("%2f", "/"))
        })
        .collect()
}

#[tokio::test]
async fn every_change_set_carries_the_cloudformation_role_of_the_environment() {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    let name = format!("sd-cfn-role-{}", std::process::id());
    aws_target::s3(&config, None).create_bucket().bucket(format!("{name}-artifacts")).send().await.unwrap();
    let role = "arn:aws:iam::123456789012:role/sd-cfn-dev";
    let (repo, run) = make_repo(&name, &format!("cfn_role_arn = \"{role}\"\n"));
    let relay = test_support::Relay::start(&moto.endpoint);

    // The dry run says which role CloudFormation will act as.
    let out = deploy(repo.path(), &run, &relay.endpoint, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("CloudFormation acts as {role}\n")), "{}", text(&out.stdout));

    // The first deploy: a CREATE change set with the role; the stack keeps it.
    let out = deploy(repo.path(), &run, &relay.endpoint, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(change_set_roles(&relay), [Some(role.to_owned())]);
    let cf = aws_target::cloudformation(&config, None);
    let stacks = cf.describe_stacks().stack_name(format!("{name}-dev")).send().await.unwrap();
    assert_eq!(stacks.stacks()[0].role_arn(), Some(role));

    // An update, with the role given on the command line as the pipeline's buildspecs do: the
    // UPDATE change set carries that one.
    std::fs::write(
        repo.path().join("cfn/topic.yaml"),
        "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n  Other:\n    Type: AWS::SNS::Topic\n",
    )
    .unwrap();
    let other = "arn:aws:iam::123456789012:role/sd-cfn-dev-2";
    let out = deploy(repo.path(), &run, &relay.endpoint, &["--cfn-role-arn", other]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(change_set_roles(&relay), [Some(role.to_owned()), Some(other.to_owned())]);
    let records = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap().run("run-1").unwrap();
    assert!(records.iter().any(|r| r.component == "infra" && r.status == Status::Passed), "{records:?}");
}

#[test]
fn a_cloudformation_role_that_is_not_one_is_refused_with_its_key_and_line() {
    let (repo, run) = make_repo("sd-cfn-role-bad", "cfn_role_arn = \"arn:aws:iam::123456789012:user/ci\"\n");
    let out = deploy(repo.path(), &run, &test_support::Moto::shared().endpoint, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("pipeline.toml:11: deploy.environments.dev.cfn_role_arn:"), "{stderr}");
    assert!(stderr.contains("is not a role ARN"), "{stderr}");

    // On the command line: a usage error before anything is read.
    let (repo, run) = make_repo("sd-cfn-role-bad-flag", "");
    let out = deploy(repo.path(), &run, &test_support::Moto::shared().endpoint, &["--cfn-role-arn", "cfn-exec"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("`cfn-exec` is not a role ARN"), "{}", text(&out.stderr));
}

/// Production reached through its role: the session CloudTrail shows names the stage, the
/// environment and the run, and the external id given on the command line (CodeBuild reads it
/// from Parameter Store) is the one sent, not the config's.
#[tokio::test]
async fn the_role_is_assumed_with_the_external_id_given_and_a_session_named_for_the_run() {
    let moto = test_support::Moto::shared();
    let name = format!("sd-session-{}", std::process::id());
    let prod = "[deploy.environments.prod]\nregion = \"us-east-1\"\nrole_arn = \"arn:aws:iam::111111111111:role/deploy\"\nexternal_id = \"from-the-config\"\n";
    let (repo, run) = make_repo(&name, prod);
    // The bucket in the role's account (moto's STS credentials act in it).
    let relay = test_support::Relay::start(&moto.endpoint);
    let out =
        support::deployer_in("prod", &relay.endpoint, repo.path(), &run, &["--external-id", "from-parameter-store"]);
    let sent = relay.sent();
    let assume =
        sent.split("Action=AssumeRole").nth(1).unwrap_or_else(|| panic!("no AssumeRole: {}", text(&out.stderr)));
    let assume = assume.split("\r\n").next().unwrap();
    assert!(assume.contains("RoleSessionName=stack-deployer-prod-run-1"), "{assume}");
    assert!(assume.contains("ExternalId=from-parameter-store"), "{assume}");
    assert!(!sent.contains("from-the-config"), "the config's external id was sent");
}
