//! What the binary's tests share: the binary run against the shared emulator.

use std::path::Path;
use std::process::{Command, Output};

use run_state::RunDir;

/// `stack-deployer --env dev` for `run` of `repo` against the shared emulator, with test
/// credentials and no profile of the machine's.
#[allow(dead_code)]
pub fn deployer(repo: &Path, run: &RunDir, args: &[&str]) -> Output {
    deployer_at(&test_support::Moto::shared().endpoint, repo, run, args)
}

/// [`deployer`] against `endpoint` (a proxy in front of the emulator, say).
#[allow(dead_code)]
pub fn deployer_at(endpoint: &str, repo: &Path, run: &RunDir, args: &[&str]) -> Output {
    let with_region: Vec<&str> = ["--region", "us-east-1"].into_iter().chain(args.iter().copied()).collect();
    deployer_in("dev", endpoint, repo, run, &with_region)
}

/// `stack-deployer --env ENV` for `run` of `repo` against `endpoint`, with the emulator's test
/// keys only (`test_support::only_test_credentials`).
#[allow(dead_code)]
pub fn deployer_in(env: &str, endpoint: &str, repo: &Path, run: &RunDir, args: &[&str]) -> Output {
    test_support::only_test_credentials(
        Command::new(env!("CARGO_BIN_EXE_stack-deployer"))
            .arg("--repo")
            .arg(repo)
            .arg("--run-dir")
            .arg(&run.path)
            .args(["--env", env, "--endpoint-url", endpoint])
            .args(args),
    )
    .output()
    .unwrap()
}

/// Run `id` of `repo`, its diff saying `infra` changed and its validate passed.
#[allow(dead_code)]
pub fn infra_run(repo: &Path, id: &str) -> RunDir {
    let run = RunDir::create(&repo.join(".pipeline"), id).unwrap();
    let diff = "{\"base\": null, \"base_reason\": \"test\", \"head\": \"abc\", \"worktree\": true, \"files\": [], \"global_inputs_changed\": [], \"components\": {\"infra\": {\"changed\": true, \"files\": [], \"because_of\": []}}, \"flags\": {}}";
    run.write(run_state::RunFile::Diff, diff.as_bytes()).unwrap();
    let store = run_state::FileStore::open(&repo.join(".pipeline")).unwrap();
    let validated = run_state::StepRecord::new(
        id,
        "abc",
        run_state::PIPELINE,
        run_state::Step::Validate,
        run_state::Status::Passed,
    );
    run_state::Store::record(&store, &validated).unwrap();
    run
}

/// Output bytes as text.
#[allow(dead_code)]
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
