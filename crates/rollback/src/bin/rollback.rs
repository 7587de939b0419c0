//! `rollback`: an environment back to an earlier release, without rebuilding anything.

use std::process::ExitCode;

use aws_target::TargetArgs;
use clap::Parser;
use rollback::{AfterCheck, Clients, Outcome, RollbackInputs};
use run_state::StageOutcome;
use run_state::cli::StageArgs;

/// Puts an environment back to an earlier release (`status-report releases --env E` lists
/// them): each stack through one change set to the release's template and parameters, each
/// function's code from the release's zip (verified by CodeSha256), the site's files, runtime
/// config and manifest with one invalidation. The plan is printed before anything changes.
/// Recorded as a run of its own; the environment's success mark moves back with it.
///
/// Exit codes: 0 rolled back (or waiting for approval, or a dry run), 1 the rollback failed
/// while applying, 2 bad input (an unknown or expired release, a lock held by a deploy, no
/// approval, the config), 3 a stack in a state that cannot be updated.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    choice: rollback::cli::Choice,
    /// Rebuild the environment's releases in the store from the artifact bucket's
    /// `releases/ENV/` objects (a lost store; a file store that holds one execution's releases
    /// only), then stop [default BUCKET: the environment's artifact bucket].
    #[arg(
        long,
        value_name = "BUCKET",
        num_args = 0..=1,
        default_missing_value = "",
        conflicts_with_all = ["to", "steps", "resume", "dry_run"]
    )]
    rebuild_from: Option<String>,
    /// After a run's post-deploy checks (CodeBuild's E2E and DeployProd stages, on failure):
    /// when a check of the run failed (e2e, the environment's site check) that the environment's
    /// `rollback_on` lists, roll the environment back to the release before the run's, recorded
    /// in both runs; otherwise say why not and change nothing. Exit 0 either way: the failed
    /// check keeps the run red.
    #[arg(long, conflicts_with_all = ["to", "steps", "resume", "dry_run", "emergency", "rebuild_from"])]
    after_failed_check: bool,
    /// The run whose checks `--after-failed-check` reads [default: the newest run].
    #[arg(long, value_name = "RUN", requires = "after_failed_check")]
    run: Option<String>,
    /// The role CloudFormation acts as on the rollback's change sets, replacing
    /// [deploy.environments.NAME] cfn_role_arn.
    #[arg(long, value_name = "ARN")]
    cfn_role_arn: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_state::cli::main_with_code("rollback", || run(args))
}

/// What the binary did.
enum Done {
    /// `--rebuild-from`: how many releases.
    Rebuilt(usize),
    /// `--after-failed-check` for this run: what it did.
    Checked(String, Result<AfterCheck, rollback::Error>),
    /// A rollback.
    Rollback(Box<Result<Outcome, rollback::Error>>),
}

#[allow(clippy::print_stderr)]
fn run(args: Args) -> anyhow::Result<u8> {
    let context = args.stage.context_on(&args.target.target())?;
    let config = context.required_config()?;
    let env = args.choice.environment.as_str();
    let account = aws_target::Account::from_config(config, env)?;
    let target = args.target.target().for_environment(env, &account, "rollback")?;
    let store = context.store()?;
    let mut options = args.choice.options();
    options.cfn_role_arn = args.cfn_role_arn.clone();
    let failed_run = match (&args.run, args.after_failed_check) {
        (Some(run), _) => Some(run.clone()),
        (None, true) => Some(context.run_dir(None)?.run_id),
        (None, false) => None,
    };
    let rebuild_from = match args.rebuild_from.as_deref() {
        Some("") => {
            Some(stack_deployer::DeploySettings::from_config(config)?.environment(config, env)?.artifact_bucket)
        }
        other => other.map(str::to_owned),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let done = runtime.block_on(async {
        let config = aws_target::load(&target).await?;
        let clients = Clients {
            s3: aws_target::s3(&config, None),
            cloudformation: aws_target::cloudformation(&config, None),
            lambda: aws_target::lambda(&config, None),
            cloudfront: Some(aws_target::cloudfront(&config, None)),
        };
        if let Some(bucket) = &rebuild_from {
            return anyhow::Ok(Done::Rebuilt(rollback::rebuild_store(&clients.s3, bucket, env, &store).await?));
        }
        // The stage's inputs, built once (a rebuild is no stage: Ctrl-C ends it at once): the
        // cancel flag is set by Ctrl-C or SIGTERM.
        let inputs = RollbackInputs::new(&context, &*store, run_state::cli::cancel_flag());
        let on_event = |e| eprint!("{}", rollback::cli::render(e).unwrap_or_default());
        if let Some(run_id) = failed_run {
            let role = options.cfn_role_arn.clone();
            let after = rollback::after_failed_check(&inputs, &clients, env, &run_id, role, &on_event).await;
            return anyhow::Ok(Done::Checked(run_id, after));
        }
        anyhow::Ok(Done::Rollback(Box::new(rollback::run_rollback(&inputs, &clients, &options, &on_event).await)))
    })?;
    report(env, done)
}

/// Prints what was done; the exit code.
fn report(env: &str, done: Done) -> anyhow::Result<u8> {
    let outcome = match done {
        Done::Rebuilt(count) => {
            run_state::cli::print(&format!("{count} release(s) of `{env}` rebuilt in the store\n"))?;
            return Ok(0);
        }
        Done::Checked(run_id, Ok(done)) => {
            run_state::cli::print(&format!("{}\n", done.line(env, &run_id)))?;
            return Ok(done.exit_code());
        }
        Done::Checked(_, Err(error)) => Err(error),
        Done::Rollback(outcome) => *outcome,
    };
    match outcome {
        Ok(outcome) => {
            match &outcome {
                Outcome::DryRun(_) => {}
                Outcome::AwaitingApproval { run_id, .. } => run_state::cli::print(&format!(
                    "run {run_id}: the rollback of `{env}` waits for approval: `status-report approve --run {run_id} --by NAME`, then `rollback --env {env} --resume {run_id}`\n"
                ))?,
                Outcome::RolledBack { run_id, release, .. } => {
                    run_state::cli::print(&format!("run {run_id}: `{env}` runs release {}\n", release.line()))?
                }
            }
            Ok(outcome.exit_code())
        }
        Err(error) => {
            let code = error.exit_code();
            run_state::cli::print_error("rollback", &error.into());
            Ok(code)
        }
    }
}
