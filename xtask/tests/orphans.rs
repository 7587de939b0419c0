//! No orphan after `cargo xtask pipeline` is killed: its running test job's processes (a
//! grandchild sleeping in the background included) end with it, whether the pipeline itself
//! gets SIGKILL or the process that started it (`cargo`, a shell) dies.

use std::process::{Command, Stdio};

use test_support::GitRepo;

/// A repository whose one changed component's test leaves a background `sleep` and waits.
fn repo(pid_file: &std::path::Path) -> GitRepo {
    let config = format!(
        "[components.slow]\npaths = [\"slow/**\"]\ntest = {{ run = \"sleep 300 & echo $! > {}; wait\" }}\n",
        pid_file.display()
    );
    let repo = GitRepo::new();
    repo.commit_files("base", &[("pipeline.toml", &config), (".gitignore", ".pipeline/\n")]);
    repo.commit_files("work", &[("slow/a", "1")]);
    repo
}

#[test]
fn a_pipeline_killed_with_sigkill_leaves_no_process_of_its_test_job() {
    let outside = tempfile::tempdir().unwrap();
    let pid_file = outside.path().join("sleep.pid");
    let repo = repo(&pid_file);
    let mut pipeline = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["pipeline", "--repo"])
        .arg(repo.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sleep = test_support::process::wait_for_file(&pid_file);
    pipeline.kill().unwrap();
    pipeline.wait().unwrap();
    test_support::process::assert_ends(&sleep, "the killed pipeline's test job's background sleep");
}

#[test]
fn a_pipeline_whose_parent_dies_leaves_no_process_of_its_test_job() {
    let outside = tempfile::tempdir().unwrap();
    let pid_file = outside.path().join("sleep.pid");
    let xtask_pid = outside.path().join("xtask.pid");
    let repo = repo(&pid_file);
    // A parent standing in for `cargo`: it starts the pipeline, names it, and waits.
    let script = format!("\"$0\" pipeline --repo \"$1\" >/dev/null 2>&1 & echo $! > {}; wait", xtask_pid.display());
    let mut parent =
        Command::new("sh").arg("-c").arg(script).arg(env!("CARGO_BIN_EXE_xtask")).arg(repo.path()).spawn().unwrap();
    let sleep = test_support::process::wait_for_file(&pid_file);
    let xtask = test_support::process::wait_for_file(&xtask_pid);
    parent.kill().unwrap();
    parent.wait().unwrap();
    test_support::process::assert_ends(&xtask, "the pipeline whose parent died");
    test_support::process::assert_ends(&sleep, "its test job's background sleep");
}
