//! `cargo xtask bench publish`: frontend-publisher against `aws s3 sync --delete`.
//!
//! A generated site (500 files, about 4 MB, content-hashed names, as a bundler writes them)
//! is published into a moto server the bench starts, then every file is touched (a fresh CI
//! checkout) and one asset changed (a new hashed name, and the HTML that references it), and
//! the site is published again. Both sides do the same into buckets of their own, alternating
//! which goes first; the republish is timed. The publisher runs in process (the library the
//! binary calls); `aws s3 sync` is the venv's pinned awscli, one process per sync. Its
//! request count is its uploads plus its one listing page per 1,000 keys, read from its output
//! (awscli's `--debug` would slow it down); the publisher's is counted by `RequestCounter`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use frontend_publisher::{ApplyOptions, PublishConfig};
use pipeline_config::ConfigFile;

use crate::bench::{machine, print_header, print_row};

const FILES: usize = 500;
const CONFIG: &str = r#"[publish]
component = "web"
dist = "dist"
bucket = "unused"
headers = [
  { glob = "assets/**", cache_control = "public, max-age=31536000, immutable" },
  { glob = "**/*.html", cache_control = "no-cache, no-store, must-revalidate" },
]
"#;

/// A short content hash for a name, as bundlers do.
fn hash8(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{:08x}", h as u32)
}

/// Writes the site; `version` changes the content (and name) of chunk 0 only.
fn generate(dist: &Path, version: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dist);
    std::fs::create_dir_all(dist.join("assets"))?;
    let mut html = String::from("<!doctype html><html><head>\n");
    for i in 0..FILES - 1 {
        let salt = if i == 0 { version } else { 0 };
        let body = format!("/* chunk {i} v{salt} */\n{}", format!("export const c{i} = {i};\n").repeat(330));
        let name = format!("assets/chunk-{i}.{}.js", hash8(&body));
        std::fs::write(dist.join(&name), &body)?;
        html.push_str(&format!("<script type=\"module\" src=\"{name}\"></script>\n"));
    }
    html.push_str("</head><body></body></html>\n");
    std::fs::write(dist.join("index.html"), html)?;
    Ok(())
}

fn touch_all(dir: &Path) -> anyhow::Result<()> {
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            touch_all(&path)?;
        } else {
            std::fs::File::options().write(true).open(&path)?.set_modified(later)?;
        }
    }
    Ok(())
}

fn folder_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        total += if path.is_dir() { folder_bytes(&path) } else { entry.metadata().map_or(0, |m| m.len()) };
    }
    total
}

/// One `aws s3 sync --delete`.
fn sync(aws: &Path, endpoint: &str, dist: &Path, bucket: &str) -> anyhow::Result<()> {
    aws_sync(aws, endpoint, dist, bucket, true).map(drop)
}

/// The same sync with its output, to count the uploads.
fn sync_counted(aws: &Path, endpoint: &str, dist: &Path, bucket: &str) -> anyhow::Result<usize> {
    aws_sync(aws, endpoint, dist, bucket, false)
}

/// `aws s3 sync --delete` of `dist` into the bucket (`--only-show-errors` when `quiet`): the
/// uploads it printed.
fn aws_sync(aws: &Path, endpoint: &str, dist: &Path, bucket: &str, quiet: bool) -> anyhow::Result<usize> {
    let out = Command::new(aws)
        .args(["s3", "sync", "--delete", "--no-progress"])
        .args(quiet.then_some("--only-show-errors"))
        .arg(dist)
        .arg(format!("s3://{bucket}"))
        .args(["--endpoint-url", endpoint])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .context("running aws s3 sync")?;
    if !out.status.success() {
        bail!("aws s3 sync failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("upload:")).count())
}

struct Publisher {
    s3: aws_sdk_s3::Client,
    counter: aws_target::RequestCounter,
    config: PublishConfig,
}

impl Publisher {
    /// The publisher of the bench's `[publish]` on the emulator, its requests counted.
    async fn on(moto: &test_support::Moto) -> anyhow::Result<Publisher> {
        let config = ConfigFile::from_text(Path::new("bench.toml"), CONFIG);
        let counter = aws_target::RequestCounter::default();
        let sdk = moto.sdk_config().await;
        let s3 = aws_target::s3(&sdk, Some(&counter));
        Ok(Publisher { s3, counter, config: PublishConfig::from_config(&config)?.context("[publish]")? })
    }

    /// One publish of `dist` into `bucket`: (uploads, requests).
    async fn publish(&self, dist: &Path, bucket: &str, release: &str) -> anyhow::Result<(usize, u64)> {
        self.counter.reset();
        let site = frontend_publisher::read_site(&self.config, dist, Vec::new())?;
        let remote = frontend_publisher::read_remote(&self.s3, bucket, "", &site, 16, &|_| {}).await?;
        let plan = frontend_publisher::plan(bucket, "", release, 2, "index.html", site, &remote);
        let options = ApplyOptions { force: true, ..ApplyOptions::default() };
        let summary = frontend_publisher::apply(&self.s3, None, plan, &options, None, &|_| {}).await?;
        Ok((summary.uploaded, self.counter.total()))
    }
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let bin = crate::python::ensure(&root)?;
    let aws = bin.join("aws");
    let work: PathBuf = root.join("target/bench-publish");
    let dist = work.join("dist");
    let moto = test_support::Moto::start_with(&bin.join("python"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let publisher = runtime.block_on(Publisher::on(&moto))?;
    let rounds = rounds.max(1);
    let (mut sync_times, mut ours_times, mut sync_first, mut ours_first) = (vec![], vec![], vec![], vec![]);
    let (mut sync_uploads, mut ours_uploads, mut ours_requests) = (0, 0, 0);
    for round in 0..rounds {
        let sync_bucket = format!("bench-sync-{round}");
        let ours_bucket = format!("bench-publisher-{round}");
        runtime.block_on(async {
            publisher.s3.create_bucket().bucket(&sync_bucket).send().await?;
            publisher.s3.create_bucket().bucket(&ours_bucket).send().await?;
            anyhow::Ok(())
        })?;
        generate(&dist, 1)?;
        // Alternate which side goes first.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let started = Instant::now();
            if side == 0 {
                sync(&aws, &moto.endpoint, &dist, &sync_bucket)?;
                sync_first.push(started.elapsed());
            } else {
                runtime.block_on(publisher.publish(&dist, &ours_bucket, &format!("r{round}-1")))?;
                ours_first.push(started.elapsed());
            }
        }
        // A fresh checkout with one asset changed.
        generate(&dist, 2)?;
        touch_all(&dist)?;
        for side in order {
            if side == 0 {
                let started = Instant::now();
                sync_uploads = sync_counted(&aws, &moto.endpoint, &dist, &sync_bucket)?;
                sync_times.push(started.elapsed());
            } else {
                let started = Instant::now();
                let (uploads, requests) =
                    runtime.block_on(publisher.publish(&dist, &ours_bucket, &format!("r{round}-2")))?;
                ours_times.push(started.elapsed());
                (ours_uploads, ours_requests) = (uploads, requests);
            }
        }
    }
    let sync_requests = sync_uploads + 1;
    let bytes = folder_bytes(&dist);
    println!("{}", machine());
    println!(
        "site: {FILES} files, {:.1} MB, content-hashed; republish after touching every file and changing one asset",
        bytes as f64 / 1e6
    );
    println!("rounds: {rounds}, alternating which side goes first; moto at {}", moto.endpoint);
    let width = 58;
    print_header("ms", width);
    let sync_first = print_row("first publish: aws s3 sync --delete", width, &sync_first);
    let ours_first = print_row("first publish: frontend-publisher (in process)", width, &ours_first);
    let sync_median = print_row("republish: aws s3 sync --delete", width, &sync_times);
    let ours_median = print_row("republish: frontend-publisher (in process)", width, &ours_times);
    println!(
        "republish uploads: aws s3 sync {sync_uploads} of {FILES}, frontend-publisher {ours_uploads} (the changed asset and the HTML)"
    );
    println!(
        "republish requests: aws s3 sync ~{sync_requests} (uploads + 1 listing; its delete not counted), frontend-publisher {ours_requests} (listing, manifest read and write, uploads); ratio {:.1}x fewer",
        sync_requests as f64 / ours_requests.max(1) as f64
    );
    println!(
        "republish wall time: frontend-publisher is {:.1}x faster than aws s3 sync (first publish: {:.1}x)",
        sync_median.as_secs_f64() / ours_median.as_secs_f64().max(1e-9),
        sync_first.as_secs_f64() / ours_first.as_secs_f64().max(1e-9)
    );
    Ok(())
}
