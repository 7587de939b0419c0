//! Content-addressed, zero-downtime publishing of a built site to S3 and CloudFront.
//!
//! `aws s3 sync` compares sizes and modification times, so a fresh CI checkout uploads
//! every file again; its `--delete` removes the old hashed assets while visitors still hold
//! the old `index.html`; it cannot fix the headers of an object whose content did not
//! change. This crate publishes the `[publish]` section of `pipeline.toml` instead:
//!
//! 1. [`read_site`] walks the dist folder (regular files only, links leaving it refused,
//!    dotfiles, `.env*` and source maps left out unless configured) and hashes each file;
//!    [`runtime_config_files`] adds the runtime config made from the deploy stage's outputs.
//! 2. [`read_remote`] lists the bucket and reads the release manifest the last publish left
//!    (`.publish/releases.json`: every path's ETag, SHA-256 and headers for the last
//!    releases), and heads only the objects the manifest cannot vouch for.
//! 3. [`plan()`] (pure) decides per path: upload (new, or content changed by MD5/ETag or
//!    SHA-256), fix headers (a metadata-only `CopyObject`), unchanged, keep (a retained
//!    release references it) or delete; and the paths to invalidate.
//! 4. [`apply`] publishes in the zero-downtime order: assets, runtime config, HTML, the
//!    manifest, the invalidation, and only then the deletes.
//!
//! ```
//! use frontend_publisher::{PublishConfig, RemoteState, plan, read_site};
//! use pipeline_config::ConfigFile;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir_all(dir.path().join("dist/assets"))?;
//! std::fs::write(dir.path().join("dist/index.html"), "<script src=\"assets/app.1a2b.js\"></script>")?;
//! std::fs::write(dir.path().join("dist/assets/app.1a2b.js"), "console.log(1)")?;
//! std::fs::write(dir.path().join("dist/assets/app.1a2b.js.map"), "{}")?;
//! let config = ConfigFile::from_text(
//!     "pipeline.toml".as_ref(),
//!     "[publish]\ncomponent = \"web\"\ndist = \"dist\"\nbucket = \"my-site\"\n\
//!      headers = [{ glob = \"assets/**\", cache_control = \"public, max-age=31536000, immutable\" }]\n",
//! );
//! let config = PublishConfig::from_config(&config)?.expect("a [publish] section");
//! let site = read_site(&config, &dir.path().join("dist"), Vec::new())?;
//! let plan = plan("my-site", "", "run-1", 2, "index.html", site, &RemoteState::default());
//! assert_eq!(plan.count(frontend_publisher::Action::Upload), 2);
//! assert!(plan.describe().contains("left-out"));   // the source map
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`check_site`] checks a published site (the pipeline's built-in DAST), with findings in
//! validate's format.

mod check;
mod config;
mod digest;
mod invalidate;
mod local;
mod plan;
pub mod release;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use aws_target::ErrorKind;
use gate::ComponentVerdict;
use run_state::{RunDir, RunFile, StageContext, StageInputs, StageOutcome, Status, Step, StepRecord, Store};
use serde::{Deserialize, Serialize};

pub use check::{CheckOptions, check_site, second_writers};
pub use config::{
    Headers, IMMUTABLE, MAX_RETAIN_RELEASES, MAX_UPLOAD_MEMORY, NO_CACHE, PublishConfig, RuntimeConfig, RuntimeKey,
    ValueSource, content_type,
};
pub use digest::site_digest;
pub use invalidate::{invalidate, is_completed};
pub use local::{
    Body, Kind, LocalFile, MAX_FILE_BYTES, Site, Skipped, check_runtime_secrets, read_site, runtime_config_files,
};
pub use plan::{
    Action, HeadInfo, Item, MANIFEST_KEY, MAX_INVALIDATION_PATHS, MAX_WILDCARDS, ObjectRecord, Plan, Release,
    ReleaseManifest, RemoteObject, RemoteState, collapse_invalidation, human_bytes, is_immutable, plan,
};
pub use s3::{ApplyOptions, DELETE_BATCH, apply, read_remote};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Checks every section of `pipeline.toml` this stage reads (`[components]`, `[publish]`,
/// `[gate]`), so the binary reports a config mistake before anything else, even with no run.
pub fn check_config(config: &pipeline_config::ConfigFile) -> Result<(), Error> {
    source_diff::Components::from_config(config)?;
    PublishConfig::from_config(config)?;
    gate::GatePolicy::from_config(config)?;
    Ok(())
}

/// Everything that can go wrong, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The deploy decision refuses the whole environment (a promotion not earned, a
    /// pipeline-wide required step that did not pass). Nothing was read or changed.
    #[error("publishing to `{environment}` is refused: {}", reasons.join("; "))]
    Refused {
        /// The environment.
        environment: String,
        /// Every reason, each naming what to do.
        reasons: Vec<String>,
    },
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] pipeline_config::ConfigError),
    /// The run folder or the store.
    #[error(transparent)]
    State(#[from] run_state::Error),
    /// No `[publish]` section.
    #[error("{}: no [publish] section; add one naming the component, dist folder and bucket (see the README)", path.display())]
    NoSection {
        /// The config file.
        path: PathBuf,
    },
    /// A stack output the config names is missing.
    #[error(transparent)]
    Output(run_state::outputs::LookupError),
    /// The dist folder does not exist.
    #[error("{} does not exist or is not a folder; build the site first, or fix publish.dist", dist.display())]
    MissingDist {
        /// The folder.
        dist: PathBuf,
    },
    /// The dist folder holds nothing to publish.
    #[error("{} holds no file to publish (publishing it would take the site down); build the site first, or fix publish.dist", dist.display())]
    EmptyDist {
        /// The folder.
        dist: PathBuf,
    },
    /// A file name is not UTF-8 (an S3 key is).
    #[error("the file name `{path}` in dist is not UTF-8 (bytes shown escaped); rename it, as an S3 key is UTF-8")]
    NonUtf8Name {
        /// The path, escaped.
        path: String,
    },
    /// A file name S3 or a browser would mangle (a control character).
    #[error("the file name `{path}` in dist holds a control character; rename it")]
    BadName {
        /// The path, escaped.
        path: String,
    },
    /// A link leads out of dist.
    #[error("{} links to {}, outside the dist folder; copy the file in or remove the link", path.display(), target.display())]
    SymlinkOutside {
        /// The link.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
    },
    /// A link in dist to what the rules keep out (a dotfile, an `.env*` file, a source map).
    #[error("{} links to {}, {what}, which is never published; remove the link, or name its target in publish.include", path.display(), target.display())]
    LinkToHidden {
        /// The link.
        path: PathBuf,
        /// Its target, resolved.
        target: PathBuf,
        /// What the target is.
        what: &'static str,
    },
    /// A runtime-config template's placeholder names an output the run's deploy did not write.
    #[error("{file}:{line}: `${{{placeholder}}}` names no output of the run's deploy; nothing was uploaded")]
    MissingPlaceholder {
        /// The template, relative to the monorepo root.
        file: String,
        /// Its line.
        line: usize,
        /// The placeholder's name.
        placeholder: String,
        /// Which output is missing, and where.
        #[source]
        source: Box<run_state::outputs::LookupError>,
    },
    /// Text after `${` in a runtime-config template that is no placeholder.
    #[error(
        "{file}:{line}: `${{{text}` is not a placeholder; write ${{Output}}, ${{STACK.Output}} or ${{AWS::Region}}, or $${{ for a literal ${{"
    )]
    BadPlaceholder {
        /// The template, relative to the monorepo root.
        file: String,
        /// Its line.
        line: usize,
        /// What follows `${` (at most 40 characters).
        text: String,
    },
    /// The runtime config (made from the stack outputs) holds a secret: the site is public.
    #[error(
        "the runtime config would publish a secret on the public site ({}); nothing was uploaded: take the stack output that carries it out of publish.runtime_config (its keys or templates)",
        findings.join("; ")
    )]
    SecretInRuntimeConfig {
        /// Each finding (`aws-config.js:2: S004 …`), never the secret.
        findings: Vec<String>,
    },
    /// Not a regular file (a pipe, a socket, a device).
    #[error("{} is not a regular file; only regular files are published: remove it from dist", path.display())]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// Over S3's 5 GB limit for one object written or copied whole.
    #[error("{} is {size} bytes, over 5 GB; split it, or upload it in parts yourself and leave it out of dist", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Reading a local file failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bucket does not exist.
    #[error("bucket `{bucket}` does not exist; fix publish.bucket, or deploy the stack that creates it first")]
    NoBucket {
        /// The bucket.
        bucket: String,
    },
    /// An S3 call failed.
    #[error("{op} {object}: {kind}")]
    S3 {
        /// The operation.
        op: &'static str,
        /// `s3://bucket/key`.
        object: String,
        /// What it means.
        kind: ErrorKind,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// What restoring a release needs is no longer in the bucket.
    #[error("{what} is gone (past the retained releases); the release can no longer be restored")]
    ReleaseGone {
        /// The objects, `s3://bucket/key`.
        what: String,
    },
    /// The release manifest is not one.
    #[error("{object} is not a release manifest; delete it to start afresh (retention then restarts)")]
    BadManifest {
        /// `s3://bucket/key`.
        object: String,
        /// Why it does not read as one.
        #[source]
        source: serde_json::Error,
    },
    /// The release manifest is larger than one is.
    #[error(
        "{object} is not a release manifest: over {limit} bytes; delete it to start afresh (retention then restarts)"
    )]
    ManifestTooLarge {
        /// `s3://bucket/key`.
        object: String,
        /// The largest manifest read.
        limit: usize,
    },
    /// Too large a share of the bucket would be deleted.
    #[error(
        "the publish would delete {deletes} of the bucket's {objects} objects, more than publish.max_delete_share ({share}); check publish.bucket and publish.prefix, or pass --force"
    )]
    DeleteRefused {
        /// Objects to delete.
        deletes: usize,
        /// Objects there.
        objects: usize,
        /// The configured share.
        share: f64,
    },
    /// `DeleteObjects` refused some keys.
    #[error(
        "DeleteObjects could not delete {failed} object(s), first {object} ({code}); the site is published, publish again to retry the deletes"
    )]
    DeleteFailed {
        /// The first key refused.
        object: String,
        /// Its error code.
        code: String,
        /// How many failed.
        failed: usize,
    },
    /// The invalidation failed.
    #[error(
        "invalidating distribution `{distribution}`: {kind}; the site is published, its old copies expire with their cache time"
    )]
    Invalidation {
        /// The distribution.
        distribution: String,
        /// What it means.
        kind: ErrorKind,
        /// The SDK's error.
        #[source]
        source: BoxError,
    },
    /// Ctrl-C.
    #[error("cancelled; the previous release is still whole")]
    Cancelled,
    /// The approval request could not be recorded.
    #[error("recording what the approval covers")]
    Approval(#[source] gate::approval::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// Progress, for the binary to render.
#[derive(Debug)]
pub enum Event<'a> {
    /// The plan is made (printed as `--dry-run`).
    Planned(&'a Plan),
    /// A file was uploaded.
    Uploaded {
        /// Its site path.
        path: &'a str,
        /// Its size.
        bytes: u64,
    },
    /// An object's headers were fixed.
    HeadersFixed {
        /// Its site path.
        path: &'a str,
    },
    /// A call is tried again.
    Retrying {
        /// The operation.
        what: &'a str,
        /// Which attempt failed.
        attempt: u32,
        /// Why.
        kind: ErrorKind,
    },
    /// The release manifest is written: the release is live.
    ManifestWritten,
    /// Something the publish cannot fix but the user should know (another writer of the
    /// site's bucket), before the plan.
    Warning(&'a validate::Finding),
    /// The invalidation was created.
    Invalidating {
        /// Its id.
        id: &'a str,
        /// How many paths.
        paths: usize,
    },
    /// Stale objects were deleted.
    Deleted {
        /// How many.
        count: usize,
    },
}

/// The invalidation made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidationSummary {
    /// Its id.
    pub id: String,
    /// Its paths.
    pub paths: Vec<String>,
    /// Its last status seen.
    pub status: String,
    /// Whether it completed within the wait.
    pub completed: bool,
}

/// What a publish did: the run's `publish.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The bucket.
    pub bucket: String,
    /// The key prefix.
    pub prefix: String,
    /// The release id.
    pub release: String,
    /// Files uploaded.
    pub uploaded: usize,
    /// Objects whose headers were fixed.
    pub header_fixes: usize,
    /// Objects unchanged.
    pub unchanged: usize,
    /// Stale objects kept for a retained release.
    pub kept: usize,
    /// Stale objects deleted.
    pub deleted: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// The invalidation, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalidation: Option<InvalidationSummary>,
    /// Whether nothing was done (`--dry-run`).
    pub dry_run: bool,
    /// Why nothing was published: the deploy decision skipped the component (it did not
    /// change, or a step it needs did not pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl StageOutcome for Summary {
    /// 0: a summary is a publish that passed, a dry run or a skip by the deploy decision (a
    /// refusal, a secret in the runtime config or a failure is an [`Error`]).
    fn exit_code(&self) -> u8 {
        0
    }
}

impl Summary {
    /// One line: `12 uploaded (1.2 MiB), 1 header fix, 480 unchanged, 3 kept, 2 deleted`.
    pub fn line(&self) -> String {
        if let Some(reason) = &self.skipped {
            return format!("skipped: {reason}");
        }
        let mut text = format!(
            "{} uploaded ({}), {} header fixes, {} unchanged, {} kept, {} deleted",
            self.uploaded,
            human_bytes(self.bytes_uploaded),
            self.header_fixes,
            self.unchanged,
            self.kept,
            self.deleted
        );
        if let Some(invalidation) = &self.invalidation {
            text.push_str(&format!(
                "; invalidation {} of {} path(s) {}",
                invalidation.id,
                invalidation.paths.len(),
                invalidation.status
            ));
        }
        text
    }
}

/// The clients a publish talks to.
#[derive(Debug, Clone, Copy)]
pub struct Clients<'a> {
    /// S3.
    pub s3: &'a aws_sdk_s3::Client,
    /// CloudFront, for the invalidation.
    pub cloudfront: Option<&'a aws_sdk_cloudfront::Client>,
}

/// How [`run_stage`] runs.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// The environment whose stack outputs name the bucket (`dev`).
    pub environment: String,
    /// Plan only: publish, record and write nothing.
    pub dry_run: bool,
    /// Delete more than `publish.max_delete_share` anyway.
    pub force: bool,
    /// The first pause after `TooManyInvalidationsInProgress` [default: 5 s].
    pub invalidation_backoff: Option<std::time::Duration>,
}

/// The values the config takes from the run: bucket, distribution, and the outputs the
/// runtime config is filled from.
struct Resolved {
    bucket: String,
    distribution: Option<String>,
    outputs: Option<run_state::StackOutputs>,
}

fn resolve(config: &PublishConfig, run: &RunDir, environment: &str) -> Result<Resolved, Error> {
    let needs_outputs = matches!(config.bucket, ValueSource::Output { .. })
        || matches!(config.distribution, Some(ValueSource::Output { .. }))
        || config.runtime_config.is_some();
    let outputs = if needs_outputs { Some(run_state::StackOutputs::read(run)?) } else { None };
    let value = |source: &ValueSource| -> Result<String, Error> {
        match (source, &outputs) {
            (ValueSource::Literal(value), _) => Ok(value.clone()),
            (ValueSource::Output { stack, output }, Some(outputs)) => {
                outputs.output(environment, stack, output).map(str::to_owned).map_err(Error::Output)
            }
            (ValueSource::Output { .. }, None) => unreachable!("outputs are read when a value needs them"),
        }
    };
    let bucket = value(&config.bucket)?;
    let distribution = config.distribution.as_ref().map(value).transpose()?;
    Ok(Resolved { bucket, distribution, outputs })
}

/// The runtime config's files, filled from the outputs and scanned for secrets before
/// anything is uploaded.
fn runtime_files(
    config: &PublishConfig,
    root: &Path,
    resolved: &Resolved,
    environment: &str,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let runtime = match (&config.runtime_config, &resolved.outputs) {
        (Some(runtime), Some(outputs)) => runtime_config_files(runtime, root, outputs, environment)?,
        _ => Vec::new(),
    };
    check_runtime_secrets(&runtime)?;
    Ok(runtime)
}

/// Plans a publish of the configured site for `environment` of a run: the site read, the
/// bucket read, the plan made; nothing changed.
pub async fn plan_publish(
    context: &StageContext,
    config: &PublishConfig,
    run: &RunDir,
    s3: &aws_sdk_s3::Client,
    environment: &str,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<(Plan, Option<String>), Error> {
    let resolved = resolve(config, run, environment)?;
    let runtime = runtime_files(config, &context.root, &resolved, environment)?;
    let site = read_site(config, &context.root.join(&config.dist), runtime)?;
    let remote = read_remote(s3, &resolved.bucket, &config.prefix, &site, config.parallelism, on_event).await?;
    let plan = plan::plan(
        &resolved.bucket,
        &config.prefix,
        &run.run_id,
        config.retain_releases,
        &config.root_document,
        site,
        &remote,
    );
    Ok((plan, resolved.distribution))
}

/// Reads `[gate]`, the run's diff and records, and decides what may be published to
/// `environment` ([`gate::decide_deploy`]); the site's component is deployed under
/// its own name, so for a promoted environment it needs a passed publish to the earlier
/// environment. A missing diff names source-diff.
pub fn deploy_decision(
    context: &StageContext,
    run: &RunDir,
    store: &dyn Store,
    environment: &str,
) -> Result<gate::DeployDecision, Error> {
    let policy = gate::GatePolicy::from_config(context.required_config()?)?;
    let site = read_config(context).ok().map(|config| config.component);
    Ok(gate::run_deploy_decision_for(store, run, &policy, environment, site)?)
}

/// Records the run waiting for approval of `environment`, with the site this stage would
/// publish there ([`site_digest`], the runtime config aside), as CodeBuild's Status stage asks
/// before the manual approval: the approval then covers exactly that site. Nothing is read from
/// AWS. Returns the part.
pub fn request_approval(
    context: &StageContext,
    run: &RunDir,
    store: &dyn Store,
    environment: &str,
) -> Result<run_state::ReleaseDigest, Error> {
    // No site, or a site this run does not change: nothing of it to approve.
    let Some(config) = PublishConfig::from_config(context.required_config()?)? else {
        return Ok(run_state::ReleaseDigest::default());
    };
    let diff: source_diff::DiffReport = run.read_json(RunFile::Diff)?;
    let published = store
        .run(&run.run_id)?
        .iter()
        .any(|r| r.component == config.component && r.step == Step::Deploy && r.status == Status::Passed);
    if !diff.changed().any(|c| c == config.component) || !published {
        return Ok(run_state::ReleaseDigest::default());
    }
    let site = read_site(&config, &context.root.join(&config.dist), Vec::new())?;
    let digest = site_digest(&config.component, &site);
    let commit = diff.head;
    let summary = format!("`{environment}` receives the site `{}` ({} file(s))", config.component, site.files.len());
    gate::approval::request_covering(store, &run.run_id, &commit, &summary, Some(digest.clone()))
        .map_err(Error::Approval)?;
    Ok(digest)
}

fn read_config(context: &StageContext) -> Result<PublishConfig, Error> {
    let config = context.required_config()?;
    PublishConfig::from_config(config)?.ok_or_else(|| Error::NoSection { path: config.path.clone() })
}

/// The publish stage of a run, as the `frontend-publisher` binary and a pipeline both run it:
/// reads `[publish]` and the run's stack outputs, plans, publishes (unless `dry_run`), writes
/// the summary to the run's `publish.json`, and records the component's `deploy` step
/// (passed with the summary, or failed with the error; never left running). A dry run
/// records and writes nothing. The inputs' cancel flag stops the uploads ([`Error::Cancelled`],
/// the previous release still whole).
pub async fn run_stage(
    inputs: &StageInputs<'_>,
    clients: Clients<'_>,
    options: &StageOptions,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Summary, Error> {
    let StageInputs { context, run, store, cancel } = *inputs;
    let cancel = Some(cancel);
    let config = read_config_or_record(context, run, store, options)?;
    // Ask the deploy decision before anything is read from the bucket.
    let commit = run.head().unwrap_or_default();
    // The stage's start, so the recorded publish has a duration.
    let started = std::time::SystemTime::now();
    let finish = |step: Step, status: Status, note: Option<String>, error: Option<String>| {
        if options.dry_run {
            return Ok(());
        }
        let mut record = StepRecord::new(&run.run_id, &commit, &config.component, step, status);
        record.started_at = Some(started);
        record.ended_at = Some(std::time::SystemTime::now());
        record.details.note = note;
        record.details.error = error;
        store.record(&record)
    };
    let decision = match deploy_decision(context, run, store, &options.environment) {
        Ok(decision) => decision,
        Err(error) => {
            finish(Step::Deploy, Status::Failed, None, Some(run_state::error_chain(&error)))?;
            return Err(error);
        }
    };
    let step = decision.step;
    if !decision.refused.is_empty() {
        let error = Error::Refused { environment: options.environment.clone(), reasons: decision.refused.clone() };
        finish(step, Status::Failed, None, Some(run_state::error_chain(&error)))?;
        return Err(error);
    }
    let skipped = match decision.verdict(&config.component) {
        ComponentVerdict::Deploy => None,
        ComponentVerdict::Unchanged => Some(format!("{} did not change in this run", config.component)),
        ComponentVerdict::Refused(why) => Some(format!("{} is refused: {why}", config.component)),
    };
    if let Some(reason) = skipped {
        finish(step, Status::Skipped, Some(reason.clone()), None)?;
        return Ok(Summary { dry_run: options.dry_run, skipped: Some(reason), ..Summary::default() });
    }
    if step == Step::ProdDeploy && !options.dry_run {
        let changed = unapproved_changes(context, &config, run, store)?;
        if !changed.is_empty() {
            let error = Error::Refused { environment: options.environment.clone(), reasons: changed };
            finish(step, Status::Failed, None, Some(run_state::error_chain(&error)))?;
            return Err(error);
        }
    }
    if options.dry_run {
        return publish(context, &config, run, clients, options, cancel, on_event).await;
    }
    // A publish that passed is the site's part of the environment's release (kept for rollbacks).
    let work = async {
        let summary = publish(context, &config, run, clients, options, cancel, on_event).await?;
        let environment = &options.environment;
        release::record_site_release(store, run, &config, environment, &summary, clients.s3, on_event).await?;
        Ok(summary)
    };
    record_publish(run, store, &commit, &config.component, step, work).await
}

/// The stage's `[publish]`; one that cannot be read is recorded (unless a dry run) as the
/// pipeline's failed deploy step, since there is no component to record it under.
fn read_config_or_record(
    context: &StageContext,
    run: &RunDir,
    store: &dyn Store,
    options: &StageOptions,
) -> Result<PublishConfig, Error> {
    match read_config(context) {
        Ok(config) => Ok(config),
        Err(error) => {
            // No component to record under: the pipeline's deploy step carries the mistake.
            if !options.dry_run {
                let commit = run.head().unwrap_or_default();
                let mut record =
                    StepRecord::new(&run.run_id, &commit, run_state::PIPELINE, Step::Deploy, Status::Failed);
                record.ended_at = Some(std::time::SystemTime::now());
                record.details.error = Some(run_state::error_chain(&error));
                store.record(&record)?;
            }
            Err(error)
        }
    }
}

/// What differs between the site approved for production (when an approval names it) and the
/// one that would be published: an approval covers exactly that site, so a file changed since
/// (a rebuild, an edit in dist) refuses the promotion.
fn unapproved_changes(
    context: &StageContext,
    config: &PublishConfig,
    run: &RunDir,
    store: &dyn Store,
) -> Result<Vec<String>, Error> {
    let Some(approved) = gate::approval::digest(&store.run(&run.run_id)?) else { return Ok(Vec::new()) };
    let site = read_site(config, &context.root.join(&config.dist), Vec::new())?;
    Ok(approved
        .differences(&site_digest(&config.component, &site), digest::PART)
        .into_iter()
        .map(|difference| format!("{difference}: what was approved is not what would be published; approve again"))
        .collect())
}

/// Plans and (unless a dry run) publishes the site, writing the summary to `publish.json`.
async fn publish(
    context: &StageContext,
    config: &PublishConfig,
    run: &RunDir,
    clients: Clients<'_>,
    options: &StageOptions,
    cancel: Option<&AtomicBool>,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<Summary, Error> {
    let (plan, distribution) = plan_publish(context, config, run, clients.s3, &options.environment, on_event).await?;
    if let Ok(file) = context.required_config() {
        for writer in second_writers(&context.root, file, config) {
            on_event(Event::Warning(&writer));
        }
    }
    on_event(Event::Planned(&plan));
    if options.dry_run {
        return Ok(Summary {
            bucket: plan.bucket.clone(),
            prefix: plan.prefix.clone(),
            release: plan.release_id.clone(),
            uploaded: plan.count(Action::Upload),
            header_fixes: plan.count(Action::FixHeaders),
            unchanged: plan.count(Action::Unchanged),
            kept: plan.count(Action::Keep),
            deleted: plan.count(Action::Delete),
            bytes_uploaded: plan.with(Action::Upload).map(|i| i.bytes).sum(),
            invalidation: None,
            dry_run: true,
            skipped: None,
        });
    }
    let apply_options = ApplyOptions {
        parallelism: config.parallelism,
        multipart_threshold: config.multipart_threshold,
        force: options.force,
        max_delete_share: config.max_delete_share,
        distribution,
        invalidation_wait: config.invalidation_wait,
        invalidation_backoff: options.invalidation_backoff.unwrap_or(std::time::Duration::from_secs(5)),
    };
    let summary = apply(clients.s3, clients.cloudfront, plan, &apply_options, cancel, on_event).await?;
    let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
    run.write(RunFile::Publish, &json)?;
    Ok(summary)
}

/// Records the component's step running (this process its runner), runs `work`, and records
/// how it ended: passed with the summary, cancelled, or failed with the error.
async fn record_publish(
    run: &RunDir,
    store: &dyn Store,
    commit: &str,
    component: &str,
    step: Step,
    work: impl std::future::Future<Output = Result<Summary, Error>>,
) -> Result<Summary, Error> {
    let recording = run_state::Recording::begin(store, &run.run_id, commit, component, step)?;
    let result = work.await;
    match &result {
        Ok(summary) => {
            let note = format!("published to s3://{}/{}: {}", summary.bucket, summary.prefix, summary.line());
            recording.end(Status::Passed, |d| d.note = Some(note))?;
        }
        Err(error) => {
            let status = if matches!(error, Error::Cancelled) { Status::Cancelled } else { Status::Failed };
            recording.end(status, |d| d.error = Some(run_state::error_chain(error)))?;
        }
    }
    result
}

/// The site check of a run, as the `frontend-publisher check` binary and a pipeline both run
/// it: reads `[publish]` and (for a bucket named by a stack output) the run's outputs of
/// `environment`, checks the published site ([`check_site`]) and records the site component's
/// `dast` step (`prod-dast` for a promoted environment): running, then passed with the count of findings, or failed with the errors
/// (an error finding, or a check that could not run). A `[publish]` that cannot be read is
/// recorded failed under `pipeline`. When the site's component did not change in the run,
/// nothing was published, so there is no new site to check: the step is recorded skipped with
/// why (as the publish is). The findings are returned for the caller to report. The check only
/// reads, and briefly: it runs to its end whatever the inputs' cancel flag says.
pub async fn check_stage(
    inputs: &StageInputs<'_>,
    s3: &aws_sdk_s3::Client,
    environment: &str,
) -> Result<SiteCheck, Error> {
    let StageInputs { context, run, store, .. } = *inputs;
    let commit = run.head().unwrap_or_default();
    // `prod-dast` where the environment is promoted: dev's check is a result of its own.
    let step = context
        .required_config()
        .ok()
        .and_then(|config| gate::GatePolicy::from_config(config).ok())
        .map_or(Step::Dast, |policy| policy.check_step(environment));
    let config = match read_config(context) {
        Ok(config) => config,
        Err(error) => {
            let mut record = StepRecord::new(&run.run_id, &commit, run_state::PIPELINE, step, Status::Failed);
            record.ended_at = Some(std::time::SystemTime::now());
            record.details.error = Some(run_state::error_chain(&error));
            store.record(&record)?;
            return Err(error);
        }
    };
    if let Ok(diff) = run.read_json::<source_diff::DiffReport>(RunFile::Diff)
        && !diff.changed().any(|c| c == config.component)
    {
        // The same words as the publish's skip, so a report reads one reason for both.
        let reason = format!("{} did not change in this run", config.component);
        let mut record = StepRecord::new(&run.run_id, &commit, &config.component, step, Status::Skipped);
        record.ended_at = Some(std::time::SystemTime::now());
        record.details.note = Some(reason.clone());
        store.record(&record)?;
        return Ok(SiteCheck::Skipped(reason));
    }
    let recording = run_state::Recording::begin(store, &run.run_id, &commit, &config.component, step)?;
    let findings = async {
        let bucket = match &config.bucket {
            ValueSource::Literal(bucket) => bucket.clone(),
            ValueSource::Output { stack, output } => run_state::StackOutputs::read(run)?
                .output(environment, stack, output)
                .map_err(Error::Output)?
                .to_owned(),
        };
        let mut findings = check_site(s3, CheckOptions { bucket: &bucket, config: &config }).await?;
        if let Ok(file) = context.required_config() {
            findings.extend(second_writers(&context.root, file, &config));
        }
        Ok(findings)
    }
    .await;
    match &findings {
        Ok(findings) => {
            let errors: Vec<String> = findings
                .iter()
                .filter(|f| f.severity == validate::Severity::Error)
                .map(|f| format!("{} {}: {}", f.rule, f.path, f.message))
                .collect();
            if errors.is_empty() {
                let note = format!("site check of {environment}: {} finding(s), no error", findings.len());
                recording.end(Status::Passed, |d| d.note = Some(note))?;
            } else {
                recording.end(Status::Failed, |d| d.error = Some(errors.join("; ")))?;
            }
        }
        Err(error) => {
            recording.end(Status::Failed, |d| d.error = Some(run_state::error_chain(error)))?;
        }
    }
    findings.map(SiteCheck::Checked)
}

impl StageOutcome for SiteCheck {
    /// 0 when the check let the site through ([`SiteCheck::passed`]), 1 when it found an error.
    fn exit_code(&self) -> u8 {
        if self.passed() { 0 } else { 1 }
    }
}

/// What [`check_stage`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SiteCheck {
    /// The site was checked: these findings (an error among them failed the step).
    Checked(Vec<validate::Finding>),
    /// Not checked, and why (recorded as the step's note).
    Skipped(String),
}

impl SiteCheck {
    /// The findings (none when skipped).
    pub fn findings(&self) -> &[validate::Finding] {
        match self {
            SiteCheck::Checked(findings) => findings,
            SiteCheck::Skipped(_) => &[],
        }
    }

    /// Whether the check let the site through: no error finding, or nothing to check.
    pub fn passed(&self) -> bool {
        !self.findings().iter().any(|f| f.severity == validate::Severity::Error)
    }
}
