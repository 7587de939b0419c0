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

/// A function whose zip ships another component's build output (`[lambda.functions.*.include]`)
/// changes with that component: a site-only commit must repackage, test and deploy it.
#[test]
fn a_component_shipping_another_ones_build_output_changes_with_it() {
    let config = format!(
        "{CONFIG}\n[components.builder]\npaths = [\"builder/**\"]\n\n[lambda.functions.site-builder]\nsources = [\"builder\"]\ncomponent = \"builder\"\nruntime = \"python3.12\"\n[[lambda.functions.site-builder.include]]\nfrom = \"web/dist\"\nto = \"dist\"\ncomponent = \"web\"\n"
    );
    let repo = GitRepo::new();
    repo.commit_files("initial", &[("pipeline.toml", &config), ("web/app.js", "1\n"), ("builder/b.py", "x = 1\n")]);
    repo.commit_files("site only", &[("web/app.js", "2\n")]);
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(changed(&report), ["builder", "web"]);
    assert_eq!(report.components["builder"].because_of, ["web"]);
    assert_eq!(report.flags["builder_deploy_required"], true);
    // And not the other way round: the builder's own change leaves the site alone.
    repo.commit_files("builder only", &[("builder/b.py", "x = 2\n")]);
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    assert_eq!(changed(&report), ["builder"]);
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

/// The environment the last success deployed to holds nothing any more (the embedded emulator
/// was replaced): every component is marked changed with the reason, and `--base` still wins.
#[test]
fn everything_is_changed_when_the_last_deploys_are_gone_unless_a_base_is_given() {
    let repo = repo_with_config();
    let deployed = repo.commit_files("web", &[("web/app.js", "1\n")]);
    repo.commit_files("api", &[("api/handler.py", "1\n")]);
    let gone = "the emulator is gone".to_string();
    let request =
        BaseRequest { last_success: Some(deployed.clone()), everything: Some(gone.clone()), ..Default::default() };
    let report = diff(&repo, &request).unwrap();
    assert_eq!(report.base, None);
    assert!(report.base_reason.contains(&gone), "{}", report.base_reason);
    assert_eq!(changed(&report), ["api", "infra", "shared", "web"]);
    let explicit = BaseRequest { explicit: Some(deployed), everything: Some(gone), ..Default::default() };
    assert_eq!(changed(&diff(&repo, &explicit).unwrap()), ["api", "infra"]);
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
    assert!(
        report.base_reason.contains("not an ancestor of head (another branch, or history rewritten)"),
        "{}",
        report.base_reason
    );
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
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = String::from_utf8(out.stdout).unwrap();
    assert!(env.lines().any(|l| l == "web_tests_required=true"), "{env}");
    assert!(env.lines().any(|l| l == "api_tests_required=false"), "{env}");

    let out = source_diff_bin(&["--repo", root, "--format", "github"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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

// ---- shallow clones ----

/// `origin`: main m0 (everything) → m1 (web) → m2 (cfn) → m3 (web); `feature` forks at m1:
/// f1 (api) → f2 (api) → f3 (web). The full answer for feature is api, infra, web (from m1);
/// its first parent alone would say web only.
struct Layout {
    origin: GitRepo,
    m1: String,
    m2: String,
    f2: String,
}

fn layout() -> Layout {
    let origin = repo_with_config();
    let m1 = origin.commit_files("m1 web", &[("web/app.js", "m1\n")]);
    origin.git(&["checkout", "-q", "-b", "feature"]);
    origin.commit_files("f1 api", &[("api/handler.py", "f1\n")]);
    let f2 = origin.commit_files("f2 api", &[("api/handler.py", "f2\n")]);
    origin.commit_files("f3 web", &[("web/app.js", "f3\n")]);
    origin.git(&["checkout", "-q", "main"]);
    let m2 = origin.commit_files("m2 cfn", &[("cfn/main.yaml", "m2: 1\n")]);
    origin.commit_files("m3 web", &[("web/app.js", "m3\n")]);
    Layout { origin, m1, m2, f2 }
}

fn clone_with(repo: &GitRepo, args: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("git")
        .args(["clone", "-q"])
        .args(args)
        .arg(format!("file://{}", repo.path().display()))
        .arg(dir.path().join("clone"))
        .output()
        .unwrap();
    assert!(out.status.success(), "clone {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Exit 0 with this base and these changed components.
    Diff(String, Vec<String>),
    /// Exit 2 with the shallow-history error.
    Shallow,
}

fn run_cli(clone: &Path, extra: &[&str]) -> (Outcome, serde_json::Value) {
    let mut args = vec!["--repo", clone.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = source_diff_bin(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.code() == Some(2) {
        assert!(stderr.contains("this clone is shallow"), "{stderr}");
        assert!(stderr.contains("git fetch --deepen=") && stderr.contains("--unshallow"), "{stderr}");
        assert!(stderr.contains("--all-on-missing-base"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        return (Outcome::Shallow, serde_json::Value::Null);
    }
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let changed = json["components"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, c)| c["changed"] == true)
        .map(|(n, _)| n.clone())
        .collect();
    (Outcome::Diff(json["base"].as_str().unwrap_or("none").to_string(), changed), json)
}

#[test]
fn shallow_clones_of_every_depth_and_layout_are_exact_or_an_error() {
    let l = layout();
    let all: Vec<String> = ["api", "infra", "shared", "web"].map(String::from).to_vec();
    let diff =
        |base: &str, names: &[&str]| Outcome::Diff(base.to_string(), names.iter().map(|s| s.to_string()).collect());
    let cases: Vec<(&str, Vec<&str>, [Outcome; 3])> = vec![
        // On main: the merge-base with origin/main is head, so the first parent (m2) is right once it is there.
        ("main", vec![], [Outcome::Shallow, diff(&l.m2, &["web"]), diff(&l.m2, &["web"])]),
        // A feature branch with origin/main fetched: only a merge-base is right; head^1 (f2) would say `web`.
        (
            "feature, origin/main fetched",
            vec!["--no-single-branch", "--branch", "feature"],
            [Outcome::Shallow, Outcome::Shallow, diff(&l.m1, &["api", "infra", "web"])],
        ),
        // A feature branch alone: no default branch to compare with, as in a full single-branch clone.
        (
            "feature, single branch",
            vec!["--single-branch", "--branch", "feature"],
            [Outcome::Shallow, diff(&l.f2, &["web"]), diff(&l.f2, &["web"])],
        ),
    ];
    for (name, args, expected) in cases {
        for (depth, expected) in [1, 2, 5].into_iter().zip(expected) {
            let depth_text = depth.to_string();
            let mut clone_args = vec!["--depth", depth_text.as_str()];
            clone_args.extend(&args);
            let dir = clone_with(&l.origin, &clone_args);
            let clone = dir.path().join("clone");
            let (got, json) = run_cli(&clone, &[]);
            assert_eq!(got, expected, "{name}, depth {depth}: {json}");
            if expected == Outcome::Shallow {
                let (got, json) = run_cli(&clone, &["--all-on-missing-base"]);
                assert_eq!(got, Outcome::Diff("none".into(), all.clone()), "{name}, depth {depth}");
                let reason = json["base_reason"].as_str().unwrap();
                assert!(reason.contains("every component marked changed"), "{reason}");
            }
        }
    }
}

#[test]
fn in_a_shallow_clone_a_missing_or_unreachable_last_success_is_an_error() {
    let l = layout();
    let dir = clone_with(&l.origin, &["--depth", "2"]);
    let clone = dir.path().join("clone");
    // m1 is cut off: whether it is head's ancestor cannot be told.
    let request = BaseRequest { last_success: Some(l.m1.clone()), ..Default::default() };
    let error = diff_at(&clone, &request).unwrap_err();
    assert!(matches!(error, Error::ShallowHistory { .. }), "{error}");
    assert!(error.to_string().contains(&l.m1[..12]), "{error}");
    let report = diff_at(&clone, &BaseRequest { all_on_missing_base: true, ..request }).unwrap();
    assert_eq!(report.base, None);
    assert_eq!(changed(&report), ["api", "infra", "shared", "web"]);
    // m2 is there and an ancestor: it is the base.
    let report = diff_at(&clone, &BaseRequest { last_success: Some(l.m2.clone()), ..Default::default() }).unwrap();
    assert_eq!(report.base.as_deref(), Some(l.m2.as_str()));
    assert_eq!(changed(&report), ["web"]);
}

// ---- git spawns per call ----

/// A `git` first on PATH that logs each call and runs the real one.
fn logging_git() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let real = Command::new("sh").args(["-c", "command -v git"]).output().unwrap();
    let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let script = dir.path().join("git");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec '{real}' \"$@\"\n", log.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    (dir, log, path)
}

fn counted_cli(repo: &Path, args: &[&str]) -> (serde_json::Value, Vec<String>) {
    let (_dir, log, path) = logging_git();
    let out = Command::new(env!("CARGO_BIN_EXE_source-diff"))
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let calls = std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
    (serde_json::from_slice(&out.stdout).unwrap(), calls)
}

#[test]
fn one_cli_call_spawns_at_most_two_gits() {
    let l = layout();
    let repo = l.origin.path();
    // On main, the default branch: merge-base is head, so the first parent.
    let (json, calls) = counted_cli(repo, &[]);
    assert_eq!(json["base"], l.origin.git(&["rev-parse", "HEAD^"]));
    assert!(calls.len() <= 2, "{calls:#?}");
    // On a feature branch: the merge-base with main.
    l.origin.git(&["checkout", "-q", "feature"]);
    let (json, calls) = counted_cli(repo, &[]);
    assert_eq!(json["base"], l.m1.as_str());
    assert_eq!(json["components"]["api"]["changed"], true);
    assert!(calls.len() <= 2, "{calls:#?}");
    // With an origin/main too (a clone), on the branch.
    let dir = clone_with(&l.origin, &["--branch", "feature"]);
    let (json, calls) = counted_cli(&dir.path().join("clone"), &[]);
    assert_eq!(json["base"], l.m1.as_str());
    assert!(calls.len() <= 2, "{calls:#?}");
    // Explicit full ids: one diff.
    let head = l.origin.head();
    let (json, calls) = counted_cli(repo, &["--base", &l.m2, "--head", &head]);
    assert_eq!(json["base"], l.m2.as_str());
    assert_eq!(json["head"], head.as_str());
    assert!(calls.len() <= 2, "{calls:#?}");
}

// ---- the state folder ----

#[test]
fn the_state_folder_is_never_in_the_diff() {
    let repo = repo_with_config();
    // No .gitignore: nothing keeps .pipeline/ out but source-diff itself.
    repo.commit_files("tracked state by mistake", &[(".pipeline/state.jsonl", "{}\n"), ("web/app.js", "2\n")]);
    repo.write(".pipeline/runs/LATEST", "x\n");
    repo.write(".pipeline/state.jsonl", "{}\n{}\n");
    let handle = Repo::open(repo.path()).unwrap();
    let components = Components::load(&repo.path().join("pipeline.toml")).unwrap();
    for worktree in [false, true] {
        let report = source_diff::diff(&handle, &components, &BaseRequest::default(), "HEAD", worktree).unwrap();
        let paths: Vec<&str> = report.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["web/app.js"], "worktree {worktree}");
        assert!(report.unowned.is_empty(), "{:?}", report.unowned);
    }
}

// ---- unowned files ----

#[test]
fn unowned_changed_files_are_listed_and_warned_about() {
    let repo = repo_with_config();
    repo.commit_files(
        "docs",
        &[
            ("api/README.md", "# api v2\n"),
            ("docs/intro.md", "hi\n"),
            ("cfn/nested/x.yaml", "a: 1\n"),
            ("web/app.js", "3\n"),
        ],
    );
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    // api/README.md is excluded by api, its only owner; pipeline.toml would be a global input.
    assert_eq!(report.unowned, ["api/README.md", "cfn/nested/x.yaml", "docs/intro.md"]);
    assert_eq!(changed(&report), ["web"]);

    let out = source_diff_bin(&["--repo", repo.path().to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("3 changed files belong to no component"), "{stderr}");
    assert!(stderr.contains("api/README.md"), "{stderr}");

    // A diff.json written before the field existed still reads.
    let mut json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_object_mut().unwrap().remove("unowned");
    let old: DiffReport = serde_json::from_value(json).unwrap();
    assert!(old.unowned.is_empty());
}

// ---- base reasons ----

#[test]
fn a_last_success_on_another_branch_is_not_called_a_rewrite() {
    let repo = repo_with_config();
    let root = repo.head();
    repo.git(&["checkout", "-q", "-b", "hotfix"]);
    let deployed = repo.commit_files("hotfix", &[("web/app.js", "hotfix\n")]);
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.commit_files("api", &[("api/handler.py", "2\n")]);
    let report = diff(&repo, &BaseRequest { last_success: Some(deployed.clone()), ..Default::default() }).unwrap();
    assert_eq!(report.base.as_deref(), Some(root.as_str()));
    assert!(
        report.base_reason.contains(&format!(
            "last successful commit {} is not an ancestor of head (another branch, or history rewritten)",
            &deployed[..12]
        )),
        "{}",
        report.base_reason
    );
}

// ---- large configs ----

#[test]
fn a_ten_thousand_component_chain_loads_and_diffs() {
    const N: usize = 10_000;
    let mut config = String::from("[diff]\n");
    for i in 0..N {
        config.push_str(&format!("[components.c{i:05}]\npaths = [\"c{i:05}/**\"]\n"));
        if i > 0 {
            config.push_str(&format!("depends_on = [\"c{:05}\"]\n", i - 1));
        }
    }
    let repo = GitRepo::new();
    repo.commit_files("initial", &[("pipeline.toml", &config), ("c05000/a.txt", "1\n"), ("c09999/a.txt", "1\n")]);
    repo.commit_files("change the middle", &[("c05000/a.txt", "2\n")]);
    let report = diff(&repo, &BaseRequest::default()).unwrap();
    let changed = changed(&report);
    assert_eq!(changed.len(), N - 5000);
    assert_eq!(changed.first(), Some(&"c05000"));
    assert_eq!(changed.last(), Some(&"c09999"));
    assert_eq!(report.components["c05000"].files, ["c05000/a.txt"]);
    assert!(report.components["c05000"].because_of.is_empty());
    assert_eq!(report.components["c09999"].because_of, ["c05000"]);
    assert!(!report.components["c04999"].changed);
}

#[test]
fn the_binary_diffs_from_the_last_run_marked_successful() {
    let repo = repo_with_config();
    let deployed = repo.head();
    let api = repo.commit_files("api", &[("api/handler.py", "def handler(): return 2\n")]);
    repo.commit_files("web", &[("web/app.js", "console.log(2)\n")]);
    let root = repo.path().to_str().unwrap();
    let diff_by_binary = || {
        let out = source_diff_bin(&["--repo", root, "--format", "json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let changed: Vec<String> = json["components"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, c)| c["changed"] == true)
            .map(|(name, _)| name.clone())
            .collect();
        (json["base"].as_str().unwrap().to_string(), json["base_reason"].as_str().unwrap().to_string(), changed)
    };
    // No run marked yet: the first parent of head, so only web changed.
    let (base, _, changed) = diff_by_binary();
    assert_eq!(base, api);
    assert_eq!(changed, ["web"]);

    // A run of the first commit deployed and marked successful, as the pipeline's last step does.
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let record =
        run_state::StepRecord::new("run-1", &deployed, "api", run_state::Step::Deploy, run_state::Status::Passed);
    run_state::Store::record(&store, &record).unwrap();
    // Reaching dev does not move the base: it is the last commit that reached prod by default.
    run_state::Store::mark_success(&store, "run-1", "dev").unwrap();
    assert_eq!(diff_by_binary().0, api);
    run_state::Store::mark_success(&store, "run-1", "prod").unwrap();
    let (base, reason, changed) = diff_by_binary();
    assert_eq!((base.as_str(), reason.as_str()), (deployed.as_str(), "commit of the last successful run"));
    assert_eq!(changed, ["api", "infra", "web"], "infra depends on api");

    // A later commit reached dev: the base stays prod's, unless `[diff] base_environment` says dev.
    let record = run_state::StepRecord::new("run-2", &api, "api", run_state::Step::Deploy, run_state::Status::Passed);
    run_state::Store::record(&store, &record).unwrap();
    run_state::Store::mark_success(&store, "run-2", "dev").unwrap();
    assert_eq!(diff_by_binary().0, deployed);
    std::fs::write(
        repo.path().join("pipeline.toml"),
        CONFIG.replace("[diff]\n", "[diff]\nbase_environment = \"dev\"\n"),
    )
    .unwrap();
    let (base, _, changed) = diff_by_binary();
    assert_eq!((base.as_str(), changed.as_slice()), (api.as_str(), ["web".to_string()].as_slice()));
}
