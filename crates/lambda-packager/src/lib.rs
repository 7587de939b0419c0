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
pub mod update;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use config::{
    ALWAYS_EXCLUDED, Architecture, DEFAULT_SOURCE_EXCLUDES, DepsSource, FunctionSettings, FunctionSpec, Include,
    LambdaSettings, RUNTIME_PACKAGES, SourceMapping,
};
pub use deps::{Deps, DepsKey, Pip};
pub use entries::Entry;
pub use pipeline_config::ConfigError;

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
    /// A requirements file does not exist.
    #[error("requirements file {} does not exist; fix `requirements` in [lambda.functions]", path.display())]
    MissingRequirements {
        /// The path.
        path: PathBuf,
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
        "function `{function}`: {} {what}; only regular files are packaged: remove it, or leave it out with `exclude` in [lambda.functions.{function}]",
        path.display()
    )]
    NotRegularFile {
        /// The function.
        function: String,
        /// The file.
        path: PathBuf,
        /// What it is (`is a named pipe, not a regular file`).
        what: String,
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
        "function `{function}`: dependencies_dir `{path}` links to {}, outside the monorepo; fix [lambda.functions.{function}] dependencies_dir: copy the installed packages into the monorepo, or use `requirements`",
        target.display()
    )]
    DependenciesOutside {
        /// The function.
        function: String,
        /// The configured folder.
        path: String,
        /// Where it leads.
        target: PathBuf,
    },
    /// Walking a folder failed (a link loop, a folder that cannot be read).
    #[error("cannot read {}: {message}", path.display())]
    Walk {
        /// The folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
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
    #[error("cannot run pip with {} ({message}); install Python 3 with pip or set the packager's python", python.display())]
    PipNotRunnable {
        /// The Python used.
        python: PathBuf,
        /// The OS error.
        message: String,
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
    /// Packages over Lambda's limits.
    #[error("{}", budget_message(.0))]
    OverBudget(Vec<BudgetProblem>),
    /// Reading or writing a zip failed.
    #[error("{}: {message}", path.display())]
    Zip {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
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
}

/// `packages/manifest.json`: every package, for the deploy stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The packages, by function name order.
    pub packages: Vec<Package>,
}

impl Manifest {
    /// The file name beside the zips.
    pub const FILE_NAME: &'static str = run_state::RunFile::PackageManifest.file_name();

    /// Reads a manifest; each package's path is joined to the manifest's folder.
    pub fn read(path: &Path) -> Result<Manifest, Error> {
        let bytes =
            run_state::fs::read_regular(path, run_state::fs::MAX_RUN_FILE_BYTES).map_err(|e| Error::io(path, e))?;
        let mut manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Zip { path: path.to_path_buf(), message: format!("not a package manifest: {e}") })?;
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
        let mut deps_by_key: BTreeMap<(DepsSource, String, Architecture, Vec<String>), Deps> = BTreeMap::new();
        let mut built = Vec::new();
        let mut problems = Vec::new();
        for function in functions {
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
                        let deps = deps::prepare(
                            &function.name,
                            &self.repo,
                            source,
                            &function.runtime,
                            function.architecture,
                            &function.leave_out_packages,
                            &self.pip,
                            &self.cache_dir,
                            &|| on_event(Event::Installing { requirements }),
                        )?;
                        deps_by_key.insert(key.clone(), deps);
                    }
                    deps_by_key.get(&key).cloned()
                }
                None => None,
            };
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
            let reused = cached.is_file();
            let written = if reused {
                archive::describe(&cached)?
            } else {
                archive::write_zip(&cached, &own, deps.as_ref().map(|d| d.archive.as_path()))?
            };
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
                    sha256: deps::hex(&written.sha256),
                    size: written.size,
                    unzipped_size,
                    files,
                    runtime: function.runtime.clone(),
                    architecture: function.architecture,
                    input_hash,
                    reused,
                },
            ));
        }
        if !problems.is_empty() {
            return Err(Error::OverBudget(problems));
        }
        std::fs::create_dir_all(&self.out_dir).map_err(|e| Error::io(&self.out_dir, e))?;
        let mut manifest = Manifest::default();
        for (cached, package) in built {
            publish(&cached, &package.path)?;
            on_event(Event::Packaged(&package));
            manifest.packages.push(package);
        }
        run_state::write_atomic(&self.out_dir.join(Manifest::FILE_NAME), &manifest.to_json_in(&self.out_dir))?;
        Ok(manifest)
    }
}

/// Everything the zip's bytes depend on.
fn input_hash(function: &FunctionSpec, own: &[Entry], deps: Option<&Deps>) -> String {
    let mut hasher = Sha256::new();
    // Bump when the zip layout or compression changes.
    hasher.update(b"lambda-package-v1\0");
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
    deps::hex(&hasher.finalize())
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

/// Puts a cached zip at its published path: a hard link when possible, renamed into place.
fn publish(cached: &Path, target: &Path) -> Result<(), Error> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".publish-{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    if std::fs::hard_link(cached, &temp).is_err() {
        std::fs::copy(cached, &temp).map_err(|e| Error::io(&temp, e))?;
    }
    // Zips cached by an older version were left 0600.
    archive::set_mode(&temp, 0o644)?;
    std::fs::rename(&temp, target).map_err(|e| Error::io(target, e))
}

/// How [`run_stage`] runs.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// Only these functions (all when empty).
    pub only: Vec<String>,
    /// The Python whose pip installs dependencies (`python3` when unset).
    pub python: Option<PathBuf>,
    /// Write the zips here instead of the run's `packages/` (then nothing is recorded).
    pub out: Option<PathBuf>,
}

/// The Build stage's packaging for one run, as the `lambda-packager` binary and a pipeline both
/// run it: reads `[lambda]`, checks that the checked-out tree is the run's commit, builds every
/// function into the run's `packages/`, and records the `build` step of the pipeline (passed with
/// what was built, or failed with the error, over-budget packages included).
///
/// With [`StageOptions::out`] and no run, the zips go there and nothing is recorded.
pub fn run_stage(
    context: &run_state::StageContext,
    run: Option<(&run_state::RunDir, &dyn run_state::Store)>,
    options: &StageOptions,
    on_event: &dyn Fn(Event<'_>),
) -> Result<Manifest, Error> {
    let work = || -> Result<Manifest, Error> {
        let config = context.required_config()?;
        let (settings, mut functions) = LambdaSettings::from_config(config)?;
        for name in &options.only {
            if !functions.iter().any(|f| &f.name == name) {
                return Err(Error::UnknownFunction {
                    name: name.clone(),
                    known: functions.iter().map(|f| f.name.clone()).collect(),
                });
            }
        }
        if !options.only.is_empty() {
            functions.retain(|f| options.only.contains(&f.name));
        }
        let out_dir = match (&options.out, run) {
            (Some(out), _) => out.clone(),
            (None, Some((run_dir, _))) => {
                let diff: serde_json::Value = run_dir.read_json(run_state::RunFile::Diff)?;
                let head = diff["head"].as_str().unwrap_or_default();
                context.check_tree(head, diff["worktree"].as_bool().unwrap_or(false))?;
                run_dir.packages_dir()
            }
            (None, None) => return Err(Error::State(run_state::Error::NoRun { state_dir: context.state_dir.clone() })),
        };
        let packager = Packager {
            repo: context.root.clone(),
            cache_dir: context.cache_dir(),
            out_dir,
            pip: Pip {
                python: options.python.clone().unwrap_or_else(|| "python3".into()),
                extra_args: settings.pip_args.clone(),
            },
        };
        packager.build(&functions, on_event)
    };
    let Some((run_dir, store)) = run.filter(|_| options.out.is_none()) else {
        return work();
    };
    let head = run_dir
        .read_json::<serde_json::Value>(run_state::RunFile::Diff)
        .ok()
        .and_then(|diff| diff["head"].as_str().map(str::to_string))
        .unwrap_or_default();
    run_state::record_pipeline_step(store, &run_dir.run_id, &head, run_state::Step::Build, || {
        work().map(|manifest| {
            let reused = manifest.packages.iter().filter(|p| p.reused).count();
            let note = format!("{} package(s), {reused} unchanged and reused", manifest.packages.len());
            (manifest, note)
        })
    })?
}
