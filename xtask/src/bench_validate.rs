//! `cargo xtask bench validate`: the native checks against cfn-lint on the same templates,
//! and the whole Validate stage on a repository where nothing changed.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A template near CloudFormation's 500-resource limit, with references between resources.
fn generated_template(resources: usize) -> String {
    let mut text = String::from(
        "AWSTemplateFormatVersion: \"2010-09-09\"\nParameters:\n  Env:\n    Type: String\n    Default: dev\nResources:\n",
    );
    for i in 0..resources {
        if i % 2 == 0 {
            text.push_str(&format!(
                "  Queue{i}:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Sub \"${{Env}}-queue-{i}\"\n      VisibilityTimeout: 60\n"
            ));
        } else {
            let queue = i - 1;
            text.push_str(&format!(
                "  Topic{i}:\n    Type: AWS::SNS::Topic\n    Properties:\n      TopicName: !Sub \"${{Env}}-topic-{i}\"\n      Subscription:\n        - Protocol: sqs\n          Endpoint: !GetAtt Queue{queue}.Arn\n"
            ));
        }
    }
    text.push_str("Outputs:\n  First:\n    Value: !Ref Queue0\n");
    text
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let bin = crate::python::ensure(&root)?;
    let cfn_lint = bin.join("cfn-lint");
    if !cfn_lint.exists() {
        bail!("cfn-lint is missing from {}; run `cargo xtask setup`", bin.display());
    }
    let work = root.join("target/bench-validate");
    std::fs::create_dir_all(&work)?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(root.join("fixtures/monorepo/cfn"))? {
        let path = entry?.path();
        let target = work.join(path.file_name().context("a file name")?);
        std::fs::copy(&path, &target)?;
        files.push(target);
    }
    let big = work.join("generated-490.yaml");
    std::fs::write(&big, generated_template(490))?;
    files.push(big);
    files.sort();
    let bytes: Vec<(String, PathBuf, Vec<u8>)> = files
        .iter()
        .map(|p| Ok((p.file_name().unwrap().to_string_lossy().to_string(), p.clone(), std::fs::read(p)?)))
        .collect::<anyhow::Result<_>>()?;

    let native = || {
        let mut count = 0;
        for (name, path, body) in &bytes {
            count += validate::check_template(name, path, body).len();
        }
        count
    };
    let lint = || -> anyhow::Result<()> {
        let out = Command::new(&cfn_lint).args(["-f", "json", "--"]).args(&files).output()?;
        if out.stdout.is_empty() && !out.status.success() {
            bail!("cfn-lint failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    // The native pass is short: repeat it so the clock sees it.
    const NATIVE_REPEAT: u32 = 20;
    let mut native_times = Vec::new();
    let mut lint_times = Vec::new();
    for round in 0..rounds.max(1) {
        let time_native = || {
            let start = Instant::now();
            for _ in 0..NATIVE_REPEAT {
                std::hint::black_box(native());
            }
            start.elapsed() / NATIVE_REPEAT
        };
        if round % 2 == 0 {
            native_times.push(time_native());
            lint_times.push(timed(lint)?);
        } else {
            lint_times.push(timed(lint)?);
            native_times.push(time_native());
        }
    }
    let (native_median, lint_median) = (median(&mut native_times), median(&mut lint_times));

    // The stage on the sample monorepo when nothing changed since the base, and on every
    // component with the result cache warm (tools off: they only run for changed components).
    let sample = root.join("target/sample-monorepo");
    if !sample.join(".git").exists() {
        bail!("{} is missing; run `cargo xtask pipeline` once first", sample.display());
    }
    let validate_bin = root.join("target/debug/validate");
    let build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--quiet", "-p", "validate", "--features", "cli"])
        .current_dir(&root)
        .status()?;
    if !build.success() {
        bail!("building the validate binary failed");
    }
    let stage = |args: &[&str]| -> anyhow::Result<Duration> {
        timed(|| {
            let out = Command::new(&validate_bin).arg("--repo").arg(&sample).args(args).output()?;
            if out.status.code() == Some(2) {
                bail!("validate failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        })
    };
    // A run whose diff says nothing changed: base = head.
    let repo = source_diff::Repo::open(&sample)?;
    let components = source_diff::Components::load(&sample.join("pipeline.toml"))?;
    let state_dir = sample.join(".pipeline");
    let store = run_state::FileStore::open(&state_dir)?;
    let request = source_diff::BaseRequest { explicit: Some("HEAD".into()), ..Default::default() };
    source_diff::begin_run(&repo, &components, &request, "HEAD", false, &store, &state_dir)?;
    stage(&["--all", "--no-tools"])?;
    let mut unchanged = Vec::new();
    let mut warm_all = Vec::new();
    for _ in 0..rounds.max(1) {
        unchanged.push(stage(&[])?);
        warm_all.push(stage(&["--all", "--no-tools"])?);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "bench validate: {} templates ({} resources in the generated one), {} rounds, median",
        files.len(),
        490,
        rounds.max(1)
    );
    println!("  cfn-lint -f json                   {:>9.1} ms", ms(lint_median));
    println!("  native checks (same templates)     {:>9.2} ms", ms(native_median));
    println!(
        "  speed-up native / cfn-lint: {:.0}x (goal: at least 50x)",
        lint_median.as_secs_f64() / native_median.as_secs_f64()
    );
    println!(
        "  validate stage, sample monorepo, nothing changed:   {:>7.1} ms (goal: under 1 s)",
        ms(median(&mut unchanged))
    );
    println!("  validate --all --no-tools, cache warm:               {:>7.1} ms", ms(median(&mut warm_all)));
    Ok(())
}

fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
