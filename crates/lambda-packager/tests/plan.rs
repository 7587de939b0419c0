//! The plan: which functions a run packages and why, decided before any file is read; what
//! `--dry-run` prints, and what a real run then does.

use std::process::Command;

use lambda_packager::{Decision, LambdaSettings, Manifest, PackagePlan};
use run_state::{StagePlan, Store};

mod support;
use support::begin_run;

/// Three functions, each its own component; the first commit changes all of them.
fn three_functions() -> test_support::GitRepo {
    let repo = test_support::GitRepo::new();
    for name in ["a", "b", "c"] {
        repo.write(&format!("{name}/index.py"), &format!("def handler(e, c):\n    return '{name}'\n"));
    }
    let mut toml = String::new();
    for name in ["a", "b", "c"] {
        toml.push_str(&format!("[components.{name}]\npaths = [\"{name}/**\"]\n\n"));
    }
    for name in ["a", "b", "c"] {
        toml.push_str(&format!("[lambda.functions.{name}]\nsources = [\"{name}\"]\nhandler = \"index.handler\"\n\n"));
    }
    repo.write("pipeline.toml", &toml);
    repo.commit_all("three functions");
    repo
}

fn packager(repo: &test_support::GitRepo, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lambda-packager")).arg("--repo").arg(repo.path()).args(args).output().unwrap()
}

fn plan_of(repo: &test_support::GitRepo, run: &run_state::RunDir, only: &[String]) -> PackagePlan {
    let (_, functions) = LambdaSettings::load(&repo.path().join("pipeline.toml")).unwrap();
    let diff: source_diff::DiffReport = run.read_json(run_state::RunFile::Diff).unwrap();
    lambda_packager::plan(&functions, &diff, only).unwrap()
}

/// A second run whose diff changes `b` only (after a first, real, run).
fn b_changed() -> (test_support::GitRepo, run_state::RunDir) {
    let repo = three_functions();
    begin_run(&repo);
    let out = packager(&repo, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    repo.commit_files("b only", &[("b/index.py", "def handler(e, c):\n    return 'B'\n")]);
    let run = begin_run(&repo);
    (repo, run)
}

#[test]
fn the_plan_packages_the_changed_function_as_changed_and_the_others_unchanged() {
    let (repo, run) = b_changed();
    let plan = plan_of(&repo, &run, &[]);
    let decisions: Vec<(&str, &Decision)> = plan.functions.iter().map(|f| (f.name.as_str(), &f.decision)).collect();
    assert!(matches!(decisions[0], ("a", Decision::Unchanged { component }) if component == "a"), "{plan:?}");
    match decisions[1] {
        ("b", Decision::Changed { because }) => {
            assert_eq!(because.len(), 1);
            assert_eq!(because[0].name, "b");
            assert_eq!(because[0].files, ["b/index.py"]);
        }
        other => panic!("b should be changed: {other:?}"),
    }
    assert!(matches!(decisions[2], ("c", Decision::Unchanged { .. })), "{plan:?}");
    assert_eq!(plan.describe().lines().nth(1), Some("package   b: component `b` changed (b/index.py)"));
    assert!(plan.describe().lines().next().unwrap().starts_with("unchanged a: component `a` unchanged since the base"));

    // `--only` leaves the others out, without looking them up in the diff.
    let only = plan_of(&repo, &run, &["c".to_string()]);
    let names: Vec<(&str, bool)> =
        only.functions.iter().map(|f| (f.name.as_str(), f.decision == Decision::NotSelected)).collect();
    assert_eq!(names, [("a", true), ("b", true), ("c", false)]);
    assert!(only.describe().starts_with("skip      a: not selected (--only)\n"), "{}", only.describe());
}

#[test]
fn dry_run_prints_the_plan_and_records_and_writes_nothing() {
    let (repo, run) = b_changed();
    let out = packager(&repo, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), plan_of(&repo, &run, &[]).describe());
    let json = packager(&repo, &["--dry-run", "--json"]);
    assert_eq!(json.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["functions"][1]["name"], "b");
    assert_eq!(json["functions"][1]["decision"]["decision"], "changed");
    assert_eq!(json["functions"][0]["decision"]["decision"], "unchanged");

    assert!(!run.packages_dir().exists(), "a dry run writes no package");
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    let steps = store.run(&run.run_id).unwrap();
    assert!(!steps.is_empty(), "the diff step is recorded by begin_run");
    assert!(steps.iter().all(|s| s.step != run_state::Step::Build), "{steps:?}");

    // The same errors as a real run: `--only` naming no function exits 2.
    let bad = packager(&repo, &["--dry-run", "--only", "zz"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no function `zz` in [lambda.functions]"));
}

#[test]
fn a_real_run_packages_what_the_plan_says() {
    let (repo, run) = b_changed();
    let plan = plan_of(&repo, &run, &[]);
    let out = packager(&repo, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = Manifest::read(&run.packages_dir().join(Manifest::FILE_NAME)).unwrap();
    let built: Vec<(String, bool)> = manifest.packages.iter().map(|p| (p.name.clone(), p.changed)).collect();
    let planned: Vec<(String, bool)> =
        plan.functions.iter().map(|f| (f.name.clone(), !matches!(f.decision, Decision::Unchanged { .. }))).collect();
    assert_eq!(built, planned);
    assert_eq!(built, [("a".to_string(), false), ("b".to_string(), true), ("c".to_string(), false)]);

    // With `--only`, the run packages what the plan selects.
    let only = plan_of(&repo, &run, &["b".to_string()]);
    let out = packager(&repo, &["--only", "b"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = Manifest::read(&run.packages_dir().join(Manifest::FILE_NAME)).unwrap();
    let names: Vec<&str> = manifest.packages.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, only.selected().collect::<Vec<_>>());
}

#[test]
fn a_function_is_changed_by_the_component_whose_build_output_it_includes() {
    let repo = test_support::GitRepo::new();
    repo.write("a/index.py", "def handler(e, c):\n    return 'a'\n");
    repo.write("web/src/main.js", "1\n");
    repo.write(
        "pipeline.toml",
        "[components.a]\npaths = [\"a/**\"]\n\n\
         [components.web]\npaths = [\"web/**\"]\nbuild = { run = \"sh web/build.sh\" }\n\n\
         [lambda.functions.a]\nsources = [\"a\"]\nhandler = \"index.handler\"\n\
         [[lambda.functions.a.include]]\nfrom = \"web/dist\"\nto = \"dist\"\ncomponent = \"web\"\n",
    );
    repo.commit_all("a function shipping web's build");
    begin_run(&repo);
    repo.commit_files("web only", &[("web/src/main.js", "2\n")]);
    let run = begin_run(&repo);
    let plan = plan_of(&repo, &run, &[]);
    match &plan.functions[0].decision {
        Decision::Changed { because } => {
            // The diff marks `a` changed because of `web` too (its include); the plan names both.
            assert_eq!(because.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "web"]);
            assert_eq!(because[0].because_of, ["web"]);
            assert_eq!(because[1].files, ["web/src/main.js"]);
        }
        other => panic!("a should be changed by web: {other:?}"),
    }
    assert_eq!(
        plan.describe(),
        "package   a: component `a` changed (because of web); component `web` changed (web/src/main.js)\n"
    );
}
