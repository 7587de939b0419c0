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
    Command::new(env!("CARGO_BIN_EXE_stack-deployer"))
        .arg("--repo")
        .arg(repo)
        .arg("--run-dir")
        .arg(&run.path)
        .args(["--env", "dev", "--endpoint-url", endpoint, "--region", "us-east-1"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .output()
        .unwrap()
}

/// Output bytes as text.
#[allow(dead_code)]
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
