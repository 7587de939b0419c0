//! `cargo xtask bench seed`: the seed-style repository (`fixtures/drs-monorepo`, adopted with
//! `cargo xtask init` and the README's hand edit, as `xtask/tests/drs.rs` does) through
//! `cargo xtask pipeline`, against the pipeline its own buildspecs describe, run here command
//! for command: `cfn-lint`, `npm ci && npm run build`, every test, the zip loop for every
//! function, then for dev and for production (through its role): `aws s3 sync` of `cfn/` and of
//! the zips to the keys the templates read, one change set for the master stack
//! (`aws cloudformation deploy`), `update-function-code` for every function, the runtime config
//! written from the master's outputs and `aws s3 sync --delete` of the site.
//!
//! Each side has its own moto server behind its own counting proxy ([`test_support::FaultProxy`]
//! with no faults: its log counts the API calls, its PUT bodies the bytes uploaded). The cases,
//! in order on the same two histories: a first run, a no-change commit, a docs-only change, a
//! one-Lambda change and a frontend-only change. After each case both accounts of both sides
//! are read directly (not through the proxies): every function runs the zip at the key its
//! template reads, the two sides' zips hold the same files, and the two sites hold the same
//! files; functions updated are those whose code or last change moved.
//!
//! Where moto differs from AWS the seed gets the least help that lets it deploy at all, said
//! here: moto fetches nested templates only from `https://BUCKET.s3.amazonaws.com/KEY` and
//! reads the short form `!GetAtt Stack.Outputs.Name` wrongly, so the seed's master is sent as
//! JSON with those URL forms (made once per round, before any timing, with cfn-lint's decoder).
//! The fixture has no CloudFront distribution, so neither side invalidates anything (the seed's
//! `create-invalidation` has no distribution to name); the column stays, and reads 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use sha2::Digest as _;
use test_support::{FaultProxy, Moto};

use crate::bench::{Spread, bench_git, machine};
use crate::bench_deploy::aws_cli_as;

/// The functions, by package name (`lambda/NAME.zip`, function `drs-ENV-NAME`), with what the
/// seed's zip loop adds from where: (folder to run `zip` in, what to add).
const FUNCTIONS: &[(&str, &[(&str, &str)])] = &[
    ("api-handler", &[("lambda", "index.py"), ("lambda", "rbac_middleware.py")]),
    ("orchestration", &[("lambda", "orchestration.py")]),
    ("execution-finder", &[("lambda/poller", "execution_finder.py")]),
    ("execution-poller", &[("lambda/poller", "execution_poller.py")]),
    ("frontend-builder", &[("lambda", "build_and_deploy.py"), ("frontend", "dist")]),
];

/// Production, as the fixture's README configures it.
const PROD_ROLE: &str = "arn:aws:iam::111111111111:role/pipeline-deploy";
const PROD_EXTERNAL_ID: &str = "drs-orchestration";
const PROD_ACCOUNT: &str = "111111111111";
const DEV_ACCOUNT: &str = "123456789012";

/// The cases, in the order they run on each side's history.
const CASES: [&str; 5] = [
    "first run",
    "no-change commit",
    "docs-only change (README.md)",
    "one Lambda changed (orchestration)",
    "frontend only (src/app.js)",
];
const NO_CHANGE: usize = 1;
const DOCS: usize = 2;
pub const ONE_LAMBDA: usize = 3;
const FRONTEND: usize = 4;

/// What one side did in one case.
#[derive(Debug, Clone, Default)]
struct Work {
    wall: Duration,
    calls: usize,
    uploaded: u64,
    updated: usize,
    code_calls: usize,
    invalidations: usize,
}

/// One side: its repository, its emulator and the proxy in front of it.
struct Side {
    repo: PathBuf,
    moto: Moto,
    proxy: FaultProxy,
}

impl Side {
    fn start(repo: PathBuf) -> Side {
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint);
        Side { repo, moto, proxy }
    }

    /// The API calls the proxy saw since its last forget (the emulator's own routes left out).
    fn calls(&self) -> Vec<String> {
        self.proxy.seen().into_iter().filter(|line| !line.contains(" /moto-")).collect()
    }
}

/// Every function's (CodeSha256, LastModified) in each environment, by `ENV/NAME`.
type Deployed = BTreeMap<String, (String, String)>;

pub fn run(rounds: usize, only: Option<usize>) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let bin = crate::python::ensure(&root)?;
    let xtask = std::env::current_exe()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut ours: Vec<Vec<Work>> = vec![Vec::new(); CASES.len()];
    let mut seed: Vec<Vec<Work>> = vec![Vec::new(); CASES.len()];
    let mut different: Vec<Vec<String>> = vec![Vec::new(); CASES.len()];
    for round in 0..rounds.max(1) {
        let dir = tempfile::Builder::new().prefix("bench-seed-").tempdir_in(root.join("target"))?;
        let our_side = Side::start(adopted(&xtask, &dir.path().join("ours/drs"))?);
        let seed_side = Side::start(committed(&dir.path().join("seed/drs"))?);
        let work = dir.path().join("seed-build");
        prepare_seed(&bin, &seed_side, &work)?;
        let seeds = Seed { bin: &bin, side: &seed_side, work: &work };
        let (mut our_before, mut seed_before) = (Deployed::new(), Deployed::new());
        // `only` runs the first run (what the case changes) and that case.
        for (case, name) in CASES.iter().enumerate().filter(|(case, _)| *case == 0 || only.is_none_or(|o| o == *case)) {
            change(case, round, &[&our_side.repo, &seed_side.repo])?;
            let run_ours = || pipeline(&xtask, &our_side);
            let run_seed = || seeds.run();
            let (a, b) = if (round + case) % 2 == 0 {
                let a = run_ours()?;
                (a, run_seed()?)
            } else {
                let b = run_seed()?;
                (run_ours()?, b)
            };
            let (our_now, seed_now, differences) = runtime.block_on(same_work(&our_side, &seed_side))?;
            for difference in &differences {
                crate::say(&format!("round {}: {name}: NOT the same work: {difference}", round + 1));
            }
            different[case].extend(differences);
            let a = Work { updated: moved(&our_before, &our_now), ..a };
            let b = Work { updated: moved(&seed_before, &seed_now), ..b };
            crate::say(&format!(
                "round {}: {name}: pipeline {:.2} s, seed {:.2} s",
                round + 1,
                a.wall.as_secs_f64(),
                b.wall.as_secs_f64()
            ));
            check_case(case, &a, &our_now)?;
            ours[case].push(a);
            seed[case].push(b);
            (our_before, seed_before) = (our_now, seed_now);
        }
    }
    print(&ours, &seed, &different, rounds.max(1), only);
    Ok(())
}

/// The fixture as `cargo xtask init` adopts it, with the README's hand edit, in one commit.
fn adopted(xtask: &Path, repo: &Path) -> anyhow::Result<PathBuf> {
    let root = crate::workspace_root();
    test_support::copy_tree(&root.join("fixtures/drs-monorepo"), repo);
    let out = Command::new(xtask).arg("init").arg("--repo").arg(repo).output()?;
    if !out.status.success() {
        bail!("xtask init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let readme = std::fs::read_to_string(root.join("fixtures/drs-monorepo/README.md"))?;
    let edit = readme
        .split("## The hand edit after `init`")
        .nth(1)
        .and_then(|section| section.split("```toml\n").nth(1))
        .and_then(|block| block.split("\n```").next())
        .context("the fixture's README has no hand-edit toml block")?;
    let config = repo.join(pipeline_config::FILE_NAME);
    let written = std::fs::read_to_string(&config)?;
    std::fs::write(&config, format!("{written}\n{edit}\n"))?;
    committed(repo)
}

/// A repository (the fixture copied there when it is not yet) committed once on `main`.
fn committed(repo: &Path) -> anyhow::Result<PathBuf> {
    if !repo.exists() {
        test_support::copy_tree(&crate::workspace_root().join("fixtures/drs-monorepo"), repo);
    }
    bench_git(repo, &["init", "-q", "-b", "main"])?;
    bench_git(repo, &["add", "-A"])?;
    bench_git(repo, &["commit", "-q", "-m", "DRS orchestration"])?;
    Ok(repo.to_path_buf())
}

/// The commit a case makes, the same on both histories.
fn change(case: usize, round: usize, repos: &[&Path]) -> anyhow::Result<()> {
    let edit = match case {
        NO_CHANGE => None,
        DOCS => Some(("README.md", "docs")),
        ONE_LAMBDA => Some(("lambda/orchestration.py", "orchestration")),
        FRONTEND => Some(("frontend/src/app.js", "frontend")),
        _ => return Ok(()),
    };
    for repo in repos {
        match edit {
            None => bench_git(repo, &["commit", "-q", "--allow-empty", "-m", "no change"])?,
            Some((file, what)) => {
                let path = repo.join(file);
                let text = std::fs::read_to_string(&path)?;
                let comment = if file.ends_with(".py") {
                    "#"
                } else if file.ends_with(".js") {
                    "//"
                } else {
                    ""
                };
                std::fs::write(&path, format!("{text}\n{comment} bench round {round}: {what} changed\n"))?;
                bench_git(repo, &["commit", "-q", "-am", &format!("{what}: one change")])?;
            }
        }
    }
    Ok(())
}

/// One `cargo xtask pipeline` to production through the side's proxy, as a user runs it.
fn pipeline(xtask: &Path, side: &Side) -> anyhow::Result<Work> {
    side.proxy.forget();
    let args = ["--all-on-missing-base", "--approve", "--approver", "bench", "--repo"].map(std::ffi::OsStr::new);
    let endpoint = ["--endpoint-url".as_ref(), side.proxy.endpoint.as_ref()];
    let args: Vec<&std::ffi::OsStr> = args.into_iter().chain([side.repo.as_os_str()]).chain(endpoint).collect();
    let (wall, _) = crate::bench_pipeline::timed_pipeline(xtask, &args, &[("PIP_NO_INDEX", "1")])?;
    Ok(counted(wall, side))
}

/// What the side's proxy saw: API calls, bytes uploaded, invalidations.
fn counted(wall: Duration, side: &Side) -> Work {
    let calls = side.calls();
    let invalidations = calls.iter().filter(|l| l.starts_with("POST ") && l.contains("/invalidation")).count();
    // UpdateFunctionCode: `PUT /2015-03-31/functions/NAME/code`.
    let code_calls =
        calls.iter().filter(|l| l.starts_with("PUT /2015-03-31/functions/") && l.contains("/code ")).count();
    Work { wall, calls: calls.len(), uploaded: side.proxy.put_bytes(), updated: 0, code_calls, invalidations }
}

/// The seed's side of a round: the buckets its pipeline stack would have made, and its master
/// as moto can read it (see the module's documentation). Untimed.
fn prepare_seed(bin: &Path, side: &Side, work: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(work)?;
    let aws = bin.join("aws");
    for (env, credentials) in [("dev", dev_credentials()), ("prod", prod_credentials(&aws, &side.moto.endpoint)?)] {
        let credentials: Vec<(&str, &str)> = credentials.iter().map(|(k, v)| (*k, v.as_str())).collect();
        aws_cli_as(
            &aws,
            &side.moto.endpoint,
            &["s3", "mb", &format!("s3://drs-artifacts-{env}")],
            &credentials,
            false,
        )?;
    }
    let script = r#"
import json, sys
from cfnlint.decode import decode
template, matches = decode(sys.argv[1])
if matches:
    sys.exit("cannot read %s: %s" % (sys.argv[1], matches))
text = json.dumps(template)
text = text.replace("https://s3.amazonaws.com/${SourceBucket}/", "https://${SourceBucket}.s3.amazonaws.com/")
text = text.replace(".s3.${AWS::Region}.amazonaws.com/", ".s3.amazonaws.com/")
text = text.replace('"https://s3.amazonaws.com/"', '"https://"').replace('"/cfn/', '".s3.amazonaws.com/cfn/')
open(sys.argv[2], "w").write(text)
"#;
    crate::run(
        Command::new(bin.join("python"))
            .args(["-c", script])
            .arg(side.repo.join("cfn/master.yaml"))
            .arg(work.join("master.json")),
    )
}

fn dev_credentials() -> Vec<(&'static str, String)> {
    vec![("AWS_ACCESS_KEY_ID", "testing".into()), ("AWS_SECRET_ACCESS_KEY", "testing".into())]
}

/// Production's credentials, as the seed's deploy gets them: `aws sts assume-role`.
fn prod_credentials(aws: &Path, endpoint: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let args = [
        "sts",
        "assume-role",
        "--role-arn",
        PROD_ROLE,
        "--role-session-name",
        "seed-deploy",
        "--external-id",
        PROD_EXTERNAL_ID,
        "--output",
        "json",
    ];
    let dev = dev_credentials();
    let dev: Vec<(&str, &str)> = dev.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = aws_cli_as(aws, endpoint, &args, &dev, false)?;
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |name: &str| {
        answer["Credentials"][name].as_str().map(str::to_owned).context("assume-role answered without credentials")
    };
    Ok(vec![
        ("AWS_ACCESS_KEY_ID", field("AccessKeyId")?),
        ("AWS_SECRET_ACCESS_KEY", field("SecretAccessKey")?),
        ("AWS_SESSION_TOKEN", field("SessionToken")?),
    ])
}

/// The seed's pipeline, command for command.
struct Seed<'a> {
    bin: &'a Path,
    side: &'a Side,
    work: &'a Path,
}

impl Seed<'_> {
    fn run(&self) -> anyhow::Result<Work> {
        self.side.proxy.forget();
        let start = Instant::now();
        self.build_and_test()?;
        self.deploy("dev", DEV_ACCOUNT, dev_credentials())?;
        let aws = self.bin.join("aws");
        self.deploy("prod", PROD_ACCOUNT, prod_credentials(&aws, &self.side.proxy.endpoint)?)?;
        Ok(counted(start.elapsed(), self.side))
    }

    fn shell(&self, script: &str) -> anyhow::Result<()> {
        let path = std::env::join_paths(
            std::iter::once(self.bin.to_path_buf())
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )?;
        let out = Command::new("sh")
            .args(["-ec", script])
            .current_dir(&self.side.repo)
            .env("PATH", path)
            .env("PIP_NO_INDEX", "1")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "the seed's `{script}` failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The build and test stages: cfn-lint, the site's build, pip, the zip loop, every test.
    fn build_and_test(&self) -> anyhow::Result<()> {
        self.shell("cfn-lint")?;
        self.shell("cd frontend && npm ci --no-audit --no-fund && npm run build")?;
        let (package, zips) = (self.work.join("package"), self.work.join("lambda"));
        for dir in [&package, &zips] {
            if dir.exists() {
                std::fs::remove_dir_all(dir)?;
            }
        }
        std::fs::create_dir_all(&zips)?;
        self.shell(&format!("pip install -q -r lambda/requirements.txt -t {}", package.display()))?;
        let dependencies = std::fs::read_dir(&package)?.next().is_some();
        for (name, sources) in FUNCTIONS {
            let zip = zips.join(format!("{name}.zip"));
            for (dir, what) in *sources {
                crate::run(
                    Command::new("zip").args(["-r", "-q"]).arg(&zip).arg(what).current_dir(self.side.repo.join(dir)),
                )?;
            }
            if dependencies {
                crate::run(Command::new("zip").args(["-r", "-q"]).arg(&zip).arg(".").current_dir(&package))?;
            }
        }
        self.shell("python -m pytest -q -p no:cacheprovider tests")
    }

    /// One environment's deploy stage.
    fn deploy(&self, env: &str, account: &str, credentials: Vec<(&'static str, String)>) -> anyhow::Result<()> {
        let credentials: Vec<(&str, &str)> = credentials.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let aws = self.bin.join("aws");
        let endpoint = &self.side.proxy.endpoint;
        let cli = |args: &[&str]| aws_cli_as(&aws, endpoint, args, &credentials, false);
        let bucket = format!("drs-artifacts-{env}");
        let (cfn, zips) = (self.side.repo.join("cfn"), self.work.join("lambda"));
        cli(&["s3", "sync", &format!("{}/", cfn.display()), &format!("s3://{bucket}/cfn/"), "--only-show-errors"])?;
        cli(&["s3", "sync", &format!("{}/", zips.display()), &format!("s3://{bucket}/lambda/"), "--only-show-errors"])?;
        let stack = format!("drs-master-{env}");
        cli(&[
            "cloudformation",
            "deploy",
            "--template-file",
            &self.work.join("master.json").to_string_lossy(),
            "--stack-name",
            &stack,
            "--parameter-overrides",
            &format!("Environment={env}"),
            &format!("SourceBucket={bucket}"),
            "--capabilities",
            "CAPABILITY_IAM",
            "--no-fail-on-empty-changeset",
        ])?;
        for (name, _) in FUNCTIONS {
            let key = format!("lambda/{name}.zip");
            let function = format!("drs-{env}-{name}");
            cli(&[
                "lambda",
                "update-function-code",
                "--function-name",
                &function,
                "--s3-bucket",
                &bucket,
                "--s3-key",
                &key,
            ])?;
        }
        let out = cli(&["cloudformation", "describe-stacks", "--stack-name", &stack, "--output", "json"])?;
        let stacks: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let dist = self.side.repo.join("frontend/dist");
        write_runtime_config(&dist, &stacks["Stacks"][0]["Outputs"])?;
        let site = format!("s3://drs-site-{env}-{account}");
        cli(&["s3", "sync", &dist.to_string_lossy(), &site, "--delete", "--only-show-errors"])?;
        Ok(())
    }
}

/// The site's runtime config as the seed's buildspec writes it from the master's outputs (the
/// shape the README's `[publish.runtime_config]` gives the pipeline's).
fn write_runtime_config(dist: &Path, outputs: &serde_json::Value) -> anyhow::Result<()> {
    let output = |key: &str| -> anyhow::Result<String> {
        outputs
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["OutputKey"] == key)
            .and_then(|o| o["OutputValue"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("the master has no output {key}"))
    };
    let config = serde_json::json!({
        "API": { "REST": { "endpoint": output("ApiEndpoint")? } },
        "Storage": {
            "executionsTable": output("ExecutionsTableName")?,
            "protectionGroupsTable": output("ProtectionGroupsTableName")?,
        },
        "Notifications": { "topicArn": output("TopicArn")?, "queueUrl": output("QueueUrl")? },
        "region": "us-east-1",
    });
    std::fs::write(dist.join("aws-config.json"), serde_json::to_string(&config)?)?;
    std::fs::write(dist.join("assets/aws-config.js"), format!("window.AWS_CONFIG = {config};\n"))?;
    Ok(())
}

/// How many functions' code or last change moved since `before`.
fn moved(before: &Deployed, now: &Deployed) -> usize {
    now.iter().filter(|(name, state)| before.get(*name) != Some(state)).count()
}

/// What each case must show of the pipeline: nothing updated without a Lambda change, and only
/// the changed function (in both environments) with one.
fn check_case(case: usize, ours: &Work, deployed: &Deployed) -> anyhow::Result<()> {
    let expected = match case {
        0 => deployed.len(),
        NO_CHANGE | DOCS => 0,
        ONE_LAMBDA => 2,
        _ => ours.updated,
    };
    if ours.updated != expected {
        bail!("{}: the pipeline updated {} function(s) where {expected} changed", CASES[case], ours.updated);
    }
    Ok(())
}

/// One environment of one side, read directly from its emulator.
struct View {
    /// Each function's (CodeSha256, LastModified).
    functions: BTreeMap<String, (String, String)>,
    /// The files of the zip each function runs (read at the key its template names).
    code: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// The site's objects from the site's build, by key: their bytes. The runtime config (each
    /// emulator's own resources, filled in by each side its own way) is left out.
    site: BTreeMap<String, Vec<u8>>,
}

/// Reads both sides' accounts: each side's functions, by `ENV/NAME`, and where the two sides'
/// work differs (a function running other code, a site with other files), one line each.
async fn same_work(ours: &Side, seed: &Side) -> anyhow::Result<(Deployed, Deployed, Vec<String>)> {
    let (mut our_functions, mut seed_functions) = (Deployed::new(), Deployed::new());
    let mut differences = Vec::new();
    for (env, account) in [("dev", DEV_ACCOUNT), ("prod", PROD_ACCOUNT)] {
        let a = read_env(&ours.moto.endpoint, env, account).await.context("the pipeline's side")?;
        let b = read_env(&seed.moto.endpoint, env, account).await.context("the seed's side")?;
        for (name, code) in &a.code {
            let theirs = b.code.get(name).cloned().unwrap_or_default();
            let differing: Vec<&String> =
                code.keys().chain(theirs.keys()).filter(|file| code.get(*file) != theirs.get(*file)).collect();
            if !differing.is_empty() {
                differences.push(format!("{env}: {name} runs other code on the two sides ({differing:?} differ)"));
            }
        }
        if a.site != b.site {
            let keys = |s: &BTreeMap<String, Vec<u8>>| s.keys().cloned().collect::<Vec<_>>();
            differences.push(format!(
                "{env}: the sites differ: pipeline {:?}, seed {:?}",
                keys(&a.site),
                keys(&b.site)
            ));
        }
        our_functions.extend(a.functions.into_iter().map(|(name, state)| (format!("{env}/{name}"), state)));
        seed_functions.extend(b.functions.into_iter().map(|(name, state)| (format!("{env}/{name}"), state)));
    }
    Ok((our_functions, seed_functions, differences))
}

async fn read_env(endpoint: &str, env: &str, account: &str) -> anyhow::Result<View> {
    let target = aws_target::Target {
        endpoint_url: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        assume_role: (env == "prod").then(|| aws_target::AssumeRole {
            role_arn: PROD_ROLE.into(),
            external_id: Some(PROD_EXTERNAL_ID.into()),
            session_name: "bench-check".into(),
        }),
        ..aws_target::Target::default()
    };
    let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).test_credentials();
    let config = aws_target::load_with(&target, loader).await?;
    let (s3, lambda) = (aws_target::s3(&config, None), aws_target::lambda(&config, None));
    let get = |bucket: String, key: String| {
        let s3 = s3.clone();
        async move {
            let object = s3
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .send()
                .await
                .with_context(|| format!("s3://{bucket}/{key}"))?;
            anyhow::Ok(object.body.collect().await?.into_bytes().to_vec())
        }
    };
    let mut view = View { functions: BTreeMap::new(), code: BTreeMap::new(), site: BTreeMap::new() };
    let bucket = format!("drs-artifacts-{env}");
    for (name, _) in FUNCTIONS {
        let function = format!("drs-{env}-{name}");
        let found =
            lambda.get_function_configuration().function_name(&function).send().await.context(function.clone())?;
        let sha = found.code_sha256().unwrap_or_default().to_owned();
        let zip = get(bucket.clone(), format!("lambda/{name}.zip")).await?;
        if base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&zip)) != sha {
            bail!("{env}: {function} does not run the zip at s3://{bucket}/lambda/{name}.zip");
        }
        view.code.insert(name.to_string(), zip_files(&zip)?);
        view.functions.insert(name.to_string(), (sha, found.last_modified().unwrap_or_default().to_owned()));
    }
    let site = format!("drs-site-{env}-{account}");
    let listed = s3.list_objects_v2().bucket(&site).send().await.with_context(|| format!("listing {site}"))?;
    // The publisher's own bookkeeping (its release manifest's folder) is no part of the site,
    // nor is the runtime config (`aws-config.*`, `aws-exports.js`).
    let bookkeeping = frontend_publisher::MANIFEST_KEY.split('/').next().unwrap_or_default();
    let runtime = |key: &str| key.contains("aws-config") || key.contains("aws-exports");
    for key in listed.contents().iter().filter_map(|o| o.key()).filter(|k| !k.starts_with(bookkeeping) && !runtime(k)) {
        view.site.insert(key.to_owned(), get(site.clone(), key.to_owned()).await?);
    }
    Ok(view)
}

/// A zip's files (directories left out): name → bytes.
fn zip_files(bytes: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))?;
    let mut files = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i)?;
        if file.is_dir() {
            continue;
        }
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut content)?;
        files.insert(file.name()?.to_string(), content);
    }
    Ok(files)
}

/// The median of a case's figure over the rounds.
fn median<T: Copy + Ord>(works: &[Work], figure: impl Fn(&Work) -> T) -> T {
    let mut all: Vec<T> = works.iter().map(figure).collect();
    all.sort();
    all[all.len() / 2]
}

fn print(ours: &[Vec<Work>], seed: &[Vec<Work>], different: &[Vec<String>], rounds: usize, only: Option<usize>) {
    println!(
        "bench seed: fixtures/drs-monorepo (adopted by `cargo xtask init`), dev then prod, both sides in moto, {rounds} round(s)"
    );
    println!("  {}", machine());
    println!(
        "  {:<36} {:<9} {:>8} {:>8} {:>8} {:>6} {:>10} {:>8} {:>10} {:>12}",
        "case", "side", "min s", "median s", "max s", "calls", "uploaded", "updated", "code calls", "invalidated"
    );
    println!(
        "  (updated: functions whose CodeSha256 or LastModified moved, dev and prod; code calls: UpdateFunctionCode)"
    );
    for (case, name) in CASES.iter().enumerate().filter(|(case, _)| only.is_none_or(|o| o == *case)) {
        for (side, works) in [("pipeline", &ours[case]), ("seed", &seed[case])] {
            let spread = Spread::of(&works.iter().map(|w| w.wall).collect::<Vec<_>>());
            println!(
                "  {:<36} {side:<9} {:>8.2} {:>8.2} {:>8.2} {:>6} {:>9.1}K {:>8} {:>10} {:>12}",
                if side == "pipeline" { *name } else { "" },
                spread.min.as_secs_f64(),
                spread.median.as_secs_f64(),
                spread.max.as_secs_f64(),
                median(works, |w| w.calls),
                median(works, |w| w.uploaded) as f64 / 1024.0,
                median(works, |w| w.updated),
                median(works, |w| w.code_calls),
                median(works, |w| w.invalidations),
            );
        }
        // Figures other than time are the same every round; the wall-time ratio is of the medians.
        let ratio = |f: &dyn Fn(&Work) -> f64| {
            let (a, b) = (f(&ours[case][0]), f(&seed[case][0]));
            if a > 0.0 { format!("{:.1}x", b / a) } else { format!("{b:.0} against 0") }
        };
        let (a, b) = (median(&ours[case], |w| w.wall), median(&seed[case], |w| w.wall));
        println!(
            "  {:<36} seed / pipeline: wall {:.1}x, calls {}, bytes uploaded {}",
            "",
            b.as_secs_f64() / a.as_secs_f64(),
            ratio(&|w| w.calls as f64),
            ratio(&|w| w.uploaded as f64),
        );
        let mut seen = std::collections::BTreeSet::new();
        for difference in different[case].iter().filter(|d| seen.insert(*d)) {
            println!("  {:<36} NOT the same work: {difference}", "");
        }
    }
    goals(ours, seed, only);
}

/// The issue's goals, each with the figure it is judged by.
fn goals(ours: &[Vec<Work>], seed: &[Vec<Work>], only: Option<usize>) {
    let shown = |case: usize| only.is_none_or(|o| o == case);
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    for case in [NO_CHANGE, DOCS].into_iter().filter(|c| shown(*c)) {
        let wall = median(&ours[case], |w| w.wall);
        println!(
            "  goal: {} under 1 s: {} ({:.2} s)",
            CASES[case],
            verdict(wall < Duration::from_secs(1)),
            wall.as_secs_f64()
        );
    }
    if shown(ONE_LAMBDA) {
        let (a, b) = (median(&ours[ONE_LAMBDA], |w| w.wall), median(&seed[ONE_LAMBDA], |w| w.wall));
        let ratio = b.as_secs_f64() / a.as_secs_f64();
        let updated = median(&ours[ONE_LAMBDA], |w| w.updated);
        println!(
            "  goal: one Lambda changed at least 10x faster than the seed, only it updated (once per environment): {} ({ratio:.1}x, {updated} update(s) against the seed's {})",
            verdict(ratio >= 10.0 && updated == 2),
            median(&seed[ONE_LAMBDA], |w| w.updated)
        );
    }
    if shown(FRONTEND) {
        let (a, b) = (median(&ours[FRONTEND], |w| w.uploaded), median(&seed[FRONTEND], |w| w.uploaded));
        println!(
            "  frontend only: the pipeline uploaded {:.1} KiB against the seed's {:.1} KiB; invalidations: none on either side (the fixture has no distribution)",
            a as f64 / 1024.0,
            b as f64 / 1024.0
        );
    }
}
