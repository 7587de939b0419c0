//! Planning, pure: templates read and checked, local artifacts rewritten to content-addressed
//! S3 keys (children first), parameters and capabilities checked, stacks chosen from the diff.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use cfn_template::{Node, Value};
use lambda_packager::{FunctionSpec, Manifest, Package};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::config::{ArtifactMode, Environment, ParameterValue, StackSpec};

/// What a `NoEcho` parameter's value is shown as (CloudFormation's own mask).
pub const MASK: &str = "****";

/// A template body over this many bytes must go by `TemplateURL`.
pub const MAX_TEMPLATE_BODY: usize = 51_200;
/// CloudFormation reads at most this much from a `TemplateURL`.
pub const MAX_TEMPLATE_URL_BYTES: u64 = 1024 * 1024;
const MAX_NESTING: usize = 8;

/// An object to upload under a content-addressed key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Artifact {
    /// Where it comes from (a template path relative to the monorepo, or a zip).
    pub source: String,
    /// The S3 key (the content's hash is in it).
    pub key: String,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// The content (left out of the serialised plan: its key and hash name it).
    #[serde(skip)]
    pub content: ArtifactContent,
    /// Whether the key is the one a template reads (`S3Key: lambda/api-handler.zip`) rather than
    /// content-addressed: uploaded unless the object there has the same hash.
    pub fixed: bool,
}

/// An artifact's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactContent {
    /// A template as rewritten (JSON).
    Template(Vec<u8>),
    /// A zip on disk.
    File(PathBuf),
}

/// A Lambda function whose code the template names by a fixed S3 key: updated after the
/// stack, from the package uploaded under its content-addressed key, when its hash differs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CodeUpdate {
    /// The function's name under `[lambda.functions]`.
    pub function: String,
    /// Its component (whose deploy decision allows or refuses the update).
    pub component: String,
    /// Logical ids from the stack down to the function (`LambdasStack`, `ApiHandlerFunction`).
    pub path: Vec<String>,
    /// The package.
    pub package: Package,
    /// Its key in the artifact bucket.
    pub key: String,
    /// The key the template reads the code from, when it is in the artifact bucket: the
    /// package is uploaded there too (before the stack), so a stack created or replaced later
    /// finds this code.
    pub fixed_key: Option<String>,
}

/// One stack to deploy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackPlan {
    /// Its name under `[deploy.stacks]`.
    pub name: String,
    /// The CloudFormation stack name.
    pub stack_name: String,
    /// The template path.
    pub template: String,
    /// Hex SHA-256 of the body.
    pub template_sha256: String,
    /// The template as sent (JSON, local artifacts rewritten).
    pub body: Vec<u8>,
    /// Set when the body is over [`MAX_TEMPLATE_BODY`]: the key it is uploaded under.
    pub template_key: Option<String>,
    /// Parameter values as configured (environment variables unresolved).
    pub parameters: BTreeMap<String, ParameterValue>,
    /// The template's parameters with their defaults.
    pub declared: BTreeMap<String, Option<String>>,
    /// The template's `NoEcho` parameters: their values are shown as [`MASK`], never in full.
    pub no_echo: BTreeSet<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Capabilities sent (those configured).
    pub capabilities: Vec<String>,
    /// Components it serves.
    pub components: Vec<String>,
    /// Stacks deployed first.
    pub depends_on: BTreeSet<String>,
    /// Functions updated after the stack when their package changed.
    pub code_updates: Vec<CodeUpdate>,
    /// Components of the functions whose code the template embeds (a local `Code` path):
    /// their code travels with the stack, so a refused one refuses the stack.
    pub inline_components: BTreeSet<String>,
    /// How its S3 references are deployed.
    pub artifact_mode: ArtifactMode,
    /// Nested templates uploaded to the keys the templates read (`fixed` mode), as
    /// (key, sha256): the template sent does not change when they do, so the stack is never
    /// taken for unchanged from its body alone, and the approval's digest covers them.
    pub fixed_templates: Vec<(String, String)>,
}

/// A configured stack this run does not deploy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedStack {
    /// Its name under `[deploy.stacks]`.
    pub name: String,
    /// The CloudFormation stack name (its outputs are still read).
    pub stack_name: String,
    /// Components it serves.
    pub components: Vec<String>,
    /// Why.
    pub reason: String,
}

/// What a deploy will do. Serialised as [`describe`](Plan::describe) shows it: no template body
/// nor artifact bytes, a parameter's value as the dry run prints it (a `NoEcho` one masked, one
/// read from the environment by name).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// The environment.
    pub environment: String,
    /// The region, if configured.
    pub region: Option<String>,
    /// The artifact bucket.
    pub bucket: String,
    /// The key prefix.
    pub key_prefix: String,
    /// The role CloudFormation acts as (`RoleARN` on every change set); otherwise the deployer's.
    pub cfn_role_arn: Option<String>,
    /// The role the deploy assumes to reach the environment (`role_arn`), named in a refusal.
    pub role_arn: Option<String>,
    /// The CloudWatch alarms every change set carries as rollback triggers (`rollback_alarms`):
    /// CloudFormation rolls a stack back when one goes off. Empty sends an empty list, which
    /// clears triggers an earlier change set left on the stack.
    pub rollback_alarms: Vec<String>,
    /// How long CloudFormation keeps watching them after a stack's resources are deployed.
    pub rollback_monitoring_minutes: u32,
    /// Objects to upload (skipped when already there).
    pub artifacts: Vec<Artifact>,
    /// Stacks to deploy, dependencies first.
    pub stacks: Vec<StackPlan>,
    /// Stacks left alone.
    pub skipped: Vec<SkippedStack>,
    /// Function code updates the deploy decision refused: (function, component, why).
    pub refused_code: Vec<(String, String, String)>,
    /// What the deploy passes over on purpose (`[deploy.artifacts] allow_remote`), each naming
    /// the template and resource.
    pub warnings: Vec<String>,
}

impl run_state::StagePlan for Plan {
    fn describe(&self) -> String {
        Plan::describe(self)
    }
}

impl Plan {
    /// The plan as `--dry-run` prints it ([`run_state::StagePlan::describe`]). Values from
    /// environment variables are never shown, nor those of the template's `NoEcho` parameters
    /// ([`MASK`]).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let region = self.region.as_deref().unwrap_or("the default region");
        let _ = writeln!(
            out,
            "deploy `{}` to {region}; artifacts in s3://{}/{}",
            self.environment, self.bucket, self.key_prefix
        );
        if let Some(role) = &self.cfn_role_arn {
            let _ = writeln!(out, "CloudFormation acts as {role}");
        }
        if !self.rollback_alarms.is_empty() {
            let _ = writeln!(
                out,
                "rollback triggers on every change set (a stack rolls back when one goes off; watched {} minute(s) after its resources are deployed): {}",
                self.rollback_monitoring_minutes,
                self.rollback_alarms.join(", ")
            );
        }
        let _ = writeln!(out, "artifacts ({}; each uploaded unless already there):", self.artifacts.len());
        for artifact in &self.artifacts {
            let fixed = if artifact.fixed { ", the key the template reads" } else { "" };
            let _ = writeln!(out, "  {} -> {} ({} bytes{fixed})", artifact.source, artifact.key, artifact.size);
        }
        let _ = writeln!(out, "stacks ({}):", self.stacks.len());
        for stack in &self.stacks {
            describe_stack(&mut out, stack);
        }
        for (function, component, why) in &self.refused_code {
            let _ = writeln!(out, "lambda code not updated: {function} (component {component}): {why}");
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "skipped ({}):", self.skipped.len());
            for skipped in &self.skipped {
                let _ = writeln!(out, "  {} ({}): {}", skipped.name, skipped.stack_name, skipped.reason);
            }
        }
        out
    }
}

impl serde::Serialize for StackPlan {
    /// The stack without its body, each parameter's value as the dry run shows it.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            name: &'a str,
            stack_name: &'a str,
            template: &'a str,
            template_sha256: &'a str,
            bytes: usize,
            template_key: &'a Option<String>,
            parameters: BTreeMap<&'a str, String>,
            tags: &'a BTreeMap<String, String>,
            capabilities: &'a [String],
            components: &'a [String],
            depends_on: &'a BTreeSet<String>,
            code_updates: &'a [CodeUpdate],
            inline_components: &'a BTreeSet<String>,
            artifact_mode: ArtifactMode,
            fixed_templates: &'a [(String, String)],
        }
        Shown {
            name: &self.name,
            stack_name: &self.stack_name,
            template: &self.template,
            template_sha256: &self.template_sha256,
            bytes: self.body.len(),
            template_key: &self.template_key,
            parameters: self.parameters.iter().map(|(k, v)| (k.as_str(), shown_value(self, k, v))).collect(),
            tags: &self.tags,
            capabilities: &self.capabilities,
            components: &self.components,
            depends_on: &self.depends_on,
            code_updates: &self.code_updates,
            inline_components: &self.inline_components,
            artifact_mode: self.artifact_mode,
            fixed_templates: &self.fixed_templates,
        }
        .serialize(serializer)
    }
}

/// A parameter's value as the plan shows it: [`MASK`] for a `NoEcho` one.
fn shown_value(stack: &StackPlan, name: &str, value: &ParameterValue) -> String {
    if stack.no_echo.contains(name) { MASK.to_string() } else { describe_value(value) }
}

/// One stack of the plan as `--dry-run` prints it.
fn describe_stack(out: &mut String, stack: &StackPlan) {
    let how = match &stack.template_key {
        Some(key) => format!("by URL, {key}"),
        None => "inline".into(),
    };
    let _ = writeln!(
        out,
        "  {} -> {} (template {}, sha256 {}, {} bytes {how})",
        stack.name,
        stack.stack_name,
        stack.template,
        &stack.template_sha256[..16],
        stack.body.len()
    );
    if !stack.parameters.is_empty() {
        let shown: Vec<String> =
            stack.parameters.iter().map(|(k, v)| format!("{k}={}", shown_value(stack, k, v))).collect();
        let _ = writeln!(out, "    parameters: {}", shown.join(", "));
    }
    if !stack.capabilities.is_empty() {
        let _ = writeln!(out, "    capabilities: {}", stack.capabilities.join(", "));
    }
    if !stack.depends_on.is_empty() {
        let _ = writeln!(out, "    after: {}", stack.depends_on.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    if stack.artifact_mode == ArtifactMode::Fixed {
        let _ = writeln!(
            out,
            "    artifact mode: fixed ({} nested template(s) and the functions' zips uploaded to the keys the templates read; a change set every deploy)",
            stack.fixed_templates.len()
        );
    }
    for update in &stack.code_updates {
        let _ = writeln!(
            out,
            "    lambda code: {} ({}) from {} when its CodeSha256 differs{}",
            update.function,
            update.path.join("/"),
            update.key,
            update
                .fixed_key
                .as_ref()
                .map(|k| format!("; also uploaded to {k}, the key the template reads"))
                .unwrap_or_default()
        );
    }
}

/// `NoEcho: true` (CloudFormation also takes the string `"true"`, in any case).
fn is_true(node: &Node) -> bool {
    node.as_str().is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn describe_value(value: &ParameterValue) -> String {
    match value {
        ParameterValue::Literal(text) => text.clone(),
        ParameterValue::Output { output } => format!("<output {output}>"),
        ParameterValue::Env { env } => format!("${env}"),
    }
}

/// What planning reads besides the environment's config.
#[derive(Debug, Clone, Copy)]
pub struct PlanInputs<'a> {
    /// The monorepo root.
    pub repo: &'a Path,
    /// The run's package manifest, if the run has one.
    pub manifest: Option<&'a Manifest>,
    /// `[lambda.functions]`, to find a local `Code` path's package and fixed-code functions.
    pub functions: &'a [FunctionSpec],
    /// The components changed in the run's diff; `None` deploys every stack.
    pub changed: Option<&'a BTreeSet<String>>,
    /// Only these stacks, deployed whether or not their components changed (all when empty).
    pub only: &'a [String],
}

/// Plans an environment's deploy. Reads the templates (bounded, regular files inside the
/// monorepo) and looks environment variables up with `lookup` only to check they are set.
pub fn plan(env: &Environment, inputs: PlanInputs<'_>, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Plan, Error> {
    for name in inputs.only {
        if !env.stacks.iter().any(|s| &s.name == name) {
            return Err(Error::UnknownStack {
                name: name.clone(),
                known: env.stacks.iter().map(|s| s.name.clone()).collect::<Vec<_>>().join(", "),
            });
        }
    }
    let repo = inputs.repo.canonicalize().map_err(|e| Error::io(inputs.repo, e))?;
    let mut packer = Packer {
        repo: &repo,
        env,
        inputs,
        artifacts: BTreeMap::new(),
        warnings: Vec::new(),
        stack: String::new(),
        mode: ArtifactMode::Rewrite,
        code_owners: BTreeMap::new(),
    };
    let mut stacks = Vec::new();
    let mut skipped = Vec::new();
    for spec in &env.stacks {
        if let Some(reason) = skip_reason(spec, &inputs) {
            skipped.push(SkippedStack {
                name: spec.name.clone(),
                stack_name: spec.stack_name.clone(),
                components: spec.components.clone(),
                reason,
            });
            continue;
        }
        stacks.push(packer.stack(spec, lookup)?);
    }
    let warnings = packer.warnings;
    let mut artifacts: Vec<Artifact> = packer.artifacts.into_values().collect();
    // Children before parents is what matters; keys give a stable order besides.
    artifacts.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(Plan {
        environment: env.name.clone(),
        region: env.region.clone(),
        bucket: env.artifact_bucket.clone(),
        key_prefix: env.key_prefix.clone(),
        cfn_role_arn: env.cfn_role_arn.clone(),
        role_arn: env.account.role_arn.clone(),
        rollback_alarms: env.rollback_alarms.clone(),
        rollback_monitoring_minutes: env.rollback_monitoring_minutes,
        artifacts,
        stacks,
        skipped,
        refused_code: Vec::new(),
        warnings,
    })
}

/// The values a template's parameters are known to have while planning: what is passed in,
/// else the defaults, and the pseudo parameters that do not depend on the stack.
fn known_values(
    declared: &BTreeMap<String, Option<String>>,
    given: &BTreeMap<String, Option<String>>,
    region: Option<&str>,
) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (name, default) in declared {
        match (given.get(name), default) {
            (Some(Some(value)), _) => {
                values.insert(name.clone(), value.clone());
            }
            (None, Some(default)) => {
                values.insert(name.clone(), default.clone());
            }
            _ => {}
        }
    }
    values.insert("AWS::URLSuffix".into(), "amazonaws.com".into());
    values.insert("AWS::Partition".into(), "aws".into());
    if let Some(region) = region {
        values.insert("AWS::Region".into(), region.to_owned());
    }
    values
}

fn skip_reason(spec: &StackSpec, inputs: &PlanInputs<'_>) -> Option<String> {
    if !inputs.only.is_empty() {
        // Named with --only: deployed whatever the diff says.
        return (!inputs.only.contains(&spec.name)).then(|| "not selected by --only".into());
    }
    let changed = inputs.changed?;
    if spec.components.is_empty() || spec.components.iter().any(|c| changed.contains(c)) {
        return None;
    }
    Some(format!("none of its components changed ({})", spec.components.join(", ")))
}

struct Packer<'a> {
    repo: &'a Path,
    env: &'a Environment,
    inputs: PlanInputs<'a>,
    artifacts: BTreeMap<String, Artifact>,
    warnings: Vec<String>,
    /// The stack being planned (its name under `[deploy.stacks]`) and its mode.
    stack: String,
    mode: ArtifactMode,
    /// `BUCKET/KEY` of fixed Lambda code → the function whose package goes there.
    code_owners: BTreeMap<String, String>,
}

/// What a template's resources ask for, gathered resource by resource.
#[derive(Default)]
struct Found {
    needs: BTreeMap<&'static str, String>,
    replacements: BTreeMap<(String, &'static str), Json>,
    code_updates: Vec<CodeUpdate>,
    inline_components: BTreeSet<String>,
    /// Nested templates uploaded to the keys the template reads: (key, sha256).
    fixed_templates: Vec<(String, String)>,
}

/// The template whose resources are being read.
struct InTemplate<'a> {
    path: &'a str,
    dir: &'a Path,
    logical: &'a [String],
    values: &'a BTreeMap<String, String>,
}

/// A template packaged: its body and what it needs.
struct Packaged {
    body: Vec<u8>,
    sha256: String,
    /// The file as the repository holds it, with its extension, when nothing in it was
    /// rewritten: a nested template is uploaded as it is (byte for byte what the repository
    /// and its own `aws s3 sync` would hold), not re-serialised as JSON, which drops comments
    /// and rewrites numbers (`1.10` becomes `1.1`).
    unchanged: Option<(Vec<u8>, String)>,
    declared: BTreeMap<String, Option<String>>,
    no_echo: BTreeSet<String>,
    /// Capability → why (`Resource LambdaRole (AWS::IAM::Role)`).
    needs: BTreeMap<&'static str, String>,
    code_updates: Vec<CodeUpdate>,
    inline_components: BTreeSet<String>,
    /// Nested templates uploaded to the keys the templates read: (key, sha256).
    fixed_templates: Vec<(String, String)>,
}

impl Packer<'_> {
    fn stack(&mut self, spec: &StackSpec, lookup: &dyn Fn(&str) -> Option<String>) -> Result<StackPlan, Error> {
        // What the template's parameters are known to be: the literals configured (an output
        // or an environment variable is given, but not known while planning).
        let given: BTreeMap<String, Option<String>> = spec
            .parameters
            .iter()
            .map(|(name, value)| {
                (name.clone(), if let ParameterValue::Literal(text) = value { Some(text.clone()) } else { None })
            })
            .collect();
        self.stack = spec.name.clone();
        self.mode = spec.artifact_mode;
        let packaged = self.template(&spec.template, &[], &mut Vec::new(), &given)?;
        for name in spec.parameters.keys() {
            if !packaged.declared.contains_key(name) {
                return Err(Error::UndeclaredParameter {
                    stack: spec.name.clone(),
                    parameter: name.clone(),
                    template: spec.template.clone(),
                    declared: packaged.declared.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        for (name, default) in &packaged.declared {
            if default.is_none() && !spec.parameters.contains_key(name) {
                return Err(Error::MissingParameter {
                    stack: spec.name.clone(),
                    parameter: name.clone(),
                    template: spec.template.clone(),
                });
            }
        }
        for (name, value) in &spec.parameters {
            if let ParameterValue::Env { env } = value
                && lookup(env).is_none()
            {
                return Err(Error::MissingEnvVar {
                    stack: spec.name.clone(),
                    parameter: name.clone(),
                    var: env.clone(),
                });
            }
        }
        for (capability, why) in &packaged.needs {
            let covered = spec.capabilities.contains(*capability)
                // Named IAM resources acknowledged cover unnamed ones too.
                || (*capability == "CAPABILITY_IAM" && spec.capabilities.contains("CAPABILITY_NAMED_IAM"));
            if !covered {
                return Err(Error::MissingCapability { stack: spec.name.clone(), capability, why: why.clone() });
            }
        }
        let template_key = (packaged.body.len() > MAX_TEMPLATE_BODY).then(|| {
            let key = self.key("templates", &spec.template, &packaged.sha256, "json");
            self.add(&spec.template, &key, &packaged.sha256, ArtifactContent::Template(packaged.body.clone()));
            key
        });
        Ok(StackPlan {
            name: spec.name.clone(),
            stack_name: spec.stack_name.clone(),
            template: spec.template.clone(),
            template_sha256: packaged.sha256,
            body: packaged.body,
            template_key,
            parameters: spec.parameters.clone(),
            declared: packaged.declared,
            no_echo: packaged.no_echo,
            tags: spec.tags.clone(),
            capabilities: spec.capabilities.iter().cloned().collect(),
            components: spec.components.clone(),
            depends_on: spec.depends_on.clone(),
            code_updates: packaged.code_updates,
            inline_components: packaged.inline_components,
            artifact_mode: spec.artifact_mode,
            fixed_templates: packaged.fixed_templates,
        })
    }

    fn key(&self, kind: &str, source: &str, sha256: &str, ext: &str) -> String {
        let stem = Path::new(source).file_stem().and_then(|s| s.to_str()).unwrap_or("artifact");
        let stem: String =
            stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
        let name = format!("{kind}/{stem}-{}.{ext}", &sha256[..16]);
        if self.env.key_prefix.is_empty() { name } else { format!("{}/{name}", self.env.key_prefix) }
    }

    fn add(&mut self, source: &str, key: &str, sha256: &str, content: ArtifactContent) -> u64 {
        self.insert_artifact(source, key, sha256, content, false)
    }

    /// An artifact under `key` unless one is there already; its size.
    fn insert_artifact(&mut self, source: &str, key: &str, sha256: &str, content: ArtifactContent, fixed: bool) -> u64 {
        let size = match &content {
            ArtifactContent::Template(bytes) => bytes.len() as u64,
            ArtifactContent::File(path) => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        };
        self.artifacts.entry(key.to_string()).or_insert_with(|| Artifact {
            source: source.to_string(),
            key: key.to_string(),
            sha256: sha256.to_string(),
            size,
            content,
            fixed,
        });
        size
    }

    fn url(&self, key: &str) -> String {
        // The virtual-host form is what CloudFormation (and the emulator) take for nested stacks.
        format!("https://{}.s3.amazonaws.com/{key}", self.env.artifact_bucket)
    }

    /// Reads, checks and rewrites one template; nested templates first. `given` holds the
    /// parameters its parent (or the config) passes it: `Some` when the value is known.
    fn template(
        &mut self,
        path: &str,
        logical: &[String],
        seen: &mut Vec<String>,
        given: &BTreeMap<String, Option<String>>,
    ) -> Result<Packaged, Error> {
        if seen.contains(&path.to_string()) || seen.len() > MAX_NESTING {
            return Err(Error::NestingLoop { template: path.to_string(), chain: seen.join(" -> ") });
        }
        seen.push(path.to_string());
        let full = self.inside(path, path)?;
        let bytes =
            pipeline_config::fs::read_regular(&full, MAX_TEMPLATE_URL_BYTES).map_err(|e| Error::io(&full, e))?;
        let root = cfn_template::parse_bytes(&bytes, &cfn_template::Limits::default())
            .map_err(|source| Error::Template { path: path.to_string(), source })?;
        let Some(resources) = root.get("Resources").filter(|r| r.is_map()) else {
            return Err(Error::NoResources { path: path.to_string() });
        };
        let mut declared = BTreeMap::new();
        let mut no_echo = BTreeSet::new();
        if let Some(parameters) = root.get("Parameters") {
            for (key, value) in parameters.entries() {
                declared
                    .insert(key.name.clone(), value.get("Default").map(|d| d.as_str().unwrap_or_default().to_string()));
                if value.get("NoEcho").is_some_and(is_true) {
                    no_echo.insert(key.name.clone());
                }
            }
        }
        let values = known_values(&declared, given, self.env.region.as_deref());
        let mut needs: BTreeMap<&'static str, String> = BTreeMap::new();
        if root.get("Transform").is_some() {
            needs.insert("CAPABILITY_AUTO_EXPAND", format!("{path} has a Transform"));
        }
        let dir = Path::new(path).parent().unwrap_or(Path::new("")).to_path_buf();
        let mut found = Found { needs, ..Found::default() };
        let here = InTemplate { path, dir: &dir, logical, values: &values };
        for (key, resource) in resources.entries() {
            self.resource(&here, key, resource, seen, &mut found)?;
        }
        let Found { needs, replacements, code_updates, inline_components, fixed_templates } = found;
        let extension = Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or_default();
        let unchanged =
            (replacements.is_empty() && !extension.is_empty() && extension.chars().all(|c| c.is_ascii_alphanumeric()))
                .then(|| (bytes.clone(), extension.to_ascii_lowercase()));
        let mut json = to_json(&root);
        if let Some(Json::Object(resources)) = json.get_mut("Resources") {
            for ((name, property), value) in replacements {
                if let Some(Json::Object(properties)) = resources.get_mut(&name).and_then(|r| r.get_mut("Properties")) {
                    properties.insert(property.to_string(), value);
                }
            }
        }
        let body = serde_json::to_vec(&json).map_err(|e| Error::io(&full, std::io::Error::other(e)))?;
        let sha256 = hex::encode(Sha256::digest(&body));
        seen.pop();
        Ok(Packaged {
            body,
            sha256,
            unchanged,
            declared,
            no_echo,
            needs,
            code_updates,
            inline_components,
            fixed_templates,
        })
    }

    /// One resource of a template: the capabilities it needs, and its nested template or
    /// Lambda code mapped (and rewritten, or uploaded to its fixed key).
    fn resource(
        &mut self,
        here: &InTemplate<'_>,
        key: &cfn_template::Key,
        resource: &Node,
        seen: &mut Vec<String>,
        found: &mut Found,
    ) -> Result<(), Error> {
        let (path, name) = (here.path, &key.name);
        let kind = resource.get("Type").and_then(Node::as_str).unwrap_or_default();
        let properties = resource.get("Properties");
        let prop = |p: &str| properties.and_then(|ps| ps.get(p));
        if kind.starts_with("AWS::IAM::") {
            let named = ["RoleName", "UserName", "GroupName", "ManagedPolicyName", "InstanceProfileName"]
                .iter()
                .any(|p| prop(p).is_some());
            if named {
                found
                    .needs
                    .entry("CAPABILITY_NAMED_IAM")
                    .or_insert_with(|| format!("{path}: {name} ({kind}) has a name"));
            }
            found.needs.entry("CAPABILITY_IAM").or_insert_with(|| format!("{path}: {name} is {kind}"));
        }
        if kind.starts_with("AWS::Serverless::") {
            found.needs.entry("CAPABILITY_AUTO_EXPAND").or_insert_with(|| format!("{path}: {name} is {kind}"));
        }
        match kind {
            "AWS::CloudFormation::Stack" => {
                self.nested_stack(here, name, prop("TemplateURL"), prop("Parameters"), seen, found)
            }
            "AWS::Lambda::Function" => self.function_code(here, key, "Code", prop("Code"), found),
            "AWS::Serverless::Function" => self.function_code(here, key, "CodeUri", prop("CodeUri"), found),
            _ => Ok(()),
        }
    }

    /// A nested stack: its template read (capabilities and parameters see it) and either
    /// rewritten to a content-addressed key or, for a stack in `fixed` mode whose URL names
    /// the artifact bucket, uploaded to exactly the key its URL reads.
    fn nested_stack(
        &mut self,
        here: &InTemplate<'_>,
        name: &str,
        url: Option<&Node>,
        parameters: Option<&Node>,
        seen: &mut Vec<String>,
        found: &mut Found,
    ) -> Result<(), Error> {
        let Some(url) = url else { return Ok(()) };
        let (child_path, location) = match url.as_str().filter(|v| is_local(v)) {
            Some(child) => (self.resolve(here.dir, child, here.path, name)?, None),
            None => match self.remote_template(url, here.values, here.path, name)? {
                Some((child, bucket, key)) => (child, Some((bucket, key))),
                None => return Ok(()),
            },
        };
        let at = Reference { template: here.path, line: url.pos.line, resource: name, property: "TemplateURL" };
        // In fixed mode the key the template reads must be in the artifact bucket.
        let fixed_key = match &location {
            Some((bucket, key)) if self.mode == ArtifactMode::Fixed => {
                match self.fixed_bucket(&at, bucket, key, "nested template")? {
                    Some(()) => Some(key.clone()),
                    None => return Ok(()),
                }
            }
            _ => None,
        };
        let mut child_logical = here.logical.to_vec();
        child_logical.push(name.to_string());
        // What the parent passes, resolved where it is known.
        let passed: BTreeMap<String, Option<String>> = parameters
            .map(Node::entries)
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| (k.name.clone(), resolve(v, here.values).filter(|v| !v.contains(UNKNOWN))))
            .collect();
        let packaged = self.template(&child_path, &child_logical, seen, &passed)?;
        for (capability, why) in packaged.needs {
            found.needs.entry(capability).or_insert(why);
        }
        found.code_updates.extend(packaged.code_updates);
        found.inline_components.extend(packaged.inline_components);
        found.fixed_templates.extend(packaged.fixed_templates);
        let (body, sha256, ext) = match packaged.unchanged {
            Some((bytes, ext)) => {
                let sha256 = hex::encode(Sha256::digest(&bytes));
                (bytes, sha256, ext)
            }
            None => (packaged.body, packaged.sha256, "json".to_string()),
        };
        if let Some(key) = fixed_key {
            self.add_fixed(&at, &child_path, &key, &sha256, ArtifactContent::Template(body))?;
            found.fixed_templates.push((key, sha256));
            return Ok(());
        }
        let key = self.key("templates", &child_path, &sha256, &ext);
        self.add(&child_path, &key, &sha256, ArtifactContent::Template(body));
        found.replacements.insert((name.to_string(), "TemplateURL"), Json::String(self.url(&key)));
        Ok(())
    }

    /// A function's code: a local path packaged and rewritten; an S3 reference mapped to its
    /// function, whose package goes to its fixed key (and, in `rewrite` mode, to a
    /// content-addressed key the code update reads).
    fn function_code(
        &mut self,
        here: &InTemplate<'_>,
        key: &cfn_template::Key,
        property: &'static str,
        code: Option<&Node>,
        found: &mut Found,
    ) -> Result<(), Error> {
        let (path, name) = (here.path, &key.name);
        if let Some(local) = code.and_then(Node::as_str).filter(|v| is_local(v)) {
            let code_path = self.resolve(here.dir, local, path, name)?;
            let (source, file, sha256) = self.zip_for(&code_path, path, name)?;
            if let Some(function) = self.inputs.functions.iter().find(|f| f.name == source) {
                found.inline_components.insert(function.component.clone());
            }
            let key = self.key("lambda", &source, &sha256, "zip");
            self.add(&source, &key, &sha256, ArtifactContent::File(file));
            let value = if property == "Code" {
                serde_json::json!({ "S3Bucket": self.env.artifact_bucket, "S3Key": key })
            } else {
                Json::String(format!("s3://{}/{key}", self.env.artifact_bucket))
            };
            found.replacements.insert((name.clone(), property), value);
            return Ok(());
        }
        let location = code.and_then(|code| code_location(code, here.values));
        let at =
            Reference { template: path, line: code.map_or(key.pos.line, |n| n.pos.line), resource: name, property };
        let Some((function, package)) = self.code_function(&at, location.as_ref())? else { return Ok(()) };
        self.check_code_owner(&at, &function, location.as_ref())?;
        let Some(package) = package else { return Ok(()) };
        let mut function_path = here.logical.to_vec();
        function_path.push(name.clone());
        let fixed_key = self.fixed_code_key(&at, &function, &package, location.as_ref())?;
        let update = match (self.mode, fixed_key) {
            // The code update reads the key the template reads: nothing else is uploaded.
            (ArtifactMode::Fixed, Some(fixed)) => {
                let component = function.component.clone();
                CodeUpdate {
                    function: package.name.clone(),
                    component,
                    path: function_path,
                    package,
                    key: fixed,
                    fixed_key: None,
                }
            }
            (ArtifactMode::Fixed, None) => return Ok(()),
            (ArtifactMode::Rewrite, fixed_key) => {
                let mut update = function_path_update(self, &package, function_path);
                update.fixed_key = fixed_key;
                update
            }
        };
        found.code_updates.push(update);
        Ok(())
    }

    /// A fixed code key read by resources of two functions: one zip would overwrite the other.
    fn check_code_owner(
        &mut self,
        at: &Reference<'_>,
        function: &FunctionSpec,
        location: Option<&(String, String)>,
    ) -> Result<(), Error> {
        let Some((bucket, key)) = location else { return Ok(()) };
        let place = format!("{bucket}/{key}");
        let Some(other) = self.code_owners.insert(place, function.name.clone()).filter(|o| o != &function.name) else {
            return Ok(());
        };
        Err(Error::RemoteReference(Box::new(crate::RemoteReference {
            template: at.template.to_string(),
            line: at.line,
            resource: at.resource.to_string(),
            property: at.property,
            reference: shown(&format!("s3://{bucket}/{key}")),
            problem: format!(
                "is the code key of function `{}` and also of function `{other}`: one zip would overwrite the other",
                function.name
            ),
            fix: "give each function its own S3Key, or map both resources to one function".into(),
        })))
    }

    /// In `fixed` mode, whether a key the template reads can be uploaded to: `Some` when its
    /// bucket is the artifact bucket; otherwise refused (or, with `allow_remote`, a warning and
    /// `None`: left as it is).
    fn fixed_bucket(&mut self, at: &Reference<'_>, bucket: &str, key: &str, what: &str) -> Result<Option<()>, Error> {
        if bucket == self.env.artifact_bucket && unknown_name(key).is_none() {
            return Ok(Some(()));
        }
        self.refuse(
            at,
            shown(&format!("s3://{bucket}/{key}")),
            format!(
                "is not in the artifact bucket `{}` (or not known while planning), so the {what} cannot be uploaded to the key the template reads",
                self.env.artifact_bucket
            ),
            format!(
                "pass the artifact bucket to the template (a parameter of [deploy.stacks.{}] parameters), or set artifact_mode = \"rewrite\" on the stack",
                self.stack
            ),
        )
    }

    /// An object uploaded to a key the template reads; a key that two references fill with
    /// different content is refused, naming both.
    fn add_fixed(
        &mut self,
        at: &Reference<'_>,
        source: &str,
        key: &str,
        sha256: &str,
        content: ArtifactContent,
    ) -> Result<(), Error> {
        if let Some(other) = self.artifacts.get(key).filter(|a| a.sha256 != sha256) {
            return Err(Error::RemoteReference(Box::new(crate::RemoteReference {
                template: at.template.to_string(),
                line: at.line,
                resource: at.resource.to_string(),
                property: at.property,
                reference: format!("s3://{}/{key}", self.env.artifact_bucket),
                problem: format!("is `{source}`, but `{}` also goes to that key, with other content", other.source),
                fix: "give each its own key".into(),
            })));
        }
        self.insert_artifact(source, key, sha256, content, true);
        Ok(())
    }

    /// The repository template a nested stack's S3 `TemplateURL` names: the file
    /// `[deploy.artifacts] templates` maps its key to, else the longest tail of the key that
    /// is a file of the repository, with the URL's bucket and key. `None` (with a warning)
    /// only with `allow_remote`.
    fn remote_template(
        &mut self,
        url: &Node,
        values: &BTreeMap<String, String>,
        template: &str,
        resource: &str,
    ) -> Result<Option<(String, String, String)>, Error> {
        let resolved = resolve(url, values);
        let at = Reference { template, line: url.pos.line, resource, property: "TemplateURL" };
        let shown = resolved.as_deref().map_or_else(|| "(an expression)".to_string(), shown);
        let fix_map = format!(
            "map its key to the file with [deploy.artifacts] templates = {{ \"KEY\" = \"cfn/FILE.yaml\" }}, use a local path, or set [deploy.artifacts] allow_remote = true to deploy {} as it is",
            "it"
        );
        let Some((bucket, key)) = resolved.as_deref().and_then(s3_location) else {
            return self.refuse(
                &at,
                shown,
                "is not an S3 URL the deployer can read (`https://s3.amazonaws.com/BUCKET/KEY`, `https://BUCKET.s3.REGION.amazonaws.com/KEY`, `s3://BUCKET/KEY`, from a string, !Sub or !Join)".into(),
                fix_map,
            );
        };
        if let Some(name) = unknown_name(&key) {
            return self.refuse(
                &at,
                shown,
                format!("builds its key from `{name}`, whose value is not known while planning"),
                format!(
                    "give `{name}` a literal value (in [deploy.stacks.NAME] parameters, or a Default), or {fix_map}"
                ),
            );
        }
        if let Some(mapped) = self.env.artifacts.templates.get(&key) {
            return match self.inside(mapped, template) {
                Ok(full) if full.is_file() => Ok(Some((mapped.clone(), bucket, key))),
                _ => self.refuse(
                    &at,
                    shown,
                    format!(
                        "is mapped by [deploy.artifacts] templates to `{mapped}`, which is no file of the repository"
                    ),
                    "fix the mapping".into(),
                ),
            };
        }
        let parts: Vec<&str> = key.split('/').filter(|p| !p.is_empty()).collect();
        let found = (0..parts.len()).map(|i| parts[i..].join("/")).find(|candidate| {
            !candidate.split('/').any(|p| p == ".." || p == ".")
                && self.inside(candidate, template).is_ok_and(|full| full.is_file())
        });
        match found {
            Some(path) => Ok(Some((path, bucket, key))),
            None => self.refuse(
                &at,
                shown,
                format!("has the key `{key}`, and no tail of it is a file of the repository"),
                fix_map,
            ),
        }
    }

    /// A reference nothing maps: an error, or with `allow_remote` a warning and `None`.
    fn refuse<T>(
        &mut self,
        at: &Reference<'_>,
        reference: String,
        problem: String,
        fix: String,
    ) -> Result<Option<T>, Error> {
        if self.env.artifacts.allow_remote {
            self.warnings.push(format!(
                "{}:{}: {} {} `{reference}` {problem}; deployed as it is ([deploy.artifacts] allow_remote)",
                at.template, at.line, at.resource, at.property
            ));
            return Ok(None);
        }
        Err(Error::RemoteReference(Box::new(crate::RemoteReference {
            template: at.template.to_string(),
            line: at.line,
            resource: at.resource.to_string(),
            property: at.property,
            reference,
            problem,
            fix,
        })))
    }

    /// The function of `[lambda.functions]` whose code a function resource reads from S3, and
    /// its package in the run: declared by `template` + `resource`, else mapped by
    /// `[deploy.artifacts] functions`, else named after the zip. `None` when the run has no
    /// package for it and needs none (no manifest, or its component did not change).
    fn code_function(
        &mut self,
        at: &Reference<'_>,
        location: Option<&(String, String)>,
    ) -> Result<Option<(FunctionSpec, Option<Package>)>, Error> {
        let functions = self.inputs.functions;
        let declared = functions.iter().find(|f| {
            f.template.as_ref().is_some_and(|(t, r)| t.trim_start_matches("./") == at.template && r == at.resource)
        });
        let function = match (declared, location) {
            (Some(function), _) => function,
            // Inline code (`ZipFile`), an image, or nothing the deployer reads.
            (None, None) => return Ok(None),
            (None, Some((bucket, key))) => {
                let reference = shown(&format!("s3://{bucket}/{key}"));
                let fix = format!(
                    "declare the function with `template = \"{}\"` and `resource = \"{}\"` in [lambda.functions.NAME], map the key with [deploy.artifacts] functions = {{ \"KEY\" = \"NAME\" }}, or set [deploy.artifacts] allow_remote = true to leave its code as it is",
                    at.template, at.resource
                );
                if let Some(name) = self.env.artifacts.functions.get(key) {
                    match functions.iter().find(|f| &f.name == name) {
                        Some(function) => function,
                        None => {
                            return self.refuse(
                                at,
                                reference,
                                format!("is mapped by [deploy.artifacts] functions to `{name}`, which is no function of [lambda.functions]"),
                                "fix the mapping".into(),
                            );
                        }
                    }
                } else {
                    let stem = key.rsplit('/').next().unwrap_or(key).trim_end_matches(".zip");
                    match functions.iter().find(|f| f.name == stem) {
                        Some(function) if unknown_name(key).is_none() => function,
                        _ => {
                            let problem = match unknown_name(key) {
                                Some(name) => format!("builds its key from `{name}`, whose value is not known while planning, and no function declares this resource"),
                                None => "names no function of [lambda.functions] (by `template` and `resource`, or by the zip's name)".to_string(),
                            };
                            return self.refuse(at, reference, problem, fix);
                        }
                    }
                }
            }
        };
        let package = self.inputs.manifest.and_then(|m| m.packages.iter().find(|p| p.name == function.name));
        match package {
            Some(package) => Ok(Some((function.clone(), Some(package.clone())))),
            None => {
                let needed = self.inputs.manifest.is_some()
                    && self.inputs.changed.is_some_and(|changed| changed.contains(&function.component));
                if needed {
                    return Err(Error::RemoteReference(Box::new(crate::RemoteReference {
                        template: at.template.to_string(),
                        line: at.line,
                        resource: at.resource.to_string(),
                        property: at.property,
                        reference: location.map_or_else(String::new, |(b, k)| shown(&format!("s3://{b}/{k}"))),
                        problem: format!(
                            "is function `{}`, which changed, and the run has no package for it",
                            function.name
                        ),
                        fix: "run `lambda-packager` for this run (without --only) first".into(),
                    })));
                }
                Ok(Some((function.clone(), None)))
            }
        }
    }

    /// The key the template reads a function's code from, when its bucket is the environment's
    /// artifact bucket: the package goes there too. Another bucket (or one not known while
    /// planning) is left alone, with a warning: the code is still updated after the stack.
    fn fixed_code_key(
        &mut self,
        at: &Reference<'_>,
        function: &FunctionSpec,
        package: &Package,
        location: Option<&(String, String)>,
    ) -> Result<Option<String>, Error> {
        let Some((bucket, key)) = location else { return Ok(None) };
        if self.mode == ArtifactMode::Fixed {
            if self.fixed_bucket(at, bucket, key, "package")?.is_none() {
                return Ok(None);
            }
            self.add_fixed(at, &package.name, key, &package.sha256, ArtifactContent::File(package.path.clone()))?;
            return Ok(Some(key.clone()));
        }
        if bucket != &self.env.artifact_bucket || unknown_name(key).is_some() {
            self.warnings.push(format!(
                "{}:{}: {} {} `{}` is not in the artifact bucket `{}` (or not known while planning): function `{}` is updated after the stack, and that key is left as it is",
                at.template,
                at.line,
                at.resource,
                at.property,
                shown(&format!("s3://{bucket}/{key}")),
                self.env.artifact_bucket,
                function.name
            ));
            return Ok(None);
        }
        self.add_fixed(at, &package.name, key, &package.sha256, ArtifactContent::File(package.path.clone()))?;
        Ok(Some(key.clone()))
    }

    /// A path relative to a template's folder, as a monorepo-relative path that stays inside it.
    fn resolve(&self, dir: &Path, relative: &str, template: &str, resource: &str) -> Result<String, Error> {
        let mut parts: Vec<String> = Vec::new();
        for component in dir.join(relative).components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                Component::ParentDir if !parts.is_empty() => {
                    parts.pop();
                }
                _ => {
                    return Err(Error::LocalArtifact {
                        template: template.to_string(),
                        resource: resource.to_string(),
                        path: relative.to_string(),
                        problem: "leads outside the monorepo".into(),
                    });
                }
            }
        }
        let joined = parts.join("/");
        self.inside(&joined, template).map_err(|_| Error::LocalArtifact {
            template: template.to_string(),
            resource: resource.to_string(),
            path: relative.to_string(),
            problem: "does not exist, or leads outside the monorepo through a link".into(),
        })?;
        Ok(joined)
    }

    /// The full path of a monorepo-relative path, refused when a link leads it outside.
    fn inside(&self, path: &str, template: &str) -> Result<PathBuf, Error> {
        let full = self.repo.join(path);
        let real = full.canonicalize().map_err(|e| Error::io(&full, e))?;
        if !real.starts_with(self.repo) {
            return Err(Error::LocalArtifact {
                template: template.to_string(),
                resource: String::new(),
                path: path.to_string(),
                problem: format!("links to {}, outside the monorepo", real.display()),
            });
        }
        Ok(real)
    }

    /// The zip for a local `Code` path: the package of the function whose source it is, or the
    /// path itself when it is a `.zip`.
    fn zip_for(&self, code_path: &str, template: &str, resource: &str) -> Result<(String, PathBuf, String), Error> {
        let function = self
            .inputs
            .functions
            .iter()
            .find(|f| f.sources.iter().any(|s| s.from.trim_end_matches('/') == code_path.trim_end_matches('/')));
        if let Some(function) = function {
            let package = self.inputs.manifest.and_then(|m| m.packages.iter().find(|p| p.name == function.name));
            return match package {
                Some(package) => Ok((function.name.clone(), package.path.clone(), package.sha256.clone())),
                None => Err(Error::LocalArtifact {
                    template: template.to_string(),
                    resource: resource.to_string(),
                    path: code_path.to_string(),
                    problem: format!(
                        "is function `{}` but the run has no package for it; run `lambda-packager` for this run first",
                        function.name
                    ),
                }),
            };
        }
        if code_path.ends_with(".zip") {
            let full = self.repo.join(code_path);
            let bytes = pipeline_config::fs::read_regular(&full, lambda_packager::MAX_ZIP_BYTES)
                .map_err(|e| Error::io(&full, e))?;
            return Ok((code_path.to_string(), full, hex::encode(Sha256::digest(&bytes))));
        }
        Err(Error::LocalArtifact {
            template: template.to_string(),
            resource: resource.to_string(),
            path: code_path.to_string(),
            problem:
                "is neither a function of [lambda.functions] (by its `sources`) nor a .zip; declare the function there"
                    .into(),
        })
    }
}

fn function_path_update(packer: &mut Packer<'_>, package: &Package, path: Vec<String>) -> CodeUpdate {
    let package = package.clone();
    let key = packer.key("lambda", &package.name, &package.sha256, "zip");
    // Only a package that changed in the run is uploaded (and its function's code compared).
    if package.changed {
        packer.add(&package.name, &key, &package.sha256, ArtifactContent::File(package.path.clone()));
    }
    let component = packer
        .inputs
        .functions
        .iter()
        .find(|f| f.name == package.name)
        .map_or_else(|| package.name.clone(), |f| f.component.clone());
    CodeUpdate { function: package.name.clone(), component, path, package, key, fixed_key: None }
}

/// Where a function's code is read from S3: `(bucket, key)` as far as they are known.
fn code_location(code: &Node, values: &BTreeMap<String, String>) -> Option<(String, String)> {
    if code.intrinsic().is_none() && code.is_map() {
        let part = |names: &[&str]| names.iter().find_map(|n| code.get(n)).and_then(|n| resolve(n, values));
        let key = part(&["S3Key", "Key"])?;
        let bucket = part(&["S3Bucket", "Bucket"]).unwrap_or_else(|| unknown("S3Bucket"));
        return Some((bucket, key));
    }
    s3_location(&resolve(code, values)?)
}

/// What stands for a value not known while planning, inside a resolved string.
const UNKNOWN: char = '\u{1}';

fn unknown(name: &str) -> String {
    format!("{UNKNOWN}{name}{UNKNOWN}")
}

/// The first value not known in a resolved string.
fn unknown_name(text: &str) -> Option<&str> {
    let start = text.find(UNKNOWN)? + UNKNOWN.len_utf8();
    let end = text[start..].find(UNKNOWN)?;
    Some(&text[start..start + end])
}

/// A resolved string as the template writes it: unknown values as `${NAME}`.
fn shown(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split(UNKNOWN).enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "${{{part}}}");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// A string-valued expression with what is known filled in (a literal, `Ref`, `Fn::Sub` in
/// both forms, `Fn::Join`); what is not known stays as a marker ([`unknown_name`]). `None` for
/// any other form.
fn resolve(node: &Node, values: &BTreeMap<String, String>) -> Option<String> {
    if let Some(text) = node.as_str() {
        return Some(text.to_string());
    }
    let (function, argument) = node.intrinsic()?;
    match function.name.as_str() {
        "Ref" => {
            let name = argument.as_str()?;
            Some(values.get(name).cloned().unwrap_or_else(|| unknown(name)))
        }
        "Fn::Sub" => {
            let (text, variables) = match argument.as_str() {
                Some(text) => (text, None),
                None => (argument.items().first()?.as_str()?, argument.items().get(1)),
            };
            let mut local = values.clone();
            for (key, value) in variables.map(Node::entries).unwrap_or_default() {
                local.insert(key.name.clone(), resolve(value, values).unwrap_or_else(|| unknown(&key.name)));
            }
            Some(substitute(text, &local))
        }
        "Fn::Join" => {
            let [separator, parts] = argument.items() else { return None };
            let parts: Option<Vec<String>> = parts.items().iter().map(|p| resolve(p, values)).collect();
            Some(parts?.join(separator.as_str()?))
        }
        _ => None,
    }
}

/// `Fn::Sub`'s `${NAME}` (and `${!literal}`) filled from `values`.
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        if let Some(literal) = after.strip_prefix('!') {
            out.push_str("${");
            rest = literal;
            continue;
        }
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        out.push_str(&values.get(name).cloned().unwrap_or_else(|| unknown(name)));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `(bucket, key)` of an S3 URL: `s3://BUCKET/KEY`, path-style
/// `https://s3[.-]REGION.amazonaws.com/BUCKET/KEY` and virtual-hosted
/// `https://BUCKET.s3[.-]REGION.amazonaws.com/KEY`.
fn s3_location(url: &str) -> Option<(String, String)> {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/')?;
        return (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()));
    }
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    if host.starts_with("s3.") || host.starts_with("s3-") {
        let (bucket, key) = path.split_once('/')?;
        return (!bucket.is_empty() && !key.is_empty()).then(|| (bucket.to_string(), key.to_string()));
    }
    let at = host.find(".s3.").or_else(|| host.find(".s3-"))?;
    (at > 0 && !path.is_empty()).then(|| (host[..at].to_string(), path.to_string()))
}

/// Where a reference is, for its error.
struct Reference<'a> {
    template: &'a str,
    line: u32,
    resource: &'a str,
    property: &'static str,
}

fn is_local(value: &str) -> bool {
    !(value.starts_with("https://") || value.starts_with("http://") || value.starts_with("s3://") || value.is_empty())
}

/// The template as JSON (short forms are already long forms in the tree).
fn to_json(node: &Node) -> Json {
    match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Number(text) => {
            let digits = text.trim_start_matches('-');
            let leading_zero = digits.len() > 1 && digits.starts_with('0') && digits.as_bytes()[1].is_ascii_digit();
            match text.parse::<serde_json::Number>() {
                // `0755` or `+1` would not read back as written: keep them as text.
                Ok(number) if !leading_zero && !text.starts_with('+') => Json::Number(number),
                _ => Json::String(text.clone()),
            }
        }
        Value::String(text) => Json::String(text.clone()),
        Value::Seq(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (key, value) in entries {
                map.insert(key.name.clone(), to_json(value));
            }
            Json::Object(map)
        }
    }
}
