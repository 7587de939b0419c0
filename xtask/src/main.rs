//! The workspace's tasks, run as `cargo xtask …` (an alias in `.cargo/config.toml`).
//!
//! - `cargo xtask pipeline`: the whole pipeline on a monorepo (the sample one by default).
//! - `cargo xtask test`: formatting, lints and every test, after installing what they need.
//! - `cargo xtask bench diff [--scale]`: source-diff beside a bare `git diff` loop (or one call
//!   on a generated 100,000-file monorepo).
//! - `cargo xtask codebuild BUILDSPEC`: a buildspec rehearsed as CodeBuild runs it.
//! - `cargo xtask bench pipeline`: the whole pipeline, first run, no-change rerun, one change.
//! - `cargo xtask bench deploy`: stack-deployer beside `aws cloudformation deploy` and the seed's loop.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod bench_deploy;
mod bench_diff_scale;
mod bench_package;
mod bench_pipeline;
mod bench_publish;
mod bench_rollback;
mod bench_seed;
mod bench_stats;
mod bench_store;
mod bench_validate;
mod codebuild;
mod embedded;
mod faults;
mod init;
mod pipeline;
mod progress;
mod python;
mod rollback;
mod schemas;
mod tidy;

use std::os::unix::process::CommandExt;
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
    /// Runs the whole pipeline on a monorepo (the sample by default): diff, validate, build,
    /// test, deploy dev, status check, approval, E2E and site check, deploy prod, mark-success.
    /// Deploys go to the monorepo's own emulator, kept between runs, unless `--target aws`.
    Pipeline(pipeline::PipelineArgs),
    /// Rolls an environment back to an earlier release without rebuilding (the `rollback`
    /// binary's library function), on the monorepo's own emulator unless `--endpoint-url` or `--aws`.
    Rollback(rollback::RollbackArgs),
    /// Reads a repository as it is and writes a commented pipeline.toml to start from
    /// (templates and their nesting, functions from the templates' handlers and code keys, the
    /// frontend from package.json, pytest files); `--check` explains what each component owns,
    /// the files no component owns and every template reference it could not map.
    Init(init::InitArgs),
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
    /// Runs the bad-input and fault corpus against the stage binaries, with time and memory
    /// bounds, and prints a table (case, exit, time, peak memory, verdict).
    Faults {
        /// (internal) Run one command and report its exit and peak memory.
        #[arg(long, hide = true)]
        measure: bool,
        /// The command to measure.
        #[arg(last = true, hide = true)]
        command: Vec<String>,
    },
    /// Runs a buildspec as CodeBuild would, on this machine: phases in order in one shell,
    /// CODEBUILD_* variables, secondary sources, exported variables, reports and artifacts.
    Codebuild(codebuild::CodebuildArgs),
    /// Which stages of the pipeline's template an execution enters, given the variables
    /// rehearsed stages exported: each stage's BeforeEntry conditions, read from the template,
    /// evaluated as CodePipeline does (VariableCheck rules).
    CodebuildStages(codebuild::StagesArgs),
    /// Regenerates validate's resource-schema bundle (crates/validate/data/resource-schemas.deflate)
    /// from the schemas shipped in the pinned cfn-lint (target/py-venv).
    Schemas,
    /// Starts the local AWS emulator (moto) on a free loopback port until Ctrl-C, printing the
    /// environment that points the AWS CLI and the stage binaries at it; with `--stop`, stops
    /// the emulator `cargo xtask pipeline` keeps for a monorepo (and what it deployed).
    Emulator {
        /// Stop the monorepo's kept emulator (the sample's, or `--repo`'s) and exit.
        #[arg(long, conflicts_with = "state_file")]
        stop: bool,
        /// With `--stop`: the monorepo [default: the sample under target/sample-monorepo].
        #[arg(long, requires = "stop")]
        repo: Option<PathBuf>,
        /// (internal) Write the endpoint to this file and serve until it is removed or left
        /// untouched for 15 minutes: the emulator `cargo xtask pipeline` keeps for a monorepo.
        #[arg(long, hide = true, value_name = "FILE")]
        state_file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let result = match Args::parse().task {
        Task::Pipeline(args) => pipeline_with_tools(args),
        Task::Init(args) => init::run(&args),
        Task::Rollback(args) => rollback::run(&args),
        Task::Test { filter } => test(&filter).map(|()| true),
        Task::Bench { which } => bench::run(which).map(|()| true),
        Task::Setup => python::ensure(&workspace_root()).map(|_| true),
        Task::Emulator { stop: true, repo, .. } => stop_emulator(repo).map(|()| true),
        Task::Emulator { state_file: None, .. } => emulator().map(|()| true),
        Task::Emulator { state_file: Some(file), .. } => {
            python::ensure(&workspace_root()).and_then(|bin| embedded::serve(&bin.join("python"), &file)).map(|()| true)
        }
        Task::Codebuild(args) => codebuild::run(&args),
        Task::CodebuildStages(args) => codebuild::stages(&args),
        Task::Schemas => schemas::run().map(|()| true),
        Task::Faults { measure: true, command } => faults::measure(&command).map(|()| true),
        Task::Faults { measure: false, .. } => {
            // Taken before the build, which may put a new xtask at this path.
            std::env::current_exe()
                .map_err(anyhow::Error::from)
                .and_then(|exe| build_stage_binaries().and_then(|()| faults::run(&exe)))
                .map(|()| true)
        }
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

/// Set in the environment of an xtask whose `PATH` already starts with the tools' venv.
pub(crate) const VENV_ACTIVE: &str = "XTASK_VENV_ACTIVE";

/// `cargo xtask pipeline` with the tools' virtual environment activated: xtask runs itself
/// again with the venv's `bin` first on `PATH` (as `source bin/activate` would), so every
/// command a stage starts, in this process or in a stage binary it runs, finds the same
/// `python3`. A dry run installs nothing.
///
/// No process outlives the pipeline, however it ends: xtask replaces itself (`exec`, the same
/// pid) rather than waiting on a second xtask, so a signal to the pipeline reaches the process
/// whose jobs step-runner ties to it (`PR_SET_PDEATHSIG` and a watchdog per job); and the
/// pipeline asks the kernel for SIGTERM when its parent (`cargo`, a shell) dies, which cancels
/// it as Ctrl-C does.
fn pipeline_with_tools(args: pipeline::PipelineArgs) -> anyhow::Result<bool> {
    end_with_parent();
    if args.dry_run || std::env::var_os(VENV_ACTIVE).is_some() {
        return pipeline::run(args);
    }
    let error = Command::new(std::env::current_exe()?).args(std::env::args_os().skip(1)).envs(venv_env()?).exec();
    Err(anyhow::Error::from(error).context("running xtask again with the tools' virtual environment"))
}

/// SIGTERM to this process when its parent dies (`PR_SET_PDEATHSIG`, kept across `exec`); a
/// parent already gone before the request took effect ends the pipeline at once.
fn end_with_parent() {
    let parent = nix::unistd::getppid();
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).is_ok() && nix::unistd::getppid() != parent {
        eprintln!("xtask: the process that started the pipeline has ended");
        std::process::exit(2);
    }
}

/// The environment that activates the tools' virtual environment (installed on first use).
fn venv_env() -> anyhow::Result<Vec<(&'static str, std::ffi::OsString)>> {
    let bin = python::ensure(&workspace_root())?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&path)))?;
    let venv = bin.parent().map(|p| p.as_os_str().to_owned()).unwrap_or_default();
    Ok(vec![("PATH", path), ("VIRTUAL_ENV", venv), (VENV_ACTIVE, "1".into())])
}

/// Builds every stage binary (each behind its crate's `cli` feature), as `cargo xtask test` does.
fn build_stage_binaries() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).current_dir(workspace_root()).args([
        "build",
        "--quiet",
        "--workspace",
        "--all-features",
        "--bins",
    ]))
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

/// `cargo xtask emulator --stop`: the monorepo's kept emulator stopped, said in one line.
fn stop_emulator(repo: Option<PathBuf>) -> anyhow::Result<()> {
    let repo = repo.unwrap_or_else(|| workspace_root().join(pipeline::SAMPLE_DIR));
    let context = run_state::StageContext::open(&run_state::StageOptions { repo: Some(repo), ..Default::default() })?;
    match embedded::stop(&context.state_dir) {
        Some(endpoint) => println!("stopped the emulator at {endpoint}; the next pipeline run starts a new one"),
        None => println!("no emulator was running for {}", context.root.display()),
    }
    Ok(())
}

fn emulator() -> anyhow::Result<()> {
    let bin = python::ensure(&workspace_root())?;
    let stop = run_state::cli::cancel_flag();
    // The server watches this process and exits with it.
    let moto = test_support::Moto::start_with(&bin.join("python"));
    println!("export AWS_ENDPOINT_URL={}", moto.endpoint);
    println!("export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1");
    say("moto is running; Ctrl-C stops it");
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(())
}

fn test(filter: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    let bin = python::ensure(&root)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Taken now: `cargo test` below may rebuild this very binary (another feature set), after
    // which the running one's path reads "(deleted)"; the path itself then holds the new build.
    let xtask = std::env::current_exe()?;
    say("cargo fmt --check");
    run(Command::new(&cargo).current_dir(&root).args(["fmt", "--all", "--", "--check"]))
        .context("formatting differs: run `cargo fmt --all`")?;
    say("cargo clippy -D warnings");
    run(Command::new(&cargo).current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    say("libraries build without their binaries' dependencies");
    tidy::check_light_libraries(&root, &cargo)?;
    say("the crate graph keeps ARCHITECTURE.md's layers");
    tidy::check_layers(&root, &cargo)?;
    // `cargo test` builds a package's binary only when that package has integration tests;
    // xtask's tests run every stage binary (`rollback` has none of its own), so build them all.
    say("cargo build --bins (every stage binary the tests run)");
    build_stage_binaries()?;
    say("cargo test");
    run(Command::new(&cargo)
        .current_dir(&root)
        .args(["test", "--workspace", "--all-features"])
        .args(filter)
        .env("MOTO_PYTHON", bin.join("python")))?;
    if filter.is_empty() {
        say("cargo xtask faults (the bad-input corpus against the binaries)");
        run(Command::new(&xtask).arg("faults"))?;
        say("cargo xtask pipeline (end to end on the sample monorepo)");
        let status = Command::new(&xtask).args(["pipeline", "--approve"]).envs(venv_env()?).status()?;
        // The sample's emulator is not kept after the tests.
        embedded::stop(&root.join(pipeline::SAMPLE_DIR).join(".pipeline"));
        if !status.success() {
            bail!("the pipeline on the sample monorepo did not pass its gate ({status})");
        }
    }
    Ok(())
}
