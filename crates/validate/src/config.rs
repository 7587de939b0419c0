//! `[validate]` in `pipeline.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use pipeline_config::{ConfigError, ConfigFile, Spanned};
use serde::Deserialize;

use crate::Severity;
use crate::cfnlintrc::CfnLintRc;

/// `[validate]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidateSettings {
    /// Globs of the CloudFormation templates among a component's files.
    pub templates: Vec<Spanned<String>>,
    /// Rule IDs (or prefixes such as `W`) never reported, for every template.
    pub ignore_checks: Vec<String>,
    /// The lowest severity that fails the stage.
    pub fail_on: Severity,
    /// Whether the files of changed components are scanned for secrets.
    pub secrets: bool,
    /// A file of regexes (one per line) whose matching lines are not secrets.
    pub secrets_allowlist: Option<String>,
    /// How many external tools run at once (the number of CPUs when unset).
    pub parallelism: Option<usize>,
    /// External tools, by name.
    pub tools: BTreeMap<String, ToolSettings>,
    /// The regions the templates are for (cfn-lint's names, or `ALL_REGIONS`): a resource
    /// type missing in one of them is E3006. Combined with `.cfnlintrc`'s `regions` (the
    /// union); `us-east-1` when neither names any ([`ValidateSettings::regions`]).
    pub regions: Vec<Spanned<String>>,
    /// The repository's cfn-lint settings (not in `pipeline.toml`: read from `.cfnlintrc` by
    /// [`crate::settings`] with [`CfnLintRc::load`]).
    #[serde(skip)]
    pub cfnlintrc: CfnLintRc,
    /// The templates deployed as a body: the top-level stacks of `[deploy]` (read from it by
    /// [`ValidateSettings::from_config`]; empty when there is none: every template). Only they
    /// get P1002 (a body over 51,200 bytes); a nested template is deployed by URL.
    #[serde(skip)]
    pub body_templates: Vec<String>,
    /// `[validate.dependencies]`: pinned Python requirements and `package-lock.json` files of
    /// changed components checked against a local OSV advisory database.
    pub dependencies: Option<crate::dependencies::DependencySettings>,
}

/// What validate reads of `[deploy]` (stack-deployer owns and checks the section).
#[derive(Debug, Default, Deserialize)]
struct DeployTemplates {
    #[serde(default)]
    stacks: BTreeMap<String, DeployStack>,
}

#[derive(Debug, Deserialize)]
struct DeployStack {
    template: Option<String>,
}

impl Default for ValidateSettings {
    fn default() -> Self {
        ValidateSettings {
            templates: ["**/*.template", "cfn/**/*.yaml", "cfn/**/*.yml", "cfn/**/*.json"]
                .into_iter()
                .map(|glob| Spanned::new(0..0, glob.to_string()))
                .collect(),
            ignore_checks: Vec::new(),
            fail_on: Severity::Error,
            secrets: true,
            secrets_allowlist: None,
            parallelism: None,
            tools: BTreeMap::new(),
            regions: Vec::new(),
            cfnlintrc: CfnLintRc::default(),
            body_templates: Vec::new(),
            dependencies: None,
        }
    }
}

impl ValidateSettings {
    /// The section of `pipeline.toml` this crate owns.
    pub const SECTION: &'static str = "validate";

    /// Parses and checks `[validate]`: template globs compile (a bad one names its line) and
    /// tool names are safe as file names.
    pub fn from_config(config: &ConfigFile) -> Result<ValidateSettings, ConfigError> {
        let mut settings: ValidateSettings = config.section(Self::SECTION)?;
        // stack-deployer reports a malformed [deploy]; here it only means "every template".
        settings.body_templates = config
            .section::<DeployTemplates>("deploy")
            .map(|deploy| {
                deploy
                    .stacks
                    .into_values()
                    .filter_map(|s| s.template)
                    .map(|t| t.trim_start_matches("./").to_string())
                    .collect()
            })
            .unwrap_or_default();
        settings.template_globs(config)?;
        for region in &settings.regions {
            let name = region.get_ref().as_str();
            if name != "ALL_REGIONS" && !crate::cfnlintrc::REGIONS.contains(&name) {
                return Err(ConfigError::at(
                    &config.path,
                    &config.text,
                    region.span(),
                    "validate.regions",
                    format!("`{name}` is not a region cfn-lint knows (such as us-east-1), nor ALL_REGIONS"),
                ));
            }
        }
        for name in settings.tools.keys() {
            pipeline_config::check_name(name).map_err(|message| ConfigError {
                file: config.path.clone(),
                line: None,
                key: format!("validate.tools.{name}"),
                message,
                source: None,
            })?;
        }
        Ok(settings)
    }

    /// The regions the native checks are for: `[validate] regions` and `.cfnlintrc`'s
    /// `regions` together, each once, in the order written (none: the rules' default,
    /// us-east-1).
    pub fn regions(&self) -> Vec<String> {
        let mut regions: Vec<String> = Vec::new();
        for region in self.regions.iter().map(|r| r.get_ref()).chain(&self.cfnlintrc.regions) {
            if !regions.contains(region) {
                regions.push(region.clone());
            }
        }
        regions
    }

    /// The template globs as one set.
    pub fn template_globs(&self, config: &ConfigFile) -> Result<globset::GlobSet, ConfigError> {
        pipeline_config::glob_set(
            &config.path,
            &config.text,
            self.templates.iter().map(|g| (g.get_ref().as_str(), g.span())),
            "validate.templates",
        )
    }
}

/// `[validate.tools.NAME]`: an external linter run when one of its components changed.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ToolSettings {
    /// Components whose change runs it.
    pub components: Vec<String>,
    /// The command, run with `sh -c` from the monorepo root; its stdout is parsed by `format`.
    pub run: String,
    /// How its stdout reads: `cfn-lint` (`-f json`), `ruff` (`--output-format json`), `eslint` (`-f json`),
    /// `pip-audit` (`-f json`), `npm-audit` (`npm audit --json`), or `text`.
    #[serde(default)]
    pub format: ToolFormat,
    /// How to install it, shown when it is missing.
    #[serde(default)]
    pub install: Option<String>,
    /// How long it may run (10 minutes when unset).
    #[serde(default, deserialize_with = "pipeline_config::duration")]
    pub timeout: Option<Duration>,
    /// Run it only when one of its components changed files of its own (or a global input
    /// changed), not when they changed only through their dependencies: for linters that read
    /// only the component's own files (cfn-lint on templates, a formatter). Off by default,
    /// since a type checker reads its dependencies too.
    #[serde(default)]
    pub own_changes_only: bool,
}

/// A tool's output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolFormat {
    /// `cfn-lint -f json`.
    CfnLint,
    /// `ruff check --output-format json`.
    Ruff,
    /// `eslint -f json`.
    Eslint,
    /// `pip-audit -f json`: each vulnerable package a `D001` finding.
    PipAudit,
    /// `npm audit --json`: each vulnerable package a `D001` finding.
    NpmAudit,
    /// Anything else: a non-zero exit is one finding, the output kept in the log.
    #[default]
    Text,
}
