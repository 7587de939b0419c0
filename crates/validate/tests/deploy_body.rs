//! P1002 (a body over 51,200 bytes) only for templates deployed as a body: the top-level stacks
//! of `[deploy]`, or every template when there is no `[deploy]`. A nested template is deployed
//! by URL.

use std::path::Path;
use std::process::{Command, Output};

use test_support::GitRepo;

const VALIDATE: &str = r#"
[components.infra]
paths = ["cfn/**"]

[validate]
templates = ["cfn/**/*.yaml"]
"#;

const DEPLOY: &str = r#"
[deploy]
artifact_bucket = "artifacts-{env}"

[deploy.stacks.master]
template = "cfn/master.yaml"
stack_name = "app-{env}"
components = ["infra"]

[deploy.environments.dev]
region = "us-east-1"
"#;

/// A valid template padded with comments past 51,200 bytes.
fn big(resources: &str) -> String {
    let mut text = format!("AWSTemplateFormatVersion: \"2010-09-09\"\n{resources}");
    while text.len() <= 52_000 {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    text
}

fn repo(config: &str) -> GitRepo {
    let master = big(
        "Resources:\n  Child:\n    Type: AWS::CloudFormation::Stack\n    Metadata:\n      cfn-lint:\n        config:\n          ignore_checks: [W3002]\n    Properties:\n      TemplateURL: ./child.yaml\n",
    );
    let child = big("Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n");
    let repo = GitRepo::new();
    repo.commit_files(
        "init",
        &[
            ("pipeline.toml", config),
            ("cfn/master.yaml", &master),
            ("cfn/child.yaml", &child),
            (".gitignore", ".pipeline/\n"),
        ],
    );
    repo
}

fn validate(repo: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_validate")).arg("--repo").arg(repo).args(args).output().unwrap()
}

fn p1002(repo: &GitRepo) -> Vec<String> {
    let out = validate(repo.path(), &["--all", "--no-tools", "--format", "json"]);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "P1002")
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn only_the_top_level_stacks_of_deploy_get_p1002() {
    assert_eq!(p1002(&repo(&format!("{VALIDATE}{DEPLOY}"))), ["cfn/master.yaml"]);
}

#[test]
fn without_deploy_every_template_gets_p1002() {
    assert_eq!(p1002(&repo(VALIDATE)), ["cfn/child.yaml", "cfn/master.yaml"]);
}
