//! The `stack-deployer` binary as a pipeline runs it: the dry run of the sample, a deploy to the
//! emulator that records its step and writes the outputs file, an unchanged redeploy,
//! `--no-execute`, and bad input refused with exit code 2 and a failed record.

use std::path::Path;
use std::process::{Command, Output};

use run_state::{RunDir, Status, Step, Store};

mod support;
use support::{deployer, text};

const BIN: &str = env!("CARGO_BIN_EXE_stack-deployer");

fn diff_json(head: &str, changed: &[&str]) -> String {
    let components: Vec<String> = ["infra", "web"]
        .iter()
        .map(|c| format!("\"{c}\": {{\"changed\": {}, \"files\": [], \"because_of\": []}}", changed.contains(c)))
        .collect();
    format!(
        "{{\"base\": null, \"base_reason\": \"test\", \"head\": \"{head}\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {{{}}}, \"flags\": {{}}}}",
        components.join(", ")
    )
}

fn stage(repo: &Path, changed: &[&str]) -> RunDir {
    let run = RunDir::create(&repo.join(".pipeline"), "run-1").unwrap();
    run.write(run_state::RunFile::Diff, diff_json("abc", changed).as_bytes()).unwrap();
    run
}

#[test]
fn the_dry_run_of_the_sample_prints_the_plan_and_changes_nothing() {
    let repo = test_support::sample_monorepo();
    let run = stage(repo.path(), &["infra"]);
    let out = deployer(repo.path(), &run, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("deploy decision for `dev` (recorded as deploy):\n  infra: deploy\n"), "{stdout}");
    assert!(
        stdout.contains(
            "\ndeploy `dev` to us-east-1; artifacts in s3://pipeline-dashboard-artifacts-dev/pipeline-dashboard"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("master -> pipeline-dashboard-dev (template cfn/master.yaml"), "{stdout}");
    assert!(stdout.contains("cfn/lambdas.yaml -> pipeline-dashboard/templates/lambdas-"), "{stdout}");
    assert!(!run.file(run_state::RunFile::StackOutputs).exists());
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    assert!(store.run("run-1").unwrap().is_empty(), "a dry run records nothing");
}

/// A repository with two stacks of one template: `topic` (component `infra`, its label from
/// `TOPIC_LABEL`) and `site` (`web`), and run `run-1` where `infra` changed and validate passed.
fn two_stacks(name: &str) -> (tempfile::TempDir, RunDir) {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(
        repo.path().join("cfn/topic.yaml"),
        "Parameters:\n  Label:\n    Type: String\nResources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      DisplayName: !Ref Label\n",
    )
    .unwrap();
    let toml = format!(
        "[deploy]\nartifact_bucket = \"{name}-artifacts\"\n\n[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{name}-{{env}}\"\nparameters = {{ Label = {{ env = \"TOPIC_LABEL\" }} }}\ncomponents = [\"infra\"]\n\n[deploy.stacks.site]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{name}-site-{{env}}\"\nparameters = {{ Label = \"site\" }}\ncomponents = [\"web\"]\n"
    );
    std::fs::write(repo.path().join("pipeline.toml"), toml).unwrap();
    let run = stage(repo.path(), &["infra"]);
    // The default [gate] requires validate before any deploy; this run passed it.
    run_state::FileStore::open(&repo.path().join(".pipeline"))
        .unwrap()
        .record(&run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed))
        .unwrap();
    (repo, run)
}

#[tokio::test]
async fn a_deploy_records_its_step_writes_the_outputs_and_is_unchanged_the_second_time() {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    let s3 = aws_target::s3(&config, None);
    let name = format!("sd-cli-{}", std::process::id());
    s3.create_bucket().bucket(format!("{name}-artifacts")).send().await.unwrap();
    let (repo, run) = two_stacks(&name);
    // The parameter's environment variable is missing: refused before anything changes.
    let out = deployer(repo.path(), &run, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim(),
        "stack-deployer: deploy.stacks.topic.parameters.Label: the environment variable `TOPIC_LABEL` is not set; export it"
    );
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let records = store.run("run-1").unwrap();
    assert!(records.iter().any(|r| r.component == "infra" && r.status == Status::Failed && r.step == Step::Deploy));

    let command = |args: &[&str], label: &str| {
        let moto = test_support::Moto::shared();
        Command::new(BIN)
            .arg("--repo")
            .arg(repo.path())
            .arg("--run-dir")
            .arg(&run.path)
            .args(["--env", "dev", "--endpoint-url", &moto.endpoint, "--region", "us-east-1"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("TOPIC_LABEL", label)
            .output()
            .unwrap()
    };
    let out = command(&[], "secret-label-value");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("topic ({name}-dev): deployed (change set stack-deployer-run-1-")), "{stdout}");
    assert!(
        stdout.contains(&format!("site ({name}-site-dev): skipped: none of its components changed (web)")),
        "{stdout}"
    );
    assert!(!text(&out.stderr).contains("secret-label-value") && !stdout.contains("secret-label-value"));
    let records = store.run("run-1").unwrap();
    let infra = records.iter().find(|r| r.component == "infra").unwrap();
    assert_eq!(infra.status, Status::Passed);
    assert!(infra.details.note.as_deref().unwrap().contains("deployed (change set stack-deployer-run-1-"));
    let web = records.iter().find(|r| r.component == "web").unwrap();
    assert_eq!(web.status, Status::Skipped);
    let outputs = run_state::StackOutputs::read(&run).unwrap();
    assert_eq!(outputs.environments["dev"]["topic"].stack_name, format!("{name}-dev"));
    assert!(outputs.environments["dev"]["topic"].stack_id.as_deref().unwrap().starts_with("arn:aws:cloudformation:"));

    let out = command(&["--json"], "secret-label-value");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["stacks"][0]["outcome"]["outcome"], "unchanged", "{report}");

    // A new value with --no-execute: previewed, the change set named and left, the stack as it was.
    let out = command(&["--no-execute"], "another-label");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("created and left for review (--no-execute)"), "{stdout}");
    // The preview is printed (moto lists no resource changes for a parameter change; the
    // recorded tests check the lines).
    assert!(text(&out.stderr).contains("topic: change set stack-deployer-run-1-"), "{}", text(&out.stderr));
    let cf = aws_target::cloudformation(&config, None);
    let stack = cf.describe_stacks().stack_name(format!("{name}-dev")).send().await.unwrap();
    assert_eq!(stack.stacks()[0].parameters()[0].parameter_value(), Some("secret-label-value"));
    // A preview is no deploy: the passed deploy stays the step's state, the preview noted beside it.
    let infra = store.run("run-1").unwrap().into_iter().find(|r| r.component == "infra").unwrap();
    assert_eq!(infra.status, Status::Passed);
    let note = infra.details.note.unwrap();
    assert!(note.contains(" | later skipped: preview only (--no-execute), nothing deployed: stack topic"), "{note}");
}

/// A repository with one stack of component `infra`, a prod that is promoted after dev with
/// approval, and a run whose diff marks `infra` changed.
fn promoted_repo(name: &str) -> (tempfile::TempDir, RunDir) {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(repo.path().join("cfn/topic.yaml"), "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n").unwrap();
    let toml = format!(
        "[gate]\nrequired_steps = [\"validate\", \"test\"]\n[gate.environments.prod]\nafter = \"dev\"\napproval = true\n\n[deploy]\nartifact_bucket = \"{name}-artifacts\"\n[deploy.stacks.topic]\ntemplate = \"cfn/topic.yaml\"\nstack_name = \"{name}-{{env}}\"\ncomponents = [\"infra\"]\n[deploy.environments.dev]\n[deploy.environments.prod]\n"
    );
    std::fs::write(repo.path().join("pipeline.toml"), toml).unwrap();
    let run = stage(repo.path(), &["infra"]);
    (repo, run)
}

/// [`in_env`] off the test's runtime (the binary blocks).
async fn in_env_later(repo: &Path, run: &RunDir, env: &'static str) -> Output {
    let (repo, run) = (repo.to_path_buf(), run.clone());
    tokio::task::spawn_blocking(move || in_env(&repo, &run, env)).await.unwrap()
}

/// `--env dev --no-execute` off the test's runtime.
async fn preview_later(repo: &Path, run: &RunDir) -> Output {
    let (repo, run) = (repo.to_path_buf(), run.clone());
    tokio::task::spawn_blocking(move || deployer(&repo, &run, &["--no-execute"])).await.unwrap()
}

fn in_env(repo: &Path, run: &RunDir, env: &str) -> Output {
    let moto = test_support::Moto::shared();
    Command::new(BIN)
        .arg("--repo")
        .arg(repo)
        .arg("--run-dir")
        .arg(&run.path)
        .args(["--env", env, "--endpoint-url", &moto.endpoint, "--region", "us-east-1"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_prod_deploy_asked_for_while_dev_failed_is_refused_recorded_and_changes_nothing() {
    let name = format!("sd-prod-{}", std::process::id());
    let (repo, run) = promoted_repo(&name);
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let rec = |component: &str, step: Step, status: Status| {
        store.record(&run_state::StepRecord::new("run-1", "abc", component, step, status)).unwrap()
    };
    rec(run_state::PIPELINE, Step::Validate, Status::Passed);
    let mut failed = run_state::StepRecord::new("run-1", "abc", "infra", Step::Deploy, Status::Failed);
    failed.details.error = Some("stack topic: failed".into());
    store.record(&failed).unwrap();
    gate::approval::approve(&store, "run-1", "alice", None).unwrap();

    let out = in_env(repo.path(), &run, "prod");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "stack-deployer: deploying `prod` is refused: before promotion: infra deploy failed: stack topic: failed; "
        ),
        "{stderr}"
    );
    // The run's diff says it was begun with --include-worktree: never promoted either.
    assert!(
        stderr.contains("the run was begun with --include-worktree, so what `dev` received is no commit"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let records = store.run("run-1").unwrap();
    let prod = records.iter().find(|r| r.step == Step::ProdDeploy && r.component == "infra").expect("prod recorded");
    assert_eq!(prod.status, Status::Failed);
    assert!(prod.details.error.as_deref().unwrap().contains("before promotion: infra deploy failed"));
    // The dev record is still the dev record.
    assert_eq!(records.iter().find(|r| r.step == Step::Deploy).unwrap().status, Status::Failed);
    let moto = test_support::Moto::shared();
    let cf = aws_target::cloudformation(&moto.sdk_config().await, None);
    assert!(cf.describe_stacks().stack_name(format!("{name}-prod")).send().await.is_err(), "no prod stack");
    // The dry run says the same and exits 1 too.
    let moto_args = ["--endpoint-url", moto.endpoint.as_str()];
    let dry = Command::new(BIN)
        .arg("--repo")
        .arg(repo.path())
        .args(["--env", "prod", "--dry-run"])
        .args(moto_args)
        .output()
        .unwrap();
    assert_eq!(dry.status.code(), Some(1), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).contains("refused: before promotion: infra deploy failed"), "{}", text(&dry.stdout));
}

#[test]
fn a_deploy_run_before_the_stages_it_needs_names_them_and_records_the_failure() {
    // No diff.json: source-diff first.
    let name = format!("sd-order-{}", std::process::id());
    let (repo, run) = promoted_repo(&name);
    std::fs::remove_file(run.file(run_state::RunFile::Diff)).unwrap();
    let out = in_env(repo.path(), &run, "dev");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("diff.json is missing; run `source-diff --new-run` for this run first"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let records = store.run("run-1").unwrap();
    assert!(records.iter().any(|r| r.component == "infra" && r.step == Step::Deploy && r.status == Status::Failed));

    // The sample with a changed function and no packages: lambda-packager first.
    let sample = test_support::sample_monorepo();
    let run = RunDir::create(&sample.path().join(".pipeline"), "run-1").unwrap();
    let diff = diff_json("abc", &["infra", "web"]).replace("\"web\"", "\"api-handler\"");
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let store = run_state::FileStore::open(&sample.path().join(".pipeline")).unwrap();
    store
        .record(&run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed))
        .unwrap();
    let out = deployer(sample.path(), &run, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("packages/manifest.json is missing; run `lambda-packager` for this run first"), "{stderr}");
    let records = store.run("run-1").unwrap();
    assert!(records.iter().any(|r| r.component == "infra" && r.step == Step::Deploy && r.status == Status::Failed));
}

/// `promoted_repo` with a run begun from a commit (not `--include-worktree`) and its artifact
/// bucket, validate passed.
async fn committed_promoted_repo(name: &str) -> (tempfile::TempDir, RunDir, run_state::FileStore) {
    let moto = test_support::Moto::shared();
    let s3 = aws_target::s3(&moto.sdk_config().await, None);
    s3.create_bucket().bucket(format!("{name}-artifacts")).send().await.unwrap();
    let (repo, run) = promoted_repo(name);
    let diff = diff_json("abc", &["infra"]).replace("\"worktree\": true", "\"worktree\": false");
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store
        .record(&run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed))
        .unwrap();
    (repo, run, store)
}

#[tokio::test]
async fn a_preview_in_dev_is_no_deploy_and_production_stays_refused_after_an_approval() {
    let name = format!("sd-preview-{}", std::process::id());
    let (repo, run, store) = committed_promoted_repo(&name).await;
    let preview = preview_later(repo.path(), &run).await;
    assert_eq!(preview.status.code(), Some(0), "{}", text(&preview.stderr));
    let infra = store.run("run-1").unwrap().into_iter().find(|r| r.component == "infra").unwrap();
    assert_eq!((infra.step, infra.status), (Step::Deploy, Status::Skipped));
    assert!(infra.details.note.as_deref().unwrap().starts_with("preview only (--no-execute), nothing deployed"));
    gate::approval::approve(&store, "run-1", "alice", None).unwrap();

    let out = in_env_later(repo.path(), &run, "prod").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim(),
        "stack-deployer: deploying `prod` is refused: no `dev` deploy passed in this run (a preview is no deploy); deploy to `dev` first"
    );
    let prod = store.run("run-1").unwrap().into_iter().find(|r| r.step == Step::ProdDeploy).expect("prod recorded");
    assert_eq!((prod.component.as_str(), prod.status), ("infra", Status::Failed));
    let cf = aws_target::cloudformation(&test_support::Moto::shared().sdk_config().await, None);
    assert!(cf.describe_stacks().stack_name(format!("{name}-prod")).send().await.is_err(), "no prod stack");
}

#[tokio::test]
async fn a_failed_dev_deploy_then_a_preview_stays_failed_and_production_refused() {
    let name = format!("sd-failed-preview-{}", std::process::id());
    let (repo, run, store) = committed_promoted_repo(&name).await;
    let mut failed = run_state::StepRecord::new("run-1", "abc", "infra", Step::Deploy, Status::Failed);
    failed.details.error = Some("stack topic: rolled back".into());
    store.record(&failed).unwrap();
    let preview = preview_later(repo.path(), &run).await;
    assert_eq!(preview.status.code(), Some(0), "{}", text(&preview.stderr));
    let infra = store.run("run-1").unwrap().into_iter().find(|r| r.component == "infra").unwrap();
    assert_eq!(infra.status, Status::Failed, "the preview replaced the failure: {infra:?}");
    assert_eq!(infra.details.error.as_deref(), Some("stack topic: rolled back"));
    gate::approval::approve(&store, "run-1", "alice", None).unwrap();

    let out = in_env_later(repo.path(), &run, "prod").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "stack-deployer: deploying `prod` is refused: before promotion: infra deploy failed: stack topic: rolled back"
        ),
        "{stderr}"
    );
    let cf = aws_target::cloudformation(&test_support::Moto::shared().sdk_config().await, None);
    assert!(cf.describe_stacks().stack_name(format!("{name}-prod")).send().await.is_err(), "no prod stack");
}

/// An approval covers what the approver was shown: `--request-approval` records what prod
/// will receive before the approval, the prod deploy recomputes each stack's part of the digest
/// and refuses a template edited since, naming the stack; nothing reaches prod. The same
/// approval over the template as it was deploys.
#[tokio::test]
async fn a_template_edited_after_the_approval_refuses_production_naming_the_stack() {
    let name = format!("sd-digest-{}", std::process::id());
    let (repo, run, store) = committed_promoted_repo(&name).await;
    let dev = in_env_later(repo.path(), &run, "dev").await;
    assert_eq!(dev.status.code(), Some(0), "{}", text(&dev.stderr));
    // What prod will receive, recorded with the approval request as CodeBuild's Status stage
    // does before the manual approval; the approval then given (as `approve --codepipeline`
    // records it) covers exactly that.
    let requested = tokio::task::spawn_blocking({
        let (repo, run) = (repo.path().to_path_buf(), run.clone());
        move || {
            let moto = test_support::Moto::shared();
            Command::new(BIN)
                .arg("--repo")
                .arg(&repo)
                .arg("--run-dir")
                .arg(&run.path)
                .args(["--env", "prod", "--request-approval", "--endpoint-url", &moto.endpoint])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(requested.status.code(), Some(0), "{}", text(&requested.stderr));
    assert!(text(&requested.stdout).contains("waiting for approval of `prod`, covering 1 part(s)"));
    let records = store.run("run-1").unwrap();
    let waiting = records.iter().find(|r| r.step == Step::Approval).unwrap();
    assert_eq!(waiting.status, Status::Pending);
    assert!(waiting.details.digest.as_ref().is_some_and(|d| d.parts.contains_key("stack:topic")), "{waiting:?}");
    gate::approval::approve(&store, "run-1", "alice", None).unwrap();
    // Then the template changes under the approval.
    std::fs::write(
        repo.path().join("cfn/topic.yaml"),
        "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n  Extra:\n    Type: AWS::SNS::Topic\n",
    )
    .unwrap();
    let out = in_env_later(repo.path(), &run, "prod").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim(),
        "stack-deployer: deploying `prod` is refused: stack:topic changed since the approval: what was approved is not what would be deployed; approve again"
    );
    let prod = store.run("run-1").unwrap().into_iter().find(|r| r.step == Step::ProdDeploy).expect("prod recorded");
    assert_eq!(prod.status, Status::Failed);
    let cf = aws_target::cloudformation(&test_support::Moto::shared().sdk_config().await, None);
    assert!(cf.describe_stacks().stack_name(format!("{name}-prod")).send().await.is_err(), "no prod stack");

    // Back to what was approved: production deploys.
    std::fs::write(repo.path().join("cfn/topic.yaml"), "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n").unwrap();
    let out = in_env_later(repo.path(), &run, "prod").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(cf.describe_stacks().stack_name(format!("{name}-prod")).send().await.is_ok(), "the prod stack");
}
