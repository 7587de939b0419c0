//! `cargo xtask bench stats`: `status-report stats` and `html` over generated file stores of
//! 1,000 and 50,000 runs (a year of runs: each with its validate findings, three components'
//! builds and tests with coverage, a test failing now and then, a deploy, an approval and a
//! production deploy), one CLI call each (release build, its own process), wall time and peak
//! memory, beside the jq program a user would write instead for a part of the figures (runs and
//! failures per day). The goal is each call under one second and 256 MiB at 50,000 runs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use run_state::{Coverage, FileStore, PIPELINE, Ratio, Status, Step, StepRecord, Store};

use crate::bench::{Spread, machine, ms, release_binary};
use crate::bench_diff_scale::measured;

const RUNS: [usize; 2] = [1_000, 50_000];
const GOAL_MS: f64 = 1000.0;
const GOAL_MIB: u64 = 256;

/// Runs and failed runs per day, as a user would count them with jq: what `stats` prints first.
const JQ_PER_DAY: &str = r#"reduce (inputs | select(.kind == "step")) as $r ({};
  .[$r.run_id] |= {day: (.day // ($r.started_at // "")[:10]), failed: ((.failed // false) or $r.status == "failed")})
  | [.[]] | group_by(.day) | map({day: .[0].day, runs: length, failed: map(select(.failed)) | length})"#;

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let workspace = crate::workspace_root();
    let bin = release_binary(&workspace, "status-report")?;
    let (_copy, xtask) = measuring_copy()?;
    let jq = which("jq");
    let mut out = String::new();
    let _ = writeln!(out, "{}", machine());
    let _ = writeln!(out, "status-report over generated file stores, one call each ({rounds} round(s), alternating);");
    let _ = writeln!(
        out,
        "wall ms median [min–max], peak MiB, CPU ms median (user + system, all threads: what a busy machine's wall time hides); jq: {}",
        if jq { "runs and failures per day" } else { "not installed" }
    );
    let mut met = true;
    for runs in RUNS {
        let repo = generate(&workspace, runs)?;
        let file = repo.join(".pipeline").join(FileStore::FILE_NAME);
        let size = std::fs::metadata(&file)?.len();
        let _ = writeln!(out, "  {runs} runs ({:.1} MiB):", size as f64 / (1 << 20) as f64);
        let repo_arg = repo.display().to_string();
        let page = repo.join("page").display().to_string();
        let mut calls: Vec<(&str, String, Vec<String>)> = vec![
            ("stats (a year)", bin.display().to_string(), strings(&["--repo", &repo_arg, "stats", "--since", "365d"])),
            (
                "stats --format json",
                bin.display().to_string(),
                strings(&["--repo", &repo_arg, "stats", "--format", "json"]),
            ),
            ("html (newest run)", bin.display().to_string(), strings(&["--repo", &repo_arg, "html", "--out", &page])),
        ];
        if jq {
            calls.push(("jq per day", "jq".into(), strings(&["-n", JQ_PER_DAY, &file.display().to_string()])));
        }
        let mut medians = Vec::new();
        let results = measure_alternating(&xtask, &calls, rounds)?;
        for ((name, _, _), result) in calls.iter().zip(&results) {
            let Some((times, kib, cpu)) = result else {
                let _ = writeln!(out, "    {name:<22} killed at the measurer's 60 s bound");
                continue;
            };
            let spread = Spread::of(times);
            medians.push(spread.median);
            let ok = ms(spread.median) <= GOAL_MS && kib / 1024 <= GOAL_MIB;
            if !name.starts_with("jq") && runs == 50_000 {
                met &= ok;
            }
            let _ = writeln!(
                out,
                "    {name:<22} {:>8.1} [{:.1}–{:.1}] {:>6} MiB   cpu {:>7.1}",
                ms(spread.median),
                ms(spread.min),
                ms(spread.max),
                kib / 1024,
                ms(Spread::of(cpu).median)
            );
        }
        if jq && results[calls.len() - 1].is_some() {
            let _ = writeln!(
                out,
                "    ratio stats (a year) / jq per day: {:.2}",
                medians[0].as_secs_f64() / medians[medians.len() - 1].as_secs_f64()
            );
        }
    }
    let _ = writeln!(
        out,
        "  goal at 50,000 runs (stats and html each under {GOAL_MS:.0} ms and {GOAL_MIB} MiB): {}",
        if met { "met" } else { "NOT met" }
    );
    print!("{out}");
    Ok(())
}

/// A call's wall times, its peak memory in KiB and its CPU times (user and system, all threads).
type Measured = (Vec<Duration>, u64, Vec<Duration>);

/// Each call's times and peak KiB over `rounds`, alternating which goes first so a warmer
/// cache favours none; `None` for jq killed at the measurer's hang bound (said, not fatal).
fn measure_alternating(
    xtask: &Path,
    calls: &[(&str, String, Vec<String>)],
    rounds: usize,
) -> anyhow::Result<Vec<Option<Measured>>> {
    let mut results: Vec<Option<Measured>> = vec![Some((Vec::new(), 0, Vec::new())); calls.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..calls.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, program, args) = &calls[i];
            let Some((times, peak, cpu)) = &mut results[i] else { continue };
            let before = children_cpu();
            match measured(xtask, program, args) {
                Ok((took, kib)) => {
                    times.push(took);
                    *peak = (*peak).max(kib);
                    cpu.push(children_cpu().saturating_sub(before));
                }
                Err(error) if name.starts_with("jq") && error.to_string().contains("faults-measure: kill") => {
                    results[i] = None;
                }
                Err(error) => return Err(error),
            }
        }
    }
    Ok(results)
}

/// A copy of this program, to measure each call with (`faults --measure`): another build of
/// xtask while a benchmark runs deletes the file this process was started from. The folder
/// holding it lives as long as the first value.
pub(crate) fn measuring_copy() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let copy = tempfile::tempdir()?;
    let xtask = copy.path().join("xtask");
    std::fs::copy("/proc/self/exe", &xtask)?;
    Ok((copy, xtask))
}

/// CPU time (user and system) of this process's finished children and what they waited for.
fn children_cpu() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_CHILDREN).map_or(Duration::ZERO, |usage| {
        let (user, system) = (usage.user_time(), usage.system_time());
        Duration::from_micros((user.tv_sec() * 1_000_000 + user.tv_usec()) as u64)
            + Duration::from_micros((system.tv_sec() * 1_000_000 + system.tv_usec()) as u64)
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn which(program: &str) -> bool {
    std::process::Command::new(program).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A small linear congruential generator: the same history on every machine.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The records of run `n` of a history that started `first`, `every` apart.
fn history_run(n: usize, first: SystemTime, every: Duration, random: &mut Lcg) -> Vec<StepRecord> {
    let id = format!("run-{n:06}");
    let commit = format!("{:040x}", (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let start = first + every * n as u32;
    let mut at = 0u64;
    let mut step = |component: &str, step: Step, secs: u64, status: Status| {
        let mut record = StepRecord::new(&id, &commit, component, step, status);
        record.started_at = Some(start + Duration::from_secs(at));
        record.ended_at = Some(start + Duration::from_secs(at + secs));
        record.details.log_path = Some(format!("logs/{component}-{step}.log"));
        at += secs;
        record
    };
    let mut records =
        vec![step(PIPELINE, Step::Source, 2, Status::Passed), step(PIPELINE, Step::Diff, 3, Status::Passed)];
    let mut validate = step(PIPELINE, Step::Validate, 10 + random.below(30), Status::Passed);
    validate.details.note = Some(format!(
        "3 template(s), 41 file(s) scanned, 2 tool(s): {} finding(s), 0 at or above error",
        random.below(12)
    ));
    records.push(validate);
    let mut failed = false;
    for component in ["api", "web", "worker"] {
        records.push(step(component, Step::Build, 30 + random.below(90), Status::Passed));
        let fails = random.below(100) < 4;
        let mut test =
            step(component, Step::Test, 60 + random.below(240), if fails { Status::Failed } else { Status::Passed });
        let covered = 700 + random.below(200);
        test.details.coverage = Some(Box::new(Coverage {
            report: format!("{component}/coverage.xml"),
            lines: Ratio { covered, total: 1000 },
            min_lines: Some(70.0),
            ..Coverage::default()
        }));
        if fails {
            test.details.error = Some("1 test failed: test_handler_returns_200".into());
            test.details.log_tail = Some("AssertionError: 500 != 200\n".repeat(4));
        }
        failed |= fails;
        records.push(test);
    }
    if failed {
        return records;
    }
    for component in ["api", "web"] {
        records.push(step(component, Step::Deploy, 60 + random.below(140), Status::Passed));
    }
    let mut approval = step(PIPELINE, Step::Approval, 600 + random.below(7200), Status::Passed);
    approval.details.by = Some(Box::new("alice".into()));
    records.push(approval);
    for component in ["api", "web"] {
        records.push(step(component, Step::ProdDeploy, 60 + random.below(140), Status::Passed));
    }
    records
}

/// A store's line of a record: what [`FileStore`] writes (its `kind` first), checked against
/// the store itself for the first run.
fn line_of(record: &StepRecord) -> anyhow::Result<String> {
    let json = serde_json::to_string(record)?;
    Ok(format!("{{\"kind\":\"step\",{}\n", &json[1..]))
}

/// A repository under `target/bench-stats/RUNS` whose file store holds `runs` runs over the
/// last year, with a promoted production (approval, `prod-deploy`), made afresh each time
/// (the times are relative to now).
fn generate(workspace: &Path, runs: usize) -> anyhow::Result<PathBuf> {
    let repo = workspace.join("target/bench-stats").join(runs.to_string());
    let _ = std::fs::remove_dir_all(&repo);
    let state = repo.join(".pipeline");
    std::fs::create_dir_all(&state)?;
    std::fs::write(
        repo.join("pipeline.toml"),
        "[components.api]\npaths = [\"api/**\"]\n\n[gate.environments.prod]\nafter = \"dev\"\napproval = true\n",
    )?;
    // Its own repository: inside the workspace, the root would be the workspace's.
    crate::run(std::process::Command::new("git").arg("-C").arg(&repo).args(["init", "-q"]))?;
    let year = Duration::from_secs(365 * 86_400);
    let first = SystemTime::now() - year;
    let every = year / runs as u32;
    let mut random = Lcg(0x2545_f491_4f6c_dd1d);

    // The first run through the store itself: the generated lines must be the ones it writes.
    let store = FileStore::open(&state)?;
    let mut text = String::new();
    for record in history_run(0, first, every, &mut random) {
        store.record(&record)?;
        text.push_str(&line_of(&record)?);
    }
    if std::fs::read_to_string(store.path())? != text {
        bail!("the generated lines differ from the store's; update bench_stats::line_of");
    }
    let mut out = std::io::BufWriter::new(std::fs::OpenOptions::new().append(true).open(store.path())?);
    for n in 1..runs {
        for record in history_run(n, first, every, &mut random) {
            out.write_all(line_of(&record)?.as_bytes())?;
        }
    }
    out.flush().context("writing the generated store")?;
    Ok(repo)
}
