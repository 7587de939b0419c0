//! The `lambda-packager` binary: what a user sees and its exit codes.

use std::process::Command;

fn packager(repo: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lambda-packager")).arg("--repo").arg(repo).args(args).output().unwrap()
}

#[test]
fn builds_into_out_and_reports_code_sha256() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("fn")).unwrap();
    std::fs::write(repo.path().join("fn/index.py"), "def handler(e, c):\n    return 1\n").unwrap();
    std::fs::write(repo.path().join("fn/README.md"), "left out by default\n").unwrap();
    std::fs::write(repo.path().join("pipeline.toml"), "[lambda.functions.hello]\nsources = [\"fn\"]\n").unwrap();
    let out = repo.path().join("out");
    let result = packager(repo.path(), &["--out", out.to_str().unwrap(), "--json"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&result.stdout).unwrap();
    assert_eq!(manifest["packages"][0]["name"], "hello");
    assert_eq!(manifest["packages"][0]["files"], 1);
    assert!(out.join("hello.zip").is_file() && out.join("manifest.json").is_file());

    let result = packager(repo.path(), &["--out", out.to_str().unwrap(), "--only", "nope"]);
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("lambda-packager: no function `nope` in [lambda.functions]"), "{stderr}");
}

#[test]
fn a_config_mistake_names_the_key_and_line() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        "[lambda.functions.hello]\nsources = [\"fn\"]\nrequirements = \"r.txt\"\ndependencies_dir = \"deps\"\n",
    )
    .unwrap();
    let result = packager(repo.path(), &["--out", "x"]);
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.trim_end().ends_with(
            "pipeline.toml:4: lambda.functions.hello.dependencies_dir: set `requirements` or `dependencies_dir`, not both"
        ),
        "{stderr}"
    );
}

#[test]
fn without_a_run_the_error_names_out() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::write(repo.path().join("pipeline.toml"), "[lambda.functions.hello]\nsources = [\"fn\"]\n").unwrap();
    let result = packager(repo.path(), &[]);
    assert_eq!(result.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.trim_end().ends_with("; or pass --out DIR to build without a run"), "{stderr}");
}
