//! `cargo xtask pipeline` end to end on scripted repositories: what a user sees and what the store keeps.

use std::process::{Command, Output};

use run_state::{FileStore, RunDir, Status, Store};
use test_support::GitRepo;

fn pipeline(repo: &GitRepo, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["pipeline", "--repo"])
        .arg(repo.path())
        .args(extra)
        .output()
        .unwrap()
}

const CONFIG: &str = r#"
[runner]
parallelism = 4

[components.ok]
paths = ["ok/**"]
test = { run = "echo fine" }

[components.broken]
paths = ["broken/**"]
test = { run = "echo boom; exit 2" }

[components.missing-tool]
paths = ["tool/**"]
test = { run = "no-such-tool-xyz --check" }

[components.hangs]
paths = ["hangs/**"]
test = { run = "sleep 60 & echo $! > HANGS_PID; wait", timeout = "300ms" }

[components.untouched]
paths = ["untouched/**"]
test = { run = "exit 1" }
"#;

#[test]
fn failures_refuse_the_gate_and_leave_nothing_running() {
    let outside = tempfile::tempdir().unwrap();
    let hangs_pid = outside.path().join("hangs.pid");
    let config = CONFIG.replace("HANGS_PID", &hangs_pid.display().to_string());
    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", &config), (".gitignore", ".pipeline/\n"), ("untouched/a", "1")]);
    repo.commit_files("work", &[("ok/a", "1"), ("broken/a", "1"), ("tool/a", "1"), ("hangs/a", "1")]);
    let out = pipeline(&repo, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("gate: refused"), "{stdout}");
    assert!(stdout.contains("  - broken test failed: exit code 2"), "{stdout}");
    assert!(stdout.contains("  - missing-tool test failed: command not found: `no-such-tool-xyz`"), "{stdout}");
    assert!(stdout.contains("  - hangs test failed: timed out after 300ms"), "{stdout}");

    let state = repo.path().join(".pipeline");
    let run = RunDir::latest(&state).unwrap();
    for file in ["diff.json", "report.md", "report.json", "junit.xml", "logs/broken-test.log"] {
        assert!(run.path.join(file).is_file(), "{file} missing from {}", run.path.display());
    }
    let records = FileStore::open(&state).unwrap().run(&run.run_id).unwrap();
    assert!(records.iter().all(|r| r.status.is_final()), "{records:#?}");
    let status_of =
        |name: &str| records.iter().find(|r| r.component == name && r.step == run_state::Step::Test).map(|r| r.status);
    assert_eq!(status_of("ok"), Some(Status::Passed));
    assert_eq!(status_of("untouched"), Some(Status::Skipped));
    let junit = std::fs::read_to_string(run.path.join("junit.xml")).unwrap();
    assert!(junit.contains(r#"<testsuite name="broken""#), "{junit}");
    // The timed-out job's sleep itself is gone, not only its record.
    let pid = test_support::process::wait_for_file(&hangs_pid);
    test_support::process::assert_ends(&pid, "the timed-out job's sleep");
}

#[test]
fn an_unaffected_change_passes_and_runs_nothing() {
    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", CONFIG), (".gitignore", ".pipeline/\n")]);
    repo.commit_files("docs", &[("docs/readme.md", "hello")]);
    let out = pipeline(&repo, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("gate: passed"), "{stdout}");
    let state = repo.path().join(".pipeline");
    let run = RunDir::latest(&state).unwrap();
    let records = FileStore::open(&state).unwrap().run(&run.run_id).unwrap();
    let tests: Vec<_> = records.iter().filter(|r| r.step == run_state::Step::Test).map(|r| r.status).collect();
    assert_eq!(tests, [Status::Skipped; 5], "no test should have run: {stdout}");
}

#[test]
fn config_mistakes_are_one_line_errors_with_exit_2() {
    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", &format!("{CONFIG}\n[deplyo]\nstage = 1\n"))]);
    let out = pipeline(&repo, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("xtask: ")
            && last.ends_with(
                "pipeline.toml:25: deplyo: unknown section; expected one of: diff, components, runner, gate, lambda, validate, deploy, publish, store, notify, stats"
            ),
        "{stderr}"
    );

    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", CONFIG)]);
    let out = pipeline(&repo, &["--base", "gone-branch"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("base `gone-branch` does not name a commit"), "{stderr}");
    // The failed diff is recorded as failed, not left running.
    let state = repo.path().join(".pipeline");
    let run = RunDir::latest(&state).unwrap();
    let records = FileStore::open(&state).unwrap().run(&run.run_id).unwrap();
    let diff = records.iter().find(|r| r.step == run_state::Step::Diff).unwrap();
    assert_eq!(diff.status, Status::Failed);
    assert!(diff.details.error.as_deref().unwrap().contains("gone-branch"));
}

#[test]
fn a_dry_run_prints_the_plan_and_records_nothing() {
    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", CONFIG), (".gitignore", ".pipeline/\n")]);
    repo.commit_files("work", &[("ok/a", "2"), ("broken/a", "2")]);
    let out = pipeline(&repo, &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("changed: broken, ok"), "{stdout}");
    assert!(stdout.contains("run  broken test: echo boom; exit 2"), "{stdout}");
    assert!(stdout.contains("skip untouched test: unchanged since the base"), "{stdout}");
    assert!(!repo.path().join(".pipeline/runs").exists(), "a dry run must not record a run");
}

/// A run's records, latest state of each step.
fn records(repo: &std::path::Path, run_id: &str) -> Vec<run_state::StepRecord> {
    FileStore::open(&repo.join(".pipeline")).unwrap().run(run_id).unwrap()
}

fn status(records: &[run_state::StepRecord], component: &str, step: run_state::Step) -> Option<Status> {
    records.iter().find(|r| r.component == component && r.step == step).map(|r| r.status)
}

fn latest(repo: &GitRepo) -> RunDir {
    RunDir::latest(&repo.path().join(".pipeline")).unwrap()
}

fn environments(run: &RunDir) -> Vec<String> {
    match run_state::StackOutputs::read(run) {
        Ok(outputs) => outputs.environments.keys().cloned().collect(),
        Err(_) => Vec::new(),
    }
}

fn text(out: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The sample monorepo through a scripted history, against the emulator (the test's own moto,
/// passed with --endpoint-url, so the runs share it as the embedded default's runs share the
/// monorepo's): a first run waits for approval and its resumption reaches production without
/// redoing a stage; a run with no change skips every stage; a frontend-only change tests and
/// publishes only the frontend (and the Lambda that ships it), and a refused approval keeps
/// it from production; a failing Lambda test stops that Lambda's deploy but not the site's, and
/// production is then refused.
#[test]
fn the_sample_through_a_scripted_history() {
    use run_state::{PIPELINE, Step};
    let moto = test_support::Moto::shared();
    let repo = test_support::sample_monorepo();
    let at = ["--endpoint-url", moto.endpoint.as_str()];

    // 1. First run, no terminal and no --approve: it stops at approval, with nothing in prod.
    let out = pipeline(&repo, &at);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let first = latest(&repo);
    let before = records(repo.path(), &first.run_id);
    assert_eq!(status(&before, PIPELINE, Step::Approval), Some(Status::Pending), "{}", text(&out));
    assert_eq!(status(&before, "infra", Step::Deploy), Some(Status::Passed), "{}", text(&out));
    assert_eq!(status(&before, "frontend", Step::Deploy), Some(Status::Passed), "{}", text(&out));
    assert_eq!(status(&before, PIPELINE, Step::ProdDeploy), None);
    assert_eq!(environments(&first), ["dev"]);
    assert!(text(&out).contains(&format!("--resume {} --approve", first.run_id)), "{}", text(&out));

    // 2. Resumed with --approve: the same run goes on from approval to production.
    let out = pipeline(&repo, &[&at[..], &["--resume", &first.run_id, "--approve", "--approver", "ci-bot"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(latest(&repo).run_id, first.run_id, "a resumed run is the same run");
    let after = records(repo.path(), &first.run_id);
    let approval = after.iter().find(|r| r.step == Step::Approval).unwrap();
    assert_eq!(approval.status, Status::Passed);
    assert_eq!(approval.details.by.as_deref().map(String::as_str), Some("ci-bot"), "{approval:?}");
    assert!(approval.ended_at.is_some(), "when it was approved is recorded");
    for step in [Step::Test, Step::Build, Step::Validate] {
        let was: Vec<_> = before.iter().filter(|r| r.step == step).collect();
        let is: Vec<_> = after.iter().filter(|r| r.step == step).collect();
        assert_eq!(was, is, "{step} was not run again");
    }
    assert_eq!(status(&after, "api-handler", Step::E2e), Some(Status::Passed), "{}", text(&out));
    assert_eq!(status(&after, "frontend", Step::Dast), Some(Status::Passed), "{}", text(&out));
    assert_eq!(status(&after, "infra", Step::ProdDeploy), Some(Status::Passed), "{}", text(&out));
    assert_eq!(environments(&first), ["dev", "prod"]);
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let in_prod = repo.head();
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, in_prod);

    // 3. No change since production: every stage skipped, nothing deployed.
    let out = pipeline(&repo, &[&at[..], &["--approve"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let idle = latest(&repo);
    let done = records(repo.path(), &idle.run_id);
    let ran: Vec<_> = done
        .iter()
        .filter(|r| !matches!(r.step, Step::Source | Step::Diff) && r.status != Status::Skipped)
        .filter(|r| {
            !(r.step == Step::Validate && r.details.note.as_deref().is_some_and(|n| n.starts_with("0 template")))
        })
        .collect();
    assert!(ran.is_empty(), "nothing should run: {ran:#?}");
    assert_eq!(status(&done, PIPELINE, Step::ProdDeploy), Some(Status::Skipped));
    assert!(environments(&idle).is_empty(), "nothing deployed");

    // 4. A frontend-only change, refused at approval: only the frontend (and frontend-builder,
    //    which ships it) is tested, the site is published to dev, nothing reaches prod.
    let styles = std::fs::read_to_string(repo.path().join("frontend/src/styles.css")).unwrap();
    repo.write("frontend/src/styles.css", &format!("{styles}\n/* scripted change */\n"));
    repo.commit_all("frontend: style");
    let out = pipeline(&repo, &[&at[..], &["--refuse", "--approver", "reviewer"]].concat());
    assert_eq!(out.status.code(), Some(1), "a refused approval ends the run refused: {}", text(&out));
    let front = latest(&repo);
    let done = records(repo.path(), &front.run_id);
    assert_eq!(status(&done, "frontend", Step::Test), Some(Status::Passed));
    for lambda in ["api-handler", "orchestration", "execution-finder", "execution-poller"] {
        assert_eq!(status(&done, lambda, Step::Test), Some(Status::Skipped), "{lambda}: {}", text(&out));
    }
    assert_eq!(status(&done, "frontend", Step::Deploy), Some(Status::Passed), "{}", text(&out));
    let approval = done.iter().find(|r| r.step == Step::Approval).unwrap();
    assert_eq!(approval.status, Status::Failed);
    assert!(approval.details.error.as_deref().unwrap().contains("refused by reviewer"), "{approval:?}");
    assert_eq!(status(&done, PIPELINE, Step::ProdDeploy), Some(Status::Skipped));
    assert_eq!(environments(&front), ["dev"], "nothing reached prod");
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, in_prod, "the base stays where prod is");

    // 4b. A run waiting for approval whose dev deploy then fails (a stage binary run again for
    //     it): approving it does not reach prod, and the refusal is recorded with the reason.
    let out = pipeline(&repo, &at);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let waiting = latest(&repo);
    assert_eq!(status(&records(repo.path(), &waiting.run_id), PIPELINE, Step::Approval), Some(Status::Pending));
    let mut late = run_state::StepRecord::new(&waiting.run_id, &repo.head(), "infra", Step::Deploy, Status::Failed);
    late.details.error = Some("stack master (pipeline-dashboard-dev): rolled back".into());
    store.record(&late).unwrap();
    let out = pipeline(&repo, &[&at[..], &["--resume", &waiting.run_id, "--approve"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let prod = records(repo.path(), &waiting.run_id).into_iter().find(|r| r.step == Step::ProdDeploy).unwrap();
    assert_eq!(prod.status, Status::Failed, "{}", text(&out));
    let reason = prod.details.error.unwrap();
    assert!(reason.starts_with("production refused: infra deploy failed: stack master"), "{reason}");
    assert_eq!(environments(&waiting), ["dev"], "nothing reached prod");

    // 5. A failing Lambda test: that Lambda's stacks do not deploy, the site does; the status
    //    check refuses, so production is refused, and cannot be forced by resuming.
    let test_file = std::fs::read_to_string(repo.path().join("tests/test_api_handler.py")).unwrap();
    repo.write(
        "tests/test_api_handler.py",
        &format!("{test_file}\n\ndef test_scripted_failure():\n    assert False\n"),
    );
    repo.commit_all("api-handler: a failing test");
    let first_try = pipeline(&repo, &[&at[..], &["--approve"]].concat());
    let out = &first_try;
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let broken = latest(&repo);
    let done = records(repo.path(), &broken.run_id);
    assert_eq!(status(&done, "api-handler", Step::Test), Some(Status::Failed));
    assert!(String::from_utf8_lossy(&out.stdout).contains("api-handler test failed"), "{}", text(out));
    assert_eq!(status(&done, "frontend", Step::Deploy), Some(Status::Passed), "the site still deploys: {}", text(out));
    assert_eq!(status(&done, PIPELINE, Step::ProdDeploy), Some(Status::Skipped));
    let out = pipeline(&repo, &[&at[..], &["--resume", &broken.run_id, "--approve"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is not waiting for approval"), "{}", text(&out));
    assert_eq!(environments(&broken), ["dev"], "nothing reached prod");
    // Per-component gating inside the deploy stage (status_report::decide_deploy): the failing
    // Lambda's code is not updated (recorded skipped, with why). The stack itself (infra, whose
    // own checks passed) still deploys here because the frontend changed too and the builder
    // Lambda it serves passed; see README "What is deployed".
    let api = done.iter().find(|r| r.component == "api-handler" && r.step == Step::Deploy);
    assert_eq!(api.map(|r| r.status), Some(Status::Skipped), "{}", text(&first_try));
    assert!(
        api.and_then(|r| r.details.note.as_deref()).is_some_and(|n| n.contains("its test failed")),
        "the failing Lambda's code must not be updated: {}",
        text(&first_try)
    );
}

#[test]
fn a_second_pipeline_on_the_same_repository_is_refused_before_it_begins() {
    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", CONFIG), (".gitignore", ".pipeline/\n")]);
    repo.commit_files("docs", &[("ok/a", "2")]);
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store.acquire_lock("pipeline", "run other (pid 1)", std::time::Duration::from_secs(600)).unwrap();
    let out = pipeline(&repo, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another pipeline is running on this repository"), "{stderr}");
    assert!(stderr.contains("run other (pid 1)"), "{stderr}");
    // Refused before anything began: no run was made, nothing half-written.
    assert!(store.run_ids().unwrap().is_empty(), "{:?}", store.run_ids());
    // Once the other run ends, the next run goes ahead.
    store.release_lock("pipeline", "run other (pid 1)").unwrap();
    let out = pipeline(&repo, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The status store on DynamoDB (`--store dynamodb://TABLE`) in the emulator: the pipeline makes
/// the table as `cfn/pipeline.yaml` does, every step lands there (read back through the
/// `status-report` binary, as another CodeBuild action would) and none in the file store; the
/// run's outcome reaches the emulator's SNS topic.
#[test]
fn the_pipeline_records_to_a_dynamodb_status_table_and_notifies_the_topic() {
    let moto = test_support::Moto::shared();
    let repo = GitRepo::new();
    repo.write("pipeline.toml", "[components.ok]\npaths = [\"ok/**\"]\ntest = { run = \"echo fine\" }\n");
    repo.write("ok/a.txt", "1");
    repo.commit_all("first");
    repo.write("ok/a.txt", "2");
    repo.commit_all("change");
    let table = "xtask-pipeline-status";
    // Subscribed before the run: the embedded run's notifications go to the emulator's topic.
    let (url, received) = test_support::http_sink();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
        let topic = sns.create_topic().name("pipeline-notifications").send().await.unwrap();
        sns.subscribe().topic_arn(topic.topic_arn().unwrap()).protocol("http").endpoint(&url).send().await.unwrap();
    });
    let out = pipeline(&repo, &["--endpoint-url", &moto.endpoint, "--store", &format!("dynamodb://{table}")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!repo.path().join(".pipeline").join(FileStore::FILE_NAME).exists(), "nothing in the file store");

    let runs = Command::new(std::path::Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("status-report"))
        .args(["--repo"])
        .arg(repo.path())
        .args(["--store", &format!("dynamodb://{table}"), "--endpoint-url", &moto.endpoint, "--region", "us-east-1"])
        .args(["show", "--format", "json"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(runs.status.code(), Some(0), "{}", text(&runs));
    let shown = String::from_utf8_lossy(&runs.stdout);
    assert!(shown.contains("\"ok\"") && shown.contains("\"test\"") && shown.contains("\"passed\""), "{shown}");

    // The run's success reached the topic with its report.
    let notification = loop {
        let body = received.recv_timeout(std::time::Duration::from_secs(10)).expect("no SNS notification arrived");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        if json["Type"] == "Notification" {
            break json;
        }
    };
    assert!(notification["Subject"].as_str().unwrap().starts_with("Pipeline succeeded: run "), "{notification}");
    assert!(notification["Message"].as_str().unwrap().contains("ok"), "{notification}");
}

/// The approval covers what it was asked for: a run waiting for approval records what
/// production will receive (stacks, packages, the site), and a site rebuilt before the resumed
/// approval is refused in production, naming the site; nothing is published to prod.
#[test]
fn a_site_changed_while_waiting_for_approval_is_refused_in_production() {
    use run_state::Step;
    // Its own emulator: the sample's stack and bucket names would collide with another
    // sample test running at the same time in the shared one.
    let moto = test_support::Moto::start();
    let repo = test_support::sample_monorepo();
    let at = ["--endpoint-url", moto.endpoint.as_str()];
    let out = pipeline(&repo, &at);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let waiting = latest(&repo);
    let requested = records(repo.path(), &waiting.run_id).into_iter().find(|r| r.step == Step::Approval).unwrap();
    let digest = requested.details.digest.expect("the request names what prod will receive");
    for part in ["stack:master", "code:api-handler", "site:frontend"] {
        assert!(digest.parts.contains_key(part), "{part}: {digest:?}");
    }
    // The built site changes (a rebuild with other content) before anyone approves.
    let index = repo.path().join("frontend/dist/index.html");
    let html = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, html.replace("</body>", "<p>changed after the request</p></body>")).unwrap();
    let out = pipeline(&repo, &[&at[..], &["--resume", &waiting.run_id, "--approve", "--approver", "ci-bot"]].concat());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let done = records(repo.path(), &waiting.run_id);
    let site = done.iter().find(|r| r.component == "frontend" && r.step == Step::ProdDeploy).expect("recorded");
    assert_eq!(site.status, Status::Failed, "{}", text(&out));
    let why = site.details.error.as_deref().unwrap_or_default();
    assert!(why.contains("site:frontend changed since the approval"), "{why}");
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    assert!(store.last_success("prod").unwrap().is_none(), "nothing marked: {}", text(&out));
}

/// No environment name is special: the sample with `staging` in place of `dev` (prod after
/// staging) deploys staging, is approved and reaches prod, and the base moves for prod.
#[test]
fn a_staging_then_prod_config_runs_the_whole_pipeline() {
    use run_state::Step;
    // Its own emulator: the sample's stack and bucket names would collide with another
    // sample test running at the same time in the shared one.
    let moto = test_support::Moto::start();
    let repo = test_support::sample_monorepo();
    let config = std::fs::read_to_string(repo.path().join("pipeline.toml")).unwrap();
    let config = config
        .replace("[deploy.environments.dev]", "[deploy.environments.staging]")
        .replace("after = \"dev\"", "after = \"staging\"");
    assert!(!config.contains("environments.dev"), "{config}");
    repo.write("pipeline.toml", &config);
    repo.commit_all("staging before prod");
    let out = pipeline(&repo, &["--endpoint-url", moto.endpoint.as_str(), "--approve", "--approver", "ci-bot"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let run = latest(&repo);
    let done = records(repo.path(), &run.run_id);
    assert_eq!(status(&done, "infra", Step::Deploy), Some(Status::Passed), "{}", text(&out));
    assert_eq!(status(&done, "infra", Step::ProdDeploy), Some(Status::Passed), "{}", text(&out));
    assert_eq!(environments(&run), ["prod", "staging"]);
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, repo.head());
}

/// Two pipelines racing on one repository through the DynamoDB store (two clones, two
/// processes, one table in the emulator, as two CodeBuild executions would): while the first
/// holds the repository's lock, the second is refused at once, exit 2, naming the holder, and
/// its refusal is recorded; the first finishes with every record of its run, none lost or
/// overwritten by the second.
#[test]
fn two_pipelines_racing_on_one_dynamodb_store_run_one_at_a_time() {
    use std::io::BufRead;
    let moto = test_support::Moto::shared();
    let repo = GitRepo::new();
    // The test holds the lock long enough for the second pipeline to try.
    repo.write("pipeline.toml", "[components.slow]\npaths = [\"slow/**\"]\ntest = { run = \"sleep 4; echo done\" }\n");
    repo.write("slow/a.txt", "1");
    repo.commit_all("first");
    repo.write("slow/a.txt", "2");
    repo.commit_all("change");
    let table = "xtask-pipeline-race";
    let clone = |name: &str| {
        let dir = repo.path().parent().unwrap().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cloned = Command::new("git").args(["clone", "-q"]).arg(repo.path()).arg(&dir).status().unwrap();
        assert!(cloned.success());
        dir
    };
    let (one, two) = (clone("race-one"), clone("race-two"));
    let start = |dir: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["pipeline", "--repo"])
            .arg(dir)
            .args(["--endpoint-url", &moto.endpoint, "--store", &format!("dynamodb://{table}"), "--approve"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = start(&one);
    // Until the first is running its test (and so holds the lock).
    let mut first_err = std::io::BufReader::new(first.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(first_err.read_line(&mut line).unwrap() > 0, "the first pipeline ended early: {seen}");
        seen.push_str(&line);
        if line.contains("started slow test") {
            break;
        }
    }
    let second = start(&two).wait_with_output().unwrap();
    let said = text(&second);
    assert_eq!(second.status.code(), Some(2), "{said}");
    assert!(said.contains("another pipeline is running on this repository"), "{said}");
    let holder = format!("`cargo xtask pipeline` in {} (pid {})", one.canonicalize().unwrap().display(), first.id());
    assert!(said.contains(&holder), "the holder is named: {said}");
    assert!(!said.contains("pipeline: run "), "the refused pipeline began no run: {said}");
    let first_run =
        seen.lines().find_map(|l| l.split("pipeline: run ").nth(1)).and_then(|r| r.split(' ').next()).unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut first_err, &mut rest).unwrap();
    assert!(first.wait().unwrap().success(), "{seen}{rest}");
    let show = |run: Option<&str>| {
        let mut command =
            Command::new(std::path::Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("status-report"));
        command.arg("--repo").arg(&one);
        command.args([
            "--store",
            &format!("dynamodb://{table}"),
            "--endpoint-url",
            &moto.endpoint,
            "--region",
            "us-east-1",
        ]);
        command.args(["show", "--format", "json"]).args(run.map(|r| vec!["--run", r]).unwrap_or_default());
        let out = command.env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", "testing").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = show(Some(first_run));
    let steps = report["steps"].as_array().unwrap();
    let test = steps.iter().find(|s| s["component"] == "slow" && s["step"] == "test").expect("the first's test record");
    assert_eq!(test["status"], "passed", "{report}");
    assert!(steps.iter().all(|s| s["status"] != "running"), "nothing left running: {report}");
    // Only the first run exists in the shared store.
    let runs = report_runs(&one, table, &moto.endpoint);
    assert_eq!(runs, [first_run.to_string()], "one run, the first's");
}

/// The run ids a DynamoDB store holds, through `status-report runs` (a line per run: its id,
/// then its verdict).
fn report_runs(repo: &std::path::Path, table: &str, endpoint: &str) -> Vec<String> {
    let out = Command::new(std::path::Path::new(env!("CARGO_BIN_EXE_xtask")).with_file_name("status-report"))
        .arg("--repo")
        .arg(repo)
        .args(["--store", &format!("dynamodb://{table}"), "--endpoint-url", endpoint, "--region", "us-east-1"])
        .arg("runs")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    listed.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}
