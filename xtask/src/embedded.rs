//! The embedded default's emulator: one moto server per monorepo, kept between pipeline runs so
//! a later run (a one-component change, a resumed approval) finds the stacks an earlier run
//! deployed, and what the sample's pipeline needs there (the artifact buckets).
//!
//! The first `cargo xtask pipeline` that needs AWS starts `cargo xtask emulator --state-file
//! .pipeline/emulator.json` in its own process group; that process starts moto (as `cargo xtask
//! emulator` always does), writes the endpoint to the state file and stops, with moto, when the
//! file is removed or has not been touched by a run for [`IDLE`]. Later runs reuse it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};

/// How long an emulator no run touched lives on.
pub const IDLE: Duration = Duration::from_secs(15 * 60);

/// The state file of a monorepo's emulator.
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("emulator.json")
}

/// The endpoint of this monorepo's emulator: the running one, or a new one started now.
pub fn endpoint(state_dir: &Path) -> anyhow::Result<String> {
    let file = state_file(state_dir);
    if let Some(endpoint) = running(&file) {
        touch(&file);
        return Ok(endpoint);
    }
    let _ = std::fs::remove_file(&file);
    std::fs::create_dir_all(state_dir).with_context(|| state_dir.display().to_string())?;
    let log = std::fs::File::create(state_dir.join("emulator.log")).context("creating the emulator's log")?;
    Command::new(std::env::current_exe()?)
        .args(["emulator", "--state-file"])
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C of this run does not stop the emulator later runs use.
        .process_group(0)
        .spawn()
        .context("starting `cargo xtask emulator`")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(endpoint) = running(&file) {
            return Ok(endpoint);
        }
        if Instant::now() > deadline {
            bail!("the emulator did not start within 60 s; see {}", state_dir.join("emulator.log").display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The endpoint in the state file, when moto answers there.
pub fn running(file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    let endpoint = state.get("endpoint")?.as_str()?;
    answers(endpoint).then(|| endpoint.to_string())
}

/// Marks the emulator used now, so it outlives this run by [`IDLE`].
pub fn touch(file: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(file) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Whether moto answers its health check at `endpoint` (`http://127.0.0.1:PORT`).
fn answers(endpoint: &str) -> bool {
    let Some(addr) = endpoint.strip_prefix("http://") else { return false };
    let Ok(addr) = addr.parse::<std::net::SocketAddr>() else { return false };
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /moto-api/data.json HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// `cargo xtask emulator --state-file FILE`: serves until the file is removed or untouched for
/// [`IDLE`] (or Ctrl-C).
pub fn serve(python: &Path, file: &Path) -> anyhow::Result<()> {
    let stop = run_state::cli::cancel_flag();
    let moto = test_support::Moto::start_with(python);
    let state = serde_json::json!({ "endpoint": moto.endpoint, "pid": std::process::id() });
    run_state::write_atomic(file, state.to_string().as_bytes())?;
    crate::say(&format!("moto at {} until {} is removed or idle for {IDLE:?}", moto.endpoint, file.display()));
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let idle = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .map(|at| at.elapsed().unwrap_or_default() > IDLE)
            .unwrap_or(true);
        if idle || stop.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::fs::remove_file(file);
            return Ok(());
        }
    }
}

/// Stops a monorepo's emulator (the bench does, after its runs).
pub fn stop(state_dir: &Path) {
    let _ = std::fs::remove_file(state_file(state_dir));
}

/// Creates the artifact bucket of an environment in the emulator (already there is fine).
pub async fn bootstrap(s3: &aws_sdk_s3::Client, bucket: &str) -> anyhow::Result<()> {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(error) if matches!(error.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
        Err(error) => Err(anyhow::Error::new(error).context(format!("creating bucket {bucket} in the emulator"))),
    }
}

/// The SDK config of the emulator at `endpoint`: test credentials (never the caller's), `us-east-1`.
pub async fn config(endpoint: &str) -> anyhow::Result<aws_config::SdkConfig> {
    let target = aws_target::Target {
        endpoint_url: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        profile: None,
        assume_role: None,
    };
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).test_credentials();
    Ok(aws_target::load_with(&target, loader).await?)
}

/// The status table `table` in the emulator, made as `cfn/pipeline.yaml` makes it in AWS when it
/// is not there yet.
pub async fn status_table(config: &aws_config::SdkConfig, table: &str) -> anyhow::Result<()> {
    run_state::DynamoStore::create_table(&aws_target::dynamodb(config, None), table).await?;
    Ok(())
}
