//! The runner against real processes: bounds, timeouts, missing commands, cancels, and the records it leaves.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use run_state::{FileStore, RunDir, StagePlan, Status, Step, Store};
use step_runner::{Event, Job, Outcome, Runner, RunnerSettings};
use test_support::process::{assert_ends, wait_for_file};

fn job(dir: &std::path::Path, name: &str, command: &str, timeout: Duration) -> Job {
    Job {
        component: name.into(),
        command: command.into(),
        timeout,
        log_path: dir.join(format!("logs/{name}-test.log")),
        config_key: format!("components.{name}.test"),
        stdout_path: None,
        env: Vec::new(),
    }
}

#[test]
fn results_come_back_in_order_with_logs_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let runner = Runner { workdir: dir.path().into(), parallelism: 3, path_prefix: vec![], cancel: &cancel };
    let jobs = vec![
        job(dir.path(), "ok", "echo hello from ok; echo to-stderr >&2", Duration::from_secs(30)),
        job(dir.path(), "bad", "echo failing; exit 3", Duration::from_secs(30)),
        job(dir.path(), "missing", "definitely-not-a-command-xyz --flag", Duration::from_secs(30)),
    ];
    let results = runner.run(jobs, &|_| {});
    let names: Vec<_> = results.iter().map(|r| r.job.component.as_str()).collect();
    assert_eq!(names, ["ok", "bad", "missing"]);
    assert_eq!(results[0].outcome, Outcome::Passed);
    let log = std::fs::read_to_string(dir.path().join("logs/ok-test.log")).unwrap();
    assert!(log.contains("hello from ok") && log.contains("to-stderr"), "{log}");
    assert_eq!(results[1].outcome, Outcome::Failed("exit code 3".into()));
    assert_eq!(results[1].log_tail, "failing");
    // The word the shell could not find, from its own message, as a typed outcome.
    assert_eq!(
        results[2].outcome,
        Outcome::NotFound {
            program: Some("definitely-not-a-command-xyz".into()),
            config_key: "components.missing.test".into()
        }
    );
    assert_eq!(
        results[2].outcome.message().unwrap(),
        "command not found: `definitely-not-a-command-xyz` (exit 127); install it or fix components.missing.test.run"
    );
}

#[test]
fn no_more_than_the_bound_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let runner = Runner { workdir: dir.path().into(), parallelism: 2, path_prefix: vec![], cancel: &cancel };
    let jobs = (0..6).map(|i| job(dir.path(), &format!("j{i}"), "sleep 0.2", Duration::from_secs(30))).collect();
    let running = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let results = runner.run(jobs, &|event| match event {
        Event::Started(_) => {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
        }
        Event::Finished(_) => {
            running.fetch_sub(1, Ordering::SeqCst);
        }
    });
    assert!(results.iter().all(|r| r.outcome == Outcome::Passed));
    assert_eq!(most.load(Ordering::SeqCst), 2);
}

#[test]
fn a_hanging_command_is_stopped_at_its_timeout_with_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let runner = Runner { workdir: dir.path().into(), parallelism: 1, path_prefix: vec![], cancel: &cancel };
    let pid_file = dir.path().join("grandchild.pid");
    // The shell starts a grandchild that would outlive a plain kill of the shell.
    let command = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    // Long enough for a loaded machine to start the shell and write the pid.
    let results = runner.run(vec![job(dir.path(), "hang", &command, Duration::from_millis(1500))], &|_| {});
    assert_eq!(results[0].outcome, Outcome::TimedOut(Duration::from_millis(1500)));
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    // The grandchild must be gone (reaped or at least a zombie about to be).
    assert_ends(&pid, "the grandchild of a timed-out job");
}

#[test]
fn a_process_left_behind_by_a_passing_command_is_stopped_when_its_job_ends() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let runner = Runner { workdir: dir.path().into(), parallelism: 1, path_prefix: vec![], cancel: &cancel };
    let pid_file = dir.path().join("left.pid");
    let command = format!("sleep 1234 & echo $! > {}; echo ok", pid_file.display());
    let results = runner.run(vec![job(dir.path(), "leaky", &command, Duration::from_secs(60))], &|_| {});
    let pid = wait_for_file(&pid_file);
    assert_eq!(results[0].outcome, Outcome::Passed);
    assert_ends(&pid, "the background sleep of a finished job");
    // Said so in the result (the record's note) and in the log.
    let note = results[0].note.as_deref().unwrap_or_default();
    assert!(note.contains("left processes running"), "{note:?}");
    let log = std::fs::read_to_string(dir.path().join("logs/leaky-test.log")).unwrap();
    assert!(log.starts_with("ok\n") && log.contains("left processes running"), "{log}");
    let record = step_runner::finished_record("r1", "abc", Step::Test, &results[0], None);
    assert!(record.details.note.as_deref().unwrap_or_default().contains("left processes running"));
}

#[test]
fn a_clean_command_leaves_no_note() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let runner = Runner { workdir: dir.path().into(), parallelism: 1, path_prefix: vec![], cancel: &cancel };
    let results = runner.run(vec![job(dir.path(), "clean", "echo ok", Duration::from_secs(60))], &|_| {});
    assert_eq!((&results[0].outcome, results[0].note.as_deref()), (&Outcome::Passed, None));
    assert_eq!(std::fs::read_to_string(dir.path().join("logs/clean-test.log")).unwrap(), "ok\n");
}

#[test]
fn secrets_a_command_prints_never_reach_the_log_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let runner = Runner { workdir: dir.path().into(), parallelism: 2, path_prefix: vec![], cancel: &cancel };
    let secrets = ["wJalrXUtnFEMIK7MDENGbPxRfiCY", "Hunter2Secret", "MIIEowIBAAKCAQEA", "AKIAIOSFODNN7EXAMPLE"];
    let script = "echo AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCY; \
                  echo '+ psql --password Hunter2Secret' >&2; \
                  printf -- '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n'; \
                  echo key AKIAIOSFODNN7EXAMPLE >&2; echo done";
    let mut tool = job(dir.path(), "tool", script, Duration::from_secs(60));
    // A tool's machine-readable stdout stays as it printed it; its stderr log is redacted.
    tool.stdout_path = Some(dir.path().join("tool.out"));
    let results = runner.run(vec![job(dir.path(), "leaky", script, Duration::from_secs(60)), tool], &|_| {});
    assert!(results.iter().all(|r| r.outcome == Outcome::Passed), "{results:?}");
    let log = std::fs::read_to_string(dir.path().join("logs/leaky-test.log")).unwrap();
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} reached the log: {log}");
    }
    assert!(log.contains("AWS_SECRET_ACCESS_KEY=[REDACTED]") && log.ends_with("done\n"), "{log}");
    let tool_log = std::fs::read_to_string(dir.path().join("logs/tool-test.log")).unwrap();
    assert!(!tool_log.contains("Hunter2Secret") && tool_log.contains("--password [REDACTED]"), "{tool_log}");
    let tool_out = std::fs::read_to_string(dir.path().join("tool.out")).unwrap();
    assert!(tool_out.contains("MIIEowIBAAKCAQEA") && tool_out.ends_with("done\n"), "{tool_out}");
}

#[test]
fn a_cancel_stops_running_jobs_and_never_starts_waiting_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = AtomicBool::new(false);
    let runner = Runner { workdir: dir.path().into(), parallelism: 1, path_prefix: vec![], cancel: &cancel };
    let jobs = vec![
        job(dir.path(), "long", "sleep 300", Duration::from_secs(600)),
        job(dir.path(), "queued", "echo should-not-run", Duration::from_secs(600)),
    ];
    let results = runner.run(jobs, &|event| {
        if let Event::Started(_) = event {
            cancel.store(true, Ordering::SeqCst);
        }
    });
    assert_eq!(results[0].outcome, Outcome::Cancelled);
    assert_eq!(results[1].outcome, Outcome::Cancelled);
    assert!(results[1].started_at.is_none());
    assert!(!dir.path().join("logs/queued-test.log").exists());
}

const CONFIG: &str = r#"
[components.api]
paths = ["api/**"]
test = { run = "echo api tests pass" }

[components.web]
paths = ["web/**"]
test = { run = "echo 'password=hunter2 in the log'; exit 1" }

[components.docs]
paths = ["docs/**"]

[components.slow]
paths = ["slow/**"]
test = { run = "sleep 30", timeout = "200ms" }

[components.idle]
paths = ["idle/**"]
test = { run = "true" }
"#;

#[test]
fn a_step_is_planned_from_the_diff_and_every_state_is_recorded() {
    let repo = test_support::GitRepo::new();
    repo.commit_files("one", &[("pipeline.toml", CONFIG), ("idle/x", "1")]);
    repo.commit_files("two", &[("api/a.py", "1"), ("web/b.js", "1"), ("docs/c.md", "1"), ("slow/d", "1")]);
    let handle = source_diff::Repo::open(repo.path()).unwrap();
    let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let diff = source_diff::diff(&handle, &components, &Default::default(), "HEAD", false).unwrap();
    let state = repo.path().join(".pipeline");
    let run_dir = RunDir::create(&state, "run-1").unwrap();
    let plan = step_runner::plan(Step::Test, &components, &diff, &run_dir, &RunnerSettings::default());
    assert_eq!(
        plan.describe().lines().map(|l| l.split(':').next().unwrap()).collect::<Vec<_>>(),
        ["run  api test", "run  slow test", "run  web test", "skip docs test", "skip idle test"]
    );
    assert!(plan.describe().contains("skip docs test: no test command"));
    assert!(plan.describe().contains("skip idle test: unchanged since the base"));

    let store = FileStore::open(&state).unwrap();
    let cancel = AtomicBool::new(false);
    let runner = Runner { workdir: repo.path().into(), parallelism: 3, path_prefix: vec![], cancel: &cancel };
    let seen = Mutex::new(Vec::new());
    let scope = step_runner::CoverageScope { components: &components, diff: &diff };
    let results = step_runner::run_step(&store, "run-1", &diff.head, &plan, &runner, scope, &|event| {
        if let Event::Finished(result) = event {
            seen.lock().unwrap().push(result.job.component.clone());
        }
    })
    .unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(seen.lock().unwrap().len(), 3);

    let records = store.run("run-1").unwrap();
    let states: Vec<_> = records.iter().map(|r| (r.component.as_str(), r.status)).collect();
    assert_eq!(
        states,
        [
            ("api", Status::Passed),
            ("docs", Status::Skipped),
            ("idle", Status::Skipped),
            ("slow", Status::Failed),
            ("web", Status::Failed)
        ]
    );
    let slow = records.iter().find(|r| r.component == "slow").unwrap();
    assert_eq!(
        slow.details.error.as_deref(),
        Some("timed out after 200ms; fix the hang or raise components.slow.test.timeout")
    );
    let web = records.iter().find(|r| r.component == "web").unwrap();
    assert!(web.started_at.is_some() && web.ended_at.is_some());
    let tail = web.details.log_tail.as_deref().unwrap();
    assert!(tail.contains("password=[REDACTED]") && !tail.contains("hunter2"), "{tail}");
    // The full log stays in the run folder.
    assert!(std::fs::read_to_string(run_dir.log_path("web", "test")).unwrap().contains("in the log"));
    let required = gate::Requirements::from_diff(&diff);
    let gate = gate::decide(&records, Some(&required), &Default::default());
    assert!(!gate.allowed);
    assert!(gate.reasons.iter().any(|r| r.starts_with("web test failed")), "{gate:?}");
}

#[test]
fn the_plan_says_which_coverage_is_checked() {
    let config = r#"
[components.api]
paths = ["api/**"]
test = { run = "pytest --cov", coverage = { report = "cov/api.xml", format = "cobertura", min_lines = 80, min_changed_lines = 90.5 } }

[components.web]
paths = ["web/**"]
test = { run = "node --test", coverage = { report = "cov/web.lcov", format = "lcov" } }
"#;
    let repo = test_support::GitRepo::new();
    repo.commit_files("one", &[("pipeline.toml", config)]);
    repo.commit_files("two", &[("api/a.py", "1"), ("web/b.js", "1")]);
    let handle = source_diff::Repo::open(repo.path()).unwrap();
    let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let diff = source_diff::diff(&handle, &components, &Default::default(), "HEAD", false).unwrap();
    let run_dir = RunDir::create(&repo.path().join(".pipeline"), "run-1").unwrap();
    let plan = step_runner::plan(Step::Test, &components, &diff, &run_dir, &RunnerSettings::default());
    let described = plan.describe();
    assert!(
        described.contains("check api test coverage: lines ≥ 80%, changed lines ≥ 90.5% from cov/api.xml (cobertura)"),
        "{described}"
    );
    assert!(
        described.contains("check web test coverage: figures only (no minimum) from cov/web.lcov (lcov)"),
        "{described}"
    );
    assert!(components.owns("api", "api/a.py") && !components.owns("api", "web/b.js"));
}
