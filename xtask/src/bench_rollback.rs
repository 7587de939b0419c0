//! `cargo xtask bench rollback`: dev back to its earlier release, by `cargo xtask rollback`
//! against what a user does without it: commit a revert and run `cargo xtask pipeline` again
//! (rebuild, retest, redeploy). The sample monorepo in its own emulator behind a counting proxy,
//! release 1 then release 2 (a root template resource, the API handler's code, the page)
//! deployed first; each round measures both from release 2 (wall time and API calls), putting
//! release 2 back between them without measuring it. Both must end with dev running release 1's
//! code; the pipeline's builds and tests are counted from the store.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use run_state::{FileStore, ReleaseStore, RunDir, Status, Step, Store};

use crate::bench::{Spread, bench_git, machine};

/// The goal: a rollback at least this many times faster than redeploying through the pipeline.
const GOAL_RATIO: f64 = 10.0;

struct Measured {
    took: Duration,
    calls: usize,
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let xtask = std::env::current_exe()?;
    let dir = tempfile::Builder::new().prefix("bench-rollback-").tempdir_in(root.join("target"))?;
    let repo = dir.path();
    test_support::copy_tree(&root.join("fixtures/monorepo"), repo);
    bench_git(repo, &["init", "-q", "-b", "main"])?;
    bench_git(repo, &["add", "-A"])?;
    bench_git(repo, &["commit", "-q", "-m", "release 1"])?;
    let moto = test_support::Moto::start();
    let proxy = test_support::FaultProxy::start(&moto.endpoint);
    let endpoint = proxy.endpoint.clone();
    pipeline(&xtask, repo, &endpoint)?;
    change(repo)?;
    bench_git(repo, &["commit", "-q", "-am", "release 2"])?;
    pipeline(&xtask, repo, &endpoint)?;
    let (release1, release2, function) = {
        let releases = FileStore::open(&repo.join(".pipeline"))?.releases("dev")?;
        let [one, two] = &releases[..] else { bail!("expected two releases of dev, found {}", releases.len()) };
        let (one, two) = (&one.functions["api-handler"], &two.functions["api-handler"]);
        (one.code_sha256.clone(), two.code_sha256.clone(), two.function_name.clone())
    };
    let code = |_: &str| -> anyhow::Result<String> { api_code(&endpoint, &function) };
    let (mut by_rollback, mut by_pipeline, mut rebuilt) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds.max(1) {
        for first in [round % 2 == 0, round % 2 != 0] {
            proxy.forget();
            let start = Instant::now();
            if first {
                rollback(&xtask, repo, &endpoint, &["--steps", "1"])?;
            } else {
                bench_git(repo, &["revert", "--no-edit", "HEAD"])?;
                let run = pipeline(&xtask, repo, &endpoint)?;
                rebuilt = built_and_tested(repo, &run)?;
            }
            let measured = Measured { took: start.elapsed(), calls: proxy.seen().len() };
            if code("api-handler")? != release1 {
                bail!("dev does not run release 1's code after the {}", if first { "rollback" } else { "pipeline" });
            }
            // Release 2 back, unmeasured: forward by rollback, or by the pipeline on a revert of the revert.
            if first {
                rollback(&xtask, repo, &endpoint, &["--steps", "1"])?;
                by_rollback.push(measured);
            } else {
                bench_git(repo, &["revert", "--no-edit", "HEAD"])?;
                pipeline(&xtask, repo, &endpoint)?;
                by_pipeline.push(measured);
            }
            if code("api-handler")? != release2 {
                bail!("release 2 did not come back between the measures");
            }
        }
        crate::say(&format!("round {} done", round + 1));
    }
    report(rounds, &by_rollback, &by_pipeline, rebuilt);
    Ok(())
}

fn report(rounds: usize, by_rollback: &[Measured], by_pipeline: &[Measured], rebuilt: usize) {
    let times = |m: &[Measured]| m.iter().map(|m| m.took).collect::<Vec<_>>();
    let calls = |m: &[Measured]| m.iter().map(|m| m.calls).sum::<usize>() / m.len().max(1);
    let (a, b) = (Spread::of(&times(by_rollback)), Spread::of(&times(by_pipeline)));
    println!("{}", machine());
    println!("dev of the sample monorepo from release 2 back to release 1 (moto, counting proxy), rounds: {rounds}");
    println!("  {:<44} {:>9} {:>9} {:>9} {:>10} {:>14}", "how", "min", "median", "max", "API calls", "builds+tests");
    for (name, s, c, builds) in [
        ("cargo xtask rollback --env dev --steps 1", &a, calls(by_rollback), 0),
        ("git revert + cargo xtask pipeline", &b, calls(by_pipeline), rebuilt),
    ] {
        println!(
            "  {name:<44} {:>8.2}s {:>8.2}s {:>8.2}s {c:>10} {builds:>14}",
            s.min.as_secs_f64(),
            s.median.as_secs_f64(),
            s.max.as_secs_f64()
        );
    }
    let ratio = b.median.as_secs_f64() / a.median.as_secs_f64();
    println!(
        "rollback is {ratio:.1}x faster (median), {:.1}x fewer API calls; goal >= {GOAL_RATIO:.0}x with no build and no test: {}",
        calls(by_pipeline) as f64 / calls(by_rollback).max(1) as f64,
        if ratio >= GOAL_RATIO { "met" } else { "NOT met" }
    );
}

/// Release 2: a resource in the root template, the API handler's code, the page.
fn change(repo: &Path) -> anyhow::Result<()> {
    let edit = |path: &str, f: &dyn Fn(String) -> String| -> anyhow::Result<()> {
        let file = repo.join(path);
        let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        std::fs::write(&file, f(text)).with_context(|| file.display().to_string())
    };
    let marker = "Resources:\n  ReleaseMarker:\n    Type: AWS::SSM::Parameter\n    Properties:\n      Type: String\n      Value: release-2\n";
    edit("cfn/master.yaml", &|t| t.replacen("Resources:\n", marker, 1))?;
    edit("lambda/api-handler/index.py", &|t| format!("{t}\n# release 2\n"))?;
    edit("frontend/src/index.html", &|t| t.replace("</body>", "<p>release 2</p></body>"))
}

/// `cargo xtask pipeline` to dev (it waits at the approval, as a dev deploy does): the run.
fn pipeline(xtask: &Path, repo: &Path, endpoint: &str) -> anyhow::Result<RunDir> {
    let out = Command::new(xtask)
        .args(["pipeline", "--repo"])
        .arg(repo)
        .args(["--endpoint-url", endpoint])
        .output()
        .context("running cargo xtask pipeline")?;
    if !out.status.success() {
        bail!("the pipeline failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(RunDir::latest(&repo.join(".pipeline"))?)
}

fn rollback(xtask: &Path, repo: &Path, endpoint: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(xtask)
        .args(["rollback", "--repo"])
        .arg(repo)
        .args(["--env", "dev", "--endpoint-url", endpoint])
        .args(args)
        .output()
        .context("running cargo xtask rollback")?;
    if !out.status.success() {
        bail!("the rollback failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The builds and tests the pipeline's run passed.
fn built_and_tested(repo: &Path, run: &RunDir) -> anyhow::Result<usize> {
    let records = FileStore::open(&repo.join(".pipeline"))?.run(&run.run_id)?;
    Ok(records.iter().filter(|r| matches!(r.step, Step::Build | Step::Test) && r.status == Status::Passed).count())
}

/// The CodeSha256 of the function `name`, read through the emulator.
fn api_code(endpoint: &str, name: &str) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = pipeline::emulator_config(endpoint).await?;
        let lambda = aws_target::lambda(&config, None);
        let function = lambda.get_function_configuration().function_name(name).send().await;
        let function = function.with_context(|| format!("GetFunctionConfiguration {name}"))?;
        Ok(function.code_sha256().unwrap_or_default().to_owned())
    })
}
