//! An error's cause is its typed `source()`, never also in its one-line message; the binary
//! prints the chain, so a user sees the cause once.

use std::error::Error as _;
use std::process::Command;

use source_diff::Error;
use test_support::GitRepo;

#[test]
fn git_not_runnable_keeps_the_os_error_as_its_source() {
    let os = Command::new("/nonexistent/git").output().unwrap_err();
    let cause_text = os.to_string();
    let error = Error::GitNotRunnable { source: os };
    let top = error.to_string();
    assert_eq!(top, "cannot run git; install git and put it on PATH");
    assert!(!top.contains(&cause_text), "{top}");
    let source = error.source().expect("a source").downcast_ref::<std::io::Error>().expect("the OS error");
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn without_git_on_path_the_binary_prints_the_message_and_its_cause_once() {
    let repo = GitRepo::new();
    repo.commit_files("initial", &[("pipeline.toml", "[components.api]\npaths = [\"api/**\"]\n"), ("api/a.py", "1\n")]);
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_source-diff"))
        .arg("--repo")
        .arg(repo.path())
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim_end(),
        // ENOENT's text, as the OS gives it: the cause, once, after the message.
        format!(
            "source-diff: cannot run git; install git and put it on PATH: {}",
            std::io::Error::from_raw_os_error(2)
        )
    );
}
