//! CloudFormation deploys through change sets, done right.
//!
//! `[deploy]` in `pipeline.toml` names the artifact bucket and the stacks ([`DeploySettings`]).
//! A deploy is planned first ([`plan()`], pure apart from reading the templates): each template
//! is read with validate's parser, its local nested `TemplateURL`s and Lambda `Code`/`CodeUri`
//! paths are rewritten to content-addressed S3 keys (children first, the hash in the key), its
//! parameters and capabilities are checked against the config, and the stacks the run's diff
//! does not require are skipped. [`Plan::describe`] is the `--dry-run`.
//!
//! Applying ([`deploy`]) uploads the artifacts the bucket lacks (HEAD before PUT), then deploys
//! the stacks, independent ones in parallel, each under a lock in the status store: a stack
//! whose deployed template and parameters equal the new ones is left alone without a change
//! set; otherwise one change set, previewed, executed and watched (nested stacks' events
//! included) until it ends, with the root cause of a failure. No change set is left behind
//! except on purpose (`--no-execute`). [`run_stage`] is the deploy stage: it reads the run's
//! diff and packages, records `deploy` per component and writes `stack-outputs.json`.
//!
//! ```
//! use stack_deployer::{DeploySettings, PlanInputs};
//!
//! let repo = tempfile::tempdir()?;
//! std::fs::create_dir(repo.path().join("cfn"))?;
//! std::fs::write(repo.path().join("cfn/app.yaml"), "Parameters:\n  Stage: {Type: String}\nResources:\n  Queue: {Type: 'AWS::SQS::Queue'}\n")?;
//! let config = pipeline_config::ConfigFile::from_text(
//!     &repo.path().join("pipeline.toml"),
//!     "[deploy]\nartifact_bucket = \"artifacts\"\n[deploy.stacks.app]\ntemplate = \"cfn/app.yaml\"\nstack_name = \"app-{env}\"\nparameters = { Stage = \"{env}\" }\n",
//! );
//! let settings = DeploySettings::from_config(&config)?;
//! let env = settings.environment(&config, "dev")?;
//! let inputs = PlanInputs { repo: repo.path(), manifest: None, functions: &[], changed: None, only: &[] };
//! let plan = stack_deployer::plan(&env, inputs, &|_| None)?;
//! assert_eq!(plan.stacks[0].stack_name, "app-dev");
//! assert!(plan.describe().contains("parameters: Stage=dev"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Exit codes of the binary: 0 deployed or unchanged, 1 a deploy failed or rolled back, 2 usage,
//! configuration or credentials, 3 blocked by a stack's state, 4 timed out while still in progress.

pub mod apply;
pub mod config;
pub mod digest;
pub mod plan;
pub mod retention;
pub mod stage;

use std::path::{Path, PathBuf};

pub use apply::{ApplyOptions, Clients, ResourceChange, RootCause, StackOutcome, StackResult, rollback_configuration};
pub use config::{ArtifactMode, ArtifactSettings, DeploySettings, Environment, ParameterValue, RollbackOn, StackSpec};
pub use plan::{Artifact, Plan, PlanInputs, StackPlan, plan};
pub use stage::{Locks, Report, StageOptions, deploy, plan_stage, run_stage};

/// Checks every section of `pipeline.toml` this stage reads (`[components]`, `[deploy]`,
/// `[gate]`), so the binary reports a config mistake before anything else, even with no run.
pub fn check_config(config: &pipeline_config::ConfigFile) -> Result<(), Error> {
    source_diff::Components::from_config(config)?;
    DeploySettings::from_config(config)?;
    gate::GatePolicy::from_config(config)?;
    Ok(())
}

/// Everything that stops a deploy before or outside a stack's own verdict, each naming the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] pipeline_config::ConfigError),
    /// The run folder or the store.
    #[error(transparent)]
    State(#[from] run_state::Error),
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A template does not parse.
    #[error("{path}: not a readable template; fix it at the position shown")]
    Template {
        /// The template.
        path: String,
        /// Where and what.
        #[source]
        source: cfn_template::ParseError,
    },
    /// A template without resources.
    #[error("{path}: no Resources map; a template needs at least one resource")]
    NoResources {
        /// The template.
        path: String,
    },
    /// Nested templates that include each other.
    #[error("{template} is nested in itself ({chain}); fix the TemplateURLs")]
    NestingLoop {
        /// The template.
        template: String,
        /// The chain of templates.
        chain: String,
    },
    /// A local path in a template that cannot be packaged.
    #[error("{template}: {resource} names `{path}`, which {problem}")]
    LocalArtifact {
        /// The template.
        template: String,
        /// The resource.
        resource: String,
        /// The path as written.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// An S3 reference in a template (a nested stack's `TemplateURL`, a function's code) that
    /// maps to no file or package of the repository: never passed over in silence.
    #[error("{0}")]
    RemoteReference(Box<RemoteReference>),
    /// `--only` names no stack.
    #[error("no stack `{name}` in [deploy.stacks] (there are: {known}); fix --only")]
    UnknownStack {
        /// The name given.
        name: String,
        /// The stacks.
        known: String,
    },
    /// A configured parameter the template does not declare.
    #[error(
        "deploy.stacks.{stack}.parameters.{parameter}: {template} declares no parameter `{parameter}` (it declares: {declared}); remove it or fix the name"
    )]
    UndeclaredParameter {
        /// The stack.
        stack: String,
        /// The parameter.
        parameter: String,
        /// The template.
        template: String,
        /// What it declares.
        declared: String,
    },
    /// A parameter without default that the config does not give.
    #[error("deploy.stacks.{stack}.parameters: {template} requires `{parameter}` (it has no Default); add it")]
    MissingParameter {
        /// The stack.
        stack: String,
        /// The parameter.
        parameter: String,
        /// The template.
        template: String,
    },
    /// A parameter read from an unset environment variable.
    #[error("deploy.stacks.{stack}.parameters.{parameter}: the environment variable `{var}` is not set; export it")]
    MissingEnvVar {
        /// The stack.
        stack: String,
        /// The parameter.
        parameter: String,
        /// The variable.
        var: String,
    },
    /// A parameter from an output the other stack does not have.
    #[error(
        "deploy.stacks.{stack}.parameters.{parameter}: the output `{output}` does not exist; deploy that stack first or fix the name"
    )]
    MissingOutput {
        /// The stack.
        stack: String,
        /// The parameter.
        parameter: String,
        /// `STACK.OUTPUT`.
        output: String,
    },
    /// The template needs a capability the config does not acknowledge.
    #[error("deploy.stacks.{stack}.capabilities: add \"{capability}\" ({why})")]
    MissingCapability {
        /// The stack.
        stack: String,
        /// The capability.
        capability: &'static str,
        /// The resource that needs it.
        why: String,
    },
    /// The artifact bucket does not exist.
    #[error(
        "the artifact bucket `{bucket}` does not exist (or is in another account); create it or fix deploy.artifact_bucket"
    )]
    BucketMissing {
        /// The bucket.
        bucket: String,
    },
    /// An AWS call failed.
    #[error("{operation} {target}: {kind}")]
    Aws {
        /// The operation.
        operation: &'static str,
        /// What it was about.
        target: String,
        /// What kind of failure.
        kind: aws_target::ErrorKind,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An artifact kept for rollback could not be read or tagged ([`retention`]).
    #[error("s3://{bucket}/{key}: cannot {action} it while marking the artifacts kept for rollback; deploy again")]
    Retention {
        /// The artifact bucket.
        bucket: String,
        /// The object.
        key: String,
        /// `read` or `tag`.
        action: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The kept releases name more templates than a retention pass reads.
    #[error("the releases kept in s3://{bucket} name more than {limit} templates; lower [deploy] keep_releases")]
    RetentionTooLarge {
        /// The artifact bucket.
        bucket: String,
        /// The most read.
        limit: usize,
    },
    /// AWS refused a call (AccessDenied, from the error's code): the role, the action and what it
    /// was about, so the user knows what to grant. Raised before any change or where the deploy
    /// stopped, as the record says.
    #[error("{denied}")]
    Denied {
        /// Who lacks what on what.
        denied: aws_target::Denied,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A Lambda code update failed.
    #[error("updating the code of function `{function}`")]
    CodeUpdate {
        /// The function.
        function: String,
        /// What failed.
        #[source]
        source: lambda_packager::update::UpdateError,
    },
    /// The deploy decision refuses the whole environment (a promotion not earned, a
    /// pipeline-wide required step that did not pass). Nothing was changed.
    #[error("deploying `{environment}` is refused: {}", reasons.join("; "))]
    Refused {
        /// The environment.
        environment: String,
        /// Every reason, each naming what to do.
        reasons: Vec<String>,
    },
    /// The run's package manifest could not be read.
    #[error("the run's package manifest")]
    Manifest(#[source] Box<lambda_packager::Error>),
    /// The approval request could not be recorded.
    #[error("recording what the approval covers")]
    Approval(#[source] gate::approval::Error),
}

/// Where a template's S3 reference is and why it cannot be deployed ([`Error::RemoteReference`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteReference {
    /// The template.
    pub template: String,
    /// The property's line.
    pub line: u32,
    /// The resource's logical id.
    pub resource: String,
    /// `TemplateURL`, `Code`, `CodeUri`.
    pub property: &'static str,
    /// The reference as the template builds it (`https://s3.amazonaws.com/${Bucket}/cfn/x.yaml`).
    pub reference: String,
    /// What is wrong.
    pub problem: String,
    /// What to configure.
    pub fix: String,
}

impl std::fmt::Display for RemoteReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let RemoteReference { template, line, resource, property, reference, problem, fix } = self;
        write!(f, "{template}:{line}: {resource} {property} `{reference}` {problem}; {fix}")
    }
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }

    /// An AccessDenied ([`Error::Aws`] whose code said so) as [`Error::Denied`], naming `role`
    /// (the role the environment is reached through, when the config names one); any other
    /// error as it is.
    pub fn naming_role(self, role: Option<&str>) -> Error {
        match self {
            Error::Aws { operation, target, kind: aws_target::ErrorKind::AccessDenied, source } => {
                // stack-deployer's S3 calls; every other operation it makes is CloudFormation's.
                let service = match operation {
                    "HeadBucket" | "HeadObject" | "PutObject" | "GetObject" | "GetObjectTagging"
                    | "PutObjectTagging" => "s3",
                    _ => "cloudformation",
                };
                let action = aws_target::iam_action(service, operation);
                Error::Denied {
                    denied: aws_target::Denied { role: role.map(str::to_owned), action, resource: target },
                    source,
                }
            }
            other => other,
        }
    }
}

/// What a deploy reports while it works (the binary renders them).
#[derive(Debug, Clone)]
pub enum Event {
    /// An artifact is in the bucket.
    Artifact {
        /// Its key.
        key: String,
        /// Whether it was uploaded now (false: it was already there).
        uploaded: bool,
    },
    /// A step of a stack's deploy.
    Stack {
        /// The stack.
        stack: String,
        /// What happens.
        message: String,
    },
    /// A change set's changes, before it is executed.
    Preview {
        /// The stack.
        stack: String,
        /// The change set's name.
        change_set: String,
        /// The changes, nested stacks included.
        changes: Vec<ResourceChange>,
    },
    /// A stack event (the stack's or a nested stack's).
    Resource {
        /// The stack deployed.
        stack: String,
        /// The resource's logical path.
        path: String,
        /// Its type.
        resource_type: String,
        /// Its status.
        status: String,
        /// CloudFormation's reason.
        reason: Option<String>,
    },
    /// A Lambda function's code after the stack.
    Code {
        /// The function (as in `[lambda.functions]`).
        function: String,
        /// Its physical name.
        physical: String,
        /// Whether it was updated (false: it already ran this code).
        updated: bool,
    },
    /// A stack is done.
    Done {
        /// The stack.
        stack: String,
        /// How it ended.
        outcome: StackOutcome,
    },
}
