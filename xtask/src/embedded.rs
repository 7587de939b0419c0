//! The embedded default's emulator: one moto server per monorepo, kept between pipeline runs so
//! a later run (a one-component change, a resumed approval) finds the stacks an earlier run
//! deployed, and what the sample's pipeline needs there (the artifact buckets).
//!
//! The first `cargo xtask pipeline` that needs AWS starts `cargo xtask emulator --state-file
//! .pipeline/emulator.json` in its own process group; that process starts moto (as `cargo xtask
//! emulator` always does), writes the endpoint to the state file and stops, with moto, when the
//! file is removed or has not been touched by a run for [`IDLE`]. Later runs reuse it: the
//! state file names the checkout and moto's pid, and the harness's health route answers with
//! that pid whatever the emulator holds, so a live emulator is always found and a dead one, a
//! port taken by something else, or a state file of another checkout is said in one line.

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

/// One emulator: where it answers and which one it is (`id` changes with every start, so a run
/// can tell the emulator it deployed to from a later one on the same port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// `MOTO_PID-STARTED_MS`.
    pub id: String,
}

/// What a run found of the monorepo's emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Ours, answering, holding whatever earlier runs deployed.
    Alive(Instance),
    /// None was started (or it was stopped and its state file removed).
    Missing,
    /// The state file names one that is not there, or not ours: why, in one line.
    Gone(String),
}

/// How [`endpoint`] came by its emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The running one, with what earlier runs deployed.
    Reused,
    /// A new one: none was running.
    Started,
    /// A new one in place of one that is gone (why): what earlier runs deployed is gone with it.
    Replaced(String),
}

/// The emulator a run uses, and how it came by it.
#[derive(Debug, Clone)]
pub struct Emulator {
    /// Which one.
    pub instance: Instance,
    /// Reused, started or replaced.
    pub origin: Origin,
}

impl Emulator {
    /// The line a run prints about it.
    pub fn describe(&self) -> String {
        let endpoint = &self.instance.endpoint;
        match &self.origin {
            Origin::Reused => format!("emulator at {endpoint} (kept from earlier runs, with what they deployed)"),
            Origin::Started => format!("emulator started at {endpoint} (empty)"),
            Origin::Replaced(why) => {
                format!("emulator started at {endpoint}: {why}, so what earlier runs deployed there is gone")
            }
        }
    }
}

/// Reads the state file and checks that the emulator it names is this checkout's and answers as
/// that very server (the harness's health route names moto's pid): a live emulator is always
/// found whatever it holds, and a port taken by something else is never taken for it.
pub fn inspect(state_dir: &Path) -> Found {
    let file = state_file(state_dir);
    let text = match pipeline_config::fs::read_regular(&file, 64 * 1024) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Found::Missing,
        Err(error) => return Found::Gone(format!("its state file {} cannot be read ({error})", file.display())),
    };
    let state: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(value) => value,
        Err(error) => return Found::Gone(format!("its state file {} is corrupt ({error})", file.display())),
    };
    let field = |name: &str| state.get(name).and_then(serde_json::Value::as_str).map(str::to_string);
    let (Some(endpoint), Some(id), Some(checkout)) = (field("endpoint"), field("id"), field("checkout")) else {
        return Found::Gone(format!("its state file {} lacks endpoint, id or checkout (corrupt)", file.display()));
    };
    let Some(moto_pid) = state.get("moto_pid").and_then(serde_json::Value::as_u64) else {
        return Found::Gone(format!("its state file {} lacks moto_pid (corrupt)", file.display()));
    };
    let here = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    if Path::new(&checkout) != here {
        return Found::Gone(format!("its state file {} was written for another checkout ({checkout})", file.display()));
    }
    match test_support::health(&endpoint) {
        Some(pid) if u64::from(pid) == moto_pid => Found::Alive(Instance { endpoint, id }),
        Some(pid) => Found::Gone(format!(
            "{endpoint} answers as another emulator (pid {pid}, not {moto_pid} as {} says)",
            file.display()
        )),
        None if port_open(&endpoint) => Found::Gone(format!(
            "something else answers at {endpoint}, where {} says the emulator (pid {moto_pid}) was",
            file.display()
        )),
        None => Found::Gone(format!(
            "the emulator {} names (pid {moto_pid} at {endpoint}) is no longer running",
            file.display()
        )),
    }
}

fn port_open(endpoint: &str) -> bool {
    let addr = endpoint.strip_prefix("http://").and_then(|a| a.parse::<std::net::SocketAddr>().ok());
    addr.is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
}

/// This monorepo's emulator: the running one, or a new one started now (saying why when it
/// replaces one that is gone).
pub fn endpoint(state_dir: &Path) -> anyhow::Result<Emulator> {
    let file = state_file(state_dir);
    let origin = match inspect(state_dir) {
        Found::Alive(instance) => {
            touch(&file);
            return Ok(Emulator { instance, origin: Origin::Reused });
        }
        Found::Missing => Origin::Started,
        Found::Gone(why) => Origin::Replaced(why),
    };
    // Only our own file goes: whatever it named (another checkout's emulator, another program
    // on the port) is left alone, and an emulator of ours that still serves stops by itself
    // when its file no longer names it.
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
        if let Found::Alive(instance) = inspect(state_dir) {
            return Ok(Emulator { instance, origin });
        }
        if Instant::now() > deadline {
            bail!("the emulator did not start within 60 s; see {}", state_dir.join("emulator.log").display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The endpoint of the monorepo's emulator when it is alive (never starts one).
pub fn running(state_dir: &Path) -> Option<String> {
    match inspect(state_dir) {
        Found::Alive(instance) => Some(instance.endpoint),
        _ => None,
    }
}

/// Marks the emulator used now, so it outlives this run by [`IDLE`].
pub fn touch(file: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(file) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Whether the state file still names the serving process `pid`.
fn names(file: &Path, pid: u32) -> bool {
    let Ok(text) = std::fs::read(file) else { return false };
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|state| state.get("pid").and_then(serde_json::Value::as_u64))
        == Some(u64::from(pid))
}

/// `cargo xtask emulator --state-file FILE`: serves until the file is removed, names another
/// emulator, or is untouched for [`IDLE`] (or Ctrl-C).
pub fn serve(python: &Path, file: &Path) -> anyhow::Result<()> {
    let stop = run_state::cli::cancel_flag();
    let moto = test_support::Moto::start_with(python);
    let dir = file.parent().context("the state file has no folder")?;
    let checkout = std::fs::canonicalize(dir).with_context(|| dir.display().to_string())?;
    let started = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis();
    let state = serde_json::json!({
        "endpoint": moto.endpoint,
        "pid": std::process::id(),
        "moto_pid": moto.pid(),
        "id": format!("{}-{started}", moto.pid()),
        "checkout": checkout,
    });
    run_state::write_atomic(file, state.to_string().as_bytes())?;
    crate::say(&format!("moto at {} until {} is removed or idle for {IDLE:?}", moto.endpoint, file.display()));
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if !names(file, std::process::id()) {
            return Ok(());
        }
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

/// Stops a monorepo's emulator and waits until it no longer answers; the endpoint it had, when
/// one was running.
pub fn stop(state_dir: &Path) -> Option<String> {
    let found = inspect(state_dir);
    let _ = std::fs::remove_file(state_file(state_dir));
    let Found::Alive(instance) = found else { return None };
    let deadline = Instant::now() + Duration::from_secs(10);
    while test_support::health(&instance.endpoint).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(instance.endpoint)
}

/// The status table `table` in the emulator, made as `cfn/pipeline.yaml` makes it in AWS when it
/// is not there yet.
pub async fn status_table(config: &aws_config::SdkConfig, table: &str) -> anyhow::Result<()> {
    run_state::DynamoStore::create_table(&aws_target::dynamodb(config, None), table).await?;
    Ok(())
}
