//! `cargo xtask bench pipeline`: the whole pipeline on a fresh copy of the sample monorepo, as a
//! user runs it (`cargo xtask pipeline --approve`, one process per run, its own emulator
//! started by the first run): a first full run, a no-change rerun and a one-Lambda change,
//! with ratios to the first run, and where each run's time goes (per stage, from the store).
//! The one-Lambda change must find the emulator the first run started (an update of what is
//! deployed, not a second first run), or the bench fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use run_state::{FileStore, PIPELINE, RunDir, Status, Step, Store};

use crate::bench::{Spread, bench_git, machine, ms};

/// The goal for a no-change rerun: under 2 s and under 5% of the first run.
const GOAL_WALL: Duration = Duration::from_secs(2);
const GOAL_SHARE: f64 = 0.05;

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let xtask = std::env::current_exe()?;
    let mut first = Vec::new();
    let mut unchanged = Vec::new();
    let mut one = Vec::new();
    let mut breakdown = Vec::new();
    for round in 0..rounds.max(1) {
        let dir = sample_repo(&root)?;
        let repo = dir.path();
        let timed = || -> anyhow::Result<(Run, Run, Run)> {
            let a = pipeline(&xtask, repo, true)?;
            let b = pipeline(&xtask, repo, false)?;
            let handler = repo.join("lambda/api-handler/index.py");
            let text = std::fs::read_to_string(&handler)?;
            std::fs::write(&handler, format!("{text}\n# bench round {round}: one Lambda changed\n"))?;
            bench_git(repo, &["commit", "-q", "-am", "api-handler: one change"])?;
            let c = pipeline(&xtask, repo, true)?;
            if !c.reused {
                bail!("the one-Lambda run did not find the first run's emulator: it measured a second first run");
            }
            Ok((a, b, c))
        };
        let result = timed();
        // The emulator the first run started stops with its state file.
        crate::embedded::stop(&repo.join(".pipeline"));
        let (a, b, c) = result?;
        breakdown = vec![a.stages, c.stages];
        let (a, b, c) = (a.took, b.took, c.took);
        crate::say(&format!(
            "round {}: first {:.1} s, no change {:.0} ms, one Lambda {:.1} s",
            round + 1,
            a.as_secs_f64(),
            ms(b),
            c.as_secs_f64()
        ));
        first.push(a);
        unchanged.push(b);
        one.push(c);
    }
    let base = Spread::of(&first).median;
    println!("{}", machine());
    println!(
        "the sample monorepo, `cargo xtask pipeline --approve` per run (dev, approval, e2e, prod), rounds: {rounds}"
    );
    println!("  {:<34} {:>10} {:>10} {:>10} {:>9}", "run", "min", "median", "max", "÷ first");
    let row = |name: &str, times: &[Duration]| {
        let s = Spread::of(times);
        println!(
            "  {name:<34} {:>9.2}s {:>9.2}s {:>9.2}s {:>8.1}%",
            s.min.as_secs_f64(),
            s.median.as_secs_f64(),
            s.max.as_secs_f64(),
            100.0 * s.median.as_secs_f64() / base.as_secs_f64()
        );
        s.median
    };
    row("first full run (emulator started)", &first);
    let idle = row("no-change rerun", &unchanged);
    row("one Lambda changed (api-handler)", &one);
    print_breakdown(&breakdown);
    let share = idle.as_secs_f64() / base.as_secs_f64();
    let met = idle < GOAL_WALL && share < GOAL_SHARE;
    println!(
        "goal (no-change rerun < {} s and < {:.0}% of the first run): {} ({:.2} s, {:.1}%)",
        GOAL_WALL.as_secs(),
        GOAL_SHARE * 100.0,
        if met { "met" } else { "NOT met" },
        idle.as_secs_f64(),
        share * 100.0
    );
    Ok(())
}

/// A fresh copy of the sample monorepo, committed.
fn sample_repo(root: &Path) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("bench-pipeline-").tempdir_in(root.join("target"))?;
    let repo = dir.path();
    test_support::copy_tree(&root.join("fixtures/monorepo"), repo);
    bench_git(repo, &["init", "-q", "-b", "main"])?;
    bench_git(repo, &["add", "-A"])?;
    bench_git(repo, &["commit", "-q", "-m", "sample monorepo"])?;
    Ok(dir)
}

/// Where the time goes: each stage's span in the first run and the one-Lambda run.
fn print_breakdown(breakdown: &[Vec<(Step, Duration)>]) {
    if let [full, changed] = breakdown {
        println!("where the time goes (last round, each stage's span from the store):");
        println!("  {:<12} {:>10} {:>12}", "stage", "first run", "one Lambda");
        for (step, time) in full {
            let other = changed.iter().find(|(s, _)| s == step).map(|(_, t)| *t).unwrap_or_default();
            println!("  {:<12} {:>9.2}s {:>11.2}s", step.as_str(), time.as_secs_f64(), other.as_secs_f64());
        }
    }
}

/// One timed run: its wall time, each stage's span, and whether it found the emulator an
/// earlier run started.
struct Run {
    took: Duration,
    stages: Vec<(Step, Duration)>,
    reused: bool,
}

/// One `cargo xtask pipeline --repo DIR --approve` (the binary users run, which activates the
/// tools' venv itself). The run must pass, and reach production exactly when `deploys`.
fn pipeline(xtask: &Path, repo: &Path, deploys: bool) -> anyhow::Result<Run> {
    let (took, out) = timed_pipeline(xtask, &["--approve".as_ref(), "--repo".as_ref(), repo.as_os_str()], &[])?;
    let state = repo.join(".pipeline");
    let run = RunDir::latest(&state)?;
    let records = FileStore::open(&state)?.run(&run.run_id)?;
    // A deploying run reaches production (some component's prod-deploy passed); a run with
    // nothing to deploy records production skipped.
    let reached = records.iter().any(|r| r.step == Step::ProdDeploy && r.status == Status::Passed);
    let skipped =
        records.iter().any(|r| r.component == PIPELINE && r.step == Step::ProdDeploy && r.status == Status::Skipped);
    if (deploys && !reached) || (!deploys && !skipped) {
        let expected = if deploys { "a passed prod-deploy" } else { "prod-deploy skipped" };
        bail!("run {}: expected {expected}", run.run_id);
    }
    // Each stage's span: its first start to its last end over every component.
    let mut stages = Vec::new();
    for &step in Step::ALL {
        let of_step = records.iter().filter(|r| r.step == step);
        let start = of_step.clone().filter_map(|r| r.started_at).min();
        let end = of_step.filter_map(|r| r.ended_at).max();
        if let (Some(start), Some(end)) = (start, end) {
            stages.push((step, end.duration_since(start).unwrap_or_default()));
        }
    }
    let reused = String::from_utf8_lossy(&out.stderr).contains("(kept from earlier runs");
    Ok(Run { took, stages, reused })
}

/// One `cargo xtask pipeline ARGS` as users run it (the binary activates the tools' venv
/// itself), with these variables on top of this process's, timed; a run that fails is an error
/// carrying its output.
pub(crate) fn timed_pipeline(
    xtask: &Path,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
) -> anyhow::Result<(Duration, std::process::Output)> {
    let start = Instant::now();
    let out = Command::new(xtask)
        .arg("pipeline")
        .args(args)
        .env_remove(crate::VENV_ACTIVE)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .context("running xtask pipeline")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "the pipeline failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((took, out))
}
