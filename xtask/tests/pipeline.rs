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
    let status_of = |name: &str| records.iter().find(|r| r.component == name).map(|r| r.status);
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
                "pipeline.toml:25: deplyo: unknown section; expected one of: diff, components, runner, gate, lambda, validate, deploy, publish, store, notify"
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
