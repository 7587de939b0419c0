//! `status-report prune` through the binary: old runs leave the file store, what it keeps reads
//! as before, and a prune with no rule is a usage error.

use std::path::Path;
use std::process::{Command, Output};

use run_state::{FileStore, Status, Step, StepRecord, Store};

fn status_report(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_status-report")).arg("--repo").arg(repo).args(args).output().unwrap()
}

#[test]
fn prune_keeps_the_newest_runs_and_the_latest_success() {
    let repo = tempfile::tempdir().unwrap();
    let store = FileStore::open(&repo.path().join(".pipeline")).unwrap();
    for run in ["r1", "r2", "r3", "r4"] {
        let mut record = StepRecord::new(run, "abc", "api", Step::Test, Status::Passed);
        record.ended_at = Some(std::time::SystemTime::now());
        store.record(&record).unwrap();
    }
    store.record(&StepRecord::new("r1", "abc", "api", Step::Deploy, Status::Passed)).unwrap();
    store.mark_success("r1", "dev").unwrap();

    let out = status_report(repo.path(), &["prune"]);
    assert_eq!(out.status.code(), Some(2), "a rule is required: {}", String::from_utf8_lossy(&out.stderr));
    let out = status_report(repo.path(), &["prune", "--older-than", "soon"]);
    assert_eq!(out.status.code(), Some(2));

    let out = status_report(repo.path(), &["prune", "--keep-runs", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("removed 2 run(s), kept 2; "), "{stdout}");
    assert!(stdout.contains("kept r1: the latest success of an environment"), "{stdout}");
    let runs = status_report(repo.path(), &["runs"]);
    let listed: Vec<String> =
        String::from_utf8_lossy(&runs.stdout).lines().map(|l| l.split(' ').next().unwrap().to_string()).collect();
    assert_eq!(listed, ["r1", "r4"]);
    assert_eq!(store.last_success("dev").unwrap().unwrap().run_id, "r1");
    // Nothing is old enough for an age rule now.
    let out = status_report(repo.path(), &["prune", "--older-than", "30d"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("removed 0 run(s), kept 2; "));
}
