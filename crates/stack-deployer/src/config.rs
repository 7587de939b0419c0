//! `[deploy]` in `pipeline.toml`: the artifact bucket, the stacks and the environments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pipeline_config::{ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

/// `[deploy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// The bucket templates and zips are uploaded to (`{env}` is replaced); an environment may
    /// name its own.
    #[serde(default)]
    pub artifact_bucket: Option<Spanned<String>>,
    /// The key prefix of every uploaded object (`{env}` is replaced).
    #[serde(default)]
    pub key_prefix: Option<String>,
    /// How many independent stacks deploy at once (2 when unset).
    #[serde(default)]
    pub parallelism: Option<usize>,
    /// The longest a stack may take to deploy before the deployer stops watching (30m when unset).
    #[serde(default, deserialize_with = "pipeline_config::positive_duration")]
    pub timeout: Option<Duration>,
    /// The longest a change set may take to be created (5m when unset).
    #[serde(default, deserialize_with = "pipeline_config::positive_duration")]
    pub change_set_timeout: Option<Duration>,
    /// How long a stack's lock in the status store holds before another deploy may take it over
    /// (2h when unset).
    #[serde(default, deserialize_with = "pipeline_config::positive_duration")]
    pub lock_ttl: Option<Duration>,
    /// How many releases per environment keep their artifacts from the bucket's lifecycle
    /// rule (1 to 100; 5 when unset): see [`crate::retention`].
    #[serde(default)]
    pub keep_releases: Option<Spanned<usize>>,
    /// How the S3 references of templates (nested `TemplateURL`s, Lambda code keys) map to the
    /// repository's files and packages.
    #[serde(default)]
    pub artifacts: ArtifactSettings,
    /// The stacks, by name.
    #[serde(default)]
    pub stacks: BTreeMap<String, StackSettings>,
    /// Per-environment settings (`dev`, `prod`).
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentSettings>,
}

/// `[deploy.artifacts]`: how a template's S3 references map to the repository. By default a
/// nested stack's `TemplateURL` key maps to the repository file at the key's longest tail that
/// exists (`cfn/db.yaml` of `https://s3.amazonaws.com/${Bucket}/cfn/db.yaml`), and a function's
/// `S3Key` to the function of `[lambda.functions]` that declares it (`template` and `resource`)
/// or is named after the zip (`lambda/api-handler.zip` → `api-handler`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSettings {
    /// S3 key (as the template builds it) → the repository file deployed for it.
    #[serde(default)]
    pub templates: BTreeMap<String, String>,
    /// S3 key of Lambda code → the function of `[lambda.functions]` whose package goes there.
    #[serde(default)]
    pub functions: BTreeMap<String, String>,
    /// Deploy a reference that maps to nothing as it is, with a warning in the plan, instead
    /// of refusing the deploy (for templates and code that another pipeline publishes).
    #[serde(default)]
    pub allow_remote: bool,
}

/// `[deploy.stacks.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSettings {
    /// The template, relative to the monorepo root.
    pub template: Spanned<String>,
    /// The CloudFormation stack name; `{env}` is replaced by the environment.
    pub stack_name: Spanned<String>,
    /// Parameter values.
    #[serde(default)]
    pub parameters: BTreeMap<String, Spanned<ParameterValue>>,
    /// Stack tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The capabilities acknowledged (`CAPABILITY_IAM`, `CAPABILITY_NAMED_IAM`, `CAPABILITY_AUTO_EXPAND`).
    #[serde(default)]
    pub capabilities: Vec<Spanned<String>>,
    /// The components whose change requires this stack (from the run's diff).
    #[serde(default)]
    pub components: Vec<Spanned<String>>,
    /// Stacks deployed before this one (a parameter's `output` adds its stack too).
    #[serde(default)]
    pub depends_on: Vec<Spanned<String>>,
    /// How the template's S3 references are deployed: `rewrite` (the default) or `fixed`.
    #[serde(default)]
    pub artifact_mode: ArtifactMode,
}

/// How a stack's S3 references (nested `TemplateURL`s, Lambda code keys) reach S3.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactMode {
    /// Nested templates rewritten to content-addressed keys (children first), so every change
    /// reaches CloudFormation; Lambda code also uploaded to the key the template reads.
    #[default]
    Rewrite,
    /// The template is deployed as written: each nested template and zip uploaded to exactly
    /// the key the template reads (in the artifact bucket), as the repository's own buildspec
    /// syncs them, and each changed function's code updated from that key.
    Fixed,
}

/// A parameter's value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, expecting = "expected a string, { output = \"STACK.Output\" } or { env = \"VAR\" }")]
pub enum ParameterValue {
    /// Written as is (`{env}` is replaced).
    Literal(String),
    /// Another stack's output: `{ output = "stack.OutputKey" }`.
    Output {
        /// `STACK.OUTPUT`.
        output: String,
    },
    /// An environment variable of the deploying process: `{ env = "VAR" }` (never printed).
    Env {
        /// The variable.
        env: String,
    },
}

/// `[deploy.environments.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSettings {
    /// The region its stacks live in.
    #[serde(default)]
    pub region: Option<String>,
    /// Its own artifact bucket (another account's).
    #[serde(default)]
    pub artifact_bucket: Option<String>,
    /// A role to assume to reach its account.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The role CloudFormation acts as for this environment's stacks (`RoleARN` of every change
    /// set), in the environment's account; otherwise CloudFormation acts as the deployer.
    #[serde(default)]
    pub cfn_role_arn: Option<Spanned<String>>,
    /// The post-deploy checks whose failure rolls the environment back to its previous release:
    /// any of `e2e`, `site-check`, `alarms`.
    #[serde(default)]
    pub rollback_on: Vec<Spanned<String>>,
    /// CloudWatch alarm ARNs (`arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME`, the environment's
    /// account and region, at most 5) passed as rollback triggers on every change set; only with
    /// `"alarms"` in `rollback_on`.
    #[serde(default)]
    pub rollback_alarms: Vec<Spanned<String>>,
    /// How long CloudFormation keeps watching the alarms after a stack's resources are deployed
    /// (`MonitoringTimeInMinutes`, 0 to 180; 0 when unset: only while the stack updates).
    #[serde(default)]
    pub rollback_monitoring_minutes: Option<Spanned<u32>>,
    /// Per-stack overrides.
    #[serde(default)]
    pub stacks: BTreeMap<String, StackOverride>,
}

/// A post-deploy check whose failure rolls an environment back (`rollback_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackOn {
    /// The environment's end-to-end tests (`e2e`).
    E2e,
    /// The deployed site's check (`site-check`).
    SiteCheck,
    /// A CloudWatch alarm of `rollback_alarms` going off while a stack deploys or is monitored
    /// (`alarms`): CloudFormation rolls the stack back and the deploy fails.
    Alarms,
}

impl RollbackOn {
    /// Every check, in the order the config names them.
    pub const ALL: [RollbackOn; 3] = [RollbackOn::E2e, RollbackOn::SiteCheck, RollbackOn::Alarms];

    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackOn::E2e => "e2e",
            RollbackOn::SiteCheck => "site-check",
            RollbackOn::Alarms => "alarms",
        }
    }

    /// The check a config name stands for.
    pub fn parse(name: &str) -> Option<RollbackOn> {
        RollbackOn::ALL.into_iter().find(|on| on.as_str() == name)
    }
}

impl std::fmt::Display for RollbackOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The most rollback triggers CloudFormation takes on one change set.
pub const MAX_ROLLBACK_ALARMS: usize = 5;

/// The longest `MonitoringTimeInMinutes` CloudFormation takes.
pub const MAX_ROLLBACK_MONITORING_MINUTES: u32 = 180;

/// `[deploy.environments.ENV.stacks.NAME]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackOverride {
    /// Another stack name in this environment.
    #[serde(default)]
    pub stack_name: Option<Spanned<String>>,
    /// Parameter values replacing (or adding to) the stack's.
    #[serde(default)]
    pub parameters: BTreeMap<String, Spanned<ParameterValue>>,
}

/// The capabilities CloudFormation knows.
pub const CAPABILITIES: &[&str] = &["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"];

/// One stack as an environment deploys it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    /// Its name under `[deploy.stacks]`.
    pub name: String,
    /// The template path, relative to the monorepo root.
    pub template: String,
    /// The CloudFormation stack name, `{env}` replaced.
    pub stack_name: String,
    /// Parameter values (literals with `{env}` replaced).
    pub parameters: BTreeMap<String, ParameterValue>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Capabilities acknowledged.
    pub capabilities: BTreeSet<String>,
    /// Components that require it.
    pub components: Vec<String>,
    /// Stacks deployed first (written, and those whose outputs it reads).
    pub depends_on: BTreeSet<String>,
    /// How its S3 references are deployed.
    pub artifact_mode: ArtifactMode,
}

/// One environment's deploy, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// `dev`, `prod` …
    pub name: String,
    /// The region, if the config names one (the same as `account.region`).
    pub region: Option<String>,
    /// The account it lives in: its region and the role to assume, for
    /// [`aws_target::Target::for_environment`].
    pub account: aws_target::Account,
    /// The artifact bucket.
    pub artifact_bucket: String,
    /// The role CloudFormation acts as (`RoleARN` on every change set), if the config names one.
    pub cfn_role_arn: Option<String>,
    /// The key prefix (no trailing `/`; may be empty).
    pub key_prefix: String,
    /// How the templates' S3 references map to the repository (`[deploy.artifacts]`).
    pub artifacts: ArtifactSettings,
    /// Stacks in dependency order (dependencies first).
    pub stacks: Vec<StackSpec>,
    /// How many stacks deploy at once.
    pub parallelism: usize,
    /// The longest wait for one stack.
    pub timeout: Duration,
    /// The longest wait for a change set.
    pub change_set_timeout: Duration,
    /// The lock's time to live.
    pub lock_ttl: Duration,
    /// The post-deploy checks whose failure rolls the environment back (`rollback_on`).
    pub rollback_on: BTreeSet<RollbackOn>,
    /// The CloudWatch alarm ARNs every change set carries as rollback triggers (`rollback_alarms`;
    /// empty unless `rollback_on` has `alarms`).
    pub rollback_alarms: Vec<String>,
    /// `MonitoringTimeInMinutes` of every change set's rollback configuration (0 when unset).
    pub rollback_monitoring_minutes: u32,
    /// How many releases per environment keep their artifacts (`[deploy] keep_releases`).
    pub keep_releases: usize,
}

impl DeploySettings {
    /// The section of `pipeline.toml` this crate owns.
    pub const SECTION: &'static str = "deploy";

    /// Parses `[deploy]` of a config read once.
    pub fn from_config(config: &ConfigFile) -> Result<DeploySettings, ConfigError> {
        let settings: DeploySettings = config.section(Self::SECTION)?;
        // Check every environment now, so a mistake in `prod` shows on the first deploy of the
        // environment before it. No name is special: without `[deploy.environments]` the stacks
        // are checked as any environment would see them.
        if settings.environments.is_empty() {
            settings.environment(config, "any")?;
        }
        let mut environments = Vec::new();
        for env in settings.environments.keys() {
            environments.push(settings.environment(config, env)?);
        }
        settings.check_distinct_stacks(config, &environments)?;
        Ok(settings)
    }

    /// The deploy of one environment: names checked, overrides applied, `{env}` replaced,
    /// stacks ordered so dependencies come first.
    pub fn environment(&self, config: &ConfigFile, env: &str) -> Result<Environment, ConfigError> {
        let file = config.path.as_path();
        if self.stacks.is_empty() {
            return Err(ConfigError::file(
                file,
                "deploy.stacks: no stacks; add a [deploy.stacks.NAME] with `template` and `stack_name`",
            ));
        }
        pipeline_config::check_name(env).map_err(|m| ConfigError::file(file, format!("environment: {m}")))?;
        let env_settings = self.environment_settings(file, env)?;
        // The region, the role and its external id: read and checked where every stage reads them.
        let account = aws_target::Account::from_config(config, env)?;
        let cfn_role_arn = cfn_role(config, env, &env_settings, &account)?;
        for name in env_settings.stacks.keys() {
            if !self.stacks.contains_key(name) {
                return Err(ConfigError::file(
                    file,
                    format!(
                        "deploy.environments.{env}.stacks.{name}: no stack `{name}` in [deploy.stacks]; fix the name"
                    ),
                ));
            }
        }
        let (bucket, key_prefix) = self.bucket_and_prefix(config, env, &env_settings)?;
        self.check_artifact_templates(file)?;
        let mut specs = BTreeMap::new();
        for (name, stack) in &self.stacks {
            specs.insert(name.clone(), self.stack_spec(config, env, &env_settings, name, stack)?);
        }
        let stacks = order(file, specs)?;
        check_distinct_names(file, env, &stacks)?;
        let parallelism = self.parallelism.unwrap_or(2);
        if parallelism == 0 || parallelism > 32 {
            return Err(ConfigError::file(file, "deploy.parallelism: write a number from 1 to 32"));
        }
        let keep_releases = self.keep_releases(config)?;
        let timeout = self.timeout.unwrap_or(Duration::from_secs(30 * 60));
        let rollback = rollback_settings(config, env, &env_settings, &account, timeout)?;
        Ok(Environment {
            name: env.to_string(),
            region: account.region.clone(),
            account,
            artifact_bucket: bucket,
            cfn_role_arn,
            key_prefix,
            artifacts: self.artifacts.clone(),
            stacks,
            parallelism,
            timeout,
            change_set_timeout: self.change_set_timeout.unwrap_or(Duration::from_secs(5 * 60)),
            lock_ttl: self.lock_ttl.unwrap_or(Duration::from_secs(2 * 3600)),
            rollback_on: rollback.on,
            rollback_alarms: rollback.alarms,
            rollback_monitoring_minutes: rollback.monitoring_minutes,
            keep_releases,
        })
    }

    /// `[deploy.environments.ENV]`: the environment's own (defaults when the config names no
    /// environment at all; an error naming the others when it names some but not this one).
    fn environment_settings(&self, file: &std::path::Path, env: &str) -> Result<EnvironmentSettings, ConfigError> {
        match self.environments.get(env) {
            Some(settings) => Ok(settings.clone()),
            None if self.environments.is_empty() => Ok(EnvironmentSettings::default()),
            None => Err(ConfigError::file(
                file,
                format!(
                    "deploy.environments: no environment `{env}`; add [deploy.environments.{env}] or use one of: {}",
                    self.environments.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// The environment's artifact bucket (its own, else `[deploy]`'s, `{env}` replaced) and the
    /// key prefix, both checked.
    fn bucket_and_prefix(
        &self,
        config: &ConfigFile,
        env: &str,
        env_settings: &EnvironmentSettings,
    ) -> Result<(String, String), ConfigError> {
        let file = config.path.as_path();
        let bucket = match (&env_settings.artifact_bucket, &self.artifact_bucket) {
            (Some(bucket), _) => bucket.replace("{env}", env),
            (None, Some(bucket)) => bucket.get_ref().replace("{env}", env),
            (None, None) => {
                return Err(ConfigError::file(
                    file,
                    "deploy.artifact_bucket: missing; name the bucket templates and zips are uploaded to",
                ));
            }
        };
        if !valid_bucket(&bucket) {
            let span = self.artifact_bucket.as_ref().map_or(0..0, Spanned::span);
            return Err(ConfigError::at(
                file,
                &config.text,
                span,
                "deploy.artifact_bucket",
                format!("`{bucket}` is not a bucket name (3-63 lowercase letters, digits, `.` and `-`)"),
            ));
        }
        let key_prefix =
            self.key_prefix.clone().unwrap_or_default().replace("{env}", env).trim_matches('/').to_string();
        if key_prefix.split('/').any(|part| part == ".." || part == ".")
            || !key_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            return Err(ConfigError::file(
                file,
                format!(
                    "deploy.key_prefix: `{key_prefix}` is not a safe key prefix; use letters, digits, `-`, `_`, `.` and `/`"
                ),
            ));
        }
        Ok((bucket, key_prefix))
    }

    /// `[deploy.artifacts] templates`: each value a path inside the monorepo.
    fn check_artifact_templates(&self, file: &std::path::Path) -> Result<(), ConfigError> {
        for (key, path) in &self.artifacts.templates {
            if path.starts_with('/') || path.split('/').any(|p| p == "..") || path.is_empty() || key.is_empty() {
                return Err(ConfigError::file(
                    file,
                    format!(
                        "deploy.artifacts.templates.\"{key}\": `{path}` must be a path inside the monorepo, relative to its root"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[deploy] keep_releases`, checked ([`crate::retention::DEFAULT_KEEP_RELEASES`] when unset).
    fn keep_releases(&self, config: &ConfigFile) -> Result<usize, ConfigError> {
        match &self.keep_releases {
            None => Ok(crate::retention::DEFAULT_KEEP_RELEASES),
            Some(keep) if (1..=crate::retention::MAX_KEEP_RELEASES).contains(keep.get_ref()) => Ok(*keep.get_ref()),
            Some(keep) => Err(ConfigError::at(
                &config.path,
                &config.text,
                keep.span(),
                "deploy.keep_releases",
                format!(
                    "{}: write how many releases per environment keep their artifacts, from 1 to {}",
                    keep.get_ref(),
                    crate::retention::MAX_KEEP_RELEASES
                ),
            )),
        }
    }

    /// One stack as `env` deploys it: its template path, stack name and capabilities checked,
    /// the environment's overrides applied, `{env}` replaced, its dependencies gathered.
    fn stack_spec(
        &self,
        config: &ConfigFile,
        env: &str,
        env_settings: &EnvironmentSettings,
        name: &str,
        stack: &StackSettings,
    ) -> Result<StackSpec, ConfigError> {
        let at = |span: std::ops::Range<usize>, key: String, message: String| {
            ConfigError::at(&config.path, &config.text, span, key, message)
        };
        let key = format!("deploy.stacks.{name}");
        pipeline_config::check_name(name).map_err(|m| at(stack.template.span(), key.clone(), m))?;
        let template = stack.template.get_ref();
        if template.starts_with('/') || template.split('/').any(|p| p == "..") || template.is_empty() {
            return Err(at(
                stack.template.span(),
                format!("{key}.template"),
                format!("`{template}` must be a path inside the monorepo, relative to its root"),
            ));
        }
        let overrides = env_settings.stacks.get(name).cloned().unwrap_or_default();
        let (stack_name, stack_name_span, stack_name_key) = match &overrides.stack_name {
            Some(given) => {
                (given.get_ref().clone(), given.span(), format!("deploy.environments.{env}.stacks.{name}.stack_name"))
            }
            None => (stack.stack_name.get_ref().clone(), stack.stack_name.span(), format!("{key}.stack_name")),
        };
        let stack_name = stack_name.replace("{env}", env);
        if !valid_stack_name(&stack_name) {
            return Err(at(
                stack_name_span,
                stack_name_key,
                format!("`{stack_name}` is not a stack name (a letter, then letters, digits and `-`, at most 128)"),
            ));
        }
        for capability in &stack.capabilities {
            if !CAPABILITIES.contains(&capability.get_ref().as_str()) {
                return Err(at(
                    capability.span(),
                    format!("{key}.capabilities"),
                    format!("`{}` is not a capability; write one of {}", capability.get_ref(), CAPABILITIES.join(", ")),
                ));
            }
        }
        let mut depends_on = BTreeSet::new();
        for dep in &stack.depends_on {
            if !self.stacks.contains_key(dep.get_ref()) || dep.get_ref() == name {
                return Err(at(
                    dep.span(),
                    format!("{key}.depends_on"),
                    format!("`{}` is not another stack of [deploy.stacks]", dep.get_ref()),
                ));
            }
            depends_on.insert(dep.get_ref().clone());
        }
        let parameters = self.parameters(config, env, name, stack, &overrides, &mut depends_on)?;
        Ok(StackSpec {
            name: name.to_string(),
            template: template.clone(),
            stack_name,
            parameters,
            tags: stack.tags.iter().map(|(k, v)| (k.clone(), v.replace("{env}", env))).collect(),
            capabilities: stack.capabilities.iter().map(|c| c.get_ref().clone()).collect(),
            components: stack.components.iter().map(|c| c.get_ref().clone()).collect(),
            depends_on,
            artifact_mode: stack.artifact_mode,
        })
    }

    /// A stack's parameters, the environment's overrides after its own: literals with `{env}`
    /// replaced, outputs of another stack (added to `depends_on`), environment variable names.
    fn parameters(
        &self,
        config: &ConfigFile,
        env: &str,
        name: &str,
        stack: &StackSettings,
        overrides: &StackOverride,
        depends_on: &mut BTreeSet<String>,
    ) -> Result<BTreeMap<String, ParameterValue>, ConfigError> {
        let at = |span: std::ops::Range<usize>, key: String, message: String| {
            ConfigError::at(&config.path, &config.text, span, key, message)
        };
        let mut parameters = BTreeMap::new();
        let written = stack.parameters.iter().map(|(k, v)| (k, v, format!("deploy.stacks.{name}.parameters.{k}")));
        let overridden = overrides
            .parameters
            .iter()
            .map(|(k, v)| (k, v, format!("deploy.environments.{env}.stacks.{name}.parameters.{k}")));
        for (param, value, param_key) in written.chain(overridden) {
            let value = match value.get_ref() {
                ParameterValue::Literal(text) => ParameterValue::Literal(text.replace("{env}", env)),
                ParameterValue::Output { output } => {
                    let Some((other, _)) = output
                        .split_once('.')
                        .filter(|(s, o)| self.stacks.contains_key(*s) && !o.is_empty() && s != &name)
                    else {
                        return Err(at(
                            value.span(),
                            param_key,
                            format!("`{output}` must be `STACK.OUTPUT` naming another stack of [deploy.stacks]"),
                        ));
                    };
                    depends_on.insert(other.to_string());
                    ParameterValue::Output { output: output.clone() }
                }
                ParameterValue::Env { env: var } => {
                    if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(at(
                            value.span(),
                            param_key,
                            format!("`{var}` is not an environment variable name"),
                        ));
                    }
                    ParameterValue::Env { env: var.clone() }
                }
            };
            parameters.insert(param.clone(), value);
        }
        Ok(parameters)
    }
}

/// `cfn_role_arn` of an environment: a role ARN of the environment's own account.
fn cfn_role(
    config: &ConfigFile,
    env: &str,
    env_settings: &EnvironmentSettings,
    account: &aws_target::Account,
) -> Result<Option<String>, ConfigError> {
    let Some(role) = &env_settings.cfn_role_arn else { return Ok(None) };
    let role_key = format!("deploy.environments.{env}.cfn_role_arn");
    let at = |message: String| ConfigError::at(&config.path, &config.text, role.span(), role_key.clone(), message);
    let Some(role_account) = aws_target::role_account(role.get_ref()) else {
        return Err(at(format!(
            "`{}` is not a role ARN (like `arn:aws:iam::111111111111:role/cfn-exec`)",
            role.get_ref()
        )));
    };
    // CloudFormation takes a role only from its own account.
    if let Some(own) = account.account_id().filter(|own| *own != role_account) {
        return Err(at(format!(
            "the role is in account {role_account}, but `{env}`'s stacks are in {own} (role_arn); name a role of {own}"
        )));
    }
    Ok(Some(role.get_ref().clone()))
}

/// No two stacks of one environment with one CloudFormation name.
fn check_distinct_names(file: &std::path::Path, env: &str, stacks: &[StackSpec]) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for stack in stacks {
        if !names.insert(stack.stack_name.clone()) {
            return Err(ConfigError::file(
                file,
                format!(
                    "deploy.stacks.{}.stack_name: `{}` is used by two stacks in `{env}`",
                    stack.name, stack.stack_name
                ),
            ));
        }
    }
    Ok(())
}

impl DeploySettings {
    /// Two environments in one account and region must not share a stack name: the second
    /// deploy would update the first's stack. Environments whose account or region the config
    /// leaves to the caller (no `role_arn`, no `region`) count as the caller's.
    fn check_distinct_stacks(&self, config: &ConfigFile, environments: &[Environment]) -> Result<(), ConfigError> {
        let mut seen: BTreeMap<(Option<&str>, Option<&str>, &str), &str> = BTreeMap::new();
        for env in environments {
            for stack in &env.stacks {
                let place = (env.account.account_id(), env.region.as_deref(), stack.stack_name.as_str());
                let Some(first) = seen.insert(place, &env.name) else { continue };
                let (key, span) = match self
                    .environments
                    .get(&env.name)
                    .and_then(|e| e.stacks.get(&stack.name))
                    .and_then(|o| o.stack_name.as_ref())
                {
                    Some(name) => {
                        (format!("deploy.environments.{}.stacks.{}.stack_name", env.name, stack.name), name.span())
                    }
                    None => (
                        format!("deploy.stacks.{}.stack_name", stack.name),
                        self.stacks.get(&stack.name).map_or(0..0, |s| s.stack_name.span()),
                    ),
                };
                let account = env
                    .account
                    .account_id()
                    .map_or("the pipeline's own account".to_string(), |a| format!("account {a}"));
                let region = env.region.as_deref().unwrap_or("the default region");
                return Err(ConfigError::at(
                    &config.path,
                    &config.text,
                    span,
                    key,
                    format!(
                        "`{}` is the stack of both `{first}` and `{}` in {account}, {region}: one deploy would overwrite the other's; put `{{env}}` in the name or give one environment its own stack_name",
                        stack.stack_name, env.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An environment's rollback keys, checked.
struct RollbackKeys {
    on: BTreeSet<RollbackOn>,
    alarms: Vec<String>,
    monitoring_minutes: u32,
}

/// `rollback_on`, `rollback_alarms` and `rollback_monitoring_minutes` of one environment: known
/// checks, alarm ARNs of the environment's account and region, the alarms and `"alarms"` only
/// together, a monitoring time CloudFormation takes and the deploy's `timeout` leaves room for.
fn rollback_settings(
    config: &ConfigFile,
    env: &str,
    settings: &EnvironmentSettings,
    account: &aws_target::Account,
    timeout: Duration,
) -> Result<RollbackKeys, ConfigError> {
    let at = |span: std::ops::Range<usize>, name: &str, message: String| {
        ConfigError::at(&config.path, &config.text, span, format!("deploy.environments.{env}.{name}"), message)
    };
    let mut on = BTreeSet::new();
    for check in &settings.rollback_on {
        let Some(parsed) = RollbackOn::parse(check.get_ref()) else {
            return Err(at(
                check.span(),
                "rollback_on",
                format!(
                    "`{}` is not a check to roll back on; write any of {}",
                    check.get_ref(),
                    RollbackOn::ALL.map(|on| format!("\"{on}\"")).join(", ")
                ),
            ));
        };
        on.insert(parsed);
    }
    let alarms = rollback_alarms(env, settings, account, &at)?;
    match (on.contains(&RollbackOn::Alarms), alarms.is_empty()) {
        (true, true) => {
            let span = settings.rollback_on.iter().find(|c| c.get_ref() == "alarms").map_or(0..0, Spanned::span);
            return Err(at(
                span,
                "rollback_on",
                format!(
                    "\"alarms\" without rollback_alarms; add `rollback_alarms = [\"arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME\"]` to [deploy.environments.{env}]"
                ),
            ));
        }
        (false, false) => {
            return Err(at(
                settings.rollback_alarms.first().map_or(0..0, Spanned::span),
                "rollback_alarms",
                "set without \"alarms\" in rollback_on; add \"alarms\" to rollback_on or remove rollback_alarms".into(),
            ));
        }
        _ => {}
    }
    let monitoring_minutes = monitoring_minutes(settings, alarms.is_empty(), timeout, &at)?;
    Ok(RollbackKeys { on, alarms, monitoring_minutes })
}

/// Where a rollback key's mistake is: its span, its name under the environment, the message.
type At<'a> = dyn Fn(std::ops::Range<usize>, &str, String) -> ConfigError + 'a;

/// `rollback_alarms`: CloudWatch alarm ARNs of the environment's account and region, each once,
/// at most [`MAX_ROLLBACK_ALARMS`].
fn rollback_alarms(
    env: &str,
    settings: &EnvironmentSettings,
    account: &aws_target::Account,
    at: &At<'_>,
) -> Result<Vec<String>, ConfigError> {
    let mut alarms: Vec<String> = Vec::new();
    for alarm in &settings.rollback_alarms {
        let arn = alarm.get_ref();
        let refuse = |message: String| at(alarm.span(), "rollback_alarms", message);
        let Some((region, alarm_account)) = alarm_region_and_account(arn) else {
            return Err(refuse(format!(
                "`{arn}` is not a CloudWatch alarm ARN (like `arn:aws:cloudwatch:us-east-1:111111111111:alarm:api-errors`)"
            )));
        };
        if let Some(own) = account.account_id().filter(|own| *own != alarm_account) {
            return Err(refuse(format!(
                "the alarm is in account {alarm_account}, but `{env}`'s stacks are in {own} (role_arn); name an alarm of {own}"
            )));
        }
        if let Some(own) = account.region.as_deref().filter(|own| *own != region) {
            return Err(refuse(format!(
                "the alarm is in {region}, but `{env}`'s stacks are in {own}; CloudFormation reads alarms of the stack's region only"
            )));
        }
        if alarms.iter().any(|a| a == arn) {
            return Err(refuse(format!("`{arn}` is named twice; remove one")));
        }
        alarms.push(arn.clone());
    }
    if alarms.len() > MAX_ROLLBACK_ALARMS {
        return Err(at(
            settings.rollback_alarms[MAX_ROLLBACK_ALARMS].span(),
            "rollback_alarms",
            format!(
                "{} alarms; CloudFormation takes at most {MAX_ROLLBACK_ALARMS} rollback triggers (use a composite alarm)",
                alarms.len()
            ),
        ));
    }
    Ok(alarms)
}

/// `rollback_monitoring_minutes`: 0 to [`MAX_ROLLBACK_MONITORING_MINUTES`], more than 0 only with
/// alarms, shorter than the deploy's `timeout`; 0 when unset.
fn monitoring_minutes(
    settings: &EnvironmentSettings,
    no_alarms: bool,
    timeout: Duration,
    at: &At<'_>,
) -> Result<u32, ConfigError> {
    let Some(minutes) = &settings.rollback_monitoring_minutes else { return Ok(0) };
    let value = *minutes.get_ref();
    let refuse = |message: String| Err(at(minutes.span(), "rollback_monitoring_minutes", message));
    if value > MAX_ROLLBACK_MONITORING_MINUTES {
        return refuse(format!("{value}: write a number of minutes from 0 to {MAX_ROLLBACK_MONITORING_MINUTES}"));
    }
    if value > 0 && no_alarms {
        return refuse("set without rollback_alarms (nothing to monitor); add rollback_alarms or remove it".into());
    }
    if Duration::from_secs(u64::from(value) * 60) >= timeout {
        return refuse(format!(
            "{value} minutes is not shorter than deploy.timeout ({}s): the deploy would stop watching a stack still monitored; raise deploy.timeout or lower this",
            timeout.as_secs()
        ));
    }
    Ok(value)
}

/// The region and account of a CloudWatch alarm ARN (`arn:PARTITION:cloudwatch:REGION:ACCOUNT:alarm:NAME`).
pub fn alarm_region_and_account(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(7, ':');
    let (Some("arn"), Some(partition), Some("cloudwatch"), Some(region), Some(account), Some("alarm"), Some(name)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let ok = !partition.is_empty()
        && aws_target::is_region_name(region)
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && name.len() <= 255;
    ok.then_some((region, account))
}

/// Dependencies first; a cycle is an error naming it.
fn order(file: &std::path::Path, mut specs: BTreeMap<String, StackSpec>) -> Result<Vec<StackSpec>, ConfigError> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut ordered = Vec::new();
    while !specs.is_empty() {
        let ready: Vec<String> =
            specs.values().filter(|s| s.depends_on.iter().all(|d| done.contains(d))).map(|s| s.name.clone()).collect();
        if ready.is_empty() {
            let cycle: Vec<String> = specs.keys().cloned().collect();
            return Err(ConfigError::file(
                file,
                format!(
                    "deploy.stacks: the stacks {} depend on each other in a cycle; remove one `depends_on` or `output`",
                    cycle.join(", ")
                ),
            ));
        }
        for name in ready {
            if let Some(spec) = specs.remove(&name) {
                done.insert(name);
                ordered.push(spec);
            }
        }
    }
    Ok(ordered)
}

/// Whether a name is a CloudFormation stack name.
pub fn valid_stack_name(name: &str) -> bool {
    name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Whether a name is an S3 bucket name.
pub fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ConfigFile {
        ConfigFile::from_text("pipeline.toml".as_ref(), text)
    }

    const BASE: &str = r#"
[deploy]
artifact_bucket = "artifacts-{env}"
key_prefix = "app/{env}"

[deploy.stacks.data]
template = "cfn/data.yaml"
stack_name = "app-data-{env}"
parameters = { Environment = "{env}", Secret = { env = "DB_PASSWORD" } }
components = ["infra"]

[deploy.stacks.api]
template = "cfn/api.yaml"
stack_name = "app-api-{env}"
parameters = { Table = { output = "data.TableName" } }

[deploy.environments.dev]
region = "us-east-1"

[deploy.environments.prod]
region = "eu-west-1"
artifact_bucket = "prod-artifacts"
role_arn = "arn:aws:iam::123456789012:role/deploy"
external_id = "ext-1"

[deploy.environments.prod.stacks.api]
stack_name = "api-production"
parameters = { Extra = "x" }
"#;

    #[test]
    fn environments_apply_their_overrides_and_order_dependencies_first() {
        let config = config(BASE);
        let settings = DeploySettings::from_config(&config).unwrap();
        let dev = settings.environment(&config, "dev").unwrap();
        assert_eq!(dev.artifact_bucket, "artifacts-dev");
        assert_eq!(dev.key_prefix, "app/dev");
        assert_eq!(dev.stacks.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["data", "api"]);
        assert_eq!(dev.stacks[0].parameters["Environment"], ParameterValue::Literal("dev".into()));
        assert_eq!(dev.stacks[1].depends_on, BTreeSet::from(["data".to_string()]));
        let prod = settings.environment(&config, "prod").unwrap();
        assert_eq!(prod.artifact_bucket, "prod-artifacts");
        assert_eq!(prod.region.as_deref(), Some("eu-west-1"));
        assert_eq!(prod.account.role_arn.as_deref(), Some("arn:aws:iam::123456789012:role/deploy"));
        assert_eq!(prod.account.external_id.as_deref(), Some("ext-1"));
        assert_eq!(prod.stacks[1].stack_name, "api-production");
        assert_eq!(prod.stacks[1].parameters["Extra"], ParameterValue::Literal("x".into()));
        assert_eq!(prod.stacks[0].stack_name, "app-data-prod");
        let err = settings.environment(&config, "qa").unwrap_err().to_string();
        assert!(err.contains("no environment `qa`"), "{err}");
    }

    #[test]
    fn mistakes_name_the_file_line_and_key() {
        let unknown = BASE.replace("components = [\"infra\"]", "component = [\"infra\"]");
        let err = DeploySettings::from_config(&config(&unknown)).unwrap_err().to_string();
        assert!(err.starts_with("pipeline.toml:10: deploy.stacks.data.component: unknown field"), "{err}");

        let bad_output = BASE.replace("data.TableName", "nowhere.TableName");
        let err = DeploySettings::from_config(&config(&bad_output)).unwrap_err().to_string();
        assert!(err.starts_with("pipeline.toml:15: deploy.stacks.api.parameters.Table:"), "{err}");

        let bad_cap = BASE.replace("components = [\"infra\"]", "capabilities = [\"CAPABILITY_ALL\"]");
        let err = DeploySettings::from_config(&config(&bad_cap)).unwrap_err().to_string();
        assert!(err.starts_with("pipeline.toml:10: deploy.stacks.data.capabilities: `CAPABILITY_ALL`"), "{err}");

        let bad_name = BASE.replace("app-api-{env}", "app_api");
        let err = DeploySettings::from_config(&config(&bad_name)).unwrap_err().to_string();
        assert!(err.starts_with("pipeline.toml:14: deploy.stacks.api.stack_name:"), "{err}");

        let cycle = BASE.replace("parameters = { Environment", "depends_on = [\"api\"]\nparameters = { Environment");
        let err = DeploySettings::from_config(&config(&cycle)).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");

        let region = BASE.replace("eu-west-1", "eu-west1");
        let err = DeploySettings::from_config(&config(&region)).unwrap_err().to_string();
        assert!(err.starts_with("pipeline.toml:21: deploy.environments.prod.region:"), "{err}");
    }

    #[test]
    fn the_cloudformation_role_is_checked_like_the_deploy_role() {
        let with = |dev: &str, prod: &str| {
            BASE.replace("region = \"us-east-1\"\n", &format!("region = \"us-east-1\"\n{dev}"))
                .replace("external_id = \"ext-1\"\n", &format!("external_id = \"ext-1\"\n{prod}"))
        };
        let text = with(
            "cfn_role_arn = \"arn:aws:iam::222222222222:role/cfn-dev\"\n",
            "cfn_role_arn = \"arn:aws:iam::123456789012:role/cfn-prod\"\n",
        );
        let config = config(&text);
        let settings = DeploySettings::from_config(&config).unwrap();
        let dev = settings.environment(&config, "dev").unwrap();
        assert_eq!(dev.cfn_role_arn.as_deref(), Some("arn:aws:iam::222222222222:role/cfn-dev"));
        let prod = settings.environment(&config, "prod").unwrap();
        assert_eq!(prod.cfn_role_arn.as_deref(), Some("arn:aws:iam::123456789012:role/cfn-prod"));
        assert_eq!(
            DeploySettings::from_config(&self::config(BASE))
                .unwrap()
                .environment(&self::config(BASE), "dev")
                .unwrap()
                .cfn_role_arn,
            None
        );

        let not_a_role = with("cfn_role_arn = \"arn:aws:s3:::bucket\"\n", "");
        let err = DeploySettings::from_config(&self::config(&not_a_role)).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(19), "deploy.environments.dev.cfn_role_arn"), "{err}");
        assert!(err.message.contains("is not a role ARN"), "{err}");

        // CloudFormation takes a role of the stack's own account only.
        let elsewhere = with("", "cfn_role_arn = \"arn:aws:iam::999999999999:role/cfn-prod\"\n");
        let err = DeploySettings::from_config(&self::config(&elsewhere)).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(25), "deploy.environments.prod.cfn_role_arn"), "{err}");
        assert!(err.message.contains("999999999999") && err.message.contains("123456789012"), "{err}");
    }

    #[test]
    fn keep_releases_is_bounded() {
        let with = |n: &str| {
            BASE.replace("key_prefix = \"app/{env}\"", &format!("key_prefix = \"app/{{env}}\"\nkeep_releases = {n}"))
        };
        let config = config(&with("3"));
        let settings = DeploySettings::from_config(&config).unwrap();
        assert_eq!(settings.environment(&config, "dev").unwrap().keep_releases, 3);
        let base = self::config(BASE);
        let default = DeploySettings::from_config(&base).unwrap().environment(&base, "dev").unwrap();
        assert_eq!(default.keep_releases, 5);
        for bad in ["0", "101"] {
            let err = DeploySettings::from_config(&self::config(&with(bad))).unwrap_err();
            assert_eq!((err.line, err.key.as_str()), (Some(5), "deploy.keep_releases"), "{err}");
            assert!(err.message.contains("from 1 to 100"), "{err}");
        }
    }

    #[test]
    fn zero_timeouts_are_refused_with_their_line() {
        for key in ["timeout", "change_set_timeout", "lock_ttl"] {
            let text =
                BASE.replace("key_prefix = \"app/{env}\"", &format!("key_prefix = \"app/{{env}}\"\n{key} = \"0s\""));
            let err = DeploySettings::from_config(&config(&text)).unwrap_err();
            assert_eq!((err.line, err.key.clone()), (Some(5), format!("deploy.{key}")), "{err}");
            assert!(err.message.contains("zero"), "{err}");
            let fine =
                BASE.replace("key_prefix = \"app/{env}\"", &format!("key_prefix = \"app/{{env}}\"\n{key} = \"1s\""));
            DeploySettings::from_config(&config(&fine)).unwrap();
        }
    }

    #[test]
    fn one_stack_name_for_two_environments_in_one_account_and_region_is_refused() {
        // prod is in another account: the same name there is another stack.
        let other_account = BASE.replace("stack_name = \"api-production\"", "stack_name = \"app-api-dev\"");
        DeploySettings::from_config(&config(&other_account)).unwrap();
        // Same account (no role) and region: refused at the override's line.
        let same = other_account
            .replace("role_arn = \"arn:aws:iam::123456789012:role/deploy\"\nexternal_id = \"ext-1\"\n", "")
            .replace("eu-west-1", "us-east-1");
        let err = DeploySettings::from_config(&config(&same)).unwrap_err();
        assert_eq!(err.key, "deploy.environments.prod.stacks.api.stack_name", "{err}");
        assert_eq!(err.line, Some(25), "{err}");
        assert!(err.message.contains("`app-api-dev` is the stack of both `dev` and `prod`"), "{err}");
        // A name without `{env}` shared by every environment: refused at the stack's line.
        let fixed = BASE
            .replace("app-data-{env}", "app-data")
            .replace("eu-west-1", "us-east-1")
            .replace("role_arn = \"arn:aws:iam::123456789012:role/deploy\"\nexternal_id = \"ext-1\"\n", "");
        let err = DeploySettings::from_config(&config(&fixed)).unwrap_err();
        assert_eq!((err.line, err.key.as_str()), (Some(8), "deploy.stacks.data.stack_name"), "{err}");
        // Another region is another stack.
        let regions = BASE
            .replace("app-data-{env}", "app-data")
            .replace("role_arn = \"arn:aws:iam::123456789012:role/deploy\"\nexternal_id = \"ext-1\"\n", "");
        DeploySettings::from_config(&config(&regions)).unwrap();
    }

    #[test]
    fn rollback_keys_are_typed_and_their_mistakes_name_the_line_and_the_fix() {
        let prod = |keys: &str| BASE.replace("external_id = \"ext-1\"\n", &format!("external_id = \"ext-1\"\n{keys}"));
        let alarm = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:api-errors";
        let text = prod(&format!(
            "rollback_on = [\"e2e\", \"alarms\", \"site-check\"]\nrollback_alarms = [\"{alarm}\"]\nrollback_monitoring_minutes = 10\n"
        ));
        let config = config(&text);
        let settings = DeploySettings::from_config(&config).unwrap();
        let env = settings.environment(&config, "prod").unwrap();
        assert_eq!(env.rollback_on, BTreeSet::from(RollbackOn::ALL));
        assert_eq!(env.rollback_alarms, [alarm]);
        assert_eq!(env.rollback_monitoring_minutes, 10);
        let dev = settings.environment(&config, "dev").unwrap();
        assert!(dev.rollback_on.is_empty() && dev.rollback_alarms.is_empty());
        assert_eq!(dev.rollback_monitoring_minutes, 0);

        let refused = |keys: String, key: &str, says: &str| {
            let err = DeploySettings::from_config(&self::config(&prod(&keys))).unwrap_err();
            assert_eq!((err.line, err.key.as_str()), (Some(25), key), "{err}");
            assert!(err.message.contains(says), "{err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        };
        let on = "deploy.environments.prod.rollback_on";
        let alarms = "deploy.environments.prod.rollback_alarms";
        let minutes = "deploy.environments.prod.rollback_monitoring_minutes";
        refused("rollback_on = [\"e2e\", \"smoke\"]\n".into(), on, "`smoke` is not a check");
        refused("rollback_on = [\"alarms\"]\n".into(), on, "add `rollback_alarms = [");
        refused(format!("rollback_alarms = [\"{alarm}\"]\n"), alarms, "add \"alarms\" to rollback_on");
        let with_alarm = |arn: &str| format!("rollback_alarms = [\"{arn}\"]\nrollback_on = [\"alarms\"]\n");
        refused(with_alarm("arn:aws:sns:eu-west-1:123456789012:topic"), alarms, "is not a CloudWatch alarm ARN");
        refused(with_alarm("arn:aws:cloudwatch:eu-west-1:123456789012:alarm:"), alarms, "is not a CloudWatch");
        refused(with_alarm("arn:aws:cloudwatch:eu-west-1:999999999999:alarm:x"), alarms, "in account 999999999999");
        refused(with_alarm("arn:aws:cloudwatch:us-east-1:123456789012:alarm:x"), alarms, "is in us-east-1");
        refused(format!("rollback_alarms = [\"{alarm}\", \"{alarm}\"]\nrollback_on = [\"alarms\"]\n"), alarms, "twice");
        let six: Vec<String> = (0..6).map(|i| format!("\"{alarm}{i}\"")).collect();
        refused(format!("rollback_alarms = [{}]\nrollback_on = [\"alarms\"]\n", six.join(", ")), alarms, "at most 5");
        let minutes_of = |n: &str| format!("rollback_monitoring_minutes = {n}\n{}", with_alarm(alarm));
        refused(minutes_of("181"), minutes, "from 0 to 180");
        refused("rollback_monitoring_minutes = 5\n".into(), minutes, "set without rollback_alarms");
        refused(minutes_of("30"), minutes, "not shorter than deploy.timeout");
        DeploySettings::from_config(&self::config(&prod(&minutes_of("29")))).unwrap();
        DeploySettings::from_config(&self::config(&prod(&minutes_of("0")))).unwrap();
    }
}
