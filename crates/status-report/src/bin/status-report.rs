//! `status-report`: records pipeline steps, decides the gate and renders a run's report.
//!
//! Exit codes: 0 success, 1 the gate refused (`gate`), the environment is refused
//! (`deploy-decision`), CodePipeline holds no approval (`approve --codepipeline`) or the newest run
//! regressed (`stats --check`), 2 usage, configuration,
//! I/O or store errors (including a run that `mark-success` refuses).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Result, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use run_state::cli::{StageArgs, print};
use run_state::{
    Error, FileStore, PIPELINE, RunDir, StageContext, Status, Step, StepRecord, Store, StoreChoice, redact,
};
use status_report::codepipeline::{self, PipelineApproval};
use status_report::notify::{self, Event, NotifySettings};
use status_report::{GatePolicy, Requirements, RunReport, approval, run_deploy_decision, run_gate};

/// The record of every pipeline step, the gate decision, and reports.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    target: aws_target::TargetArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Records the state of one step of one component (for shell steps in CodeBuild). The
    /// steps only their stages write are refused: `deploy` and `prod-deploy` (stack-deployer,
    /// frontend-publisher) and `approval` (`approve --by NAME`).
    Record(RecordArgs),
    /// Lists run ids, newest last, each with its gate decision.
    Runs,
    /// Removes old runs from the store: the file store (`.pipeline/state.jsonl`) rewritten
    /// atomically under its lock, a DynamoDB table's items deleted. Success marks, held locks,
    /// each environment's latest success and runs still running are kept. Prints what was removed.
    Prune {
        /// Keep the newest N runs.
        #[arg(long, value_name = "N", required_unless_present = "older_than")]
        keep_runs: Option<usize>,
        /// Remove runs whose last record is older than AGE (`90d`, `12w`, `48h`).
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Option<std::time::Duration>,
    },
    /// Shows a run as a table, Markdown, JSON or JUnit XML.
    Show {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// The report's format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Writes the report to FILE (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Prints the gate's decision: exit 0 when the pipeline may go on, 1 when refused.
    Gate {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
    },
    /// Publishes the run's report to the SNS topic of `[notify] topic_arn` (nothing when unset).
    /// Prints the message id.
    Notify {
        /// Why: `failure`, `approval` or `success`.
        #[arg(long, value_name = "EVENT")]
        event: String,
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// The topic, over `[notify] topic_arn`.
        #[arg(long, value_name = "ARN")]
        topic_arn: Option<String>,
    },
    /// Puts the run's step durations and outcomes in CloudWatch under `[notify] metrics_namespace`
    /// (nothing when unset). Prints how many data were sent.
    Metrics {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// The namespace, over `[notify] metrics_namespace`.
        #[arg(long, value_name = "NAMESPACE")]
        namespace: Option<String>,
    },
    /// Records a run's approval: approved by `--by`, or refused with `--refuse` (production is
    /// then refused for that run).
    Approve {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// Who decides (a person approving by hand, or locally).
        #[arg(long, value_name = "NAME", required_unless_present = "codepipeline", conflicts_with = "codepipeline")]
        by: Option<String>,
        /// In CodeBuild: record the approval CodePipeline holds for this execution (its
        /// manual-approval action's result, approver and comment, read with
        /// ListActionExecutions), not a name given on the command line. A rejected or
        /// undecided action, or none, is recorded and exits 1.
        #[arg(long, value_name = "PIPELINE", requires = "execution")]
        codepipeline: Option<String>,
        /// With --codepipeline: the pipeline execution id (`#{codepipeline.PipelineExecutionId}`).
        #[arg(long, value_name = "ID", requires = "codepipeline")]
        execution: Option<String>,
        /// Why, on one line.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// Refuses instead of approving.
        #[arg(long)]
        refuse: bool,
    },
    /// Records that a run waits for approval, with what production will receive.
    RequestApproval {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// What production will receive, on one line.
        #[arg(long, value_name = "TEXT")]
        summary: String,
    },
    /// Prints what may be deployed to an environment, per component: exit 0 when the
    /// environment may be deployed, 1 when it is refused as a whole.
    DeployDecision {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// The environment (`dev`, `prod`).
        #[arg(long, value_name = "NAME")]
        env: String,
    },
    /// Trends over the runs in the store (per day, success rates, durations per stage, approval
    /// waits, lead time, slowest components, coverage, findings). With --check: exit 1 naming
    /// each regression of the newest run against `[stats]` (duration over factor × P95, success
    /// rate under the minimum, coverage fallen), published to --topic-arn when given.
    Stats(StatsArgs),
    /// Prints the CloudWatch dashboard body (runs, success rate per stage, stage duration P95,
    /// coverage) of the metrics `metrics` puts, for `aws cloudwatch put-dashboard`.
    Dashboard {
        /// The namespace, over `[notify] metrics_namespace`.
        #[arg(long, value_name = "NAMESPACE")]
        namespace: Option<String>,
    },
    /// Writes one self-contained HTML page, DIR/pipeline.html (no script, no network): the run's
    /// steps as a timeline, the gate's decision, and the trends of `stats` as charts. Prints its path.
    Html {
        /// The folder to write into (created when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// The trends cover runs started within this long before now.
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        since: String,
    },
    /// Lists an environment's releases (what each deploy that passed, or rollback, left
    /// running), oldest first; the one running now marked `*`.
    Releases {
        /// The environment.
        #[arg(long, value_name = "ENV")]
        env: String,
    },
    /// Records that a run's commit reached an environment (the last success of `[diff]
    /// base_environment` is the next default base); refused unless the environment's own deploy
    /// (`prod-deploy` for a promoted one) passed for every changed component it deploys. Prints the commit.
    MarkSuccess {
        /// The run [default: the newest].
        #[arg(long, value_name = "ID")]
        run: Option<String>,
        /// The environment the run deployed to.
        #[arg(long, value_name = "ENV", default_value = run_state::DEFAULT_SUCCESS_ENV)]
        env: String,
    },
}

#[derive(Debug, Args)]
struct RecordArgs {
    /// The run id.
    #[arg(long, value_name = "ID")]
    run: String,
    /// The commit the run builds.
    #[arg(long, value_name = "SHA")]
    commit: String,
    /// The component, or `pipeline` for steps of the whole pipeline.
    #[arg(long, value_name = "NAME")]
    component: String,
    /// The step: source, diff, validate, build, test, e2e or dast (deploy, prod-deploy and
    /// approval are refused: only their stages record them).
    // Taken as text and parsed with `Step::from_str`, so a mistake is one line listing the valid steps.
    #[arg(long, value_name = "STEP")]
    step: String,
    /// The status: pending, running, passed, failed, skipped or cancelled.
    #[arg(long, value_name = "STATUS")]
    status: String,
    /// Why it failed, on one line.
    #[arg(long, value_name = "MSG")]
    error: Option<String>,
    /// The step's log: its path and its last lines (secrets redacted) are kept.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// A short note (why it was skipped …).
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
    /// Sets the start time to now whatever the status (a step recorded only once it ended).
    #[arg(long)]
    started: bool,
    /// Sets the end time to now whatever the status.
    #[arg(long)]
    ended: bool,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Only runs started within this long before now (`30d`, `12h`, `2weeks`).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// Only runs that deployed to this environment (recorded its deploy step); the lead time ends there.
    #[arg(long, value_name = "ENV")]
    env: Option<String>,
    /// The figures' format.
    #[arg(long, value_enum, default_value_t = StatsFormat::Table)]
    format: StatsFormat,
    /// Judges the newest run instead of printing the figures: exit 1 naming each regression.
    #[arg(long)]
    check: bool,
    /// With --check: publishes the regressions to this SNS topic.
    #[arg(long, value_name = "ARN", requires = "check")]
    topic_arn: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatsFormat {
    Table,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Markdown,
    Json,
    Junit,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    run_state::cli::main("status-report", || run(&cli))
}

#[allow(clippy::print_stderr)]
fn warn(message: &str) {
    eprintln!("status-report: warning: {message}");
}

fn run(cli: &Cli) -> Result<bool> {
    let context = cli.stage.context_on(&cli.target.target())?;
    match &cli.command {
        Command::Record(args) => record(&context, args).map(|()| true),
        Command::Prune { keep_runs, older_than } => prune(cli, &context, keep_runs, older_than),
        Command::Runs => list_runs(&context),
        Command::Show { run, format, output } => show(&context, run, format, output),
        Command::Gate { run } => gate(&context, run),
        Command::Approve { run, codepipeline: Some(pipeline), execution: Some(execution), refuse, .. } => {
            approve_codepipeline(cli, &context, run, pipeline, execution, refuse)
        }
        Command::Approve { run, by, comment, refuse, .. } => approve(&context, run, by, comment, refuse),
        Command::RequestApproval { run, summary } => request_approval(&context, run, summary),
        Command::DeployDecision { run, env } => deploy_decision(&context, run, env),
        Command::Notify { event, run, topic_arn } => notify_run(cli, &context, event, run, topic_arn),
        Command::Metrics { run, namespace } => put_metrics(cli, &context, run, namespace),
        Command::Stats(args) => stats(cli, &context, args),
        Command::Dashboard { namespace } => dashboard(cli, &context, namespace),
        Command::Html { out, run, since } => html(&context, out, run.as_deref(), since).map(|()| true),
        Command::Releases { env } => releases(&context, env),
        Command::MarkSuccess { run, env } => mark_success(&context, run, env),
    }
}

/// `prune`: removes old runs from the store, keeping what must stay.
fn prune(
    cli: &Cli,
    context: &StageContext,
    keep_runs: &Option<usize>,
    older_than: &Option<std::time::Duration>,
) -> Result<bool> {
    let rule = run_state::Prune { keep_runs: *keep_runs, older_than: *older_than };
    let pruned = match &context.store_choice {
        StoreChoice::File => context.file_store()?.prune(rule, SystemTime::now())?,
        StoreChoice::DynamoDb { table } => {
            // Each environment's latest success is kept: those the gate names, and the default.
            let policy = policy(context)?;
            let mut environments: Vec<String> = policy.environments.keys().cloned().collect();
            environments
                .extend(policy.environments.values().filter_map(|r| r.after.as_ref()).map(|a| a.get_ref().clone()));
            environments.push(run_state::DEFAULT_SUCCESS_ENV.to_string());
            environments.sort();
            environments.dedup();
            let store = run_state::DynamoStore::connect(&cli.target.target(), table)?;
            store.prune(rule, SystemTime::now(), &environments)?
        }
    };
    let mut out = format!(
        "removed {} run(s), kept {}; {} -> {} bytes\n",
        pruned.removed.len(),
        pruned.kept,
        pruned.bytes_before,
        pruned.bytes_after
    );
    for (run_id, why) in &pruned.protected {
        out.push_str(&format!("kept {run_id}: {why}\n"));
    }
    print(&out)?;
    Ok(true)
}

/// `runs`: every run id with its gate decision, oldest first.
fn list_runs(context: &StageContext) -> Result<bool> {
    let policy = policy(context)?;
    let mut out = String::new();
    if let Some(store) = context.existing_store()? {
        // One read of the store for every run, not one per run, one run in memory at a time.
        let mut failed = None;
        store.for_each_run(&mut |run_id, records| {
            let required =
                match run_folder(context, run_id).read_json::<source_diff::DiffReport>(run_state::RunFile::Diff) {
                    Ok(diff) => Some(Requirements::from_diff(&diff)),
                    Err(Error::MissingInput { .. }) => None,
                    Err(other) => {
                        failed = Some(other);
                        return std::ops::ControlFlow::Break(());
                    }
                };
            let gate = status_report::decide(&records, required.as_ref(), &policy);
            let verdict = match gate.reasons.len() {
                0 => "passed".to_string(),
                1 => "refused (1 reason)".to_string(),
                n => format!("refused ({n} reasons)"),
            };
            out.push_str(&format!("{run_id} {verdict}\n"));
            std::ops::ControlFlow::Continue(())
        })?;
        if let Some(error) = failed {
            return Err(error.into());
        }
    }
    print(&out)?;
    Ok(true)
}

/// `show`: a run as a table, Markdown, JSON or JUnit XML.
fn show(context: &StageContext, run: &Option<String>, format: &Format, output: &Option<PathBuf>) -> Result<bool> {
    let policy = policy(context)?;
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let (records, gate) = run_gate(&store, &run_folder(context, &run_id), &policy, None)?;
    if records.is_empty() {
        bail!(Error::UnknownRun { run_id });
    }
    let report = RunReport::new(&run_id, records, gate);
    let mut text = match format {
        Format::Table => report.to_table(),
        Format::Markdown => report.to_markdown(),
        Format::Json => report.to_json(),
        Format::Junit => report.to_junit(),
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    match output {
        Some(path) => run_state::write_atomic(path, text.as_bytes())?,
        None => print(&text)?,
    }
    Ok(true)
}

/// `gate`: the gate's decision of a run (false: refused).
fn gate(context: &StageContext, run: &Option<String>) -> Result<bool> {
    let policy = policy(context)?;
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let (records, gate) = run_gate(&store, &run_folder(context, &run_id), &policy, None)?;
    if records.is_empty() {
        bail!(Error::UnknownRun { run_id });
    }
    let mut out = format!("gate: {} (run {run_id})\n", if gate.allowed { "passed" } else { "refused" });
    for reason in &gate.reasons {
        out.push_str(&format!("  - {reason}\n"));
    }
    print(&out)?;
    Ok(gate.allowed)
}

/// `approve --by NAME` (or `--refuse`): records a decision by hand.
fn approve(
    context: &StageContext,
    run: &Option<String>,
    by: &Option<String>,
    comment: &Option<String>,
    refuse: &bool,
) -> Result<bool> {
    let by = by.as_deref().unwrap_or_default();
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let record = if *refuse {
        approval::refuse(&store, &run_id, by, comment.as_deref())?
    } else {
        approval::approve(&store, &run_id, by, comment.as_deref())?
    };
    let verdict = if *refuse { "refused" } else { "approved" };
    print(&format!("run {run_id} ({}): {verdict} by {by}\n", record.commit))?;
    Ok(true)
}

/// `request-approval`: records that a run waits for approval.
fn request_approval(context: &StageContext, run: &Option<String>, summary: &str) -> Result<bool> {
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let commit = store.run(&run_id)?.first().map(|r| r.commit.clone()).unwrap_or_default();
    approval::request(&store, &run_id, &commit, summary)?;
    print(&format!("run {run_id}: waiting for approval\n"))?;
    Ok(true)
}

/// `deploy-decision`: what may be deployed to an environment (false: refused as a whole).
fn deploy_decision(context: &StageContext, run: &Option<String>, env: &str) -> Result<bool> {
    let policy = policy(context)?;
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let decision = run_deploy_decision(&store, &run_folder(context, &run_id), &policy, env)?;
    print(&decision.describe())?;
    Ok(decision.refused.is_empty())
}

/// `notify`: publishes a run's report to the SNS topic.
fn notify_run(
    cli: &Cli,
    context: &StageContext,
    event: &str,
    run: &Option<String>,
    topic_arn: &Option<String>,
) -> Result<bool> {
    let event: Event = event.parse().map_err(|e: String| anyhow!(e))?;
    let settings = context.config.section::<NotifySettings>(NotifySettings::SECTION)?;
    let Some(topic) = topic_arn.clone().or(settings.topic_arn) else {
        warn("no [notify] topic_arn in the config: nothing published");
        return Ok(true);
    };
    let policy = policy(context)?;
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let (records, gate) = run_gate(&store, &run_folder(context, &run_id), &policy, None)?;
    if records.is_empty() {
        bail!(Error::UnknownRun { run_id });
    }
    let message = notify::message(event, &RunReport::new(&run_id, records, gate));
    let id = aws(&cli.target, |config| async move {
        Ok(notify::publish(&aws_target::sns(&config, None), &topic, &message).await?)
    })?;
    print(&format!("{id}\n"))?;
    Ok(true)
}

/// `metrics`: puts a run's durations and outcomes in CloudWatch.
fn put_metrics(cli: &Cli, context: &StageContext, run: &Option<String>, namespace: &Option<String>) -> Result<bool> {
    let settings = context.config.section::<NotifySettings>(NotifySettings::SECTION)?;
    let Some(namespace) = namespace.clone().or(settings.metrics_namespace) else {
        warn("no [notify] metrics_namespace in the config: no metrics sent");
        return Ok(true);
    };
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let metrics = notify::metrics(&store.run(&run_id)?);
    let sent = aws(&cli.target, |config| async move {
        Ok(notify::put_metrics(&aws_target::cloudwatch(&config, None), &namespace, &metrics).await?)
    })?;
    print(&format!("{sent}\n"))?;
    Ok(true)
}

/// `dashboard`: prints the CloudWatch dashboard body.
fn dashboard(cli: &Cli, context: &StageContext, namespace: &Option<String>) -> Result<bool> {
    let settings = context.config.section::<NotifySettings>(NotifySettings::SECTION)?;
    let namespace = namespace
        .clone()
        .or(settings.metrics_namespace)
        .ok_or_else(|| anyhow!("no namespace: pass --namespace or set [notify] metrics_namespace"))?;
    let region = cli.target.region.clone().or_else(|| std::env::var("AWS_REGION").ok());
    let region = region.ok_or_else(|| anyhow!("no region: pass --region or set AWS_REGION"))?;
    print(&format!("{}\n", status_report::dashboard::body(&namespace, &region)))?;
    Ok(true)
}

/// `releases`: an environment's releases, the running one marked.
fn releases(context: &StageContext, env: &str) -> Result<bool> {
    run_state::check_name("environment", env)?;
    let releases = match context.existing_store()? {
        Some(store) => store.releases(env)?,
        None => Vec::new(),
    };
    print(&status_report::releases::render(env, &releases))?;
    Ok(true)
}

/// `mark-success`: records that a run's commit reached an environment.
fn mark_success(context: &StageContext, run: &Option<String>, env: &str) -> Result<bool> {
    let policy = policy(context)?;
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let mark = status_report::mark_success(store.as_ref(), &run_folder(context, &run_id), &policy, env)?;
    print(&format!("{}\n", mark.commit))?;
    Ok(true)
}

/// `approve --codepipeline`: records the approval CodePipeline holds for the execution.
fn approve_codepipeline(
    cli: &Cli,
    context: &StageContext,
    run: &Option<String>,
    pipeline: &str,
    execution: &str,
    refuse: &bool,
) -> Result<bool> {
    if *refuse {
        bail!("--refuse with --codepipeline: the refusal is CodePipeline's (reject the approval action there)");
    }
    let (store, run_id) = pick_run(context, run.as_deref())?;
    let (p, e) = (pipeline.to_string(), execution.to_string());
    let found = aws(&cli.target, |config| async move {
        Ok(codepipeline::approval_of(&aws_sdk_codepipeline::Client::new(&config), &p, &e).await?)
    })?;
    let said = found.describe(pipeline, execution);
    match found {
        PipelineApproval::Approved { by, comment, .. } => {
            let comment = comment.map(|c| format!("{c} ({said})")).unwrap_or(said);
            let record = approval::approve(&store, &run_id, &by, Some(&comment))?;
            print(&format!("run {run_id} ({}): approved by {by}, as CodePipeline records it\n", record.commit))?;
        }
        PipelineApproval::Rejected { by, comment, .. } => {
            let comment = comment.map(|c| format!("{c} ({said})")).unwrap_or(said.clone());
            approval::refuse(&store, &run_id, &by, Some(&comment))?;
            warn(&format!("run {run_id}: {said}"));
            return Ok(false);
        }
        PipelineApproval::Undecided { .. } | PipelineApproval::NoApprovalAction => {
            let commit = store.run(&run_id)?.first().map(|r| r.commit.clone()).unwrap_or_default();
            let mut record = StepRecord::new(&run_id, &commit, PIPELINE, Step::Approval, Status::Failed);
            record.ended_at = Some(SystemTime::now());
            record.details.error = Some(said.clone());
            store.record(&record)?;
            warn(&format!("run {run_id}: {said}; production stays refused"));
            return Ok(false);
        }
    }
    Ok(true)
}

/// `stats`: the figures, or with --check the regressions of the newest run (false: some).
fn stats(cli: &Cli, context: &StageContext, args: &StatsArgs) -> Result<bool> {
    use status_report::stats::{self, StatsSettings};
    let thresholds = StatsSettings::policy(&context.config)?;
    let query = stats::Query::new(args.since.as_deref(), args.env.as_deref(), &policy(context)?, SystemTime::now())?;
    let figures = match context.existing_store()? {
        Some(store) => trends(context, &store, query, thresholds)?,
        None => stats::Collector::new(query, thresholds).finish(),
    };
    if !args.check {
        return match args.format {
            StatsFormat::Table => print(&figures.to_table()),
            StatsFormat::Markdown => print(&figures.to_markdown()),
            StatsFormat::Json => print(&format!("{}\n", figures.to_json())),
        }
        .map(|()| true);
    }
    let alerts = stats::check(&figures, &thresholds);
    let run = figures.last_run().unwrap_or("none");
    if alerts.is_empty() {
        print(&format!("no regression in run {run}\n"))?;
        return Ok(true);
    }
    print(&alerts.iter().map(|a| format!("regression: {}: {}\n", a.stage, a.message)).collect::<String>())?;
    if let Some(topic) = args.topic_arn.clone() {
        let message = stats::alert_message(&figures, &alerts);
        aws(&cli.target, |config| async move {
            Ok(notify::publish(&aws_target::sns(&config, None), &topic, &message).await?)
        })?;
    }
    Ok(false)
}

/// The figures of `stats` and `html`: a file store read its own way, fast
/// ([`status_report::stats::from_file_store`]), another through the store.
fn trends(
    context: &StageContext,
    store: &Arc<dyn Store>,
    query: status_report::stats::Query,
    thresholds: status_report::stats::StatsPolicy,
) -> Result<status_report::stats::Stats> {
    use status_report::stats;
    Ok(match context.store_choice {
        StoreChoice::File => stats::from_file_store(&context.file_store()?, query, thresholds)?,
        _ => stats::from_store(store, query, thresholds)?,
    })
}

/// `html`: the page of a run and the trends, written into `out`.
fn html(context: &StageContext, out: &Path, run: Option<&str>, since: &str) -> Result<()> {
    use status_report::{page, stats};
    if out.exists() && !out.is_dir() {
        bail!("--out {}: not a folder; name the folder to write {} into", out.display(), page::FILE_NAME);
    }
    let policy = policy(context)?;
    let query = stats::Query::new(Some(since), None, &policy, SystemTime::now())?;
    // A file store is read once, the figures and the run together; on any error (or no run),
    // the store's own reads below say what it is.
    let file_store = match context.store_choice {
        StoreChoice::File if context.state_dir.join(FileStore::FILE_NAME).is_file() => Some(context.file_store()?),
        _ => None,
    };
    let fast = match (&file_store, stats::StatsSettings::policy(&context.config)) {
        (Some(file_store), Ok(thresholds)) => {
            stats::from_file_store_with_run(file_store, run, query.clone(), thresholds).ok()
        }
        _ => None,
    };
    let (figures, store, run_id): (_, Arc<dyn Store>, _) = match fast {
        Some((figures, Some(with_run))) => {
            let run_id = with_run.run_id.clone();
            (Some(figures), Arc::new(with_run), run_id)
        }
        _ => {
            let (store, run_id) = pick_run(context, run)?;
            (None, store, run_id)
        }
    };
    let (records, gate) = run_gate(&store, &run_folder(context, &run_id), &policy, None)?;
    if records.is_empty() {
        bail!(Error::UnknownRun { run_id });
    }
    let figures = match figures {
        Some(figures) => figures,
        None => trends(context, &store, query, stats::StatsSettings::policy(&context.config)?)?,
    };
    let promotions = promotions(context, &store, &run_id, &policy);
    let text = page::render(&RunReport::new(&run_id, records, gate), &promotions, &figures);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let path = out.join(page::FILE_NAME);
    run_state::write_atomic(&path, text.as_bytes())?;
    print(&format!("{}\n", path.display()))
}

/// The deploy decision of each promoted environment for the page; a run that cannot be
/// decided (no diff) is shown refused, with why.
fn promotions(
    context: &StageContext,
    store: &Arc<dyn Store>,
    run_id: &str,
    policy: &GatePolicy,
) -> Vec<status_report::DeployDecision> {
    let mut promotions = Vec::new();
    for (env, _) in policy.environments.iter().filter(|(_, rule)| rule.after.is_some()) {
        let decision = run_deploy_decision(store, &run_folder(context, run_id), policy, env).unwrap_or_else(|e| {
            status_report::DeployDecision {
                environment: env.clone(),
                step: policy.deploy_step(env),
                refused: vec![run_state::error_chain(&e)],
                components: Default::default(),
                notes: Vec::new(),
            }
        });
        promotions.push(decision);
    }
    promotions
}

/// An age for `prune --older-than`: a number and a unit (`s`, `m`, `h`, `d`, `w`).
fn parse_age(text: &str) -> std::result::Result<std::time::Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("`{text}` is not an age; write e.g. 90d, 12w or 48h"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("`{text}` is not an age; write e.g. 90d, 12w or 48h")),
    };
    Ok(std::time::Duration::from_secs(number.saturating_mul(seconds)))
}

/// The folder of a run (it may not exist for runs recorded only through `record`).
fn run_folder(context: &StageContext, run_id: &str) -> RunDir {
    RunDir { run_id: run_id.to_string(), path: run_state::runs_dir(&context.state_dir).join(run_id) }
}

fn record(context: &StageContext, args: &RecordArgs) -> Result<()> {
    let step: Step = args.step.parse().map_err(|e: String| anyhow!(e))?;
    let status: Status = args.status.parse().map_err(|e: String| anyhow!(e))?;
    // Steps only their stages write: a shell step recording them could forge a deploy or an
    // approval and let production through.
    match step {
        Step::Approval => bail!(
            "`record --step approval` is refused: an approval is recorded by `status-report approve --by NAME` (or refused with --refuse)"
        ),
        Step::Deploy | Step::ProdDeploy => bail!(
            "`record --step {step}` is refused: a deploy is recorded only by the deploy stages (stack-deployer, frontend-publisher)"
        ),
        _ => {}
    }
    run_state::check_name("--run", &args.run)?;
    let store = context.store()?;
    let now = SystemTime::now();
    let mut record = StepRecord::new(&args.run, &args.commit, &args.component, step, status);
    record.started_at = if status == Status::Running || args.started {
        Some(now)
    } else if status.is_final() {
        // The start was recorded by an earlier `--status running`: keep it so the report shows a duration.
        let previous = store.run(&args.run)?;
        previous.into_iter().find(|r| r.component == args.component && r.step == step).and_then(|r| r.started_at)
    } else {
        None
    };
    record.ended_at = (status.is_final() || args.ended).then_some(now);
    record.details.error = args.error.clone();
    record.details.note = args.note.clone();
    if let Some(log) = &args.log {
        record.details.log_path = Some(log.display().to_string());
        // A missing log must not lose the step's record (the gate would then see it unfinished).
        match redact::read_log_tail(log) {
            Ok(tail) => record.details.log_tail = Some(tail),
            Err(e) => warn(&format!("{}; recorded the step without its log tail", run_state::error_chain(&e))),
        }
    }
    store.record(&record)?;
    Ok(())
}

/// The gate policy: `[gate]` of the config when it exists, else the default.
fn policy(context: &StageContext) -> Result<GatePolicy> {
    Ok(GatePolicy::from_config(&context.config)?)
}

/// Runs `work` with the SDK config of the target, on a runtime of its own.
fn aws<T, F: std::future::Future<Output = Result<T>>>(
    target: &aws_target::TargetArgs,
    work: impl FnOnce(aws_config::SdkConfig) -> F,
) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let config = aws_target::load(&target.target()).await?;
        work(config).await
    })
}

/// The store and the run to read: `run` when given, else the newest.
fn pick_run(context: &StageContext, run: Option<&str>) -> Result<(Arc<dyn Store>, String)> {
    let place = match &context.store_choice {
        StoreChoice::File => context.state_dir.join(FileStore::FILE_NAME).display().to_string(),
        remote => remote.to_string(),
    };
    let no_runs = || {
        anyhow!(
            "no runs recorded in {place}; record a step first (`status-report record`) or pass --repo, --state-dir or --store"
        )
    };
    let store = context.existing_store()?.ok_or_else(no_runs)?;
    let run_id = match run {
        Some(run) => run.to_string(),
        None => store.run_ids()?.pop().ok_or_else(no_runs)?,
    };
    Ok((store, run_id))
}
