//! Benchmarks against what a user would run instead, measured side by side, alternating: each
//! prints the machine, the spread (min, median, max) and the ratio of the medians.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use source_diff::{Components, Repo};

#[derive(clap::Subcommand)]
pub enum Bench {
    /// Affected components for every consecutive commit pair, against a bare
    /// `git diff --name-status --no-renames` loop: in process, and one process per pair.
    Diff {
        /// The repository [default: a generated 400-commit history of the sample monorepo in target/].
        #[arg(long)]
        repo: Option<PathBuf>,
        /// Its pipeline.toml [default: REPO/pipeline.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Rounds; each runs both loops, alternating which goes first.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Instead: a generated 100,000-file, 500-component monorepo and a 5,000-file change
        /// across 1,000 commits, one `source-diff` call against one `git diff` call (time and
        /// peak memory).
        #[arg(long, conflicts_with_all = ["repo", "config"])]
        scale: bool,
    },
    /// The `validate` binary (native checks) against `cfn-lint -f json` on the same templates, one
    /// process each per round, outputs checked; the stage on an unchanged repo beside it.
    Validate {
        /// Rounds; each runs both, alternating which goes first.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The five sample functions with a realistic dependency folder, against the seed's `zip -r`
    /// loop: like for like (the same entries, checked) and with the default leave-out list.
    Package {
        /// Rounds; each runs both, alternating which goes first.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// A generated 500-file content-hashed site into moto, touched and one asset changed, then
    /// published again: frontend-publisher against `aws s3 sync --delete` (requests, uploads, time).
    Publish {
        /// Rounds; each runs both, alternating which goes first.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The sample's master stack deployed into moto, then redeployed unchanged and with one
    /// Lambda's code changed, by stack-deployer and by `aws cloudformation deploy` plus the seed's
    /// update-function-code loop: wall time and API calls.
    Deploy {
        /// Rounds; each runs both, alternating which goes first.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The whole pipeline on a fresh copy of the sample against its own emulator, one
    /// `cargo xtask pipeline --approve` per run: a first full run, a no-change rerun and a
    /// one-Lambda change, with ratios to the first run.
    Pipeline {
        /// Rounds; each on a fresh copy with a fresh emulator.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// The seed-style fixture (fixtures/drs-monorepo) through `cargo xtask pipeline` against its
    /// seed's buildspec commands, each in its own emulator: a first run, a no-change commit, a
    /// docs-only, a one-Lambda and a frontend-only change (wall time, API calls, bytes, updates).
    Seed {
        /// Rounds; each on fresh copies with fresh emulators.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Issue 22's adopt case: `bench seed`'s one-Lambda change alone (after its first run).
    Adopt {
        /// Rounds; each on fresh copies with fresh emulators.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Generated file stores of 1, 10 and 100 MB (a year of runs): `status-report runs`, `show`,
    /// `gate` and `record`, one call each, wall time and peak memory.
    Store {
        /// Rounds of each call.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// dev of the sample back from release 2 to release 1: `cargo xtask rollback` against a git
    /// revert through `cargo xtask pipeline` (wall time, API calls, builds and tests run).
    Rollback {
        /// Rounds; each measures both, alternating which goes first.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// `status-report stats` and `html` over generated stores of 1,000 and 50,000 runs, one
    /// call each (time and peak memory), beside a jq program counting runs and failures per day.
    Stats {
        /// Rounds of each call.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

pub fn run(which: Bench) -> anyhow::Result<()> {
    match which {
        Bench::Diff { scale: true, rounds, .. } => crate::bench_diff_scale::run(rounds),
        Bench::Diff { repo, config, rounds, .. } => diff(repo, config, rounds),
        Bench::Package { rounds } => crate::bench_package::run(rounds),
        Bench::Validate { rounds } => crate::bench_validate::run(rounds),
        Bench::Publish { rounds } => crate::bench_publish::run(rounds),
        Bench::Deploy { rounds } => crate::bench_deploy::run(rounds),
        Bench::Pipeline { rounds } => crate::bench_pipeline::run(rounds),
        Bench::Store { rounds } => crate::bench_store::run(rounds),
        Bench::Stats { rounds } => crate::bench_stats::run(rounds),
        Bench::Rollback { rounds } => crate::bench_rollback::run(rounds),
        Bench::Seed { rounds } => crate::bench_seed::run(rounds, None),
        Bench::Adopt { rounds } => crate::bench_seed::run(rounds, Some(crate::bench_seed::ONE_LAMBDA)),
    }
}

fn diff(repo: Option<PathBuf>, config: Option<PathBuf>, rounds: usize) -> anyhow::Result<()> {
    let dir = match repo {
        Some(dir) => dir,
        None => generated_history(&crate::workspace_root())?,
    };
    let repo = Repo::open(&dir)?;
    let config = config.unwrap_or_else(|| repo.root().join(pipeline_config::FILE_NAME));
    let components = Components::load(&config)?;
    let root = repo.root();
    let commits = first_parent_history(root)?;
    if commits.len() < 2 {
        bail!("{} has fewer than two commits: nothing to compare", root.display());
    }
    let pairs: Vec<(&str, &str)> = commits.windows(2).map(|w| (w[0].as_str(), w[1].as_str())).collect();
    let git_diff = |base: &str, head: &str| git_diff_paths(root, base, head);
    let loops = in_process(&repo, &components, &pairs, rounds, &git_diff)?;
    // Per call: one `source-diff` process per pair against one `git diff` process per pair.
    let bin = release_binary(&crate::workspace_root(), "source-diff")?;
    let calls = per_call(&bin, root, &config, &pairs, rounds, &git_diff)?;
    print_diff(root, pairs.len(), &loops, &calls);
    Ok(())
}

/// The commits of HEAD's first-parent history, oldest first.
fn first_parent_history(root: &Path) -> anyhow::Result<Vec<String>> {
    let out =
        Command::new("git").arg("-C").arg(root).args(["rev-list", "--first-parent", "--reverse", "HEAD"]).output()?;
    Ok(String::from_utf8(out.stdout)?.lines().map(str::to_string).collect())
}

/// One bare `git diff --name-status --no-renames` process: how many paths it named.
fn git_diff_paths(root: &Path, base: &str, head: &str) -> anyhow::Result<usize> {
    let out =
        Command::new("git").arg("-C").arg(root).args(["diff", "--name-status", "--no-renames", base, head]).output()?;
    if !out.status.success() {
        bail!("git diff {base} {head} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count())
}

/// Round totals of the two loops over every pair: `git diff` processes and the library in process.
struct Loops {
    git: Vec<Duration>,
    ours: Vec<Duration>,
}

/// The library's diff per pair against a `git diff` loop, alternating which goes first; both
/// checked to see the same changes first, or the comparison means nothing.
fn in_process(
    repo: &Repo,
    components: &Components,
    pairs: &[(&str, &str)],
    rounds: usize,
    git_diff: &dyn Fn(&str, &str) -> anyhow::Result<usize>,
) -> anyhow::Result<Loops> {
    let git_loop = || -> anyhow::Result<usize> {
        let mut files = 0;
        for (base, head) in pairs {
            files += git_diff(base, head)?;
        }
        Ok(files)
    };
    let ours = || -> anyhow::Result<usize> {
        let mut files = 0;
        for (base, head) in pairs {
            files += source_diff::diff_commits(repo, components, base, head)?.files.len();
        }
        Ok(files)
    };
    let (expected, got) = (git_loop()?, ours()?);
    if expected != got {
        bail!("source-diff saw {got} changed paths where git saw {expected}");
    }
    let mut loops = Loops { git: Vec::new(), ours: Vec::new() };
    let measure = |f: &dyn Fn() -> anyhow::Result<usize>, into: &mut Vec<Duration>| -> anyhow::Result<()> {
        let start = Instant::now();
        f()?;
        into.push(start.elapsed());
        Ok(())
    };
    for round in 0..rounds.max(1) {
        if round % 2 == 0 {
            measure(&git_loop, &mut loops.git)?;
            measure(&ours, &mut loops.ours)?;
        } else {
            measure(&ours, &mut loops.ours)?;
            measure(&git_loop, &mut loops.git)?;
        }
    }
    Ok(loops)
}

/// The table: both loops, the three kinds of call, the ratios against their goals.
fn print_diff(root: &Path, pairs: usize, loops: &Loops, calls: &Calls) {
    println!("bench diff: {pairs} commit pairs of {}, {} rounds", root.display(), loops.git.len());
    println!("  {}", machine());
    print_header("ms per round", 44);
    let row = |name: &str, times: &[Duration]| print_row(name, 44, times);
    let git_median = row("git diff --name-status --no-renames loop", &loops.git);
    let our_median = row("source-diff library (affected + flags)", &loops.ours);
    let git_call_median = row("one `git diff --name-status` process per pair", &calls.git);
    let our_call_median = row("one `source-diff` process per pair", &calls.ours);
    let start_up_median = row("one `source-diff --version` per pair", &calls.start_up);
    println!(
        "  ratio in process, source-diff / git: {:.2}x (goal: at most 1.30x)",
        our_median.as_secs_f64() / git_median.as_secs_f64()
    );
    println!(
        "  ratio per call,   source-diff / git: {:.2}x (goal: at most 1.50x)",
        our_call_median.as_secs_f64() / git_call_median.as_secs_f64()
    );
    println!(
        "  of a call: start-up {:.2} ms, the rest (config, globs, diff) {:.2} ms; a bare git call {:.2} ms",
        ms(start_up_median) / pairs as f64,
        ms(our_call_median.saturating_sub(start_up_median)) / pairs as f64,
        ms(git_call_median) / pairs as f64
    );
}

/// Round totals of one process per pair: `git diff`, `source-diff`, and `source-diff --version`.
struct Calls {
    git: Vec<Duration>,
    ours: Vec<Duration>,
    start_up: Vec<Duration>,
}

/// One `source-diff` process per pair against one `git diff` process per pair, alternating
/// pair by pair which goes first; and the binary's start-up alone (`--version`), the floor under
/// any call.
fn per_call(
    bin: &Path,
    root: &Path,
    config: &Path,
    pairs: &[(&str, &str)],
    rounds: usize,
    git_diff: &dyn Fn(&str, &str) -> anyhow::Result<usize>,
) -> anyhow::Result<Calls> {
    let source_diff_call = |base: &str, head: &str| -> anyhow::Result<()> {
        let out = Command::new(bin)
            .arg("--repo")
            .arg(root)
            .arg("--config")
            .arg(config)
            .args(["--base", base, "--head", head, "--format", "env"])
            .output()?;
        if !out.status.success() {
            bail!("source-diff --base {base} --head {head} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let start_up = || -> anyhow::Result<()> {
        let status = Command::new(bin).arg("--version").stdout(std::process::Stdio::null()).status()?;
        if !status.success() {
            bail!("source-diff --version failed");
        }
        Ok(())
    };
    let mut calls = Calls { git: Vec::new(), ours: Vec::new(), start_up: Vec::new() };
    for round in 0..rounds.max(1) {
        let start = Instant::now();
        for _ in pairs {
            start_up()?;
        }
        calls.start_up.push(start.elapsed());
        let (mut git_total, mut our_total) = (Duration::ZERO, Duration::ZERO);
        for (i, (base, head)) in pairs.iter().enumerate() {
            let mut time_git = || -> anyhow::Result<()> {
                let start = Instant::now();
                git_diff(base, head)?;
                git_total += start.elapsed();
                Ok(())
            };
            let mut time_ours = || -> anyhow::Result<()> {
                let start = Instant::now();
                source_diff_call(base, head)?;
                our_total += start.elapsed();
                Ok(())
            };
            if (round + i) % 2 == 0 {
                time_git()?;
                time_ours()?;
            } else {
                time_ours()?;
                time_git()?;
            }
        }
        calls.git.push(git_total);
        calls.ours.push(our_total);
    }
    Ok(calls)
}

/// A stage binary as users run it: a release build (debug start-up alone costs several
/// milliseconds), built now if it is out of date.
pub(crate) fn release_binary(workspace: &Path, package: &str) -> anyhow::Result<PathBuf> {
    let build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--quiet", "--release", "-p", package, "--features", "cli"])
        .current_dir(workspace)
        .status()?;
    if !build.success() {
        bail!("building the {package} binary failed");
    }
    Ok(workspace.join("target/release").join(package))
}

/// Milliseconds, for printing.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The machine a benchmark ran on, as one line: cores and load average.
pub(crate) fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    format!("machine: {cores} cores, load average {load} (1, 5, 15 min)")
}

/// The spread of a set of timings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spread {
    pub min: Duration,
    pub median: Duration,
    pub max: Duration,
}

impl Spread {
    /// Min, median and max of at least one timing.
    pub(crate) fn of(times: &[Duration]) -> Spread {
        assert!(!times.is_empty(), "no timings");
        let mut sorted = times.to_vec();
        sorted.sort();
        Spread { min: sorted[0], median: sorted[sorted.len() / 2], max: sorted[sorted.len() - 1] }
    }
}

/// The header of a table of [`print_row`]s: the unit, then min, median, max.
pub(crate) fn print_header(unit: &str, width: usize) {
    println!("  {unit:<width$} {:>9} {:>9} {:>9}", "min", "median", "max");
}

/// One row: a name and the min, median and max of its timings in milliseconds; returns the median.
pub(crate) fn print_row(name: &str, width: usize, times: &[Duration]) -> Duration {
    let spread = Spread::of(times);
    println!("  {name:<width$} {:>9.1} {:>9.1} {:>9.1}", ms(spread.min), ms(spread.median), ms(spread.max));
    spread.median
}

/// Runs git in a bench repository, committing as `bench`.
pub(crate) fn bench_git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    crate::run(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@localhost")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@localhost"),
    )
}

/// A reproducible history of the sample monorepo: 400 commits, each touching one to three files.
fn generated_history(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("target/bench-monorepo");
    const COMMITS: usize = 400;
    let done = dir.join(".git/bench-history-complete");
    if done.exists() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    crate::run(Command::new("cp").arg("-R").arg(root.join("fixtures/monorepo/.")).arg(&dir))?;
    let git = |args: &[&str]| bench_git(&dir, args);
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "sample monorepo"])?;
    let files: Vec<&str> = vec![
        "lambda/api-handler/index.py",
        "lambda/api-handler/rbac_middleware.py",
        "lambda/orchestration-stepfunctions/index.py",
        "lambda/poller/execution_finder.py",
        "lambda/poller/execution_poller.py",
        "lambda/frontend-builder/build_and_deploy.py",
        "lambda/requirements.txt",
        "frontend/src/app.js",
        "frontend/src/styles.css",
        "frontend/README.md",
        "cfn/storage.yaml",
        "cfn/lambdas.yaml",
        "tests/test_api_handler.py",
        "docs/notes.md",
    ];
    // A small linear congruential generator: the same history on every machine.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as usize) % n
    };
    for i in 1..COMMITS {
        for _ in 0..=next(3) {
            let path = dir.join(files[next(files.len())]);
            std::fs::create_dir_all(path.parent().context("file has a parent")?)?;
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&format!("# change {i}\n"));
            std::fs::write(&path, text)?;
        }
        git(&["commit", "-q", "-a", "-m", &format!("change {i}")])?;
        if i % 50 == 0 {
            // Untracked new files need an add; do it now and then, like real work.
            git(&["add", "-A"])?;
            git(&["commit", "-q", "--allow-empty", "-m", &format!("add files {i}")])?;
        }
    }
    std::fs::write(&done, "")?;
    Ok(dir)
}
