//! A `NoEcho` parameter's value given in `pipeline.toml` never leaves in full: the binary's
//! dry run (what the approval shows) and its change-set preview mask it (`****`), and nothing
//! the run keeps (the store, the run folder) holds it, while CloudFormation gets it.

use std::path::Path;

use run_state::{RunDir, Status, Step, Store};

mod support;
use support::deployer;

const SECRET: &str = "Vq8rT3mZp6LwX2nK";

/// Every file under `dir`, read as text.
fn everything_under(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            text.push_str(&everything_under(&path));
        } else {
            text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
        }
    }
    text
}

#[tokio::test]
async fn a_no_echo_value_is_masked_in_the_dry_run_and_the_preview_and_kept_nowhere() {
    let moto = test_support::Moto::shared();
    let config = moto.sdk_config().await;
    let name = format!("sd-noecho-{}", std::process::id());
    aws_target::s3(&config, None).create_bucket().bucket(format!("{name}-artifacts")).send().await.unwrap();
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("cfn")).unwrap();
    std::fs::write(
        repo.path().join("cfn/app.yaml"),
        "Parameters:\n  DbPassword:\n    Type: String\n    NoEcho: true\n  Label:\n    Type: String\n\
         \x20 Home:\n    Type: String\n\
         Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    Properties:\n      DisplayName: !Ref Label\n",
    )
    .unwrap();
    std::fs::write(
        repo.path().join("pipeline.toml"),
        format!(
            "[deploy]\nartifact_bucket = \"{name}-artifacts\"\n\n[deploy.stacks.app]\ntemplate = \"cfn/app.yaml\"\n\
             stack_name = \"{name}-{{env}}\"\nparameters = {{ DbPassword = \"{SECRET}\", Label = \"visible-label\", Home = {{ env = \"HOME\" }} }}\n\
             components = [\"infra\"]\n"
        ),
    )
    .unwrap();
    let run = RunDir::create(&repo.path().join(".pipeline"), "run-1").unwrap();
    let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"infra\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let store = run_state::FileStore::open(&repo.path().join(".pipeline")).unwrap();
    store
        .record(&run_state::StepRecord::new("run-1", "abc", run_state::PIPELINE, Step::Validate, Status::Passed))
        .unwrap();

    // The dry run, which is also what the approval shows.
    let dry = deployer(repo.path(), &run, &["--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", String::from_utf8_lossy(&dry.stderr));
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(stdout.contains("parameters: DbPassword=****, Home=$HOME, Label=visible-label"), "{stdout}");
    assert!(!stdout.contains(SECRET) && !String::from_utf8_lossy(&dry.stderr).contains(SECRET), "{stdout}");

    // The deploy, then a preview (--no-execute) of a change.
    for args in [&[][..], &["--no-execute"][..]] {
        if !args.is_empty() {
            let toml = std::fs::read_to_string(repo.path().join("pipeline.toml")).unwrap();
            std::fs::write(repo.path().join("pipeline.toml"), toml.replace("visible-label", "visible-label-2"))
                .unwrap();
        }
        let out = deployer(repo.path(), &run, args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "{args:?}: {stdout}{stderr}");
    }

    // CloudFormation got the value; the run kept it nowhere.
    let cf = aws_target::cloudformation(&config, None);
    let stacks = cf.describe_stacks().stack_name(format!("{name}-dev")).send().await.unwrap();
    let stack = &stacks.stacks()[0];
    assert_eq!(stack.stack_status().map(|s| s.as_str()), Some("CREATE_COMPLETE"));
    let parameters: Vec<_> = stack.parameters().iter().filter_map(|p| p.parameter_key()).collect();
    assert!(parameters.contains(&"DbPassword") && parameters.contains(&"Label"), "{parameters:?}");
    let records = store.run("run-1").unwrap();
    assert!(records.iter().any(|r| r.component == "infra" && r.step == Step::Deploy && r.status == Status::Passed));
    let kept = everything_under(&repo.path().join(".pipeline"));
    assert!(kept.contains("visible-label") || kept.contains("infra"), "the run folder and store were read");
    assert!(!kept.contains(SECRET), "the store and run folder keep no NoEcho value");
    // The release a rollback reads re-uses the NoEcho value, in the store and in the bucket.
    let release = run_state::ReleaseStore::releases(&store, "dev").unwrap().pop().expect("a release recorded");
    let parameters = &release.stacks.values().next().expect("the stack's part").parameters;
    assert_eq!(parameters["DbPassword"], run_state::release::Parameter::UsePreviousValue);
    assert_eq!(parameters["Label"], run_state::release::Parameter::Value("visible-label".into()));
    // A value read from the deploying process's environment is never stored either.
    assert_eq!(parameters["Home"], run_state::release::Parameter::UsePreviousValue);
    let s3 = aws_target::s3(&config, None);
    let bucket = release.artifact_bucket.clone().unwrap();
    let object = s3.get_object().bucket(&bucket).key(release.object_key()).send().await.unwrap();
    let json = String::from_utf8(object.body.collect().await.unwrap().to_vec()).unwrap();
    assert!(json.contains("use_previous_value") && !json.contains(SECRET), "{json}");
}
