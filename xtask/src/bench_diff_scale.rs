//! `cargo xtask bench diff --scale`: source-diff on a monorepo of the size the largest users
//! have (100,000 files in 500 components), for a change of 5,000 files made across 1,000
//! commits, as one CLI call against one bare `git diff --name-status` call: wall time and peak
//! memory of each, both checked to see the same changed paths.
//!
//! The repository is generated once with `git fast-import` (reproducible: the same content on
//! every machine) under `target/bench-monorepo-scale` and kept for later rounds.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{Spread, machine, ms, release_binary};

const COMPONENTS: usize = 500;
const FILES_PER_COMPONENT: usize = 200;
const COMMITS: usize = 1_000;
const FILES_PER_COMMIT: usize = 5;
/// The goals: a call at most this many times a bare `git diff` call, and at most this peak memory.
const GOAL_RATIO: f64 = 1.5;
const GOAL_MIB: u64 = 256;

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let workspace = crate::workspace_root();
    let dir = generate(&workspace)?;
    let base = rev(&dir, "HEAD~1000")?;
    let head = rev(&dir, "HEAD")?;
    let bin = release_binary(&workspace, "source-diff")?;
    let xtask = std::env::current_exe()?;
    let git_args = ["-C", &dir.display().to_string(), "diff", "--name-status", "--no-renames", &base, &head]
        .map(str::to_string)
        .to_vec();
    let ours_args = ["--repo", &dir.display().to_string(), "--base", &base, "--head", &head, "--format", "json"]
        .map(str::to_string)
        .to_vec();
    let work = same_work(&bin, &git_args, &ours_args)?;
    let calls = measure(&xtask, &bin, &git_args, &ours_args, rounds)?;
    print!("{}", table(&work, &calls));
    Ok(())
}

/// What both calls saw: changed paths (the same for both) and changed components.
struct Work {
    paths: usize,
    components: usize,
}

/// The same work: every path git names is one source-diff counts, as many as were changed.
fn same_work(bin: &Path, git_args: &[String], ours_args: &[String]) -> anyhow::Result<Work> {
    let git_out = Command::new("git").args(git_args).output().context("running git diff")?;
    let git_paths = String::from_utf8_lossy(&git_out.stdout).lines().filter(|l| !l.is_empty()).count();
    let ours_out = Command::new(bin).args(ours_args).output().with_context(|| format!("running {}", bin.display()))?;
    if !ours_out.status.success() {
        bail!("source-diff failed: {}", String::from_utf8_lossy(&ours_out.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&ours_out.stdout).context("source-diff --format json")?;
    let our_paths = report["files"].as_array().map_or(0, Vec::len);
    if git_paths != our_paths || git_paths != COMMITS * FILES_PER_COMMIT {
        bail!("git saw {git_paths} changed paths, source-diff {our_paths}; expected {}", COMMITS * FILES_PER_COMMIT);
    }
    let components =
        report["components"].as_object().map_or(0, |c| c.values().filter(|v| v["changed"] == true).count());
    Ok(Work { paths: git_paths, components })
}

/// Per call: wall times and the peak memory of all rounds, git's and ours.
struct Calls {
    git_times: Vec<Duration>,
    our_times: Vec<Duration>,
    git_kib: u64,
    our_kib: u64,
}

/// One git call and one source-diff call per round, alternating which goes first.
fn measure(
    xtask: &Path,
    bin: &Path,
    git_args: &[String],
    ours_args: &[String],
    rounds: usize,
) -> anyhow::Result<Calls> {
    let mut calls = Calls { git_times: Vec::new(), our_times: Vec::new(), git_kib: 0, our_kib: 0 };
    for round in 0..rounds.max(1) {
        let git = |calls: &mut Calls| -> anyhow::Result<()> {
            let (took, kib) = measured(xtask, "git", git_args)?;
            calls.git_times.push(took);
            calls.git_kib = calls.git_kib.max(kib);
            Ok(())
        };
        if round % 2 == 0 {
            git(&mut calls)?;
        }
        let (took, kib) = measured(xtask, &bin.display().to_string(), ours_args)?;
        calls.our_times.push(took);
        calls.our_kib = calls.our_kib.max(kib);
        if round % 2 == 1 {
            git(&mut calls)?;
        }
    }
    Ok(calls)
}

/// The table: the repository, the machine, both calls and whether the goals are met.
fn table(work: &Work, calls: &Calls) -> String {
    let (git, ours) = (Spread::of(&calls.git_times), Spread::of(&calls.our_times));
    let ratio = ours.median.as_secs_f64() / git.median.as_secs_f64();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bench diff --scale: {} files in {COMPONENTS} components; {} paths changed across {COMMITS} commits ({} components changed); {} rounds",
        COMPONENTS * FILES_PER_COMPONENT,
        work.paths,
        work.components,
        calls.git_times.len()
    );
    let _ = writeln!(out, "  {}", machine());
    let _ = writeln!(out, "  {:<44} {:>9} {:>9} {:>9} {:>10}", "ms per call", "min", "median", "max", "peak MiB");
    for (name, spread, kib) in [
        ("git diff --name-status --no-renames", git, calls.git_kib),
        ("source-diff --format json (release)", ours, calls.our_kib),
    ] {
        let _ = writeln!(
            out,
            "  {name:<44} {:>9.1} {:>9.1} {:>9.1} {:>10.1}",
            ms(spread.min),
            ms(spread.median),
            ms(spread.max),
            kib as f64 / 1024.0
        );
    }
    let met = ratio <= GOAL_RATIO && calls.our_kib / 1024 <= GOAL_MIB;
    let _ = writeln!(
        out,
        "  ratio source-diff / git: {ratio:.2}x; goal (at most {GOAL_RATIO}x and {GOAL_MIB} MiB): {}",
        if met { "met" } else { "NOT met" }
    );
    out
}

/// One command through `xtask faults --measure` (its own process, so the peak memory is that
/// command's alone): wall time and peak resident KiB.
pub(crate) fn measured(xtask: &Path, program: &str, args: &[String]) -> anyhow::Result<(Duration, u64)> {
    let start = Instant::now();
    let out = Command::new(xtask)
        .args(["faults", "--measure", "--", program])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {} faults --measure", xtask.display()))?;
    let took = start.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    let line = said.lines().rev().find_map(|l| l.strip_prefix("faults-measure: ")).context("no measurement")?;
    let mut parts = line.split_whitespace();
    if parts.next() != Some("0") {
        bail!("{program} failed: {said}");
    }
    let kib = parts.next().and_then(|k| k.parse().ok()).context("no peak memory")?;
    Ok((took, kib))
}

fn rev(dir: &Path, name: &str) -> anyhow::Result<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(["rev-parse", name]).output()?;
    if !out.status.success() {
        bail!("git rev-parse {name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The generated monorepo: one commit with every file and `pipeline.toml` (500 components,
/// every tenth depending on the one before), then 1,000 commits of five files each, checked out.
fn generate(workspace: &Path) -> anyhow::Result<PathBuf> {
    let dir = workspace.join("target/bench-monorepo-scale");
    let done = dir.join(".git/bench-scale-complete");
    if done.exists() {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    crate::bench::bench_git(&dir, &["init", "-q", "-b", "main"])?;
    let mut import = Command::new("git")
        .arg("-C")
        .arg(&dir)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting git fast-import")?;
    let mut stream = std::io::BufWriter::new(import.stdin.take().context("fast-import's stdin")?);
    let mut config = String::from("[diff]\ndefault_branch = \"main\"\n\n");
    for c in 0..COMPONENTS {
        let _ = writeln!(config, "[components.svc-{c:03}]\npaths = [\"services/svc-{c:03}/**\"]");
        if c % 10 == 9 {
            let _ = writeln!(config, "depends_on = [\"svc-{:03}\"]", c - 1);
        }
        config.push('\n');
    }
    let mut time = 1_700_000_000u64;
    let mut commit = |stream: &mut dyn std::io::Write, message: &str, files: &[(String, String)]| {
        time += 60;
        let mut text = format!(
            "commit refs/heads/main\ncommitter bench <bench@localhost> {time} +0000\ndata {}\n{message}\n",
            message.len() + 1
        );
        for (path, body) in files {
            let _ = write!(text, "M 100644 inline {path}\ndata {}\n{body}\n", body.len());
        }
        stream.write_all(text.as_bytes())
    };
    let mut all = vec![("pipeline.toml".to_string(), config)];
    for c in 0..COMPONENTS {
        for f in 0..FILES_PER_COMPONENT {
            all.push((format!("services/svc-{c:03}/src/m{f:03}.py"), format!("# svc {c} module {f}\nVALUE = {f}\n")));
        }
    }
    commit(&mut stream, "the monorepo", &all)?;
    // A small linear congruential generator: the same history on every machine; each commit
    // changes five files no earlier commit changed.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut order: Vec<usize> = (0..COMPONENTS * FILES_PER_COMPONENT).collect();
    for i in (1..order.len()).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, ((state >> 33) as usize) % (i + 1));
    }
    for (n, chunk) in order.chunks(FILES_PER_COMMIT).take(COMMITS).enumerate() {
        let files: Vec<(String, String)> = chunk
            .iter()
            .map(|&i| {
                let (c, f) = (i / FILES_PER_COMPONENT, i % FILES_PER_COMPONENT);
                (
                    format!("services/svc-{c:03}/src/m{f:03}.py"),
                    format!("# svc {c} module {f}\nVALUE = \"change {n}\"\n"),
                )
            })
            .collect();
        commit(&mut stream, &format!("change {n}"), &files)?;
    }
    stream.flush()?;
    drop(stream);
    if !import.wait()?.success() {
        bail!("git fast-import failed in {}", dir.display());
    }
    crate::bench::bench_git(&dir, &["checkout", "-q", "-f", "main"])?;
    std::fs::write(&done, "")?;
    Ok(dir)
}
