//! CloudFormation checks done natively, secret scanning, and the external linters, with one report.
//!
//! `validate` checks what a change touched: the CloudFormation templates and
//! the files of the changed components (from `source-diff`'s report). The
//! native core parses templates with positions ([`parse`]) and runs the rules
//! of [`rules`] (IDs shared with cfn-lint where the meaning is the same); the
//! secret scanner ([`secrets`]) never prints what it finds; the external tools
//! configured under `[validate.tools]` run in parallel for changed components
//! only, and their JSON reports become the same [`Finding`]s. Results of the
//! native checks are cached by content hash.
//!
//! ```
//! let template = "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n    DependsOn: Missing\n";
//! let root = validate::parse(template).unwrap();
//! let findings = validate::rules::check(&root, "cfn/app.yaml", std::path::Path::new("cfn"), template.len());
//! assert_eq!(findings[0].rule, "E3005");
//! assert_eq!((findings[0].pos.line, findings[0].pos.column), (4, 5));
//! ```

pub mod cfnlintrc;
pub mod config;
pub mod dependencies;
pub mod mask;
pub mod report;
pub mod rules;
pub mod schemas;
pub mod secrets;
pub mod tools;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use run_state::StageOutcome as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use source_diff::{Components, DiffReport, FileChange, FileStatus};

pub use config::{ToolFormat, ToolSettings, ValidateSettings};
/// The template tree, from [`cfn_template`] (re-exported so checks and their callers name one type).
pub mod node {
    pub use cfn_template::{Key, Node, Pos, Value, Walk};
}
/// The template reader, from [`cfn_template`].
pub mod template {
    pub use cfn_template::{Limits, ParseError, parse, parse_bytes, parse_with};
}
pub use node::{Key, Node, Pos, Value};
pub use template::{Limits, ParseError, parse, parse_bytes};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Likely a mistake.
    Warning,
    /// Will fail, or is unsafe.
    Error,
}

/// One problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub struct Finding {
    /// The file, relative to the monorepo root.
    pub path: String,
    /// Where in it.
    pub pos: Pos,
    /// The rule's stable ID (cfn-lint's where the meaning is the same).
    pub rule: String,
    /// How bad.
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
    /// The native rule's own name (`unknown-section`), where several share the ID; `None` for
    /// a tool's finding and the secret scanner's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// The ID of "this template could not be read" (cfn-lint's E0000).
pub const PARSE_ERROR: &str = "E0000";

/// What can go wrong besides findings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] pipeline_config::ConfigError),
    /// A settings file (`.cfnlintrc`) cannot be read.
    #[error(transparent)]
    Unreadable(#[from] pipeline_config::ReadError),
    /// The secrets allow-list is wrong.
    #[error(transparent)]
    Allowlist(#[from] secrets::AllowlistError),
    /// The advisory database of `[validate.dependencies]` cannot be read.
    #[error(transparent)]
    Advisories(#[from] dependencies::AdvisoryError),
    /// A configured tool is not installed.
    #[error("validate.tools.{tool}: {} not installed; {install}", match program { Some(p) => format!("`{p}` is"), None => "a command it runs is".to_string() })]
    ToolMissing {
        /// The tool's name.
        tool: String,
        /// The program the shell could not find, when it named one.
        program: Option<String>,
        /// How to install it.
        install: String,
    },
    /// The run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// git failed.
    #[error(transparent)]
    Git(#[from] source_diff::Error),
    /// The run folder, the store or the work tree check failed.
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
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

/// What the stage will check: pure, printable as a dry run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Templates to check natively.
    pub templates: Vec<String>,
    /// Files to scan for secrets.
    pub secret_files: Vec<String>,
    /// Dependency files (`requirements*.txt`, `package-lock.json`) to check against the
    /// advisories of `[validate.dependencies]`.
    pub dependency_files: Vec<String>,
    /// External tools to run.
    pub tools: Vec<tools::ToolRun>,
    /// Tools not run, with why.
    pub skipped_tools: Vec<(String, String)>,
    /// What the repository's `.cfnlintrc` sets, when it has one.
    pub cfn_lint_settings: Option<String>,
    /// The regions the resource types are checked for ([`ValidateSettings::regions`]; empty:
    /// us-east-1).
    pub regions: Vec<String>,
}

impl run_state::StagePlan for Plan {
    fn describe(&self) -> String {
        let mut out =
            format!("{} template(s), {} file(s) to scan for secrets\n", self.templates.len(), self.secret_files.len());
        if let Some(settings) = &self.cfn_lint_settings {
            out.push_str(&format!("{settings}\n"));
        }
        if !self.dependency_files.is_empty() {
            out.push_str(&format!("{} dependency file(s) to check for vulnerabilities\n", self.dependency_files.len()));
        }
        let regions =
            if self.regions.is_empty() { rules::schema::DEFAULT_REGION.to_string() } else { self.regions.join(", ") };
        out.push_str(&format!("resource types checked for: {regions}\n"));
        for tool in &self.tools {
            out.push_str(&format!(
                "run  {} (changed: {}): {}\n",
                tool.name,
                tool.because_of.join(", "),
                tool.settings.run
            ));
        }
        for (tool, why) in &self.skipped_tools {
            out.push_str(&format!("skip {tool}: {why}\n"));
        }
        out
    }
}

/// Plans the stage from the diff and the repository's tracked files: the files of every
/// changed component are scanned, its templates checked, and its tools run.
pub fn plan(
    settings: &ValidateSettings,
    components: &Components,
    diff: &DiffReport,
    tracked: &[String],
) -> Result<Plan, pipeline_config::ConfigError> {
    let template_globs = pipeline_config::glob_set(
        Path::new(pipeline_config::FILE_NAME),
        "",
        settings.templates.iter().map(|g| (g.get_ref().as_str(), 0..0)),
        "validate.templates",
    )?;
    let all = tracked.iter().map(|p| FileChange { path: p.clone(), status: FileStatus::Modified }).collect();
    let ownership = source_diff::affected(components, all);
    let changed: BTreeSet<&str> = diff.changed().collect();
    let mut files = BTreeSet::new();
    for name in &changed {
        if let Some(owned) = ownership.components.get(*name) {
            files.extend(owned.files.iter().cloned());
        }
    }
    // As cfn-lint reads its settings: `templates` adds templates, `ignore_templates` leaves
    // files out whichever glob named them.
    let rc = &settings.cfnlintrc;
    let templates = files
        .iter()
        .filter(|f| template_globs.is_match(f.as_str()) || rc.names_template(f))
        .filter(|f| !rc.ignores_template(f))
        .cloned()
        .collect();
    let dependency_files = if settings.dependencies.is_some() {
        files.iter().filter(|f| dependencies::is_dependency_file(f)).cloned().collect()
    } else {
        Vec::new()
    };
    // pipeline.toml is scanned for secrets whatever changed: a value pasted there (a NoEcho
    // parameter, a token) reaches every stage that reads the config.
    if tracked.iter().any(|p| p == pipeline_config::FILE_NAME) {
        files.insert(pipeline_config::FILE_NAME.to_string());
    }
    let mut plan = Plan {
        templates,
        cfn_lint_settings: rc.describe(),
        regions: settings.regions(),
        secret_files: if settings.secrets { files.into_iter().collect() } else { Vec::new() },
        dependency_files,
        ..Plan::default()
    };
    // Components changed only through their dependencies: none of their own files, no global input.
    let only_through = |name: &str| {
        diff.components.get(name).is_some_and(|c| {
            c.changed && c.files.is_empty() && !c.because_of.is_empty() && diff.global_inputs_changed.is_empty()
        })
    };
    for (name, tool) in &settings.tools {
        let because_of: Vec<String> = tool
            .components
            .iter()
            .filter(|c| changed.contains(c.as_str()))
            .filter(|c| !(tool.own_changes_only && only_through(c)))
            .cloned()
            .collect();
        if because_of.is_empty() {
            let why = if tool.components.iter().any(|c| changed.contains(c.as_str())) {
                format!(
                    "{} changed only through their dependencies, and own_changes_only = true",
                    tool.components.join(", ")
                )
            } else {
                format!("none of {} changed", tool.components.join(", "))
            };
            plan.skipped_tools.push((name.clone(), why));
        } else {
            plan.tools.push(tools::ToolRun { name: name.clone(), settings: tool.clone(), because_of });
        }
    }
    Ok(plan)
}

/// Bump when a rule changes, so cached results are not reused.
const CACHE_VERSION: &str = "validate-native-v5";

/// Checks templates natively (in parallel, cached by content in `cache_dir` when given),
/// applying each template's `Metadata: cfn-lint: config: ignore_checks` and `ignore`.
///
/// Only regular files are read, up to [`Limits::max_bytes`]: a named pipe, a device, a link
/// out of the repository (not followed) or an unreadable file is an `E0000` finding naming what
/// it is. A tracked folder (a git submodule a template glob matched) is not a template and is
/// skipped.
pub fn check_templates(repo: &Path, templates: &[String], ignore: &[String], cache_dir: Option<&Path>) -> Vec<Finding> {
    check_templates_in(repo, templates, ignore, cache_dir, &[])
}

/// [`check_templates`] for the given regions (`.cfnlintrc`'s `regions`; none is cfn-lint's
/// default, us-east-1).
pub fn check_templates_in(
    repo: &Path,
    templates: &[String],
    ignore: &[String],
    cache_dir: Option<&Path>,
    regions: &[String],
) -> Vec<Finding> {
    check_templates_masked(repo, templates, ignore, cache_dir, regions, &mask::Masker::default())
}

/// [`check_templates_in`] with the run's secrets masked in every message, the cached ones too.
pub fn check_templates_masked(
    repo: &Path,
    templates: &[String],
    ignore: &[String],
    cache_dir: Option<&Path>,
    regions: &[String],
    masker: &mask::Masker,
) -> Vec<Finding> {
    let root = repo.canonicalize().ok();
    let mut findings: Vec<Finding> = templates
        .par_iter()
        .flat_map_iter(|path| {
            let full = repo.join(path);
            let unreadable = |message: String| {
                vec![Finding {
                    path: path.clone(),
                    pos: Pos { line: 1, column: 1 },
                    rule: PARSE_ERROR.into(),
                    severity: Severity::Error,
                    message,
                    check: None,
                }]
            };
            match inspect(root.as_deref(), path, &full) {
                Tracked::Folder => return Vec::new(),
                Tracked::Outside(target) => {
                    return unreadable(format!(
                        "the template links outside the repository (to {}) and was not read: \
                         put the template itself in the repository",
                        target.display()
                    ));
                }
                Tracked::NonUtf8Name => match resolve_lossy(repo, path) {
                    Some((real, shown)) => {
                        return match run_state::fs::read_regular(&real, Limits::default().max_bytes as u64) {
                            Ok(bytes) => check_cached(&shown, &real, &bytes, cache_dir, regions, masker),
                            Err(e) => unreadable(format!("cannot read the template: {e}")),
                        };
                    }
                    None => return unreadable(non_utf8_name("read")),
                },
                Tracked::File => {}
            }
            match run_state::fs::read_regular(&full, Limits::default().max_bytes as u64) {
                Ok(bytes) => check_cached(path, &full, &bytes, cache_dir, regions, masker),
                Err(e) => unreadable(format!("cannot read the template: {e}")),
            }
        })
        .filter(|f| !ignored(&f.rule, ignore))
        .collect();
    findings.sort();
    findings
}

/// What a tracked path is on disk, before it is read.
enum Tracked {
    /// Something to open (whether it is a regular file is checked when it is opened).
    File,
    /// A folder: a git submodule.
    Folder,
    /// A link whose target is outside the repository.
    Outside(PathBuf),
    /// A name git reported with U+FFFD for bytes that are not UTF-8: the file cannot be opened by it.
    NonUtf8Name,
}

/// The message for [`Tracked::NonUtf8Name`]; `what` says what was not done.
fn non_utf8_name(what: &str) -> String {
    format!(
        "the file name is not UTF-8 (shown with \u{FFFD} for the bytes that are not), so the file was not {what}: rename it to UTF-8"
    )
}

/// The file git named lossily (`caf\u{FFFD}.py` for the bytes `caf\xE9.py`): found by listing
/// each folder for the one entry whose name reads the same, with its name shown with escapes
/// (`caf\xE9.py`). `None` when no entry, or more than one, fits.
fn resolve_lossy(repo: &Path, path: &str) -> Option<(PathBuf, String)> {
    let mut full = repo.to_path_buf();
    let mut shown = Vec::new();
    for part in path.split('/') {
        if !part.contains('\u{FFFD}') {
            full.push(part);
            shown.push(part.to_string());
            continue;
        }
        let mut fits = std::fs::read_dir(&full)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.file_name())
            .filter(|name| name.to_string_lossy() == part);
        let (Some(name), None) = (fits.next(), fits.next()) else { return None };
        shown.push(escaped_name(&name));
        full.push(name);
    }
    Some((full, shown.join("/")))
}

/// A file name with the bytes that are not UTF-8 written as `\xNN`.
fn escaped_name(name: &std::ffi::OsStr) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut out = String::new();
        for chunk in name.as_bytes().utf8_chunks() {
            out.push_str(chunk.valid());
            for byte in chunk.invalid() {
                out.push_str(&format!("\\x{byte:02X}"));
            }
        }
        out
    }
    #[cfg(not(unix))]
    {
        name.to_string_lossy().into_owned()
    }
}

/// Looks at a tracked path without reading it: links are resolved only to see where they lead.
fn inspect(root: Option<&Path>, path: &str, full: &Path) -> Tracked {
    let meta = match std::fs::symlink_metadata(full) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.contains('\u{FFFD}') => {
            return Tracked::NonUtf8Name;
        }
        // Reading it says what is wrong.
        Err(_) => return Tracked::File,
    };
    if meta.is_dir() {
        return Tracked::Folder;
    }
    if meta.file_type().is_symlink()
        && let Some(root) = root
        && let Ok(target) = full.canonicalize()
        && !target.starts_with(root)
    {
        return Tracked::Outside(target);
    }
    Tracked::File
}

fn check_cached(
    path: &str,
    full: &Path,
    bytes: &[u8],
    cache_dir: Option<&Path>,
    regions: &[String],
    masker: &mask::Masker,
) -> Vec<Finding> {
    let key = {
        let mut hasher = Sha256::new();
        hasher.update(CACHE_VERSION);
        hasher.update(schemas::fingerprint());
        for region in regions {
            hasher.update(region.as_bytes());
            hasher.update(b"\n");
        }
        hasher.update(path.as_bytes());
        hasher.update(bytes);
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let cached = cache_dir.map(|dir| dir.join("validate").join(format!("{key}.json")));
    if let Some(found) = cached
        .as_ref()
        .and_then(|p| run_state::fs::read_regular(p, run_state::fs::MAX_RUN_FILE_BYTES).ok())
        .and_then(|b| serde_json::from_slice::<Vec<Finding>>(&b).ok())
    {
        let mut found = found;
        masker.apply(&mut found);
        return found;
    }
    let mut findings = check_template_in(path, full, bytes, regions);
    // Masked before it is stored: the cache never holds a secret either.
    masker.apply(&mut findings);
    if let Some(cached) = cached {
        // A cache that cannot be written only costs time next run.
        if let Ok(json) = serde_json::to_vec(&findings) {
            let _ = run_state::write_atomic(&cached, &json);
        }
    }
    findings
}

/// Parses and checks one template; its own suppressions applied.
pub fn check_template(path: &str, full: &Path, bytes: &[u8]) -> Vec<Finding> {
    check_template_in(path, full, bytes, &[])
}

/// [`check_template`] for the given regions (none is cfn-lint's default, us-east-1).
pub fn check_template_in(path: &str, full: &Path, bytes: &[u8], regions: &[String]) -> Vec<Finding> {
    let root = match parse_bytes(bytes, &Limits::default()) {
        Ok(root) => root,
        // Readable, with no sections: the rules say what is missing, as cfn-lint does.
        Err(error) if error.empty => Node::new(error.pos, Value::Map(Vec::new())),
        Err(error) => {
            return vec![Finding {
                path: path.to_string(),
                pos: error.pos,
                rule: PARSE_ERROR.into(),
                severity: Severity::Error,
                message: format!("the template cannot be read: {}", error.message),
                check: None,
            }];
        }
    };
    let dir = full.parent().unwrap_or(Path::new("."));
    let findings = rules::check_in(&root, path, dir, bytes.len(), regions);
    suppress(&root, findings)
}

/// `Metadata: cfn-lint: config: ignore_checks: [...]` at the template's top, or in a resource
/// (for findings inside that resource's lines).
fn suppress(root: &Node, findings: Vec<Finding>) -> Vec<Finding> {
    let ignore_list = |node: &Node| -> Vec<String> {
        node.get("Metadata")
            .and_then(|m| m.get("cfn-lint"))
            .and_then(|c| c.get("config"))
            .and_then(|c| c.get("ignore_checks"))
            .map(|list| list.items().iter().filter_map(|i| i.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    let global = ignore_list(root);
    let resources = root.get("Resources").map(|r| r.entries()).unwrap_or(&[]);
    let mut spans: Vec<(u32, u32, Vec<String>)> = Vec::new();
    for (i, (key, resource)) in resources.iter().enumerate() {
        let end = resources.get(i + 1).map_or(u32::MAX, |(next, _)| next.pos.line.saturating_sub(1));
        let list = ignore_list(resource);
        if !list.is_empty() {
            spans.push((key.pos.line, end, list));
        }
    }
    findings
        .into_iter()
        .filter(|f| !ignored(&f.rule, &global))
        .filter(|f| !spans.iter().any(|(from, to, list)| (*from..=*to).contains(&f.pos.line) && ignored(&f.rule, list)))
        .collect()
}

/// Whether `rule` is covered by an ignore entry (an ID or a prefix such as `W` or `E30`).
pub fn ignored(rule: &str, ignore: &[String]) -> bool {
    ignore.iter().any(|i| !i.is_empty() && rule.starts_with(i.as_str()))
}

/// Scans files for secrets, in parallel.
///
/// Only regular files are read, up to [`secrets::MAX_READ_BYTES`]; anything else (a named pipe,
/// a device, a link out of the repository, which is not followed, a file over the bound or one
/// that cannot be read) is an `S000` warning naming what it is, never silence. A tracked folder
/// (a git submodule) is left to its own repository's checks.
pub fn scan_secrets(repo: &Path, files: &[String], scanner: &secrets::SecretScanner) -> Vec<Finding> {
    scan_secrets_with_values(repo, files, scanner).0
}

/// [`scan_secrets`], and the secret values it flagged (for [`mask::Masker`]).
pub fn scan_secrets_with_values(
    repo: &Path,
    files: &[String],
    scanner: &secrets::SecretScanner,
) -> (Vec<Finding>, Vec<String>) {
    let root = repo.canonicalize().ok();
    let scanned: Vec<(Vec<Finding>, Vec<String>)> = files
        .par_iter()
        .map(|path| {
            let full = repo.join(path);
            let not_scanned = |message: String| {
                let finding = Finding {
                    path: path.clone(),
                    pos: Pos { line: 1, column: 1 },
                    rule: "S000".into(),
                    severity: Severity::Warning,
                    message,
                    check: None,
                };
                (vec![finding], Vec::new())
            };
            match inspect(root.as_deref(), path, &full) {
                Tracked::Folder => return (Vec::new(), Vec::new()),
                Tracked::Outside(target) => {
                    return not_scanned(format!(
                        "the file links outside the repository (to {}) and was not read or scanned for secrets: \
                         put the file itself in the repository",
                        target.display()
                    ));
                }
                // Scanned like any other, named with escapes for the bytes that are not UTF-8.
                Tracked::NonUtf8Name => match resolve_lossy(repo, path) {
                    Some((real, shown)) => {
                        return match run_state::fs::read_regular(&real, secrets::MAX_READ_BYTES) {
                            Ok(bytes) => scanner.scan_with_values(&shown, &bytes),
                            Err(e) => not_scanned(format!("cannot read the file to scan it for secrets: {e}")),
                        };
                    }
                    None => return not_scanned(non_utf8_name("scanned for secrets")),
                },
                Tracked::File => {}
            }
            match run_state::fs::read_regular(&full, secrets::MAX_READ_BYTES) {
                Ok(bytes) => scanner.scan_with_values(path, &bytes),
                Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => not_scanned(format!(
                    "too large to scan ({e}): not scanned for secrets; keep such files out of the repository or check \
                     it by hand"
                )),
                // A link loop, a named pipe, an unreadable file: said, not silently passed over.
                Err(e) => not_scanned(format!("cannot read the file to scan it for secrets: {e}")),
            }
        })
        .collect();
    let mut findings = Vec::new();
    let mut values = Vec::new();
    for (found, flagged) in scanned {
        findings.extend(found);
        values.extend(flagged);
    }
    findings.sort();
    (findings, values)
}

/// The values of the templates that no finding may quote ([`mask::template_secrets`]).
fn templates_secrets(repo: &Path, templates: &[String]) -> Vec<String> {
    templates
        .par_iter()
        .flat_map_iter(|path| {
            let full = resolve_lossy(repo, path).map_or_else(|| repo.join(path), |(real, _)| real);
            run_state::fs::read_regular(&full, Limits::default().max_bytes as u64)
                .ok()
                .and_then(|bytes| parse_bytes(&bytes, &Limits::default()).ok())
                .map(|root| mask::template_secrets(&root))
                .unwrap_or_default()
        })
        .collect()
}

/// Adds a tool's findings to the native ones, leaving out those the native core already
/// reported at the same place under the same rule ID (cfn-lint repeats several of ours).
pub fn merge(findings: &mut Vec<Finding>, tool_findings: Vec<Finding>) {
    let native: BTreeSet<(String, Pos, String)> =
        findings.iter().map(|f| (f.path.clone(), f.pos, f.rule.clone())).collect();
    findings.extend(tool_findings.into_iter().filter(|f| !native.contains(&(f.path.clone(), f.pos, f.rule.clone()))));
    findings.sort();
    findings.dedup();
}

/// What applying a plan needs besides the plan and the settings.
#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions<'a> {
    /// The result cache folder (`.pipeline/cache`), or `None` to check everything afresh.
    pub cache_dir: Option<&'a Path>,
    /// Whether the external tools run.
    pub tools: bool,
    /// Folders put in front of `PATH` for the tools (a virtual environment's `bin`).
    pub tool_path_prefix: &'a [PathBuf],
    /// Where the tools' logs go.
    pub log_dir: &'a Path,
    /// Set to stop the tools.
    pub cancel: &'a std::sync::atomic::AtomicBool,
}

/// Applies a plan: native template checks, secret scanning, then the tools; the findings
/// merged, `ignore_checks` applied, sorted.
pub fn apply(
    repo: &Path,
    settings: &ValidateSettings,
    plan: &Plan,
    options: ApplyOptions<'_>,
) -> Result<Vec<Finding>, Error> {
    let allowlist = match &settings.secrets_allowlist {
        Some(file) => {
            let path = repo.join(file);
            let bytes = run_state::fs::read_regular(&path, 1024 * 1024).map_err(|e| Error::io(&path, e))?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => String::new(),
    };
    // Secrets first: what the scanner flags anywhere in the run, NoEcho defaults, secret-named
    // properties and high-entropy literals are masked in every finding (native, cached, tools').
    let (secret_findings, mut secret_values) =
        scan_secrets_with_values(repo, &plan.secret_files, &secrets::SecretScanner::new(&allowlist)?);
    secret_values.extend(templates_secrets(repo, &plan.templates));
    let masker = mask::Masker::new(secret_values);
    let mut findings = check_templates_masked(
        repo,
        &plan.templates,
        &settings.ignore_checks,
        options.cache_dir,
        &settings.regions(),
        &masker,
    );
    findings.retain(|f| settings.cfnlintrc.enabled(&f.rule));
    // A body over 51,200 bytes matters only for a template deployed as a body.
    if !settings.body_templates.is_empty() {
        findings.retain(|f| f.rule != rules::INLINE_BODY_TOO_BIG.id || settings.body_templates.contains(&f.path));
    }
    findings.extend(secret_findings);
    if let Some(deps) = &settings.dependencies
        && !plan.dependency_files.is_empty()
    {
        let db = dependencies::Database::load(&repo.join(&deps.advisories))?;
        for path in &plan.dependency_files {
            if let Ok(bytes) = run_state::fs::read_regular(&repo.join(path), 64 * 1024 * 1024) {
                findings.extend(dependencies::check(path, &String::from_utf8_lossy(&bytes), &db));
            }
        }
    }
    findings.sort();
    if options.tools && !plan.tools.is_empty() {
        let parallelism = settings.parallelism.unwrap_or_else(process_pool::default_parallelism);
        let mut found =
            tools::run(repo, &plan.tools, parallelism, options.tool_path_prefix, options.log_dir, options.cancel)?;
        found.retain(|f| !ignored(&f.rule, &settings.ignore_checks));
        masker.apply(&mut found);
        merge(&mut findings, found);
    }
    Ok(findings)
}

/// Whether any finding is at or above `fail_on`.
pub fn fails(findings: &[Finding], fail_on: Severity) -> bool {
    findings.iter().any(|f| f.severity >= fail_on)
}

/// What the stage found: its plan, its findings, and the severity that fails it. Its exit code
/// ([`StageOutcome`](run_state::StageOutcome)) is 0 clean, 1 when a finding is at or above
/// `fail_on`.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The plan that was applied.
    pub plan: Plan,
    /// Every finding, sorted.
    pub findings: Vec<Finding>,
    /// The lowest severity that fails the stage.
    pub fail_on: Severity,
}

impl run_state::StageOutcome for Outcome {
    fn exit_code(&self) -> u8 {
        u8::from(fails(&self.findings, self.fail_on))
    }
}

impl Outcome {
    /// The files checked (templates and scanned files), for a JUnit report.
    pub fn checked_files(&self) -> Vec<String> {
        let mut checked: Vec<String> = self.plan.templates.clone();
        checked.extend(self.plan.secret_files.iter().cloned());
        checked.sort();
        checked.dedup();
        checked
    }

    /// One line for the step's record.
    pub fn summary(&self) -> String {
        let failing = self.findings.iter().filter(|f| f.severity >= self.fail_on).count();
        format!(
            "{} template(s), {} file(s) scanned, {} tool(s): {} finding(s), {failing} at or above {}",
            self.plan.templates.len(),
            self.plan.secret_files.len(),
            self.plan.tools.len(),
            self.findings.len(),
            report::severity_name(self.fail_on)
        )
    }
}

/// How the checks run, in a run or outside one.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Whether the external tools run.
    pub tools: bool,
    /// Whether the result cache is used.
    pub cache: bool,
}

/// How [`run_stage`] runs.
#[derive(Debug, Clone, Copy)]
pub struct StageOptions {
    /// How the checks run.
    pub checks: CheckOptions,
    /// Check every component as if all had changed, not only what the run's diff marks changed
    /// (the step is still recorded in the run).
    pub all: bool,
}

/// Checks every section of `pipeline.toml` this stage reads (`[components]`, `[validate]`),
/// so a binary reports a config mistake before anything else, even with no run.
pub fn check_config(config: &pipeline_config::ConfigFile) -> Result<(), Error> {
    Components::from_config(config)?;
    ValidateSettings::from_config(config)?;
    Ok(())
}

/// The stage's settings: `[validate]` of the context's config, with the repository's
/// `.cfnlintrc` (what the stage and its dry run both read).
pub fn settings(context: &run_state::StageContext) -> Result<ValidateSettings, Error> {
    let mut settings = ValidateSettings::from_config(context.required_config()?)?;
    settings.cfnlintrc = cfnlintrc::CfnLintRc::load(&context.root)?;
    Ok(settings)
}

/// What a check covers: a run's diff, or every tracked file as if all had changed (`--all`).
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The changed components of this diff.
    Diff(&'a DiffReport),
    /// Every component, every tracked file.
    All,
}

fn everything(components: &Components, tracked: &[String]) -> DiffReport {
    source_diff::affected(
        components,
        tracked.iter().map(|path| FileChange { path: path.clone(), status: FileStatus::Modified }).collect(),
    )
}

/// The settings and the plan for `scope`: the config, the `.cfnlintrc` and the tracked files
/// read once, whether for a dry run, a check or the stage.
fn planned(context: &run_state::StageContext, scope: Scope<'_>) -> Result<(ValidateSettings, Plan), Error> {
    let components = Components::from_config(context.required_config()?)?;
    let settings = settings(context)?;
    let tracked = source_diff::Repo::at_root(&context.root).tracked_files()?;
    let all;
    let diff = match scope {
        Scope::Diff(diff) => diff,
        Scope::All => {
            all = everything(&components, &tracked);
            &all
        }
    };
    let plan = plan(&settings, &components, diff, &tracked)?;
    Ok((settings, plan))
}

/// The plan the stage would apply for `scope`, for a dry run: nothing is checked or recorded.
pub fn plan_stage(context: &run_state::StageContext, scope: Scope<'_>) -> Result<Plan, Error> {
    planned(context, scope).map(|(_, plan)| plan)
}

/// Checks the repository for `scope`: plans, then applies, with the tools' logs in `log_dir`.
/// Nothing is written to a run or recorded: this is the stage without a run, and what
/// [`run_stage`] records.
pub fn check(
    context: &run_state::StageContext,
    scope: Scope<'_>,
    options: CheckOptions,
    log_dir: &Path,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Outcome, Error> {
    let (settings, plan) = planned(context, scope)?;
    check_planned(context, &settings, plan, options, log_dir, cancel)
}

/// Applies a plan of the stage (with the context's cache when `options.cache`).
fn check_planned(
    context: &run_state::StageContext,
    settings: &ValidateSettings,
    plan: Plan,
    options: CheckOptions,
    log_dir: &Path,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Outcome, Error> {
    let cache = context.cache_dir();
    let apply_options = ApplyOptions {
        cache_dir: options.cache.then_some(cache.as_path()),
        tools: options.tools,
        tool_path_prefix: &[],
        log_dir,
        cancel,
    };
    let findings = apply(&context.root, settings, &plan, apply_options)?;
    Ok(Outcome { plan, findings, fail_on: settings.fail_on })
}

/// The stage outside any run (`validate --all` with no run folder): every component checked
/// as if all had changed ([`Scope::All`]), the tools' logs in the state folder's `logs/`;
/// nothing is written or recorded.
pub fn check_all(
    context: &run_state::StageContext,
    options: CheckOptions,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Outcome, Error> {
    check(context, Scope::All, options, &context.state_dir.join("logs"), cancel)
}

/// The Validate stage for one run, as the `validate` binary and a pipeline both run it:
/// reads the config and the run's diff (every component with [`StageOptions::all`]), checks
/// that the checked-out tree is the run's commit (with `all` too: the step is the run's, so what
/// passes it must be the run's commit), plans, applies, writes
/// `validate.json` to the run folder, and records the `validate` step (passed, or failed with
/// the first finding at or above `fail_on`, or failed with the error; cancelled when the
/// tools were stopped).
pub fn run_stage(inputs: &run_state::StageInputs<'_>, options: StageOptions) -> Result<Outcome, Error> {
    let run_state::StageInputs { context, run, store, cancel } = *inputs;
    let work = || -> Result<(Outcome, String), Error> {
        let diff = run.read_json::<DiffReport>(run_state::RunFile::Diff)?;
        context.check_tree(&diff.head, diff.worktree)?;
        let scope = if options.all { Scope::All } else { Scope::Diff(&diff) };
        let outcome = check(context, scope, options.checks, &run.logs_dir(), cancel)?;
        run.write(run_state::RunFile::Validate, report::json(&outcome.findings).as_bytes())?;
        let summary = outcome.summary();
        Ok((outcome, summary))
    };
    let head = run.head().unwrap_or_default();
    let recording =
        run_state::Recording::begin(store, &run.run_id, &head, run_state::PIPELINE, run_state::Step::Validate)?;
    let result = work();
    match &result {
        Ok((outcome, summary)) if outcome.passed() => {
            recording.end(run_state::Status::Passed, |d| d.note = Some(summary.clone()))?;
        }
        Ok((outcome, summary)) => {
            let first = outcome.findings.iter().find(|f| f.severity >= outcome.fail_on);
            let error = match first {
                Some(f) => {
                    format!("{summary}; first {}:{}:{}: {} {}", f.path, f.pos.line, f.pos.column, f.rule, f.message)
                }
                None => summary.clone(),
            };
            recording.end(run_state::Status::Failed, |d| d.error = Some(error))?;
        }
        Err(error) => {
            let status = if matches!(error, Error::Cancelled) {
                run_state::Status::Cancelled
            } else {
                run_state::Status::Failed
            };
            recording.end(status, |d| d.error = Some(run_state::error_chain(error)))?;
        }
    }
    result.map(|(outcome, _)| outcome)
}
