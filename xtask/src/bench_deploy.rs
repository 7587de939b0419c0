//! `cargo xtask bench deploy`: the sample's stacks (storage, frontend hosting, and the lambdas
//! stack after them) deployed into a moto server started here, then redeployed unchanged and with one Lambda's code changed, each
//! time by stack-deployer (in process, its calls counted by the SDK interceptor) and by the
//! seed's loop: `aws cloudformation deploy --no-fail-on-empty-changeset` of the same packaged
//! template, then `aws lambda update-function-code` for every function (calls counted from
//! `--debug`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use lambda_packager::{Architecture, FunctionSpec, Manifest, Package};
use sha2::Digest as _;
use stack_deployer::{ApplyOptions, Clients, DeploySettings, Environment, PlanInputs, Report, StackOutcome};

use crate::bench::{machine, print_header, print_row};

const BUCKET: &str = "pipeline-dashboard-artifacts-dev";
const PREFIX: &str = "pipeline-dashboard";

/// The sample's stacks as three stacks: moto cannot resolve `!GetAtt Nested.Outputs.X` inside
/// the master stack (it skips the lambdas nested stack silently), and drops outputs after a change
/// set, so the lambdas stack gets literal values here instead of the other stacks' outputs.
const BENCH_DEPLOY: &str = r#"[deploy]
artifact_bucket = "pipeline-dashboard-artifacts-{env}"
key_prefix = "pipeline-dashboard"
parallelism = 2

[deploy.stacks.storage]
template = "cfn/storage.yaml"
stack_name = "pipeline-dashboard-storage-{env}"
parameters = { Environment = "{env}" }

[deploy.stacks.hosting]
template = "cfn/frontend-hosting.yaml"
stack_name = "pipeline-dashboard-hosting-{env}"
parameters = { Environment = "{env}" }

[deploy.stacks.lambdas]
template = "cfn/lambdas.yaml"
stack_name = "pipeline-dashboard-lambdas-{env}"
capabilities = ["CAPABILITY_IAM"]
depends_on = ["storage", "hosting"]
parameters = { Environment = "{env}", ArtifactBucket = "pipeline-dashboard-artifacts-{env}", ArtifactPrefix = "pipeline-dashboard", TableName = "executions-{env}", TableArn = "arn:aws:dynamodb:us-east-1:123456789012:table/executions-{env}", DataBucketName = "data-{env}", DataBucketArn = "arn:aws:s3:::data-{env}", SiteBucketName = "site-{env}", DistributionId = "E123" }

"#;

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let workspace = crate::workspace_root();
    let aws = workspace.join("target/py-venv/bin/aws");
    if !aws.exists() {
        bail!("{} is missing; run `cargo xtask setup` (it installs the pinned awscli)", aws.display());
    }
    let moto = test_support::Moto::start();
    let repo = test_support::sample_monorepo();
    let zips = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench(&moto.endpoint, &aws, repo.path(), zips.path(), rounds.max(1)))
}

/// A one-file zip whose handler returns `body`, as the packager's manifest describes it.
fn package(dir: &Path, name: &str, body: &str, changed: bool) -> anyhow::Result<Package> {
    let path = dir.join(format!("{name}-{body}.zip"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path)?);
    zip.start_file("index.py", zip::write::SimpleFileOptions::default())?;
    zip.write_all(format!("def handler(event, context):\n    return {body:?}\n").as_bytes())?;
    zip.finish()?;
    let bytes = std::fs::read(&path)?;
    let sha = sha2::Sha256::digest(&bytes);
    Ok(Package {
        name: name.into(),
        path,
        code_sha256: base64::engine::general_purpose::STANDARD.encode(sha),
        sha256: hex::encode(sha),
        size: bytes.len() as u64,
        unzipped_size: 0,
        files: 1,
        runtime: "python3.12".into(),
        architecture: Architecture::X86_64,
        input_hash: String::new(),
        reused: false,
        changed,
    })
}

/// Runs the aws-cli with `--debug` against the emulator; returns how many API calls it made.
fn aws_cli(aws: &Path, endpoint: &str, args: &[&str]) -> anyhow::Result<u64> {
    let credentials = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")];
    let out = aws_cli_as(aws, endpoint, args, &credentials, true)?;
    let debug = String::from_utf8_lossy(&out.stderr);
    Ok(debug.matches("Making request for OperationModel").count() as u64)
}

/// Runs the aws-cli against the emulator with these credentials (and `--debug` when asked);
/// fails with its last lines when it fails. CreateChangeSet refused with "No updates are to be
/// performed." is nothing changed, not a failure.
pub(crate) fn aws_cli_as(
    aws: &Path,
    endpoint: &str,
    args: &[&str],
    credentials: &[(&str, &str)],
    debug: bool,
) -> anyhow::Result<std::process::Output> {
    let mut command = Command::new(aws);
    command.args(args).args(["--endpoint-url", endpoint, "--region", "us-east-1"]);
    if debug {
        command.arg("--debug");
    }
    let out = command
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .envs(credentials.iter().copied())
        .output()
        .with_context(|| format!("cannot run {}", aws.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // awscli's --no-fail-on-empty-changeset covers a change set that ends FAILED for want of
    // changes, not CreateChangeSet refusing with "No updates are to be performed." (which the
    // emulator answers for an identical template): it exits 255. Nothing changed either way.
    let no_updates = stderr.contains("No updates are to be performed");
    if !out.status.success() && !no_updates {
        let last: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!("aws {} failed: {}", args.join(" "), last.join(" | "));
    }
    Ok(out)
}

/// The stacks deployed by stack-deployer in process, each deploy under a change set name of its own.
struct Deployer<'a> {
    repo: &'a Path,
    env: Environment,
    functions: Vec<FunctionSpec>,
    clients: Clients,
    attempt: std::cell::Cell<usize>,
}

impl Deployer<'_> {
    /// The plan of the stacks with these packages.
    fn plan(&self, manifest: &Manifest) -> anyhow::Result<stack_deployer::Plan> {
        let inputs = PlanInputs {
            repo: self.repo,
            manifest: Some(manifest),
            functions: &self.functions,
            changed: None,
            only: &[],
        };
        Ok(stack_deployer::plan(&self.env, inputs, &|_| None)?)
    }

    /// Plans and deploys the stacks with these packages.
    async fn deploy(&self, manifest: &Manifest) -> anyhow::Result<Report> {
        let plan = self.plan(manifest)?;
        self.attempt.set(self.attempt.get() + 1);
        let mut options = ApplyOptions::new(
            &format!("bench-{}", self.attempt.get()),
            Duration::from_secs(300),
            Duration::from_secs(60),
        );
        options.first_poll = Duration::from_millis(200);
        options.max_poll = Duration::from_secs(2);
        Ok(stack_deployer::deploy(&plan, &self.clients, 2, None, &options, &|_| None, &|_| {}).await?)
    }
}

/// The sample's configuration with [`BENCH_DEPLOY`] for its `[deploy]`: dev's environment and
/// the functions.
fn bench_config(repo: &Path) -> anyhow::Result<(Environment, Vec<FunctionSpec>)> {
    let path = repo.join(pipeline_config::FILE_NAME);
    let text = std::fs::read_to_string(&path)?;
    let (start, end) = (
        text.find("[deploy]").context("the sample has no [deploy]")?,
        text.find("# validate:").context("no [validate]")?,
    );
    let text = format!("{}{BENCH_DEPLOY}{}", &text[..start], &text[end..]);
    let file = pipeline_config::ConfigFile::from_text(&path, &text);
    let env = DeploySettings::from_config(&file)?.environment(&file, "dev")?;
    let (_, functions) = lambda_packager::LambdaSettings::from_config(&file)?;
    Ok((env, functions))
}

/// The SDK clients on the emulator, their calls counted.
async fn counted_clients(endpoint: &str) -> anyhow::Result<(Clients, aws_target::RequestCounter)> {
    let target = aws_target::Target {
        endpoint_url: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        ..aws_target::Target::default()
    };
    let config =
        aws_target::load_with(&target, aws_config::defaults(aws_config::BehaviorVersion::latest()).test_credentials())
            .await?;
    let counter = aws_target::RequestCounter::default();
    let clients = Clients {
        s3: aws_target::s3(&config, Some(&counter)),
        cloudformation: aws_target::cloudformation(&config, Some(&counter)),
        lambda: aws_target::lambda(&config, Some(&counter)),
    };
    Ok((clients, counter))
}

/// The arguments of `aws cloudformation deploy` for each stack of the plan, in order: the same
/// templates and parameters.
fn cli_stacks(plan: &stack_deployer::Plan, zips: &Path) -> anyhow::Result<Vec<Vec<String>>> {
    let mut cli_stacks = Vec::new();
    for stack in &plan.stacks {
        let body = zips.join(format!("{}.json", stack.name));
        std::fs::write(&body, &stack.body)?;
        let mut args: Vec<String> = ["cloudformation", "deploy", "--template-file"].map(String::from).to_vec();
        args.push(body.to_string_lossy().into_owned());
        args.extend(["--stack-name".to_string(), stack.stack_name.clone(), "--parameter-overrides".into()]);
        for (key, value) in &stack.parameters {
            let stack_deployer::ParameterValue::Literal(value) = value else {
                bail!("the bench's parameters are literals")
            };
            args.push(format!("{key}={value}"));
        }
        args.extend(["--capabilities", "CAPABILITY_IAM", "--no-fail-on-empty-changeset"].map(String::from));
        cli_stacks.push(args);
    }
    Ok(cli_stacks)
}

/// The seed's loop: `aws cloudformation deploy` of every stack, then every function's code
/// updated, changed or not; the API calls it made.
fn seed_loop(
    aws: &Path,
    endpoint: &str,
    cli_stacks: &[Vec<String>],
    functions: &[FunctionSpec],
) -> anyhow::Result<u64> {
    let mut calls = 0;
    for args in cli_stacks {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        calls += aws_cli(aws, endpoint, &args)?;
    }
    for function in functions {
        let name = format!("pipeline-dashboard-dev-{}", function.name);
        let key = format!("{PREFIX}/{}.zip", function.name);
        let args =
            ["lambda", "update-function-code", "--function-name", &name, "--s3-bucket", BUCKET, "--s3-key", &key];
        calls += aws_cli(aws, endpoint, &args)?;
    }
    Ok(calls)
}

/// Timings and API calls by case.
#[derive(Default)]
struct Measured {
    times: BTreeMap<&'static str, Vec<Duration>>,
    calls: BTreeMap<&'static str, u64>,
}

impl Measured {
    fn add(&mut self, name: &'static str, start: Instant, calls: u64) {
        self.times.entry(name).or_default().push(start.elapsed());
        *self.calls.entry(name).or_default() += calls;
    }

    fn print(&self, rounds: usize) {
        println!(
            "bench deploy: the sample's stacks (storage, hosting, lambdas with 5 functions) in moto, {rounds} rounds"
        );
        println!("  {}", machine());
        let width = 52;
        print_header("ms per deploy", width);
        let mut medians = BTreeMap::new();
        for (name, timings) in &self.times {
            medians.insert(*name, print_row(name, width, timings));
        }
        println!("  API calls per deploy:");
        for (name, total) in &self.calls {
            println!("    {name:<width$} {:>6.1}", *total as f64 / rounds as f64);
        }
        for case in ["unchanged", "one Lambda changed"] {
            let ours = medians[format!("{case}: stack-deployer").as_str()];
            let theirs = medians[format!("{case}: aws cloudformation deploy + loop").as_str()];
            let our_calls = self.calls[format!("{case}: stack-deployer").as_str()] as f64;
            let their_calls = self.calls[format!("{case}: aws cloudformation deploy + loop").as_str()] as f64;
            println!(
                "  {case}: aws / stack-deployer wall time {:.1}x (goal: at least 3x), API calls {:.1}x",
                theirs.as_secs_f64() / ours.as_secs_f64(),
                their_calls / our_calls.max(1.0)
            );
        }
    }
}

async fn bench(endpoint: &str, aws: &Path, repo: &Path, zips: &Path, rounds: usize) -> anyhow::Result<()> {
    let (clients, counter) = counted_clients(endpoint).await?;
    clients.s3.create_bucket().bucket(BUCKET).send().await?;
    let (env, functions) = bench_config(repo)?;
    // Version 1 of every function, at the fixed keys the template names (as a pipeline left them).
    let mut v1 = Vec::new();
    for function in &functions {
        let package = package(zips, &function.name, "v1", false)?;
        let key = format!("{PREFIX}/{}.zip", function.name);
        clients.s3.put_object().bucket(BUCKET).key(&key).body(std::fs::read(&package.path)?.into()).send().await?;
        v1.push(package);
    }
    let deployer = Deployer { repo, env, functions, clients, attempt: Default::default() };
    let manifest = Manifest { packages: v1.clone() };
    let first = deployer.deploy(&manifest).await?;
    if !first.stacks.iter().all(|s| matches!(s.outcome, StackOutcome::Deployed { .. })) {
        bail!("the first deploy of the sample did not succeed: {}", first.summary());
    }
    let cli_stacks = cli_stacks(&deployer.plan(&manifest)?, zips)?;
    let seed_loop = |calls: u64| seed_loop(aws, endpoint, &cli_stacks, &deployer.functions).map(|n| n + calls);

    let mut measured = Measured::default();
    for round in 0..rounds {
        // Unchanged: nothing changed in the run's diff.
        let unchanged = Manifest { packages: v1.iter().map(|p| Package { changed: false, ..p.clone() }).collect() };
        for turn in 0..2 {
            let start = Instant::now();
            if (round + turn) % 2 == 0 {
                counter.reset();
                let report = deployer.deploy(&unchanged).await?;
                if report.stacks.iter().any(|s| s.outcome != StackOutcome::Unchanged) {
                    bail!("the unchanged redeploy was not unchanged: {}", report.summary());
                }
                measured.add("unchanged: stack-deployer", start, counter.total());
            } else {
                let calls = seed_loop(0)?;
                measured.add("unchanged: aws cloudformation deploy + loop", start, calls);
            }
        }
        // One Lambda changed: api-handler gets new code (new content each round).
        // Each side gets code the function does not run yet.
        let new = package(zips, "api-handler", &format!("r{round}"), true)?;
        let new_cli = package(zips, "api-handler", &format!("r{round}-cli"), true)?;
        for turn in 0..2 {
            let start = Instant::now();
            if (round + turn) % 2 == 0 {
                let changed = |p: &Package| {
                    if p.name == "api-handler" { new.clone() } else { Package { changed: false, ..p.clone() } }
                };
                let manifest = Manifest { packages: v1.iter().map(changed).collect() };
                counter.reset();
                let report = deployer.deploy(&manifest).await?;
                let updated: Vec<&String> = report.stacks.iter().flat_map(|s| &s.code_updated).collect();
                if updated != ["api-handler"] {
                    bail!("the changed function was not updated: {}", report.summary());
                }
                measured.add("one Lambda changed: stack-deployer", start, counter.total());
            } else {
                // The seed copies the zips to their fixed keys first.
                let to = format!("s3://{BUCKET}/{PREFIX}/api-handler.zip");
                let copied = aws_cli(aws, endpoint, &["s3", "cp", &new_cli.path.to_string_lossy(), &to])?;
                let calls = seed_loop(copied)?;
                measured.add("one Lambda changed: aws cloudformation deploy + loop", start, calls);
            }
        }
    }
    measured.print(rounds);
    Ok(())
}
