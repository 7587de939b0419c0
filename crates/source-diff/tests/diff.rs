//! source-diff against real git repositories with scripted histories.

use std::path::Path;
use std::process::Command;

use source_diff::{BaseRequest, Components, DiffReport, Error, FileStatus, Repo};
use test_support::GitRepo;

const CONFIG: &str = r#"
[diff]
global_inputs = ["pipeline.toml"]

[components.shared]
paths = ["shared/**"]

[components.api]
paths = ["api/**"]
exclude = ["**/*.md"]
depends_on = ["shared"]
test = { run = "true" }

[components.web]
paths = ["web/**"]
test = { run = "true" }

[components.infra]
paths = ["cfn/*.yaml"]
depends_on = ["api"]
"#;

fn repo_with_config() -> GitRepo {
    let repo = GitRepo::new();
    repo.commit_files(
        "initial",
        &[
            ("pipeline.toml", CONFIG),
            ("shared/util.py", "x = 1\n"),
            ("api/handler.py", "def handler(): pass\n"),
            ("api/README.md", "# api\n"),
            ("web/app.js", "console.log(1)\n"),
            ("cfn/main.yaml", "Resources: {}\n"),
            ("docs/intro.md", "hello\n"),
        ],
    );
    repo
}

fn diff(repo: &GitRepo, request: &BaseRequest) -> Result<DiffReport, Error> {
    let handle = Repo::open(repo.path()).unwrap();
    let components = Components::load(&repo.path().join("pipeline.toml")).unwrap();
    source_diff::diff(&handle, &components, request, "HEAD", false)
}

fn changed(report: &DiffReport) -> Vec<&str> {
    report.changed().collect()
}

#[test]
fn first_commit_diffs_against_the_empty_tree() {
    let repo = repo_with_config();
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(report.base.as_deref(), Some("4b825dc642cb6eb9a060e54bf8d69288fbee4904"));
    assert!(report.base_reason.contains("first commit"), "{}", report.base_reason);
    assert_eq!(changed(&report), ["api", "infra", "shared", "web"]);
    assert_eq!(report.global_inputs_changed, ["pipeline.toml"]);
}

#[test]
fn a_change_marks_its_owner_and_dependents_only() {
    let repo = repo_with_config();
    repo.commit_files("touch shared", &[("shared/util.py", "x = 2\n")]);
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(report.base_reason, "first parent of head");
    assert_eq!(changed(&report), ["api", "infra", "shared"]);
    assert_eq!(report.components["shared"].files, ["shared/util.py"]);
    assert!(report.components["api"].files.is_empty());
    assert_eq!(report.components["api"].because_of, ["shared"]);
    // Transitive: infra depends on api, which depends on shared.
    assert_eq!(report.components["infra"].because_of, ["shared"]);
    assert!(!report.components["web"].changed);
    assert_eq!(report.flags["api_tests_required"], true);
    assert_eq!(report.flags["web_tests_required"], false);
    assert_eq!(report.flags["infra_deploy_required"], true);
    // infra has no test command: nothing to test even though it changed.
    assert_eq!(report.flags["infra_tests_required"], false);
}

#[test]
fn excluded_and_unowned_files_mark_nothing() {
    let repo = repo_with_config();
    repo.commit_files(
        "docs",
        &[("api/README.md", "# api v2\n"), ("docs/intro.md", "hi\n"), ("cfn/nested/x.yaml", "a: 1\n")],
    );
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(changed(&report), Vec::<&str>::new());
    assert_eq!(report.files.len(), 3);
}

#[test]
fn a_rename_marks_both_owners() {
    let repo = repo_with_config();
    repo.git(&["mv", "web/app.js", "api/app.js"]);
    repo.commit_all("move app.js from web to api");
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(changed(&report), ["api", "infra", "web"]);
    let statuses: Vec<_> = report.files.iter().map(|f| (f.path.as_str(), f.status)).collect();
    assert_eq!(statuses, [("api/app.js", FileStatus::Added), ("web/app.js", FileStatus::Deleted)]);
}

#[test]
fn a_delete_marks_its_owner() {
    let repo = repo_with_config();
    repo.remove("web/app.js");
    repo.commit_all("delete");
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(changed(&report), ["web"]);
    assert_eq!(report.components["web"].files, ["web/app.js"]);
    assert_eq!(report.files[0].status, FileStatus::Deleted);
}

#[test]
fn a_global_input_marks_every_component() {
    let repo = repo_with_config();
    repo.commit_files("config", &[("pipeline.toml", &format!("{CONFIG}\n# comment\n"))]);
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(changed(&report), ["api", "infra", "shared", "web"]);
    assert_eq!(report.global_inputs_changed, ["pipeline.toml"]);
}

#[test]
fn merges_use_the_first_parent_on_main_and_the_merge_base_on_a_branch() {
    let repo = repo_with_config();
    let root = repo.head();
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.commit_files("api work", &[("api/handler.py", "def handler(): return 1\n")]);
    // On the branch: the merge-base with main is the base.
    let on_branch = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(on_branch.base.as_deref(), Some(root.as_str()));
    assert_eq!(on_branch.base_reason, "merge-base with main");
    assert_eq!(changed(&on_branch), ["api", "infra"]);

    repo.git(&["checkout", "-q", "main"]);
    let web = repo.commit_files("web work", &[("web/app.js", "console.log(2)\n")]);
    repo.git(&["merge", "-q", "--no-ff", "--no-edit", "feature"]);
    // On main after the merge: the merge brought in api, relative to main's previous tip.
    let merged = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(merged.base.as_deref(), Some(web.as_str()));
    assert_eq!(changed(&merged), ["api", "infra"]);
    // From before both: everything the two branches did.
    let both = diff(&repo, &BaseRequest { explicit: Some(root), ..Default::default() }).unwrap();
    assert_eq!(changed(&both), ["api", "infra", "web"]);
}

#[test]
fn the_last_successful_commit_is_the_base_while_it_is_an_ancestor() {
    let repo = repo_with_config();
    let deployed = repo.commit_files("web", &[("web/app.js", "1\n")]);
    repo.commit_files("api", &[("api/handler.py", "1\n")]);
    repo.commit_files("shared", &[("shared/util.py", "1\n")]);
    let request = BaseRequest { last_success: Some(deployed.clone()), ..Default::default() };
    let report = diff(&repo, &request).unwrap();
    assert_eq!(report.base.as_deref(), Some(deployed.as_str()));
    assert_eq!(report.base_reason, "commit of the last successful run");
    assert_eq!(changed(&report), ["api", "infra", "shared"]);
}

#[test]
fn a_base_that_vanished_after_a_force_push_falls_back_with_the_reason() {
    let repo = repo_with_config();
    let deployed = repo.commit_files("web", &[("web/app.js", "1\n")]);
    // Force push: the deployed commit is rewritten away.
    repo.git(&["reset", "-q", "--hard", "HEAD~1"]);
    let head_parent = repo.head();
    repo.commit_files("api instead", &[("api/handler.py", "2\n")]);
    let report = diff(&repo, &BaseRequest { last_success: Some(deployed.clone()), ..Default::default() }).unwrap();
    assert_eq!(report.base.as_deref(), Some(head_parent.as_str()));
    assert!(report.base_reason.starts_with("first parent of head; last successful commit"), "{}", report.base_reason);
    assert!(report.base_reason.contains("not an ancestor of head"), "{}", report.base_reason);
    assert_eq!(changed(&report), ["api", "infra"]);

    // After gc the object is gone altogether.
    repo.git(&["reflog", "expire", "--expire=now", "--all"]);
    repo.git(&["gc", "-q", "--prune=now"]);
    let report = diff(&repo, &BaseRequest { last_success: Some(deployed), ..Default::default() }).unwrap();
    assert!(report.base_reason.contains("no longer exists"), "{}", report.base_reason);
    assert_eq!(changed(&report), ["api", "infra"]);
}

fn shallow_clone(repo: &GitRepo, depth: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("git")
        .args(["clone", "-q", "--no-local", "--depth", &depth.to_string()])
        .arg(format!("file://{}", repo.path().display()))
        .arg(dir.path().join("clone"))
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

fn diff_at(path: &Path, request: &BaseRequest) -> Result<DiffReport, Error> {
    let handle = Repo::open(path).unwrap();
    let components = Components::load(&path.join("pipeline.toml")).unwrap();
    source_diff::diff(&handle, &components, request, "HEAD", false)
}

#[test]
fn a_shallow_clone_that_misses_the_base_is_an_error_or_everything_on_request() {
    let repo = repo_with_config();
    let first = repo.head();
    repo.commit_files("api", &[("api/handler.py", "1\n")]);
    let dir = shallow_clone(&repo, 1);
    let clone = dir.path().join("clone");

    let error = diff_at(&clone, &BaseRequest::default()).unwrap_err();
    assert!(matches!(error, Error::ShallowHistory { .. }));
    let message = error.to_string();
    assert!(message.contains("git fetch --deepen") && message.contains("--all-on-missing-base"), "{message}");

    let error = diff_at(&clone, &BaseRequest { explicit: Some(first.clone()), ..Default::default() }).unwrap_err();
    assert!(error.to_string().contains(&format!("--base {first} is not in the fetched history")), "{error}");

    let report = diff_at(&clone, &BaseRequest { all_on_missing_base: true, ..Default::default() }).unwrap();
    assert_eq!(report.base, None);
    assert!(report.base_reason.contains("every component marked changed"), "{}", report.base_reason);
    assert_eq!(changed(&report), ["api", "infra", "shared", "web"]);

    // Deep enough: the parent is there, so the diff is exact.
    let dir = shallow_clone(&repo, 2);
    let report = diff_at(&dir.path().join("clone"), &BaseRequest::default()).unwrap();
    assert_eq!(changed(&report), ["api", "infra"]);
}

#[test]
fn worktree_changes_count_only_when_asked() {
    let repo = repo_with_config();
    repo.commit_files("web", &[("web/app.js", "1\n")]);
    repo.write("api/handler.py", "uncommitted\n");
    repo.write("shared/new_untracked.py", "new\n");
    let handle = Repo::open(repo.path()).unwrap();
    let components = Components::load(&repo.path().join("pipeline.toml")).unwrap();
    let committed = source_diff::diff(&handle, &components, &BaseRequest::default(), "HEAD", false).unwrap();
    assert_eq!(changed(&committed), ["web"]);
    let local = source_diff::diff(&handle, &components, &BaseRequest::default(), "HEAD", true).unwrap();
    assert!(local.worktree);
    assert_eq!(changed(&local), ["api", "infra", "shared", "web"]);
    assert!(local.files.iter().any(|f| f.path == "shared/new_untracked.py" && f.status == FileStatus::Added));
}

#[test]
fn unknown_revisions_and_non_repositories_are_clear_errors() {
    let repo = repo_with_config();
    let error =
        diff(&repo, &BaseRequest { explicit: Some("no-such-branch".into()), ..Default::default() }).unwrap_err();
    assert_eq!(
        error.to_string(),
        "base `no-such-branch` does not name a commit in this repository; check the name, or fetch the branch or tag it is on"
    );
    let plain = tempfile::tempdir().unwrap();
    let error = Repo::open(plain.path()).unwrap_err();
    assert!(error.to_string().contains("is not a git repository"), "{error}");
}

#[test]
fn every_bad_config_fixture_gives_its_expected_one_line_error() {
    let dir = test_support::workspace_root().join("fixtures/bad-config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("first line: # expect: …");
        let name = Path::new(path.file_name().unwrap());
        let error = Components::parse(name, &text).expect_err(&path.display().to_string());
        assert_eq!(error.to_string(), expected, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} fixtures found in {}", dir.display());
}

#[test]
fn the_sample_monorepo_config_loads_and_maps_its_history() {
    let repo = test_support::sample_monorepo();
    repo.commit_files("requirements bump", &[("lambda/requirements.txt", "requests==2.32.4\n")]);
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(
        changed(&report),
        [
            "api-handler",
            "execution-finder",
            "execution-poller",
            "frontend-builder",
            "infra",
            "lambda-deps",
            "orchestration"
        ]
    );
    std::fs::write(repo.path().join("frontend/src/app.js"), "// changed\n").unwrap();
    repo.commit_all("frontend change");
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(changed(&report), ["frontend", "frontend-builder", "infra"]);
    assert_eq!(report.flags["frontend_deploy_required"], true);
    assert_eq!(report.flags["frontend_builder_tests_required"], true);
    assert_eq!(report.flags["api_handler_tests_required"], false);
}

fn source_diff_bin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_source-diff")).args(args).output().unwrap()
}

#[test]
fn the_binary_prints_env_and_github_outputs() {
    let repo = repo_with_config();
    repo.commit_files("web", &[("web/app.js", "2\n")]);
    let root = repo.path().to_str().unwrap();
    let out = source_diff_bin(&["--repo", root, "--format", "env"]);
    assert!(out.status.success());
    let env = String::from_utf8(out.stdout).unwrap();
    assert!(env.lines().any(|l| l == "web_tests_required=true"), "{env}");
    assert!(env.lines().any(|l| l == "api_tests_required=false"), "{env}");

    let out = source_diff_bin(&["--repo", root, "--format", "github"]);
    let github = String::from_utf8(out.stdout).unwrap();
    assert!(github.lines().any(|l| l == r#"changed_components=["web"]"#), "{github}");
    assert!(github.lines().any(|l| l == "any_changed=true"), "{github}");

    let json_path = repo.path().join(".pipeline/diff.json");
    let out = source_diff_bin(&["--repo", root, "--output", json_path.to_str().unwrap()]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(json["components"]["web"]["changed"], true);
    assert_eq!(json["head"], repo.head());
    assert_eq!(json["flags"]["web_deploy_required"], true);
}

#[test]
fn the_binary_fails_with_one_line_and_exit_2() {
    let repo = repo_with_config();
    let out = source_diff_bin(&["--repo", repo.path().to_str().unwrap(), "--base", "v9.9.9"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("source-diff: base `v9.9.9` does not name a commit"), "{stderr}");

    let not_git = tempfile::tempdir().unwrap();
    let out = source_diff_bin(&["--repo", not_git.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a git repository"));
}
