//! The real `step-runner` binary killed with SIGKILL, or stopped with SIGTERM: nothing it started
//! survives it, and its step does not stay `running` (needs the `cli` feature:
//! `cargo test -p step-runner --all-features`).

use std::process::{Command, Stdio};
use std::time::Duration;

use run_state::{FileStore, RunDir, RunFile, Status, Step, Store};
use test_support::process::{running, wait_for_file};

/// A repository whose second commit changes `api`, configured with `config`, and its run
/// `run-1` with the diff written.
fn repo_with_run(config: &str) -> test_support::GitRepo {
    let repo = test_support::GitRepo::new();
    repo.commit_files("one", &[("pipeline.toml", config)]);
    repo.commit_files("two", &[("api/a.py", "1")]);
    let handle = source_diff::Repo::open(repo.path()).unwrap();
    let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let diff = source_diff::diff(&handle, &components, &Default::default(), "HEAD", false).unwrap();
    let run_dir = RunDir::create(&repo.path().join(".pipeline"), "run-1").unwrap();
    run_dir.write(RunFile::Diff, &serde_json::to_vec(&diff).unwrap()).unwrap();
    repo
}

#[test]
fn a_killed_runner_takes_its_jobs_and_their_children_with_it() {
    let outside = tempfile::tempdir().unwrap();
    let shell_pid = outside.path().join("shell.pid");
    let grandchild_pid = outside.path().join("grandchild.pid");
    let inner_pid = outside.path().join("inner.pid");
    // The job's shell starts a grandchild (a sleep) and a great-grandchild under a shell that
    // waits for it: killing the job's shell alone would leave both running.
    let config = format!(
        "[components.api]\npaths = [\"api/**\"]\ntest = {{ run = \"echo $$ > {shell}; sleep 1234 & echo $! > {grandchild}; sh -c 'sleep 1235 & echo $! > {inner}; wait' & wait\" }}\n",
        shell = shell_pid.display(),
        grandchild = grandchild_pid.display(),
        inner = inner_pid.display(),
    );
    let repo = repo_with_run(&config);
    let state = repo.path().join(".pipeline");

    let mut runner = Command::new(env!("CARGO_BIN_EXE_step-runner"))
        .arg("--repo")
        .arg(repo.path())
        .args(["--step", "test"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pids = [wait_for_file(&shell_pid), wait_for_file(&grandchild_pid), wait_for_file(&inner_pid)];
    for pid in &pids {
        assert!(running(pid), "process {pid} of the job is not running before the runner is killed");
    }
    let store = FileStore::open(&state).unwrap();
    assert!(!store.run("run-1").unwrap()[0].status.is_final());

    runner.kill().unwrap();
    runner.wait().unwrap();
    for pid in &pids {
        let mut polls = 0;
        while running(pid) {
            polls += 1;
            assert!(polls < 200, "process {pid} of the job outlived its killed runner");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // The step its runner left `running` reads as failed, naming the dead runner.
    let records = store.run("run-1").unwrap();
    let api = records.iter().find(|r| r.component == "api" && r.step == Step::Test).unwrap();
    assert_eq!(api.status, Status::Failed, "{api:?}");
    let error = api.details.error.as_deref().unwrap();
    assert!(error.starts_with(&format!("runner died (pid {} on ", runner.id())), "{error}");
}

#[test]
fn sigterm_cancels_the_step_records_it_and_stops_everything_it_started() {
    let outside = tempfile::tempdir().unwrap();
    let shell_pid = outside.path().join("shell.pid");
    let grandchild_pid = outside.path().join("grandchild.pid");
    let config = format!(
        "[components.api]\npaths = [\"api/**\"]\ntest = {{ run = \"echo $$ > {shell}; sleep 1236 & echo $! > {grandchild}; wait\" }}\n",
        shell = shell_pid.display(),
        grandchild = grandchild_pid.display(),
    );
    let repo = repo_with_run(&config);
    let state = repo.path().join(".pipeline");

    let runner = Command::new(env!("CARGO_BIN_EXE_step-runner"))
        .arg("--repo")
        .arg(repo.path())
        .args(["--step", "test"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = [wait_for_file(&shell_pid), wait_for_file(&grandchild_pid)];
    for pid in &pids {
        assert!(running(pid), "process {pid} of the job is not running before the SIGTERM");
    }
    let term = Command::new("kill").args(["-TERM", &runner.id().to_string()]).status().unwrap();
    assert!(term.success());
    let out = runner.wait_with_output().unwrap();
    // The binary ends by itself (wait_with_output returned) with the step's verdict, not killed by the signal.
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    for pid in &pids {
        test_support::process::assert_ends(pid, "a process of the cancelled job");
    }
    let records = FileStore::open(&state).unwrap().run("run-1").unwrap();
    let api = records.iter().find(|r| r.component == "api" && r.step == Step::Test).unwrap();
    assert_eq!(api.status, Status::Cancelled, "{api:?}");
}
