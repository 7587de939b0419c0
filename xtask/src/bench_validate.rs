//! `cargo xtask bench validate`: the `validate` binary against `cfn-lint -f json` on the same
//! templates, each one process per round as a user runs it, alternating which goes first; the
//! outputs are checked (both find the one bad template's problem, nothing else). The in-process
//! native pass and the whole Validate stage on an unchanged repository are reported beside it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::{machine, print_header, print_row, release_binary};

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

/// The bad template in the set, and the one finding both sides must report for it.
const BAD_TEMPLATE: &str = "E1020-ref-undefined.yaml";

/// (file name, rule, line, column): what both sides must agree on.
type Seen = BTreeSet<(String, String, u64, u64)>;

const GENERATED_RESOURCES: usize = 490;

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let bin = crate::python::ensure(&root)?;
    let cfn_lint = bin.join("cfn-lint");
    if !cfn_lint.exists() {
        bail!("cfn-lint is missing from {}; run `cargo xtask setup`", bin.display());
    }
    let rounds = rounds.max(1);
    let repo = prepare(&root)?;
    let cfn = repo.join("cfn");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cfn)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    let validate_bin = release_binary(&root, "validate")?;

    // The two commands a user runs on these templates.
    let ours = || validate_json(&validate_bin, &repo);
    let lint = || cfn_lint_json(&cfn_lint, &files);
    // Both must report the bad template's problem and nothing else (besides our native-only
    // check cfn-lint does not have), or the comparison means nothing.
    let generated = format!("generated-{GENERATED_RESOURCES}.yaml");
    let native_only: Seen = [(generated.clone(), "P1002".to_string(), 1, 1)].into();
    // Warm both (page cache, Python's bytecode cache), untimed, and check what they say.
    let agreed = agree(&ours()?, &lint()?, &native_only)?;

    let mut native_times = Vec::new();
    let mut lint_times = Vec::new();
    for round in 0..rounds {
        let timed = |side: &dyn Fn() -> anyhow::Result<Vec<u8>>, times: &mut Vec<Duration>| {
            let start = Instant::now();
            let out = side()?;
            times.push(start.elapsed());
            anyhow::Ok(out)
        };
        let (native, theirs) = if round % 2 == 0 {
            let native = timed(&ours, &mut native_times)?;
            (native, timed(&lint, &mut lint_times)?)
        } else {
            let theirs = timed(&lint, &mut lint_times)?;
            (timed(&ours, &mut native_times)?, theirs)
        };
        agree(&native, &theirs, &native_only)?;
    }
    let in_process = in_process_times(&files, rounds, agreed.len())?;
    let sample = root.join(crate::pipeline::SAMPLE_DIR);
    let (unchanged, warm_all) = stage_times(&validate_bin, &sample, rounds)?;

    println!(
        "bench validate: {} templates in {} ({} resources in the generated one, one bad: {BAD_TEMPLATE}), {rounds} rounds",
        files.len(),
        cfn.display(),
        GENERATED_RESOURCES,
    );
    println!("  {}", machine());
    println!(
        "  outputs checked every round: both report exactly {:?}; validate also {native_only:?} (P1002: body over 51,200 bytes, a check cfn-lint does not have)",
        agreed.difference(&native_only).collect::<Vec<_>>()
    );
    let width = 62;
    print_header("ms per run", width);
    let lint_median = print_row("cfn-lint -f json FILES (one process, its full rule set)", width, &lint_times);
    let native_median = print_row("validate --all --no-tools --no-cache (one process, release)", width, &native_times);
    print_row("  native checks in process (xtask, a debug build), files read", width, &in_process);
    if !unchanged.is_empty() {
        print_row("validate stage, sample monorepo, nothing changed", width, &unchanged);
        print_row("validate --all --no-tools, sample monorepo, cache warm", width, &warm_all);
    } else {
        println!("  (the stage rows need {}: run `cargo xtask pipeline` once)", sample.display());
    }
    println!(
        "  ratio per run, cfn-lint / validate: {:.1}x (medians; cfn-lint runs more rules, validate also reads the config and lists the files)",
        lint_median.as_secs_f64() / native_median.as_secs_f64()
    );
    Ok(())
}

/// `validate --all --no-tools --no-cache --format json` of the repository: its JSON, which
/// must say one bad template (exit 1).
fn validate_json(validate_bin: &Path, repo: &Path) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(validate_bin)
        .arg("--repo")
        .arg(repo)
        .args(["--all", "--no-tools", "--no-cache", "--format", "json"])
        .output()?;
    if out.status.code() != Some(1) {
        bail!(
            "validate should exit 1 (one bad template), got {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// `cfn-lint -f json -- FILES`: its JSON.
fn cfn_lint_json(cfn_lint: &Path, files: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(cfn_lint).args(["-f", "json", "--"]).args(files).output()?;
    if out.stdout.is_empty() && !out.status.success() {
        bail!("cfn-lint failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// What validate found, when it and cfn-lint agree: the bad template's one finding, and
/// validate's `native_only` besides.
fn agree(native: &[u8], theirs: &[u8], native_only: &Seen) -> anyhow::Result<Seen> {
    let native = native_seen(native)?;
    let theirs = cfn_lint_seen(theirs)?;
    let shared: Seen = native.difference(native_only).cloned().collect();
    if shared != theirs || !native.is_superset(native_only) {
        bail!(
            "validate and cfn-lint disagree:\n  validate {native:?}\n  cfn-lint {theirs:?}\n  (native-only, expected: {native_only:?})"
        );
    }
    if theirs.len() != 1 || theirs.iter().any(|(file, ..)| file != BAD_TEMPLATE) {
        bail!("expected one shared finding, in {BAD_TEMPLATE}; both said {theirs:?}");
    }
    Ok(native)
}

/// In process, the files already read: what the library costs, not what a user waits for.
fn in_process_times(files: &[PathBuf], rounds: usize, expected: usize) -> anyhow::Result<Vec<Duration>> {
    let bytes: Vec<(String, PathBuf, Vec<u8>)> = files
        .iter()
        .map(|p| {
            Ok((
                format!("cfn/{}", p.file_name().context("a file name")?.to_string_lossy()),
                p.clone(),
                std::fs::read(p)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut in_process = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let mut count = 0;
        for (name, path, body) in &bytes {
            count += validate::check_template(name, path, body).len();
        }
        in_process.push(start.elapsed());
        if count != expected {
            bail!("the native checks in process found {count} findings, the binary {expected}");
        }
    }
    Ok(in_process)
}

/// The stage on the sample monorepo when nothing changed since the base, and on every
/// component with the result cache warm (tools off: they only run for changed components);
/// nothing when the sample has not been made.
fn stage_times(validate_bin: &Path, sample: &Path, rounds: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut unchanged = Vec::new();
    let mut warm_all = Vec::new();
    if !sample.join(".git").exists() {
        return Ok((unchanged, warm_all));
    }
    let stage = |args: &[&str]| -> anyhow::Result<Duration> {
        let start = Instant::now();
        let out = Command::new(validate_bin).arg("--repo").arg(sample).args(args).output()?;
        if out.status.code() == Some(2) {
            bail!("validate failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(start.elapsed())
    };
    // A run whose diff says nothing changed: base = head.
    let repo = source_diff::Repo::open(sample)?;
    let components = source_diff::Components::load(&sample.join("pipeline.toml"))?;
    let state_dir = sample.join(".pipeline");
    let store = run_state::FileStore::open(&state_dir)?;
    let request = source_diff::BaseRequest { explicit: Some("HEAD".into()), ..Default::default() };
    source_diff::begin_run(&repo, &components, &request, "HEAD", false, &store, &state_dir)?;
    stage(&["--all", "--no-tools"])?;
    for _ in 0..rounds {
        unchanged.push(stage(&[])?);
        warm_all.push(stage(&["--all", "--no-tools"])?);
    }
    Ok((unchanged, warm_all))
}

/// A repository holding the sample's templates, a generated large one and one bad one, committed.
fn prepare(root: &Path) -> anyhow::Result<PathBuf> {
    let repo = root.join("target/bench-validate/repo");
    let _ = std::fs::remove_dir_all(&repo);
    let cfn = repo.join("cfn");
    std::fs::create_dir_all(&cfn)?;
    for entry in std::fs::read_dir(root.join("fixtures/monorepo/cfn"))? {
        let path = entry?.path();
        std::fs::copy(&path, cfn.join(path.file_name().context("a file name")?))?;
    }
    std::fs::copy(root.join("fixtures/templates/bad").join(BAD_TEMPLATE), cfn.join(BAD_TEMPLATE))?;
    std::fs::write(cfn.join(format!("generated-{GENERATED_RESOURCES}.yaml")), generated_template(GENERATED_RESOURCES))?;
    std::fs::write(
        repo.join("pipeline.toml"),
        "[components.infra]\npaths = [\"cfn/**\"]\n\n[validate]\ntemplates = [\"cfn/**/*.yaml\"]\nsecrets = false\n",
    )?;
    std::fs::write(repo.join(".gitignore"), ".pipeline/\n")?;
    let git = |args: &[&str]| crate::bench::bench_git(&repo, args);
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "templates"])?;
    Ok(repo)
}

fn file_name(path: &str) -> String {
    Path::new(path).file_name().map_or_else(|| path.to_string(), |n| n.to_string_lossy().to_string())
}

/// What `validate --format json` found.
fn native_seen(stdout: &[u8]) -> anyhow::Result<Seen> {
    let json: serde_json::Value = serde_json::from_slice(stdout).context("validate's JSON")?;
    json["findings"]
        .as_array()
        .context("validate's JSON has no findings list")?
        .iter()
        .map(|f| {
            Ok((
                file_name(f["path"].as_str().context("a path")?),
                f["rule"].as_str().context("a rule")?.to_string(),
                f["pos"]["line"].as_u64().context("a line")?,
                f["pos"]["column"].as_u64().context("a column")?,
            ))
        })
        .collect()
}

/// What `cfn-lint -f json` found, every rule.
fn cfn_lint_seen(stdout: &[u8]) -> anyhow::Result<Seen> {
    let json: serde_json::Value = serde_json::from_slice(stdout).context("cfn-lint's JSON")?;
    json.as_array()
        .context("cfn-lint's JSON is not a list")?
        .iter()
        .map(|f| {
            let start = &f["Location"]["Start"];
            Ok((
                file_name(f["Filename"].as_str().context("a file name")?),
                f["Rule"]["Id"].as_str().context("a rule")?.to_string(),
                start["LineNumber"].as_u64().context("a line")?,
                start["ColumnNumber"].as_u64().context("a column")?,
            ))
        })
        .collect()
}
