//! Tracked paths that are not plain files: named pipes, links to devices or out of the
//! repository, folders (submodules), huge files and names git could not show as UTF-8. Each is
//! a finding naming what it is (or, for a folder, skipped), never a hang, a huge read or silence.

use std::os::unix::fs::symlink;
use std::path::Path;

use validate::secrets::SecretScanner;
use validate::{Finding, Severity, check_templates, scan_secrets};

const TEMPLATE: &str = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n";

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

/// A repository folder with a good template, a FIFO, a link to `/dev/zero`, a link out of the
/// repository, a link inside it, and a folder.
fn hostile_repo() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let cfn = repo.path().join("cfn");
    std::fs::create_dir_all(cfn.join("vendored")).unwrap();
    std::fs::write(cfn.join("vendored/inner.yaml"), TEMPLATE).unwrap();
    std::fs::write(cfn.join("good.yaml"), TEMPLATE).unwrap();
    mkfifo(&cfn.join("pipe.yaml"));
    symlink("/dev/zero", cfn.join("zero.yaml")).unwrap();
    symlink("/etc/hostname", cfn.join("outside.yaml")).unwrap();
    symlink("good.yaml", cfn.join("inside.yaml")).unwrap();
    repo
}

/// Where `/etc/hostname` really is (it may itself be a link).
fn hostname() -> String {
    std::fs::canonicalize("/etc/hostname").unwrap().display().to_string()
}

fn paths(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("cfn/{n}")).collect()
}

fn summary(findings: &[Finding]) -> Vec<(&str, &str, Severity)> {
    findings.iter().map(|f| (f.path.as_str(), f.rule.as_str(), f.severity)).collect()
}

fn message<'a>(findings: &'a [Finding], path: &str) -> &'a str {
    &findings.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("no finding for {path}: {findings:#?}")).message
}

#[test]
fn templates_that_are_not_regular_files_in_the_repository_are_findings_and_folders_are_skipped() {
    let repo = hostile_repo();
    let templates = paths(&["good.yaml", "inside.yaml", "outside.yaml", "pipe.yaml", "vendored", "zero.yaml"]);
    // Once: the FIFO hung the stage, /dev/zero filled memory, /etc/hostname was read as a template.
    let findings = check_templates(repo.path(), &templates, &[], None);
    assert_eq!(
        summary(&findings),
        [
            ("cfn/outside.yaml", "E0000", Severity::Error),
            ("cfn/pipe.yaml", "E0000", Severity::Error),
            ("cfn/zero.yaml", "E0000", Severity::Error),
        ]
    );
    assert_eq!(
        message(&findings, "cfn/outside.yaml"),
        format!(
            "the template links outside the repository (to {}) and was not read: put the template itself in the repository",
            hostname()
        )
    );
    assert_eq!(message(&findings, "cfn/pipe.yaml"), "cannot read the template: is a named pipe, not a regular file");
    let zero = std::fs::canonicalize("/dev/zero").unwrap();
    assert!(
        message(&findings, "cfn/zero.yaml").contains(&format!("links outside the repository (to {})", zero.display()))
    );
}

#[test]
fn files_that_are_not_regular_files_in_the_repository_are_said_not_scanned() {
    let repo = hostile_repo();
    let files = paths(&["good.yaml", "inside.yaml", "outside.yaml", "pipe.yaml", "vendored", "zero.yaml"]);
    let findings = scan_secrets(repo.path(), &files, &SecretScanner::default());
    assert_eq!(
        summary(&findings),
        [
            ("cfn/outside.yaml", "S000", Severity::Warning),
            ("cfn/pipe.yaml", "S000", Severity::Warning),
            ("cfn/zero.yaml", "S000", Severity::Warning),
        ]
    );
    assert_eq!(
        message(&findings, "cfn/outside.yaml"),
        format!(
            "the file links outside the repository (to {}) and was not read or scanned for secrets: put the file itself in the repository",
            hostname()
        )
    );
    assert_eq!(
        message(&findings, "cfn/pipe.yaml"),
        "cannot read the file to scan it for secrets: is a named pipe, not a regular file"
    );
}

#[test]
fn a_file_over_the_read_bound_is_said_not_scanned() {
    let repo = tempfile::tempdir().unwrap();
    let big = std::fs::File::create(repo.path().join("disk.img")).unwrap();
    big.set_len(validate::secrets::MAX_READ_BYTES + 1).unwrap();
    let findings = scan_secrets(repo.path(), &["disk.img".to_string()], &SecretScanner::default());
    assert_eq!(summary(&findings), [("disk.img", "S000", Severity::Warning)]);
    assert!(
        message(&findings, "disk.img").starts_with("too large to scan (is larger than 67108864 bytes)"),
        "{findings:?}"
    );
}

#[test]
fn a_name_git_showed_lossily_is_said_not_read() {
    let repo = tempfile::tempdir().unwrap();
    // git ls-files gave `caf\xe9.py`; the name reaches validate as `caf\u{FFFD}.py`.
    let name = "caf\u{FFFD}.py".to_string();
    let findings = scan_secrets(repo.path(), std::slice::from_ref(&name), &SecretScanner::default());
    assert_eq!(summary(&findings), [(name.as_str(), "S000", Severity::Warning)]);
    assert!(message(&findings, &name).starts_with("the file name is not UTF-8"), "{findings:?}");
    let findings = check_templates(repo.path(), std::slice::from_ref(&name), &[], None);
    assert_eq!(summary(&findings), [(name.as_str(), "E0000", Severity::Error)]);
}

#[cfg(unix)]
#[test]
fn a_file_whose_name_is_not_utf8_is_scanned_and_named_with_escapes() {
    use std::os::unix::ffi::OsStrExt;
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("app")).unwrap();
    let real = repo.path().join("app").join(std::ffi::OsStr::from_bytes(b"caf\xe9.py"));
    std::fs::write(&real, "DB_PASSWORD = \"Velvet4Quokka8Jigsaw\"\n").unwrap();
    std::fs::write(
        repo.path().join("app/caf\u{FFFD}.txt"),
        "another file with the same lossy name but another extension\n",
    )
    .unwrap();
    // git ls-files gave `app/caf\xe9.py`; the name reaches validate as `app/caf\u{FFFD}.py`.
    let name = "app/caf\u{FFFD}.py".to_string();
    let findings = scan_secrets(repo.path(), std::slice::from_ref(&name), &SecretScanner::default());
    assert_eq!(summary(&findings), [("app/caf\\xE9.py", "S004", Severity::Error)], "{findings:?}");
    assert!(!findings[0].message.contains("Velvet4Quokka8Jigsaw"), "{findings:?}");
    // A template so named is checked too.
    let template = repo.path().join("app").join(std::ffi::OsStr::from_bytes(b"t\xe9.yaml"));
    std::fs::write(&template, "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    DependsOn: Missing\n").unwrap();
    let findings = check_templates(repo.path(), &["app/t\u{FFFD}.yaml".to_string()], &[], None);
    assert_eq!(summary(&findings), [("app/t\\xE9.yaml", "E3005", Severity::Error)], "{findings:?}");
}

#[test]
fn a_cfnlintrc_that_cannot_be_read_keeps_the_os_error_as_its_source_not_in_its_message() {
    let repo = tempfile::tempdir().unwrap();
    // A sparse file over the 1 MiB bound: refused before it is read.
    std::fs::File::create(repo.path().join(".cfnlintrc")).unwrap().set_len(2 * 1024 * 1024).unwrap();
    let error = validate::cfnlintrc::CfnLintRc::load(repo.path()).unwrap_err();
    assert_eq!(error.to_string(), format!("{}: cannot be read", repo.path().join(".cfnlintrc").display()));
    let source = std::error::Error::source(&error).expect("the OS error is the source");
    assert_eq!(
        source.downcast_ref::<std::io::Error>().map(std::io::Error::kind),
        Some(std::io::ErrorKind::FileTooLarge)
    );
}
