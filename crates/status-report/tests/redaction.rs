//! Redaction at the recorder, through the binary: every text a record takes (`--error`,
//! `--note`, the log's tail) keeps no secret in the store, the Markdown or the JSON report,
//! including the forms `set -x` prints for the common login commands.

use std::path::Path;
use std::process::{Command, Output};

fn status_report(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_status-report")).arg("--repo").arg(repo).args(args).output().unwrap()
}

/// One secret per form, each a value no other text contains.
const FORMS: &[(&str, &str)] = &[
    ("+ mysql -u root --password s3cr3t-mysql-long -h db", "s3cr3t-mysql-long"),
    ("+ mysql -u root -ps3cr3t-mysql-glued -h db", "s3cr3t-mysql-glued"),
    ("+ docker login -u ci -p s3cr3t-docker-p registry.example.com", "s3cr3t-docker-p"),
    ("+ docker login -u ci -p 's3cr3t-docker-quoted' registry.example.com", "s3cr3t-docker-quoted"),
    // A flag ending its line takes nothing from the next one, so the next login is still seen.
    ("+ docker login --password-stdin registry.example.com\n+ docker login --password-stdin", ""),
    ("+ docker login -u me -p \"s3cr3t-after-stdin\" registry.example.com", "s3cr3t-after-stdin"),
    ("+ podman login --password s3cr3t-podman registry.example.com", "s3cr3t-podman"),
    ("+ aws configure set aws_secret_access_key s3cr3t-aws-configure", "s3cr3t-aws-configure"),
    ("+ export 'DB_PASSWORD=s3cr3t with space'", "s3cr3t with space"),
];

#[test]
fn no_form_of_a_secret_survives_record_show_or_the_reports() {
    let repo = tempfile::tempdir().unwrap();
    let log = repo.path().join("test.log");
    let text: String = FORMS.iter().map(|(line, _)| format!("{line}\n")).collect();
    std::fs::write(&log, format!("{text}tests failed\n")).unwrap();
    let args = [
        "record",
        "--run",
        "r1",
        "--commit",
        "c0ffee",
        "--component",
        "api",
        "--step",
        "test",
        "--status",
        "failed",
        "--error",
        "login failed: password=s3cr3t-error-value",
        "--note",
        "key AKIAABCDEFGHIJKLMNOP used; docker login -p s3cr3t-note-docker",
        "--log",
        log.to_str().unwrap(),
    ];
    let out = status_report(repo.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let state = std::fs::read_to_string(repo.path().join(".pipeline/state.jsonl")).unwrap();
    let markdown = status_report(repo.path(), &["show", "--run", "r1", "--format", "markdown"]);
    let json = status_report(repo.path(), &["show", "--run", "r1", "--format", "json"]);
    let table = status_report(repo.path(), &["show", "--run", "r1"]);
    for out in [&markdown, &json, &table] {
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let texts = [
        ("state.jsonl", state),
        ("markdown", String::from_utf8_lossy(&markdown.stdout).into_owned()),
        ("json", String::from_utf8_lossy(&json.stdout).into_owned()),
        ("table", String::from_utf8_lossy(&table.stdout).into_owned()),
    ];
    let secrets = FORMS.iter().map(|(_, secret)| *secret).chain([
        "s3cr3t-error-value",
        "AKIAABCDEFGHIJKLMNOP",
        "s3cr3t-note-docker",
    ]);
    for secret in secrets.filter(|secret| !secret.is_empty()) {
        for (name, text) in &texts {
            assert!(!text.contains(secret), "{secret} kept in {name}:\n{text}");
        }
    }
    // What is not a secret stays readable.
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let details = &json["steps"][0]["details"];
    assert!(details["error"].as_str().unwrap().starts_with("login failed: password="), "{details}");
    assert!(details["log_tail"].as_str().unwrap().contains("docker login -u ci -p "), "{details}");
    assert!(details["log_tail"].as_str().unwrap().ends_with("tests failed"), "{details}");
}
