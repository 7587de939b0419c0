//! `cargo xtask bench store`: the status store a year of runs leaves (file stores of 1, 10 and
//! 100 MB, generated), and the `status-report` calls every stage and person makes on it:
//! `runs`, `show` and `gate` of the newest run, and `record` of one step. One CLI call each
//! (release build, its own process), wall time and peak memory; the goal is each under one
//! second and 256 MiB at 100 MB.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use run_state::{FileStore, PIPELINE, Status, Step, StepRecord, Store};

use crate::bench::{Spread, machine, ms, release_binary};
use crate::bench_diff_scale::measured;

const SIZES_MB: [u64; 3] = [1, 10, 100];
const GOAL_MS: f64 = 1000.0;
const GOAL_MIB: u64 = 256;

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let workspace = crate::workspace_root();
    let bin = release_binary(&workspace, "status-report")?;
    let (_copy, xtask) = crate::bench_stats::measuring_copy()?;
    let mut out = String::new();
    let _ = writeln!(out, "{}", machine());
    let _ =
        writeln!(out, "status-report on file stores, one call each ({rounds} round(s)); ms median [min–max], peak MiB");
    let mut met = true;
    for mb in SIZES_MB {
        let repo = generate(&workspace, mb)?;
        let store = FileStore::open(&repo.join(".pipeline"))?;
        let newest = store.run_ids()?.pop().context("a generated run")?;
        let size = std::fs::metadata(repo.join(".pipeline").join(FileStore::FILE_NAME))?.len();
        let _ = writeln!(
            out,
            "  {mb} MB store ({:.1} MiB, {} runs):",
            size as f64 / (1 << 20) as f64,
            store.run_ids()?.len()
        );
        let repo_arg = repo.display().to_string();
        let calls: [(&str, Vec<String>); 4] = [
            ("runs", vec!["runs".into()]),
            ("show (newest)", vec!["show".into(), "--format".into(), "json".into()]),
            ("gate (newest)", vec!["gate".into()]),
            (
                "record (one step)",
                [
                    "record",
                    "--run",
                    &newest,
                    "--commit",
                    "abc",
                    "--component",
                    "bench-extra",
                    "--step",
                    "test",
                    "--status",
                    "passed",
                ]
                .map(str::to_string)
                .to_vec(),
            ),
        ];
        for (name, args) in calls {
            let mut times = Vec::new();
            let mut peak = 0;
            for round in 0..rounds {
                let mut args = args.clone();
                if name.starts_with("record") {
                    // A step is recorded once: each round records another component.
                    args[6] = format!("bench-extra-{round}");
                }
                let full: Vec<String> = ["--repo".to_string(), repo_arg.clone()].into_iter().chain(args).collect();
                let (took, kib) = measured_allowing_refusal(&xtask, &bin, &full, name)?;
                times.push(took);
                peak = peak.max(kib);
            }
            let spread = Spread::of(&times);
            let ok = ms(spread.median) <= GOAL_MS && peak / 1024 <= GOAL_MIB;
            met &= ok || mb < 100;
            let _ = writeln!(
                out,
                "    {name:<20} {:>8.1} [{:.1}–{:.1}] {:>6} MiB",
                ms(spread.median),
                ms(spread.min),
                ms(spread.max),
                peak / 1024
            );
        }
    }
    let _ = writeln!(
        out,
        "  goal at 100 MB (each call under {GOAL_MS:.0} ms and {GOAL_MIB} MiB): {}",
        if met { "met" } else { "NOT met" }
    );
    print!("{out}");
    Ok(())
}

/// `gate` exits 1 when the run is refused (a generated run has a failure in it): that is an
/// answer, not a failed call.
fn measured_allowing_refusal(xtask: &Path, bin: &Path, args: &[String], name: &str) -> anyhow::Result<(Duration, u64)> {
    let program = bin.display().to_string();
    match measured(xtask, &program, args) {
        Ok(measured) => Ok(measured),
        Err(error) if name.starts_with("gate") => {
            // Measured again through `sh`, whose exit is 0 whatever the gate says.
            let command = std::iter::once(program).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");
            measured(xtask, "sh", &["-c".into(), format!("{command} >/dev/null; true")])
                .with_context(|| format!("gate: {error}"))
        }
        Err(error) => Err(error),
    }
}

/// A repository under `target/bench-store/MB` whose file store holds about `mb` MB of runs,
/// made once: the records of one run (as the stages write them) repeated under new run ids.
pub(crate) fn generate(workspace: &Path, mb: u64) -> anyhow::Result<PathBuf> {
    let repo = workspace.join("target/bench-store").join(mb.to_string());
    let state = repo.join(".pipeline");
    let file = state.join(FileStore::FILE_NAME);
    if file.is_file() && std::fs::metadata(&file)?.len() >= mb << 20 {
        return Ok(repo);
    }
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&state)?;
    std::fs::write(repo.join("pipeline.toml"), "[components.api]\npaths = [\"api/**\"]\n")?;
    // Its own repository: inside the workspace, the root would be the workspace's.
    crate::run(std::process::Command::new("git").arg("-C").arg(&repo).args(["init", "-q"]))?;
    // One run's records through the store itself, so the lines are what the store writes.
    let template_dir = tempfile::tempdir()?;
    let template = FileStore::open(template_dir.path())?;
    let run = "bench-run-0000000";
    let steps = [
        (PIPELINE, Step::Source, Status::Passed),
        (PIPELINE, Step::Diff, Status::Passed),
        (PIPELINE, Step::Validate, Status::Passed),
        ("api", Step::Build, Status::Passed),
        ("web", Step::Build, Status::Passed),
        ("api", Step::Test, Status::Passed),
        ("web", Step::Test, Status::Failed),
        ("worker", Step::Test, Status::Passed),
        ("api", Step::Deploy, Status::Passed),
        ("web", Step::Deploy, Status::Skipped),
    ];
    for (component, step, status) in steps {
        let mut record = StepRecord::new(run, "0123456789abcdef0123456789abcdef01234567", component, step, status);
        record.started_at = Some(std::time::SystemTime::now());
        record.ended_at = Some(std::time::SystemTime::now());
        record.details.log_path = Some(format!("logs/{component}-{step}.log"));
        if status == Status::Failed {
            record.details.error = Some("1 test failed: test_handler_returns_200".into());
            record.details.log_tail = Some("AssertionError: 500 != 200\n".repeat(4));
        }
        template.record(&record)?;
    }
    let lines = std::fs::read_to_string(template_dir.path().join(FileStore::FILE_NAME))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    let mut written = 0u64;
    let mut n = 0u64;
    while written < mb << 20 {
        n += 1;
        let text = lines.replace(run, &format!("bench-run-{n:07}"));
        out.write_all(text.as_bytes())?;
        written += text.len() as u64;
    }
    out.flush()?;
    drop(out);
    Ok(repo)
}
