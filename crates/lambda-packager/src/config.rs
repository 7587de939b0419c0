//! `[lambda]` in `pipeline.toml`: the functions and how to package them.

use std::collections::BTreeMap;
use std::path::Path;

use globset::GlobSet;
use pipeline_config::{ConfigError, Spanned};
use serde::Deserialize;

/// `[lambda]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaSettings {
    /// Runtime of functions that set none (`python3.12` when unset).
    #[serde(default)]
    pub runtime: Option<String>,
    /// Architecture of functions that set none (`x86_64` when unset).
    #[serde(default)]
    pub architecture: Option<Architecture>,
    /// Whether the default excludes apply (`true` when unset).
    #[serde(default)]
    pub default_excludes: Option<bool>,
    /// Extra arguments for every `pip install` (an index URL, `--find-links` …).
    #[serde(default)]
    pub pip_args: Vec<String>,
    /// Default `requirements` of the functions (a function's `requirements` or `dependencies_dir` replaces it).
    #[serde(default)]
    pub requirements: Option<Spanned<String>>,
    /// Default `dependencies_dir` of the functions (a function's `requirements` or `dependencies_dir` replaces it).
    #[serde(default)]
    pub dependencies_dir: Option<Spanned<String>>,
    /// Default `keep_packages` (a function's own list replaces it).
    #[serde(default)]
    pub keep_packages: Option<Vec<String>>,
    /// Default `exclude` (a function's own list replaces it).
    #[serde(default)]
    pub exclude: Option<Vec<Spanned<String>>>,
    /// Templates searched for the functions (globs from the monorepo root): a function resource
    /// whose `CodeUri` (or `Code` path) is one of a function's `sources` declares that function.
    #[serde(default)]
    pub templates: Vec<Spanned<String>>,
    /// The functions, by name.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionSettings>,
}

/// `[lambda.functions.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSettings {
    /// Files or folders placed at the zip's root: a folder's contents, a file under its own name.
    pub sources: Vec<Spanned<String>>,
    /// Files or folders placed at a chosen path in the zip.
    #[serde(default)]
    pub include: Vec<Include>,
    /// The requirements file whose packages go into the zip (installed by pip for the Lambda platform).
    #[serde(default)]
    pub requirements: Option<Spanned<String>>,
    /// Or a folder of dependencies installed by other means (vendored, built in a container).
    #[serde(default)]
    pub dependencies_dir: Option<Spanned<String>>,
    /// `python3.12` and the like.
    #[serde(default)]
    pub runtime: Option<String>,
    /// `x86_64` or `arm64`.
    #[serde(default)]
    pub architecture: Option<Architecture>,
    /// Globs (relative to each source) left out of the function's own files (replaces `[lambda] exclude`).
    #[serde(default)]
    pub exclude: Option<Vec<Spanned<String>>>,
    /// Packages the Lambda runtime provides that this function wants bundled anyway (`boto3` …;
    /// replaces `[lambda] keep_packages`).
    #[serde(default)]
    pub keep_packages: Option<Vec<String>>,
    /// `module.function` (or `pkg.module.function`): the handler Lambda calls.
    #[serde(default)]
    pub handler: Option<Spanned<String>>,
    /// A template declaring this function (with `resource`), relative to the monorepo root.
    #[serde(default)]
    pub template: Option<Spanned<String>>,
    /// The function's logical ID in `template`.
    #[serde(default)]
    pub resource: Option<Spanned<String>>,
    /// The `[components]` entry whose change rebuilds this function (default: the function's name).
    #[serde(default)]
    pub component: Option<Spanned<String>>,
}

/// `{ from = "frontend/dist", to = "dist" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Include {
    /// A file or folder, relative to the monorepo root.
    pub from: Spanned<String>,
    /// Where it goes in the zip.
    pub to: String,
    /// The `[components]` entry whose build writes `from` (`frontend` for `frontend/dist`): its
    /// change rebuilds the function too, and while neither changed, a checkout without `from`
    /// (a fresh CI clone) leaves the function out of the run's packages instead of failing.
    #[serde(default)]
    pub component: Option<Spanned<String>>,
}

/// The instruction set a function runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// Intel and AMD.
    X86_64,
    /// Graviton.
    Arm64,
}

impl Architecture {
    /// The manylinux platform tag pip installs wheels for.
    pub fn platform_tag(self) -> &'static str {
        match self {
            Architecture::X86_64 => "manylinux2014_x86_64",
            Architecture::Arm64 => "manylinux2014_aarch64",
        }
    }

    /// The ELF `e_machine` of native code built for it.
    pub fn elf_machine(self) -> u16 {
        match self {
            Architecture::X86_64 => 62,
            Architecture::Arm64 => 183,
        }
    }

    /// Its name in Lambda's API and in `pipeline.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// Packages the Python runtime of Lambda already has: left out unless a function keeps them.
/// (Their own dependencies such as urllib3 stay: other packages may need a newer version.)
pub const RUNTIME_PACKAGES: &[&str] = &["boto3", "botocore", "s3transfer"];

/// Left out of every zip: bytecode and caches.
pub const ALWAYS_EXCLUDED: &[&str] = &["**/__pycache__/**", "**/*.pyc", "**/*.pyo"];

/// Left out of a function's own files unless `default_excludes = false`.
pub const DEFAULT_SOURCE_EXCLUDES: &[&str] =
    &["**/tests/**", "**/test_*.py", "**/*_test.py", "**/conftest.py", "**/.env*", "**/.git*", "**/*.md"];

/// A file or folder of the monorepo and where it goes in the zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMapping {
    /// Relative to the monorepo root.
    pub from: String,
    /// `None`: a folder's contents at the zip's root, a file under its own name there.
    /// `Some(path)`: a folder's contents under `path/`, a file as `path`.
    pub to: Option<String>,
    /// For an `include`, the component whose build writes `from`, if declared.
    pub component: Option<String>,
}

/// Where a function's dependencies come from (paths relative to the monorepo root).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DepsSource {
    /// A requirements file pip installs.
    Requirements(String),
    /// A folder already holding the installed packages.
    Installed(String),
}

/// One function, checked and ready to package.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Its name under `[lambda.functions]`.
    pub name: String,
    /// What goes in from the monorepo, and where.
    pub sources: Vec<SourceMapping>,
    /// Where its dependencies come from.
    pub dependencies: Option<DepsSource>,
    /// The config key that set `dependencies` (`lambda.functions.NAME.requirements`,
    /// `lambda.dependencies_dir` …), named in errors about it.
    pub dependencies_key: String,
    /// `handler` from the config, if set.
    pub handler: Option<String>,
    /// `template` and `resource` from the config, if set.
    pub template: Option<(String, String)>,
    /// The component whose change rebuilds it.
    pub component: String,
    /// Whether `component` was written (rather than defaulting to the name).
    pub component_explicit: bool,
    /// `[lambda] templates` as written: the templates searched for functions by `CodeUri`/`Code`.
    pub template_globs: Vec<String>,
    /// Runtime, e.g. `python3.12`.
    pub runtime: String,
    /// Architecture.
    pub architecture: Architecture,
    /// What is left out of the function's own files.
    pub exclude: GlobSet,
    /// What is left out of everything.
    pub always_excluded: GlobSet,
    /// Top-level dependency packages left out.
    pub leave_out_packages: Vec<String>,
    /// The exclude patterns as written, for the input hash.
    pub exclude_patterns: Vec<String>,
}

impl LambdaSettings {
    /// The section of `pipeline.toml` this crate owns.
    pub const SECTION: &'static str = "lambda";

    /// Reads `[lambda]` and checks every function.
    pub fn load(file: &Path) -> Result<(LambdaSettings, Vec<FunctionSpec>), ConfigError> {
        LambdaSettings::from_config(&pipeline_config::ConfigFile::load(file)?)
    }

    /// Parses `[lambda]` of a config read once and checks every function.
    pub fn from_config(
        config: &pipeline_config::ConfigFile,
    ) -> Result<(LambdaSettings, Vec<FunctionSpec>), ConfigError> {
        let settings: LambdaSettings = config.section(Self::SECTION)?;
        let functions = settings.functions(&config.path, &config.text)?;
        Ok((settings, functions))
    }

    /// Checks the functions: globs compile, runtimes are Python, sources are relative.
    pub fn functions(&self, file: &Path, text: &str) -> Result<Vec<FunctionSpec>, ConfigError> {
        let always_excluded = globs(file, text, ALWAYS_EXCLUDED.iter().map(|g| (g.to_string(), 0..0)), "lambda")?;
        globs(file, text, self.templates.iter().map(|t| (t.get_ref().clone(), t.span())), "lambda.templates")?;
        let mut specs = Vec::new();
        for (name, function) in &self.functions {
            let at = At { file, text, key: format!("lambda.functions.{name}") };
            // The name becomes the zip's file name: it must not leave `--out` or the cache.
            pipeline_config::check_name(name).map_err(|message| ConfigError {
                file: file.to_path_buf(),
                line: function.sources.first().map(|s| pipeline_config::line_of(text, s.span().start)),
                key: at.key.clone(),
                message,
                source: None,
            })?;
            let runtime = function.runtime.clone().or(self.runtime.clone()).unwrap_or_else(|| "python3.12".into());
            if !PYTHON_RUNTIMES.contains(&runtime.as_str()) {
                return Err(ConfigError::file(
                    file,
                    format!(
                        "{}.runtime: `{runtime}` is not a Python runtime Lambda offers; write one of {}",
                        at.key,
                        PYTHON_RUNTIMES.join(", ")
                    ),
                ));
            }
            let sources = sources(function, &at)?;
            let exclude_written = function.exclude.as_ref().or(self.exclude.as_ref());
            let mut patterns: Vec<(String, std::ops::Range<usize>)> =
                exclude_written.into_iter().flatten().map(|g| (g.get_ref().clone(), g.span())).collect();
            if self.default_excludes.unwrap_or(true) {
                patterns.extend(DEFAULT_SOURCE_EXCLUDES.iter().map(|g| (g.to_string(), 0..0)));
            }
            let exclude_patterns = patterns.iter().map(|(p, _)| p.clone()).collect();
            let exclude = globs(file, text, patterns.into_iter(), &format!("{}.exclude", at.key))?;
            let (dependencies, dependencies_key) = self.dependencies(function, &at)?;
            let handler = match &function.handler {
                Some(handler) => {
                    check_handler(handler.get_ref()).map_err(|message| {
                        ConfigError::at(file, text, handler.span(), format!("{}.handler", at.key), message)
                    })?;
                    Some(handler.get_ref().clone())
                }
                None => None,
            };
            let template = template_resource(function, &at)?;
            let keep_packages = function.keep_packages.as_ref().or(self.keep_packages.as_ref());
            let leave_out_packages = RUNTIME_PACKAGES
                .iter()
                .filter(|p| !keep_packages.is_some_and(|keep| keep.iter().any(|k| k == *p)))
                .map(|p| p.to_string())
                .collect();
            specs.push(FunctionSpec {
                name: name.clone(),
                sources,
                dependencies,
                dependencies_key,
                handler,
                template,
                component: function.component.as_ref().map_or_else(|| name.clone(), |c| c.get_ref().clone()),
                component_explicit: function.component.is_some(),
                template_globs: self.templates.iter().map(|t| t.get_ref().clone()).collect(),
                runtime,
                architecture: function.architecture.or(self.architecture).unwrap_or(Architecture::X86_64),
                exclude,
                always_excluded: always_excluded.clone(),
                leave_out_packages,
                exclude_patterns,
            });
        }
        Ok(specs)
    }

    /// A function's dependencies and the key they were written under: its own `requirements`
    /// or `dependencies_dir` replaces the section's.
    fn dependencies(
        &self,
        function: &FunctionSettings,
        at: &At<'_>,
    ) -> Result<(Option<DepsSource>, String), ConfigError> {
        let (file, text) = (at.file, at.text);
        let (requirements, dependencies_dir, deps_key) =
            if function.requirements.is_some() || function.dependencies_dir.is_some() {
                (&function.requirements, &function.dependencies_dir, at.key.clone())
            } else {
                (&self.requirements, &self.dependencies_dir, "lambda".to_string())
            };
        Ok(match (requirements, dependencies_dir) {
            (Some(_), Some(dir)) => {
                return Err(ConfigError::at(
                    file,
                    text,
                    dir.span(),
                    format!("{deps_key}.dependencies_dir"),
                    "set `requirements` or `dependencies_dir`, not both",
                ));
            }
            (Some(requirements), None) => {
                let key = format!("{deps_key}.requirements");
                (Some(DepsSource::Requirements(checked_relative(file, text, requirements, &key)?)), key)
            }
            (None, Some(dir)) => {
                let key = format!("{deps_key}.dependencies_dir");
                // An absolute folder (a CodeBuild cache) is taken as it is; a relative one
                // stays inside the monorepo.
                let path = if Path::new(dir.get_ref()).is_absolute() {
                    dir.get_ref().trim_end_matches('/').to_string()
                } else {
                    checked_relative(file, text, dir, &key)?
                };
                (Some(DepsSource::Installed(path)), key)
            }
            (None, None) => (None, String::new()),
        })
    }
}

/// Where a function's settings were written: the file, its text and the function's key.
struct At<'a> {
    file: &'a Path,
    text: &'a str,
    key: String,
}

/// A function's `sources`, then its `include`s (another component's output under `to`).
fn sources(function: &FunctionSettings, at: &At<'_>) -> Result<Vec<SourceMapping>, ConfigError> {
    let (file, text, key) = (at.file, at.text, &at.key);
    let mut sources = Vec::new();
    for source in &function.sources {
        let from = checked_relative(file, text, source, &format!("{key}.sources"))?;
        sources.push(SourceMapping { from, to: None, component: None });
    }
    for include in &function.include {
        let from = checked_relative(file, text, &include.from, &format!("{key}.include"))?;
        let to = include.to.trim_matches('/').to_string();
        if to.split('/').any(|part| part == "..") {
            return Err(ConfigError::at(
                file,
                text,
                include.from.span(),
                format!("{key}.include"),
                format!("`to = \"{}\"` leaves the zip; use a path inside it", include.to),
            ));
        }
        let component = include.component.as_ref().map(|c| c.get_ref().clone());
        sources.push(SourceMapping { from, to: Some(to), component });
    }
    Ok(sources)
}

/// The template and logical ID a function's code is declared under: both or neither.
fn template_resource(function: &FunctionSettings, at: &At<'_>) -> Result<Option<(String, String)>, ConfigError> {
    let (file, text, key) = (at.file, at.text, &at.key);
    match (&function.template, &function.resource) {
        (Some(template), Some(resource)) => {
            Ok(Some((checked_relative(file, text, template, &format!("{key}.template"))?, resource.get_ref().clone())))
        }
        (None, None) => Ok(None),
        (Some(template), None) => Err(ConfigError::at(
            file,
            text,
            template.span(),
            format!("{key}.resource"),
            "`template` needs `resource`: the function's logical ID in that template",
        )),
        (None, Some(resource)) => Err(ConfigError::at(
            file,
            text,
            resource.span(),
            format!("{key}.template"),
            "`resource` needs `template`: the file declaring it, relative to the monorepo root",
        )),
    }
}

/// The Python runtimes Lambda offers (deprecated ones still deploy until AWS blocks updates).
pub const PYTHON_RUNTIMES: &[&str] =
    &["python3.9", "python3.10", "python3.11", "python3.12", "python3.13", "python3.14"];

/// `3.12` from `python3.12`.
pub fn python_version(runtime: &str) -> Option<&str> {
    let version = runtime.strip_prefix("python")?;
    let (major, minor) = version.split_once('.')?;
    (major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok()).then_some(version)
}

/// A handler is `module.function`, the module possibly dotted (`pkg.module.function`) or with
/// `/` (`folder/module.function`).
pub(crate) fn check_handler(handler: &str) -> Result<(), String> {
    let ok = handler.rsplit_once('.').is_some_and(|(module, function)| {
        !function.is_empty()
            && module.split(['.', '/']).all(|part| {
                !part.is_empty() && part != ".." && part.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            })
            && function.chars().all(|c| c.is_alphanumeric() || c == '_')
    });
    if ok {
        Ok(())
    } else {
        Err(format!("`{handler}` is not `module.function` (e.g. `index.handler`, `pkg.app.handler`)"))
    }
}

fn checked_relative(file: &Path, text: &str, path: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let value = path.get_ref();
    if Path::new(value).is_absolute() || value.split('/').any(|part| part == "..") {
        return Err(ConfigError::at(
            file,
            text,
            path.span(),
            key,
            format!("`{value}` must be a path inside the monorepo, relative to its root"),
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn globs(
    file: &Path,
    text: &str,
    patterns: impl Iterator<Item = (String, std::ops::Range<usize>)>,
    key: &str,
) -> Result<GlobSet, ConfigError> {
    let patterns: Vec<(String, std::ops::Range<usize>)> = patterns.collect();
    pipeline_config::glob_set(file, text, patterns.iter().map(|(p, span)| (p.as_str(), span.clone())), key)
}
