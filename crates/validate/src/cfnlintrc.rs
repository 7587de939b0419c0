//! The repository's own cfn-lint settings (`.cfnlintrc`, `.cfnlintrc.yaml` or `.cfnlintrc.yml`
//! at the repository root, the first that exists, as cfn-lint looks for them in the folder it
//! runs in), applied to the native checks as cfn-lint applies them:
//!
//! - `ignore_checks`: rule IDs or prefixes (`W`, `E30`) not reported;
//! - `include_checks`: prefixes of rules on beside the default `E` and `W` (cfn-lint's `I`
//!   rules are off otherwise; the native `P` rules, which cfn-lint does not have, are always on);
//! - `mandatory_checks`: reported even when `ignore_checks` names them;
//! - `templates`: globs of templates, checked beside `[validate] templates`;
//! - `ignore_templates`: globs of files never checked as templates;
//! - `regions`: the regions the templates are for, checked against cfn-lint's list (no native
//!   rule depends on the region yet; the list is kept for the ones that will).
//!
//! Keys cfn-lint knows but that do not concern the native checks (`configure_rules`,
//! `append_rules`, `format` …) are accepted and left to cfn-lint; an unknown key, or a
//! value that is not a list where cfn-lint wants one, is refused as cfn-lint refuses it. The
//! user-level `~/.cfnlintrc` is not read: a pipeline's result does not depend on who runs it.
//!
//! ```
//! let rc = validate::cfnlintrc::CfnLintRc::parse(
//!     ".cfnlintrc.yaml".as_ref(),
//!     "ignore_checks: [W3005, E30]\nmandatory_checks: [E3001]\nignore_templates: [cfn/old/*.yaml]\n",
//! )
//! .unwrap();
//! assert!(!rc.enabled("W3005"));
//! assert!(!rc.enabled("E3004"));
//! assert!(rc.enabled("E3001"), "mandatory wins over ignore");
//! assert!(!rc.enabled("I3011"), "informational rules are off unless included");
//! assert!(rc.ignores_template("cfn/old/stack.yaml"));
//! ```

use std::path::{Path, PathBuf};

use globset::GlobSet;
use pipeline_config::ConfigError;

use crate::node::{Node, Value};

/// The file names cfn-lint reads, in its order.
pub const FILE_NAMES: &[&str] = &[".cfnlintrc", ".cfnlintrc.yaml", ".cfnlintrc.yml"];

/// The largest settings file read.
const MAX_BYTES: u64 = 1024 * 1024;

/// The regions cfn-lint 1.58.0 knows (`cfnlint.helpers.REGIONS`).
pub const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-west-1",
    "ca-central-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-south-1",
    "me-central-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isob-west-1",
    "us-isof-east-1",
    "us-isof-south-1",
    "eu-isoe-west-1",
    "eusc-de-east-1",
];

/// Keys cfn-lint's settings schema knows and the native checks leave to cfn-lint.
const LEFT_TO_CFN_LINT: &[&str] = &[
    "append_rules",
    "configure_rules",
    "custom_rules",
    "debug",
    "deployment_files",
    "format",
    "ignore_bad_template",
    "include_experimental",
    "merge_configs",
    "non_zero_exit_code",
    "output_file",
    "override_spec",
    "parameter_files",
    "parameters",
    "registry_schemas",
    "template_parameters",
];

/// The settings that concern the native checks; [`CfnLintRc::default`] when there is no file.
#[derive(Debug, Clone, Default)]
pub struct CfnLintRc {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// `ignore_checks`.
    pub ignore_checks: Vec<String>,
    /// `include_checks`.
    pub include_checks: Vec<String>,
    /// `mandatory_checks`.
    pub mandatory_checks: Vec<String>,
    /// `templates` (globs, relative to the repository root).
    pub templates: Vec<String>,
    /// `ignore_templates` (globs, relative to the repository root).
    pub ignore_templates: Vec<String>,
    /// `regions`.
    pub regions: Vec<String>,
    template_set: GlobSet,
    ignore_set: GlobSet,
}

impl CfnLintRc {
    /// Reads the first of [`FILE_NAMES`] that exists at the repository root (a regular file,
    /// at most 1 MiB); none is no settings.
    pub fn load(repo: &Path) -> Result<CfnLintRc, crate::Error> {
        for name in FILE_NAMES {
            let path = repo.join(name);
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                continue;
            }
            let bytes = run_state::fs::read_regular(&path, MAX_BYTES)
                .map_err(|source| pipeline_config::ReadError { file: path.clone(), source })?;
            let text = String::from_utf8(bytes)
                .map_err(|_| ConfigError::file(&path, "is not UTF-8: save it as UTF-8".to_string()))?;
            let mut rc = CfnLintRc::parse(Path::new(name), &text)?;
            rc.file = Some(path.clone());
            return Ok(rc);
        }
        Ok(CfnLintRc::default())
    }

    /// Parses a settings file's text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<CfnLintRc, ConfigError> {
        let error = |line: Option<u32>, key: &str, message: String| config_error(file, line, key, message);
        let root =
            crate::parse(text).map_err(|e| error(Some(e.pos.line), "", format!("is not YAML: {}", e.message)))?;
        let mut rc = CfnLintRc { file: Some(file.to_path_buf()), ..CfnLintRc::default() };
        if matches!(root.value, Value::Null) {
            return Ok(rc);
        }
        if !root.is_map() {
            return Err(error(Some(root.pos.line), "", "must be a map of settings (ignore_checks: [...], …)".into()));
        }
        for (key, value) in root.entries() {
            let list = || -> Result<Vec<String>, ConfigError> {
                let Value::Seq(items) = &value.value else {
                    return Err(error(
                        Some(key.pos.line),
                        &key.name,
                        "must be a list, as cfn-lint wants it (write `[W3005]`, not `W3005`)".into(),
                    ));
                };
                items
                    .iter()
                    .map(|item| match &item.value {
                        Value::String(text) | Value::Number(text) => Ok(text.clone()),
                        _ => Err(error(Some(item.pos.line), &key.name, "takes strings only".into())),
                    })
                    .collect()
            };
            match key.name.as_str() {
                "ignore_checks" => rc.ignore_checks = list()?,
                "include_checks" => rc.include_checks = list()?,
                "mandatory_checks" => rc.mandatory_checks = list()?,
                "templates" => rc.templates = list()?,
                "ignore_templates" => rc.ignore_templates = list()?,
                "regions" => {
                    rc.regions = list()?;
                    check_regions(&rc.regions).map_err(|m| error(Some(key.pos.line), "regions", m))?;
                }
                other if LEFT_TO_CFN_LINT.contains(&other) => {}
                other => {
                    return Err(error(
                        Some(key.pos.line),
                        other,
                        "is not a cfn-lint setting: remove it (cfn-lint refuses it too)".into(),
                    ));
                }
            }
        }
        let globs = |key: &str, patterns: &[String], node: Option<&Node>| {
            glob_set(patterns).map_err(|bad| match bad {
                BadGlobs::Pattern(message) => error(node.map(|n| n.pos.line), key, message),
                BadGlobs::Set(cause) => {
                    let mut e = error(node.map(|n| n.pos.line), key, "the globs cannot be built into one set".into());
                    e.source = Some(pipeline_config::Cause::new(cause));
                    e
                }
            })
        };
        rc.template_set = globs("templates", &rc.templates, root.get("templates"))?;
        rc.ignore_set = globs("ignore_templates", &rc.ignore_templates, root.get("ignore_templates"))?;
        Ok(rc)
    }

    /// Whether findings of `rule` are reported: its prefix is on (`E`, `W`, the native `P`, or
    /// `include_checks`), and it is mandatory or not ignored.
    pub fn enabled(&self, rule: &str) -> bool {
        let starts = |list: &[String]| list.iter().any(|p| !p.is_empty() && rule.starts_with(p.as_str()));
        let on = ["E", "W", "P"].iter().any(|p| rule.starts_with(p)) || starts(&self.include_checks);
        on && (starts(&self.mandatory_checks) || !starts(&self.ignore_checks))
    }

    /// Whether `templates` names this repository-relative path.
    pub fn names_template(&self, path: &str) -> bool {
        self.template_set.is_match(path)
    }

    /// Whether `ignore_templates` leaves this repository-relative path out.
    pub fn ignores_template(&self, path: &str) -> bool {
        self.ignore_set.is_match(path)
    }

    /// One line on what the file sets, for the plan.
    pub fn describe(&self) -> Option<String> {
        let file = self.file.as_ref()?;
        let mut parts = Vec::new();
        for (key, list) in [
            ("ignore_checks", &self.ignore_checks),
            ("include_checks", &self.include_checks),
            ("mandatory_checks", &self.mandatory_checks),
            ("templates", &self.templates),
            ("ignore_templates", &self.ignore_templates),
            ("regions", &self.regions),
        ] {
            if !list.is_empty() {
                parts.push(format!("{key} [{}]", list.join(", ")));
            }
        }
        let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
        Some(format!(
            "cfn-lint settings from {name}: {}",
            if parts.is_empty() { "none for the native checks".into() } else { parts.join(", ") }
        ))
    }
}

/// An error of the settings file `file`, at `line` when known.
fn config_error(file: &Path, line: Option<u32>, key: &str, message: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: line.map(|l| l as usize),
        key: key.to_string(),
        message,
        source: None,
    }
}

/// `regions`: each one cfn-lint knows, or `ALL_REGIONS`.
fn check_regions(regions: &[String]) -> Result<(), String> {
    let unknown: Vec<&str> =
        regions.iter().map(String::as_str).filter(|r| *r != "ALL_REGIONS" && !REGIONS.contains(r)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(format!("{} not a region cfn-lint knows (such as us-east-1), nor ALL_REGIONS", unknown.join(", ")))
}

/// The glob set of `templates` or `ignore_templates` (a leading `./` dropped, as cfn-lint does).
fn glob_set(patterns: &[String]) -> Result<GlobSet, BadGlobs> {
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in patterns {
        let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
        let glob = pipeline_config::glob(pattern)
            .map_err(|e| BadGlobs::Pattern(format!("`{pattern}` is not a valid glob: {}", e.kind())))?;
        builder.add(glob);
    }
    builder.build().map_err(BadGlobs::Set)
}

/// Why a list of globs gave no set: one pattern (said with what is wrong in it), or the set as
/// a whole (the glob library's error, kept as the cause).
enum BadGlobs {
    Pattern(String),
    Set(globset::Error),
}
