//! `stack-deployer`: deploys the CloudFormation stacks of `[deploy]` through change sets.

use std::path::PathBuf;
use std::process::ExitCode;

use aws_target::TargetArgs;
use clap::Parser;
use run_state::cli::StageArgs;
use run_state::{StageInputs, StageOutcome};
use stack_deployer::{Clients, Event, StageOptions};

/// Deploys the stacks of [deploy] in pipeline.toml to one environment: artifacts uploaded under
/// content-addressed keys, unchanged stacks left alone, one change set per changed stack,
/// previewed, executed and watched, with the root cause of a failure; the outputs go to the
/// run's stack-outputs.json and the run's deploy step is recorded per component.
///
/// Before anything changes, it asks the deploy decision ([gate]): a component whose own
/// required steps did not pass is not deployed (recorded skipped, with why); a promoted
/// environment ([gate.environments.NAME] after/approval) not earned is refused as a whole.
///
/// Exit codes: 0 deployed or unchanged (refused components included: the step that refused
/// them already failed), 1 a deploy failed or rolled back, or the environment was refused
/// (recorded failed, nothing changed), 2 usage, configuration, credentials or a missing input
/// (run the stage it names first), 3 blocked by a stack's state, 4 timed out while still in progress.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// The environment ([deploy.environments.NAME]).
    #[arg(long = "env", value_name = "NAME")]
    environment: String,
    /// The run folder [default: the latest run].
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Stop after each change set's preview and leave the change set for review.
    #[arg(long)]
    no_execute: bool,
    /// Record the run waiting for approval of this environment, with what it would receive
    /// (each stack and package, digested): the approval then covers exactly that. Changes
    /// nothing and reads nothing from AWS (CodeBuild's Status stage, before the manual approval).
    #[arg(long, conflicts_with_all = ["dry_run", "no_execute"])]
    request_approval: bool,
    /// Delete and create again a stack left ROLLBACK_COMPLETE by a failed first create.
    #[arg(long)]
    recreate_failed: bool,
    /// Only this stack (repeatable), deployed whether or not its components changed.
    #[arg(long = "only", value_name = "STACK")]
    only: Vec<String>,
    /// The role CloudFormation acts as (RoleARN of every change set), in the environment's
    /// account; replaces [deploy.environments.NAME] cfn_role_arn.
    #[arg(long, value_name = "ARN", value_parser = role_arn)]
    cfn_role_arn: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn role_arn(value: &str) -> Result<String, String> {
    match aws_target::role_account(value) {
        Some(_) => Ok(value.to_owned()),
        None => Err(format!("`{value}` is not a role ARN (like `arn:aws:iam::111111111111:role/cfn-exec`)")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    run_state::cli::main_with_code("stack-deployer", || run(args))
}

#[allow(clippy::print_stderr)]
fn render(event: Event) {
    match event {
        Event::Artifact { key, uploaded: true } => eprintln!("uploaded {key}"),
        Event::Artifact { key, uploaded: false } => eprintln!("already there: {key}"),
        Event::Stack { stack, message } => eprintln!("{stack}: {message}"),
        Event::Preview { stack, change_set, changes } => {
            eprintln!("{stack}: change set {change_set}: {} change(s)", changes.len());
            for change in changes {
                eprintln!("  {change}");
            }
        }
        Event::Resource { path, status, reason, resource_type, .. } => match reason {
            // CloudFormation's reasons can quote property values: redacted like every log.
            Some(reason) if !reason.is_empty() => {
                eprintln!("{path} ({resource_type}) {status}: {}", run_state::redact::redact(&reason))
            }
            _ => eprintln!("{path} ({resource_type}) {status}"),
        },
        Event::Code { function, physical, updated: true } => eprintln!("{function}: code updated ({physical})"),
        Event::Code { function, updated: false, .. } => eprintln!("{function}: code already current"),
        Event::Done { stack, outcome } => eprintln!("{stack}: {}", run_state::redact::redact(&outcome.to_string())),
    }
}

#[allow(clippy::print_stderr)]
fn run(args: Args) -> anyhow::Result<u8> {
    let context = args.stage.context_on(&args.target.target())?;
    stack_deployer::check_config(context.required_config()?)?;
    let run = context.run_dir(args.run_dir.as_deref())?;
    let options = StageOptions {
        environment: args.environment.clone(),
        only: args.only.clone(),
        no_execute: args.no_execute,
        recreate_failed: args.recreate_failed,
        first_poll: None,
        cfn_role_arn: args.cfn_role_arn.clone(),
    };
    let lookup = |name: &str| std::env::var(name).ok();
    if args.request_approval {
        let store = context.store()?;
        let digest = stack_deployer::stage::request_approval(&context, &run, &store, &options, &lookup)?;
        run_state::cli::print(&format!(
            "run {}: waiting for approval of `{}`, covering {} part(s)\n",
            run.run_id,
            args.environment,
            digest.parts.len()
        ))?;
        return Ok(0);
    }
    if args.dry_run {
        return dry_run(&context, &run, &options, &lookup);
    }
    let store = context.store()?;
    // The stage's inputs, built once: the cancel flag is set by Ctrl-C or SIGTERM.
    let inputs = StageInputs::new(&context, &run, &*store, run_state::cli::cancel_flag());
    // What the stage cannot record itself (the environment's target, the credentials) is
    // recorded here, so every refusal shows in the store.
    let failed = |error: anyhow::Error| -> anyhow::Error {
        let _ = stack_deployer::stage::record_failure(&context, &run, &*store, &args.environment, error.as_ref());
        error
    };
    let env = environment(&context, &args.environment).map_err(|e| failed(e.into()))?;
    let mut target = args
        .target
        .target()
        .for_environment(&env.name, &env.account, "stack-deployer")
        .map_err(|e| failed(e.into()))?;
    // CloudTrail names the stage, the environment and the run: stack-deployer-prod-RUN.
    if let Some(role) = &mut target.assume_role {
        role.session_name = aws_target::session_name(&role.session_name, &run.run_id);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let config = aws_target::load(&target).await.map_err(|e| failed(e.into()))?;
        if !aws_target::has_custom_endpoint(&config) {
            // A real account: say which before anything changes.
            let identity = aws_target::identity(&config).await.map_err(|e| failed(e.into()))?;
            eprintln!("stack-deployer: deploying `{}` to {identity}", env.name);
        }
        let clients = Clients {
            s3: aws_target::s3(&config, None),
            cloudformation: aws_target::cloudformation(&config, None),
            lambda: aws_target::lambda(&config, None),
        };
        let report = stack_deployer::run_stage(&inputs, &clients, &options, &lookup, &|e| render(e)).await;
        anyhow::Ok(report)
    })?;
    let report = match report {
        Ok(report) => report,
        Err(error @ stack_deployer::Error::Refused { .. }) => {
            run_state::cli::print_error("stack-deployer", &error.into());
            return Ok(1);
        }
        Err(error) => return Err(error.into()),
    };
    if args.json {
        run_state::cli::print(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        run_state::cli::print(&report.summary())?;
    }
    Ok(report.exit_code())
}

/// `--dry-run`: the deploy decision and the plan, printed; nothing changed, nothing recorded.
fn dry_run(
    context: &run_state::StageContext,
    run: &run_state::RunDir,
    options: &StageOptions,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<u8> {
    // A dry run creates no store: with none yet, the run has no records.
    let decision = match context.existing_store()? {
        Some(store) => stack_deployer::stage::deploy_decision(context, run, &store, &options.environment)?,
        None => {
            let diff: source_diff::DiffReport = run.read_json(run_state::RunFile::Diff)?;
            let policy = gate::GatePolicy::from_config(context.required_config()?)?;
            let required = gate::Requirements::from_diff(&diff);
            gate::decide_deploy(&[], Some(&required), &policy, &options.environment)
        }
    };
    let (_, plan) = stack_deployer::plan_stage(context, run, options, Some(&decision), lookup)?;
    run_state::cli::print(&format!("{}{}", decision.describe(), plan.describe()))?;
    Ok(if decision.refused.is_empty() { 0 } else { 1 })
}

fn environment(
    context: &run_state::StageContext,
    name: &str,
) -> Result<stack_deployer::Environment, stack_deployer::Error> {
    let config = context.required_config()?;
    Ok(stack_deployer::DeploySettings::from_config(config)?.environment(config, name)?)
}
