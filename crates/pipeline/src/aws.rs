//! The AWS-facing stages as the pipeline calls them: each builds the clients its crate's binary
//! builds (through aws-target: the environment's region, its role assumed) and calls that
//! crate's one stage function with the same inputs.

use aws_config::{BehaviorVersion, SdkConfig};
use frontend_publisher::PublishConfig;
use run_state::{StageContext, StageOutcome};
use stack_deployer::{DeploySettings, Environment};

use crate::{Error, Event, Inputs};

/// Where the deploys go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An emulator at this endpoint, with test credentials (never the caller's).
    Emulator(String),
    /// AWS through the ordinary credential chain.
    Aws,
}

impl Target {
    /// The SDK config of one environment: its region, its role assumed, through
    /// [`aws_target::load_environment`] as every binary does. Who it reaches is reported before
    /// anything changes; in an emulator, the environment's artifact bucket is created (the
    /// pipeline's own stack makes it in AWS).
    pub async fn config(&self, env: &Environment, on_event: &(dyn Fn(Event<'_>) + Sync)) -> Result<SdkConfig, Error> {
        let identity_error = |source| Error::Identity { environment: env.name.clone(), source };
        let config = match self {
            Target::Emulator(endpoint) => {
                let base = aws_target::Target { endpoint_url: Some(endpoint.clone()), ..aws_target::Target::default() };
                let mut target = base.for_environment(&env.name, &env.account, "pipeline").map_err(identity_error)?;
                target.region.get_or_insert_with(|| "us-east-1".into());
                aws_target::load_with(&target, aws_config::defaults(BehaviorVersion::latest()).test_credentials())
                    .await
                    .map_err(identity_error)?
            }
            Target::Aws => {
                aws_target::load_environment(&aws_target::Target::default(), &env.name, &env.account, "pipeline")
                    .await
                    .map_err(identity_error)?
            }
        };
        let identity = aws_target::identity(&config).await.map_err(identity_error)?;
        on_event(Event::Line(format!("{}: {identity}", env.name)));
        if let Target::Emulator(_) = self {
            create_bucket(&aws_target::s3(&config, None), &env.artifact_bucket).await?;
        }
        Ok(config)
    }
}

/// The SDK config of the emulator at `endpoint`: test credentials (never the caller's), `us-east-1`.
pub async fn emulator_config(endpoint: &str) -> Result<SdkConfig, Error> {
    let target = aws_target::Target {
        endpoint_url: Some(endpoint.into()),
        region: Some("us-east-1".into()),
        ..aws_target::Target::default()
    };
    let loader = aws_config::defaults(BehaviorVersion::latest()).test_credentials();
    aws_target::load_with(&target, loader)
        .await
        .map_err(|source| Error::Identity { environment: format!("the emulator at {endpoint}"), source })
}

/// Creates a bucket in an emulator (already there is fine).
async fn create_bucket(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<(), Error> {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    match s3.create_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(error) if matches!(error.code(), Some("BucketAlreadyOwnedByYou")) => Ok(()),
        Err(error) => {
            Err(Error::Aws { what: format!("creating bucket {bucket} in the emulator"), source: error.into() })
        }
    }
}

/// Each environment's SDK config, made once per run: the deploy and the site check of one
/// environment reach its account (the role assumed, who it is said, the emulator's bucket
/// made) once, not once each.
#[derive(Default)]
pub(crate) struct Configs(std::sync::Mutex<std::collections::BTreeMap<String, SdkConfig>>);

impl Configs {
    async fn get(
        &self,
        context: &StageContext,
        target: &Target,
        env_name: &str,
        on_event: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<SdkConfig, Error> {
        if let Some(config) = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(env_name) {
            return Ok(config.clone());
        }
        let config = target.config(&environment(context, env_name)?, on_event).await?;
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(env_name.to_string(), config.clone());
        Ok(config)
    }
}

/// `[deploy]`'s environment `name`.
pub(crate) fn environment(context: &StageContext, name: &str) -> Result<Environment, Error> {
    let config = context.required_config()?;
    Ok(DeploySettings::from_config(config)?.environment(config, name)?)
}

/// The process environment, for parameters taken from it (`{ env = "NAME" }`).
pub(crate) fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The deploy of one environment: `stack_deployer::run_stage`, then, when there is a
/// `[publish]`, `frontend_publisher::run_stage`, as the Deploy buildspecs run both binaries.
/// Both record their own steps (and skip, with why, what did not change). `Ok(false)` when a
/// stack or the publish failed or was refused.
pub(crate) async fn deploy(
    inputs: &Inputs<'_>,
    configs: &Configs,
    target: &Target,
    env_name: &str,
) -> Result<bool, Error> {
    let Inputs { context, run, store, on_event, .. } = *inputs;
    let reached = configs.get(context, target, env_name, on_event).await;
    let config = match reached {
        Ok(config) => config,
        Err(error) => {
            stack_deployer::stage::record_failure(context, run, store, env_name, &error)?;
            return Err(error);
        }
    };
    let clients = stack_deployer::Clients {
        s3: aws_target::s3(&config, None),
        cloudformation: aws_target::cloudformation(&config, None),
        lambda: aws_target::lambda(&config, None),
    };
    let stage = inputs.stage();
    let options = stack_deployer::StageOptions::new(env_name);
    let on_stack = |event: stack_deployer::Event| {
        if let stack_deployer::Event::Done { stack, outcome } = event {
            let outcome = run_state::redact::redact(&outcome.to_string());
            on_event(Event::Line(format!("deploy {env_name}: {stack}: {outcome}")));
        }
    };
    let report = stack_deployer::run_stage(&stage, &clients, &options, &env_lookup, &on_stack).await?;
    let mut passed = report.exit_code() == 0;
    if PublishConfig::from_config(context.required_config()?)?.is_some() {
        let cloudfront = aws_target::cloudfront(&config, None);
        let clients = frontend_publisher::Clients { s3: &clients.s3, cloudfront: Some(&cloudfront) };
        let options = frontend_publisher::StageOptions { environment: env_name.to_string(), ..Default::default() };
        match frontend_publisher::run_stage(&stage, clients, &options, &|_| {}).await {
            Ok(summary) => on_event(Event::Line(format!("publish {env_name}: {}", summary.line()))),
            Err(error) => {
                on_event(Event::Line(format!("publish {env_name}: {}", run_state::error_chain(&error))));
                passed = false;
            }
        }
    }
    Ok(passed)
}

/// The publisher's site check against the site deployed to `env_name`:
/// `frontend_publisher::check_stage`, which records the site component's `dast` step as
/// `frontend-publisher check` does. Reaching the account is part of the check: a failure there
/// is recorded too. Whether the check let the site through.
pub(crate) async fn site_check(
    inputs: &Inputs<'_>,
    configs: &Configs,
    target: &Target,
    env_name: &str,
) -> Result<bool, Error> {
    let Inputs { context, run, store, diff, on_event, .. } = *inputs;
    let Some(publish) = PublishConfig::from_config(context.required_config()?)? else { return Ok(true) };
    let sdk = match configs.get(context, target, env_name, on_event).await {
        Ok(sdk) => sdk,
        Err(error) => {
            let mut record = run_state::StepRecord::new(
                &run.run_id,
                &diff.head,
                &publish.component,
                inputs.policy.check_step(env_name),
                run_state::Status::Failed,
            );
            record.ended_at = Some(std::time::SystemTime::now());
            record.details.error = Some(run_state::error_chain(&error));
            store.record(&record)?;
            return Err(error);
        }
    };
    let s3 = aws_target::s3(&sdk, None);
    let checked = frontend_publisher::check_stage(&inputs.stage(), &s3, env_name).await;
    let line = match &checked {
        Ok(frontend_publisher::SiteCheck::Skipped(reason)) => format!("skipped: {reason}"),
        Ok(checked) => {
            let errors = checked.findings().iter().filter(|f| f.severity == validate::Severity::Error).count();
            format!("{} finding(s), {errors} error(s)", checked.findings().len())
        }
        Err(error) => run_state::error_chain(error),
    };
    on_event(Event::Line(format!("site check {env_name}: {line}")));
    Ok(checked?.passed())
}

/// After a post-deploy check of `env_name` failed: [`rollback::after_failed_check`], as
/// `rollback --after-failed-check` runs it in CodeBuild (the environment goes back to its
/// previous release when its `rollback_on` lists the check; both runs record it). What it did,
/// in one line.
pub(crate) async fn after_failed_check(
    inputs: &Inputs<'_>,
    configs: &Configs,
    target: &Target,
    env_name: &str,
) -> Result<(bool, String), Error> {
    let Inputs { context, run, on_event, .. } = *inputs;
    let config = configs.get(context, target, env_name, on_event).await?;
    let clients = rollback::Clients {
        s3: aws_target::s3(&config, None),
        cloudformation: aws_target::cloudformation(&config, None),
        lambda: aws_target::lambda(&config, None),
        cloudfront: Some(aws_target::cloudfront(&config, None)),
    };
    let on_rollback = |event: rollback::Event| {
        if let rollback::Event::Done(line) = event {
            on_event(Event::Line(format!("rollback {env_name}: {line}")));
        }
    };
    // The rollback is a run of its own: it takes the run's inputs without the run.
    let rollback_inputs = rollback::RollbackInputs::from(&inputs.stage());
    let done =
        rollback::after_failed_check(&rollback_inputs, &clients, env_name, &run.run_id, None, &on_rollback).await?;
    Ok((done.rolled_back(), done.line(env_name, &run.run_id)))
}
