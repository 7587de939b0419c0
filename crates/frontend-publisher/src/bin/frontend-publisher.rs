//! `frontend-publisher`: publishes the built site of `[publish]`, or checks the published one.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::{Parser, Subcommand};
use frontend_publisher::{Action, Clients, Event, StageOptions};
use run_state::cli::StageArgs;
use run_state::{StageInputs, StageOutcome};

/// Publishes the site of [publish] in pipeline.toml to S3 and CloudFront: only changed files
/// uploaded, headers fixed without uploading, HTML last, stale files deleted only when no
/// retained release references them. Records the component's deploy step and writes the
/// run's publish.json.
///
/// Before anything is read from the bucket, publish asks the deploy decision ([gate]): the
/// component is published only when it changed and its own required steps passed; otherwise
/// it is recorded skipped with why (exit 0: the step that refused it already failed).
///
/// Exit codes: 0 published (or nothing to do, or skipped by the deploy decision) / check clean,
/// 1 the check found problems, or the environment is refused as a whole (a promotion not
/// earned; recorded failed, nothing changed), 2 usage, configuration, AWS or I/O error, or a
/// missing input (run the stage it names first; nothing deleted).
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish the built site.
    Publish {
        #[command(flatten)]
        common: Common,
        /// Print the plan; change, record and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Delete more than publish.max_delete_share of the bucket's objects anyway.
        #[arg(long)]
        force: bool,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Record the run waiting for approval of this environment, with the site it would
        /// receive (digested): the approval then covers exactly that. Publishes nothing and
        /// reads nothing from AWS (CodeBuild's Status stage, before the manual approval).
        #[arg(long, conflicts_with_all = ["dry_run", "force"])]
        request_approval: bool,
    },
    /// Check the published site: referenced assets and their headers, no source maps or
    /// dotfiles, public access blocked, no secret in the runtime config. Records the site
    /// component's `dast` step in the run, which a promotion to production requires passed.
    Check {
        #[command(flatten)]
        common: Common,
        /// Print the findings as JSON (validate's format).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct Common {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    target: aws_target::TargetArgs,
    /// The environment whose stack outputs name the bucket.
    #[arg(long, default_value = "dev")]
    env: String,
    /// The run folder [default: the latest run].
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

impl Common {
    /// The stage's context with `[publish]` checked, the run and the store.
    fn open(&self) -> anyhow::Result<(run_state::StageContext, run_state::RunDir, Arc<dyn run_state::Store>)> {
        let context = self.stage.context_on(&self.target.target())?;
        frontend_publisher::check_config(context.required_config()?)?;
        let run_dir = context.run_dir(self.run_dir.as_deref())?;
        let store = context.store()?;
        Ok((context, run_dir, store))
    }

    /// The environment's account, reached the one way every stage reaches it: its region, its
    /// role assumed ([deploy.environments.NAME]).
    fn environment_target(&self, context: &run_state::StageContext) -> anyhow::Result<aws_target::Target> {
        let account = aws_target::Account::from_config(&context.config, &self.env)?;
        Ok(self.target.target().for_environment(&self.env, &account, "frontend-publisher")?)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_state::cli::main_with_code("frontend-publisher", || run(args))
}

#[allow(clippy::print_stderr)]
fn render(event: Event<'_>, bar: Option<&indicatif::ProgressBar>, done: &AtomicU64) {
    let line = match event {
        Event::Planned(plan) => {
            if let Some(bar) = bar {
                let work = plan.count(Action::Upload) + plan.count(Action::FixHeaders);
                bar.set_length(work as u64);
            }
            format!(
                "plan: {} to upload, {} header fixes, {} unchanged, {} to delete",
                plan.count(Action::Upload),
                plan.count(Action::FixHeaders),
                plan.count(Action::Unchanged),
                plan.count(Action::Delete)
            )
        }
        Event::Uploaded { path, bytes } => {
            done.fetch_add(1, Ordering::Relaxed);
            if let Some(bar) = bar {
                bar.inc(1);
                bar.set_message(path.to_owned());
                return;
            }
            format!("uploaded {path} ({})", frontend_publisher::human_bytes(bytes))
        }
        Event::HeadersFixed { path } => {
            if let Some(bar) = bar {
                bar.inc(1);
                return;
            }
            format!("fixed headers of {path}")
        }
        Event::Retrying { what, attempt, kind } => format!("{what} failed (attempt {attempt}): {kind}; retrying"),
        Event::ManifestWritten => "release manifest written: the new release is live".into(),
        Event::Warning(finding) => {
            format!("warning: {}:{}: {} {}", finding.path, finding.pos.line, finding.rule, finding.message)
        }
        Event::Invalidating { id, paths } => format!("invalidation {id} of {paths} path(s) created"),
        Event::Deleted { count } => format!("deleted {count} stale object(s)"),
    };
    match bar {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().worker_threads(2).build()?)
}

fn run(args: Args) -> anyhow::Result<u8> {
    match args.command {
        Command::Publish { common, request_approval: true, .. } => request_approval(&common),
        Command::Publish { common, dry_run, force, json, .. } => publish(&common, dry_run, force, json),
        Command::Check { common, json } => check(&common, json),
    }
}

/// `publish --request-approval`: records the run waiting for approval of the environment.
fn request_approval(common: &Common) -> anyhow::Result<u8> {
    let (context, run_dir, store) = common.open()?;
    let digest = frontend_publisher::request_approval(&context, &run_dir, &store, &common.env)?;
    run_state::cli::print(&format!(
        "run {}: waiting for approval of `{}`, covering {} part(s)\n",
        run_dir.run_id,
        common.env,
        digest.parts.len()
    ))?;
    Ok(0)
}

/// A progress bar on a terminal.
fn progress_bar(dry_run: bool) -> Option<indicatif::ProgressBar> {
    (std::io::stderr().is_terminal() && !dry_run).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    })
}

/// `publish`: the stage, its events rendered as they come, then its summary.
#[allow(clippy::print_stderr)]
fn publish(common: &Common, dry_run: bool, force: bool, json: bool) -> anyhow::Result<u8> {
    let (context, run_dir, store) = common.open()?;
    // The stage's inputs, built once: the cancel flag is set by Ctrl-C or SIGTERM.
    let inputs = StageInputs::new(&context, &run_dir, &*store, run_state::cli::cancel_flag());
    let target = common.environment_target(&context)?;
    let runtime = runtime()?;
    let (summary, plan_text) = runtime.block_on(async {
        let config = aws_target::load(&target).await?;
        if !aws_target::has_custom_endpoint(&config) {
            // A real account: say which before anything changes.
            let identity = aws_target::identity(&config).await?;
            eprintln!("frontend-publisher: publishing `{}` to {identity}", common.env);
        }
        let s3 = aws_target::s3(&config, None);
        let cloudfront = aws_target::cloudfront(&config, None);
        let bar = progress_bar(dry_run);
        let done = AtomicU64::new(0);
        let dry_plan = std::sync::Mutex::new(String::new());
        let on_event = |event: Event<'_>| {
            if let (true, Event::Planned(plan)) = (dry_run, &event) {
                *dry_plan.lock().unwrap_or_else(|e| e.into_inner()) = plan.describe();
                return;
            }
            render(event, bar.as_ref(), &done);
        };
        let options = StageOptions { environment: common.env.clone(), dry_run, force, ..Default::default() };
        let clients = Clients { s3: &s3, cloudfront: Some(&cloudfront) };
        let summary = frontend_publisher::run_stage(&inputs, clients, &options, &on_event).await;
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let text = dry_plan.into_inner().unwrap_or_else(|e| e.into_inner());
        anyhow::Ok((summary, text))
    })?;
    let summary = match summary {
        Ok(summary) => summary,
        // A refused environment or a secret in the runtime config is the stage's own
        // verdict: exit 1, recorded failed, nothing uploaded.
        Err(
            error @ (frontend_publisher::Error::Refused { .. }
            | frontend_publisher::Error::SecretInRuntimeConfig { .. }),
        ) => {
            run_state::cli::print_error("frontend-publisher", &error.into());
            return Ok(1);
        }
        Err(error) => return Err(error.into()),
    };
    if json {
        run_state::cli::print(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
    } else if dry_run && summary.skipped.is_none() {
        run_state::cli::print(&plan_text)?;
    } else {
        run_state::cli::print(&format!("{}\n", summary.line()))?;
    }
    Ok(summary.exit_code())
}

/// `check`: the site check, recorded as the site component's `dast` step, as in a pipeline.
#[allow(clippy::print_stderr)]
fn check(common: &Common, json: bool) -> anyhow::Result<u8> {
    let (context, run_dir, store) = common.open()?;
    // The check runs to its end: no Ctrl-C handler is installed (it would only hold the
    // process up), so its flag is one nothing sets.
    let not_cancelled = AtomicBool::new(false);
    let inputs = StageInputs::new(&context, &run_dir, &*store, &not_cancelled);
    let target = common.environment_target(&context)?;
    let runtime = runtime()?;
    let checked = runtime.block_on(async {
        let config = aws_target::load(&target).await?;
        let s3 = aws_target::s3(&config, None);
        anyhow::Ok(frontend_publisher::check_stage(&inputs, &s3, &common.env).await?)
    })?;
    if let frontend_publisher::SiteCheck::Skipped(reason) = &checked {
        eprintln!("frontend-publisher: site check skipped: {reason}");
    }
    let findings = checked.findings();
    let text = if json { validate::report::json(findings) } else { validate::report::human(findings) };
    run_state::cli::print(&text)?;
    Ok(checked.exit_code())
}
