//! What every stage binary shares (the `cli` feature): the common flags, one-line errors
//! with exit codes, stdout that tolerates `| head`, and Ctrl-C as a cancel flag.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

pub use aws_target::TargetArgs;

use crate::{Error, StageContext, StageOptions};

/// The allocator of every stage binary built for musl (static): musl's own returns memory to the
/// system at almost every free, which doubled the work of a `source-diff` call.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flags every stage binary takes (`#[command(flatten)]`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StageArgs {
    /// A folder inside the monorepo; its root is found from there [default: the current folder].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// The config file [default: ROOT/pipeline.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The pipeline state folder (store, runs, caches) [default: ROOT/.pipeline].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The status store: `file` (STATE_DIR/state.jsonl) or `dynamodb://TABLE` [env: PIPELINE_STORE]
    /// [default: `[store] dynamodb_table` in the config, else `file`].
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
}

impl StageArgs {
    /// The options as the library takes them.
    pub fn options(&self) -> StageOptions {
        StageOptions {
            repo: self.repo.clone(),
            config: self.config.clone(),
            state_dir: self.state_dir.clone(),
            store: self.store.clone().or_else(|| std::env::var("PIPELINE_STORE").ok().filter(|s| !s.is_empty())),
        }
    }

    /// The stage context these flags describe, its store connected through the standard AWS chain
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_PROFILE`) when it is remote.
    pub fn context(&self) -> Result<StageContext, Error> {
        self.context_on(&aws_target::Target::default())
    }

    /// The stage context these flags describe, a remote store reached through `target` (the
    /// binary's `TargetArgs`).
    pub fn context_on(&self, target: &aws_target::Target) -> Result<StageContext, Error> {
        let mut context = StageContext::open(&self.options())?;
        context.connect_store(target)?;
        Ok(context)
    }
}

/// Runs a binary's body and turns its result into the documented exit code: `Ok(true)` 0,
/// `Ok(false)` 1 (the stage's own failure, already reported), an error 2, printed as one
/// line `NAME: message: cause: cause` on stderr.
pub fn main(name: &str, body: impl FnOnce() -> anyhow::Result<bool>) -> ExitCode {
    match body() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            print_error(name, &error);
            ExitCode::from(2)
        }
    }
}

/// [`main`] for a binary with more verdicts than pass and fail: the body returns the exit code
/// itself (0 success, 1 and 3.. the stage's own documented verdicts); an error is 2, printed as
/// [`main`] prints it.
pub fn main_with_code(name: &str, body: impl FnOnce() -> anyhow::Result<u8>) -> ExitCode {
    match body() {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            print_error(name, &error);
            ExitCode::from(2)
        }
    }
}

/// Prints an error on one line: `{:#}` joins the causes; a newline inside a message must not split it.
#[allow(clippy::print_stderr)]
pub fn print_error(name: &str, error: &anyhow::Error) {
    eprintln!("{name}: {}", format!("{error:#}").replace('\n', " "));
}

/// Writes the result to stdout; a reader that stops early (`| head`) is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// A flag set by Ctrl-C or SIGTERM, installed on first use; stages stop their work when it is set.
pub fn cancel_flag() -> &'static AtomicBool {
    static CANCEL: AtomicBool = AtomicBool::new(false);
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // A handler already installed by the embedding program keeps working; ours is then not needed.
        let _ = ctrlc::set_handler(|| CANCEL.store(true, Ordering::SeqCst));
    });
    &CANCEL
}
