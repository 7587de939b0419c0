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
fn over_lambdas_unzipped_limit_the_binary_exits_1_naming_the_largest_file_and_publishes_nothing() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("fn")).unwrap();
    std::fs::write(repo.path().join("fn/index.py"), "def handler(e, c):\n    return 1\n").unwrap();
    // A sparse 260 MiB file: over the 250 MiB unzipped limit, without writing 260 MiB.
    std::fs::File::create(repo.path().join("fn/big.dat")).unwrap().set_len(260 * 1024 * 1024).unwrap();
    std::fs::write(repo.path().join("pipeline.toml"), "[lambda.functions.hello]\nsources = [\"fn\"]\n").unwrap();
    let out = repo.path().join("out");
    let result = packager(repo.path(), &["--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr
            .contains("function `hello` is 260.0 MiB unzipped (Lambda's limit: 250.0 MiB); largest: big.dat 260.0 MiB"),
        "{stderr}"
    );
    let published: Vec<_> =
        std::fs::read_dir(&out).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(published.is_empty(), "nothing is published over budget: {published:?}");
}

/// (device, inode, link count) of a file.
fn inode(path: &std::path::Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.dev(), meta.ino(), meta.nlink())
}

#[test]
fn a_runs_zips_are_hard_links_to_the_cache_and_an_unchanged_function_is_linked_again() {
    let repo = test_support::GitRepo::new();
    repo.commit_files(
        "init",
        &[
            ("pipeline.toml", "[lambda.functions.hello]\nsources = [\"fn\"]\n"),
            ("fn/index.py", "def handler(e, c):\n    return 1\n"),
            (".gitignore", ".pipeline/\n"),
        ],
    );
    let state = repo.path().join(".pipeline");
    let diff = serde_json::json!({
        "base": null, "base_reason": "test", "head": repo.head(), "worktree": false, "files": [],
        "global_inputs_changed": [], "components": {}, "flags": {}
    })
    .to_string();
    let mut zips = Vec::new();
    for run in ["run-1", "run-2"] {
        let run_dir = run_state::RunDir::create(&state, run).unwrap();
        run_dir.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
        let result = packager(repo.path(), &["--run-dir", run_dir.path.to_str().unwrap()]);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        zips.push(run_dir.packages_dir().join("hello.zip"));
    }
    let cached: Vec<_> = std::fs::read_dir(state.join("cache/packages")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(cached.len(), 1, "one zip in the cache: {cached:?}");
    let (dev, ino, links) = inode(&cached[0]);
    assert_eq!(links, 3, "the cached zip and one link in each run's packages/");
    for zip in &zips {
        assert_eq!(inode(zip), (dev, ino, links), "{} is not a link to {}", zip.display(), cached[0].display());
    }
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
