//! The AWS-facing stages as `cargo xtask pipeline` calls them: each builds the clients its
//! crate's binary builds (through aws-target: the environment's region, its role assumed) and
//! calls that crate's one stage function with the same inputs. Plus the approval record and
//! prompt, until `status_report::approval` replaces them.

use std::io::{BufRead, IsTerminal, Write};
use std::time::SystemTime;

use anyhow::Context;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_target::Target;
use frontend_publisher::PublishConfig;
use run_state::{RunDir, StageContext, Status, Step, StepRecord, Store};
use stack_deployer::{DeploySettings, Environment};

use crate::progress::Progress;

/// Where the deploys go.
#[derive(Debug, Clone)]
pub enum Where {
    /// An emulator at this endpoint, with test credentials (never the caller's).
    Emulator(String),
    /// AWS through the ordinary credential chain (`--target aws`).
    Aws,
}

impl Where {
    /// The SDK config of one environment: its region, its role assumed. The account and region
    /// are printed before anything changes; in the emulator, the environment's artifact bucket is
    /// created (the sample's pipeline stack makes it in AWS).
    pub async fn config(&self, env: &Environment, progress: &Progress) -> anyhow::Result<SdkConfig> {
        let config = match self {
            Where::Emulator(endpoint) => {
                let base = Target { endpoint_url: Some(endpoint.clone()), ..Target::default() };
                let mut target = base.for_environment(&env.name, &env.account, "xtask-pipeline")?;
                target.region.get_or_insert_with(|| "us-east-1".into());
                aws_target::load_with(&target, aws_config::defaults(BehaviorVersion::latest()).test_credentials())
                    .await?
            }
            Where::Aws => {
                aws_target::load_environment(&Target::default(), &env.name, &env.account, "xtask-pipeline").await?
            }
        };
        let identity = aws_target::identity(&config)
            .await
            .with_context(|| format!("who deploys `{}`? check the credentials (or the role it assumes)", env.name))?;
        progress.stage(&format!("{}: {identity}", env.name));
        if let Where::Emulator(_) = self {
            crate::embedded::bootstrap(&aws_target::s3(&config, None), &env.artifact_bucket).await?;
        }
        Ok(config)
    }
}

/// `[deploy]`'s environment `name`.
pub fn environment(context: &StageContext, name: &str) -> anyhow::Result<Environment> {
    let config = context.required_config()?;
    Ok(DeploySettings::from_config(config)?.environment(config, name)?)
}

/// The deploy of one environment: `stack_deployer::run_stage`, then, when there is a
/// `[publish]`, `frontend_publisher::run_stage`, as the Deploy buildspecs run both binaries.
/// Both record their own steps (and skip, with why, what did not change). `Ok(false)` when a
/// stack or the publish failed or was refused.
pub async fn deploy(
    context: &StageContext,
    run: &RunDir,
    store: &dyn Store,
    target: &Where,
    env_name: &str,
    progress: &Progress,
) -> anyhow::Result<bool> {
    let (env, config) = match async { anyhow::Ok(environment(context, env_name)?) }.await {
        Ok(env) => match target.config(&env, progress).await {
            Ok(config) => (env, config),
            Err(error) => {
                stack_deployer::stage::record_failure(context, run, store, env_name, error.as_ref())?;
                return Err(error);
            }
        },
        Err(error) => {
            stack_deployer::stage::record_failure(context, run, store, env_name, error.as_ref())?;
            return Err(error);
        }
    };
    let clients = stack_deployer::Clients {
        s3: aws_target::s3(&config, None),
        cloudformation: aws_target::cloudformation(&config, None),
        lambda: aws_target::lambda(&config, None),
    };
    let options = stack_deployer::StageOptions {
        environment: env.name.clone(),
        only: Vec::new(),
        no_execute: false,
        recreate_failed: false,
        first_poll: None,
        cfn_role_arn: None,
        cancel: Some(run_state::cli::cancel_flag()),
    };
    let lookup = |name: &str| std::env::var(name).ok();
    let on_event = |event: stack_deployer::Event| {
        if let stack_deployer::Event::Done { stack, outcome } = event {
            progress.stage(&format!("deploy {env_name}: {stack}: {}", run_state::redact::redact(&outcome.to_string())));
        }
    };
    let report = stack_deployer::run_stage(context, run, store, &clients, &options, &lookup, &on_event).await?;
    let mut passed = report.exit_code() == 0;
    if PublishConfig::from_config(context.required_config()?)?.is_some() {
        let cloudfront = aws_target::cloudfront(&config, None);
        let clients = frontend_publisher::Clients { s3: &clients.s3, cloudfront: Some(&cloudfront) };
        let options = frontend_publisher::StageOptions { environment: env.name.clone(), ..Default::default() };
        let cancel = run_state::cli::cancel_flag();
        match frontend_publisher::run_stage(context, run, store, clients, &options, Some(cancel), &|_| {}).await {
            Ok(summary) => progress.stage(&format!("publish {env_name}: {}", summary.line())),
            Err(error) => {
                progress.stage(&format!("publish {env_name}: {}", run_state::error_chain(&error)));
                passed = false;
            }
        }
    }
    Ok(passed)
}

/// The publisher's site check against the site deployed to `env_name`:
/// `frontend_publisher::check_stage`, which records the publish component's `dast` step as
/// `frontend-publisher check` does (passed with the count of findings, or failed with the
/// errors). Reaching the account is part of the check: a failure there is recorded too.
pub async fn site_check(
    context: &StageContext,
    run: &RunDir,
    store: &dyn Store,
    target: &Where,
    env_name: &str,
    commit: &str,
    progress: &Progress,
) -> anyhow::Result<bool> {
    let config = context.required_config()?;
    let Some(publish) = PublishConfig::from_config(config)? else { return Ok(true) };
    let sdk = match async { target.config(&environment(context, env_name)?, progress).await }.await {
        Ok(sdk) => sdk,
        Err(error) => {
            let mut record = StepRecord::new(&run.run_id, commit, &publish.component, Step::Dast, Status::Failed);
            record.ended_at = Some(SystemTime::now());
            record.details.error = Some(format!("{error:#}"));
            store.record(&record)?;
            progress.stage(&format!("site check {env_name}: {error:#}"));
            return Err(error);
        }
    };
    let s3 = aws_target::s3(&sdk, None);
    let checked = frontend_publisher::check_stage(context, run, store, &s3, env_name).await;
    let line = match &checked {
        Ok(frontend_publisher::SiteCheck::Skipped(reason)) => format!("skipped: {reason}"),
        Ok(checked) => {
            let errors = checked.findings().iter().filter(|f| f.severity == validate::Severity::Error).count();
            format!("{} finding(s), {errors} error(s)", checked.findings().len())
        }
        Err(error) => run_state::error_chain(error),
    };
    progress.stage(&format!("site check {env_name}: {line}"));
    Ok(checked?.passed())
}

/// What was decided about production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody has answered yet: the run stops here (`--resume RUN_ID --approve` continues it).
    Waiting,
    /// Approved by this person, this way (`--approve`, the prompt).
    Approved { by: String, how: &'static str },
    /// Refused by this person, this way (`--refuse`, the prompt).
    Refused { by: String, how: &'static str },
}

/// Records the run's `approval` step through `status_report::approval`: pending while waiting,
/// passed or failed with who decided, how (`--approve`, `--refuse`, the prompt) as the comment,
/// and when.
/// `digest` is what production will receive as the approver is shown it: the approval covers
/// exactly that, and the prod deploy refuses anything changed since.
pub fn record_approval(
    store: &dyn Store,
    run_id: &str,
    commit: &str,
    decision: &Decision,
    digest: run_state::ReleaseDigest,
) -> anyhow::Result<()> {
    use status_report::approval;
    match decision {
        Decision::Waiting => {
            let summary =
                format!("waiting for approval: `cargo xtask pipeline --resume {run_id} --approve` (or --refuse)");
            approval::request_covering(store, run_id, commit, &summary, Some(digest))?;
        }
        Decision::Approved { by, how } => {
            // A resumed run's approval covers what its request showed (carried over).
            let records = store.run(run_id)?;
            let requested = records.iter().any(|r| r.step == run_state::Step::Approval && r.details.digest.is_some());
            let comment = format!("approved with {how}");
            if requested {
                approval::approve(store, run_id, by, Some(&comment))?;
            } else {
                approval::approve_covering(store, run_id, by, Some(&comment), digest)?;
            }
        }
        Decision::Refused { by, how } => {
            approval::refuse(store, run_id, by, Some(&format!("refused with {how}")))?;
        }
    }
    Ok(())
}

/// Who answers: `--approver`, else the user name, else the repository's git identity.
pub fn approver(given: Option<&str>, repo: &std::path::Path) -> String {
    let git = |key: &str| {
        let out = std::process::Command::new("git").arg("-C").arg(repo).args(["config", key]).output().ok()?;
        let value = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !value.is_empty()).then_some(value)
    };
    given
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .or_else(|| git("user.email"))
        .or_else(|| git("user.name"))
        .unwrap_or_else(|| "unknown".into())
}

/// Whether a person can be asked (stdin and stderr are a terminal).
pub fn can_prompt() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Shows what production will receive and asks; `true` for yes.
#[allow(clippy::print_stderr)]
pub fn prompt(what: &str) -> anyhow::Result<bool> {
    eprintln!("\nProduction will receive:\n{what}");
    loop {
        eprint!("Deploy this to production? [yes/no] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer)? == 0 {
            return Ok(false);
        }
        match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "n" | "no" => return Ok(false),
            _ => eprintln!("answer yes or no"),
        }
    }
}

/// The stack plan `stack-deployer --env ENV` would make for this run (before its deploy decision).
fn stack_plan(context: &StageContext, run: &RunDir, env: &str) -> Result<stack_deployer::Plan, stack_deployer::Error> {
    let options = stack_deployer::StageOptions::new(env);
    stack_deployer::plan_stage(context, run, &options, None, &env_lookup).map(|(_, plan)| plan)
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The configured site as it is in dist, when there is a `[publish]` section.
fn site(
    context: &StageContext,
) -> Option<(PublishConfig, Result<frontend_publisher::Site, frontend_publisher::Error>)> {
    let publish = context.required_config().ok().and_then(|c| PublishConfig::from_config(c).ok().flatten())?;
    let site = frontend_publisher::read_site(&publish, &context.root.join(&publish.dist), Vec::new());
    Some((publish, site))
}

/// What the prod deploy would do, as the approval prompt shows it (the stack plan, as
/// `stack-deployer --env prod --dry-run` prints it, and the site's files; what the publish
/// uploads is decided against the bucket once the stacks exist), and the same, part by part
/// ([`run_state::ReleaseDigest`]), for the approval to cover: one plan and one read of the site
/// for both, so the approval covers exactly what was shown. A part that cannot be planned or
/// read is shown as such and left out of the digest, so the deploy that needs it is refused.
pub fn production_view(context: &StageContext, run: &RunDir, env: &str) -> (String, run_state::ReleaseDigest) {
    let mut digest = run_state::ReleaseDigest::default();
    let mut text = match stack_plan(context, run, env) {
        Ok(plan) => {
            digest.extend(plan.digest(&env_lookup));
            plan.describe()
        }
        Err(error) => format!("stacks: cannot plan ({})\n", run_state::error_chain(&error)),
    };
    match site(context) {
        Some((publish, Ok(site))) => {
            text.push_str(&format!("site ({}), {} file(s):\n", publish.dist.display(), site.files.len()));
            for (path, file) in &site.files {
                text.push_str(&format!("  {path} ({})\n", frontend_publisher::human_bytes(file.size)));
            }
            digest.extend(frontend_publisher::site_digest(&publish.component, &site));
        }
        Some((_, Err(error))) => text.push_str(&format!("site: cannot read ({})\n", run_state::error_chain(&error))),
        None => {}
    }
    (text, digest)
}
