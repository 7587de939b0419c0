//! A deploy that dies or is stopped mid-way, through the binary against the emulator: a
//! deployer killed (SIGKILL) while it holds the stack's lock leaves a lock the rerun takes over
//! at once (its holder's process is provably gone) and change sets the rerun deletes; one
//! stopped with SIGTERM ends on its own: nothing left running, the lock given back, no change
//! set left, the step recorded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_cloudformation::types::{ChangeSetType, ExecutionStatus};
use run_state::{RunDir, Status, Step, Store};

const BIN: &str = env!("CARGO_BIN_EXE_stack-deployer");

/// A repository with one stack (component `infra`), a run whose diff changes it and whose
/// validate passed.
async fn repo(name: &str) -> (tempfile::TempDir, RunDir) {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    aws_target::s3(&config, None).create_bucket().bucket(format!("{name}-artifacts")).send().await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(repo.path().join("cfn/topic.yaml"), "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n").unwrap();
    let toml = format!(
        "[deploy]\nartifact_bucket = \"{name}-artifacts\"\n[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{name}-{{env}}\"\ncomponents = [\"infra\"]\n"
    );
    std::fs::write(repo.path().join("pipeline.toml"), toml).unwrap();
    let run = RunDir::create(&repo.path().join(".pipeline"), "run-1").unwrap();
    let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"infra\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store
        .record(&run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed))
        .unwrap();
    (repo, run)
}

fn deployer(repo: &Path, run: &RunDir) -> Command {
    let moto = test_support::Moto::shared();
    let mut command = Command::new(BIN);
    command
        .arg("--repo")
        .arg(repo)
        .arg("--run-dir")
        .arg(&run.path)
        .args(["--env", "dev", "--endpoint-url", &moto.endpoint, "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
    command
}

/// Starts the deployer and sends it `signal` once it says it is creating its change set (it
/// holds the stack's lock by then). Returns the child, waited for, and what it printed.
fn signalled_at_change_set(repo: &Path, run: &RunDir, signal: &str) -> (Child, std::process::ExitStatus, String) {
    let mut child = deployer(repo, run).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut said = String::new();
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("creating change set") {
            let sent = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
            assert!(sent.success());
            break;
        }
    }
    for line in lines {
        said.push_str(&line.unwrap());
        said.push('\n');
    }
    let status = child.wait().unwrap();
    (child, status, said)
}

/// The stack's change sets made by stack-deployer that could still be executed.
async fn our_available_change_sets(stack: &str) -> Vec<String> {
    let config = test_support::Moto::shared().sdk_config().await;
    let cf = aws_target::cloudformation(&config, None);
    let Ok(out) = cf.list_change_sets().stack_name(stack).send().await else { return Vec::new() };
    out.summaries()
        .iter()
        .filter(|s| s.stack_name() == Some(stack))
        .filter(|s| s.change_set_name().is_some_and(|n| n.starts_with("stack-deployer-")))
        .filter(|s| s.execution_status() == Some(&ExecutionStatus::Available))
        .map(|s| s.change_set_name().unwrap_or_default().to_string())
        .collect()
}

fn infra(repo: &Path) -> run_state::StepRecord {
    let store = run_state::FileStore::open(&repo.join(".pipeline")).unwrap();
    store.run("run-1").unwrap().into_iter().find(|r| r.component == "infra" && r.step == Step::Deploy).unwrap()
}

#[tokio::test]
async fn a_rerun_after_a_killed_deploy_takes_the_dead_holders_lock_and_deletes_its_change_sets() {
    let name = format!("sd-killed-{}", std::process::id());
    let stack = format!("{name}-dev");
    let (repo, run) = repo(&name).await;
    let (_, status, said) = signalled_at_change_set(repo.path(), &run, "-KILL");
    assert_eq!(status.code(), None, "killed: {said}");
    // The record says the runner died; the lock (two hours by default) is still the dead run's.
    let record = infra(repo.path());
    assert_eq!(record.status, Status::Failed, "{record:?}");
    assert!(record.details.error.as_deref().unwrap_or_default().starts_with("runner died"), "{record:?}");

    // A change set the killed deploy made and never executed, whichever step it died at.
    let config = test_support::Moto::shared().sdk_config().await;
    let cf = aws_target::cloudformation(&config, None);
    let current = cf.describe_stacks().stack_name(&stack).send().await.ok();
    let status = current
        .as_ref()
        .and_then(|o| o.stacks().first())
        .and_then(|s| s.stack_status())
        .map(|s| s.as_str().to_string());
    let kind = match status.as_deref() {
        None | Some("REVIEW_IN_PROGRESS") => ChangeSetType::Create,
        Some(_) => ChangeSetType::Update,
    };
    cf.create_change_set()
        .stack_name(&stack)
        .change_set_name("stack-deployer-run-0-killed")
        .change_set_type(kind)
        .template_body("Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n  Queue:\n    Type: AWS::SQS::Queue\n")
        .send()
        .await
        .unwrap();
    assert!(!our_available_change_sets(&stack).await.is_empty());

    // The rerun is not refused: it takes the lock over and deletes what the dead run left.
    let out = deployer(repo.path(), &run).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("deleted change set stack-deployer-run-0-killed, left by an earlier deploy"), "{stderr}");
    assert_eq!(our_available_change_sets(&stack).await, Vec::<String>::new());
    assert_eq!(infra(repo.path()).status, Status::Passed);
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store.acquire_lock(&format!("deploy/us-east-1/{stack}"), "another run", Duration::from_secs(60)).unwrap();
}

#[tokio::test]
async fn sigterm_mid_deploy_ends_the_deploy_cleanly_and_records_it() {
    let name = format!("sd-term-{}", std::process::id());
    let stack = format!("{name}-dev");
    let (repo, run) = repo(&name).await;
    let (_, status, said) = signalled_at_change_set(repo.path(), &run, "-TERM");
    // Stopped before its change set executed (cancelled, exit 1) or, when the signal came once
    // it was executing, watched to its end (deployed, exit 0): never killed half-way.
    let record = infra(repo.path());
    match status.code() {
        Some(1) => {
            assert_eq!(record.status, Status::Cancelled, "{record:?}\n{said}");
            assert!(said.contains("topic: cancelled: "), "{said}");
        }
        Some(0) => assert_eq!(record.status, Status::Passed, "{record:?}\n{said}"),
        other => panic!("exit {other:?}: {said}"),
    }
    assert_eq!(our_available_change_sets(&stack).await, Vec::<String>::new(), "{said}");
    // The lock was given back: another run takes it at once.
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store.acquire_lock(&format!("deploy/us-east-1/{stack}"), "another run", Duration::from_secs(60)).unwrap();
}
