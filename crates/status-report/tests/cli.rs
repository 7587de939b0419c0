//! The `status-report` binary, run as CI runs it.

use std::path::Path;
use std::process::{Command, Output};

use run_state::{FileStore, PIPELINE, Status, Step, StepRecord, Store};

/// Runs the binary against the monorepo at `repo`.
fn status_report(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_status-report")).arg("--repo").arg(repo).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Records a step and checks that it worked.
fn record(repo: &Path, run: &str, component: &str, step: &str, status: &str, extra: &[&str]) {
    let mut args = vec!["record", "--run", run, "--commit", "c0ffee1234567890", "--component", component];
    args.extend(["--step", step, "--status", status]);
    args.extend(extra);
    let output = status_report(repo, &args);
    assert_eq!(output.status.code(), Some(0), "record failed: {}", stderr(&output));
}

/// Records a step the binary refuses to record (a deploy, an approval), as its stage would.
fn stage_record(repo: &Path, run: &str, component: &str, step: Step, status: Status) {
    let store = FileStore::open(&repo.join(".pipeline")).unwrap();
    store.record(&StepRecord::new(run, "c0ffee1234567890", component, step, status)).unwrap();
}

fn success_lines(repo: &Path) -> usize {
    let state = std::fs::read_to_string(repo.join(".pipeline/state.jsonl")).unwrap_or_default();
    state.lines().filter(|l| l.contains(r#""kind":"success""#)).count()
}

/// Starts run `run` as `source-diff --new-run` and `validate` would: a `diff.json` whose changed
/// components require the given steps, and a passed validate step.
fn start_run(repo: &Path, state_dir: &Path, run: &str, required: &[(&str, &str)]) {
    let mut components = serde_json::Map::new();
    for (component, step) in required {
        let entry = components
            .entry(component.to_string())
            .or_insert_with(|| serde_json::json!({"changed": true, "steps": [], "files": [], "because_of": []}));
        entry["steps"].as_array_mut().unwrap().push(serde_json::json!(step));
    }
    let diff = serde_json::json!({
        "base": null, "base_reason": "test", "head": "c0ffee1234567890", "worktree": false,
        "files": [], "global_inputs_changed": [], "components": components, "flags": {}
    });
    let folder = state_dir.join("runs").join(run);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("diff.json"), diff.to_string()).unwrap();
    let state = state_dir.to_str().unwrap();
    let output = status_report(
        repo,
        &["--state-dir", state, "record", "--run", run, "--commit", "c0ffee1234567890", "--component", "pipeline"]
            .into_iter()
            .chain(["--step", "validate", "--status", "passed"])
            .collect::<Vec<_>>(),
    );
    assert_eq!(output.status.code(), Some(0), "record failed: {}", stderr(&output));
}

/// Asserts a usage or store error: exit 2 and one line on stderr, `status-report: …`.
fn assert_error(output: &Output) -> String {
    let message = stderr(output);
    assert_eq!(output.status.code(), Some(2), "stderr: {message}");
    assert!(message.starts_with("status-report: "), "{message}");
    assert_eq!(message.lines().count(), 1, "not one line: {message}");
    assert_eq!(stdout(output), "");
    message
}

fn show_json(repo: &Path, args: &[&str]) -> serde_json::Value {
    let output = status_report(repo, &[&["show", "--format", "json"], args].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).unwrap()
}

#[test]
fn record_then_show_json_keeps_the_start_of_a_running_step() {
    let repo = tempfile::tempdir().unwrap();
    start_run(repo.path(), &repo.path().join(".pipeline"), "r1", &[("api", "test")]);
    record(repo.path(), "r1", "api", "test", "running", &[]);
    let running = show_json(repo.path(), &[]);
    let api = |json: &serde_json::Value| {
        json["steps"].as_array().unwrap().iter().find(|s| s["component"] == "api").cloned().unwrap()
    };
    let started = api(&running)["started_at"].as_str().unwrap().to_string();
    assert_eq!(api(&running)["ended_at"], serde_json::Value::Null);

    record(repo.path(), "r1", "api", "test", "passed", &["--note", "42 tests"]);
    let json = show_json(repo.path(), &[]);
    assert_eq!(json["run_id"], "r1");
    assert_eq!(json["commit"], "c0ffee1234567890");
    assert_eq!(json["gate"]["allowed"], true);
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "validate, then api's test: recording again replaces: {json}");
    let api = &steps[1];
    assert_eq!(api["component"], "api");
    assert_eq!(api["step"], "test");
    assert_eq!(api["status"], "passed");
    assert_eq!(api["details"]["note"], "42 tests");
    assert_eq!(api["started_at"], started.as_str(), "the start of the running record is kept");
    // RFC 3339 with the same width sorts by time.
    let ended = api["ended_at"].as_str().unwrap();
    assert!(ended >= started.as_str(), "{ended} before {started}");
    assert!(repo.path().join(".pipeline/state.jsonl").is_file(), "the store lives under REPO/.pipeline");
}

#[test]
fn a_step_recorded_only_once_it_ended_has_no_start_unless_told() {
    let repo = tempfile::tempdir().unwrap();
    record(repo.path(), "r1", "api", "build", "passed", &[]);
    record(repo.path(), "r1", "api", "test", "passed", &["--started"]);
    let json = show_json(repo.path(), &[]);
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps[0]["started_at"], serde_json::Value::Null);
    assert!(steps[0]["ended_at"].is_string());
    assert!(steps[1]["started_at"].is_string() && steps[1]["ended_at"].is_string());
}

#[test]
fn record_log_keeps_a_redacted_tail_and_the_path() {
    let repo = tempfile::tempdir().unwrap();
    let log = repo.path().join("build.log");
    let mut text: String = (1..=100).map(|i| format!("step {i}\n")).collect();
    text.push_str("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\nbuild failed\n");
    std::fs::write(&log, text).unwrap();
    record(repo.path(), "r1", "api", "build", "failed", &["--log", log.to_str().unwrap(), "--error", "exit 1"]);

    let json = show_json(repo.path(), &[]);
    let details = &json["steps"][0]["details"];
    assert_eq!(details["log_path"], log.to_str().unwrap());
    let tail = details["log_tail"].as_str().unwrap();
    assert_eq!(tail.lines().count(), 40, "{tail}");
    assert!(tail.len() <= 4096);
    assert!(tail.starts_with("step 63\n") && tail.ends_with("build failed"), "{tail}");
    assert!(!tail.contains("wJalrXUtnFEMI"), "{tail}");
    let raw = std::fs::read_to_string(repo.path().join(".pipeline/state.jsonl")).unwrap();
    assert!(!raw.contains("wJalrXUtnFEMI"), "{raw}");
}

#[test]
fn a_missing_log_still_records_the_step_with_a_warning() {
    let repo = tempfile::tempdir().unwrap();
    let output = status_report(
        repo.path(),
        &["record", "--run", "r1", "--commit", "abc", "--component", "api", "--step", "build"],
    );
    assert_eq!(output.status.code(), Some(2), "--status is required");
    let output = status_report(
        repo.path(),
        &[
            "record",
            "--run",
            "r1",
            "--commit",
            "abc",
            "--component",
            "api",
            "--step",
            "build",
            "--status",
            "failed",
            "--log",
            "no-such.log",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stderr(&output).contains("no-such.log"), "{}", stderr(&output));
    let json = show_json(repo.path(), &[]);
    assert_eq!(json["steps"][0]["status"], "failed");
    assert_eq!(json["steps"][0]["details"]["log_path"], "no-such.log");
}

#[test]
fn gate_exits_0_when_passed_and_1_when_refused() {
    let repo = tempfile::tempdir().unwrap();
    let state = repo.path().join(".pipeline");
    start_run(repo.path(), &state, "r1", &[("api", "test")]);
    record(repo.path(), "r1", "api", "test", "passed", &[]);
    let output = status_report(repo.path(), &["gate"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "gate: passed (run r1)\n");

    record(repo.path(), "r1", "web", "test", "failed", &["--error", "2 tests failed"]);
    record(repo.path(), "r1", "db", "build", "running", &[]);
    let output = status_report(repo.path(), &["gate"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "gate: refused (run r1)\n  - db build has not finished (running)\n  - web test failed: 2 tests failed\n"
    );

    // A step the diff required that never ran refuses the gate, whatever else passed.
    start_run(repo.path(), &state, "r2", &[("api", "test"), ("worker", "test")]);
    record(repo.path(), "r2", "api", "test", "passed", &[]);
    let output = status_report(repo.path(), &["gate", "--run", "r2"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(stdout(&output), "gate: refused (run r2)\n  - worker test never ran, but the change requires it\n");

    // A run made only of `record` calls has no diff: nothing says what it required.
    record(repo.path(), "r3", "api", "test", "passed", &[]);
    let output = status_report(repo.path(), &["gate", "--run", "r3"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("the run has no diff (diff.json)"), "{}", stdout(&output));

    // An earlier run is still judged on its own records.
    assert_eq!(status_report(repo.path(), &["gate", "--run", "r1"]).status.code(), Some(1));
}

#[test]
fn gate_policy_comes_from_pipeline_toml_or_config() {
    let repo = tempfile::tempdir().unwrap();
    start_run(repo.path(), &repo.path().join(".pipeline"), "r1", &[("api", "test"), ("api", "deploy")]);
    record(repo.path(), "r1", "api", "test", "passed", &[]);
    std::fs::write(
        repo.path().join("pipeline.toml"),
        "[diff]\ndefault_branch = \"main\"\n\n[gate]\nrequired_steps = [\"validate\", \"test\", \"deploy\"]\n",
    )
    .unwrap();
    let output = status_report(repo.path(), &["gate"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "gate: refused (run r1)\n  - api deploy never ran, but the change requires it\n");

    let lenient = repo.path().join("lenient.toml");
    std::fs::write(&lenient, "[gate]\nrequired_steps = []\n").unwrap();
    let output = status_report(repo.path(), &["--config", lenient.to_str().unwrap(), "gate"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    std::fs::write(repo.path().join("pipeline.toml"), "[gate]\nrequired_steps = [\"test\"]\nallow_skiped = true\n")
        .unwrap();
    let message = assert_error(&status_report(repo.path(), &["gate"]));
    assert!(message.contains("pipeline.toml:3: gate.allow_skiped: unknown field"), "{message}");

    std::fs::write(repo.path().join("pipeline.toml"), "[gate]\n\n[gaet]\nx = 1\n").unwrap();
    let message = assert_error(&status_report(repo.path(), &["gate"]));
    assert!(message.contains("pipeline.toml:3: gaet: unknown section"), "{message}");

    let message = assert_error(&status_report(repo.path(), &["--config", "missing.toml", "show"]));
    assert!(message.contains("missing.toml"), "{message}");
}

#[test]
fn unknown_step_or_status_is_a_usage_error_listing_the_valid_values() {
    let repo = tempfile::tempdir().unwrap();
    let run = ["record", "--run", "r1", "--commit", "abc", "--component", "api"];
    let output = status_report(repo.path(), &[&run[..], &["--step", "tests", "--status", "passed"]].concat());
    let message = assert_error(&output);
    assert_eq!(
        message,
        "status-report: unknown step `tests`; expected one of: source, diff, validate, build, test, deploy, \
         approval, e2e, dast, prod-deploy, prod-dast\n"
    );

    let output = status_report(repo.path(), &[&run[..], &["--step", "test", "--status", "ok"]].concat());
    let message = assert_error(&output);
    assert!(message.contains("unknown status `ok`; expected one of: pending, running, passed, failed"), "{message}");
    assert!(!repo.path().join(".pipeline/state.jsonl").exists(), "nothing recorded");
}

#[test]
fn show_and_gate_without_runs_are_clear_errors() {
    let repo = tempfile::tempdir().unwrap();
    for command in ["show", "gate"] {
        let message = assert_error(&status_report(repo.path(), &[command]));
        assert!(message.contains("no runs recorded in"), "{message}");
        assert!(message.contains("status-report record"), "{message}");
    }
    assert!(!repo.path().join(".pipeline").exists(), "reading must not create a store");
    let output = status_report(repo.path(), &["runs"]);
    assert_eq!((output.status.code(), stdout(&output)), (Some(0), String::new()));

    record(repo.path(), "r1", "api", "test", "passed", &[]);
    let message = assert_error(&status_report(repo.path(), &["show", "--run", "r9"]));
    assert!(message.contains("no run `r9`"), "{message}");
}

#[test]
fn runs_lists_newest_last_and_show_defaults_to_it() {
    let repo = tempfile::tempdir().unwrap();
    for run in ["r1", "r2", "r3"] {
        start_run(repo.path(), &repo.path().join(".pipeline"), run, &[("api", "test")]);
    }
    record(repo.path(), "r1", "api", "test", "passed", &[]);
    record(repo.path(), "r2", "api", "test", "failed", &[]);
    record(repo.path(), "r3", "api", "build", "passed", &[]);
    let output = status_report(repo.path(), &["runs"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), "r1 passed\nr2 refused (1 reason)\nr3 refused (1 reason)\n");

    assert_eq!(show_json(repo.path(), &[])["run_id"], "r3");
    assert_eq!(show_json(repo.path(), &["--run", "r1"])["run_id"], "r1");
}

#[test]
fn show_writes_every_format_to_a_file() {
    let repo = tempfile::tempdir().unwrap();
    let state_dir = repo.path().join("elsewhere");
    let state = state_dir.to_str().unwrap();
    start_run(repo.path(), &state_dir, "r1", &[]);
    let output = status_report(
        repo.path(),
        &[
            "--state-dir",
            state,
            "record",
            "--run",
            "r1",
            "--commit",
            "abc",
            "--component",
            "web",
            "--step",
            "test",
            "--status",
            "skipped",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(state_dir.join("state.jsonl").is_file());

    let out_dir = repo.path().join("reports");
    for (format, needle) in [
        ("table", "gate: passed"),
        ("markdown", "| web | test | ⏭️ skipped |"),
        ("json", "\"status\": \"skipped\""),
        ("junit", "<skipped/>"),
    ] {
        let file = out_dir.join(format!("report.{format}"));
        let output = status_report(
            repo.path(),
            &["--state-dir", state, "show", "--format", format, "--output", file.to_str().unwrap()],
        );
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert_eq!(stdout(&output), "", "the report goes to the file");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(needle), "{format}: {text}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 4, "no temporary files left behind: {leftovers:?}");
}

#[test]
fn mark_success_prints_the_commit_only_after_a_passed_deploy() {
    let repo = tempfile::tempdir().unwrap();
    record(repo.path(), "r1", "api", "test", "passed", &[]);
    let message = assert_error(&status_report(repo.path(), &["mark-success", "--run", "r1"]));
    assert!(message.contains("run `r1` cannot be marked successful: no deploy step passed"), "{message}");

    stage_record(repo.path(), "r1", "api", Step::Deploy, Status::Passed);
    let output = status_report(repo.path(), &["mark-success", "--run", "r1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "c0ffee1234567890\n");
    let output = status_report(repo.path(), &["mark-success", "--run", "r1", "--env", "dev"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let state = std::fs::read_to_string(repo.path().join(".pipeline/state.jsonl")).unwrap();
    let envs: Vec<&str> = state
        .lines()
        .filter(|l| l.contains(r#""kind":"success""#))
        .map(|l| l.split(r#""env":""#).nth(1).unwrap().split('"').next().unwrap())
        .collect();
    assert_eq!(envs, ["prod", "dev"]);
}

#[test]
fn approval_is_requested_then_approved_or_refused_and_the_prod_decision_follows() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        "[gate]\nrequired_steps = [\"validate\", \"test\"]\n[gate.environments.prod]\nafter = \"dev\"\napproval = true\n",
    )
    .unwrap();
    let state = repo.path().join(".pipeline");
    for run in ["r1", "r2"] {
        start_run(repo.path(), &state, run, &[("api", "test")]);
        record(repo.path(), run, "api", "test", "passed", &[]);
        stage_record(repo.path(), run, "api", Step::Deploy, Status::Passed);
    }
    let decision = |run: &str| status_report(repo.path(), &["deploy-decision", "--run", run, "--env", "prod"]);

    let waiting = status_report(repo.path(), &["request-approval", "--run", "r1", "--summary", "prod receives: api"]);
    assert_eq!(waiting.status.code(), Some(0), "{}", stderr(&waiting));
    let refused = decision("r1");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stdout(&refused).contains("refused: approval is still waiting"), "{}", stdout(&refused));

    let approved = status_report(repo.path(), &["approve", "--run", "r1", "--by", "alice", "--comment", "ship it"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    assert_eq!(stdout(&approved), "run r1 (c0ffee1234567890): approved by alice\n");
    let allowed = decision("r1");
    assert_eq!(allowed.status.code(), Some(0), "{}", stdout(&allowed));
    assert!(stdout(&allowed).contains("deploy decision for `prod` (recorded as prod-deploy):\n  api: deploy\n"));
    let shown = status_report(repo.path(), &["show", "--run", "r1", "--format", "json"]);
    assert!(stdout(&shown).contains("\"by\": \"alice\""), "{}", stdout(&shown));

    // r2 (the newest, no --run): refused, then production is refused; deciding again is an error.
    let no = status_report(repo.path(), &["approve", "--by", "bob", "--refuse", "--comment", "not today"]);
    assert_eq!(no.status.code(), Some(0), "{}", stderr(&no));
    let refused = decision("r2");
    assert_eq!(refused.status.code(), Some(1));
    assert!(stdout(&refused).contains("refused: approval was refused by bob: not today"), "{}", stdout(&refused));
    let again = assert_error(&status_report(repo.path(), &["approve", "--run", "r2", "--by", "alice"]));
    assert_eq!(
        again.trim(),
        "status-report: run `r2`'s approval was already refused by bob; start a new run to ask again"
    );
    let bad = assert_error(&status_report(repo.path(), &["approve", "--run", "r1", "--by", ""]));
    assert!(bad.contains("fix --by"), "{bad}");
}

#[test]
fn record_refuses_the_steps_only_stages_write() {
    let repo = tempfile::tempdir().unwrap();
    start_run(repo.path(), &repo.path().join(".pipeline"), "r1", &[("api", "test")]);
    let run = ["record", "--run", "r1", "--commit", "c0ffee1234567890"];
    for (component, step, names) in [
        ("pipeline", "approval", "status-report approve --by NAME"),
        ("api", "deploy", "stack-deployer, frontend-publisher"),
        ("api", "prod-deploy", "stack-deployer, frontend-publisher"),
    ] {
        for status in ["passed", "running", "skipped"] {
            let output = status_report(
                repo.path(),
                &[&run[..], &["--component", component, "--step", step, "--status", status]].concat(),
            );
            let message = assert_error(&output);
            assert!(message.starts_with(&format!("status-report: `record --step {step}` is refused: ")), "{message}");
            assert!(message.contains(names), "{message}");
        }
    }
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let steps: Vec<Step> = store.run("r1").unwrap().iter().map(|r| r.step).collect();
    assert_eq!(steps, [Step::Validate], "nothing forged was recorded");
}

#[test]
fn a_forged_or_unnamed_approval_does_not_open_production() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        "[gate]\nrequired_steps = [\"validate\", \"test\"]\n[gate.environments.prod]\nafter = \"dev\"\napproval = true\n",
    )
    .unwrap();
    start_run(repo.path(), &repo.path().join(".pipeline"), "r1", &[("api", "test")]);
    record(repo.path(), "r1", "api", "test", "passed", &[]);
    stage_record(repo.path(), "r1", "api", Step::Deploy, Status::Passed);
    // Through the binary: refused.
    let forged = status_report(
        repo.path(),
        &[
            "record",
            "--run",
            "r1",
            "--commit",
            "x",
            "--component",
            "pipeline",
            "--step",
            "approval",
            "--status",
            "passed",
        ],
    );
    assert_error(&forged);
    // Written into the store some other way, naming nobody: no approval.
    stage_record(repo.path(), "r1", PIPELINE, Step::Approval, Status::Passed);
    let decision = status_report(repo.path(), &["deploy-decision", "--run", "r1", "--env", "prod"]);
    assert_eq!(decision.status.code(), Some(1), "{}", stdout(&decision));
    assert!(
        stdout(&decision)
            .contains("refused: the approval names no approver; approve with `status-report approve --by NAME`"),
        "{}",
        stdout(&decision)
    );
    // An approval needs a name.
    let unnamed = assert_error(&status_report(repo.path(), &["approve", "--run", "r1", "--by", " "]));
    assert!(unnamed.contains("the approver's name: must be one line"), "{unnamed}");
    // A named approval then opens it.
    let approved = status_report(repo.path(), &["approve", "--run", "r1", "--by", "alice"]);
    assert_eq!(approved.status.code(), Some(0), "{}", stderr(&approved));
    let decision = status_report(repo.path(), &["deploy-decision", "--run", "r1", "--env", "prod"]);
    assert_eq!(decision.status.code(), Some(0), "{}", stdout(&decision));
}

#[test]
fn mark_success_for_prod_needs_the_prod_deploy_of_every_changed_component() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        "[gate]\nrequired_steps = [\"validate\", \"test\"]\n[gate.environments.prod]\nafter = \"dev\"\napproval = true\n",
    )
    .unwrap();
    start_run(repo.path(), &repo.path().join(".pipeline"), "r1", &[("api", "test"), ("web", "test")]);
    for component in ["api", "web"] {
        record(repo.path(), "r1", component, "test", "passed", &[]);
        stage_record(repo.path(), "r1", component, Step::Deploy, Status::Passed);
    }
    // Dev only: prod (the default environment) is refused, and no mark is kept.
    let message = assert_error(&status_report(repo.path(), &["mark-success", "--run", "r1"]));
    assert!(
        message.starts_with(
            "status-report: run `r1` cannot be marked successful: no prod-deploy passed in this run, so nothing reached `prod`; deploy to `prod` first; api was deployed before"
        ),
        "{message}"
    );
    assert_eq!(success_lines(repo.path()), 0);
    // One component promoted, the other skipped.
    stage_record(repo.path(), "r1", "api", Step::ProdDeploy, Status::Passed);
    stage_record(repo.path(), "r1", "web", Step::ProdDeploy, Status::Skipped);
    let message = assert_error(&status_report(repo.path(), &["mark-success", "--run", "r1", "--env", "prod"]));
    assert!(
        message.ends_with("web prod-deploy is skipped, so its change has not reached `prod`; deploy it first\n"),
        "{message}"
    );
    assert_eq!(success_lines(repo.path()), 0);
    // Dev itself may be marked: its deploys passed.
    let output = status_report(repo.path(), &["mark-success", "--run", "r1", "--env", "dev"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    stage_record(repo.path(), "r1", "web", Step::ProdDeploy, Status::Passed);
    let output = status_report(repo.path(), &["mark-success", "--run", "r1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output), "c0ffee1234567890\n");
    assert_eq!(success_lines(repo.path()), 2);
}
