//! `cargo xtask rollback`: the `rollback` binary's library function (`rollback::run_rollback`)
//! on a monorepo whose deploys went to its own emulator (or `--endpoint-url`, or AWS), the
//! environment reached as the pipeline reaches it.

use anyhow::{Context, Result};
use rollback::{Clients, Outcome, RollbackInputs};
use run_state::cli::StageArgs;

/// The flags of `cargo xtask rollback` (those of the `rollback` binary, and where the
/// environment is, as `cargo xtask pipeline` takes it).
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    choice: rollback::cli::Choice,
    /// The emulator the deploys went to [default: the monorepo's own, kept by `cargo xtask pipeline`].
    #[arg(long, value_name = "URL", conflicts_with = "aws")]
    endpoint_url: Option<String>,
    /// Roll back in AWS (the ordinary credential chain) rather than an emulator.
    #[arg(long)]
    aws: bool,
}

/// Runs the rollback; `Ok(false)` when it failed (printed, exit 1).
#[allow(clippy::print_stdout, clippy::print_stderr)]
pub fn run(args: &RollbackArgs) -> Result<bool> {
    let context = args.stage.context_on(&aws_target::Target::default())?;
    let config = context.required_config()?;
    let env = stack_deployer::DeploySettings::from_config(config)?.environment(config, &args.choice.environment)?;
    let target = match (&args.endpoint_url, args.aws) {
        (_, true) => pipeline::Target::Aws,
        (Some(url), false) => pipeline::Target::Emulator(url.clone()),
        (None, false) => pipeline::Target::Emulator(crate::embedded::running(&context.state_dir).context(
            "the monorepo's emulator is not running: nothing was deployed to it, or it stopped (pass --endpoint-url, or --aws)",
        )?),
    };
    let store = context.store()?;
    // The rollback's inputs, as the binary builds them: the cancel flag is set by Ctrl-C or SIGTERM.
    let inputs = RollbackInputs::new(&context, &*store, run_state::cli::cancel_flag());
    let options = args.choice.options();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        let config = target.config(&env, &|_| {}).await?;
        let clients = Clients {
            s3: aws_target::s3(&config, None),
            cloudformation: aws_target::cloudformation(&config, None),
            lambda: aws_target::lambda(&config, None),
            cloudfront: Some(aws_target::cloudfront(&config, None)),
        };
        anyhow::Ok(
            rollback::run_rollback(&inputs, &clients, &options, &|e| {
                eprint!("{}", rollback::cli::render(e).unwrap_or_default())
            })
            .await,
        )
    })?;
    match outcome {
        Ok(Outcome::DryRun(_)) => Ok(true),
        Ok(Outcome::AwaitingApproval { run_id, .. }) => {
            println!(
                "run {run_id}: the rollback of `{env}` waits for approval: `status-report approve --run {run_id} --by NAME`, then `cargo xtask rollback --env {env} --resume {run_id}`",
                env = args.choice.environment
            );
            Ok(true)
        }
        Ok(Outcome::RolledBack { run_id, release, .. }) => {
            println!("run {run_id}: `{}` runs release {}", args.choice.environment, release.line());
            Ok(true)
        }
        Err(error) if error.exit_code() == 2 => Err(error.into()),
        Err(error) => {
            eprintln!("xtask: {}", run_state::error_chain(&error));
            Ok(false)
        }
    }
}
