//! The file store: concurrent writers, damaged files, replacement, success marks, redaction.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Barrier;

use run_state::{Error, FileStore, Status, Step, StepRecord, Store};
use status_report::{GatePolicy, RunReport, decide};

fn rec(run: &str, commit: &str, component: &str, step: Step, status: Status) -> StepRecord {
    StepRecord::new(run, commit, component, step, status)
}

fn append_raw(store: &FileStore, text: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(store.path()).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Every line of the store file, checking that each one is whole: ends with a newline and is a JSON object.
fn whole_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "the store file ends mid-line");
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {} is torn or garbled ({e}): {line}", i + 1))
        })
        .collect()
}

#[test]
fn threads_and_processes_writing_at_once_lose_no_record() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 200;
    const PROCESSES: usize = 4;
    const PER_PROCESS: usize = 50;

    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join(".pipeline");
    let store = FileStore::open(&state_dir).unwrap();
    let start = Barrier::new(THREADS + PROCESSES);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (start, state_dir) = (&start, &state_dir);
            scope.spawn(move || {
                // Each writer its own store handle, as separate stages would have.
                let store = FileStore::open(state_dir).unwrap();
                start.wait();
                for i in 0..PER_THREAD {
                    let mut record = rec("r1", "abc", &format!("thread{t}-{i}"), Step::Build, Status::Passed);
                    record.details.note = Some(format!("written by thread {t}, record {i}"));
                    store.record(&record).unwrap();
                }
            });
        }
        for p in 0..PROCESSES {
            let (start, state_dir) = (&start, &state_dir);
            scope.spawn(move || {
                start.wait();
                for i in 0..PER_PROCESS {
                    let output = Command::new(env!("CARGO_BIN_EXE_status-report"))
                        .arg("--state-dir")
                        .arg(state_dir)
                        .args(["record", "--run", "r1", "--commit", "abc", "--step", "test", "--status", "passed"])
                        .args(["--component", &format!("process{p}-{i}")])
                        .output()
                        .unwrap();
                    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
                }
            });
        }
    });

    let records = store.run("r1").unwrap();
    let expected: BTreeSet<String> = (0..THREADS)
        .flat_map(|t| (0..PER_THREAD).map(move |i| format!("thread{t}-{i}")))
        .chain((0..PROCESSES).flat_map(|p| (0..PER_PROCESS).map(move |i| format!("process{p}-{i}"))))
        .collect();
    let found: BTreeSet<String> = records.iter().map(|r| r.component.clone()).collect();
    assert_eq!(records.len(), THREADS * PER_THREAD + PROCESSES * PER_PROCESS);
    assert_eq!(found, expected);
    assert_eq!(store.run_ids().unwrap(), ["r1"]);
    let lines = whole_lines(store.path());
    assert_eq!(lines.len(), THREADS * PER_THREAD + PROCESSES * PER_PROCESS);
}

#[test]
fn torn_last_line_is_skipped_and_the_next_write_still_lands() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Build, Status::Passed)).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Test, Status::Passed)).unwrap();
    // A crash half way through writing a line.
    let text = std::fs::read_to_string(store.path()).unwrap();
    let first = text.lines().next().unwrap().replace("\"build\"", "\"deploy\"");
    append_raw(&store, &first[..first.len() / 2]);

    let records = store.run("r1").unwrap();
    assert_eq!(records.iter().map(|r| r.step).collect::<Vec<_>>(), [Step::Build, Step::Test]);
    assert_eq!(store.run_ids().unwrap(), ["r1"]);

    // The next writer must not glue its line to the torn one.
    store.record(&rec("r1", "abc", "web", Step::Build, Status::Passed)).unwrap();
    assert_eq!(store.run("r1").unwrap().len(), 3);
    assert_eq!(whole_lines(store.path()).len(), 3);
}

#[test]
fn a_whole_last_record_without_its_newline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Build, Status::Passed)).unwrap();
    // A hand edit that dropped the final newline.
    let text = std::fs::read_to_string(store.path()).unwrap();
    std::fs::write(store.path(), text.trim_end()).unwrap();

    store.record(&rec("r1", "abc", "api", Step::Test, Status::Passed)).unwrap();
    assert_eq!(store.run("r1").unwrap().len(), 2);
    assert_eq!(whole_lines(store.path()).len(), 2);
}

#[test]
fn corrupt_middle_line_is_an_error_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Build, Status::Passed)).unwrap();
    append_raw(&store, "this is not a record\n");
    store.record(&rec("r1", "abc", "api", Step::Test, Status::Passed)).unwrap();

    let error = store.run("r1").unwrap_err();
    assert!(matches!(error, Error::Corrupt { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&store.path().display().to_string()), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(store.run_ids().is_err());
}

#[test]
fn recording_a_step_again_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Test, Status::Running)).unwrap();
    store.record(&rec("r1", "abc", "web", Step::Test, Status::Running)).unwrap();
    store.record(&rec("r2", "def", "api", Step::Test, Status::Running)).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Test, Status::Passed)).unwrap();

    let records = store.run("r1").unwrap();
    let api: Vec<_> = records.iter().filter(|r| r.component == "api").collect();
    assert_eq!(api.len(), 1);
    assert_eq!(api[0].status, Status::Passed);
    // Only that run's step of that component changed.
    let web = records.iter().find(|r| r.component == "web").unwrap();
    assert_eq!(web.status, Status::Running);
    assert_eq!(store.run("r2").unwrap()[0].status, Status::Running);
    assert_eq!(store.run_ids().unwrap(), ["r1", "r2"]);
}

#[test]
fn runs_lists_every_run_oldest_first_with_its_latest_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.record(&rec("r2", "bbb", "api", Step::Test, Status::Running)).unwrap();
    store.record(&rec("r1", "aaa", "api", Step::Test, Status::Passed)).unwrap();
    store.record(&rec("r2", "bbb", "api", Step::Test, Status::Failed)).unwrap();

    let runs = store.runs().unwrap();
    let ids: Vec<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["r2", "r1"]);
    assert_eq!(runs[0].1, store.run("r2").unwrap());
    assert_eq!(runs[0].1[0].status, Status::Failed);
    assert_eq!(runs[1].1, store.run("r1").unwrap());
}

#[test]
fn mark_success_is_refused_without_a_passed_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Test, Status::Passed)).unwrap();
    store.record(&rec("r1", "abc", "api", Step::Deploy, Status::Skipped)).unwrap();

    let error = store.mark_success("r1", "prod").unwrap_err();
    assert!(matches!(error, Error::NotSuccessful { .. }), "{error:?}");
    assert!(error.to_string().contains("no deploy step passed"), "{error}");
    assert_eq!(store.last_success("prod").unwrap(), None);

    let error = store.mark_success("no-such-run", "prod").unwrap_err();
    assert!(matches!(error, Error::UnknownRun { .. }), "{error:?}");
}

#[test]
fn mark_success_is_refused_when_a_step_failed_or_is_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    for (run, status) in [("failed", Status::Failed), ("running", Status::Running), ("cancelled", Status::Cancelled)] {
        store.record(&rec(run, "abc", "api", Step::Deploy, Status::Passed)).unwrap();
        store.record(&rec(run, "abc", "web", Step::E2e, status)).unwrap();
        let error = store.mark_success(run, "prod").unwrap_err();
        assert!(error.to_string().contains(&format!("web e2e is {status}")), "{error}");
    }
    assert_eq!(store.last_success("prod").unwrap(), None);
}

#[test]
fn mark_success_accepts_a_passed_deploy_and_last_success_is_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.record(&rec("r1", "aaa", "api", Step::Deploy, Status::Passed)).unwrap();
    let mark = store.mark_success("r1", "prod").unwrap();
    assert_eq!((mark.run_id.as_str(), mark.commit.as_str()), ("r1", "aaa"));
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, "aaa");

    store.record(&rec("r2", "bbb", "api", Step::Test, Status::Skipped)).unwrap();
    store.record(&rec("r2", "bbb", "api", Step::Deploy, Status::Passed)).unwrap();
    store.mark_success("r2", "prod").unwrap();
    // A later failed run does not move the base.
    store.record(&rec("r3", "ccc", "api", Step::Deploy, Status::Failed)).unwrap();
    assert!(store.mark_success("r3", "prod").is_err());

    let reopened = FileStore::open(dir.path()).unwrap();
    let last = reopened.last_success("prod").unwrap().unwrap();
    assert_eq!((last.run_id.as_str(), last.commit.as_str()), ("r2", "bbb"));
    assert!(last.at.is_some());
}

#[test]
fn secrets_are_not_stored_nor_reported() {
    const KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const PASSWORD: &str = "hunter2-correct-horse";
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut failed = rec("r1", "abc", "api", Step::Deploy, Status::Failed);
    failed.details.error = Some(format!("login refused for password={PASSWORD}"));
    failed.details.log_tail =
        Some(format!("deploying api\nAWS_SECRET_ACCESS_KEY={KEY}\nDB_PASSWORD: {PASSWORD}\nstack rolled back"));
    store.record(&failed).unwrap();

    let raw = std::fs::read_to_string(store.path()).unwrap();
    assert!(!raw.contains(KEY) && !raw.contains(PASSWORD), "{raw}");
    assert!(raw.contains("AWS_SECRET_ACCESS_KEY=[REDACTED]"), "{raw}");
    assert!(raw.contains("stack rolled back"), "the rest of the log is kept: {raw}");

    let records = store.run("r1").unwrap();
    let gate = decide(&records, None, &GatePolicy::default());
    let report = RunReport::new("r1", records, gate);
    for (format, text) in [("markdown", report.to_markdown()), ("junit", report.to_junit()), ("json", report.to_json())]
    {
        assert!(!text.contains(KEY) && !text.contains(PASSWORD), "{format} leaks a secret: {text}");
        assert!(text.contains("stack rolled back"), "{format} lost the log tail: {text}");
    }
}

#[test]
fn mark_success_racing_a_failing_writer_never_marks_a_run_after_its_failure_landed() {
    const RUNS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    for i in 0..RUNS {
        store.record(&rec(&format!("r{i}"), &format!("c{i}"), "api", Step::Deploy, Status::Passed)).unwrap();
    }
    let start = Barrier::new(2);
    let marks: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let failing = scope.spawn(|| {
            let store = FileStore::open(dir.path()).unwrap();
            start.wait();
            for i in 0..RUNS {
                store.record(&rec(&format!("r{i}"), &format!("c{i}"), "api", Step::Test, Status::Failed)).unwrap();
            }
        });
        let marking = scope.spawn(|| {
            let store = FileStore::open(dir.path()).unwrap();
            start.wait();
            (0..RUNS)
                .map(|i| store.mark_success(&format!("r{i}"), "prod").map(drop).map_err(|e| e.to_string()))
                .collect()
        });
        failing.join().unwrap();
        marking.join().unwrap()
    });

    // In the file's order: a run's mark, if any, comes before its failure, and only marked runs have one.
    let lines = whole_lines(store.path());
    let position = |run: &str, is_mark: bool| {
        lines.iter().position(|l| {
            l["run_id"] == run
                && if is_mark { l["kind"] == "success" } else { l["step"] == "test" && l["status"] == "failed" }
        })
    };
    for (i, mark) in marks.iter().enumerate() {
        let run = format!("r{i}");
        let failed_at = position(&run, false).unwrap_or_else(|| panic!("{run}: the failure was lost"));
        match (mark, position(&run, true)) {
            (Ok(()), Some(marked_at)) => assert!(marked_at < failed_at, "{run} was marked after its failure landed"),
            (Ok(()), None) => panic!("{run}: mark_success said yes but wrote no mark"),
            (Err(error), None) => assert!(error.contains("api test is failed"), "{run}: {error}"),
            (Err(error), Some(_)) => panic!("{run}: refused ({error}) yet a mark was written"),
        }
    }
    // The base is the newest mark in the file, whichever runs won the race.
    let newest = lines.iter().rev().find(|l| l["kind"] == "success").map(|l| l["commit"].as_str().unwrap().to_string());
    assert_eq!(store.last_success("prod").unwrap().map(|m| m.commit), newest);
}

#[test]
fn the_last_success_is_kept_per_environment_and_old_marks_count_for_prod() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    // A mark written before environments were kept: no `env`.
    append_raw(&store, r#"{"kind":"success","run_id":"r0","commit":"old","at":null}"#);
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, "old");
    assert_eq!(store.last_success("dev").unwrap(), None);

    store.record(&rec("r1", "aaa", "api", Step::Deploy, Status::Passed)).unwrap();
    assert_eq!(store.mark_success("r1", "dev").unwrap().env, "dev");
    // dev moved; prod did not.
    assert_eq!(store.last_success("dev").unwrap().unwrap().commit, "aaa");
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, "old");
    store.mark_success("r1", "prod").unwrap();
    assert_eq!(store.last_success("prod").unwrap().unwrap().commit, "aaa");
    // An environment name that could not be a name is refused.
    assert!(matches!(store.mark_success("r1", "../prod"), Err(Error::BadName { .. })));
}
