//! No finding quotes a secret: a value the secret scanner flags anywhere in the run, a
//! `NoEcho` parameter's default, a value of a property whose name says it is secret, and a
//! high-entropy literal are `[REDACTED]` in native and tool findings, in every format and in
//! the run's `validate.json`; a file whose name is not UTF-8 is scanned like any other.

use std::path::Path;
use std::process::{Command, Output};

use test_support::GitRepo;

const CONFIG: &str = r#"
[components.infra]
paths = ["cfn/**", "app/**"]

[validate]
templates = ["cfn/**/*.yaml"]

[validate.tools.fake-lint]
components = ["infra"]
run = "sh tools/fake-lint.sh"
format = "cfn-lint"
"#;

/// A password written in the application's settings (S004 flags it); the template's `Port`
/// holds the same string. It reads as words (no high entropy by itself), so nothing but the scanner's finding marks it.
const PASSWORD: &str = "Velvet4Quokka8Jigsaw";
/// A `NoEcho` parameter's default, low in entropy; also written in another property.
const NO_ECHO: &str = "letmein-2024";
/// A literal under a secret-named property (`MasterUserPassword`), also written elsewhere.
const NAMED: &str = "opensesame-77";

fn template() -> String {
    format!(
        r#"AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  DbPassword:
    Type: String
    NoEcho: true
    Default: {NO_ECHO}
Resources:
  Db:
    Type: AWS::RDS::DBInstance
    Properties:
      Engine: postgres
      DBInstanceClass: db.t4g.micro
      AllocatedStorage: "20"
      Port: "{PASSWORD}"
      MasterUsername: admin
      MasterUserPassword: !Ref DbPassword
  Replica:
    Type: AWS::RDS::DBInstance
    Properties:
      Engine: postgres
      DBInstanceClass: db.t4g.micro
      AllocatedStorage: "20"
      Port: "{NO_ECHO}"
      MasterUsername: admin
      MasterUserPassword: "{NAMED}"
  Other:
    Type: AWS::RDS::DBInstance
    Properties:
      Engine: postgres
      DBInstanceClass: db.t4g.micro
      AllocatedStorage: "20"
      Port: "{NAMED}"
"#
    )
}

/// A stand-in for cfn-lint whose messages quote the values, as cfn-lint's do.
fn fake_lint() -> String {
    format!(
        r#"cat <<'JSON'
[{{"Rule": {{"Id": "E3031"}}, "Level": "Error", "Message": "'{PASSWORD}' does not match '^\\d*$'", "Filename": "cfn/db.yaml",
  "Location": {{"Start": {{"LineNumber": 14, "ColumnNumber": 6}}, "End": {{"LineNumber": 14, "ColumnNumber": 9}}}}}},
 {{"Rule": {{"Id": "W1031"}}, "Level": "Warning", "Message": "'{NO_ECHO}' does not match '^\\d*$' when 'Ref' is resolved", "Filename": "cfn/db.yaml",
  "Location": {{"Start": {{"LineNumber": 16, "ColumnNumber": 7}}, "End": {{"LineNumber": 16, "ColumnNumber": 9}}}}}},
 {{"Rule": {{"Id": "E9999"}}, "Level": "Error", "Message": "value {NAMED} is odd", "Filename": "cfn/db.yaml",
  "Location": {{"Start": {{"LineNumber": 26, "ColumnNumber": 7}}, "End": {{"LineNumber": 26, "ColumnNumber": 9}}}}}}]
JSON
exit 2
"#
    )
}

fn repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.commit_files(
        "init",
        &[
            ("pipeline.toml", CONFIG),
            ("cfn/db.yaml", &template()),
            ("tools/fake-lint.sh", &fake_lint()),
            ("app/settings.py", &format!("DB_PASSWORD = \"{PASSWORD}\"\n")),
            (".gitignore", ".pipeline/\n"),
        ],
    );
    repo
}

fn validate(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_validate")).arg("--repo").arg(repo).args(args).output().unwrap()
}

fn assert_masked(what: &str, text: &str) {
    for secret in [PASSWORD, NO_ECHO, NAMED] {
        assert!(!text.contains(secret), "{what} quotes {secret}:\n{text}");
    }
    assert!(text.contains("[REDACTED]"), "{what} masks nothing:\n{text}");
}

#[test]
fn secrets_are_masked_in_native_and_tool_findings_in_every_format() {
    let repo = repo();
    for format in ["human", "json", "junit", "sarif"] {
        let out = validate(repo.path(), &["--all", "--format", format]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{format}: {stdout}{stderr}");
        assert_masked(format, &format!("{stdout}{stderr}"));
        if format == "human" {
            // The findings are there, only the values hidden.
            assert!(stdout.contains("app/settings.py:1:"), "{stdout}");
            assert!(
                stdout.contains("cfn/db.yaml:14:7: E3031 error: AWS::RDS::DBInstance Port: '[REDACTED]'"),
                "{stdout}"
            );
            assert!(stdout.contains("cfn/db.yaml:23:7: E3031"), "{stdout}");
            assert!(stdout.contains("cfn/db.yaml:32:7: E3031"), "{stdout}");
            assert!(stdout.contains("W1031 warning: '[REDACTED]' does not match"), "{stdout}");
            assert!(stdout.contains("E9999 error: value [REDACTED] is odd"), "{stdout}");
        }
    }
    // The cache holds no secret either.
    let cache = repo.path().join(".pipeline/cache/validate");
    let mut cached = 0;
    for entry in std::fs::read_dir(&cache).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert_masked("the cache", &text);
        cached += 1;
    }
    assert!(cached > 0, "nothing cached in {}", cache.display());
}

#[test]
fn validate_json_and_the_step_record_never_quote_a_secret() {
    let repo = repo();
    let state = repo.path().join(".pipeline");
    let handle = source_diff::Repo::open(repo.path()).unwrap();
    let components = source_diff::Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let store = run_state::FileStore::open(&state).unwrap();
    let request =
        source_diff::BaseRequest { everything: Some("every component, for the test".into()), ..Default::default() };
    let (run_dir, _) = source_diff::begin_run(&handle, &components, &request, "HEAD", false, &store, &state).unwrap();
    let out = validate(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let json = std::fs::read_to_string(run_dir.path.join("validate.json")).unwrap();
    assert_masked("validate.json", &json);
    let store = std::fs::read_to_string(state.join("state.jsonl")).unwrap();
    for secret in [PASSWORD, NO_ECHO, NAMED] {
        assert!(!store.contains(secret), "the store quotes {secret}");
    }
}
