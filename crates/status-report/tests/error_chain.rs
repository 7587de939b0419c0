//! A warning about an error prints its chain (`message: cause`), each part once.

use std::process::Command;

#[test]
fn a_missing_log_warns_with_the_path_and_the_os_error_once() {
    let repo = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_status-report"))
        .arg("--repo")
        .arg(repo.path())
        .args(["record", "--run", "r1", "--commit", "abc", "--component", "api", "--step", "build"])
        .args(["--status", "failed", "--log", "no-such.log"])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // ENOENT's text as the OS gives it: before, only the path was printed and the cause was lost.
    let cause = std::io::Error::from_raw_os_error(2).to_string();
    assert!(
        stderr
            .lines()
            .any(|l| l
                == format!("status-report: warning: no-such.log: {cause}; recorded the step without its log tail")),
        "{stderr}"
    );
    assert_eq!(stderr.matches(&cause).count(), 1, "{stderr}");
}
