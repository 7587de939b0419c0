//! `rollback`: an environment back to an earlier release, without rebuilding anything.

use std::process::ExitCode;

use aws_target::TargetArgs;
use clap::Parser;
use rollback::{Clients, Outcome};
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
    /// `releases/ENV/` objects (a lost store), then stop.
    #[arg(long, value_name = "BUCKET", conflicts_with_all = ["to", "steps", "resume", "dry_run"])]
    rebuild_from: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_state::cli::main_with_code("rollback", || run(args))
}

#[allow(clippy::print_stderr)]
fn run(args: Args) -> anyhow::Result<u8> {
    let context = args.stage.context_on(&args.target.target())?;
    let config = context.required_config()?;
    let account = aws_target::Account::from_config(config, &args.choice.environment)?;
    let target = args.target.target().for_environment(&args.choice.environment, &account, "rollback")?;
    let store = context.store()?;
    let options = args.choice.options();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        let config = aws_target::load(&target).await?;
        let clients = Clients {
            s3: aws_target::s3(&config, None),
            cloudformation: aws_target::cloudformation(&config, None),
            lambda: aws_target::lambda(&config, None),
            cloudfront: Some(aws_target::cloudfront(&config, None)),
        };
        if let Some(bucket) = &args.rebuild_from {
            let count = rollback::rebuild_store(&clients.s3, bucket, &args.choice.environment, &store).await?;
            return anyhow::Ok(Err(count));
        }
        anyhow::Ok(Ok(rollback::run_rollback(&context, &store, &clients, &options, &|e| {
            eprint!("{}", rollback::cli::render(e).unwrap_or_default())
        })
        .await))
    })?;
    let outcome = match outcome {
        Err(count) => {
            run_state::cli::print(&format!(
                "{count} release(s) of `{}` rebuilt in the store\n",
                args.choice.environment
            ))?;
            return Ok(0);
        }
        Ok(outcome) => outcome,
    };
    match outcome {
        Ok(Outcome::DryRun(_)) => Ok(0),
        Ok(Outcome::AwaitingApproval { run_id, .. }) => {
            run_state::cli::print(&format!(
                "run {run_id}: the rollback of `{env}` waits for approval: `status-report approve --run {run_id} --by NAME`, then `rollback --env {env} --resume {run_id}`\n",
                env = args.choice.environment
            ))?;
            Ok(0)
        }
        Ok(Outcome::RolledBack { run_id, release, .. }) => {
            run_state::cli::print(&format!(
                "run {run_id}: `{}` runs release {}\n",
                args.choice.environment,
                release.line()
            ))?;
            Ok(0)
        }
        Err(error) => {
            let code = error.exit_code();
            run_state::cli::print_error("rollback", &error.into());
            Ok(code)
        }
    }
}
