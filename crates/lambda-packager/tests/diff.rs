//! With a run, only what the diff requires: a function whose component did not change is
//! listed as unchanged, its last package reused from the cache.

use std::process::Command;

use lambda_packager::Manifest;

mod support;
use support::begin_run;

fn package(repo: &test_support::GitRepo, run: &run_state::RunDir) -> Manifest {
    let out = Command::new(env!("CARGO_BIN_EXE_lambda-packager")).arg("--repo").arg(repo.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Manifest::read(&run.packages_dir().join(Manifest::FILE_NAME)).unwrap()
}

#[test]
fn functions_whose_component_did_not_change_are_reused_and_listed_unchanged() {
    let repo = test_support::GitRepo::new();
    repo.write("a/index.py", "def handler(e, c):\n    return 'a'\n");
    repo.write("b/index.py", "def handler(e, c):\n    return 'b'\n");
    repo.write(
        "pipeline.toml",
        "[components.a]\npaths = [\"a/**\"]\n\n[components.back]\npaths = [\"b/**\"]\n\n\
         [lambda.functions.a]\nsources = [\"a\"]\nhandler = \"index.handler\"\n\n\
         [lambda.functions.b]\nsources = [\"b\"]\ncomponent = \"back\"\n",
    );
    repo.commit_all("two functions");
    let run = begin_run(&repo);
    let first = package(&repo, &run);
    let state = |m: &Manifest| -> Vec<(String, bool, bool)> {
        m.packages.iter().map(|p| (p.name.clone(), p.changed, p.reused)).collect()
    };
    assert_eq!(state(&first), [("a".into(), true, false), ("b".into(), true, false)]);

    repo.commit_files("a only", &[("a/index.py", "def handler(e, c):\n    return 'A'\n")]);
    let run = begin_run(&repo);
    let second = package(&repo, &run);
    assert_eq!(state(&second), [("a".into(), true, false), ("b".into(), false, true)]);
    assert_eq!(second.changed().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(second.packages[1].code_sha256, first.packages[1].code_sha256);
    assert!(second.packages.iter().all(|p| p.path.is_file()));
    // The step's note says it too.
    let records = std::fs::read_to_string(repo.path().join(".pipeline/state.jsonl")).unwrap();
    assert!(records.contains("2 package(s): 1 changed, 1 unchanged; 1 reused from the cache"), "{records}");

    // A `component` the diff does not know is an error naming the key.
    repo.commit_files(
        "typo",
        &[(
            "pipeline.toml",
            &std::fs::read_to_string(repo.path().join("pipeline.toml"))
                .unwrap()
                .replace("component = \"back\"", "component = \"bak\""),
        )],
    );
    begin_run(&repo);
    let out = Command::new(env!("CARGO_BIN_EXE_lambda-packager")).arg("--repo").arg(repo.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        "lambda-packager: function `b`: no component `bak` in the run's diff; fix [lambda.functions.b] component (the components are: a, back)"
    );
}
