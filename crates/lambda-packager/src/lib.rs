//! Deterministic, fast AWS Lambda zips with their Python dependencies.
//!
//! For each function of `[lambda.functions]` in `pipeline.toml` the packager
//! collects the function's own files, installs its requirements once per
//! (requirements, runtime, architecture) into a cache with pip for the Lambda
//! platform, and writes a zip whose bytes depend only on the inputs: entries
//! sorted, timestamps fixed, modes normalised, one compression level. Shared
//! dependency files are compressed once and copied raw into every zip that
//! needs them; a function whose inputs did not change is not zipped again.
//!
//! ```no_run
//! use lambda_packager::{LambdaSettings, Packager, Pip};
//!
//! let (settings, functions) = LambdaSettings::load("monorepo/pipeline.toml".as_ref())?;
//! let packager = Packager {
//!     repo: "monorepo".into(),
//!     cache_dir: "monorepo/.pipeline/cache".into(),
//!     out_dir: "monorepo/.pipeline/runs/r1/packages".into(),
//!     pip: Pip { python: "python3".into(), extra_args: settings.pip_args.clone() },
//! };
//! let manifest = packager.build(&functions, &|_event| {})?;
//! for package in &manifest.packages {
//!     println!("{} {} bytes, CodeSha256 {}", package.name, package.size, package.code_sha256);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`update`] holds the deploy side: compare a package's `CodeSha256` with the
//! function's and call `UpdateFunctionCode` only when they differ.

pub mod archive;
mod config;
mod deps;
mod entries;
mod plan;
pub mod templates;
pub mod update;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use config::{
    ALWAYS_EXCLUDED, Architecture, DEFAULT_SOURCE_EXCLUDES, DepsSource, FunctionSettings, FunctionSpec, Include,
    LambdaSettings, RUNTIME_PACKAGES, SourceMapping,
};
pub use deps::{Deps, DepsKey, Pip};
pub use entries::Entry;
pub use pipeline_config::ConfigError;
pub use plan::{ChangedComponent, Decision, PackagePlan, PlannedFunction, plan};

/// Lambda refuses a zip uploaded directly above this size.
pub const MAX_ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// Lambda refuses code whose unzipped size is above this.
pub const MAX_UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;

/// Everything that can go wrong, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configured source does not exist.
    #[error(
        "function `{function}`: source `{path}` does not exist; fix [lambda.functions.{function}] sources or include"
    )]
    MissingSource {
        /// The function.
        function: String,
        /// The configured path.
        path: String,
    },
    /// An `include` that another component's build writes is missing, and the function changed.
    #[error(
        "function `{function}`: include `{path}` does not exist: it is the output of component `{component}`'s build{}, which has not run in this checkout; run that build first (`step-runner --step build` builds `{component}` when it changed)",
        command.as_ref().map(|c| format!(" (`{c}`)")).unwrap_or_default()
    )]
    MissingBuildOutput {
        /// The function.
        function: String,
        /// The include's `from`.
        path: String,
        /// The component whose build writes it.
        component: String,
        /// That component's build command, when it has one.
        command: Option<String>,
    },
    /// A requirements file does not exist.
    #[error("function `{function}`: requirements file {} does not exist; fix {}", path.display(), shown_key(key))]
    MissingRequirements {
        /// The function.
        function: String,
        /// The config key that names it (`lambda.functions.NAME.requirements`, `lambda.requirements`).
        key: String,
        /// The path.
        path: PathBuf,
    },
    /// A dependencies folder does not exist.
    #[error(
        "function `{function}`: dependencies_dir `{path}` does not exist or is not a folder; fix {}, or install the packages there first",
        shown_key(key)
    )]
    MissingDependencies {
        /// The function.
        function: String,
        /// The config key that names it (`lambda.functions.NAME.dependencies_dir`, `lambda.dependencies_dir`).
        key: String,
        /// The configured folder.
        path: String,
    },
    /// A link leads out of the source tree.
    #[error("{} links to {}, outside the source tree; copy the file in or remove the link", path.display(), target.display())]
    SymlinkOutside {
        /// The link.
        path: PathBuf,
        /// Where it leads.
        target: PathBuf,
    },
    /// A source is not a regular file (a named pipe, a socket, a device), or is too big to read.
    #[error(
        "function `{function}`: {} is {what}, not a regular file; only regular files are packaged: remove it, or leave it out with `exclude` in [lambda.functions.{function}]",
        path.display()
    )]
    NotRegularFile {
        /// The function.
        function: String,
        /// The file.
        path: PathBuf,
        /// What it is (`a named pipe`).
        what: &'static str,
    },
    /// A file name is not UTF-8: a zip entry's name is UTF-8.
    #[error(
        "function `{function}`: the file name `{path}` is not UTF-8 (bytes shown escaped); rename the file to UTF-8, as a zip entry's name is UTF-8"
    )]
    NonUtf8Name {
        /// The function.
        function: String,
        /// The path (relative to the monorepo), its non-ASCII bytes escaped.
        path: String,
    },
    /// `dependencies_dir` leads out of the monorepo.
    #[error(
        "function `{function}`: dependencies_dir `{path}` links to {}, outside the monorepo; fix {}: copy the installed packages into the monorepo, use an absolute path, or use `requirements`",
        target.display(),
        shown_key(key)
    )]
    DependenciesOutside {
        /// The function.
        function: String,
        /// The config key that names it.
        key: String,
        /// The configured folder.
        path: String,
        /// Where it leads.
        target: PathBuf,
    },
    /// Walking a folder failed (a link loop, a folder that cannot be read).
    #[error("cannot read the folder {}; fix its permissions or the link loop in it", path.display())]
    Walk {
        /// The folder.
        path: PathBuf,
        /// What went wrong, and where.
        #[source]
        source: walkdir::Error,
    },
    /// The template globs (`lambda.templates`) do not compile.
    #[error("the template globs ({globs}) do not compile; fix [lambda] templates in pipeline.toml")]
    TemplateGlobs {
        /// The globs, comma-separated.
        globs: String,
        /// What is wrong.
        #[source]
        source: globset::Error,
    },
    /// Two of a function's files land on the same path in the zip.
    #[error("function `{function}`: {} and {} both become `{zip_path}` in the zip; rename one or change `include.to`", first.display(), second.display())]
    Collision {
        /// The function.
        function: String,
        /// The path in the zip.
        zip_path: String,
        /// One source.
        first: PathBuf,
        /// The other.
        second: PathBuf,
    },
    /// A function file has the name of a dependency file.
    #[error("{} collides with the installed dependency file `{zip_path}`; rename the source file", source_file.display())]
    DependencyCollision {
        /// The path in the zip.
        zip_path: String,
        /// The function's file.
        source_file: PathBuf,
    },
    /// pip could not be started.
    #[error("cannot run pip with {}; install Python 3 with pip or set the packager's python", python.display())]
    PipNotRunnable {
        /// The Python used.
        python: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// pip failed; its own message is kept.
    #[error("pip could not install {}: {message}", requirements.display())]
    Pip {
        /// The requirements file.
        requirements: PathBuf,
        /// pip's last error lines.
        message: String,
    },
    /// A native library is for another architecture.
    #[error(
        "{file} is built for {found}, but the function runs on {expected}; pin a wheel for {expected} or change `architecture`"
    )]
    WrongArchitecture {
        /// The library in the zip.
        file: String,
        /// What it is built for.
        found: String,
        /// What the function needs.
        expected: &'static str,
    },
    /// A dependency is for another Python or platform than the function's runtime and architecture.
    #[error("function `{function}`: {file} {what}, but the function runs {target}; {fix}")]
    WrongPython {
        /// The function.
        function: String,
        /// The file (a compiled module or a wheel's `WHEEL`), and where it came from.
        file: String,
        /// What it is for (`is built for CPython 3.11`, `says \`x\` is for …`).
        what: Box<str>,
        /// The function's runtime and architecture (`python3.12 on x86_64`).
        target: String,
        /// What to do (boxed: the error type stays small).
        fix: Box<str>,
    },
    /// A template cannot be read.
    #[error("template `{template}` cannot be read; fix {} in pipeline.toml", shown_key(key))]
    TemplateUnreadable {
        /// The template, relative to the monorepo root.
        template: String,
        /// The config key that led to it (`lambda.functions.NAME.template`, `lambda.templates`).
        key: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A template does not parse.
    #[error(
        "template `{template}` does not parse; fix the template (`validate` shows where) or {} in pipeline.toml",
        shown_key(key)
    )]
    TemplateParse {
        /// The template, relative to the monorepo root.
        template: String,
        /// The config key that led to it.
        key: String,
        /// The parser's error, with the position.
        #[source]
        source: cfn_template::ParseError,
    },
    /// `resource` names no function of `template`.
    #[error(
        "function `{function}`: {template} has no AWS::Lambda::Function or AWS::Serverless::Function `{resource}`; fix [lambda.functions.{function}] resource (the function's logical ID) or template"
    )]
    UnknownResource {
        /// The function.
        function: String,
        /// The template.
        template: String,
        /// The logical ID given.
        resource: String,
    },
    /// A template declares the function with another runtime or architecture than the config.
    #[error(
        "function `{function}`: {at} says {property} `{declared}`, but pipeline.toml packages it for `{configured}`; make them agree: fix the template or `{}` in [lambda.functions.{function}] (or [lambda])",
        if *property == "Runtime" { "runtime" } else { "architecture" }
    )]
    TemplateDisagrees {
        /// The function.
        function: String,
        /// `LogicalId at template:line`.
        at: String,
        /// `Runtime` or `Architectures`.
        property: &'static str,
        /// The template's value.
        declared: Box<str>,
        /// The config's value (of `runtime` or `architecture`).
        configured: Box<str>,
    },
    /// Two declarations of a function name different handlers.
    #[error(
        "function `{function}`: handler `{}` ({}) and handler `{}` ({}) disagree; make them the same handler",
        handlers[0].0, handlers[0].1, handlers[1].0, handlers[1].1
    )]
    HandlerDisagrees {
        /// The function.
        function: String,
        /// Two handlers that differ, each with where it is declared.
        handlers: Box<[(String, String); 2]>,
    },
    /// A template's `Handler` is not `module.function`.
    #[error("function `{function}`: {at}: Handler {message}; fix the template")]
    BadHandler {
        /// The function.
        function: String,
        /// `LogicalId at template:line`.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The zip lacks the handler's module.
    #[error(
        "function `{function}`: handler `{handler}` ({at}) needs `{}` or `{}` at the zip's root, and the zip has neither; fix the handler, or the function's `sources` in [lambda.functions.{function}]",
        templates::module_files(handler)[0],
        templates::module_files(handler)[1]
    )]
    MissingHandlerModule {
        /// The function.
        function: String,
        /// The handler.
        handler: String,
        /// Where it is declared.
        at: String,
    },
    /// `component` names no component of the run's diff.
    #[error(
        "function `{function}`: no component `{component}` in the run's diff; fix [lambda.functions.{function}] component (the components are: {})",
        known.join(", ")
    )]
    UnknownComponent {
        /// The function.
        function: String,
        /// The component given.
        component: String,
        /// The components of the diff.
        known: Vec<String>,
    },
    /// Packages over Lambda's limits.
    #[error("{}", budget_message(.0))]
    OverBudget(Vec<BudgetProblem>),
    /// Reading or writing a zip failed.
    #[error("{}: the zip cannot be read or written; check the file and the free disk space", path.display())]
    Zip {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: zip::result::ZipError,
    },
    /// A package manifest does not parse.
    #[error("{} is not a package manifest; run lambda-packager again to write it", path.display())]
    NotAManifest {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        #[source]
        source: serde_json::Error,
    },
    /// Writing the manifest, reading the run folder or recording the step failed.
    #[error(transparent)]
    State(#[from] run_state::Error),
    /// Reading or writing a file failed.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `--only` names no function.
    #[error("no function `{name}` in [lambda.functions]; the functions are: {}", known.join(", "))]
    UnknownFunction {
        /// The name given.
        name: String,
        /// The configured names.
        known: Vec<String>,
    },
}

/// `lambda.functions.hello.dependencies_dir` as a reader finds it: `[lambda.functions.hello] dependencies_dir`.
fn shown_key(key: &str) -> String {
    match key.rsplit_once('.') {
        Some((section, name)) => format!("[{section}] {name}"),
        None => format!("[{key}]"),
    }
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// A package over a limit, with what takes the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetProblem {
    /// The function.
    pub function: String,
    /// Which limit: "zipped" or "unzipped".
    pub limit: &'static str,
    /// Its size.
    pub size: u64,
    /// The limit.
    pub max: u64,
    /// The largest top-level folders or files in the zip, largest first (uncompressed sizes).
    pub largest: Vec<(String, u64)>,
}

fn budget_message(problems: &[BudgetProblem]) -> String {
    problems
        .iter()
        .map(|p| {
            let largest: Vec<String> = p.largest.iter().map(|(name, size)| format!("{name} {}", mb(*size))).collect();
            format!(
                "function `{}` is {} {} (Lambda's limit: {}); largest: {}",
                p.function,
                mb(p.size),
                p.limit,
                mb(p.max),
                largest.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One built package, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// The function.
    pub name: String,
    /// The zip. In `manifest.json` it is relative to the manifest's folder (the zips are beside
    /// it), so the folder can move; [`Manifest::read`] gives it back joined to that folder.
    pub path: PathBuf,
    /// Base64 SHA-256 of the zip: what Lambda reports as `CodeSha256`.
    pub code_sha256: String,
    /// Hex SHA-256 of the zip.
    pub sha256: String,
    /// Bytes of the zip.
    pub size: u64,
    /// Bytes once unzipped.
    pub unzipped_size: u64,
    /// Number of files in it.
    pub files: usize,
    /// Runtime.
    pub runtime: String,
    /// Architecture.
    pub architecture: Architecture,
    /// Hash of every input: the same inputs give the same zip.
    pub input_hash: String,
    /// Whether the zip came from the cache (its inputs had not changed).
    pub reused: bool,
    /// Whether the function's component changed in the run's diff (always true without a run):
    /// the deploy stage updates only the packages that changed.
    #[serde(default = "changed_by_default")]
    pub changed: bool,
}

fn changed_by_default() -> bool {
    true
}

/// `packages/manifest.json`: every package, for the deploy stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The packages, by function name order.
    pub packages: Vec<Package>,
}

impl Manifest {
    /// The packages whose function changed in the run's diff: what the deploy stage updates.
    pub fn changed(&self) -> impl Iterator<Item = &Package> {
        self.packages.iter().filter(|p| p.changed)
    }
}

impl Manifest {
    /// The file name beside the zips.
    pub const FILE_NAME: &'static str = run_state::RunFile::PackageManifest.file_name();

    /// Reads a manifest; each package's path is joined to the manifest's folder.
    pub fn read(path: &Path) -> Result<Manifest, Error> {
        let bytes =
            run_state::fs::read_regular(path, run_state::fs::MAX_RUN_FILE_BYTES).map_err(|e| Error::io(path, e))?;
        let mut manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|source| Error::NotAManifest { path: path.to_path_buf(), source })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        for package in &mut manifest.packages {
            package.path = dir.join(&package.path);
        }
        Ok(manifest)
    }

    /// The manifest as `manifest.json` in `dir` holds it: paths relative to `dir`.
    pub fn to_json_in(&self, dir: &Path) -> Vec<u8> {
        let mut relative = self.clone();
        for package in &mut relative.packages {
            if let Ok(inside) = package.path.strip_prefix(dir) {
                package.path = inside.to_path_buf();
            }
        }
        serde_json::to_vec_pretty(&relative).expect("a manifest serialises")
    }
}

/// What the packager reports while it works.
#[derive(Debug)]
pub enum Event<'a> {
    /// pip is installing a requirements file (a cache miss).
    Installing {
        /// The requirements file.
        requirements: &'a str,
    },
    /// A package is ready.
    Packaged(&'a Package),
    /// A function left out of the run's packages: it did not change, and an `include` it
    /// ships (another component's build output) is not in this checkout. Its deployed code
    /// stays as it is.
    NotPackaged {
        /// The function.
        function: &'a str,
        /// Why, naming the include and the component that builds it.
        reason: String,
    },
}

/// Builds packages.
#[derive(Debug, Clone)]
pub struct Packager {
    /// The monorepo root.
    pub repo: PathBuf,
    /// Where installed dependencies and built zips are kept between runs (`.pipeline/cache`).
    pub cache_dir: PathBuf,
    /// Where the zips and the manifest go (`.pipeline/runs/<id>/packages`).
    pub out_dir: PathBuf,
    /// How pip runs.
    pub pip: Pip,
}

impl Packager {
    /// Builds every function, checks the budgets, then publishes the zips and
    /// the manifest to `out_dir`. Nothing reaches `out_dir` when any function fails.
    pub fn build(&self, functions: &[FunctionSpec], on_event: &dyn Fn(Event<'_>)) -> Result<Manifest, Error> {
        self.build_changed(functions, &BTreeSet::new(), on_event)
    }

    /// [`Packager::build`], where the functions named in `unchanged` (their component did not
    /// change in the run's diff) are listed with `changed: false`; their last package is reused
    /// from the cache by its input hash (built again only when the cache does not have it).
    ///
    /// Before anything is built, each function is checked against the templates that declare it
    /// (`Handler`, `Runtime`, `Architectures`; see [`templates`]); before it is zipped, its zip
    /// must hold the handler's module.
    pub fn build_changed(
        &self,
        functions: &[FunctionSpec],
        unchanged: &BTreeSet<String>,
        on_event: &dyn Fn(Event<'_>),
    ) -> Result<Manifest, Error> {
        let declared = templates::declarations(&self.repo, functions)?;
        let mut handlers = BTreeMap::new();
        for function in functions {
            let declarations = declared.get(&function.name).map_or(&[][..], Vec::as_slice);
            if let Some(handler) = templates::check(function, declarations)? {
                handlers.insert(function.name.clone(), handler);
            }
        }
        let (jobs, mut problems) = self.plan_jobs(functions, unchanged, &handlers, on_event)?;
        let (written, syncing) = write_zips(&jobs)?;
        let mut built = Vec::new();
        for (job, written) in jobs.into_iter().zip(written) {
            let (reused, written) = written?;
            let Job { function, own, deps, unzipped_size, files, input_hash, cached } = job;
            if written.size > MAX_ZIP_BYTES {
                problems.push(BudgetProblem {
                    function: function.name.clone(),
                    limit: "zipped",
                    size: written.size,
                    max: MAX_ZIP_BYTES,
                    largest: largest(&own, deps.as_ref())?,
                });
                continue;
            }
            built.push((
                cached,
                Package {
                    name: function.name.clone(),
                    path: self.out_dir.join(format!("{}.zip", function.name)),
                    code_sha256: base64::engine::general_purpose::STANDARD.encode(written.sha256),
                    sha256: hex::encode(written.sha256),
                    size: written.size,
                    unzipped_size,
                    files,
                    runtime: function.runtime.clone(),
                    architecture: function.architecture,
                    input_hash,
                    reused,
                    changed: !unchanged.contains(&function.name),
                },
            ));
        }
        if !problems.is_empty() {
            // In the functions' order (the unzipped limit is checked before the zips are written).
            problems.sort_by_key(|p| functions.iter().position(|f| f.name == p.function));
            return Err(Error::OverBudget(problems));
        }
        self.publish_packages(built, syncing, on_event)
    }

    /// The zips to write: each function's entries and dependencies (installed once per
    /// requirements, runtime, architecture and leave-out list), its handler checked, and the
    /// functions over the unzipped budget set apart. A function whose include is absent and
    /// that did not change is left out (said by `NotPackaged`).
    fn plan_jobs<'f>(
        &self,
        functions: &'f [FunctionSpec],
        unchanged: &BTreeSet<String>,
        handlers: &BTreeMap<String, (String, String)>,
        on_event: &dyn Fn(Event<'_>),
    ) -> Result<(Vec<Job<'f>>, Vec<BudgetProblem>), Error> {
        let mut deps_by_key: BTreeMap<(DepsSource, String, Architecture, Vec<String>), Deps> = BTreeMap::new();
        let mut problems = Vec::new();
        let mut jobs = Vec::new();
        for function in functions {
            let missing = function
                .sources
                .iter()
                .find(|s| s.to.is_some() && std::fs::symlink_metadata(self.repo.join(&s.from)).is_err());
            if let Some(missing) = missing {
                let built_by =
                    missing.component.as_ref().map(|c| format!(" (the output of `{c}`'s build)")).unwrap_or_default();
                if unchanged.contains(&function.name) {
                    on_event(Event::NotPackaged {
                        function: &function.name,
                        reason: format!(
                            "its include `{}`{built_by} is not in this checkout, and it did not change: its deployed code stays as it is",
                            missing.from
                        ),
                    });
                    continue;
                }
                if let Some(component) = &missing.component {
                    return Err(Error::MissingBuildOutput {
                        function: function.name.clone(),
                        path: missing.from.clone(),
                        component: component.clone(),
                        command: None,
                    });
                }
            }
            let own = entries::collect(&self.repo, function)?;
            let deps = match &function.dependencies {
                Some(source) => {
                    let key = (
                        source.clone(),
                        function.runtime.clone(),
                        function.architecture,
                        function.leave_out_packages.clone(),
                    );
                    if !deps_by_key.contains_key(&key) {
                        let requirements = match source {
                            DepsSource::Requirements(path) | DepsSource::Installed(path) => path.as_str(),
                        };
                        let deps = deps::prepare(function, source, &self.repo, &self.pip, &self.cache_dir, &|| {
                            on_event(Event::Installing { requirements })
                        })?;
                        deps_by_key.insert(key.clone(), deps);
                    }
                    deps_by_key.get(&key).cloned()
                }
                None => None,
            };
            if let Some((handler, at)) = handlers.get(&function.name) {
                check_handler_module(function, handler, at, &own, deps.as_ref())?;
            }
            let unzipped_size = own.iter().map(|e| e.size).sum::<u64>() + deps.as_ref().map_or(0, |d| d.unzipped_size);
            let files = own.len() + deps.as_ref().map_or(0, |d| d.files);
            let input_hash = input_hash(function, &own, deps.as_ref());
            if unzipped_size > MAX_UNZIPPED_BYTES {
                problems.push(BudgetProblem {
                    function: function.name.clone(),
                    limit: "unzipped",
                    size: unzipped_size,
                    max: MAX_UNZIPPED_BYTES,
                    largest: largest(&own, deps.as_ref())?,
                });
                continue;
            }
            let cached = self.cache_dir.join("packages").join(format!("{}-{}.zip", function.name, &input_hash[..16]));
            jobs.push(Job { function, own, deps, unzipped_size, files, input_hash, cached });
        }
        Ok((jobs, problems))
    }

    /// Copies the zips from the cache into the output folder, each synced, then the folder,
    /// then the manifest, last.
    fn publish_packages(
        &self,
        built: Vec<(PathBuf, Package)>,
        syncing: std::sync::Mutex<Vec<std::thread::JoinHandle<std::io::Result<()>>>>,
        on_event: &dyn Fn(Event<'_>),
    ) -> Result<Manifest, Error> {
        std::fs::create_dir_all(&self.out_dir).map_err(|e| Error::io(&self.out_dir, e))?;
        // Durable where it matters: each zip is synced as it leaves the cache (all at once, so the
        // disk sees them together), then the folder, then the manifest, last. The early syncs of
        // the zips written now are done first (their errors, if any, come back from `publish`).
        for sync in syncing.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            let _ = sync.join();
        }
        built.par_iter().enumerate().try_for_each(|(i, (cached, package))| publish(cached, &package.path, i))?;
        sync_dir(&self.out_dir)?;
        let mut manifest = Manifest::default();
        for (_, package) in built {
            on_event(Event::Packaged(&package));
            manifest.packages.push(package);
        }
        run_state::write_atomic(&self.out_dir.join(Manifest::FILE_NAME), &manifest.to_json_in(&self.out_dir))?;
        sync_dir(&self.out_dir)?;
        Ok(manifest)
    }
}

/// Writes the jobs' zips on all cores (or finds them in the cache): per job, whether it was
/// reused and what was written; and the early syncs of the zips written now.
#[allow(clippy::type_complexity)]
fn write_zips(
    jobs: &[Job<'_>],
) -> Result<
    (Vec<Result<(bool, archive::Written), Error>>, std::sync::Mutex<Vec<std::thread::JoinHandle<std::io::Result<()>>>>),
    Error,
> {
    // The zips are written on all cores, one task per function (each compresses its own files
    // on all cores too); the cache is checked first.
    // The cache is not synced to disk: a zip cut short by a crash reads as missing.
    let reused: Vec<bool> =
        jobs.par_iter().map(|job| archive::list(&job.cached).is_ok_and(|names| names.len() == job.files)).collect();
    // Each `deps.zip` a zip is built from is read once, for all the functions that copy from it.
    let mut deps_zips: BTreeMap<&Path, archive::DepsZip> = BTreeMap::new();
    for (job, _) in jobs.iter().zip(&reused).filter(|(_, reused)| !**reused) {
        if let Some(deps) = &job.deps
            && !deps_zips.contains_key(deps.archive.as_path())
        {
            deps_zips.insert(&deps.archive, archive::DepsZip::open(&deps.archive)?);
        }
    }
    let syncing = std::sync::Mutex::new(Vec::new());
    let written: Vec<Result<(bool, archive::Written), Error>> = jobs
        .par_iter()
        .zip(&reused)
        .map(|(job, &reused)| {
            let written = if reused {
                archive::describe(&job.cached)?
            } else {
                let deps = job.deps.as_ref().map(|d| &deps_zips[d.archive.as_path()]);
                let written = archive::write_zip_from(&job.cached, &job.own, deps)?;
                // This zip is published below: its disk write starts now, behind the other
                // zips' work, so the sync that publishes it has little left to wait for.
                let path = job.cached.clone();
                let sync = std::thread::spawn(move || std::fs::File::open(&path).and_then(|f| f.sync_data()));
                syncing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sync);
                written
            };
            Ok((reused, written))
        })
        .collect();
    Ok((written, syncing))
}

/// One function's zip to write (or find in the cache).
struct Job<'a> {
    function: &'a FunctionSpec,
    own: Vec<Entry>,
    deps: Option<Deps>,
    unzipped_size: u64,
    files: usize,
    input_hash: String,
    cached: PathBuf,
}

/// The zip (the function's own files, then its dependencies) must hold the handler's module.
fn check_handler_module(
    function: &FunctionSpec,
    handler: &str,
    at: &str,
    own: &[Entry],
    deps: Option<&Deps>,
) -> Result<(), Error> {
    if templates::has_module(own.iter().map(|e| e.zip_path.as_str()), handler) {
        return Ok(());
    }
    if let Some(deps) = deps {
        let names = archive::list(&deps.archive)?;
        if templates::has_module(names.iter().map(|(name, _)| name.as_str()), handler) {
            return Ok(());
        }
    }
    Err(Error::MissingHandlerModule {
        function: function.name.clone(),
        handler: handler.to_string(),
        at: at.to_string(),
    })
}

/// Everything the zip's bytes depend on.
fn input_hash(function: &FunctionSpec, own: &[Entry], deps: Option<&Deps>) -> String {
    let mut hasher = Sha256::new();
    // Bump when the zip layout or compression changes.
    hasher.update(b"lambda-package-v2\0");
    for entry in own {
        hasher.update(entry.zip_path.as_bytes());
        hasher.update(b"\0");
        hasher.update(entry.mode.to_le_bytes());
        hasher.update(entry.sha256);
    }
    hasher.update(b"\0deps:");
    hasher.update(deps.map_or("", |d| d.key.hash.as_str()).as_bytes());
    hasher.update(function.runtime.as_bytes());
    hasher.update(function.architecture.as_str().as_bytes());
    hex::encode(hasher.finalize())
}

/// The biggest top-level folders or files, for budget errors.
fn largest(own: &[Entry], deps: Option<&Deps>) -> Result<Vec<(String, u64)>, Error> {
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |path: &str, size: u64| {
        let top = path.split('/').next().unwrap_or(path).to_string();
        *sizes.entry(top).or_default() += size;
    };
    for entry in own {
        add(&entry.zip_path, entry.size);
    }
    if let Some(deps) = deps {
        for (name, size) in archive::list(&deps.archive)? {
            add(&name, size);
        }
    }
    let mut sizes: Vec<(String, u64)> = sizes.into_iter().collect();
    sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sizes.truncate(5);
    Ok(sizes)
}

/// Puts a cached zip at its published path (a hard link when possible, renamed into place) and
/// syncs it: the one place a zip is made durable.
fn publish(cached: &Path, target: &Path, index: usize) -> Result<(), Error> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".publish-{}-{index}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    if std::fs::hard_link(cached, &temp).is_err() {
        std::fs::copy(cached, &temp).map_err(|e| Error::io(&temp, e))?;
    }
    // Zips cached by an older version were left 0600.
    archive::set_mode(&temp, 0o644)?;
    std::fs::File::open(&temp).and_then(|f| f.sync_data()).map_err(|e| Error::io(&temp, e))?;
    std::fs::rename(&temp, target).map_err(|e| Error::io(target, e))
}

/// Makes the renames in a folder durable.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| Error::io(dir, e))
}

/// An `include` naming the component whose build writes it needs that component to have a
/// `build` command in `[components]`: nothing else in a pipeline writes it.
fn check_include_builds(config: &pipeline_config::ConfigFile, settings: &LambdaSettings) -> Result<(), Error> {
    let Ok(components) = source_diff::Components::from_config(config) else { return Ok(()) };
    for (name, function) in &settings.functions {
        for include in &function.include {
            let Some(component) = &include.component else { continue };
            let problem = match components.get(component.get_ref()) {
                None => format!("`{}` is no component of [components]", component.get_ref()),
                Some(found) if found.build.is_none() => format!(
                    "component `{}` has no `build` command, so nothing in the pipeline writes `{}`; add its build, or name the component whose build writes it",
                    component.get_ref(),
                    include.from.get_ref()
                ),
                Some(_) => continue,
            };
            return Err(Error::Config(ConfigError::at(
                &config.path,
                &config.text,
                component.span(),
                format!("lambda.functions.{name}.include"),
                problem,
            )));
        }
    }
    Ok(())
}

/// What the packaging stage ended with. Its exit code ([`run_state::StageOutcome`]) is 0
/// built, 1 over Lambda's size limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every package was built (or reused) and published with the manifest.
    Built(Manifest),
    /// A package is over Lambda's size limits: nothing was published.
    OverBudget(Vec<BudgetProblem>),
}

impl Outcome {
    /// The stage's verdict from what [`Packager::build_changed`] returned.
    fn of(built: Result<Manifest, Error>) -> Result<Outcome, Error> {
        match built {
            Ok(manifest) => Ok(Outcome::Built(manifest)),
            Err(Error::OverBudget(problems)) => Ok(Outcome::OverBudget(problems)),
            Err(error) => Err(error),
        }
    }

    /// The manifest, or the packages over budget as [`Error::OverBudget`]: for a caller to
    /// whom an over-budget package is an error like any other.
    pub fn into_manifest(self) -> Result<Manifest, Error> {
        match self {
            Outcome::Built(manifest) => Ok(manifest),
            Outcome::OverBudget(problems) => Err(Error::OverBudget(problems)),
        }
    }
}

impl run_state::StageOutcome for Outcome {
    fn exit_code(&self) -> u8 {
        match self {
            Outcome::Built(_) => 0,
            Outcome::OverBudget(_) => 1,
        }
    }
}

/// How the stage runs.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// Only these functions (all when empty).
    pub only: Vec<String>,
    /// The Python whose pip installs dependencies (`python3` when unset).
    pub python: Option<PathBuf>,
}

/// `[lambda]` of the context's config, its includes checked, and all its functions.
fn selected(context: &run_state::StageContext) -> Result<(LambdaSettings, Vec<FunctionSpec>), Error> {
    let config = context.required_config()?;
    let (settings, functions) = LambdaSettings::from_config(config)?;
    check_include_builds(config, &settings)?;
    Ok((settings, functions))
}

/// The plan of the packaging of `run`, from the context's `[lambda]` and the run's diff, with
/// what it is planned from: what a dry run prints (the checked-out tree is not checked).
fn load_plan(
    context: &run_state::StageContext,
    run: &run_state::RunDir,
    only: &[String],
) -> Result<(PackagePlan, LambdaSettings, Vec<FunctionSpec>, source_diff::DiffReport), Error> {
    let (settings, functions) = selected(context)?;
    // `--only` is checked before the diff is read, as before the plan.
    plan::check_only(&functions, only)?;
    let diff: source_diff::DiffReport = run.read_json(run_state::RunFile::Diff)?;
    let plan = plan(&functions, &diff, only)?;
    Ok((plan, settings, functions, diff))
}

/// The plan [`run_stage`] would follow for `run` (`lambda-packager --dry-run`): reads the
/// config and the run's diff, and nothing else.
pub fn plan_run(
    context: &run_state::StageContext,
    run: &run_state::RunDir,
    options: &StageOptions,
) -> Result<PackagePlan, Error> {
    load_plan(context, run, &options.only).map(|(plan, ..)| plan)
}

/// Builds `functions` into `out_dir` (those in `unchanged` listed unchanged), with the
/// context's cache.
fn build(
    context: &run_state::StageContext,
    (settings, functions): &(LambdaSettings, Vec<FunctionSpec>),
    unchanged: &BTreeSet<String>,
    out_dir: PathBuf,
    options: &StageOptions,
    on_event: &dyn Fn(Event<'_>),
) -> Result<Manifest, Error> {
    let packager = Packager {
        repo: context.root.clone(),
        cache_dir: context.cache_dir(),
        out_dir,
        pip: Pip {
            python: options.python.clone().unwrap_or_else(|| "python3".into()),
            extra_args: settings.pip_args.clone(),
        },
    };
    packager.build_changed(functions, unchanged, on_event).map_err(|error| match error {
        // Name the build that writes the missing include.
        Error::MissingBuildOutput { function, path, component, command: None } => {
            let command = context
                .required_config()
                .ok()
                .and_then(|config| source_diff::Components::from_config(config).ok())
                .and_then(|components| components.get(&component).and_then(|c| c.build.clone()))
                .map(|build| build.run);
            Error::MissingBuildOutput { function, path, component, command }
        }
        other => other,
    })
}

/// Builds every function of `[lambda]` (or `options.only`) into `out`, with no run: each
/// counts as changed, and nothing is recorded (`lambda-packager --out DIR`). [`run_stage`]
/// is this for a run.
pub fn package(
    context: &run_state::StageContext,
    out: &Path,
    options: &StageOptions,
    on_event: &dyn Fn(Event<'_>),
) -> Result<Outcome, Error> {
    let (settings, mut functions) = selected(context)?;
    plan::check_only(&functions, &options.only)?;
    if !options.only.is_empty() {
        functions.retain(|f| options.only.contains(&f.name));
    }
    Outcome::of(build(context, &(settings, functions), &BTreeSet::new(), out.to_path_buf(), options, on_event))
}

/// The Build stage's packaging for one run, as the `lambda-packager` binary and a pipeline both
/// run it: reads `[lambda]`, checks that the checked-out tree is the run's commit, builds every
/// function into the run's `packages/` as [`plan`] decides (a function whose component did not
/// change is listed unchanged), and records the `build` step of the pipeline (passed with what was built, or
/// failed with the error, over-budget packages included).
pub fn run_stage(
    inputs: &run_state::StageInputs<'_>,
    options: &StageOptions,
    on_event: &dyn Fn(Event<'_>),
) -> Result<Outcome, Error> {
    let run_state::StageInputs { context, run, store, .. } = *inputs;
    let work = || -> Result<Manifest, Error> {
        let (plan, settings, mut functions, diff) = load_plan(context, run, &options.only)?;
        context.check_tree(&diff.head, diff.worktree)?;
        // The plan is the one decision: what it selects is built, what it says is unchanged is
        // listed unchanged.
        let selected: BTreeSet<&str> = plan.selected().collect();
        functions.retain(|f| selected.contains(f.name.as_str()));
        let unchanged: BTreeSet<String> = plan.unchanged().map(str::to_string).collect();
        build(context, &(settings, functions), &unchanged, run.packages_dir(), options, on_event)
    };
    let head = run.head().unwrap_or_default();
    let built = run_state::record_pipeline_step(store, &run.run_id, &head, run_state::Step::Build, || {
        work().map(|manifest| {
            let reused = manifest.packages.iter().filter(|p| p.reused).count();
            let changed = manifest.changed().count();
            let note = format!(
                "{} package(s): {changed} changed, {} unchanged; {reused} reused from the cache",
                manifest.packages.len(),
                manifest.packages.len() - changed
            );
            (manifest, note)
        })
    })?;
    // An over-budget package is recorded as the step's failure (above) and is the stage's verdict.
    Outcome::of(built)
}
