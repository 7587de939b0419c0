//! `frontend-publisher check` run alone (one CodeBuild action) records the site component's
//! `dast` step, as the pipeline does, so the production decision sees a failed site check.

use run_state::{FileStore, RunDir, Status, Step, StepRecord, Store};

#[test]
fn the_check_run_alone_records_dast_and_a_failed_check_refuses_production() {
    let moto = test_support::Moto::shared();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = format!("fp-check-stage-{}", std::process::id());
    runtime.block_on(async {
        let s3 = aws_target::s3(&moto.sdk_config().await, None);
        // An empty bucket: the root document is not published, an error finding.
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
    });
    let repo = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(repo.path()).unwrap();
    std::fs::write(
        root.join("pipeline.toml"),
        format!(
            "[publish]\ncomponent = \"frontend\"\ndist = \"dist\"\nbucket = \"{bucket}\"\n\n[gate.environments.prod]\nafter = \"dev\"\napproval = false\n"
        ),
    )
    .unwrap();
    let state = root.join(".pipeline");
    let run = RunDir::create(&state, "run-1").unwrap();
    run.write(
        run_state::RunFile::Diff,
        b"{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": false, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"frontend\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}",
    )
    .unwrap();
    let store = FileStore::open(&state).unwrap();
    for (component, step) in [(run_state::PIPELINE, Step::Validate), ("frontend", Step::Deploy)] {
        store.record(&StepRecord::new("run-1", "abc", component, step, Status::Passed)).unwrap();
    }

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_frontend-publisher"))
        .args(["check", "--env", "dev", "--region", "us-east-1", "--endpoint-url", &moto.endpoint])
        .args(["--repo".as_ref(), root.as_os_str()])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));

    let records = store.run("run-1").unwrap();
    let dast = records.iter().find(|r| r.step == Step::Dast).expect("the check records its step");
    assert_eq!((dast.component.as_str(), dast.status), ("frontend", Status::Failed), "{dast:#?}");
    assert!(dast.details.error.as_deref().is_some_and(|e| e.contains("root document")), "{dast:#?}");

    let config = pipeline_config::ConfigFile::load(&root.join("pipeline.toml")).unwrap();
    let policy = gate::GatePolicy::from_config(&config).unwrap();
    let decision = gate::run_deploy_decision(&store, &run, &policy, "prod").unwrap();
    assert!(decision.refused.iter().any(|r| r.contains("dast")), "{:#?}", decision.refused);
}
