//! The workspace's tasks, run as `cargo xtask …` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask pipeline`: the whole pipeline on a monorepo (the sample one by default).
//! - `cargo xtask test`: formatting, lints and every test, after installing what they need.
//! - `cargo xtask bench diff`: source-diff beside a bare `git diff` loop.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod bench_package;
mod bench_validate;
mod pipeline;
mod progress;
mod python;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The workspace's tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Runs the pipeline: source, diff, tests of the affected components, gate, report.
    Pipeline(pipeline::PipelineArgs),
    /// Checks formatting and lints and runs every test (installs the Python tools first).
    Test {
        /// Arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        filter: Vec<String>,
    },
    /// Benchmarks, printed as ratios against the tool a user would use instead.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
    /// Installs the pinned Python tools (moto, pytest, cfn-lint) into target/py-venv.
    Setup,
    /// Starts the local AWS emulator (moto) on a free loopback port until Ctrl-C,
    /// printing the environment that points the AWS CLI and the stage binaries at it.
    Emulator,
}

fn main() -> ExitCode {
    let result = match Args::parse().task {
        Task::Pipeline(args) => pipeline::run(args),
        Task::Test { filter } => test(&filter).map(|()| true),
        Task::Bench { which } => bench::run(which).map(|()| true),
        Task::Setup => python::ensure(&workspace_root()).map(|_| true),
        Task::Emulator => emulator().map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The workspace root (xtask's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf()
}

/// A progress line on stderr.
pub fn say(message: &str) {
    eprintln!("xtask: {message}");
}

/// Runs a command and fails with its name when it fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("starting {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} {:?} failed ({status})", command.get_program(), command.get_args().collect::<Vec<_>>());
    }
    Ok(())
}

fn emulator() -> anyhow::Result<()> {
    let bin = python::ensure(&workspace_root())?;
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })?;
    // The server watches this process and exits with it.
    let moto = test_support::Moto::start_with(&bin.join("python"));
    println!("export AWS_ENDPOINT_URL={}", moto.endpoint);
    println!("export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1");
    say("moto is running; Ctrl-C stops it");
    rx.recv()?;
    Ok(())
}

fn test(filter: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    let bin = python::ensure(&root)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    say("cargo fmt --check");
    run(Command::new(&cargo).current_dir(&root).args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    say("cargo clippy -D warnings");
    run(Command::new(&cargo).current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    say("cargo test");
    run(Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--workspace"])
        .args(filter)
        .env("MOTO_PYTHON", bin.join("python")))?;
    if filter.is_empty() {
        say("cargo xtask pipeline (end to end on the sample monorepo)");
        let ok = pipeline::run(pipeline::PipelineArgs::default())?;
        if !ok {
            bail!("the pipeline on the sample monorepo did not pass its gate");
        }
    }
    Ok(())
}
